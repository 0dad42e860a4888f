"""RealNVP's logit pre-transform for ``x`` in ``[0, 1)`` (e.g. dequantised pixels).

``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``; alpha 0.05 (RealNVP's constraint 0.9).
logdet (nats, per sample) ``= sum(log(1 - 2 alpha) - log p - log(1 - p))``. This is the
density change of the continuous ``x`` only; the ``1/256`` bin width of the discrete data
is the model's to count.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class LogitTransform(nn.Module):
  """``x in [0, 1) -> logit(alpha + (1 - 2 alpha) x)``; no parameters."""
  alpha: float = 0.05

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, reverse: bool = False):
    del train
    a = self.alpha
    if reverse:
      p = jax.nn.sigmoid(x)
      y = (p - a) / (1.0 - 2.0 * a)
    else:
      p = a + (1.0 - 2.0 * a) * x
      y = jnp.log(p) - jnp.log1p(-p)
    # log|dy/dx| per entry at p: log(1 - 2a) - log p - log(1 - p).
    per = math.log(1.0 - 2.0 * a) - jnp.log(p) - jnp.log1p(-p)
    logdet = jnp.sum(per, axis=(1, 2, 3))
    return y, (-logdet if reverse else logdet)
