"""RealNVP's logit pre-transform for ``x`` in ``[0, 1)`` (e.g. dequantised pixels).

``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``; alpha 0.05 (RealNVP's constraint 0.9).
logdet (nats, per sample) ``= sum(log(1 - 2 alpha) - log p - log(1 - p))``, input-dependent;
the inverse's is its negative. This is the density change of the continuous ``x`` only; the
``1/256`` bin width of the discrete data is the model's to count.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector


class LogitTransform(Bijector):
  """``x in [0, 1) -> logit(alpha + (1 - 2 alpha) x)``; no parameters."""
  alpha: float = 0.05

  def _log_det(self, p: jax.Array) -> jax.Array:
    """``sum log|dy/dx|`` over each sample at ``p``: ``log(1 - 2a) - log p - log(1 - p)``."""
    per = math.log(1.0 - 2.0 * self.alpha) - jnp.log(p) - jnp.log1p(-p)
    return jnp.sum(per, axis=(1, 2, 3))

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    del train
    p = self.alpha + (1.0 - 2.0 * self.alpha) * x
    return jnp.log(p) - jnp.log1p(-p), self._log_det(p)

  def inverse_and_log_det(self, y: jax.Array):
    p = jax.nn.sigmoid(y)
    return (p - self.alpha) / (1.0 - 2.0 * self.alpha), -self._log_det(p)
