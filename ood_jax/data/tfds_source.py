"""Prepared TensorFlow Datasets; downloaded only when asked (``download=True``).

First ``tfds.data_source`` (random access to ``array_record``/``parquet`` files, no
TensorFlow needed); if that fails and TensorFlow is importable, ``tfds.load(...,
download=False)`` (``tf.data``, any file format). The data directory is
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``. ``tensorflow_datasets`` is imported only
here, and only when the dataset's directory exists (or ``download=True``), because it is slow
to import.

``download=True``: a dataset not prepared yet is fetched and prepared first by the TFDS
builder, ``download_and_prepare(file_format='array_record')``, so that it is then read
through ``tfds.data_source`` without TensorFlow. Preparing needs internet access for real
datasets, and TensorFlow for builders that yield numpy images (MNIST, CIFAR, SVHN: TFDS
encodes them with ``tf.image.encode_png``); builders that yield encoded bytes, paths or PIL
images prepare without it. A failure is a ``TfdsUnavailable`` saying why.

Labels (``read_labeled``): feature ``label`` where every record has it as an integer scalar
(MNIST-likes, CIFAR, SVHN), else None (CelebA's attributes, LSUN, ImageNet32 have none).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence

import numpy as np

from ood_jax.errors import InvalidInputError

CHUNK = 1000   # records read (and preprocessed) at a time
FILE_FORMAT = "array_record"   # what download=True prepares: random access, no TensorFlow


class TfdsUnavailable(Exception):
  """The dataset is not prepared where we looked; ``str(e)`` says why."""


def default_data_dir() -> str:
  """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (TFDS's own default)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def dataset_dir(tfds_name: str, data_dir: str) -> str:
  """Where TFDS keeps ``name[/config][:version]``: ``<data_dir>/<name>[/<config>]``."""
  return os.path.join(data_dir, tfds_name.split(":", 1)[0])


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def _summary(e: BaseException, limit: int = 300) -> str:
  """``Type: message`` on one line (all of it, unlike ``_first_line``), at most ``limit`` chars."""
  text = " ".join(str(e).split())
  text = text if len(text) <= limit else text[:limit - 3] + "..."
  return f"{type(e).__name__}: {text}"


def download_and_prepare(tfds_name: str, data_dir: str) -> bool:
  """Downloads and prepares ``tfds_name`` into ``data_dir`` as ``array_record`` if needed.

  Returns True if it prepared the dataset now, False if it was already prepared. Raises
  ``TfdsUnavailable`` (with the reason) when TFDS cannot, e.g. offline or unknown name.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir, file_format=FILE_FORMAT)
    if builder.is_prepared():
      return False
    builder.download_and_prepare(file_format=FILE_FORMAT)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises many kinds)
    reason = f"download=True, but download_and_prepare failed ({_summary(e)})"
    if importlib.util.find_spec("tensorflow") is None:
      reason += ("; TensorFlow is not installed, and many TFDS builders need it to encode"
                 " images while preparing")
    raise TfdsUnavailable(reason) from e
  return True


def _image(record, tfds_name: str) -> np.ndarray:
  try:
    return np.asarray(record["image"])
  except (KeyError, TypeError, IndexError):
    keys = list(record.keys()) if hasattr(record, "keys") else type(record).__name__
    raise InvalidInputError(f"TFDS {tfds_name}: records have no 'image' feature (got {keys}).") from None


def _label(record) -> int | None:
  """The integer scalar feature ``label`` of a record, or None."""
  try:
    v = np.asarray(record["label"])
  except (KeyError, TypeError, IndexError, ValueError):
    return None
  if v.ndim != 0 or not (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
    return None
  return int(v)


def _labels(labels: list) -> np.ndarray | None:
  """int64 ``[N]`` if every record had a label, else None."""
  if not labels or any(v is None for v in labels):
    return None
  return np.asarray(labels, np.int64)


def _read_random_access_labeled(ds, tfds_name: str, select: Callable[[int], np.ndarray],
                                prepare: Callable[[Sequence[np.ndarray]], np.ndarray]):
  """``(x, y or None)`` of the selected records of a random-access source."""
  idx = np.asarray(select(len(ds)), np.int64)
  if idx.size == 0:
    return prepare([]), None
  getitems = getattr(ds, "__getitems__", None)
  chunks, labels = [], []
  for start in range(0, idx.size, CHUNK):
    part = [int(i) for i in idx[start:start + CHUNK]]
    records = getitems(part) if getitems is not None else [ds[i] for i in part]
    chunks.append(prepare([_image(r, tfds_name) for r in records]))
    labels += [_label(r) for r in records]
  return np.concatenate(chunks), _labels(labels)


def _read_random_access(ds, tfds_name: str, select: Callable[[int], np.ndarray],
                        prepare: Callable[[Sequence[np.ndarray]], np.ndarray]) -> np.ndarray:
  return _read_random_access_labeled(ds, tfds_name, select, prepare)[0]


def _read_sequential_labeled(records, tfds_name: str, select: Callable[[int], np.ndarray],
                             prepare: Callable[[Sequence[np.ndarray]], np.ndarray]):
  """``(x, y or None)`` of the selected records of a record iterator."""
  chunks, buf, labels = [], [], []
  for r in records:
    buf.append(_image(r, tfds_name))
    labels.append(_label(r))
    if len(buf) == CHUNK:
      chunks.append(prepare(buf))
      buf = []
  if buf or not chunks:
    chunks.append(prepare(buf))
  x = np.concatenate(chunks)
  idx = np.asarray(select(len(x)), np.int64)
  y = _labels(labels)
  return x[idx], None if y is None else y[idx]


def _read_sequential(records, tfds_name: str, select: Callable[[int], np.ndarray],
                     prepare: Callable[[Sequence[np.ndarray]], np.ndarray]) -> np.ndarray:
  return _read_sequential_labeled(records, tfds_name, select, prepare)[0]


def read(tfds_name: str, split: str, *, select: Callable[[int], np.ndarray],
         prepare: Callable[[Sequence[np.ndarray]], np.ndarray],
         data_dir: str | None = None, download: bool = False) -> tuple[np.ndarray, str]:
  """``(x, provenance)`` of ``read_labeled`` (the images only)."""
  x, _, source = read_labeled(tfds_name, split, select=select, prepare=prepare,
                              data_dir=data_dir, download=download)
  return x, source


def read_labeled(tfds_name: str, split: str, *, select: Callable[[int], np.ndarray],
                 prepare: Callable[[Sequence[np.ndarray]], np.ndarray],
                 data_dir: str | None = None, download: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None, str]:
  """Reads features ``image`` (and ``label``) of a prepared TFDS split.

  Args:
    tfds_name: e.g. ``'mnist'``, ``'lsun/classroom'``, ``'downsampled_imagenet/32x32'``.
    split: a TFDS split (slices such as ``'train[:10%]'`` work too).
    select: ``N -> indices`` of the records to keep, in the order to return them.
    prepare: list of ``H x W x C`` uint8 images -> uint8 ``N x H' x W' x C'``
      (dataset preprocessing), applied chunk by chunk to bound memory.
    data_dir: TFDS data directory; default ``default_data_dir()``.
    download: if the dataset is not prepared in ``data_dir``, let TFDS download and prepare
      it there first (``download_and_prepare``); False (default) never downloads.

  Returns:
    ``(x, y, provenance)``; ``y`` int64 ``[N]`` in the order of ``x``, or None (see the
    module docstring). Raises ``TfdsUnavailable`` when the data is not prepared.
  """
  data_dir = data_dir or default_data_dir()
  where = dataset_dir(tfds_name, data_dir)
  fresh = download and download_and_prepare(tfds_name, data_dir)
  if not download and "://" not in data_dir and not os.path.isdir(where):
    raise TfdsUnavailable(f"not prepared: {where} does not exist")
  how = "; downloaded and prepared now" if fresh else ""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    ds = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises many kinds)
    reason = f"tfds.data_source failed ({_first_line(e)})"
  else:
    x, y = _read_random_access_labeled(ds, tfds_name, select, prepare)
    return x, y, f"tfds {tfds_name} (data_source{how})"

  if importlib.util.find_spec("tensorflow") is None:
    raise TfdsUnavailable(
        f"{reason}; TensorFlow is not installed, so the tf.data fallback is unavailable")
  try:
    ds = tfds.load(tfds_name, split=split, data_dir=data_dir, download=False, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    raise TfdsUnavailable(f"{reason}; tfds.load failed ({_first_line(e)})") from e
  x, y = _read_sequential_labeled(tfds.as_numpy(ds), tfds_name, select, prepare)
  return x, y, f"tfds {tfds_name} (tf.data{how})"
