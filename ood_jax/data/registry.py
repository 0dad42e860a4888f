"""Dataset names, where each comes from, and ``load``.

A name is resolved through these sources, first hit wins:

1. a local ``<name>_<split>.npz`` (see ``ood_jax.data.local`` for the directories);
2. FashionMNIST only: Debian's ``/usr/share/datasets/fashion-mnist`` IDX files;
3. a prepared TensorFlow Datasets copy (``ood_jax.data.tfds_source``); downloaded and
   prepared (``array_record``, into ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) only
   with ``load(..., download=True)`` (CLI ``--download``), never otherwise;
4. the synthetic sets ``noise``, ``constant`` and ``constant:<v>`` (every pixel ``v``, an
   integer 0..255; ``ood_jax.data.synthetic``). A bad ``constant:<v>`` (``constant:300``,
   ``constant:x``) is an ``InvalidInputError`` before anything is read.

TFDS names: ``svhn`` is ``svhn_cropped``; ``lsun`` is ``lsun/classroom`` (TFDS's default
LSUN config; ask for another scene with ``lsun/<scene>``, e.g. ``lsun/bedroom``);
``imagenet32`` is ``downsampled_imagenet/32x32``. LSUN and ImageNet32 have no 'test'
split in TFDS, so 'test' reads their 'validation' split there. ``not_mnist`` and
``tiny_imagenet`` are local files only. Any other ``<name>_<split>.npz`` found locally
loads by its name, without preprocessing.

``tfds:<tfds name>`` (e.g. ``'tfds:emnist/letters'``, ``'tfds:my_builder:1.0.0'``) reads any
TFDS dataset (or registered builder) by its TFDS name, from TFDS only: no local files, no
dataset preprocessing, splits passed to TFDS as given. Its records need an ``image`` feature.

Labels: ``ImageSet.y`` holds int64 class labels ``[N]`` (row i labels image i) where the
source has them: a local npz's key ``y`` (see ``local.read_labels``), Debian's FashionMNIST
labels file, TFDS feature ``label``; None otherwise (the synthetic sets, CelebA, LSUN, a local
file without ``y``). ``n`` / ``seed`` subset them with the same indices as the images; the
transforms map image i to image i, so a transformed set keeps its labels.

Indices: ``ImageSet.indices`` holds the int64 positions ``[N]`` in the source split of the
images kept (``subset_indices``; ``arange(N)`` when all are kept, and for the synthetic sets),
so a subset can be traced back to the records it came from; transforms keep them.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from ood_jax.data import idx, local, synthetic, tfds_source
from ood_jax.data.pixels import validate_images
from ood_jax.data.preprocess import family, preprocess
from ood_jax.data.transforms import apply_transforms, parse_spec
from ood_jax.errors import DatasetNotFoundError, InvalidInputError

DATASETS = ("mnist", "fashion_mnist", "kmnist", "not_mnist", "omniglot", "cifar10",
            "cifar100", "svhn", "celeb_a", "lsun", "imagenet32", "tiny_imagenet",
            "noise", "constant")

TFDS_NAMES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "kmnist": "kmnist",
    "omniglot": "omniglot",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "svhn": "svhn_cropped",
    "celeb_a": "celeb_a",
    "lsun": "lsun/classroom",
    "imagenet32": "downsampled_imagenet/32x32",
}
LSUN_DEFAULT_SCENE = "classroom"

# Our split name -> the TFDS split, where TFDS names it differently.
TFDS_SPLITS = {"lsun": {"test": "validation"}, "imagenet32": {"test": "validation"}}

ENV_DOWNLOAD = "OOD_JAX_DOWNLOAD"   # "1": load(download=None) may let TFDS download

LOCAL_ONLY = ("not_mnist", "tiny_imagenet")

TFDS_PREFIX = "tfds:"   # 'tfds:<tfds name>': any TFDS dataset, read from TFDS only

ALIASES = {"fmnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "celeba": "celeb_a",
           "svhn_cropped": "svhn", "notmnist": "not_mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100"}


@dataclasses.dataclass(frozen=True)
class ImageSet:
  """A loaded image set.

  Attributes:
    name: the spec as given, e.g. ``'mnist+resize:32'``.
    split: e.g. ``'train'`` or ``'test'``.
    x: uint8 ``N x H x W x C``, C in {1, 3}.
    source: human-readable provenance, e.g. ``'local npz /data/mnist_test.npz'``.
    y: int64 class labels ``[N]`` (row i labels image i), or None where the source has none.
    indices: int64 ``[N]``, the position in the source split of image i (what ``load``'s
      ``n``/``seed`` kept, see ``subset_indices``; ``arange(N)`` when all are kept and for
      the synthetic sets; a transformed set keeps its base's), or None when not known (sets
      built by hand).
  """
  name: str
  split: str
  x: np.ndarray
  source: str
  y: np.ndarray | None = None
  indices: np.ndarray | None = None

  def __post_init__(self):
    if self.y is not None and (np.ndim(self.y) != 1 or len(self.y) != len(self.x)):
      raise InvalidInputError(
          f"dataset {self.name!r} ({self.split}): {np.shape(self.y)} labels for"
          f" {len(self.x)} images; y must be one label per image.")
    if self.indices is not None and (np.ndim(self.indices) != 1
                                     or len(self.indices) != len(self.x)):
      raise InvalidInputError(
          f"dataset {self.name!r} ({self.split}): {np.shape(self.indices)} indices for"
          f" {len(self.x)} images; indices must be one position per image.")

  def __len__(self) -> int:
    return int(self.x.shape[0])

  def require_labels(self) -> np.ndarray:
    """``y``, or ``InvalidInputError`` saying this set has no class labels."""
    if self.y is None:
      raise InvalidInputError(
          f"dataset {self.name!r} ({self.split}, {self.source}) has no class labels; a local"
          " <name>_<split>.npz needs an integer key 'y' of shape N beside 'x'.")
    return self.y


def canonical_name(base: str) -> str:
  """Known names and aliases -> canonical lower-case name; others unchanged.

  ``'lsun/<scene>'`` is kept with its scene (``'lsun/bedroom'``); a valid ``'constant:<v>'``
  gets its value in plain digits (``'Constant:007'`` -> ``'constant:7'``), an invalid one is
  returned lower-cased (``load`` rejects it). ``'TFDS: <name>'`` -> ``'tfds:<name>'``.
  """
  key = base.strip().lower()
  if key.startswith(TFDS_PREFIX):
    return TFDS_PREFIX + base.strip()[len(TFDS_PREFIX):].strip()
  key = ALIASES.get(key, key)
  if key in DATASETS or key.startswith("lsun/"):
    return key
  if synthetic.is_synthetic(key):
    try:
      return synthetic.canonical(key)
    except InvalidInputError:
      return key
  return base.strip()


def is_known(name: str) -> bool:
  return (name in DATASETS or name.startswith(("lsun/", TFDS_PREFIX))
          or synthetic.is_synthetic(name))


def tfds_name(name: str) -> str | None:
  """The TFDS name of canonical ``name`` (``'lsun/bedroom'`` -> itself, ``'tfds:x'`` -> x)."""
  if name.startswith(TFDS_PREFIX):
    return name[len(TFDS_PREFIX):] or None
  if name.startswith("lsun/"):
    return name
  return TFDS_NAMES.get(name)


def subset_indices(total: int, n: int | None, seed: int) -> np.ndarray:
  """Which records ``load(..., n=n, seed=seed)`` keeps, in order.

  ``n=None`` or ``n >= total``: all, in the original order. Otherwise the first ``n`` of
  ``np.random.default_rng(seed).permutation(total)`` (independent of the split).
  """
  if n is None or n >= total:
    return np.arange(total)
  return np.random.default_rng(seed).permutation(total)[:n]


def _subset(y: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
  return None if y is None else y[keep]


def _debian_labels(split: str, n: int) -> np.ndarray | None:
  """Debian's FashionMNIST labels for ``split`` if installed and one per image, else None."""
  found = idx.read_debian_fashion_mnist_labels(split)
  if found is None:
    return None
  y, path = found
  if len(y) != n:
    raise InvalidInputError(f"{path}: {len(y)} labels for {n} images in the images file.")
  return y


