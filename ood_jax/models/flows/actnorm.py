"""Glow's activation normalisation: per-channel affine ``y = (x + bias) * scale``.

Data-dependent initialisation: during ``init`` the first batch sets ``bias = -mean`` and
``scale = 1 / (std + eps)`` per channel (over N, H, W), so that batch comes out zero-mean,
unit-variance per channel. logdet (nats, per sample) ``= H * W * sum(log|scale|)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ActNorm(nn.Module):
  """Per-channel scale and bias with data-dependent initialisation."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, reverse: bool = False):
    del train  # ActNorm has no batch statistics after initialisation.
    mean = jnp.mean(x, axis=(0, 1, 2))
    std = jnp.std(x, axis=(0, 1, 2))
    bias = self.param("bias", lambda _: -jax.lax.stop_gradient(mean))
    scale = self.param("scale", lambda _: 1.0 / (jax.lax.stop_gradient(std) + self.eps))
    logdet = x.shape[1] * x.shape[2] * jnp.sum(jnp.log(jnp.abs(scale)))
    logdet = jnp.full((x.shape[0],), logdet, jnp.float32)
    if reverse:
      return x / scale - bias, -logdet
    return (x + bias) * scale, logdet
