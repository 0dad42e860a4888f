"""The one input check of every model: uint8 images ``N x H x W x C`` of the model's shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError


def check_images(x, image_shape, model: str, hint: str = "") -> jax.Array:
  """``x`` as a uint8 jax array ``N x H x W x C`` (N >= 1) of ``image_shape``, else one
  ``InvalidInputError`` naming ``model`` (``hint`` is appended to a shape error, e.g. the
  transform that would fix it). Runs at trace time: costs nothing inside ``jit``."""
  x = jnp.asarray(x)
  if x.dtype != jnp.uint8:
    raise InvalidInputError(
        f"{model}: expected uint8 images (8-bit levels 0..255), got dtype {x.dtype}.")
  if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape) or x.shape[0] < 1:
    raise InvalidInputError(
        f"{model}: expected images N x {' x '.join(map(str, image_shape))}, got shape"
        f" {tuple(x.shape)}.{(' ' + hint) if hint else ''}")
  return x
