"""Brightness shift (ROSE Table 1): OOD = the ID test images scaled in brightness.

    python -m ood_jax.experiments.rose_brightness                 # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_brightness --preset smoke --scores nll,input_complexity

For each factor f (default 0.2, 0.4, 0.6, 0.8, 1.2, 1.4, 1.6, 1.8: the 0.2 ... 1.8 grid
without 1.0, which would be the ID set itself; add it with ``--factors``) the OOD set is
the ID test split with the ``brightness:f`` transform (``clip(floor(x f), 0, 255)``). Every
score's AUROC is computed per factor, then the mean and (population) std of the AUROC over
the factors per model and score. Writes ``report.md`` (per-factor tables as ``table2``,
then the mean/std table), ``results.json`` (one row per model x score x factor),
``summary.json`` and ``meta.json`` into ``--out``. The OOD sets are the factors (no ``--ood``).
"""

from __future__ import annotations

import sys

import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list

DEFAULT_SCORES = "nll,rose,likelihood_regret,likelihood_ratio,input_complexity"
DEFAULT_FACTORS = "0.2,0.4,0.6,0.8,1.2,1.4,1.6,1.8"


def factor_names(text: str) -> list[str]:
  names = []
  for f in split_list(text):
    try:
      value = float(f)
    except ValueError:
      raise InvalidInputError(f"--factors: {f!r} is not a number.") from None
    names.append(f"brightness:{value:g}")
  if not names:
    raise InvalidInputError("--factors: no brightness factors given.")
  return names


def check(r: Run) -> None:
  factor_names(r.options["factors"])


def summarize(rows: list[dict]) -> dict[str, dict]:
  """``{score: {'auroc_mean', 'auroc_std', 'n_factors'}}`` over the per-factor rows (of one
  model)."""
  out = {}
  for score in dict.fromkeys(r["score"] for r in rows):
    a = np.array([r["auroc"] for r in rows if r["score"] == score])
    out[score] = {"auroc_mean": float(a.mean()), "auroc_std": float(a.std()), "n_factors": int(a.size)}
  return out


def markdown(summaries: dict[str, dict], factors: list[str]) -> str:
  lines = ["## AUROC over brightness factors (ROSE Table 1)", "",
           "Mean and std of the AUROC over the factors " + ", ".join(factors) + ".", "",
           "| model | score | mean AUROC | std |", "|---|---|---:|---:|"]
  for model, summary in summaries.items():
    lines += [f"| {model} | {s} | {v['auroc_mean']:.3f} | {v['auroc_std']:.3f} |"
              for s, v in summary.items()]
  return "\n".join(lines)


def run(r: Run) -> Result:
  oods = factor_names(r.options["factors"])
  by_model = pipeline.sets_for(r, oods=oods)
  rows, samples, summaries, info = [], {}, {}, {}
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    with pipeline.Timer() as ts:
      vals = pipeline.score_all(r, trained, sets)
    model_rows = pipeline.metric_rows(r.id, name, vals)
    rows += model_rows
    summaries[name] = summarize(model_rows)
    samples.update(pipeline.samples_for(r.id, name, vals))
    info[name] = {**trained.meta(), "score_seconds": round(ts.seconds, 1)}
  factors = [o.split(":")[1] for o in oods]
  first = by_model[r.models[0]]
  single = summaries[r.models[0]] if len(r.models) == 1 else summaries
  meta = {**r.settings_meta(), "factors": factors, "n_train": len(first.train.x),
          "n_id_test": len(first.test.x), "models": info, "auroc_over_factors": single}
  return Result(title=f"Brightness shift, {r.id} in-distribution ({r.preset} preset)", meta=meta,
                rows=rows, samples=samples, sections=[markdown(summaries, factors)],
                json_files={"summary.json": {"command": r.command, "auroc_over_factors": single}})


EXPERIMENT = cli.Experiment(
    "rose_brightness", run, description=__doc__.split("\n\n")[0],
    defaults={"scores": DEFAULT_SCORES, "ood": ""}, omit=("--ood",),
    options=(cli.option("--factors", default=DEFAULT_FACTORS,
                        help=f"brightness factors (default {DEFAULT_FACTORS})"),),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
