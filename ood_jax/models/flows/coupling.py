"""Affine (RealNVP / Glow) and additive (CV-Glow) coupling layers.

``y = (1 - out) * x + out * (x * exp(s) + t)`` with ``(raw, t) = st_net(x * cond)`` and
``s = scale * tanh(raw)`` (``scale`` a learnable per-channel factor, initialised to 1);
the additive coupling has ``s = 0``. ``cond``/``out`` come from ``masks.mask_pair``; for the
binary masks this is ``y = b * x + (1 - b) * (x * exp(s) + t)``. Because the st-network only
sees entries that the layer leaves unchanged, the inverse is exact.
logdet (nats, per sample) ``= sum(out * s)``; the negative for ``reverse=True``.
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
  (raw scale, then shift) for the affine coupling or ``C`` (shift) for the additive one;
  by default a ``SimpleSTNet`` with ``hidden`` channels.
  """
  mask: str = "checkerboard"
  index: int = 0
  additive: bool = False
  st_net: Optional[nn.Module] = None
  hidden: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, reverse: bool = False):
    c = x.shape[-1]
    cond, out = mask_pair(self.mask, tuple(x.shape[1:]), self.index)
    features = c if self.additive else 2 * c
    net = self.st_net if self.st_net is not None else SimpleSTNet(features, self.hidden,
                                                                  name="st_net")
    h = net(x * cond, train)
    if self.additive:
      s, t = jnp.zeros_like(x), h
    else:
      scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
      s = scale * jnp.tanh(h[..., :c])
      t = h[..., c:]
    s, t = out * s, out * t
    if reverse:
      y = (x - t) * jnp.exp(-s)
      logdet = -jnp.sum(s, axis=(1, 2, 3))
    else:
      y = x * jnp.exp(s) + t
      logdet = jnp.sum(s, axis=(1, 2, 3))
    return y, logdet


def AffineCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """RealNVP / Glow affine coupling (``Coupling(additive=False)``)."""
  return Coupling(additive=False, **kwargs)


def AdditiveCoupling(**kwargs) -> Coupling:  # pylint: disable=invalid-name
  """CV-Glow additive coupling, ``s = 0`` (``Coupling(additive=True)``)."""
  return Coupling(additive=True, **kwargs)
