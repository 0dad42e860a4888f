"""Synthetic OOD sets: ``noise`` (uniform random pixels) and ``constant`` (one colour each).

Both need the image shape ``like = (H, W, C)`` (usually the in-distribution set's) and are
deterministic given ``(name, seed, split)``, so 'train' and 'test' never share images.
"""

from __future__ import annotations

import zlib

import numpy as np

from ood_jax.errors import InvalidInputError

SYNTHETIC = ("noise", "constant")
DEFAULT_SIZE = 10000


def _rng(name: str, split: str, seed: int) -> np.random.Generator:
  return np.random.default_rng(
      [int(seed), zlib.crc32(name.encode()), zlib.crc32(split.encode())])


def _check_like(name: str, like) -> tuple[int, int, int]:
  if like is None:
    raise InvalidInputError(
        f"The synthetic set {name!r} needs its image shape: pass like=(H, W, C), e.g. (32, 32, 3).")
  try:
    h, w, c = (int(v) for v in like)
  except (TypeError, ValueError):
    raise InvalidInputError(f"{name!r}: like must be (H, W, C), got {like!r}.") from None
  if h < 1 or w < 1 or c not in (1, 3):
    raise InvalidInputError(f"{name!r}: like must be (H >= 1, W >= 1, C in {{1, 3}}), got {like!r}.")
  return h, w, c


def make(name: str, split: str, like, n: int | None = None, seed: int = 0) -> np.ndarray:
  """``n`` (default 10000) uint8 images of shape ``like``.

  ``noise``: every pixel and channel uniform in 0..255. ``constant``: each image filled
  with one colour, each channel uniform in 0..255.
  """
  if name not in SYNTHETIC:
    raise InvalidInputError(f"Unknown synthetic set {name!r}; known: {', '.join(SYNTHETIC)}.")
  h, w, c = _check_like(name, like)
  n = DEFAULT_SIZE if n is None else int(n)
  if n < 1:
    raise InvalidInputError(f"{name!r}: n must be >= 1, got {n}.")
  rng = _rng(name, split, seed)
  if name == "noise":
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
  colours = rng.integers(0, 256, (n, 1, 1, c), dtype=np.uint8)
  return np.ascontiguousarray(np.broadcast_to(colours, (n, h, w, c)))
