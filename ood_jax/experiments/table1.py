"""Bits/dim in eval mode and BatchNorm train mode, and the mean Delta (Song et al. Table 1).

    python -m ood_jax.experiments.table1                        # cpu preset, FashionMNIST
    python -m ood_jax.experiments.table1 --preset smoke --models vae --out runs/t1_smoke

For each model (default ``realnvp,vae,pixelcnnpp``; one that cannot be imported yet is
skipped with a note) trained on the ID training split (the checkpoint cache is shared
with ``table2``), and for the ID test set and every OOD set:

* ``eval bpd``: mean bits/dim of ``log_prob`` in eval mode (running BatchNorm statistics);
* ``train bpd``: mean bits/dim in train mode, batches of ``--b`` images of that set alone
  (``bn_train_bpd``); the gap ``train - eval`` is large for OOD sets, small for ID data;
* ``mean Delta``: mean of ``|S_{b,r1} - S_{b,r2}|`` (``bn_mixed``), nats per image.

Train-mode statistics use ``--bn-k`` importance samples (default 1) and ``--rounds``
Monte-Carlo rounds (default 1) to stay affordable on a CPU; ``nll`` uses the preset's k.
A model without BatchNorm (Glow) gets its eval bpd and a note instead of the others.
Writes ``report.md``, ``results.json`` (one row per model x set) and ``meta.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer

DEFAULT_MODELS = "realnvp,vae,pixelcnnpp"


def add_args(p: argparse.ArgumentParser, default_models: str) -> None:
  """The arguments table1 and table5 share with table2, plus the BatchNorm-score settings."""
  cli.add_common_args(p, ["--preset", "--id", "--ood"])
  p.add_argument("--models", default=default_models,
                 help=f"comma-separated model names (default {default_models}); models that "
                      "cannot be imported are skipped with a note")
  cli.add_common_args(p, ["--data-dir", "--out", "--ckpt-dir", "--seed", "--n-eval",
                          "--train-steps", "--k"], helps={
      "--data-dir": "directory of <name>_<split>.npz arrays",
      "--ckpt-dir": "trained-model cache (default runs/checkpoints, shared with table2)",
      "--k": "importance samples of eval-mode nll"})
  p.add_argument("--bn-k", type=int, default=1,
                 help="importance samples inside train-mode batches (default 1)")
  p.add_argument("--rounds", type=int, default=1, help="K, Monte-Carlo batch compositions (default 1)")
  p.add_argument("--b", type=int, default=64, help="BatchNorm batch size (default 64)")
  cli.add_common_args(p, ["--no-progress"])


def available_models(names: list[str], model_preset: str) -> tuple[list[str], dict[str, str]]:
  """``(models that build, {skipped model: why})``; unknown names raise at once."""
  ok, skipped = [], {}
  for name in names:
    model_registry.check_name(name)
    try:
      model_registry.make_model(name, model_preset, model_registry.input_shape(name, (32, 32, 1)))
      ok.append(name)
    except (ImportError, AttributeError) as e:
      skipped[name] = f"not importable yet ({type(e).__name__}: {str(e)[:120]})"
  if not ok:
    raise InvalidInputError(f"none of the models {names} can be built: {skipped}.")
  return ok, skipped


def load_for(model_name: str, args, s: cli.Setup) -> pipeline.Sets:
  """The ID and OOD sets conformed to this model's input shape."""
  return cli.load_sets(args, s, [model_name], pipeline.split_list(args.ood))


def has_batchnorm(variables: dict) -> bool:
  return bool(jax.tree.leaves(variables.get("batch_stats", {})))


def run_meta(args, s: cli.Setup, t0: float, extra: dict) -> dict:
  return {"preset": args.preset, "seed": args.seed, "id": args.id, "k_importance": s.k,
          "bn_k": args.bn_k, "rounds_K": args.rounds, "b": args.b,
          "train_config": dataclasses.asdict(s.train_cfg), **extra, **cli.environment_meta(t0)}