def _not_found_message(spec: str, name: str, split: str, tried: list[str],
                       download: bool = False) -> str:
  lines = [f"Dataset {name!r} (split {split!r}, from spec {spec!r}) was not found. Looked in:"]
  lines += [f"  - {t}" for t in tried]
  file = local.file_name(name, split)
  lines.append("To get it:")
  if not name.startswith(TFDS_PREFIX):
    lines.append(f"  - put {file} (key 'x': uint8 N x H x W x C, optional 'y') in --data-dir"
                 f" or ${local.ENV_DATA_DIR}, or in ./data;")
  if family(name) == "fashion_mnist":
    lines.append(f"  - or install Debian's copy: {idx.DEBIAN_INSTALL_HINT};")
  tname = tfds_name(name)
  if tname is not None:
    lines.append(f"  - or, on a machine with TensorFlow and internet access, run `tfds build {tname}`"
                 " (add --file_format=array_record to read it here without TensorFlow), then copy"
                 " ~/tensorflow_datasets to this machine and point $TFDS_DATA_DIR at it.")
    if not download:
      lines.append(f"  - or, with internet access, pass --download (CLI) or download=True (library)"
                   f" to let TFDS download and prepare {tname} (as array_record) into"
                   f" {tfds_source.default_data_dir()}.")
  if not is_known(name):
    lines.append(f"{name!r} is not a known dataset name either. Known names: {', '.join(DATASETS)}"
                 " (plus lsun/<scene>, and tfds:<tfds name> for any TFDS dataset); any other"
                 " name needs a local <name>_<split>.npz.")
  return "\n".join(lines)


