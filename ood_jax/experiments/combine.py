"""Combines several scores of a finished run into one, from the run's ``scores.npz``.

    python -m ood_jax.experiments.combine RUN_DIR --scores nll,rose [--how rank|z]
        [--models vae,glow] [--out DIR]

For each model that has every listed score, each score is standardised against that score on
the ID test set, then the standardised scores are averaged (higher = more OOD, as for every
input score):

* ``rank``: the ID test set's empirical CDF with midranks for ties,
  ``(#{id < s} + #{id <= s}) / (2 n_id)``, in ``[0, 1]``;
* ``z``: ``(s - mean_id) / std_id`` (``ddof=0``; a score constant on the ID set is an error).

The report (default ``RUN_DIR/combined_<how>_<a+b>``) has a row per (model, OOD set) for the
combined score ``<how>(<a+b>)`` and, side by side, for each input score recomputed from the
file. Numpy only: no JAX, no model is loaded.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import numpy as np

from ood_jax import metrics
from ood_jax.errors import InvalidInputError, OODJaxError
from ood_jax.experiments import report, score_file

HOWS = ("rank", "z")


def standardise(ref: np.ndarray, s: np.ndarray, how: str) -> np.ndarray:
  """``s`` standardised against the reference (ID test) scores ``ref`` (float64).

  ``rank``: ``(searchsorted(left) + searchsorted(right)) / (2 n)`` on the sorted ``ref``;
  ``z``: ``(s - ref.mean()) / ref.std()``. Raises ``InvalidInputError`` for an unknown
  ``how``, an empty ``ref`` or (``z``) a constant ``ref``.
  """
  ref = np.asarray(ref, np.float64)
  s = np.asarray(s, np.float64)
  if ref.size == 0:
    raise InvalidInputError("standardise: the reference (ID test) scores are empty.")
  if how == "rank":
    r = np.sort(ref)
    return (np.searchsorted(r, s, "left") + np.searchsorted(r, s, "right")) / (2.0 * r.size)
  if how == "z":
    std = ref.std()
    if not std > 0:
      raise InvalidInputError("standardise: the ID test scores are constant (std 0); "
                              "z-standardisation is undefined (use --how rank).")
    return (s - ref.mean()) / std
  raise InvalidInputError(f"standardise: unknown --how {how!r}; use one of {list(HOWS)}.")


def combine(by_score: dict[str, dict[str, np.ndarray]], how: str) -> dict[str, np.ndarray]:
  """The combined score of every set that each score has.

  Args:
    by_score: ``{score: {set: 1-D scores}}``, each with ``score_file.ID_SET``; a set's arrays
      must score the same images in the same order under every score.
    how: ``'rank'`` or ``'z'`` (see ``standardise``).

  Returns:
    ``{set: mean over the scores of the standardised scores}`` (float64), ``ID_SET`` first.
  """
  if len(by_score) < 2:
    raise InvalidInputError(f"combine: need at least 2 scores, got {sorted(by_score)}.")
  sets = [n for n in next(iter(by_score.values())) if all(n in d for d in by_score.values())]
  if score_file.ID_SET not in sets:
    raise InvalidInputError(f"combine: every score needs the ID test set {score_file.ID_SET!r}.")
  sets = [score_file.ID_SET] + [n for n in sets if n != score_file.ID_SET]
  out = {}
  for name in sets:
    sizes = {k: np.asarray(d[name]).size for k, d in by_score.items()}
    if len(set(sizes.values())) != 1:
      raise InvalidInputError(f"combine: set {name!r} has a different number of images per "
                              f"score ({sizes}); they must score the same images.")
    out[name] = np.mean([standardise(d[score_file.ID_SET], d[name], how)
                         for d in by_score.values()], axis=0)
  return out


def metric_rows(id_name: str, model: str, score: str, sets: dict[str, np.ndarray]) -> list[dict]:
  """One ``report.ROW_KEYS`` row per OOD set of ``sets`` (``{set: scores}`` with ``ID_SET``)."""
  s_id = sets[score_file.ID_SET]
  return [{"id": id_name, "model": model, "score": score, "ood": name,
           **metrics.ood_metrics(s_id, s)}
          for name, s in sets.items() if name != score_file.ID_SET]


def _by_model(scores: dict) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """``{(model, score, set): a}`` -> ``{model: {score: {set: a}}}``."""
  out: dict = {}
  for (model, score, name), a in scores.items():
    out.setdefault(model, {}).setdefault(score, {})[name] = a
  return out


def _names(text: str) -> list[str]:
  return list(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m ood_jax.experiments.combine",
      description="Combine scores of a finished run (its scores.npz) by rank or z "
                  "standardisation against the ID test set, and report the metrics.")
  p.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory (has scores.npz)")
  p.add_argument("--scores", required=True, help="comma-separated scores to combine, e.g. nll,rose")
  p.add_argument("--how", default="rank", help="rank (ID-test empirical CDF) or z (default rank)")
  p.add_argument("--models", default="", help="comma-separated models (default: every model "
                                              "that has all the scores)")
  p.add_argument("--out", default=None, help="report directory "
                                             "(default RUN_DIR/combined_<how>_<a+b>)")
  return p


def _select(by_model: dict, names: list[str], models: list[str]) -> list[str]:
  """The models to combine; ``InvalidInputError`` saying what is missing."""
  present = sorted({s for d in by_model.values() for s in d})
  unknown = [n for n in names if n not in present]
  if unknown:
    raise InvalidInputError(f"score(s) {unknown} not in the file; it has {present}.")
  if models:
    missing = [m for m in models if m not in by_model]
    if missing:
      raise InvalidInputError(f"model(s) {missing} not in the file; it has {sorted(by_model)}.")
    for m in models:
      lack = [n for n in names if n not in by_model[m]]
      if lack:
        raise InvalidInputError(f"model {m!r} has no score(s) {lack}; it has "
                                f"{sorted(by_model[m])}.")
    return models
  chosen = [m for m in by_model if all(n in by_model[m] for n in names)]
  if not chosen:
    has = {m: sorted(d) for m, d in by_model.items()}
    raise InvalidInputError(f"no model has every score {names}; the models have {has}.")
  return chosen


def run(run_dir: str, names: list[str], how: str, models: list[str], out_dir: str,
        command: str) -> dict[str, str]:
  """Reads ``run_dir``'s scores, combines, and writes the report; returns its files."""
  if how not in HOWS:
    raise InvalidInputError(f"unknown --how {how!r}; use one of {list(HOWS)}.")
  if len(names) < 2:
    raise InvalidInputError(f"--scores: need at least 2 distinct scores, got {names}.")
  path = os.path.join(run_dir, score_file.FILE)
  if not os.path.isfile(path):
    raise InvalidInputError(f"{path} not found: the run predates {score_file.FILE} or "
                            "was not an experiment run (re-run it to get per-image scores).")
  id_name, scores, indices = score_file.read(path)
  by_model = _by_model(scores)
  chosen = _select(by_model, names, models)
  label = f"{how}({'+'.join(names)})"
  rows, samples, arrays = [], {}, {}
  for model in chosen:
    by_score = {n: by_model[model][n] for n in names}
    for n, sets in by_score.items():
      for name, a in sets.items():
        metrics.check_scores(a, f"model {model!r} score {n!r} set {name!r}")
    combined = combine(by_score, how)
    if len(combined) < 2:
      raise InvalidInputError(f"model {model!r}: no OOD set has every score {names}.")
    per_ood = {n: metric_rows(id_name, model, n, sets) for n, sets in by_score.items()}
    per_ood[label] = metric_rows(id_name, model, label, combined)
    oods = list(dict.fromkeys(r["ood"] for rs in per_ood.values() for r in rs))
    rows += [r for ood in oods for rs in per_ood.values() for r in rs if r["ood"] == ood]
    samples[(model, label)] = {
        "id_name": id_name, "id": combined[score_file.ID_SET], "xlabel": f"{label} score",
        "ood": {k: v for k, v in combined.items() if k != score_file.ID_SET}}
    arrays.update({(model, n, s): a for n, sets in by_score.items() for s, a in sets.items()})
    arrays.update({(model, label, s): a for s, a in combined.items()})
  meta = {"run_dir": os.path.abspath(run_dir), "id": id_name, "how": how,
          "scores": ",".join(names), "combined_models": ",".join(chosen),
          "standardisation": ("ID-test empirical CDF, midrank ties" if how == "rank" else
                              "(s - mean_ID) / std_ID, ddof=0") + "; mean over scores"}
  kept = {s: i for s, i in indices.items() if any(k[2] == s for k in arrays)}
  return report.write_report(
      out_dir, title=f"Combined score {label}, ID {id_name}", rows=rows, meta=meta,
      score_samples=samples, command=command,
      arrays=score_file.to_arrays(id_name, arrays, kept))


def main(argv=None) -> int:
  """CLI entry point; prints the report and ``wrote <dir>``; 2 with one ``error:`` line."""
  argv = sys.argv[1:] if argv is None else list(argv)
  args = _parser().parse_args(argv)
  names, how = _names(args.scores), args.how.strip()
  out_dir = args.out or os.path.join(args.run_dir, f"combined_{how}_{'+'.join(names)}")
  command = "python -m ood_jax.experiments.combine " + shlex.join(argv)
  try:
    files = run(args.run_dir, names, how, _names(args.models), out_dir, command)
  except OODJaxError as e:
    print(f"error: {e}".replace("\n", " "), file=sys.stderr)
    return 2
  with open(files["report.md"]) as f:
    print(f.read())
  print(f"wrote {os.path.abspath(out_dir)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