def _markdown(title: str, command: str, rows: list[dict], notes: list[str], meta: dict) -> str:
  lines = [f"# {title}", "", "Command:", "", "```bash", command, "```", "",
           "Bits/dim of the discrete 8-bit data (lower = more likely); train mode = BatchNorm "
           "with the statistics of a batch of the same set; Delta = mean |S_{b,r1} - S_{b,r2}| "
           "in nats per image.", "",
           "| model | set | n | eval bpd | train bpd | train - eval | mean Delta |",
           "|---|---|---:|---:|---:|---:|---:|"]
  fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
  for r in rows:
    lines.append(f"| {r['model']} | {r['set']} | {r['n']} | {fmt(r['eval_bpd'])} | "
                 f"{fmt(r['train_bpd'])} | {fmt(r['train_minus_eval'])} | {fmt(r['delta_mean'], 2)} |")
  if notes:
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
  lines += ["", "## Run", ""] + [f"- **{k}**: `{json.dumps(v)}`" for k, v in meta.items()]
  return "\n".join(lines) + "\n"


def write_outputs(out: str, files: dict[str, str]) -> dict[str, str]:
  """Writes ``{name: text}`` into ``out`` (each via a temporary file and a rename)."""
  os.makedirs(out, exist_ok=True)
  paths = {}
  for name, text in files.items():
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
    paths[name] = path
  return paths


def set_rows(model_name: str, model, variables, sets: pipeline.Sets, args,
             s: cli.Setup) -> list[dict]:
  """One row per set (ID test first): eval bpd, train bpd, their gap and the mean Delta."""
  named = {f"{args.id} (ID test)": sets.test.x, **{n: v.x for n, v in sets.ood.items()}}
  bn = has_batchnorm(variables)
  kw = dict(seed=args.seed, progress=s.progress)
  nll = get_scorer("nll", k=s.k, **kw)
  nll_state = nll.fit(model, variables, None)
  if bn:
    bpd = get_scorer("bn_train_bpd", b=args.b, K=args.rounds, k=args.bn_k, **kw)
    bpd_state = bpd.fit(model, variables, None)
    delta = get_scorer("bn_mixed", b=args.b, K=args.rounds, k=args.bn_k, r1=args.r1, r2=args.r2,
                       **kw)
    delta_state = delta.fit(model, variables, sets.train.x)
  rows = []
  for set_name, x in named.items():
    ev = float(np.mean(pipeline.bits_per_dim(nll.score(nll_state, x), sets.hwc)))
    tr = float(np.mean(bpd.score(bpd_state, x))) if bn else None
    dm = float(np.mean(delta.score(delta_state, x))) if bn else None
    rows.append({"model": model_name, "set": set_name, "n": int(len(x)), "eval_bpd": ev,
                 "train_bpd": tr, "train_minus_eval": None if tr is None else tr - ev,
                 "delta_mean": dm})
  return rows


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  s = cli.setup(args)
  get_scorer("bn_mixed", b=args.b, K=args.rounds, r1=args.r1, r2=args.r2)   # bad b/r/K: now
  models, skipped = available_models(pipeline.split_list(args.models), s.preset.model_preset)
  notes = [f"{m}: skipped, {why}" for m, why in skipped.items()]
  out = cli.default_out(args, "table1")
  rows, info = [], {}
  for model_name in models:
    sets = load_for(model_name, args, s)
    model, result = cli.train_or_load(model_name, sets, s)
    if not has_batchnorm(result.variables):
      notes.append(f"{model_name}: no BatchNorm (no train mode), eval bpd only.")
    rows += set_rows(model_name, model, result.variables, sets, args, s)
    info[model_name] = {"train_steps": result.step, "resumed_from": result.resumed_from,
                        "input_shape": list(sets.hwc)}
  meta = run_meta(args, s, t0, {"ood": pipeline.split_list(args.ood), "models": info,
                                "skipped": skipped})
  title = f"Table 1 (Song et al.): bits/dim, eval vs train mode, {args.id} ({args.preset} preset)"
  md = _markdown(title, cli.command_line("table1", args), rows, notes, meta)
  files = write_outputs(out, {"results.json": json.dumps(rows, indent=1),
                              "meta.json": json.dumps(meta, indent=1), "report.md": md})
  return {"rows": rows, "meta": meta, "files": files, "out": out, "notes": notes}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.table1",
                              description=__doc__.split("\n\n")[0])
  add_args(p, DEFAULT_MODELS)
  p.add_argument("--r1", type=float, default=0.1, help="Delta's first test ratio (default 0.1)")
  p.add_argument("--r2", type=float, default=0.9, help="Delta's second test ratio (default 0.9)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
