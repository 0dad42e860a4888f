"""Perturbations of ID images for outlier-exposing baselines: the background model of the
likelihood ratio (Ren et al. 2019) and RND (Choi & Chung 2020), as ROSE App. B.3 / Tables
10-11 compare them. Every function maps uint8 ``N x H x W x C`` to uint8 of the same shape
(results rounded half-to-even and clipped to 0..255) and is a pure function of
``(x, settings, seed)``.

Names (usable bare on the command line, ``likelihood_ratio[perturbation=svd22]``):

* ``'random'``: Ren's mutation: each sub-pixel, with probability ``mu``, replaced by a level
  uniform on 0..255 (ROSE: ``mu`` in {0.1, 0.2, 0.3}); the only random one.
* ``'svd<K>'`` (``svd22``, ``svd28``): SVD blurring as the SVD-RND reference code does
  (``sungikchoi/NVB``, ``subfunction.py``, ``--eigen``): per image and channel, the ``K``
  smallest singular values are zeroed, i.e. the ``min(H, W) - K`` largest are kept (at
  least 1: ``svd28`` keeps 4 of 32 on 32 x 32 images and 1 on 28 x 28 ones).
* ``'dct<K>'`` (``dct28``): per image and channel, the ``K`` largest-magnitude coefficients
  of the orthonormal 2-D DCT-II are kept, the others zeroed, and the image transformed
  back (ROSE: "uses only high magnitude signals in the frequency domain ... 28").
* ``'blur'``: Gaussian blur, kernel 3 x 3, sigma 0.8 (ROSE's GB), per channel, separable,
  borders reflected (``x[1]`` mirrors ``x[-1]``: torchvision's ``GaussianBlur`` padding).

SVD and DCT work on the pixel levels as floats (0..255), not on normalised tensors.
``BatchPerturbation`` is the training loop's ``batch_transform``: a fresh draw per
``(seed, step)`` for ``random``, the same map at every step for the others.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
import scipy.fft

from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError

BLUR_SIGMA = 0.8
BLUR_SIZE = 3
_MUTATION_TAG = 0x5EED            # entropy tag of Ren's mutation (kept from likelihood_ratio)
_NAME = re.compile(r"(random|blur)|(svd|dct)([1-9][0-9]*)")
EXAMPLES = ("random", "svd22", "svd28", "dct28", "blur")


def parse(name: str) -> tuple[str, int | None]:
  """``'svd22'`` -> ``('svd', 22)``, ``'random'`` -> ``('random', None)``; anything else is
  one ``InvalidInputError`` listing the forms."""
  m = _NAME.fullmatch(name) if isinstance(name, str) else None
  if not m:
    raise InvalidInputError(
        f"unknown perturbation {name!r}; expected 'random' (Ren's mutation, rate mu), "
        "'svd<K>' (zero the K smallest singular values), 'dct<K>' (keep the K largest DCT "
        f"coefficients) or 'blur' (Gaussian 3x3, sigma 0.8), e.g. {', '.join(EXAMPLES)}.")
  if m.group(1):
    return m.group(1), None
  return m.group(2), int(m.group(3))


def check_mu(mu: float) -> float:
  if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0.0 <= mu <= 1.0:
    raise InvalidInputError(f"mutation rate mu must be a number in [0, 1], got {mu!r}.")
  return float(mu)


def _to_uint8(y: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _entropy(seed: int | Sequence[int]) -> list[int]:
  parts = [seed] if np.ndim(seed) == 0 else list(seed)
  if any(isinstance(s, bool) or int(s) != s or s < 0 for s in parts):
    raise InvalidInputError(f"perturbation seed must be integers >= 0, got {seed!r}.")
  return [int(s) for s in parts] + [_MUTATION_TAG]


def mutate(x: np.ndarray, mu: float, seed: int | Sequence[int]) -> np.ndarray:
  """Ren's mutation: each sub-pixel of uint8 ``x`` is, with probability ``mu``, replaced by
  a level uniform on 0..255 (independently; the new level may equal the old one, so about
  ``mu * 255/256`` of them change). A function of ``(x, mu, seed)`` only; ``seed`` an int
  or a sequence of ints (e.g. ``(seed, step)``)."""
  mu = check_mu(mu)
  rng = np.random.default_rng(_entropy(seed))
  mask = rng.random(x.shape) < mu
  levels = rng.integers(0, 256, size=x.shape, dtype=np.uint8)
  return np.where(mask, levels, x).astype(np.uint8)


def _planes(x: np.ndarray) -> np.ndarray:
  """``N x H x W x C`` -> float64 ``N x C x H x W`` (one matrix per image and channel)."""
  return np.transpose(x, (0, 3, 1, 2)).astype(np.float64)


def _unplanes(p: np.ndarray) -> np.ndarray:
  return _to_uint8(np.transpose(p, (0, 2, 3, 1)))


def svd_keep(h: int, w: int, k: int) -> int:
  """Singular values ``svd<k>`` keeps of an ``h x w`` plane: ``max(min(h, w) - k, 1)``."""
  return max(min(h, w) - k, 1)


def svd_blur(x: np.ndarray, k: int) -> np.ndarray:
  """``svd<k>``: per image and channel, ``sum_{i < keep} s_i u_i v_i^T`` with the singular
  values ``s`` in descending order and ``keep = svd_keep(H, W, k)``."""
  p = _planes(x)
  u, s, vh = np.linalg.svd(p, full_matrices=False)
  keep = svd_keep(x.shape[1], x.shape[2], k)
  return _unplanes((u[..., :keep] * s[..., None, :keep]) @ vh[..., :keep, :])


def dct_blur(x: np.ndarray, k: int) -> np.ndarray:
  """``dct<k>``: per image and channel, the ``k`` largest-|c| coefficients ``c`` of the
  orthonormal 2-D DCT-II kept (ties broken by position, first in row-major order), the
  rest zeroed, then the inverse DCT."""
  p = _planes(x)
  c = scipy.fft.dctn(p, type=2, norm="ortho", axes=(-2, -1))
  flat = c.reshape(*c.shape[:2], -1)
  keep = min(k, flat.shape[-1])
  order = np.argsort(-np.abs(flat), axis=-1, kind="stable")[..., :keep]
  kept = np.zeros_like(flat)
  np.put_along_axis(kept, order, np.take_along_axis(flat, order, axis=-1), axis=-1)
  return _unplanes(scipy.fft.idctn(kept.reshape(c.shape), type=2, norm="ortho", axes=(-2, -1)))


def gaussian_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian ``exp(-t^2 / (2 sigma^2))``, ``t`` = -(size//2)..size//2."""
  t = np.arange(size, dtype=np.float64) - size // 2
  g = np.exp(-t ** 2 / (2.0 * sigma ** 2))
  return g / g.sum()


