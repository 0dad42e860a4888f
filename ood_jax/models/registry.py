"""Model presets by name: ``make_model(name, preset, image_shape, **overrides)``.

Presets of ``'vae'`` (:class:`ConvVAE`, categorical256 unless ``likelihood=`` is given):

* ``'smoke'``: ngf 8, latent 16 (tests, seconds on CPU);
* ``'cpu'`` and ``'paper'``: the reference architecture of Likelihood Regret / ROSE:
  ngf 32, latent 100 for grey images; ngf 64, latent 200 for colour images.

``'uniform'`` (:class:`UniformModel`) has no settings; every preset gives the same model.
``'realnvp'``, ``'glow'``, ``'cv_glow'`` and ``'pixelcnnpp'`` live in their own modules and
are imported on first use (a ``"module:function"`` builder path).
Other layers add models with :func:`register_model`.
"""

from __future__ import annotations

import importlib
from typing import Callable

import flax.linen as nn

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models.uniform import UniformModel
from ood_jax.models.vae import ConvVAE

Builder = Callable[..., nn.Module]   # (preset, image_shape, **overrides) -> module

_VAE_PRESETS = {
    "smoke": {1: dict(ngf=8, latent_dim=16), 3: dict(ngf=8, latent_dim=16)},
    "cpu": {1: dict(ngf=32, latent_dim=100), 3: dict(ngf=64, latent_dim=200)},
    "paper": {1: dict(ngf=32, latent_dim=100), 3: dict(ngf=64, latent_dim=200)},
}


def _preset(presets: dict, name: str, preset: str) -> dict:
  if preset not in presets:
    raise UnknownNameError(
        f"unknown preset {preset!r} for model {name!r}; known: {', '.join(presets)}.")
  return presets[preset]


def _make_vae(preset: str, image_shape: tuple[int, int, int], **overrides) -> nn.Module:
  by_channels = _preset(_VAE_PRESETS, "vae", preset)
  c = image_shape[2]
  settings = dict(by_channels[1 if c == 1 else 3], likelihood="categorical256")
  settings.update(overrides)
  return ConvVAE(image_shape=image_shape, **settings)


def _make_uniform(preset: str, image_shape: tuple[int, int, int], **overrides) -> nn.Module:
  _preset({"smoke": None, "cpu": None, "paper": None}, "uniform", preset)
  if overrides:
    raise InvalidInputError(f"model 'uniform' takes no settings, got {sorted(overrides)}.")
  return UniformModel(image_shape=image_shape)


_REGISTRY: dict[str, Builder | str] = {
    "vae": _make_vae,
    "uniform": _make_uniform,
    "realnvp": "ood_jax.models.flows.realnvp:make_realnvp",
    "glow": "ood_jax.models.flows.glow:make_glow",
    "cv_glow": "ood_jax.models.flows.glow:make_cv_glow",
    "pixelcnnpp": "ood_jax.models.pixelcnnpp:make_pixelcnnpp",
}

# Training settings a model needs whatever the experiment preset (merged over the preset's
# TrainConfig by the experiments): flows get LR warm-up and gradient clipping, without
# which public Glow ports hit NaNs.
_FLOW_TRAIN = dict(warmup_steps=200, clip_grad_norm=100.0)
_TRAIN_DEFAULTS: dict[str, dict] = {"realnvp": _FLOW_TRAIN, "glow": _FLOW_TRAIN,
                                    "cv_glow": _FLOW_TRAIN}


def register_model(name: str, builder: Builder | str, train_defaults: dict | None = None) -> None:
  """Adds (or replaces) a model builder ``builder(preset, image_shape, **overrides)`` (or its
  ``"module:function"`` path), with optional TrainConfig overrides it always needs."""
  _REGISTRY[name] = builder
  if train_defaults is not None:
    _TRAIN_DEFAULTS[name] = dict(train_defaults)


def train_defaults(name: str) -> dict:
  """TrainConfig fields model ``name`` sets by default (e.g. warm-up and clipping for flows)."""
  check_name(name)
  return dict(_TRAIN_DEFAULTS.get(name, {}))


def _builder(name: str) -> Builder:
  b = _REGISTRY[name]
  if isinstance(b, str):
    module, attr = b.split(":")
    b = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
  return b


def known_models() -> list[str]:
  return sorted(_REGISTRY)


def make_model(name: str, preset: str, image_shape, **overrides) -> nn.Module:
  """Builds model ``name`` with the settings of ``preset`` for images ``(H, W, C)``.

  Raises ``UnknownNameError`` for unknown model or preset names (listing the known ones)
  and ``InvalidInputError`` for an image shape the model cannot take.
  """
  check_name(name)
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or shape[2] not in (1, 3):
    raise InvalidInputError(f"image_shape must be (H, W, C) with C in {{1, 3}}, got {image_shape}.")
  return _builder(name)(preset, shape, **overrides)


# The resolution each model takes: the DCGAN VAE needs 32 x 32 (28 x 28 sets are resized
# with PIL bilinear, as torchvision's Resize(32) in the references); others keep the data's.
_INPUT_SIZE: dict[str, int] = {"vae": 32}


def check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise UnknownNameError(f"unknown model {name!r}; known: {', '.join(known_models())}.")


def input_shape(name: str, data_hwc) -> tuple[int, int, int]:
  """The ``(H, W, C)`` that model ``name`` is built for, given the ID data's shape."""
  check_name(name)
  h, w, c = (int(s) for s in data_hwc)
  size = _INPUT_SIZE.get(name)
  return (size, size, c) if size else (h, w, c)
