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

Presets (``make_glow`` / ``make_cv_glow``; grey / colour):

* ``paper``: L x K = 2 x 16, hidden 200 (grey) / 3 x 8, hidden 400 (colour).
* ``cpu``: 2 x 4, hidden 64 (grey and colour).
* ``smoke``: 2 x 2, hidden 16.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.coupling import Coupling
from ood_jax.models.flows.flow_model import FlowModel, check_image_shape, gaussian_log_density
from ood_jax.models.flows.invconv import InvConv1x1, InvConv1x1LU
from ood_jax.models.flows.squeeze import squeeze2x2, unsqueeze2x2
from ood_jax.models.flows.stnets import GlowSTNet


class GlowStep(nn.Module):
  """ActNorm -> 1x1 conv -> coupling; ``__call__(h, train, reverse) -> (h, logdet)``."""
  hidden: int
  additive: bool = False
  lu: bool = True

  @nn.compact
  def __call__(self, h: jax.Array, train: bool, reverse: bool = False):
    c = h.shape[-1]
    cb = c - c // 2
    net = GlowSTNet(cb if self.additive else 2 * cb, self.hidden, parent=None)
    layers = [ActNorm(name="actnorm"),
              (InvConv1x1LU if self.lu else InvConv1x1)(name="invconv"),
              Coupling(mask="channel", index=0, additive=self.additive, st_net=net,
                       name="coupling")]
    logdet = jnp.zeros((h.shape[0],), jnp.float32)
    for layer in (reversed(layers) if reverse else layers):
      h, ld = layer(h, train, reverse)
      logdet = logdet + ld
    return h, logdet


class GlowLevel(nn.Module):
  """Squeeze, ``steps`` Glow steps and (``split``) a factored-out half with a learned prior.

  ``__call__(h, train)`` -> ``(h_kept, eps or None, log p(z_split), logdet)``;
  ``__call__(h_kept, False, reverse=True, eps=eps, temperature=T)`` -> ``h``.
  """
  steps: int
  hidden: int
  split: bool
  additive: bool = False
  lu: bool = True

  def _prior(self, h1: jax.Array, c2: int):
    out = nn.Conv(2 * c2, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                  bias_init=nn.initializers.zeros, name="prior")(h1)
    return out[..., :c2], out[..., c2:]

  @nn.compact
  def __call__(self, h: jax.Array, train: bool, reverse: bool = False, eps=None,
               temperature: float = 1.0):
    steps = [GlowStep(self.hidden, self.additive, self.lu, name=f"step{k}")
             for k in range(self.steps)]
    if reverse:
      if self.split:
        mean, logs = self._prior(h, eps.shape[-1])
        h = jnp.concatenate([h, mean + temperature * jnp.exp(logs) * eps], axis=-1)
      for step in reversed(steps):
        h, _ = step(h, False, True)
      return unsqueeze2x2(h)
    h = squeeze2x2(h)
    logdet = jnp.zeros((h.shape[0],), jnp.float32)
    for step in steps:
      h, ld = step(h, train)
      logdet = logdet + ld
    if not self.split:
      return h, None, jnp.zeros_like(logdet), logdet
    keep = h.shape[-1] // 2
    h1, z2 = h[..., :keep], h[..., keep:]
    mean, logs = self._prior(h1, z2.shape[-1])
    return h1, (z2 - mean) * jnp.exp(-logs), gaussian_log_density(z2, mean, logs), logdet


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
      h, e, lpz, ld = level(h, train)
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
      h = self.level[l](h, False, reverse=True, eps=e, temperature=temperature)
    return h + 0.5


_PRESETS = {
    "smoke": {1: dict(levels=2, steps=2, hidden=16), 3: dict(levels=2, steps=2, hidden=16)},
    "cpu": {1: dict(levels=2, steps=4, hidden=64), 3: dict(levels=2, steps=4, hidden=64)},
    "paper": {1: dict(levels=2, steps=16, hidden=200), 3: dict(levels=3, steps=8, hidden=400)},
}


def make_glow(preset: str, image_shape, **overrides) -> Glow:
  """``Glow`` (affine couplings) with the settings of ``preset`` (``smoke``, ``cpu``,
  ``paper``) for grey or colour ``image_shape``; ``overrides`` replace any attribute."""
  if preset not in _PRESETS:
    raise UnknownNameError(
        f"unknown preset {preset!r} for model 'glow'; known: {', '.join(_PRESETS)}.")
  shape = tuple(int(s) for s in image_shape)
  settings = dict(_PRESETS[preset][1 if shape[-1] == 1 else 3], additive=False)
  settings.update(overrides)
  return Glow(image_shape=shape, **settings)


def make_cv_glow(preset: str, image_shape, **overrides) -> Glow:
  """CV-Glow: ``make_glow`` with additive couplings (constant volume given the 1x1 convs)."""
  return make_glow(preset, image_shape, **{"additive": True, **overrides})
