"""RealNVP squeeze: space-to-depth 2x2, ``N x H x W x C -> N x H/2 x W/2 x 4C``; logdet 0.

Output channel ``(2 * di + dj) * C + c`` of pixel ``(i, j)`` holds input ``(2i + di, 2j + dj, c)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.bijector import Bijector


def squeeze2x2(x: jax.Array) -> jax.Array:
  """``N x H x W x C -> N x H/2 x W/2 x 4C`` (H and W even)."""
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise InvalidInputError(f"squeeze: height and width must be even, got {h} x {w}.")
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def unsqueeze2x2(x: jax.Array) -> jax.Array:
  """Exact inverse of ``squeeze2x2``: ``N x H x W x 4C -> N x 2H x 2W x C``."""
  n, h, w, c4 = x.shape
  if c4 % 4:
    raise InvalidInputError(f"unsqueeze: channels must be a multiple of 4, got {c4}.")
  c = c4 // 4
  x = x.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c)


class Squeeze(Bijector):
  """Space-to-depth as a flow layer (volume preserving: log-det 0 both ways)."""
  constant = True

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    del train
    return squeeze2x2(x), jnp.zeros((x.shape[0],), jnp.float32)

  def inverse_and_log_det(self, y: jax.Array):
    return unsqueeze2x2(y), jnp.zeros((y.shape[0],), jnp.float32)
