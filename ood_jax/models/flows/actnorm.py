"""Glow's activation normalisation: per-channel affine ``y = (x + bias) * scale``.

Data-dependent initialisation: during ``init`` (which runs the forward map) the first batch
sets ``bias = -mean`` and ``scale = 1 / (std + eps)`` per channel (over N, H, W), so that
batch comes out zero-mean, unit-variance per channel. logdet (nats, per sample)
``= H * W * sum(log|scale|)``, the same for every input (``constant_log_det``); the inverse's
is its negative.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector


class ActNorm(Bijector):
  """Per-channel scale and bias with data-dependent initialisation (bijector layer)."""
  constant = True
  eps: float = 1e-6

  @nn.compact
  def _params(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(bias, scale)``, ``[C]`` each; made from the statistics of ``x`` during ``init``."""
    stats = lambda f: jax.lax.stop_gradient(f(x, axis=(0, 1, 2)))
    bias = self.param("bias", lambda _: -stats(jnp.mean))
    scale = self.param("scale", lambda _: 1.0 / (stats(jnp.std) + self.eps))
    return bias, scale

  @staticmethod
  def _log_det(x: jax.Array, scale: jax.Array) -> jax.Array:
    logdet = x.shape[1] * x.shape[2] * jnp.sum(jnp.log(jnp.abs(scale)))
    return jnp.full((x.shape[0],), logdet, jnp.float32)

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    """``(y, log|det dy/dx|)``; ``train`` has no effect (no batch statistics)."""
    del train
    bias, scale = self._params(x)
    return (x + bias) * scale, self._log_det(x, scale)

  def inverse_and_log_det(self, y: jax.Array):
    """``(x, log|det dx/dy|)``."""
    bias, scale = self._params(y)
    return y / scale - bias, -self._log_det(y, scale)
