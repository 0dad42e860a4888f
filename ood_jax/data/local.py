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

import math
import os
import pathlib
import tokenize
import zipfile
import zlib

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


# Every error reading a member: zip CRC/truncation, zlib, short reads, bad headers,
# encrypted (RuntimeError) or unsupported compression (NotImplementedError).
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
                NotImplementedError)
# ... and what numpy's .npy header parser raises on garbage (it tokenizes, then literal_evals).
_HEADER_ERRORS = _READ_ERRORS + (SyntaxError, TypeError, tokenize.TokenError)
# Deflate expands at most ~1032:1; a member declaring more than this was not written by numpy.
_MAX_DEFLATE_RATIO = 1100


def _unreadable(path: str, why: str) -> InvalidInputError:
  return InvalidInputError(f"{path}: not a readable npz file ({why}).")


def _open_zip(path: str) -> tuple[zipfile.ZipFile, int]:
  """``(archive, size in bytes)``; ``InvalidInputError`` for an empty or non-zip file."""
  try:
    size = os.path.getsize(path)
    if size == 0:
      raise _unreadable(path, "the file is empty, 0 bytes")
    return zipfile.ZipFile(path), size
  except InvalidInputError:
    raise
  except _READ_ERRORS as e:
    raise _unreadable(path, f"not a zip archive: {e}") from None


def _keys(zf: zipfile.ZipFile) -> list[str]:
  """The array names of an npz (member names without ``.npy``), as ``np.load`` lists them."""
  return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]


def _member(path: str, zf: zipfile.ZipFile, size: int, key: str
            ) -> tuple[zipfile.ZipInfo, tuple[int, ...], np.dtype]:
  """``(member, shape, dtype)`` of array ``key`` from its .npy header, reading no array data.

  Raises ``InvalidInputError`` unless the member ``<key>.npy`` exists, fits in the archive,
  has a valid version 1.0/2.0 header and (for non-object dtypes) the header's
  ``prod(shape) * itemsize`` equals the bytes stored after it, so nothing larger than the
  file's own data is ever allocated.
  """
  name = f"{key}.npy"
  try:
    info = zf.getinfo(name)
  except KeyError:
    raise _unreadable(path, f"array {key!r} is not stored as a member {name}") from None
  where = f"member {name}"
  if info.header_offset + info.compress_size > size:
    raise _unreadable(path, f"{where} is truncated: {info.compress_size:,} bytes listed, the "
                            f"file has {size:,}")
  if ((info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) or
      (info.compress_type == zipfile.ZIP_DEFLATED and
       info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024)):
    raise _unreadable(path, f"{where} lists {info.file_size:,} bytes uncompressed from "
                            f"{info.compress_size:,} stored, which no zip writer produces")
  try:
    with zf.open(info) as f:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
      elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
      else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
      header = f.tell()
  except _HEADER_ERRORS as e:
    raise _unreadable(path, f"{where} has no valid .npy header: {e}") from None
  if not dtype.hasobject:
    declared = math.prod(shape) * dtype.itemsize
    stored = info.file_size - header
    if declared != stored:
      raise _unreadable(path, f"{where}'s header declares shape {tuple(shape)} of {dtype}, "
                              f"{declared:,} bytes, but {stored:,} bytes are stored")
  return info, tuple(shape), dtype


def _read_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
  """The array of a member already checked by ``_member`` (never unpickles)."""
  try:
    with zf.open(info) as f:
      return np.lib.format.read_array(f, allow_pickle=False)
  except _READ_ERRORS as e:
    raise _unreadable(path, f"member {info.filename} is corrupt: {e}") from None


def read_npz(path: str) -> np.ndarray:
  """Reads and validates key ``x`` of an npz: uint8 ``N x H x W x C`` (``N x H x W`` gets C=1).

  Any unreadable file (empty, not a zip, truncated, a bad or oversized .npy header, an
  object array) raises one ``InvalidInputError`` ``"<path>: not a readable npz file (...)"``
  before any array is allocated.
  """
  zf, size = _open_zip(path)
  with zf:
    files = _keys(zf)
    if "x" not in files:
      raise InvalidInputError(
          f"{path}: no array 'x' (found keys {files}); store images as x=uint8 N x H x W x C.")
    info, _, dtype = _member(path, zf, size, "x")
    if dtype.hasobject:
      raise _unreadable(path, f"array 'x' holds Python objects (dtype {dtype}), which are never "
                              "loaded; store images as x=uint8 N x H x W x C")
    x = _read_member(path, zf, info)
  if x.ndim == 3:
    x = x[..., None]
  return validate_images(x, what=f"local npz {path} 'x'")


def read_labels(path: str, n: int) -> np.ndarray | None:
  """The class labels of ``path`` (see the module docstring): int64 ``[n]``, or None.

  A ``y`` that is not class labels is recognised from its header and never read; an
  unreadable file or ``y`` member raises ``InvalidInputError`` as in ``read_npz``.
  """
  zf, size = _open_zip(path)
  with zf:
    if "y" not in _keys(zf):
      return None
    info, shape, dtype = _member(path, zf, size, "y")
    if (dtype.hasobject or not (np.issubdtype(dtype, np.integer) or dtype == np.bool_)
        or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))):
      return None              # e.g. a pickled object array, floats, N x 40 attributes
    if shape[0] != n:
      raise InvalidInputError(
          f"{path}: key 'y' has {shape[0]} labels for {n} examples in 'x'; they must match one "
          "to one.")
    y = _read_member(path, zf, info)
  return y.reshape(-1).astype(np.int64)


def find(name: str, split: str, data_dir: str | os.PathLike | None = None
         ) -> tuple[np.ndarray | None, str | None, list[str]]:
  """``(x, path, tried)``: the first existing ``<name>_<split>.npz``, or ``(None, None, tried)``."""
  tried = candidate_paths(name, split, data_dir)
  for path in tried:
    if os.path.isfile(path):
      return read_npz(path), path, tried
  return None, None, tried
