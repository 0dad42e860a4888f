"""Models by name: one line per model, naming the ``ModelSpec`` beside its module.

Every model module defines its ``SPEC`` (``spec.py``: the linen class, presets, defaults,
input size, training defaults and budgets, ROSE layers, BatchNorm parts, objective);
``_MODELS`` maps each registry name to it as a lazy ``"module:attr"`` path, imported on
first use. Adding a model is its module (with its ``SPEC``) plus one line here, or
:func:`register_model` from another layer.

``make_model(name, preset, (H, W, C), **overrides)`` builds
``spec.module(image_shape=(H, W, C), **{**spec.defaults, **preset settings, **overrides})``
with the preset's settings for grey (C = 1) or colour (C = 3) images; ``overrides`` must
be fields of the module with values of their annotated types.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from ood_jax.errors import InvalidInputError
from ood_jax.models.spec import ModelSpec
from ood_jax.registry import Registry, check_settings, choose

_MODELS = Registry("model", {
    "vae": "ood_jax.models.vae:SPEC",
    "vae_gaussian": "ood_jax.models.vae:GAUSSIAN_SPEC",
    "gan_vae": "ood_jax.models.gan_vae:SPEC",
    "ae": "ood_jax.models.autoencoder:SPEC",
    "realnvp": "ood_jax.models.flows.realnvp:SPEC",
    "glow": "ood_jax.models.flows.glow:GLOW_SPEC",
    "cv_glow": "ood_jax.models.flows.glow:CV_GLOW_SPEC",
    "pixelcnnpp": "ood_jax.models.pixelcnnpp:SPEC",
    "gated_pixelcnn": "ood_jax.models.gated_pixelcnn:SPEC",
    "uniform": "ood_jax.models.uniform:SPEC",
})

# Module fields that are not settings: flax's own and the shape ``make_model`` passes.
_NOT_SETTINGS = ("parent", "name", "image_shape")


def register_model(name: str, spec_or_path: ModelSpec | str) -> None:
  """Adds (or replaces) model ``name``: a ``ModelSpec`` or its ``"module:attr"`` path."""
  _MODELS.register(name, spec_or_path)


def known_models() -> list[str]:
  return _MODELS.names()


def check_name(name: str) -> None:
  """``UnknownNameError`` listing the known models unless ``name`` is one."""
  _MODELS.check(name)


def spec(name: str) -> ModelSpec:
  """The ``ModelSpec`` of model ``name`` (its module imported on first use)."""
  return _MODELS.get(name)


def model_presets(name: str) -> list[str]:
  """The model presets of ``name`` (``['smoke', 'cpu', 'paper']``)."""
  return list(spec(name).presets)


def model_settings(name: str, preset: str, channels: int, **overrides) -> dict[str, Any]:
  """The module settings ``make_model`` uses (without ``image_shape``): the spec's
  defaults, then the preset's for ``channels`` (1: grey, else colour), then ``overrides``.

  Raises ``UnknownNameError`` for an unknown model or preset (listing the known ones) and
  one ``InvalidInputError`` listing the valid fields for an unknown field or a value of the
  wrong type.
  """
  s = spec(name)
  choose(f"{name} preset", preset, s.presets)
  check_settings(f"model {name!r}", s.module, overrides, exclude=_NOT_SETTINGS)
  return {**s.defaults, **s.presets[preset][1 if channels == 1 else 3], **overrides}


def make_model(name: str, preset: str, image_shape, **overrides) -> nn.Module:
  """Builds model ``name`` with the settings of ``preset`` for images ``(H, W, C)``.

  Raises ``UnknownNameError`` for unknown model or preset names (listing the known ones)
  and ``InvalidInputError`` for unknown or mistyped ``overrides`` or an image shape the
  model cannot take.
  """
  check_name(name)
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or shape[2] not in (1, 3):
    raise InvalidInputError(f"image_shape must be (H, W, C) with C in {{1, 3}}, got {image_shape}.")
  settings = model_settings(name, preset, shape[2], **overrides)
  return spec(name).module(image_shape=shape, **settings)


def _defaults_matched(model: nn.Module, s: ModelSpec) -> int:
  """How many of ``s.defaults`` ``model`` has, or -1 if it differs from one of them."""
  missing = object()
  if any(getattr(model, k, missing) != v for k, v in s.defaults.items()):
    return -1
  return len(s.defaults)


def spec_of(model: nn.Module) -> ModelSpec | None:
  """The registered spec whose module is ``type(model)``, or None if there is none.

  Where several share the class (``glow`` / ``cv_glow``: ``Glow``), the one whose
  ``defaults`` the model's attributes match (the most specific, if several match).
  An entry whose module fails to import raises (a broken registry line is a bug to see).
  """
  cls = type(model)
  found = []
  for name in _MODELS.names():
    s = _MODELS.get(name)
    if s.module is cls:
      found.append(s)
  if len(found) <= 1:
    return found[0] if found else None
  score, best = max((_defaults_matched(model, s), -i) for i, s in enumerate(found))
  return found[-best] if score >= 0 else found[0]


def input_shape(name: str, data_hwc) -> tuple[int, int, int]:
  """The ``(H, W, C)`` that model ``name`` is built for, given the ID data's shape: the
  spec's fixed ``input_size`` (the DCGAN VAE: 32; 28 x 28 sets are resized) or the data's."""
  size = spec(name).input_size
  h, w, c = (int(s) for s in data_hwc)
  return (size, size, c) if size else (h, w, c)


def train_defaults(name: str) -> dict:
  """TrainConfig fields model ``name`` sets by default (e.g. warm-up and clipping for flows)."""
  return dict(spec(name).train_defaults)


# Recipe fields that set a training budget: applied only under the ``paper`` experiment preset.
BUDGET_FIELDS = ("epochs", "num_steps")


def recipe(name: str, model_preset: str, channels: int, experiment_preset: str) -> dict:
  """TrainConfig fields of the training recipe that comes with ``model_preset`` of model
  ``name`` (``ModelSpec.recipes``) for ``channels`` (1: grey, else colour); its budget
  fields only under the ``paper`` experiment preset; under another experiment preset the
  recipe's ``budgets[experiment_preset]`` where it has one. Empty if there is no recipe."""
  entry = spec(name).recipes.get(model_preset, {})
  fields = dict(entry.get(1 if channels == 1 else 3, {}))
  if experiment_preset != "paper":
    for k in BUDGET_FIELDS:
      fields.pop(k, None)
  # A recipe's own budget for a reduced experiment preset: {"budgets": {"cpu": {"epochs": 1}}}.
  fields.update(entry.get("budgets", {}).get(experiment_preset, {}))
  return fields


def has_recipe(name: str, model_preset: str) -> bool:
  return model_preset in spec(name).recipes


def budget(name: str, experiment_preset: str) -> dict:
  """TrainConfig fields replacing the budget of ``experiment_preset`` for model ``name``
  (e.g. PixelCNN++ on ``cpu``: ``{'epochs': 0.5}``); empty if the preset's own applies."""
  return dict(spec(name).budgets.get(experiment_preset, {}))
