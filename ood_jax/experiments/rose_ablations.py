"""ROSE ablations: DIAG vs EKFAC (ROSE Table 6), InvConv vs all layers for Glow (Table 7),
Fisher sample count (Fig. 5); AUROC per OOD set.

    python -m ood_jax.experiments.rose_ablations                      # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_ablations --preset smoke --out runs/rose_abl_smoke
    python -m ood_jax.experiments.rose_ablations --models vae,glow --fisher-sizes 10,100,1000

Trains (or reloads from the checkpoint cache shared with ``table2``) each model on the ID
training split, then fits and evaluates one ``rose`` scorer per variant: ``rose_diag``,
``rose_ekfac`` (default layers, N = 1000 Fisher images), for Glow also ``rose_ekfac_all``
(every parameter module instead of the invertible 1x1 convolutions), and
``rose_ekfac_N<n>`` for each Fisher size (capped at the training images left after the
1000 held out for the z-scores; N = 1000 is ``rose_ekfac``). Writes ``report.md``,
``results.json`` (one row per model x variant x OOD set), ``meta.json`` and figures into
``--out``, like ``table2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.models import registry as model_registry
from ood_jax.scores.rose import Rose, split_id

DEFAULT_SIZES = "10,100,1000,10000"
GLOWS = ("glow", "cv_glow")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.rose_ablations",
                              description=__doc__.split("\n\n")[0])
  cli.add_common_args(p, ["--preset", "--id", "--ood"])
  p.add_argument("--models", default="vae", help="comma-separated model names (default vae)")
  p.add_argument("--fisher-sizes", default=DEFAULT_SIZES,
                 help=f"Fisher image counts for the Fig. 5 sweep (default {DEFAULT_SIZES})")
  cli.add_common_args(p, ["--data-dir", "--out", "--ckpt-dir", "--seed", "--n-eval",
                          "--train-steps", "--no-progress"], helps={
      "--out": cli.out_help("rose_ablations"),
      "--ckpt-dir": "trained-model cache (default runs/checkpoints; <out>/checkpoints with --out)"})
  return p.parse_args(argv)


def fisher_sizes(arg: str) -> list[int]:
  try:
    sizes = [int(s) for s in pipeline.split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--fisher-sizes: expected comma-separated integers, got {arg!r}.")
  if not sizes or min(sizes) < 1:
    raise InvalidInputError(f"--fisher-sizes: expected positive integers, got {arg!r}.")
  return sizes


def variants(model_name: str, sizes: list[int], n_train: int) -> dict[str, dict]:
  """``{label: Rose kwargs}`` of every ablation run for one model (duplicates dropped)."""
  base = Rose()
  out = {"rose_diag": dict(fisher="diag"), "rose_ekfac": dict(fisher="ekfac")}
  if model_name in GLOWS:
    out["rose_ekfac_all"] = dict(fisher="ekfac", layers="all")
  seen = {len(split_id(n_train, base.n_fisher, base.n_norm, 0)[0])}
  for n in sizes:
    eff = len(split_id(n_train, n, base.n_norm, 0)[0])
    if eff not in seen:
      seen.add(eff)
      out[f"rose_ekfac_N{eff}"] = dict(fisher="ekfac", n_fisher=eff)
  return out


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  setup = cli.setup(args)
  models = pipeline.split_list(args.models)
  oods = pipeline.split_list(args.ood)
  sizes = fisher_sizes(args.fisher_sizes)
  for m in models:
    model_registry.check_name(m)
  out = cli.default_out(args, "rose_ablations")

  by_model = cli.sets_by_model(args, setup, models, oods)
  rows, samples, model_meta = [], {}, {}
  for model_name in models:
    sets = by_model[model_name]
    model, result = cli.train_or_load(model_name, sets, setup)
    runs = variants(model_name, sizes, len(sets.train.x))
    vals, info = {}, {}
    for label, kwargs in runs.items():
      scorer = Rose(seed=args.seed, progress=setup.progress, **kwargs)
      with pipeline.Timer() as tf:
        state = scorer.fit(model, result.variables, sets.train.x)
      with pipeline.Timer() as ts:
        v = {"__id__": scorer.score(state, sets.test.x)}
        v.update({name: scorer.score(state, s.x) for name, s in sets.ood.items()})
      vals[label] = v
      n_fisher = len(split_id(len(sets.train.x), scorer.n_fisher, scorer.n_norm, args.seed)[0])
      info[label] = {**kwargs, "n_fisher": n_fisher, "fit_seconds": round(tf.seconds, 1),
                     "score_seconds": round(ts.seconds, 1)}
      samples[(model_name, label)] = {
          "id_name": f"{args.id} test", "id": v["__id__"],
          "ood": {n: s for n, s in v.items() if n != "__id__"},
          "xlabel": f"{label} score (higher = more OOD)"}
    rows += pipeline.metric_rows(args.id, model_name, vals)
    model_meta[model_name] = {"train_steps": result.step, "resumed_from": result.resumed_from,
                              "variants": info}

  rose_defaults = {f.name: getattr(Rose(), f.name) for f in dataclasses.fields(Rose)
                   if f.name not in ("progress", "name")}
  meta = cli.table_meta(args, by_model[models[0]], setup.train_cfg, model_meta, t0,
                       {"fisher_sizes": sizes, "rose_defaults": rose_defaults,
                        **cli.shapes_meta(by_model)})
  return cli.write_run_report(
      "rose_ablations", args, out,
      title=f"ROSE ablations, {args.id} in-distribution ({args.preset} preset)",
      rows=rows, meta=meta, score_samples=samples)


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
