"""Affine (RealNVP / Glow) and additive (CV-Glow) coupling layers.

``y = (1 - out) * x + out * (x * exp(s) + t)`` with ``(raw, t) = st_net(x * cond)`` and
``s = scale * tanh(raw)`` (``scale`` a learnable per-channel factor, initialised to 1);
the additive coupling has ``s = 0``. ``cond``/``out`` come from ``masks.mask_pair``; for the
binary masks this is ``y = b * x + (1 - b) * (x * exp(s) + t)``. Because the st-network only
sees entries that the layer leaves unchanged, the inverse is exact.
logdet (nats, per sample) ``= sum(out * s)``; the negative for ``reverse=True``.

The ``channel`` mask is computed by slicing instead of multiplying (same map, half the
st-network input and output): the st-network sees only the ``Ca`` conditioning channels and
returns ``2 * Cb`` (affine) or ``Cb`` (additive) channels for the ``Cb`` transformed ones,
and ``scale`` has ``Cb`` entries.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.masks import mask_pair


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


class Coupling(nn.Module):
  """Affine (``additive=False``) or additive coupling on mask ``mask`` / ``index``.

  ``st_net`` (optional) is called as ``st_net(h, train)`` and must return ``2 * C`` channels
  (raw scale, then shift) for the affine coupling or ``C`` (shift) for the additive one
  (``2 * Cb`` / ``Cb`` for the ``channel`` mask, see the module docstring); by default a
  ``SimpleSTNet`` with ``hidden`` channels.
  """
  mask: str = "checkerboard"
  index: int = 0
  additive: bool = False
  st_net: Optional[nn.Module] = None
  hidden: int = 16

  def _transform(self, x: jax.Array, h: jax.Array, reverse: bool, out=None):
    """Applies the affine / additive map to ``x`` given st-net output ``h``; ``(y, logdet)``."""
    c = x.shape[-1]
    if self.additive:
      s, t = jnp.zeros_like(x), h
    else:
      scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
      s = scale * jnp.tanh(h[..., :c])
      t = h[..., c:]
    if out is not None:
      s, t = out * s, out * t
    if reverse:
      return (x - t) * jnp.exp(-s), -jnp.sum(s, axis=(1, 2, 3))
    return x * jnp.exp(s) + t, jnp.sum(s, axis=(1, 2, 3))

  def _net(self, features: int) -> nn.Module:
    if self.st_net is not None:
      return self.st_net
    return SimpleSTNet(features, self.hidden, name="st_net")

  def _channel(self, x: jax.Array, train: bool, reverse: bool):
    """The ``channel`` mask by slicing: condition on one half, transform the other."""
    c = x.shape[-1]
    if c < 2:
      mask_pair("channel", tuple(x.shape[1:]), self.index)  # raises InvalidInputError
    half = c // 2
    first, second = x[..., :half], x[..., half:]
    xa, xb = (first, second) if self.index % 2 == 0 else (second, first)
    cb = xb.shape[-1]
    h = self._net(cb if self.additive else 2 * cb)(xa, train)
    yb, logdet = self._transform(xb, h, reverse)
    y = jnp.concatenate([xa, yb] if self.index % 2 == 0 else [yb, xa], axis=-1)
    return y, logdet

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, reverse: bool = False):
    if self.mask == "channel":
      return self._channel(x, train, reverse)
    c = x.shape[-1]
    cond, out = mask_pair(self.mask, tuple(x.shape[1:]), self.index)
    h = self._net(c if self.additive else 2 * c)(x * cond, train)
    return self._transform(x, h, reverse, out)


def AffineCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """RealNVP / Glow affine coupling (``Coupling(additive=False)``)."""
  return Coupling(additive=False, **kwargs)


def AdditiveCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """CV-Glow additive coupling, ``s = 0`` (``Coupling(additive=True)``)."""
  return Coupling(additive=True, **kwargs)
