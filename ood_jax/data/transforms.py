"""Image transforms named in dataset specs (``mnist+resize:32+rotation``).

Every transform maps uint8 ``N x H x W x C`` to uint8 ``N x H' x W' x C'`` and is
deterministic given a seed. Resampling goes through PIL so the pixels match the PIL /
torchvision pipelines of the reference implementations bit for bit:

* ``rotation``: each image rotated counter-clockwise by an angle drawn uniformly in
  (90, 270) degrees (Song et al., Table 2); PIL ``NEAREST``, fill 0, same size.
* ``brightness:<f>``: ``clip(floor(x * f), 0, 255)`` with ``f >= 0`` (ROSE, Table 1;
  torchvision ``adjust_brightness`` bit for bit: PIL and the tensor path both truncate).
* ``gray:<a>``: 'graying' (Nalisnick et al. §5, Fig. 5b): ``x' = round(128 + a (x - 128))``
  with ``0 <= a <= 1`` (1: unchanged; 0: every pixel 128), on every channel, so the
  per-pixel variance shrinks by ``a^2`` about the mid-grey 128. ``a`` is taken exactly as
  the decimal it is written in (``0.9`` is 9/10, not the nearest double; a float argument
  is read as its shortest round-trip decimal, ``repr``), and ``round`` is **half to even**,
  which is symmetric about 128 (``round(256 - v) = 256 - round(v)``), so a set symmetric
  about 128 stays so (half-up would push every tie upwards). The result is clipped to
  0..255 (a no-op for ``a`` in [0, 1]) and is uint8. ``a > 1`` (contrast stretching) is
  rejected: it is not graying and would saturate at 0 / 255. The paper gives no
  parametrisation; the experiment ``nalisnick_graying`` sweeps ``a`` = 1.0, 0.9, ..., 0.1.
* ``grayscale``: RGB -> 1 channel, ITU-R 601-2 luma exactly as PIL's ``convert('L')``
  (``L = R*299/1000 + G*587/1000 + B*114/1000`` in PIL's rounded fixed point); grey passes.
* ``rgb``: 1 -> 3 channels by repetition; RGB passes.
* ``resize:<s>``: to ``s x s``. The shorter side goes to ``s`` (the longer to
  ``int(s * long / short)``, as torchvision ``Resize(s)``), with PIL ``BILINEAR`` when
  upscaling and ``BICUBIC`` when downscaling, then a centre crop (torchvision
  ``CenterCrop``). Square inputs are resized straight to ``s x s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np
from PIL import Image

from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.registry import choose

TRANSFORMS = ("rotation", "brightness", "gray", "grayscale", "rgb", "resize")

# Transforms that take an argument after ':' (and require it); the others take none.
_ARG_TRANSFORMS = {"brightness": "a factor f >= 0, e.g. 'brightness:0.2'",
                   "gray": "a factor a in [0, 1], e.g. 'gray:0.5'",
                   "resize": "a side length s >= 1, e.g. 'resize:32'"}

ROTATION_RANGE_DEG = (90.0, 270.0)


# ----------------------------------------------------------------------------- parsing


def is_transform(name: str) -> bool:
  """Whether ``name`` (optionally ``name:arg``) names a known transform.

  Only the part before ``':'`` is checked; arguments are validated by ``parse_transform``.
  """
  return isinstance(name, str) and name.split(":", 1)[0].strip().lower() in TRANSFORMS


def parse_transform(text: str) -> tuple[str, float | int | None]:
  """``'resize:32'`` -> ``('resize', 32)``; ``'rotation'`` -> ``('rotation', None)``.

  Raises ``UnknownNameError`` for an unknown name and ``InvalidInputError`` for a
  missing, unexpected or out-of-range argument.
  """
  name, sep, arg = text.strip().partition(":")
  name = name.strip().lower()
  arg = arg.strip()
  choose("transform", name, TRANSFORMS,
         hint="brightness, gray and resize take an argument: 'brightness:0.2', 'gray:0.5',"
              " 'resize:32'.")
  if name not in _ARG_TRANSFORMS:
    if sep:
      raise InvalidInputError(f"Transform {name!r} takes no argument, got {text!r}.")
    return name, None
  if not arg:
    raise InvalidInputError(f"Transform {name!r} needs {_ARG_TRANSFORMS[name]}; got {text!r}.")
  if name == "resize":
    try:
      size = int(arg)
    except ValueError:
      size = 0
    if size < 1 or str(size) != arg.lstrip("+"):
      raise InvalidInputError(f"Transform 'resize' needs {_ARG_TRANSFORMS[name]}; got {text!r}.")
    return name, size
  try:
    factor = float(arg)
  except ValueError:
    factor = -1.0
  if not math.isfinite(factor) or factor < 0 or (name == "gray" and factor > 1):
    raise InvalidInputError(f"Transform {name!r} needs {_ARG_TRANSFORMS[name]}; got {text!r}.")
  return name, factor


def parse_spec(spec: str) -> tuple[str, list[str]]:
  """``'mnist+resize:32+rotation'`` -> ``('mnist', ['resize:32', 'rotation'])``.

  The transforms are validated (unknown name -> ``UnknownNameError``, bad argument ->
  ``InvalidInputError``) so that a bad spec fails before any data is read.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise InvalidInputError(f"A dataset spec must be a non-empty string like 'mnist+resize:32', got {spec!r}.")
  parts = [p.strip() for p in spec.split("+")]
  base, transforms = parts[0], parts[1:]
  if not base or is_transform(base):
    raise InvalidInputError(
        f"Dataset spec {spec!r} must start with a dataset name, e.g. 'mnist+resize:32'.")
  for t in transforms:
    if not t:
      raise InvalidInputError(f"Dataset spec {spec!r} has an empty transform between '+' signs.")
    parse_transform(t)
  return base, transforms


