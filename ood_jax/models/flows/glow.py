"""Glow (Kingma & Dhariwal 2018) and CV-Glow (Nalisnick et al. 2019), as used by ROSE.

Pixels ``y = (x + u) / 256 - 1/2`` (the shift has log-det 0) go through ``levels`` levels;
level l: squeeze 2x2, then ``steps`` steps of ActNorm -> invertible 1x1 conv -> coupling
(channel halves: the first conditions, the second is transformed; the 1x1 conv mixes the
channels between steps), then, except at the last level, a split: the second half of the
channels is factored out with a learned conditional prior ``N(mean, exp(logs)^2)``,
``(mean, logs) = conv3x3(kept half)`` (zero-initialised). The top latent has a learned prior
with one mean and log-scale per entry (zero-initialised).

* Coupling: affine (``s = scale * tanh(raw)``, as the other flows here, instead of Glow's
  ``sigmoid(raw + 2)``) with ``GlowSTNet`` (3x3, 1x1, 3x3 convs, ``hidden`` channels, the
  last zero-initialised); ``additive=True`` gives **CV-Glow**, whose log-det is the sum of
  the ActNorm and 1x1-conv terms only (it does not depend on the input or the st-nets).
* 1x1 conv: LU-parametrised (``lu=True``, default) or plain.
* ActNorm data-dependent init: pure-functional, during ``model.init``: each ActNorm
  (in the steps and in the st-nets) sets its bias/scale from the statistics of the batch that
  reaches it in the ``init`` call (the training loop calls ``init`` with its first batch).
  There is no BatchNorm, so ``train`` changes nothing: both modes give the same result.

Parameter paths (ROSE scores the 1x1 convs): ``level_{l}/step{k}/invconv/...``, i.e. every
1x1-conv parameter has ``invconv`` in its path: ``lower``, ``upper``, ``log_s`` (LU; the fixed
``perm`` and ``sign_s`` are in the ``flow_constants`` collection) or ``kernel`` (plain).

Every step is a ``Chain`` of bijector layers (``forward_and_log_det`` /
``inverse_and_log_det``); ``Glow.constant_volume`` says whether the flow's log-det is
input-independent (CV-Glow), from the layers' ``constant_log_det`` declarations.

Model specs: ``GLOW_SPEC`` (``'glow'``) and ``CV_GLOW_SPEC`` (``'cv_glow'``), the same presets
with ``additive`` False / True; ROSE scores ``*invconv*``; no BatchNorm.

Presets (``make_glow`` / ``make_cv_glow``; grey / colour):

* ``paper``: L x K = 2 x 16, hidden 200 (grey) / 3 x 8, hidden 400 (colour).
* ``cpu``: 2 x 4, hidden 64 (grey and colour).
* ``smoke``: 2 x 2, hidden 16.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.bijector import Bijector
from ood_jax.models.flows.chain import Chain
from ood_jax.models.flows.coupling import Coupling
from ood_jax.models.flows.flow_model import FlowModel, check_image_shape, gaussian_log_density
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.squeeze import Squeeze
from ood_jax.models.flows.stnets import GlowSTNet
from ood_jax.models.spec import ModelSpec
from ood_jax.registry import choose


class GlowStep(Bijector):
  """ActNorm -> 1x1 conv -> coupling, a ``Chain`` (bijector on ``N x H x W x C``, C >= 2)."""
  hidden: int
  additive: bool = False
  lu: bool = True

  @nn.nowrap
  def _layers(self, c: int, **where) -> list[nn.Module]:
    """The step's layers for ``c`` channels (``where``: ``parent=None`` for unbound probes)."""
    cb = c - c // 2
    net = GlowSTNet(cb if self.additive else 2 * cb, self.hidden, parent=None)
    conv = InvConv1x1LU if self.lu else InvConv1x1
    return [ActNorm(name="actnorm", **where), conv(name="invconv", **where),
            Coupling(mask="channel", index=0, additive=self.additive, st_net=net,
                     name="coupling", **where)]

  @nn.compact
  def _chain(self, c: int) -> Chain:
    return Chain(self._layers(c), name="chain")

  def forward_and_log_det(self, h: jax.Array, train: bool = False):
    return self._chain(h.shape[-1]).forward_and_log_det(h, train)

  def inverse_and_log_det(self, h: jax.Array):
    return self._chain(h.shape[-1]).inverse_and_log_det(h)

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    """From the layers' own declarations (ActNorm, 1x1 conv: yes; coupling iff additive)."""
    return Chain(self._layers(2, parent=None), parent=None).constant_log_det(train)


