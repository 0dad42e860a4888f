"""``scores.npz``: the per-image scores behind an experiment's tables, written beside
``results.json``.

A flat npz (read with ``allow_pickle=False``) holding:

* ``scores/<model>/<score>/<set>``: float32 ``[n_set]``, one score per image (higher = more
  OOD); ``<set>`` is ``ID_SET`` for the ID test set, else the OOD set's name;
* ``indices/<set>``: int64 ``[n_set]``, the set's image indices (only where known), aligned
  with every ``scores/.../<set>``;
* ``id_name``: 0-d unicode array, the ID test set's name.

Names are non-empty; a ``/`` inside a name (``lsun/bedroom``) is stored as ``%2F`` (and
``%`` as ``%25``) so that keys split unambiguously; ``read`` gives the names back as written.

    arrays = score_file.to_arrays("fashion_mnist", {("vae", "nll", score_file.ID_SET): s_id,
                                                    ("vae", "nll", "mnist"): s_ood}, {})
    score_file.write(os.path.join(run_dir, score_file.FILE), arrays)
    id_name, scores, indices = score_file.read(os.path.join(run_dir, score_file.FILE))
"""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from ood_jax.errors import InvalidInputError

FILE = "scores.npz"
ID_SET = "__id__"
ID_KEY = "id_name"


def _escape(name: str) -> str:
  return name.replace("%", "%25").replace("/", "%2F")


def _unescape(part: str) -> str:
  return part.replace("%2F", "/").replace("%25", "%")


def _check_name(name, what: str) -> str:
  if not isinstance(name, str) or not name:
    raise InvalidInputError(f"{what}: expected a non-empty string, got {name!r}.")
  return name


def _check_vector(a, what: str, integer: bool = False) -> np.ndarray:
  """``a`` as a 1-D real (``integer``: integer) array; NaN/inf are kept as given."""
  try:
    a = np.asarray(a)
  except Exception as e:  # ragged lists and the like
    raise InvalidInputError(f"{what}: could not be read as an array ({e}).") from None
  ok = (np.issubdtype(a.dtype, np.integer) if integer else
        (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
         or a.dtype == np.bool_))
  if not ok:
    kind = "integer indices" if integer else "real-valued scores"
    raise InvalidInputError(f"{what}: expected {kind}, got dtype {a.dtype}.")
  if a.ndim != 1:
    raise InvalidInputError(f"{what}: expected a 1-D array (one value per image), got shape "
                            f"{a.shape}.")
  return a


def to_arrays(id_name: str, scores: dict[tuple[str, str, str], np.ndarray],
              indices: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
  """The flat contents of ``scores.npz`` (see the module docstring).

  Args:
    id_name: the ID test set's name.
    scores: ``{(model, score, set): 1-D scores}``, ``set`` = ``ID_SET`` or an OOD set name;
      every (model, score) must have ``ID_SET``.
    indices: ``{set: 1-D integer image indices or None}``; each given one must be as long as
      every score array of its set.

  Raises:
    InvalidInputError: empty names, arrays that are not 1-D numbers, a (model, score)
      without ID scores, indices of an unknown set or of the wrong length.
  """
  _check_name(id_name, "id_name")
  if not isinstance(scores, dict) or not scores:
    raise InvalidInputError("scores: expected a non-empty dict {(model, score, set): scores}.")
  out: dict[str, np.ndarray] = {}
  lengths: dict[str, dict[tuple[str, str], int]] = {}
  for key, a in scores.items():
    if not (isinstance(key, tuple) and len(key) == 3):
      raise InvalidInputError(f"scores: keys must be (model, score, set) triples, got {key!r}.")
    model, score, name = (_check_name(k, f"scores key {key!r}") for k in key)
    a = _check_vector(a, f"scores[{key!r}]")
    out[f"scores/{_escape(model)}/{_escape(score)}/{_escape(name)}"] = a.astype(np.float32)
    lengths.setdefault(name, {})[(model, score)] = a.size
  for model, score in {k[:2] for k in scores}:
    if (model, score) not in lengths.get(ID_SET, {}):
      raise InvalidInputError(
          f"scores: model {model!r} score {score!r} has no ID test scores (set {ID_SET!r}).")
  for name, idx in (indices or {}).items():
    if idx is None:
      continue
    _check_name(name, "indices key")
    if name not in lengths:
      raise InvalidInputError(f"indices[{name!r}]: no scores of that set (sets: "
                              f"{sorted(lengths)}).")
    idx = _check_vector(idx, f"indices[{name!r}]", integer=True)
    bad = {k: n for k, n in lengths[name].items() if n != idx.size}
    if bad:
      raise InvalidInputError(f"indices[{name!r}]: {idx.size} indices, but the scores of "
                              f"(model, score) {sorted(bad)} have {sorted(set(bad.values()))}.")
    out[f"indices/{_escape(name)}"] = idx.astype(np.int64)
  out[ID_KEY] = np.array(id_name, dtype=np.str_)
  return out


def write(path, arrays: dict[str, np.ndarray]) -> None:
  """Writes ``arrays`` (``to_arrays``) to ``path`` atomically: a compressed npz written to a
  temporary file in the same directory, then renamed over ``path``."""
  if not isinstance(arrays, dict) or ID_KEY not in arrays:
    raise InvalidInputError(f"{path}: expected the dict of to_arrays (with key {ID_KEY!r}).")
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read(path) -> tuple[str, dict[tuple[str, str, str], np.ndarray], dict[str, np.ndarray]]:
  """``(id_name, scores, indices)`` of a ``scores.npz``, in the shapes ``to_arrays`` takes
  (``indices`` holds only the sets that have them).

  Raises:
    InvalidInputError: ``path`` missing, not an npz, or not in this format (the message
      names the file).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InvalidInputError(f"{path}: no such file.")
  if not zipfile.is_zipfile(path):
    raise InvalidInputError(f"{path}: not a readable {FILE} (not an npz archive).")
  try:
    with np.load(path, allow_pickle=False) as d:
      contents = {k: d[k] for k in d.files}
  except Exception as e:  # zip/zlib/format errors of a damaged file
    why = "it holds Python objects" if "pickle" in str(e) else f"{type(e).__name__}: {e}"
    raise InvalidInputError(f"{path}: not a readable {FILE} ({why}).") from None
  where = f"{path}: not a valid {FILE}"
  if ID_KEY not in contents or contents[ID_KEY].shape != () or \
      contents[ID_KEY].dtype.kind != "U":
    raise InvalidInputError(f"{where} (no 0-d unicode array {ID_KEY!r}).")
  id_name = str(contents.pop(ID_KEY))
  scores, indices = {}, {}
  for key, a in contents.items():
    parts = [_unescape(p) for p in key.split("/")]
    if parts[0] == "scores" and len(parts) == 4:
      scores[tuple(parts[1:])] = a
    elif parts[0] == "indices" and len(parts) == 2:
      indices[parts[1]] = a
    else:
      raise InvalidInputError(f"{where} (unexpected key {key!r}).")
  try:
    to_arrays(id_name, scores, indices)           # the same checks as when written
  except InvalidInputError as e:
    raise InvalidInputError(f"{where} ({e})") from None
  return (id_name, {k: v.astype(np.float32) for k, v in scores.items()},
          {k: v.astype(np.int64) for k, v in indices.items()})
