"""Affine (RealNVP / Glow) and additive (CV-Glow) coupling layers.

``y = (1 - out) * x + out * (x * exp(s) + t)`` with ``(raw, t) = st_net(x * cond)`` and
``s = scale * tanh(raw)`` (``scale`` a learnable per-channel factor, initialised to 1);
the additive coupling has ``s = 0``. ``cond``/``out`` come from ``masks.mask_pair``; for the
binary masks this is ``y = b * x + (1 - b) * (x * exp(s) + t)``. Because the st-network only
sees entries that the layer leaves unchanged, ``(s, t)`` computed from ``y`` equal those
computed from ``x`` and the inverse ``x = (y - t) * exp(-s)`` is exact (one shared
``_shift_and_log_scale`` for both directions).
``shift_first=True`` shifts before scaling: ``y = (x + t) * exp(s)`` on the transformed
entries, inverse ``x = y * exp(-s) - t`` (the coupling of Kirichenko et al.'s reference code,
``CouplingLayerBase``, and of their section 4: there ``-t`` is the layer's estimate of its
masked input). Same ``s``, same log-det.
logdet (nats, per sample) ``= sum(out * s)``, input-dependent for the affine coupling and
0 for the additive one (``constant_log_det``); the inverse's is the negative.

The ``channel`` mask is computed by slicing instead of multiplying (same map, half the
st-network input and output): the st-network sees only the ``Ca`` conditioning channels and
returns ``2 * Cb`` (affine) or ``Cb`` (additive) channels for the ``Cb`` transformed ones,
and ``scale`` has ``Cb`` entries.

Intermediates (for analyses of the couplings, Kirichenko et al.): the forward map ``sow``s
into collection ``'intermediates'`` the keys ``'x_in'`` (layer input, ``N x H x W x C``),
``'s'`` and ``'t'`` (log-scale and shift as applied: ``N x H x W x C``, zero outside ``out``;
``N x H x W x Cb`` for the ``channel`` mask; ``s`` is 0 for the additive coupling; with
``shift_first`` too, ``t`` is the shift added before the scaling) and
``'y_out'`` (output, ``N x H x W x C``); each a 1-tuple per call. They are stored only when
the caller passes ``mutable=['intermediates']`` (otherwise ``sow`` does nothing).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector
from ood_jax.models.flows.masks import mask_pair

SOW_KEYS = ("x_in", "s", "t", "y_out")


class SimpleSTNet(nn.Module):
  """Two 3x3 convs (ReLU between); the last is zero-initialised so couplings start as identity.

  ``__call__(h, train) -> N x H x W x features``.
  """
  features: int
  hidden: int = 16

  @nn.compact
  def __call__(self, h: jax.Array, train: bool) -> jax.Array:
    del train  # No batch statistics here.
    h = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", name="conv1")(h))
    return nn.Conv(self.features, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, name="conv2")(h)


class Coupling(Bijector):
  """Affine (``additive=False``) or additive coupling on mask ``mask`` / ``index`` (bijector).

  ``st_net`` (optional) is called as ``st_net(h, train)`` and must return ``2 * C`` channels
  (raw scale, then shift) for the affine coupling or ``C`` (shift) for the additive one
  (``2 * Cb`` / ``Cb`` for the ``channel`` mask, see the module docstring); by default a
  ``SimpleSTNet`` with ``hidden`` channels. ``train`` is the st-network's BatchNorm mode;
  the inverse runs it in eval mode. ``shift_first``: ``y = (x + t) * exp(s)`` instead of
  ``x * exp(s) + t`` (module docstring).
  """
  mask: str = "checkerboard"
  index: int = 0
  additive: bool = False
  st_net: Optional[nn.Module] = None
  hidden: int = 16
  shift_first: bool = False

  @nn.compact
  def _st(self, h: jax.Array, c: int, train: bool) -> tuple[jax.Array, jax.Array]:
    """``(s, t)`` for ``c`` transformed channels from the conditioning input ``h``."""
    features = c if self.additive else 2 * c
    net = self.st_net if self.st_net is not None else SimpleSTNet(features, self.hidden,
                                                                  name="st_net")
    out = net(h, train)
    if self.additive:
      return jnp.zeros_like(out), out
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    return scale * jnp.tanh(out[..., :c]), out[..., c:]

  def _halves(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``channel`` mask: ``(conditioning half, transformed half)``."""
    c = x.shape[-1]
    if c < 2:
      mask_pair("channel", tuple(x.shape[1:]), self.index)  # raises InvalidInputError
    first, second = x[..., :c // 2], x[..., c // 2:]
    return (first, second) if self.index % 2 == 0 else (second, first)

  def _merge(self, xa: jax.Array, xb: jax.Array) -> jax.Array:
    """Inverse of ``_halves``."""
    return jnp.concatenate([xa, xb] if self.index % 2 == 0 else [xb, xa], axis=-1)

  def _shift_and_log_scale(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """``(s, t)`` of the transformed entries; the same for ``x`` and its image ``y``."""
    if self.mask == "channel":
      xa, xb = self._halves(x)
      return self._st(xa, xb.shape[-1], train)
    cond, out = mask_pair(self.mask, tuple(x.shape[1:]), self.index)
    s, t = self._st(x * cond, x.shape[-1], train)
    return out * s, out * t

  def _affine(self, x: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
    """The forward map of the transformed entries (identity where ``s = t = 0``)."""
    return (x + t) * jnp.exp(s) if self.shift_first else x * jnp.exp(s) + t

  def _affine_inverse(self, y: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
    """Inverse of ``_affine``."""
    return y * jnp.exp(-s) - t if self.shift_first else (y - t) * jnp.exp(-s)

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    s, t = self._shift_and_log_scale(x, train)
    if self.mask == "channel":
      xa, xb = self._halves(x)
      y = self._merge(xa, self._affine(xb, s, t))
    else:
      y = self._affine(x, s, t)
    for key, value in zip(SOW_KEYS, (x, s, t, y)):
      self.sow("intermediates", key, value)
    return y, jnp.sum(s, axis=(1, 2, 3))

  def inverse_and_log_det(self, y: jax.Array):
    s, t = self._shift_and_log_scale(y, False)
    if self.mask == "channel":
      ya, yb = self._halves(y)
      x = self._merge(ya, self._affine_inverse(yb, s, t))
    else:
      x = self._affine_inverse(y, s, t)
    return x, -jnp.sum(s, axis=(1, 2, 3))

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    del train
    return bool(self.additive)


def AffineCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """RealNVP / Glow affine coupling (``Coupling(additive=False)``)."""
  return Coupling(additive=False, **kwargs)


def AdditiveCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """CV-Glow additive coupling, ``s = 0`` (``Coupling(additive=True)``)."""
  return Coupling(additive=True, **kwargs)
