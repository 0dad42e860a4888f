"""Throughput of every OOD score (ROSE's runtime comparison): images per second.

    python -m ood_jax.experiments.runtime                       # cpu preset, FashionMNIST
    python -m ood_jax.experiments.runtime --preset smoke --scores nll,input_complexity --n 64

Trains (or loads from the checkpoint cache) the model like ``table2``, then for each score:
``fit`` on the ID training set (timed: ``fit_seconds``, which includes any model the score
trains the first time, e.g. the likelihood-ratio background), one warm-up call on one
chunk (compilation, reported as ``warmup_seconds``), then ``score`` on ``--n`` ID test
images (timed: ``img_per_s``). Scores whose module is not in the tree yet, or that cannot
run on this model, are skipped with the reason. Writes ``report.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time

from ood_jax.errors import InvalidInputError, OODJaxError
from ood_jax.experiments import cli, pipeline
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer, known_scores


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.runtime",
                              description=__doc__.split("\n\n")[0])
  cli.add_common_args(p, ["--preset", "--id"])
  p.add_argument("--model", default="vae", help="model name (default vae)")
  p.add_argument("--scores", default=None, help="comma-separated scores, each 'name' or 'name[field=value,...]', e.g."
                      " 'rose[fisher=diag]' (default: every registered one)")
  p.add_argument("--n", type=int, default=256, help="ID test images scored per score (default 256)")
  cli.add_common_args(p, ["--data-dir", "--out", "--ckpt-dir", "--seed", "--train-steps", "--k",
                          "--no-progress"], helps={
      "--data-dir": None, "--out": cli.out_help("runtime"), "--no-progress": None})
  return p.parse_args(argv)


def split_entries(arg: str | None) -> list[str]:
  """Comma-separated score entries; commas inside ``[...]`` belong to the entry."""
  return [e.strip() for e in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", arg or "") if e.strip()]


def parse_entry(entry: str) -> tuple[str, dict]:
  """``'rose[fisher=diag,n_fisher=100]'`` -> ``('rose', {'fisher': 'diag', 'n_fisher': 100})``:
  a score name with field overrides (values read as Python literals, else strings)."""
  m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\[(.*)\])?\s*", entry)
  if not m:
    raise InvalidInputError(f"runtime: cannot read score entry {entry!r}; expected "
                            "name or name[field=value,...].")
  settings = {}
  for item in filter(None, (t.strip() for t in (m.group(2) or "").split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise InvalidInputError(f"runtime: {entry!r}: expected field=value, got {item!r}.")
    try:
      settings[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      settings[key.strip()] = value.strip()
  return m.group(1), settings


def time_score(entry: str, model, variables, sets: pipeline.Sets, n: int, *, k: int, seed: int,
               progress: bool, train_config, ckpt_dir: str | None,
               score_settings: dict | None = None) -> dict:
  """``{'score', 'status', 'fit_seconds', 'warmup_seconds', 'score_seconds', 'n',
  'img_per_s', 'note'}`` for one score entry (``name`` or ``name[field=value,...]``, over
  the preset's ``score_settings``); status 'skipped' with the reason in ``note``."""
  name, extra = parse_entry(entry)
  row = {"score": entry, "status": "ok", "fit_seconds": None, "warmup_seconds": None,
         "score_seconds": None, "n": 0, "img_per_s": None, "note": ""}
  try:
    kwargs = dict(k=k, seed=seed, progress=progress, train_config=train_config,
                  ckpt_dir=None if ckpt_dir is None else os.path.join(ckpt_dir, name))
    kwargs.update((score_settings or {}).get(name, {}))
    kwargs.update(extra)
    scorer = get_scorer(name, **kwargs)
  except ImportError as e:
    return {**row, "status": "skipped", "note": f"not available yet ({e})"}
  x = sets.test.x[:n]
  try:
    with pipeline.Timer() as tf:
      state = scorer.fit(model, variables, sets.train.x)
    warm = x[:min(len(x), scorer.images_per_chunk())]
    with pipeline.Timer() as tw:
      scorer.score(state, warm)
    with pipeline.Timer() as ts:
      scorer.score(state, x)
  except OODJaxError as e:
    return {**row, "status": "skipped", "note": f"{type(e).__name__}: {e}"}
  except NotImplementedError as e:
    return {**row, "status": "skipped", "note": f"not implemented: {e}"}
  return {**row, "fit_seconds": round(tf.seconds, 3), "warmup_seconds": round(tw.seconds, 3),
          "score_seconds": round(ts.seconds, 3), "n": len(x),
          "img_per_s": round(len(x) / max(ts.seconds, 1e-9), 2)}


def markdown(title: str, command: str, meta: dict, rows: list[dict]) -> str:
  lines = [f"# {title}", "", "Command:", "", "```bash", command, "```", "", "## Run", ""]
  lines += [f"- **{k}**: `{json.dumps(v)}`" for k, v in meta.items()]
  lines += ["", "## Throughput", "",
            "`img/s` = ID test images scored per second after one warm-up chunk (compilation"
            " excluded); `fit` = seconds of `fit` on the ID training set (includes training"
            " any model the score needs, unless cached).", "",
            "| score | img/s | n | fit (s) | warm-up (s) | note |", "|---|---:|---:|---:|---:|---|"]
  fmt = lambda v: "–" if v is None else f"{v:g}"
  for r in rows:
    lines.append(f"| {r['score']} | {fmt(r['img_per_s'])} | {r['n']} | {fmt(r['fit_seconds'])} |"
                 f" {fmt(r['warmup_seconds'])} | {r['note'].replace('|', '/')[:200]} |")
  return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  setup = cli.setup(args)
  model_registry.check_name(args.model)
  scores = split_entries(args.scores) or known_scores()
  for s in scores:
    name, _ = parse_entry(s)
    if name not in known_scores():
      get_scorer(name)          # UnknownNameError listing the known scores
  out = cli.default_out(args, "runtime")
  n_eval = max(args.n, 1)
  sets = pipeline.load_sets(args.id, ["noise"], [args.model], data_dir=args.data_dir,
                            n_train=setup.preset.n_train, n_eval=n_eval, seed=args.seed)
  model, result = cli.train_or_load(args.model, sets, setup)
  model_cfg = pipeline.model_train_config(args.model, setup.train_cfg, setup.preset.model_preset)
  rows = [time_score(s, model, result.variables, sets, n_eval, k=setup.k, seed=args.seed,
                     progress=setup.progress, train_config=model_cfg,
                     ckpt_dir=cli.scores_ckpt_dir(args.model, sets, setup),
                     score_settings=setup.preset.score_settings)
          for s in scores]
  meta = {"preset": args.preset, "id": args.id, "model": args.model, "k_importance": setup.k,
          "n": n_eval, "seed": args.seed, "train_steps": result.step,
          **cli.platform_meta(), "cpu_count": os.cpu_count(),
          "wall_seconds": cli.wall_seconds(t0)}
  command = cli.command_line("runtime", args)
  os.makedirs(out, exist_ok=True)
  files = {"report.md": os.path.join(out, "report.md"), "results.json": os.path.join(out, "results.json")}
  with open(files["results.json"], "w") as f:
    json.dump({"meta": meta, "command": command, "rows": rows}, f, indent=1)
  with open(files["report.md"], "w") as f:
    f.write(markdown(f"Score throughput, {args.model} on {args.id} ({args.preset} preset)",
                     command, meta, rows))
  return {"rows": rows, "meta": meta, "files": files, "out": out}


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
