"""The trivial baseline: every 8-bit image equally likely (exactly 8 bits/dim)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import LOG_256
from ood_jax.errors import InvalidInputError


class UniformModel(nn.Module):
  """Uniform distribution over the 256^D images of shape ``image_shape``; no parameters.

  ``log_prob`` = ``-D log 256`` nats per image (D = H*W*C), ``__call__`` = ``D log 256``.
  ``train`` and ``k`` are accepted for protocol compatibility and ignored.
  """
  image_shape: tuple[int, int, int] = (32, 32, 1)

  def _check(self, x_uint8) -> jax.Array:
    x = jnp.asarray(x_uint8)
    if x.dtype != jnp.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
      raise InvalidInputError(
          f"UniformModel: expected uint8 images N x {' x '.join(map(str, self.image_shape))},"
          f" got {x.dtype} {tuple(x.shape)}.")
    return x

  def _nats(self) -> float:
    h, w, c = self.image_shape
    return h * w * c * LOG_256

  def __call__(self, x_uint8, train: bool = False) -> jax.Array:
    """Negative log-likelihood, nats per image: ``D log 256`` for every image."""
    x = self._check(x_uint8)
    return jnp.full((x.shape[0],), self._nats(), jnp.float32)

  def log_prob(self, x_uint8, train: bool = False, k: int = 1) -> jax.Array:
    """``-D log 256`` nats per image."""
    return -self(x_uint8, train)

  def elbo(self, x_uint8, train: bool = False) -> jax.Array:
    return self.log_prob(x_uint8, train)
