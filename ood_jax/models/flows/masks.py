"""Binary masks of the coupling layers (RealNVP, Glow, Kirichenko et al.).

A mask pair ``(cond, out)`` of float32 ``H x W x C`` arrays (broadcast over the batch) says
which entries condition the st-network (``cond == 1``) and which are transformed
(``out == 1``); every other entry passes through unchanged. For the binary masks
``cond = b`` and ``out = 1 - b``.

Kinds (``index`` picks the variant):
* ``checkerboard``: ``b = 1`` where ``(row + col) % 2 == index`` (parity 0 or 1).
* ``channel``: index 0 conditions on the first half of the channels (transforms the second);
  index 1 the other way round.
* ``horizontal``: index 0 conditions on the top half of the rows; index 1 on the bottom half.
* ``vertical``: index 0 conditions on the left half of the columns; index 1 on the right half.
* ``cycle``: four quadrants numbered clockwise 0 top-left, 1 top-right, 2 bottom-right,
  3 bottom-left. Coupling ``index`` conditions only on quadrant ``index % 4`` and transforms
  only quadrant ``(index + 1) % 4``; the two other quadrants are neither fed to the
  st-network nor changed, so information needs four couplings to come back to a quadrant.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.registry import choose

MASK_KINDS = ("checkerboard", "channel", "horizontal", "vertical", "cycle")


def checkerboard(shape: tuple[int, int, int], parity: int) -> np.ndarray:
  """``b = 1`` where ``(row + col) % 2 == parity``; float32 ``H x W x C``."""
  h, w, c = shape
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  b = ((rows + cols) % 2 == parity % 2).astype(np.float32)
  return np.broadcast_to(b[:, :, None], (h, w, c)).copy()


def channel_wise(shape: tuple[int, int, int], first: bool) -> np.ndarray:
  """``b = 1`` on the first (``first=True``) or second half of the channels."""
  h, w, c = shape
  b = np.zeros((h, w, c), np.float32)
  half = c // 2
  if first:
    b[:, :, :half] = 1.0
  else:
    b[:, :, half:] = 1.0
  return b


def horizontal(shape: tuple[int, int, int], top: bool) -> np.ndarray:
  """``b = 1`` on the top (``top=True``) or bottom half of the rows."""
  h, w, c = shape
  b = np.zeros((h, w, c), np.float32)
  if top:
    b[: h // 2] = 1.0
  else:
    b[h // 2:] = 1.0
  return b


def vertical(shape: tuple[int, int, int], left: bool) -> np.ndarray:
  """``b = 1`` on the left (``left=True``) or right half of the columns."""
  h, w, c = shape
  b = np.zeros((h, w, c), np.float32)
  if left:
    b[:, : w // 2] = 1.0
  else:
    b[:, w // 2:] = 1.0
  return b


def quadrant(shape: tuple[int, int, int], q: int) -> np.ndarray:
  """1 on quadrant ``q % 4`` (0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left)."""
  h, w, c = shape
  b = np.zeros((h, w, c), np.float32)
  rows = slice(0, h // 2) if q % 4 in (0, 1) else slice(h // 2, h)
  cols = slice(0, w // 2) if q % 4 in (0, 3) else slice(w // 2, w)
  b[rows, cols] = 1.0
  return b


def mask_pair(kind: str, shape: tuple[int, int, int],
              index: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(cond, out)`` float32 ``H x W x C`` masks of coupling ``index`` of mask ``kind``."""
  h, w, c = shape
  choose("mask kind", kind, MASK_KINDS)
  if kind == "cycle":
    if h % 2 or w % 2:
      raise InvalidInputError(f"cycle mask: height and width must be even, got {h} x {w}.")
    return jnp.asarray(quadrant(shape, index)), jnp.asarray(quadrant(shape, index + 1))
  if kind == "checkerboard":
    b = checkerboard(shape, index % 2)
  elif kind == "channel":
    if c < 2:
      raise InvalidInputError(f"channel mask: needs at least 2 channels, got {c}.")
    b = channel_wise(shape, index % 2 == 0)
  elif kind == "horizontal":
    if h < 2:
      raise InvalidInputError(f"horizontal mask: needs at least 2 rows, got {h}.")
    b = horizontal(shape, index % 2 == 0)
  else:  # vertical
    if w < 2:
      raise InvalidInputError(f"vertical mask: needs at least 2 columns, got {w}.")
    b = vertical(shape, index % 2 == 0)
  return jnp.asarray(b), jnp.asarray(1.0 - b)
