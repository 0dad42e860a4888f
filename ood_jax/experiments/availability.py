"""Which datasets exist here: experiments over the papers' dataset pairs run the pairs whose
data can be loaded and list the others with the reason (never a stand-in under another name).
"""

from __future__ import annotations

import dataclasses

from ood_jax import data
from ood_jax.errors import DatasetNotFoundError, InvalidInputError


def missing(name: str, split: str, data_dir: str | None) -> str | None:
  """None if split ``split`` of ``name`` loads (one image), else why not (one line)."""
  try:
    data.load(name, split, data_dir=data_dir, n=1, like=(8, 8, 1))  # like: synthetic sets
  except DatasetNotFoundError:
    return f"{name} ({split} split) is not available here"
  return None


def parse_pairs(text: str, flag: str = "--pairs") -> list[tuple[str, list[str]]]:
  """``'fashion_mnist:mnist+not_mnist,cifar10:celeb_a'`` -> ``[(id, [ood, ...]), ...]``; an ID
  set named twice gets the OOD sets of both (one entry, so no two runs share its name)."""
  out = []
  for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
    id_name, sep, oods = part.partition(":")
    names = [o.strip() for o in oods.split("+") if o.strip()]
    if not sep or not id_name.strip() or not names:
      raise InvalidInputError(f"{flag}: expected 'id:ood+ood,id:ood', got {part!r} in {text!r}.")
    out.append((id_name.strip(), names))
  if not out:
    raise InvalidInputError(f"{flag}: no pairs given.")
  merged: dict[str, list[str]] = {}          # one entry per ID set (its OOD sets in order)
  for id_name, names in out:
    keep = merged.setdefault(id_name, [])
    keep += [n for n in names if n not in keep]
  return list(merged.items())


def pairs_meta(settings_meta: dict, runnable, skipped, runs=()) -> dict:
  """A run's ``settings_meta`` for an experiment over ``--pairs``: the pairs (run and
  skipped with the reason) replace the single ``id`` / ``ood`` entries, and the training
  configs of each ID set's run (``Run.for_id``: grey and colour recipes differ) replace the
  run-wide ones."""
  meta = {k: v for k, v in settings_meta.items() if k not in ("id", "ood", "train_configs")}
  configs = {ri.id: {m: dataclasses.asdict(c) for m, c in ri.train_configs.items()} for ri in runs}
  return {**meta, "pairs": [[i, list(o)] for i, o in runnable], "skipped": list(skipped),
          "train_configs": configs}


def skipped_lines(skipped: list[dict]) -> list[str]:
  """Markdown lines listing the pairs whose data is not here (none: no lines)."""
  if not skipped:
    return []
  return ["", "Not run here:", ""] + [f"* {s['id']} -> {s['ood']}: {s['reason']}." for s in skipped]


def require(runnable, text: str) -> None:
  """One clear error when none of the pairs ``text`` has its data here."""
  if not runnable:
    raise InvalidInputError(f"--pairs {text!r}: no pair has its data here.")


def plan(pairs, missing_fn, *, ood_name=lambda ood, id_name: ood, id_extra=None):
  """``(runnable [(id, [ood, ...])], skipped [{'id', 'ood', 'reason'}])`` of ``pairs``: a pair
  runs when ``missing_fn(name, split)`` (a reason, or None) finds the ID train and test splits
  and the OOD test split (named ``ood_name(ood, id)``, e.g. a transform of the ID test set),
  and ``id_extra(id)`` (a further check of the ID set, e.g. its labels) has no reason."""
  runnable, skipped = [], []
  for id_name, oods in pairs:
    why = missing_fn(id_name, "train") or missing_fn(id_name, "test")
    if why is None and id_extra is not None:
      why = id_extra(id_name)
    if why:
      skipped += [{"id": id_name, "ood": o, "reason": why} for o in oods]
      continue
    keep = []
    for o in oods:
      why = missing_fn(ood_name(o, id_name), "test")
      if why:
        skipped.append({"id": id_name, "ood": o, "reason": why})
      else:
        keep.append(o)
    if keep:
      runnable.append((id_name, keep))
  return runnable, skipped