# ------------------------------------------------------------------------- PIL helpers


def _to_pil(img: np.ndarray) -> Image.Image:
  """``H x W x C`` uint8 (C in {1, 3}) -> PIL ``L`` or ``RGB`` image."""
  return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _from_pil(img: Image.Image, channels: int) -> np.ndarray:
  a = np.asarray(img)
  return a[..., None] if channels == 1 else a


def _map_images(x: np.ndarray, fn: Callable[[Image.Image], Image.Image],
                out_hw: tuple[int, int]) -> np.ndarray:
  """Applies a PIL ``Image -> Image`` function to every image of ``x``."""
  n, _, _, c = x.shape
  out = np.empty((n, *out_hw, c), np.uint8)
  if c == 1:
    for i in range(n):
      out[i, ..., 0] = np.asarray(fn(Image.fromarray(x[i, ..., 0])))
  else:
    for i in range(n):
      out[i] = np.asarray(fn(Image.fromarray(x[i])))
  return out


def resize_plan(h: int, w: int, size: int):
  """(resized (w, h) or None, PIL filter, crop box) for shorter-side resize + centre crop.

  Follows torchvision: ``Resize(size)`` sets the shorter side to ``size`` and the longer
  to ``int(size * long / short)``; ``CenterCrop`` uses ``round((h - size) / 2)``.
  """
  short, long = (w, h) if w <= h else (h, w)
  if short == size:
    new_w, new_h = w, h
  else:
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  resized = None if (new_w, new_h) == (w, h) else (new_w, new_h)
  resample = Image.Resampling.BICUBIC if size < short else Image.Resampling.BILINEAR
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  box = None if (new_w, new_h) == (size, size) else (left, top, left + size, top + size)
  return resized, resample, box


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
  """One ``H x W x C`` uint8 image -> ``size x size x C`` (see ``resize``)."""
  return resize(img[None], size)[0]


