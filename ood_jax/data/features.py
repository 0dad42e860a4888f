"""Feature vectors (image embeddings, tabular data) from the user's ``<name>_<split>.npz``.

Conventions:

* A feature file is ``<dir>/<name>_<split>.npz`` with key ``x``: floating ``N x D`` (any float
  dtype; returned as float32), finite, ``N >= 1``, ``D >= 1``; optional ``y``: class labels
  as for image files (``local.read_labels``: an integer vector of length N, else None).
* Feature files are looked up only in the directory given (no search path: the files are
  the user's own, and an image file of the same name elsewhere must never be read as
  features). ``name`` is tried as given, then as its canonical dataset name (``celeba`` ->
  ``celeb_a``).
* Bad input is one ``InvalidInputError`` (a 4-D image array, integer pixels, a 1-D or 3-D
  array, NaN/inf, the wrong ``D``); a missing file is a ``DatasetNotFoundError`` naming
  every path tried and the expected format.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from ood_jax.data import local
from ood_jax.data.registry import canonical_name, subset_indices
from ood_jax.errors import DatasetNotFoundError, InvalidInputError

FORMAT = "key 'x': float N x D feature vectors, optional 'y': integer labels of shape N"


@dataclasses.dataclass(frozen=True)
class FeatureSet:
  """Loaded feature vectors.

  Attributes:
    name: the name as given, e.g. ``'cifar10'``.
    split: e.g. ``'train'`` or ``'test'``.
    x: float32 ``N x D``.
    source: provenance, e.g. ``'feature npz /feats/cifar10_train.npz'``.
    y: int64 class labels ``[N]``, or None.
  """
  name: str
  split: str
  x: np.ndarray
  source: str
  y: np.ndarray | None = None

  def __post_init__(self):
    if self.y is not None and (np.ndim(self.y) != 1 or len(self.y) != len(self.x)):
      raise InvalidInputError(
          f"features {self.name!r} ({self.split}): {np.shape(self.y)} labels for {len(self.x)}"
          " vectors; y must be one label per vector.")

  def __len__(self) -> int:
    return int(self.x.shape[0])

  @property
  def dim(self) -> int:
    return int(self.x.shape[1])


def validate_features(x, *, what: str = "features", dim: int | None = None) -> np.ndarray:
  """``x`` as float32 ``N x D`` (``D = dim`` if given), else one ``InvalidInputError``."""
  if not isinstance(x, np.ndarray):
    try:
      x = np.asarray(x)
    except Exception:  # pylint: disable=broad-except
      raise InvalidInputError(f"{what}: expected a float array N x D, got {type(x).__name__}.") from None
  if x.ndim == 4:
    raise InvalidInputError(
        f"{what}: got a 4-D array {x.shape} ({x.dtype}), which looks like images N x H x W x C;"
        " features must be float vectors N x D (extract them first, or flatten with"
        " x.reshape(len(x), -1).astype(np.float32)).")
  if not np.issubdtype(x.dtype, np.floating):
    raise InvalidInputError(
        f"{what}: expected float feature vectors, got dtype {x.dtype} with shape {x.shape}"
        " (convert with x.astype(np.float32) if these really are features).")
  if x.ndim != 2:
    hint = " For one feature per example use x[:, None]." if x.ndim == 1 else ""
    raise InvalidInputError(f"{what}: expected 2 dimensions N x D, got shape {x.shape}.{hint}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise InvalidInputError(f"{what}: the set is empty (shape {x.shape}).")
  if dim is not None and x.shape[1] != int(dim):
    raise InvalidInputError(f"{what}: expected {int(dim)} features per vector, got shape {x.shape}.")
  x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise InvalidInputError(f"{what}: the features contain NaN or inf values (as float32).")
  return x


def feature_paths(name: str, split: str, data_dir) -> list[str]:
  """The paths ``load_features`` tries, in order."""
  names = list(dict.fromkeys([name.strip(), canonical_name(name)]))
  return [os.path.join(os.fspath(data_dir), local.file_name(n, split)) for n in names]


def load_features(name: str, split: str = "test", data_dir=None, *, n: int | None = None,
                  seed: int = 0, dim: int | None = None) -> FeatureSet:
  """Loads ``<data_dir>/<name>_<split>.npz`` as a ``FeatureSet``.

  ``n`` / ``seed`` keep a subset exactly as ``data.load`` does (``subset_indices``; labels
  by the same indices); ``dim`` pins ``D``.
  """
  if not data_dir:
    raise InvalidInputError("load_features: give the directory of the feature files (data_dir).")
  if not isinstance(name, str) or not name.strip() or "+" in name:
    raise InvalidInputError(
        f"load_features: expected a plain set name like 'cifar10', got {name!r} (transforms"
        " apply to images, not to feature vectors).")
  if not isinstance(split, str) or not split:
    raise InvalidInputError(f"split must be a non-empty string like 'test', got {split!r}.")
  if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
    raise InvalidInputError(f"n must be a positive integer or None, got {n!r}.")
  tried = feature_paths(name, split, data_dir)
  path = next((p for p in tried if os.path.isfile(p)), None)
  if path is None:
    raise DatasetNotFoundError(
        f"Features {name!r} (split {split!r}) were not found. Looked in:\n"
        + "\n".join(f"  - {p} (missing)" for p in tried)
        + f"\nA feature file is <name>_<split>.npz with {FORMAT}.")
  try:
    with np.load(path, allow_pickle=False) as d:
      if "x" not in d.files:
        raise InvalidInputError(f"{path}: no array 'x' (found keys {d.files}); store {FORMAT}.")
      raw = d["x"]
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, InvalidInputError):
      raise
    raise InvalidInputError(f"{path}: not a readable npz file ({e}).") from e
  x = validate_features(raw, what=f"feature file {path} 'x'", dim=dim)
  keep = subset_indices(len(x), n, seed)
  y = local.read_labels(path, len(x))
  return FeatureSet(name=name, split=split, x=x[keep], source=f"feature npz {path}",
                    y=None if y is None else y[keep])