class GlowLevel(nn.Module):
  """Squeeze and ``steps`` Glow steps (one ``Chain``), then (``split``) a factored-out half
  of the channels with a learned conditional prior.

  ``encode(h, train)`` -> ``(h_kept, eps or None, log p(z_split), logdet)``;
  ``decode(h_kept, eps, temperature)`` -> ``h`` (eval mode).
  """
  steps: int
  hidden: int
  split: bool
  additive: bool = False
  lu: bool = True

  @nn.compact
  def _modules(self, c2: int) -> tuple[Chain, Optional[nn.Module]]:
    """``(chain, prior conv or None)``; ``c2`` the channels factored out."""
    chain = Chain([Squeeze(name="squeeze")]
                  + [GlowStep(self.hidden, self.additive, self.lu, name=f"step{k}")
                     for k in range(self.steps)], name="chain")
    prior = None
    if self.split:
      prior = nn.Conv(2 * c2, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, name="prior")
    return chain, prior

  @staticmethod
  def _mean_logs(prior: nn.Module, h1: jax.Array, c2: int):
    out = prior(h1)
    return out[..., :c2], out[..., c2:]

  def encode(self, h: jax.Array, train: bool = False):
    c = 4 * h.shape[-1]
    c2 = c - c // 2
    chain, prior = self._modules(c2)
    h, logdet = chain.forward_and_log_det(h, train)
    if not self.split:
      return h, None, jnp.zeros_like(logdet), logdet
    h1, z2 = h[..., :c // 2], h[..., c // 2:]
    mean, logs = self._mean_logs(prior, h1, c2)
    return h1, (z2 - mean) * jnp.exp(-logs), gaussian_log_density(z2, mean, logs), logdet

  def decode(self, h: jax.Array, eps: Optional[jax.Array] = None, temperature: float = 1.0):
    chain, prior = self._modules(eps.shape[-1] if self.split else 0)
    if self.split:
      mean, logs = self._mean_logs(prior, h, eps.shape[-1])
      h = jnp.concatenate([h, mean + temperature * jnp.exp(logs) * eps], axis=-1)
    return chain.inverse_and_log_det(h)[0]


class Glow(FlowModel):
  """Multi-scale Glow / CV-Glow (see the module docstring for every attribute)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  levels: int = 2
  steps: int = 16
  hidden: int = 200
  additive: bool = False
  lu: bool = True

  def __post_init__(self):
    if int(self.levels) < 1 or int(self.steps) < 1 or int(self.hidden) < 1:
      raise InvalidInputError(
          f"Glow: levels, steps and hidden must be >= 1, got {self.levels}, {self.steps},"
          f" {self.hidden}.")
    check_image_shape(self.image_shape, int(self.levels), "Glow")
    super().__post_init__()

  def setup(self):
    self.level = [GlowLevel(self.steps, self.hidden, l < self.levels - 1, self.additive, self.lu)
                  for l in range(self.levels)]
    top = self.latent_shapes()[-1]
    self.top_mean = self.param("top_mean", nn.initializers.zeros, top, jnp.float32)
    self.top_logs = self.param("top_logs", nn.initializers.zeros, top, jnp.float32)

  @property
  def constant_volume(self) -> bool:
    """Whether ``log|det dz/dy|`` is the same for every input, in both modes: True iff every
    step's layers declare a constant log-det (``constant_log_det``), i.e. for CV-Glow
    (additive couplings; ActNorm and the 1x1 convs are constant, the squeezes 0)."""
    step = GlowStep(self.hidden, self.additive, self.lu, parent=None)
    return step.constant_log_det(False) and step.constant_log_det(True)

  def latent_shapes(self) -> list[tuple[int, int, int]]:
    """Per-image shapes of the split latents (one per level but the last), then the top's."""
    h, w, c = self.image_shape
    shapes = []
    for l in range(self.levels):
      h, w, c = h // 2, w // 2, 4 * c
      if l < self.levels - 1:
        shapes.append((h, w, c - c // 2))
        c = c // 2
    return shapes + [(h, w, c)]

  def encode_unit(self, y: jax.Array, train: bool = False):
    """``y`` in ``[0, 1)`` -> ``(standardised latents, log p(z), log|det dz/dy|)`` (nats)."""
    h = y - 0.5
    logdet = jnp.zeros((y.shape[0],), jnp.float32)
    log_pz = jnp.zeros((y.shape[0],), jnp.float32)
    eps = []
    for level in self.level:
      h, e, lpz, ld = level.encode(h, train)
      logdet, log_pz = logdet + ld, log_pz + lpz
      if e is not None:
        eps.append(e)
    eps.append((h - self.top_mean) * jnp.exp(-self.top_logs))
    log_pz = log_pz + gaussian_log_density(h, self.top_mean, self.top_logs)
    return eps, log_pz, logdet

  def decode_unit(self, eps: list[jax.Array], temperature: float = 1.0) -> jax.Array:
    """Inverse of ``encode_unit``; each latent is ``mean + temperature * std * eps``."""
    h = self.top_mean + temperature * jnp.exp(self.top_logs) * eps[-1]
    for l in reversed(range(self.levels)):
      e = eps[l] if l < self.levels - 1 else None
      h = self.level[l].decode(h, e, temperature)
    return h + 0.5


_PRESETS = {
    "smoke": {1: dict(levels=2, steps=2, hidden=16), 3: dict(levels=2, steps=2, hidden=16)},
    "cpu": {1: dict(levels=2, steps=4, hidden=64), 3: dict(levels=2, steps=4, hidden=64)},
    "paper": {1: dict(levels=2, steps=16, hidden=200), 3: dict(levels=3, steps=8, hidden=400)},
}


_TRAIN_DEFAULTS = dict(warmup_steps=200, clip_grad_norm=100.0)
_BUDGETS = {"cpu": {"epochs": 1}}

GLOW_SPEC = ModelSpec(
    name="glow", module=Glow, presets=_PRESETS, defaults={"additive": False},
    train_defaults=_TRAIN_DEFAULTS, budgets=_BUDGETS, rose_layers=("*invconv*",),
    has_batchnorm=False,
    about="Glow (Kingma & Dhariwal 2018): ActNorm, LU 1x1 convs, affine couplings.")

CV_GLOW_SPEC = ModelSpec(
    name="cv_glow", module=Glow, presets=_PRESETS, defaults={"additive": True},
    train_defaults=_TRAIN_DEFAULTS, budgets=_BUDGETS, rose_layers=("*invconv*",),
    has_batchnorm=False,
    about="CV-Glow (Nalisnick et al. 2019): Glow with additive couplings (constant volume).")


def _build(spec: ModelSpec, preset: str, image_shape, overrides) -> Glow:
  """``spec.module(image_shape=..., **{**defaults, **preset settings, **overrides})``."""
  choose(f"{spec.name} preset", preset, spec.presets)
  shape = tuple(int(s) for s in image_shape)
  settings = spec.presets[preset][1 if shape[-1] == 1 else 3]
  return spec.module(image_shape=shape, **{**spec.defaults, **settings, **overrides})


def make_glow(preset: str, image_shape, **overrides) -> Glow:
  """``Glow`` (affine couplings) with the settings of ``preset`` (``smoke``, ``cpu``,
  ``paper``) for grey or colour ``image_shape``; ``overrides`` replace any attribute."""
  return _build(GLOW_SPEC, preset, image_shape, overrides)


def make_cv_glow(preset: str, image_shape, **overrides) -> Glow:
  """CV-Glow: ``make_glow`` with additive couplings (constant volume given the 1x1 convs)."""
  return _build(CV_GLOW_SPEC, preset, image_shape, overrides)