def load(spec: str, split: str = "test", *, data_dir: str | None = None, n: int | None = None,
         seed: int = 0, like: tuple[int, int, int] | None = None,
         download: bool | None = None) -> ImageSet:
  """Loads ``spec`` = ``base(+transform)*`` as uint8 ``N x H x W x C``.

  Args:
    spec: e.g. ``'mnist'``, ``'fashion_mnist+resize:32'``, ``'svhn+brightness:0.2'``.
    split: ``'train'`` or ``'test'`` (TFDS sets also accept their own split names).
    data_dir: first local directory to search for ``<name>_<split>.npz``.
    n: keep only ``n`` images: the first ``n`` after a shuffle with ``seed`` when
      ``n`` is smaller than the set (see ``subset_indices``); ``None`` keeps all in their
      original order. For ``noise``/``constant``/``constant:<v>`` it is the number generated
      (default 10000).
    seed: seeds the subset shuffle, the synthetic sets and random transforms.
    like: ``(H, W, C)`` of the synthetic sets; ignored by real ones.
    download: TFDS sets only: if not prepared, let TFDS download and prepare them
      (``array_record``) into ``$TFDS_DATA_DIR`` (default ``~/tensorflow_datasets``). Off by
      default: nothing is downloaded unless asked; ``None`` reads ``$OOD_JAX_DOWNLOAD``
      (``1``: on), which the CLI's ``--download`` sets for its own process. TFDS encodes
      images with TensorFlow while preparing (Colab has it; reading needs none).

  The result's ``indices`` are the positions kept (see ``ImageSet``).
  Dataset preprocessing (``ood_jax.data.preprocess``) runs before the transforms.
  Raises ``DatasetNotFoundError`` (message lists every place searched and how to get the
  data), ``UnknownNameError`` (unknown transform) or ``InvalidInputError``.
  """
  if download is None:
    download = os.environ.get(ENV_DOWNLOAD, "") == "1"
  base, transforms = parse_spec(spec)
  if not isinstance(split, str) or not split:
    raise InvalidInputError(f"split must be a non-empty string like 'test', got {split!r}.")
  if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
    raise InvalidInputError(f"n must be a positive integer or None, got {n!r}.")
  name = canonical_name(base)
  if synthetic.is_synthetic(name):
    synthetic.parse_name(name)          # 'constant:300', 'noise:1': one clear error, now
  if name.startswith(TFDS_PREFIX) and tfds_name(name) is None:
    raise InvalidInputError(f"spec {spec!r}: 'tfds:' needs a TFDS name, e.g. 'tfds:mnist'.")
  kept = []                             # what select returned (ImageSet.indices)

  def select(total: int) -> np.ndarray:
    kept.append(np.asarray(subset_indices(total, n=n, seed=seed), np.int64))
    return kept[-1]

  prepare = functools.partial(preprocess, name, what=f"dataset {name!r} ({split})")
  x = y = None

  raw, path, tried = (None, None, []) if name.startswith(TFDS_PREFIX) else local.find(
      name, split, data_dir)
  tried = [f"local file {p} (missing)" for p in tried]
  if raw is not None:
    keep = select(raw.shape[0])
    x, source = prepare(raw[keep]), f"local npz {path}"
    y = _subset(local.read_labels(path, raw.shape[0]), keep)

  if x is None and family(name) == "fashion_mnist":
    debian_path = idx.debian_fashion_mnist_path(split)
    found = idx.read_debian_fashion_mnist(split)
    if found is not None:
      raw, path = found
      keep = select(raw.shape[0])
      x, source = prepare(raw[keep]), f"debian {path}"
      y = _subset(_debian_labels(split, raw.shape[0]), keep)
    elif debian_path is None:
      tried.append(f"Debian package dataset-fashion-mnist in {idx.DEBIAN_FASHION_MNIST_DIR}"
                   f" (it has only the 'train' and 't10k' (test) splits, not {split!r})")
    else:
      tried.append(f"Debian package dataset-fashion-mnist: {debian_path} (missing)")

  tname = tfds_name(name)
  if x is None and tname is not None:
    tsplit = TFDS_SPLITS.get(family(name), {}).get(split, split)
    tdir = tfds_source.default_data_dir()
    try:
      x, y, source = tfds_source.read_labeled(tname, tsplit, select=select, prepare=prepare,
                                              data_dir=tdir, download=download)
    except tfds_source.TfdsUnavailable as e:
      tried.append(f"TFDS {tname!r} split {tsplit!r} in data dir {tdir} ({e})")

  if x is None and synthetic.is_synthetic(name):
    x = synthetic.make(name, split, like, n=n, seed=seed)
    source = f"synthetic {name} (seed {seed})"
    kept.append(np.arange(len(x), dtype=np.int64))

  if x is None:
    raise DatasetNotFoundError(_not_found_message(spec, name, split, tried, download))
  x = validate_images(x, what=f"dataset {spec!r} ({split})")
  if transforms:
    x = validate_images(apply_transforms(x, transforms, seed), what=f"dataset {spec!r} ({split})")
  return ImageSet(name=spec, split=split, x=x, source=source, y=y, indices=kept[-1])
