"""Brightness shift (ROSE Table 1): OOD = the ID test images scaled in brightness.

    python -m ood_jax.experiments.rose_brightness                 # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_brightness --preset smoke --scores nll,input_complexity

For each factor f (default 0.2, 0.4, 0.6, 0.8, 1.2, 1.4, 1.6, 1.8: the 0.2 ... 1.8 grid
without 1.0, which would be the ID set itself; add it with ``--factors``) the OOD set is
the ID test split with the ``brightness:f`` transform (``clip(floor(x f), 0, 255)``). Every
score's AUROC is computed per factor, then the mean and (population) std of the AUROC over
the factors per score. Writes ``report.md`` (per-factor tables as ``table2``, then the
mean/std table), ``results.json`` (one row per score x factor), ``summary.json`` and
``meta.json`` into ``--out``. Scores whose module is not in the tree are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import write_report
from ood_jax.models import registry as model_registry
from ood_jax.scores import scorer_class

DEFAULT_SCORES = "nll,rose,likelihood_regret,likelihood_ratio,input_complexity"
DEFAULT_FACTORS = "0.2,0.4,0.6,0.8,1.2,1.4,1.6,1.8"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.rose_brightness",
                              description=__doc__.split("\n\n")[0])
  cli.add_common_args(p, ["--preset", "--id"])
  p.add_argument("--model", default="vae", help="model name (default vae)")
  p.add_argument("--scores", default=DEFAULT_SCORES,
                 help=f"comma-separated scores; those not importable are skipped (default {DEFAULT_SCORES})")
  p.add_argument("--factors", default=DEFAULT_FACTORS, help=f"brightness factors (default {DEFAULT_FACTORS})")
  cli.add_common_args(p, ["--data-dir", "--out", "--ckpt-dir", "--seed", "--n-eval",
                          "--train-steps", "--k", "--no-progress"], helps={
      "--data-dir": None, "--out": cli.out_help("rose_brightness"), "--no-progress": None})
  return p.parse_args(argv)


def available_scores(names: list[str]) -> tuple[list[str], dict[str, str]]:
  """``(importable names, {skipped name: reason})``; unknown names raise UnknownNameError."""
  ok, skipped = [], {}
  for name in names:
    try:
      scorer_class(name)
      ok.append(name)
    except ImportError as e:
      skipped[name] = f"not available yet ({e})"
  return ok, skipped


def factor_names(text: str) -> list[str]:
  names = []
  for f in pipeline.split_list(text):
    try:
      value = float(f)
    except ValueError:
      raise InvalidInputError(f"--factors: {f!r} is not a number.") from None
    names.append(f"brightness:{value:g}")
  if not names:
    raise InvalidInputError("--factors: no brightness factors given.")
  return names


def summarize(rows: list[dict]) -> dict[str, dict]:
  """``{score: {'auroc_mean', 'auroc_std', 'n_factors'}}`` over the per-factor rows."""
  out = {}
  for score in dict.fromkeys(r["score"] for r in rows):
    a = np.array([r["auroc"] for r in rows if r["score"] == score])
    out[score] = {"auroc_mean": float(a.mean()), "auroc_std": float(a.std()), "n_factors": int(a.size)}
  return out


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  setup = cli.setup(args)
  model_registry.check_name(args.model)
  scores, skipped = available_scores(pipeline.split_list(args.scores))
  oods = factor_names(args.factors)
  out = cli.default_out(args, "rose_brightness")
  if not scores:
    raise InvalidInputError(f"none of the scores {args.scores!r} is available: {skipped}.")

  sets = cli.load_sets(args, setup, [args.model], oods)
  model, result = cli.train_or_load(args.model, sets, setup)
  with pipeline.Timer() as ts:
    vals = cli.score_all(args.model, model, result.variables, scores, sets, setup)
  rows = pipeline.metric_rows(args.id, args.model, vals)
  summary = summarize(rows)
  samples = {(args.model, s): {"id_name": f"{args.id} test", "id": v["__id__"],
                               "ood": {n: a for n, a in v.items() if n != "__id__"},
                               "xlabel": f"{s} score (higher = more OOD)"}
             for s, v in vals.items()}
  meta = {
      "preset": args.preset, "seed": args.seed, "id": args.id, "model": args.model,
      "factors": [o.split(":")[1] for o in oods], "n_train": len(sets.train.x),
      "n_id_test": len(sets.test.x), "k_importance": setup.k, "skipped_scores": skipped,
      "train_steps": result.step, "score_seconds": round(ts.seconds, 1),
      "auroc_over_factors": summary, **cli.environment_meta(t0),
  }
  command = cli.command_line("rose_brightness", args)
  files = write_report(out, title=f"Brightness shift, {args.id} in-distribution ({args.preset} preset)",
                       rows=rows, meta=meta, score_samples=samples, command=command)
  table = ["", "## AUROC over brightness factors (ROSE Table 1)", "",
           "Mean and std of the AUROC over the factors " + ", ".join(meta["factors"]) + ".", "",
           "| score | mean AUROC | std |", "|---|---:|---:|"]
  table += [f"| {s} | {v['auroc_mean']:.3f} | {v['auroc_std']:.3f} |" for s, v in summary.items()]
  table += [f"| {s} | – | – (skipped: {why[:120]}) |" for s, why in skipped.items()]
  with open(files["report.md"], "a") as f:
    f.write("\n".join(table) + "\n")
  files["summary.json"] = os.path.join(out, "summary.json")
  with open(files["summary.json"], "w") as f:
    json.dump({"command": command, "auroc_over_factors": summary, "skipped": skipped}, f, indent=1)
  return {"rows": rows, "summary": summary, "meta": meta, "files": files, "out": out}


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