def gaussian_blur(x: np.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
  """``blur``: the separable Gaussian (``gaussian_kernel`` along H, then W) per channel,
  borders reflected without repeating the edge (numpy/torch ``'reflect'``)."""
  g, r = gaussian_kernel(size, sigma), size // 2
  if min(x.shape[1], x.shape[2]) <= r:
    raise InvalidInputError(f"blur: images of {x.shape[1]} x {x.shape[2]} are too small for a "
                            f"{size} x {size} kernel with reflected borders.")
  p = np.pad(x.astype(np.float64), ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
  h, w = x.shape[1], x.shape[2]
  rows = sum(g[i] * p[:, i:i + h] for i in range(size))
  out = sum(g[j] * rows[:, :, j:j + w] for j in range(size))
  return _to_uint8(out)


def perturb(x: np.ndarray, name: str, *, mu: float = 0.2,
            seed: int | Sequence[int] = 0) -> np.ndarray:
  """Perturbation ``name`` (module docstring) of uint8 ``x``: uint8 of the same shape.
  ``mu`` is used by ``'random'`` only, ``seed`` likewise (the blurs are deterministic)."""
  kind, k = parse(name)
  if kind == "random":
    mu = check_mu(mu)
  x = validate_images(x, what=f"perturbation {name!r} input")
  if kind == "random":
    return mutate(x, mu, seed)
  if kind == "svd":
    return svd_blur(x, k)
  if kind == "dct":
    return dct_blur(x, k)
  return gaussian_blur(x)


def describe(name: str, mu: float) -> dict:
  """What identifies a perturbation's output (checkpoint meta): its name, and ``mu`` for
  ``'random'``."""
  kind, _ = parse(name)
  return {"perturbation": name, **({"mu": check_mu(mu)} if kind == "random" else {})}


@dataclasses.dataclass(frozen=True)
class BatchPerturbation:
  """A ``batch_transform`` of ``ood_jax.train.loop.train``: ``(batch, step) -> perturb(batch,
  name, mu=mu, seed=(seed, step))``, so ``'random'`` draws a fresh mutation for every
  training batch, reproducibly (the same step gives the same draw after a resume).

  Attributes:
    name: a perturbation name (module docstring); checked on construction.
    mu: mutation rate of ``'random'``.
    seed: seeds the draws (with the step).
  """
  name: str = "random"
  mu: float = 0.2
  seed: int = 0

  def __post_init__(self):
    describe(self.name, self.mu)          # validates name and mu
    _entropy(self.seed)

  def __call__(self, batch: np.ndarray, step: int) -> np.ndarray:
    return perturb(batch, self.name, mu=self.mu, seed=(self.seed, int(step)))

  def describe(self) -> dict:
    return {"name": "perturbation", **describe(self.name, self.mu), "seed": self.seed}
