"""Local image arrays: ``<name>_<split>.npz`` files with key ``x`` (and optional ``y``).

Labels (``read_labels``): key ``y`` when it is an integer (or bool) array of shape ``N`` or
``N x 1`` (read as int64 ``[N]``); a ``y`` of another kind (floats, ``N x 40`` attributes,
strings, pickled objects) is not treated as class labels (None); an integer ``y`` whose
length is not the number of images is an error.

Directories are searched in this order (duplicates dropped):

1. the ``data_dir`` argument (the CLI's ``--data-dir``),
2. ``$OOD_JAX_DATA_DIR`` (several directories may be joined with ``os.pathsep``),
3. ``./data`` (relative to the working directory),
4. the project's shared data folder ``<repo root>/../shared/data``, where the repo root is
   the parent of the ``ood_jax`` package directory.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError

ENV_DATA_DIR = "OOD_JAX_DATA_DIR"


def repo_root() -> pathlib.Path:
  """The directory holding the ``ood_jax`` package."""
  return pathlib.Path(__file__).resolve().parents[2]


def shared_dir() -> pathlib.Path:
  """``<repo root>/../shared``: fixtures and data shared by the project's checkouts."""
  return repo_root().parent / "shared"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[str]:
  """Absolute local directories to search, in order, without duplicates."""
  dirs: list[str] = []
  if data_dir:
    dirs.append(os.fspath(data_dir))
  env = os.environ.get(ENV_DATA_DIR, "")
  dirs.extend(d for d in env.split(os.pathsep) if d)
  dirs.append("data")
  dirs.append(os.fspath(shared_dir() / "data"))
  out: list[str] = []
  for d in dirs:
    d = os.path.abspath(os.path.expanduser(d))
    if d not in out:
      out.append(d)
  return out


def file_name(name: str, split: str) -> str:
  """``('lsun/bedroom', 'test')`` -> ``'lsun_bedroom_test.npz'``."""
  return f"{name.replace('/', '_')}_{split}.npz"


def candidate_paths(name: str, split: str, data_dir: str | os.PathLike | None = None) -> list[str]:
  """Every path ``find`` tries, in order."""
  return [os.path.join(d, file_name(name, split)) for d in search_dirs(data_dir)]


def read_npz(path: str) -> np.ndarray:
  """Reads and validates key ``x`` of an npz: uint8 ``N x H x W x C`` (``N x H x W`` gets C=1)."""
  try:
    with np.load(path, allow_pickle=False) as d:
      if "x" not in d.files:
        raise InvalidInputError(
            f"{path}: no array 'x' (found keys {d.files}); store images as x=uint8 N x H x W x C.")
      x = d["x"]
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, InvalidInputError):
      raise
    raise InvalidInputError(f"{path}: not a readable npz file ({e}).") from e
  if x.ndim == 3:
    x = x[..., None]
  return validate_images(x, what=f"local npz {path} 'x'")


def read_labels(path: str, n: int) -> np.ndarray | None:
  """The class labels of ``path`` (see the module docstring): int64 ``[n]``, or None."""
  try:
    with np.load(path, allow_pickle=False) as d:
      if "y" not in d.files:
        return None
      y = d["y"]
  except (OSError, ValueError, zipfile.BadZipFile):
    return None                # e.g. a pickled object array: not class labels
  if y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]
  if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
    return None
  if len(y) != n:
    raise InvalidInputError(
        f"{path}: key 'y' has {len(y)} labels for {n} examples in 'x'; they must match one to one.")
  return y.astype(np.int64)


def find(name: str, split: str, data_dir: str | os.PathLike | None = None
         ) -> tuple[np.ndarray | None, str | None, list[str]]:
  """``(x, path, tried)``: the first existing ``<name>_<split>.npz``, or ``(None, None, tried)``."""
  tried = candidate_paths(name, split, data_dir)
  for path in tried:
    if os.path.isfile(path):
      return read_npz(path), path, tried
  return None, None, tried
