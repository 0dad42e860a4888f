"""Pixel conventions shared by every model and score.

* Datasets are ``uint8`` arrays ``N x H x W x C`` (C = 1 or 3), values 0..255.
* Networks see ``x / 255`` (``to_unit``; what the reference VAEs were trained on) or,
  for continuous-density models in training, uniformly dequantised ``(x + u) / 256``
  in ``[0, 1)`` (``dequantize``).
* Every model's ``log_prob`` is in **nats per image of the discrete 8-bit data**, and
  ``bits_per_dim = -log_prob / (D * ln 2)`` with ``D = H * W * C``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError

LOG_256 = math.log(256.0)


def validate_images(x, *, what: str = "images", hwc: tuple[int, int, int] | None = None,
                    allow_empty: bool = False) -> np.ndarray:
  """Checks ``x`` is uint8 ``N x H x W x C`` with C in {1, 3}; returns it as a numpy array.

  ``hwc`` pins the expected image shape (resolution mismatch is an error, not a resize).
  Raises ``InvalidInputError`` with one clear message otherwise.
  """
  if isinstance(x, jax.Array):
    x = np.asarray(x)
  if not isinstance(x, np.ndarray):
    raise InvalidInputError(f"{what}: expected a numpy uint8 array N x H x W x C, got {type(x).__name__}.")
  if x.dtype != np.uint8:
    hint = ""
    if np.issubdtype(x.dtype, np.floating):
      if np.isnan(x).any():
        hint = " It also contains NaN values."
      hint += " Convert floats in [0, 1] with (x * 255).round().astype(np.uint8)."
    raise InvalidInputError(f"{what}: expected dtype uint8 (8-bit pixels 0..255), got {x.dtype}.{hint}")
  if x.ndim != 4:
    raise InvalidInputError(
        f"{what}: expected 4 dimensions N x H x W x C, got shape {x.shape}."
        + (" Add a channel axis with x[..., None]." if x.ndim == 3 else ""))
  if x.shape[-1] not in (1, 3):
    raise InvalidInputError(
        f"{what}: expected 1 (grey) or 3 (RGB) channels in the last axis, got shape {x.shape}"
        " (images must be channels-last, N x H x W x C).")
  if x.shape[0] == 0 and not allow_empty:
    raise InvalidInputError(f"{what}: the set is empty (shape {x.shape}).")
  if hwc is not None and tuple(x.shape[1:]) != tuple(hwc):
    raise InvalidInputError(
        f"{what}: image shape {tuple(x.shape[1:])} does not match the model's {tuple(hwc)}."
        " Add a transform (e.g. 'resize:32', 'rgb', 'grayscale') so the sets meet.")
  return x


def to_unit(x_uint8: jax.Array) -> jax.Array:
  """uint8 levels -> float32 ``k / 255`` in [0, 1] (torchvision ``ToTensor``)."""
  return x_uint8.astype(jnp.float32) / 255.0


def dequantize(x_uint8: jax.Array, rng: jax.Array) -> jax.Array:
  """uint8 levels -> ``(k + u) / 256`` with ``u ~ U[0, 1)``: a point in the level's bin."""
  u = jax.random.uniform(rng, x_uint8.shape, jnp.float32)
  return (x_uint8.astype(jnp.float32) + u) / 256.0


def num_dims(x_or_shape) -> int:
  """D = H * W * C of an image batch or of an ``(H, W, C)`` shape."""
  shape = x_or_shape if isinstance(x_or_shape, tuple) else tuple(x_or_shape.shape[1:])
  return int(np.prod(shape))


def bits_per_dim(log_prob, dims: int):
  """``-log_prob / (D ln 2)``; ``log_prob`` in nats per image of the discrete data."""
  return -log_prob / (dims * math.log(2.0))