def resize(x: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to ``size`` (PIL bilinear up / bicubic down), then centre crop."""
  _, h, w, _ = x.shape
  if (h, w) == (size, size):
    return x
  resized, resample, box = resize_plan(h, w, size)

  def fn(im: Image.Image) -> Image.Image:
    if resized is not None:
      im = im.resize(resized, resample)
    return im.crop(box) if box is not None else im

  return _map_images(x, fn, (size, size))


# -------------------------------------------------------------------------- transforms


def rotation_angles(n: int, rng: np.random.Generator) -> np.ndarray:
  """``n`` angles in degrees, uniform in the open interval (90, 270)."""
  lo, hi = ROTATION_RANGE_DEG
  a = rng.uniform(lo, hi, n)
  return np.where(a <= lo, np.nextafter(lo, hi), a)  # uniform() includes lo; exclude it


def rotate(x: np.ndarray, angles_deg: Sequence[float]) -> np.ndarray:
  """Rotates image ``i`` counter-clockwise by ``angles_deg[i]`` (PIL NEAREST, fill 0)."""
  n, h, w, c = x.shape
  if len(angles_deg) != n:
    raise InvalidInputError(f"rotate: {len(angles_deg)} angles for {n} images.")
  out = np.empty_like(x)
  for i in range(n):
    im = _to_pil(x[i]).rotate(float(angles_deg[i]), resample=Image.Resampling.NEAREST, fillcolor=0)
    out[i] = _from_pil(im, c)
  return out


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
  """``clip(floor(x * factor), 0, 255)``, uint8: torchvision ``adjust_brightness``."""
  if not math.isfinite(factor) or factor < 0:
    raise InvalidInputError(f"brightness factor must be finite and >= 0, got {factor}.")
  return np.clip(np.floor(x.astype(np.float64) * factor), 0, 255).astype(np.uint8)


def _exact_factor(alpha) -> Fraction:
  """``alpha`` as an exact fraction: a ``Fraction`` or int as is, a float (or string) as the
  decimal it is written in (``0.9`` -> 9/10; floats via their shortest ``repr``)."""
  if isinstance(alpha, (bool, np.bool_)):
    raise InvalidInputError(f"gray: the factor must be a number in [0, 1], got {alpha!r}.")
  try:
    if isinstance(alpha, (Fraction, int, np.integer)):
      a = Fraction(int(alpha)) if isinstance(alpha, np.integer) else Fraction(alpha)
    else:
      f = float(alpha)
      if not math.isfinite(f):
        raise ValueError
      a = Fraction(repr(f))
  except (TypeError, ValueError):
    raise InvalidInputError(f"gray: the factor must be a number in [0, 1], got {alpha!r}.") from None
  if not 0 <= a <= 1:
    raise InvalidInputError(f"gray: the factor must be in [0, 1], got {alpha!r}.")
  return a


def gray_table(alpha) -> np.ndarray:
  """The 256-entry uint8 lookup table of ``gray:alpha``: entry ``v`` is
  ``clip(round_half_even(128 + alpha (v - 128)), 0, 255)``, computed in exact rational
  arithmetic (module docstring)."""
  a = _exact_factor(alpha)
  return np.array([min(255, max(0, round(128 + a * (v - 128)))) for v in range(256)], np.uint8)


def gray(x: np.ndarray, alpha) -> np.ndarray:
  """'Graying' towards 128: ``x' = round(128 + alpha (x - 128))``, half to even, clipped to
  0..255, uint8, every channel (``0 <= alpha <= 1``; module docstring)."""
  x = np.asarray(x)
  if x.dtype != np.uint8:
    raise InvalidInputError(f"gray: expected uint8 images, got {x.dtype}.")
  return gray_table(alpha)[x]


def to_grayscale(x: np.ndarray) -> np.ndarray:
  """RGB -> 1-channel ITU-R 601-2 luma, bit-exact with PIL ``convert('L')``; grey passes."""
  if x.shape[-1] == 1:
    return x
  v = x.astype(np.uint32)
  luma = (v[..., 0] * 19595 + v[..., 1] * 38470 + v[..., 2] * 7471 + 0x8000) >> 16
  return luma.astype(np.uint8)[..., None]


def to_rgb(x: np.ndarray) -> np.ndarray:
  """1 -> 3 channels by repetition; RGB passes."""
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


# name -> (x, arg, rng) -> x'
_APPLY: dict[str, Callable] = {
    "rotation": lambda x, _, rng: rotate(x, rotation_angles(x.shape[0], rng)),
    "brightness": lambda x, f, _: brightness(x, f),
    "gray": lambda x, a, _: gray(x, a),
    "grayscale": lambda x, _, __: to_grayscale(x),
    "rgb": lambda x, _, __: to_rgb(x),
    "resize": lambda x, s, _: resize(x, s),
}


def _apply_one(x: np.ndarray, name: str, arg, rng: np.random.Generator) -> np.ndarray:
  return _APPLY[choose("transform", name, TRANSFORMS)](x, arg, rng)


def apply_transforms(x: np.ndarray, names: list[str] | str, seed: int) -> np.ndarray:
  """Applies transforms in order; ``names`` is a list or a ``'+'``-joined string.

  Transform ``i`` draws its randomness from ``np.random.default_rng([seed, i])``, so the
  result depends only on ``(x, names, seed)``.
  """
  x = validate_images(x, what="images to transform", allow_empty=True)
  if isinstance(names, str):
    names = [t for t in names.split("+") if t.strip()]
  for i, text in enumerate(names):
    name, arg = parse_transform(text)
    x = _apply_one(x, name, arg, np.random.default_rng([int(seed), i]))
  return x


def conform(x: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
  """Converts channels (grey <-> RGB) and then resolution (``resize:H``) to ``hwc``.

  ``hwc`` must be square with C in {1, 3}; returns uint8 ``N x H x W x C``.
  """
  try:
    h, w, c = (int(v) for v in hwc)
  except (TypeError, ValueError):
    raise InvalidInputError(f"conform: target shape must be (H, W, C), got {hwc!r}.") from None
  if h != w or h < 1:
    raise InvalidInputError(f"conform: target shape {tuple(hwc)} must be square (H == W >= 1).")
  if c not in (1, 3):
    raise InvalidInputError(f"conform: target channels must be 1 or 3, got {c} in {tuple(hwc)}.")
  x = validate_images(x, what="images to conform", allow_empty=True)
  if x.shape[-1] != c:
    x = to_grayscale(x) if c == 1 else to_rgb(x)
  if x.shape[1:3] != (h, w):
    x = resize(x, h)
  return x
