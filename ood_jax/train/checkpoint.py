"""Orbax checkpoints of a TrainState plus a JSON description of what was trained.

Orbax writes each step into a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint behind. The JSON ``meta`` records the
model and training configuration; restoring into a different one is an error.

Each save also records ``state_sha256``, a sha256 of every array of the saved state (paths,
dtypes, shapes and bytes); a restore recomputes it, so flipped bits in the stored weights
are a ``CheckpointError``, never a silently different model. When the latest step is
corrupt (unreadable, or its checksum does not match) and an older step is intact, that step
is restored with a warning (training then repeats the lost steps exactly) and the damaged
steps are renamed ``corrupt-<step>`` (kept for inspection, ignored by later runs). Checkpoints
written before the checksum existed restore without the check. Meta keys in
``LATER_KEYS`` (added after checkpoints were first written) are compared only when the
checkpoint has them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ood_jax.errors import CheckpointError
from ood_jax.train.config import TrainConfig


def as_json(meta: dict) -> dict:
  """``meta`` as it reads back from JSON (tuples become lists), for comparisons."""
  return json.loads(json.dumps(meta))


def with_new_config_defaults(saved: dict, requested: dict) -> dict:
  """``saved`` with the ``config`` fields it lacks but ``requested`` has filled with their
  ``TrainConfig`` defaults: a checkpoint written before a field existed was trained the
  way its default trains (new fields default to the old behaviour)."""
  cfg, want = saved.get("config"), requested.get("config")
  if not isinstance(cfg, dict) or not isinstance(want, dict):
    return saved
  defaults = as_json({f.name: f.default for f in dataclasses.fields(TrainConfig)})
  missing = {k: defaults[k] for k in want if k not in cfg and k in defaults}
  return {**saved, "config": {**cfg, **missing}} if missing else saved


CHECKSUM_KEY = "state_sha256"
LATER_KEYS = ("data",)   # meta keys older checkpoints lack: compared only where present


def tree_sha256(tree: Any) -> str:
  """sha256 over every leaf of ``tree`` in tree order: its path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def manager(directory: str, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  meta = {**meta, CHECKSUM_KEY: tree_sha256(state)}
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


class _Corrupt(Exception):
  """One step's files are damaged (unreadable or not matching their checksum)."""


def restore(mngr: ocp.CheckpointManager, target: Any, meta: dict,
            step: int | None = None) -> tuple[int, Any] | None:
  """Restores the latest (or given) step into the structure of ``target``.

  Returns None when the directory holds no checkpoint; raises CheckpointError when the
  checkpoint was written for another model/config, or is corrupt and no older step is
  intact (the latest corrupt step falls back to the newest intact one, with a warning;
  an explicitly asked ``step`` never falls back).
  """
  steps = sorted(mngr.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    return None
  problems, corrupt = [], []
  for s in steps:
    try:
      out = _restore_step(mngr, s, target, meta)
    except _Corrupt as e:
      problems.append(str(e))
      corrupt.append(s)
      continue
    if problems:
      moved = _set_aside(mngr, corrupt)
      warnings.warn(f"{'; '.join(problems)}; restored the intact step {s} instead "
                    f"(training repeats the steps after it; the damaged files are kept as "
                    f"{', '.join(moved)}).", stacklevel=3)
    return out
  raise CheckpointError(f"{'; '.join(problems)}. No intact step is left in {mngr.directory}: "
                        "delete it to train from scratch.")


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> list[str]:
  """Renames damaged step directories to ``corrupt-<step>`` so the step can be saved again."""
  moved = []
  for s in steps:
    src = os.path.join(str(mngr.directory), str(s))
    dst, n = f"{os.path.join(str(mngr.directory), 'corrupt')}-{s}", 1
    while os.path.exists(dst):
      dst, n = f"{os.path.join(str(mngr.directory), 'corrupt')}-{s}.{n}", n + 1
    os.rename(src, dst)
    moved.append(dst)
  mngr.reload()
  return moved


def _restore_step(mngr: ocp.CheckpointManager, step: int, target: Any, meta: dict):
  where = os.path.join(str(mngr.directory), str(step))
  try:
    saved_meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # orbax raises many kinds for damaged files
    raise _Corrupt(f"checkpoint {where} is corrupt or unreadable "
                   f"({type(e).__name__}: {str(e)[:200]})") from e
  saved_meta = dict(saved_meta)
  checksum = saved_meta.pop(CHECKSUM_KEY, None)
  meta = as_json(meta)
  saved_meta = with_new_config_defaults(saved_meta, meta)
  diffs = {k: (saved_meta.get(k), v) for k, v in meta.items()
           if saved_meta.get(k) != v and not (k in LATER_KEYS and k not in saved_meta)}
  if diffs:
    lines = "; ".join(f"{k}: checkpoint has {a!r}, requested {b!r}" for k, (a, b) in diffs.items())
    raise CheckpointError(
        f"checkpoint {where} was written for a different model, config or training data "
        f"({lines}). Use another --out directory or delete the checkpoint.")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  except Exception as e:   # truncated array files, or a tree of another shape
    raise _Corrupt(f"checkpoint {where} is corrupt or does not match the model's parameters "
                   f"({type(e).__name__}: {str(e)[:300]})") from e
  if checksum is not None and tree_sha256(state) != checksum:
    raise _Corrupt(f"checkpoint {where} is corrupt: its weights do not match the checksum "
                   "written with them")
  return step, state
