"""IDX files (the MNIST / FashionMNIST format) and Debian's FashionMNIST package.

IDX layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes and the row-major data, big-endian. Files may be gzipped.
Debian ships FashionMNIST as ``apt-get install -y dataset-fashion-mnist``: images in
``{train,t10k}-images-idx3-ubyte.gz``, class labels (uint8 0..9) in
``{train,t10k}-labels-idx1-ubyte.gz``.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ood_jax.errors import InvalidInputError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_INSTALL_HINT = "apt-get update && apt-get install -y dataset-fashion-mnist"

_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_DEBIAN_PREFIX = {"train": "train", "test": "t10k"}


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
  """Decodes the bytes of an (uncompressed) IDX file into a native-endian array."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise InvalidInputError(f"{what}: not an IDX file (bad magic number {data[:4]!r}).")
  dtype, ndim = _IDX_DTYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise InvalidInputError(f"{what}: truncated IDX header.")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise InvalidInputError(
        f"{what}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes.")
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file, gzipped (``.gz`` or gzip magic) or not."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  return parse_idx(data, what=path)


def debian_fashion_mnist_path(split: str, root: str | None = None,
                              kind: str = "images") -> str | None:
  """The Debian ``kind`` file (``'images'`` or ``'labels'``) for ``split`` ('train' or
  'test'); None for other splits."""
  prefix = _DEBIAN_PREFIX.get(split)
  if prefix is None:
    return None
  name = "images-idx3" if kind == "images" else "labels-idx1"
  return os.path.join(root or DEBIAN_FASHION_MNIST_DIR, f"{prefix}-{name}-ubyte.gz")


def read_debian_fashion_mnist(split: str, root: str | None = None) -> tuple[np.ndarray, str] | None:
  """``(x uint8 N x 28 x 28 x 1, path)`` from Debian's package, or None if absent."""
  path = debian_fashion_mnist_path(split, root)
  if path is None or not os.path.isfile(path):
    return None
  x = read_idx(path)
  if x.dtype != np.uint8 or x.ndim != 3:
    raise InvalidInputError(f"{path}: expected uint8 N x H x W images, got {x.dtype} {x.shape}.")
  return x[..., None], path


def read_debian_fashion_mnist_labels(split: str, root: str | None = None
                                     ) -> tuple[np.ndarray, str] | None:
  """``(y int64 [N], path)`` from Debian's package, or None if the labels file is absent."""
  path = debian_fashion_mnist_path(split, root, kind="labels")
  if path is None or not os.path.isfile(path):
    return None
  y = read_idx(path)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise InvalidInputError(f"{path}: expected integer labels of shape N, got {y.dtype} {y.shape}.")
  return y.astype(np.int64), path
