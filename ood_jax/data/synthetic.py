"""Synthetic OOD sets: ``noise`` (uniform random pixels), ``constant`` (one random colour
each) and ``constant:<v>`` (every pixel and channel ``v``).

* ``noise``: every pixel and channel uniform in 0..255.
* ``constant``: each image filled with one colour, each channel uniform in 0..255.
* ``constant:<v>``, ``v`` an integer 0..255 written in decimal digits: every pixel and
  channel of every image is ``v`` (Nalisnick et al. App. E, Fig. 8: ``constant:0`` for the
  grey sets, ``constant:128`` for the colour ones). Anything else after ``constant:``
  (``constant:300``, ``constant:x``, ``constant:``, ``constant:-1``, ``constant:1.5``) and
  any argument to ``noise`` is an ``InvalidInputError``.

All need the image shape ``like = (H, W, C)`` (usually the in-distribution set's) and are
deterministic given ``(name, seed, split)``, so 'train' and 'test' never share images (the
images of ``constant:<v>`` are all the same whatever the seed).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from ood_jax.errors import InvalidInputError

SYNTHETIC = ("noise", "constant")
DEFAULT_SIZE = 10000

_VALUE = re.compile(r"[0-9]+")


def _rng(name: str, split: str, seed: int) -> np.random.Generator:
  return np.random.default_rng(
      [int(seed), zlib.crc32(name.encode()), zlib.crc32(split.encode())])


def is_synthetic(name: str) -> bool:
  """Whether ``name`` (canonical, lower case) names a synthetic set, valid or not:
  ``noise``, ``constant`` or ``<one of them>:<anything>``."""
  return isinstance(name, str) and name.split(":", 1)[0].strip() in SYNTHETIC


def parse_name(name: str) -> tuple[str, int | None]:
  """``'noise'`` -> ``('noise', None)``, ``'constant'`` -> ``('constant', None)``,
  ``'constant:128'`` -> ``('constant', 128)``.

  Raises ``InvalidInputError`` for a value that is not an integer 0..255 in decimal
  digits, an argument to ``noise``, or a name that is not synthetic.
  """
  base, sep, arg = str(name).strip().partition(":")
  base, arg = base.strip(), arg.strip()
  if base not in SYNTHETIC:
    raise InvalidInputError(f"Unknown synthetic set {name!r}; known: noise, constant, constant:<v>.")
  if not sep:
    return base, None
  if base == "noise":
    raise InvalidInputError(f"The synthetic set 'noise' takes no value, got {name!r}.")
  if not _VALUE.fullmatch(arg) or int(arg) > 255:
    raise InvalidInputError(
        f"Synthetic set {name!r}: 'constant:<v>' needs a pixel value v, an integer 0..255"
        " (e.g. 'constant:0' or 'constant:128'); plain 'constant' is one random colour per image.")
  return base, int(arg)


def canonical(name: str) -> str:
  """``'constant:007'`` -> ``'constant:7'``; other valid names unchanged (checked)."""
  base, value = parse_name(name)
  return base if value is None else f"{base}:{value}"


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
  """``n`` (default 10000) uint8 images of shape ``like`` (module docstring for each name)."""
  base, value = parse_name(name)
  h, w, c = _check_like(name, like)
  n = DEFAULT_SIZE if n is None else int(n)
  if n < 1:
    raise InvalidInputError(f"{name!r}: n must be >= 1, got {n}.")
  if value is not None:
    return np.full((n, h, w, c), value, np.uint8)
  rng = _rng(base, split, seed)
  if base == "noise":
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
  colours = rng.integers(0, 256, (n, 1, 1, c), dtype=np.uint8)
  return np.ascontiguousarray(np.broadcast_to(colours, (n, h, w, c)))
