"""``input_complexity``: Input Complexity (Serrà et al. 2020), bits on both sides; see
:class:`InputComplexity`.

Codecs: ``codec='png'`` is PNG at maximum compression as libpng/OpenCV write it
(``cv2.imencode('.png', img, [IMWRITE_PNG_COMPRESSION, 9])``, what the Likelihood-Regret
reference measures): per row the filter (None, Sub, Up, Average, Paeth) with the smallest
sum of absolute signed residuals (libpng's heuristic, first one on ties), zlib level 9,
default strategy, one IDAT chunk. :func:`png_bytes` writes this file; its length equals
OpenCV's on all 128 fixture images (Pillow's ``optimize=True`` PNG differs by -3 bits on
average, up to 248 bits, because it filters differently). ``codec='jp2'`` is lossless
(reversible 5/3 wavelet) JPEG-2000 in the jp2 container, Pillow ``save(format='JPEG2000',
irreversible=False)`` (OpenJPEG); its length equals OpenCV's lossless
``IMWRITE_JPEG2000_COMPRESSION_X1000=1000`` on the fixture images. (The reference's own jp2
branch used OpenCV's default, which is lossy and nearly constant.)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import math
import struct
import zlib

import jax
import numpy as np
from PIL import Image

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import log_prob_fn

CODECS = ("png", "jp2")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_filter_rows(img: np.ndarray) -> bytes:
  """The filtered scanlines of an H x W x C uint8 image, libpng's adaptive filter choice:
  per row the filter type whose residuals, read as signed bytes, have the smallest sum of
  absolute values; each row is its filter byte followed by the residuals."""
  h = img.shape[0]
  bpp = img.shape[2]
  rows = img.reshape(h, -1).astype(np.int32)
  prev = np.vstack([np.zeros_like(rows[:1]), rows[:-1]])
  left = np.pad(rows, ((0, 0), (bpp, 0)))[:, :-bpp]
  upleft = np.pad(prev, ((0, 0), (bpp, 0)))[:, :-bpp]
  p = left + prev - upleft
  pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
  paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
  preds = np.stack([np.zeros_like(rows), left, prev, (left + prev) // 2, paeth])
  res = ((rows[None] - preds) % 256).astype(np.uint8)               # 5 x H x W*C
  cost = np.minimum(res, 256 - res.astype(np.int32)).sum(axis=2)    # 5 x H
  best = np.argmin(cost, axis=0)
  out = np.concatenate([best[:, None].astype(np.uint8), res[best, np.arange(h)]], axis=1)
  return out.tobytes()


def png_bytes(img: np.ndarray) -> bytes:
  """A complete PNG file (8-bit grey or RGB) of an H x W x C uint8 image, written as
  libpng does at compression level 9 (see the module docstring)."""
  h, w, c = img.shape
  color_type = {1: 0, 3: 2}[c]
  ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
  idat = zlib.compress(png_filter_rows(img), 9)
  return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jp2_bytes(img: np.ndarray) -> bytes:
  """Lossless JPEG-2000 (jp2 container) of an H x W x C uint8 image, Pillow/OpenJPEG."""
  buf = io.BytesIO()
  Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(
      buf, format="JPEG2000", irreversible=False)
  return buf.getvalue()


def compressed_bits(x: np.ndarray, codec: str = "png", workers: int = 2) -> np.ndarray:
  """L(x): 8 x byte length of each image's compressed file, float64 ``N`` (bits)."""
  if codec not in CODECS:
    raise InvalidInputError(f"input_complexity: codec must be one of {CODECS}, got {codec!r}.")
  x = validate_images(x, what="input_complexity input")
  encode = png_bytes if codec == "png" else jp2_bytes
  length = lambda img: 8 * len(encode(img))
  if workers > 1 and len(x) > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return np.array(list(pool.map(length, x)), np.float64)
  return np.array([length(img) for img in x], np.float64)


def complexity_score(nll_nats: np.ndarray, bits: np.ndarray, reference_units: bool = False
                     ) -> np.ndarray:
  """``NLL/ln 2 - L`` (bits - bits), or the reference's ``NLL - L`` (nats - bits)."""
  nll = np.asarray(nll_nats, np.float64)
  return (nll if reference_units else nll / math.log(2.0)) - np.asarray(bits, np.float64)


@dataclasses.dataclass(frozen=True)
class InputComplexity(Scorer):
  """``input_complexity``: ``S(x) = -log p(x) / ln 2 - L(x)``, bits per image (Serrà et al.
  2020); higher = more OOD.

  ``-log p(x)`` is the model's eval-mode NLL in nats (IWAE with ``k`` samples for the VAE);
  ``L(x)`` is 8 x the byte length of the whole lossless compressed file of the 8-bit
  image (headers included), PNG or JPEG-2000 (module docstring). Compression is CPU work
  (one image at a time over ``workers`` threads); the NLL is one compiled call per chunk.
  Needs no training data.

  Attributes:
    codec: ``'png'`` | ``'jp2'`` (both lossless).
    reference_units: True: the reference's ``NLL_nats - L_bits`` instead.
    k: importance samples of the NLL (ROSE App. B.1: 20).
    max_latents: bound on images x ``k`` per compiled call.
    workers: compression threads.
    name: ``'input_complexity'``.
    seed: seeds the importance samples.
    progress: show a progress bar.
    chunk_size: images per compiled call, at most.
  """
  name: str = "input_complexity"
  codec: str = "png"
  reference_units: bool = False
  k: int = 20
  max_latents: int = 2560
  workers: int = 2

  def __post_init__(self):
    super().__post_init__()
    if self.codec not in CODECS:
      raise InvalidInputError(f"input_complexity: codec must be one of {CODECS}, got {self.codec!r}.")

  def fit(self, model, variables, id_data=None) -> ScorerState:
    lp = jax.jit(log_prob_fn(model, self.k))

    def chunk_fn(params, x, rng):
      nll = -np.asarray(jax.device_get(lp(params, x, rng)), np.float64)
      bits = compressed_bits(np.asarray(jax.device_get(x)), self.codec, self.workers)
      return complexity_score(nll, bits, self.reference_units).astype(np.float32)

    return ScorerState(params=batches.replicate(variables), chunk_fn=chunk_fn,
                       image_shape=tuple(model.image_shape), name=self.name)
