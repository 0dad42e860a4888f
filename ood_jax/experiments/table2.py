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
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np

from ood_jax.errors import OODJaxError
from ood_jax.experiments import configs, pipeline
from ood_jax.experiments.report import write_report
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer

DEFAULT_ID = "fashion_mnist"
DEFAULT_OOD = "mnist,noise,constant,rotation"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.table2",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="cpu", help=f"one of {', '.join(configs.PRESETS)} (default cpu)")
  p.add_argument("--id", default=DEFAULT_ID, help="in-distribution dataset (default fashion_mnist)")
  p.add_argument("--ood", default=DEFAULT_OOD,
                 help="comma-separated OOD sets; a transform name (rotation, brightness:0.5) "
                      f"means the ID test set transformed (default {DEFAULT_OOD})")
  p.add_argument("--models", default="vae", help="comma-separated model names (default vae)")
  p.add_argument("--scores", default="nll", help="comma-separated score names (default nll)")
  p.add_argument("--data-dir", default=None,
                 help="directory of <name>_<split>.npz arrays (else $OOD_JAX_DATA_DIR, TFDS, ...)")
  p.add_argument("--out", default=None, help="output directory (default runs/table2_<id>_<preset>)")
  p.add_argument("--ckpt-dir", default=None,
                 help="trained-model cache (default runs/checkpoints, shared by every experiment;"
                      " <out>/checkpoints when --out is given)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--n-eval", type=int, default=None, help="override the preset's images per set")
  p.add_argument("--train-steps", type=int, default=None, help="override the preset's training length")
  p.add_argument("--k", type=int, default=None, help="override the preset's importance samples")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  return p.parse_args(argv)


def check_names(models: list[str], scores: list[str]) -> None:
  for m in models:
    model_registry.check_name(m)
  for s in scores:
    get_scorer(s)  # raises UnknownNameError listing the known scores


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  preset = configs.get_preset(args.preset)
  models = pipeline.split_list(args.models)
  scores = pipeline.split_list(args.scores)
  oods = pipeline.split_list(args.ood)
  check_names(models, scores)
  overrides = {"seed": args.seed}
  if args.train_steps is not None:
    overrides["num_steps"] = args.train_steps
  train_cfg = dataclasses.replace(preset.train, **overrides)
  n_eval = args.n_eval if args.n_eval is not None else preset.n_eval
  k = args.k if args.k is not None else preset.k
  progress = not args.no_progress
  out = args.out or os.path.join("runs", f"table2_{args.id}_{args.preset}")
  ckpt_root = pipeline.ckpt_root(args.ckpt_dir, args.out)

  # Everything below the data loading can fail only for reasons found while computing.
  sets = pipeline.load_sets(args.id, oods, models, data_dir=args.data_dir, n_train=preset.n_train,
                            n_eval=n_eval, seed=args.seed)
  rows, samples, model_meta = [], {}, {}
  for model_name in models:
    model, result = pipeline.train_or_load(model_name, preset.model_preset, sets, train_cfg,
                                           ckpt_root, progress=progress)
    score_ckpt = pipeline.checkpoint_dir(ckpt_root, sets.train.name, model_name,
                                         preset.model_preset, args.seed) + "_scores"
    with pipeline.Timer() as ts:
      vals = pipeline.score_all(model, result.variables, scores, sets, k=k, seed=args.seed,
                                progress=progress, ckpt_dir=score_ckpt,
                                train_config=pipeline.model_train_config(model_name, train_cfg, preset.model_preset),
                                score_settings=preset.score_settings)
    rows += pipeline.metric_rows(args.id, model_name, vals)
    info = {"train_steps": result.step, "resumed_from": result.resumed_from,
            "train_config": dataclasses.asdict(pipeline.model_train_config(
                model_name, train_cfg, preset.model_preset)),
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

  meta = {
      "preset": args.preset, "seed": args.seed, "id": args.id, "input_shape": list(sets.hwc),
      "n_train": len(sets.train.x), "n_id_test": len(sets.test.x), "k_importance": k,
      "train_config": dataclasses.asdict(train_cfg), "models": model_meta,
      "data_sources": {"id_train": sets.train.source, "id_test": sets.test.source,
                       **{n: s.source for n, s in sets.ood.items()}},
      "wall_seconds": round(time.perf_counter() - t0, 1),
      "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
      "python": platform.python_version(), "machine": platform.machine(),
  }
  command = "python -m ood_jax.experiments.table2 " + " ".join(
      shlex.quote(a) for a in (args.argv if hasattr(args, "argv") else sys.argv[1:]))
  files = write_report(out, title=f"OOD detection, {args.id} in-distribution ({args.preset} preset)",
                       rows=rows, meta=meta, score_samples=samples, command=command.strip())
  return {"rows": rows, "meta": meta, "files": files, "out": out}


def main(argv=None) -> int:
  args = parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  try:
    result = run(args)
  except OODJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(open(result["files"]["report.md"]).read() if "report.md" in result["files"] else result["out"])
  print(f"wrote {result['out']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
