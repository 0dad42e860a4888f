"""Orbax checkpoints of a TrainState plus a JSON description of what was trained.

Orbax writes each step into a temporary directory and renames it when complete, so a
killed run never leaves a half-written checkpoint behind. The JSON ``meta`` records the
model and training configuration; restoring into a different one is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
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


def manager(directory: str, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, target: Any, meta: dict,
            step: int | None = None) -> tuple[int, Any] | None:
  """Restores the latest (or given) step into the structure of ``target``.

  Returns None when the directory holds no checkpoint; raises CheckpointError when the
  checkpoint is unreadable or was written for another model/config.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  where = os.path.join(str(mngr.directory), str(step))
  try:
    saved_meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # orbax raises many kinds for damaged files
    raise CheckpointError(
        f"checkpoint {where} is corrupt or unreadable ({type(e).__name__}: {str(e)[:200]}). "
        f"Delete {mngr.directory} to train from scratch.") from e
  meta = as_json(meta)
  saved_meta = with_new_config_defaults(saved_meta, meta)
  diffs = {k: (saved_meta.get(k), v) for k, v in meta.items() if saved_meta.get(k) != v}
  if diffs:
    lines = "; ".join(f"{k}: checkpoint has {a!r}, requested {b!r}" for k, (a, b) in diffs.items())
    raise CheckpointError(
        f"checkpoint {where} was written for a different model or config ({lines}). "
        "Use another --out directory or delete the checkpoint.")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
  except Exception as e:
    raise CheckpointError(
        f"checkpoint {where} is corrupt or does not match the model's parameters "
        f"({type(e).__name__}: {str(e)[:300]}). Delete {mngr.directory} to train from scratch.") from e
  return step, state
