"""What a model says about itself: the model protocol and ``ModelSpec``.

Every generative model is a pure linen module that satisfies :class:`GenerativeModel` and
whose module file defines a ``ModelSpec`` (``SPEC``) beside it; the model registry
(``registry.py``) holds one line per model naming that spec. Experiments, trainers and
scorers read a model's input size, training defaults, CPU budgets, ROSE layers,
BatchNorm parts and per-sample objective from its spec (``spec_of(model)``), never from
tables keyed by class names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import flax.linen as nn
import jax

# ``train`` of every model method: one BatchNorm mode for the whole model, or one per part
# named in ``ModelSpec.batchnorm_parts`` (e.g. ``{'encoder': True, 'decoder': False}``).
Mode = bool | Mapping[str, bool]


def part_mode(train: Mode, part: str) -> bool:
  """The BatchNorm mode of ``part`` under ``train`` (a bool, or a per-part mapping; a part
  missing from the mapping is in eval mode)."""
  if isinstance(train, Mapping):
    return bool(train.get(part, False))
  return bool(train)


@runtime_checkable
class GenerativeModel(Protocol):
  """The model protocol (``docs/DESIGN.md``). Every method is called through
  ``model.apply(variables, ..., method=...)``; likelihoods are nats per image of the discrete
  8-bit data; ``train`` is the BatchNorm mode (pass ``mutable=['batch_stats']`` in train mode
  and discard the update when scoring)."""

  image_shape: tuple[int, int, int]

  def __call__(self, x_uint8: jax.Array, train: Mode) -> jax.Array:
    """Per-sample training objective, nats, float32 ``[N]``."""

  def log_prob(self, x_uint8: jax.Array, train: Mode = False, k: int = 1) -> jax.Array:
    """``log P(x)`` (an importance-weighted bound with ``k`` samples where latent), ``[N]``."""

  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images in eval mode at ``temperature``."""


@dataclasses.dataclass(frozen=True)
class Objective:
  """A model's per-image training objective in eval mode (nats per image), for scores that
  differentiate it per sample (ROSE).

  ``noise(rng, n)`` draws the randomness of ``n`` images: an array with leading axis ``n``
  (``per_image=True``: one image is evaluated with its own row, e.g. the VAE's ``eps``) or
  one key for the whole batch. ``batched(variables, x, noise) -> float32[N]``.
  """
  noise: Callable[[jax.Array, int], Any]
  batched: Callable[[Any, jax.Array, Any], jax.Array]
  per_image: bool


def default_objective(model: nn.Module) -> Objective:
  """``model.apply(v, x, train=False)`` with the ``'sample'`` / ``'dequant'`` streams from one
  key (flows: the dequantised NLL; PixelCNN++: the NLL)."""
  return Objective(
      noise=lambda rng, n: rng,
      batched=lambda v, x, key: model.apply(
          v, x, train=False, rngs={"sample": key, "dequant": jax.random.fold_in(key, 1)}),
      per_image=False)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model's description (see the module docstring).

  Attributes:
    name: registry name (``'vae'``).
    module: the linen class; ``--model-args`` are checked against its fields.
    presets: ``{model preset: {1: settings for grey, 3: settings for colour}}``.
    defaults: settings every preset starts from (before the preset's own).
    input_size: the fixed height = width the model is built for (the DCGAN VAE: 32), or
      None for the data's own.
    train_defaults: ``TrainConfig`` fields the model always needs unless the experiment
      sets them (flows: warm-up and clipping).
    budgets: ``{experiment preset: TrainConfig fields}`` replacing that preset's budget
      (on the 2-core CPU the flows train 1 epoch of the ``cpu`` preset, PixelCNN++ 0.5).
    recipes: ``{model preset: {1: TrainConfig fields for grey, 3: for colour}}``: the
      training recipe a paper gives with that architecture (Kirichenko et al.: Adam, lr
      5e-5, batch 32 for the grey RealNVP). It replaces the experiment preset's optimiser
      settings; its budget fields (``epochs``, ``num_steps``) apply only under the
      ``paper`` experiment preset (the ``smoke`` and ``cpu`` presets keep their budgets,
      unless the entry has ``"budgets": {experiment preset: fields}``, e.g. the
      ``nalisnick_cpu`` Gated PixelCNN's one epoch at ``cpu``).
    rose_layers: default ``fnmatch`` patterns of the layers ROSE scores, or None.
    rose_fisher: the Fisher approximation ROSE uses by default on those layers
      (``'ekfac'``; Glow: ``'diag'`` on its 1x1 convolutions, ROSE App. B.2).
    batchnorm_parts: names of the parts whose BatchNorm mode can be set on its own
      (``train={'encoder': True, 'decoder': False}``); empty if one mode for all.
    has_batchnorm: whether any layer keeps batch statistics (Glow: no, actnorm only), or
      ``model -> bool`` where the settings decide (PixelCNN++: ``norm == 'batch'``); ask
      :meth:`uses_batchnorm`.
    objective: ``model -> Objective`` (default ``default_objective``).
    trainer: how the train layer trains it: ``'mle'`` (the default step: one optimiser on the
      mean of ``__call__``'s per-sample loss) or the name of an update rule there
      (``'soft_intro'``: ``ood_jax.train.soft_intro.SoftIntro``; ``ood_jax.train.update_for``).
    about: one line for listings.
  """
  name: str
  module: type
  presets: Mapping[str, Mapping[int, Mapping[str, Any]]]
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  input_size: int | None = None
  train_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  budgets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  recipes: Mapping[str, Mapping[Any, Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
  rose_layers: tuple[str, ...] | None = None
  rose_fisher: str = "ekfac"
  batchnorm_parts: tuple[str, ...] = ()
  has_batchnorm: bool | Callable[[nn.Module], bool] = True
  objective: Callable[[nn.Module], Objective] = default_objective
  trainer: str = "mle"
  about: str = ""

  def uses_batchnorm(self, model: nn.Module | None = None) -> bool:
    """Whether ``model`` (built from this spec) keeps batch statistics; without a model,
    whether some setting of it may (a settings-dependent answer counts as yes)."""
    if callable(self.has_batchnorm):
      return True if model is None else bool(self.has_batchnorm(model))
    return bool(self.has_batchnorm)
