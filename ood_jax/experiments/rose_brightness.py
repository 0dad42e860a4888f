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
import dataclasses
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np

from ood_jax.errors import InvalidInputError, OODJaxError
from ood_jax.experiments import configs, pipeline
from ood_jax.experiments.report import write_report
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer, scorer_class

DEFAULT_ID = "fashion_mnist"
DEFAULT_SCORES = "nll,rose,likelihood_regret,likelihood_ratio,input_complexity"
DEFAULT_FACTORS = "0.2,0.4,0.6,0.8,1.2,1.4,1.6,1.8"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.rose_brightness",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="cpu", help=f"one of {', '.join(configs.PRESETS)} (default cpu)")
  p.add_argument("--id", default=DEFAULT_ID, help="in-distribution dataset (default fashion_mnist)")
  p.add_argument("--model", default="vae", help="model name (default vae)")
  p.add_argument("--scores", default=DEFAULT_SCORES,
                 help=f"comma-separated scores; those not importable are skipped (default {DEFAULT_SCORES})")
  p.add_argument("--factors", default=DEFAULT_FACTORS, help=f"brightness factors (default {DEFAULT_FACTORS})")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--out", default=None, help="output directory (default runs/rose_brightness_<id>_<preset>)")
  p.add_argument("--ckpt-dir", default=None, help="trained-model cache (as table2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--n-eval", type=int, default=None, help="override the preset's images per set")
  p.add_argument("--train-steps", type=int, default=None, help="override the preset's training length")
  p.add_argument("--k", type=int, default=None, help="override the preset's importance samples")
  p.add_argument("--no-progress", action="store_true")
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
  preset = configs.get_preset(args.preset)
  model_registry.check_name(args.model)
  scores, skipped = available_scores(pipeline.split_list(args.scores))
  oods = factor_names(args.factors)
  overrides = {"seed": args.seed}
  if args.train_steps is not None:
    overrides["num_steps"] = args.train_steps
  train_cfg = dataclasses.replace(preset.train, **overrides)
  n_eval = args.n_eval if args.n_eval is not None else preset.n_eval
  k = args.k if args.k is not None else preset.k
  progress = not args.no_progress
  out = args.out or os.path.join("runs", f"rose_brightness_{args.id}_{args.preset}")
  ckpt_root = pipeline.ckpt_root(args.ckpt_dir, args.out)
  if not scores:
    raise InvalidInputError(f"none of the scores {args.scores!r} is available: {skipped}.")

  sets = pipeline.load_sets(args.id, oods, [args.model], data_dir=args.data_dir,
                            n_train=preset.n_train, n_eval=n_eval, seed=args.seed)
  model, result = pipeline.train_or_load(args.model, preset.model_preset, sets, train_cfg,
                                         ckpt_root, progress=progress)
  score_ckpt = pipeline.checkpoint_dir(ckpt_root, sets.train.name, args.model,
                                       preset.model_preset, args.seed) + "_scores"
  with pipeline.Timer() as ts:
    vals = pipeline.score_all(model, result.variables, scores, sets, k=k, seed=args.seed,
                              progress=progress, ckpt_dir=score_ckpt,
                              train_config=pipeline.model_train_config(args.model, train_cfg, preset.model_preset),
                              score_settings=preset.score_settings)
  rows = pipeline.metric_rows(args.id, args.model, vals)
  summary = summarize(rows)
  samples = {(args.model, s): {"id_name": f"{args.id} test", "id": v["__id__"],
                               "ood": {n: a for n, a in v.items() if n != "__id__"},
                               "xlabel": f"{s} score (higher = more OOD)"}
             for s, v in vals.items()}
  meta = {
      "preset": args.preset, "seed": args.seed, "id": args.id, "model": args.model,
      "factors": [o.split(":")[1] for o in oods], "n_train": len(sets.train.x),
      "n_id_test": len(sets.test.x), "k_importance": k, "skipped_scores": skipped,
      "train_steps": result.step, "score_seconds": round(ts.seconds, 1),
      "auroc_over_factors": summary,
      "wall_seconds": round(time.perf_counter() - t0, 1),
      "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
      "python": platform.python_version(), "machine": platform.machine(),
  }
  argv = args.argv if hasattr(args, "argv") else sys.argv[1:]
  command = ("python -m ood_jax.experiments.rose_brightness "
             + " ".join(shlex.quote(a) for a in argv)).strip()
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
  args = parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  try:
    result = run(args)
  except OODJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(open(result["files"]["report.md"]).read())
  print(f"wrote {result['out']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
