"""OOD detection table (Song et al. Table 2 / ROSE Table 2 layout).

    python -m ood_jax.experiments.table2                       # cpu preset, FashionMNIST
    python -m ood_jax.experiments.table2 --preset smoke --out runs/smoke
    python -m ood_jax.experiments.table2 --id cifar10 --ood celeb_a,noise,constant

Trains (or reloads from the checkpoint cache, ``--ckpt-dir``) each model on the in-distribution training
split, scores the ID test split and every OOD set, and writes ``report.md``,
``results.json`` (one row per model x score x OOD set), ``meta.json`` and PNG histograms
and ROC curves into ``--out``. OOD is the positive class; higher score = more OOD.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from ood_jax.experiments import cli, pipeline
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.table2",
                              description=__doc__.split("\n\n")[0])
  cli.add_common_args(p, ["--preset", "--id", "--ood"], helps={
      "--ood": "comma-separated OOD sets; a transform name (rotation, brightness:0.5) "
               f"means the ID test set transformed (default {cli.DEFAULT_OOD})"})
  p.add_argument("--models", default="vae", help="comma-separated model names (default vae)")
  p.add_argument("--scores", default="nll", help="comma-separated score names (default nll)")
  cli.add_common_args(p, ["--data-dir", "--out", "--ckpt-dir", "--seed", "--n-eval",
                          "--train-steps", "--k", "--no-progress"], helps={
      "--out": cli.out_help("table2"),
      "--ckpt-dir": "trained-model cache (default runs/checkpoints, shared by every experiment;"
                    " <out>/checkpoints when --out is given)"})
  return p.parse_args(argv)


def check_names(models: list[str], scores: list[str]) -> None:
  for m in models:
    model_registry.check_name(m)
  for s in scores:
    get_scorer(s)  # raises UnknownNameError listing the known scores


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  setup = cli.setup(args)
  models = pipeline.split_list(args.models)
  scores = pipeline.split_list(args.scores)
  oods = pipeline.split_list(args.ood)
  check_names(models, scores)
  out = cli.default_out(args, "table2")

  # Everything below the data loading can fail only for reasons found while computing.
  by_model = cli.sets_by_model(args, setup, models, oods)
  rows, samples, model_meta = [], {}, {}
  for model_name in models:
    sets = by_model[model_name]
    model, result = cli.train_or_load(model_name, sets, setup)
    with pipeline.Timer() as ts:
      vals = cli.score_all(model_name, model, result.variables, scores, sets, setup)
    rows += pipeline.metric_rows(args.id, model_name, vals)
    info = {"input_shape": list(sets.hwc), "train_steps": result.step,
            "resumed_from": result.resumed_from,
            "train_config": dataclasses.asdict(pipeline.model_train_config(
                model_name, setup.train_cfg, setup.preset.model_preset)),
            "train_seconds_this_run": round(result.seconds, 1),
            "score_seconds": round(ts.seconds, 1),
            "final_train_loss_nats": result.history[-1]["loss"] if result.history else None}
    for score_name, v in vals.items():
      if score_name == "nll":
        bpd = {n: pipeline.bits_per_dim(s, sets.hwc) for n, s in v.items()}
        info["bits_per_dim_mean"] = {("id_test" if n == "__id__" else n): round(float(np.mean(b)), 4)
                                     for n, b in bpd.items()}
        plot, xlabel = bpd, "bits/dim"
      else:
        plot, xlabel = v, f"{score_name} score (higher = more OOD)"
      samples[(model_name, score_name)] = {
          "id_name": f"{args.id} test", "id": plot["__id__"],
          "ood": {n: s for n, s in plot.items() if n != "__id__"}, "xlabel": xlabel}
    model_meta[model_name] = info

  meta = cli.table_meta(args, by_model[models[0]], setup.train_cfg, model_meta, t0,
                        {"k_importance": setup.k, **cli.shapes_meta(by_model)})
  return cli.write_run_report(
      "table2", args, out, title=f"OOD detection, {args.id} in-distribution ({args.preset} preset)",
      rows=rows, meta=meta, score_samples=samples)


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
