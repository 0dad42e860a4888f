"""The trivial baseline: every 8-bit image equally likely (exactly 8 bits/dim)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import LOG_256
from ood_jax.models.inputs import check_images
from ood_jax.models.spec import Mode, ModelSpec


class UniformModel(nn.Module):
  """Uniform distribution over the 256^D images of shape ``image_shape``; no parameters.

  ``log_prob`` = ``-D log 256`` nats per image (D = H*W*C), ``__call__`` = ``D log 256``.
  ``train``, ``k`` and the sampling ``temperature`` are accepted for protocol compatibility
  and ignored.
  """
  image_shape: tuple[int, int, int] = (32, 32, 1)

  def _nats(self) -> float:
    h, w, c = self.image_shape
    return h * w * c * LOG_256

  def __call__(self, x_uint8, train: Mode = False) -> jax.Array:
    """Negative log-likelihood, nats per image: ``D log 256`` for every image."""
    x = check_images(x_uint8, self.image_shape, "UniformModel")
    return jnp.full((x.shape[0],), self._nats(), jnp.float32)

  def log_prob(self, x_uint8, train: Mode = False, k: int = 1) -> jax.Array:
    """``-D log 256`` nats per image."""
    return -self(x_uint8, train)

  def elbo(self, x_uint8, train: Mode = False) -> jax.Array:
    return self.log_prob(x_uint8, train)

  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images ``n x H x W x C`` with independent uniform levels 0..255
    (``temperature`` is ignored: the uniform distribution has no mode to sharpen)."""
    return jax.random.bits(rng, (int(n), *self.image_shape), jnp.uint8)


SPEC = ModelSpec(
    name="uniform", module=UniformModel,
    presets={"smoke": {1: {}, 3: {}}, "cpu": {1: {}, 3: {}}, "paper": {1: {}, 3: {}}},
    has_batchnorm=False, about="uniform over 8-bit images (exactly 8 bits/dim)")
