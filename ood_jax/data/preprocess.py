"""Dataset-specific preprocessing, applied identically whatever the source (npz, IDX, TFDS).

* ``omniglot``: to grayscale, white strokes on black (images whose mean is above 127,
  i.e. black strokes on a white page as in the original data, are inverted; images that
  are already white-on-black are kept, so a pre-inverted local copy is not flipped back),
  then resized to 28 x 28.
* ``celeb_a``: unless already 32 x 32, shorter side to 32 (PIL bicubic when downscaling)
  then centre crop to 32 x 32.
* ``lsun`` (any scene), ``imagenet32``, ``tiny_imagenet``: the same shorter-side resize and
  centre crop to 32 x 32 when an image is larger than 32 in either side.
* everything else (MNIST-likes, CIFAR, SVHN, synthetic sets, other local files): none.

Input is either one uint8 ``N x H x W x C`` array or a sequence of ``H x W x C`` images
(whose sizes may differ, as in LSUN); the output is one uint8 ``N x H x W x C`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ood_jax.data import transforms
from ood_jax.errors import InvalidInputError

DOWNSCALED_SIZE = 32   # celeb_a, lsun, imagenet
OMNIGLOT_SIZE = 28


def _omniglot(x: np.ndarray) -> np.ndarray:
  x = transforms.to_grayscale(x)
  flip = x.reshape(x.shape[0], -1).mean(axis=1) > 127.5
  x = np.where(flip[:, None, None, None], 255 - x, x).astype(np.uint8)
  return transforms.resize(x, OMNIGLOT_SIZE)


def _celeb_a(x: np.ndarray) -> np.ndarray:
  return transforms.resize(x, DOWNSCALED_SIZE)


def _shrink_if_larger(x: np.ndarray) -> np.ndarray:
  if x.shape[1] > DOWNSCALED_SIZE or x.shape[2] > DOWNSCALED_SIZE:
    return transforms.resize(x, DOWNSCALED_SIZE)
  return x


_BY_FAMILY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "omniglot": _omniglot,
    "celeb_a": _celeb_a,
    "lsun": _shrink_if_larger,
    "imagenet32": _shrink_if_larger,
    "tiny_imagenet": _shrink_if_larger,
}


def family(name: str) -> str:
  """``'lsun/bedroom'`` -> ``'lsun'``; other names map to themselves."""
  return name.split("/", 1)[0]


def _as_image(img, what: str) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] not in (1, 3):
    raise InvalidInputError(
        f"{what}: expected uint8 H x W x C images with C in {{1, 3}}, got {img.dtype} {img.shape}.")
  return img


def preprocess(name: str, images: np.ndarray | Sequence[np.ndarray], *,
               what: str | None = None) -> np.ndarray:
  """Applies the preprocessing of dataset ``name`` (canonical) to ``images``.

  Raises ``InvalidInputError`` for an empty set or images that are not uint8 HWC.
  """
  what = what or f"dataset {name!r}"
  fn = _BY_FAMILY.get(family(name))
  if isinstance(images, np.ndarray) and images.ndim == 4:
    if images.shape[0] == 0:
      raise InvalidInputError(f"{what}: the set is empty (shape {images.shape}).")
    _as_image(images[0], what)
    return fn(images) if fn else images
  images = [_as_image(im, what) for im in images]
  if not images:
    raise InvalidInputError(f"{what}: the set is empty (no images).")
  if len({im.shape for im in images}) == 1:
    x = np.stack(images)
    return fn(x) if fn else x
  if fn is None:
    shapes = sorted({im.shape for im in images})[:3]
    raise InvalidInputError(
        f"{what}: images have different shapes ({shapes}, ...); store them at one size.")
  return np.concatenate([fn(im[None]) for im in images])
