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
import os
import platform
import shlex
import sys
import time

import jax

from ood_jax.errors import InvalidInputError, OODJaxError
from ood_jax.experiments import configs, pipeline
from ood_jax.experiments.report import write_report
from ood_jax.models import registry as model_registry
from ood_jax.scores.rose import Rose, split_id

DEFAULT_ID = "fashion_mnist"
DEFAULT_OOD = "mnist,noise,constant,rotation"
DEFAULT_SIZES = "10,100,1000,10000"
GLOWS = ("glow", "cv_glow")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.rose_ablations",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="cpu", help=f"one of {', '.join(configs.PRESETS)} (default cpu)")
  p.add_argument("--id", default=DEFAULT_ID, help="in-distribution dataset (default fashion_mnist)")
  p.add_argument("--ood", default=DEFAULT_OOD,
                 help=f"comma-separated OOD sets; a transform name means the ID test set "
                      f"transformed (default {DEFAULT_OOD})")
  p.add_argument("--models", default="vae", help="comma-separated model names (default vae)")
  p.add_argument("--fisher-sizes", default=DEFAULT_SIZES,
                 help=f"Fisher image counts for the Fig. 5 sweep (default {DEFAULT_SIZES})")
  p.add_argument("--data-dir", default=None,
                 help="directory of <name>_<split>.npz arrays (else $OOD_JAX_DATA_DIR, TFDS, ...)")
  p.add_argument("--out", default=None,
                 help="output directory (default runs/rose_ablations_<id>_<preset>)")
  p.add_argument("--ckpt-dir", default=None,
                 help="trained-model cache (default runs/checkpoints; <out>/checkpoints with --out)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--n-eval", type=int, default=None, help="override the preset's images per set")
  p.add_argument("--train-steps", type=int, default=None, help="override the preset's training length")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
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
  preset = configs.get_preset(args.preset)
  models = pipeline.split_list(args.models)
  oods = pipeline.split_list(args.ood)
  sizes = fisher_sizes(args.fisher_sizes)
  for m in models:
    model_registry.check_name(m)
  overrides = {"seed": args.seed}
  if args.train_steps is not None:
    overrides["num_steps"] = args.train_steps
  train_cfg = dataclasses.replace(preset.train, **overrides)
  n_eval = args.n_eval if args.n_eval is not None else preset.n_eval
  progress = not args.no_progress
  out = args.out or os.path.join("runs", f"rose_ablations_{args.id}_{args.preset}")
  ckpt_root = pipeline.ckpt_root(args.ckpt_dir, args.out)

  sets = pipeline.load_sets(args.id, oods, models, data_dir=args.data_dir, n_train=preset.n_train,
                            n_eval=n_eval, seed=args.seed)
  rows, samples, model_meta = [], {}, {}
  for model_name in models:
    model, result = pipeline.train_or_load(model_name, preset.model_preset, sets, train_cfg,
                                           ckpt_root, progress=progress)
    runs = variants(model_name, sizes, len(sets.train.x))
    vals, info = {}, {}
    for label, kwargs in runs.items():
      scorer = Rose(seed=args.seed, progress=progress, **kwargs)
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

  meta = {
      "preset": args.preset, "seed": args.seed, "id": args.id, "input_shape": list(sets.hwc),
      "n_train": len(sets.train.x), "n_id_test": len(sets.test.x), "fisher_sizes": sizes,
      "rose_defaults": {f.name: getattr(Rose(), f.name) for f in dataclasses.fields(Rose)
                        if f.name not in ("progress", "name")},
      "train_config": dataclasses.asdict(train_cfg), "models": model_meta,
      "data_sources": {"id_train": sets.train.source, "id_test": sets.test.source,
                       **{n: s.source for n, s in sets.ood.items()}},
      "wall_seconds": round(time.perf_counter() - t0, 1),
      "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
      "python": platform.python_version(), "machine": platform.machine(),
  }
  command = "python -m ood_jax.experiments.rose_ablations " + " ".join(
      shlex.quote(a) for a in (args.argv if hasattr(args, "argv") else sys.argv[1:]))
  files = write_report(out, title=f"ROSE ablations, {args.id} in-distribution ({args.preset} preset)",
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
  print(open(result["files"]["report.md"]).read())
  print(f"wrote {result['out']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
