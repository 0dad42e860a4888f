"""Delta's AUROC as the second test ratio r2 varies, r1 -> 0 (Song et al. Table 5).

    python -m ood_jax.experiments.table5                         # cpu preset, VAE, FashionMNIST
    python -m ood_jax.experiments.table5 --r2 0.15,0.3,0.5,0.9 --models vae,realnvp

``Delta_{b,r1,r2}(x) = |S_{b,r1}(x) - S_{b,r2}(x)|`` with ``r1 = --r1`` (default 0: every
test sample alone among b - 1 training samples, m = 1) and each ``r2`` of ``--r2``;
S_{b,r1} is computed once per set and shared by every r2. For each model trained on the
ID split (checkpoints shared with ``table2``), AUROC / AUPRC of Delta between the ID test
set and each OOD set (OOD positive). Writes ``report.md`` (columns = ``delta_r2=<r2>``),
``results.json`` and ``meta.json`` through ``report.write_report`` (no figures).
Train-mode statistics use ``--bn-k`` importance samples and ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline, table1
from ood_jax.scores import get_scorer

DEFAULT_R2 = "0.15,0.3,0.5,0.9"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m ood_jax.experiments.table5",
                              description=__doc__.split("\n\n")[0])
  table1.add_args(p, "vae")
  p.add_argument("--r1", type=float, default=0.0,
                 help="first test ratio (default 0: one test sample per batch)")
  p.add_argument("--r2", default=DEFAULT_R2, help=f"comma-separated second ratios (default {DEFAULT_R2})")
  return p.parse_args(argv)


def ratios(arg: str) -> list[float]:
  try:
    r2s = [float(v) for v in pipeline.split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--r2: expected comma-separated numbers in [0, 1], got {arg!r}.") from None
  if not r2s:
    raise InvalidInputError("--r2: no ratios given.")
  return r2s


def deltas(scorer, state, x: np.ndarray, r1: float, r2s: list[float]) -> dict[float, np.ndarray]:
  """``{r2: Delta_{b,r1,r2}(x)}``, nats; S_{b,r1} once (stream 0), r2 number i on stream i+1."""
  s1 = scorer.mixed_log_prob(state, x, r1, stream=0)
  return {r2: np.abs(s1 - scorer.mixed_log_prob(state, x, r2, stream=i + 1))
          for i, r2 in enumerate(r2s)}


def run(args: argparse.Namespace) -> dict:
  t0 = time.perf_counter()
  s = cli.setup(args)
  r2s = ratios(args.r2)
  for r2 in r2s:
    get_scorer("bn_mixed", b=args.b, K=args.rounds, r1=args.r1, r2=r2)   # bad b/r/K: now
  models, skipped = table1.available_models(pipeline.split_list(args.models), s.preset.model_preset)
  notes = {m: why for m, why in skipped.items()}
  rows, info = [], {}
  for model_name in models:
    sets = table1.load_for(model_name, args, s)
    model, result = cli.train_or_load(model_name, sets, s)
    if not table1.has_batchnorm(result.variables):
      notes[model_name] = "no BatchNorm (no train mode): skipped"
      continue
    scorer = get_scorer("bn_mixed", b=args.b, K=args.rounds, k=args.bn_k, r1=args.r1,
                        r2=max(r2s), seed=args.seed, progress=s.progress)
    state = scorer.fit(model, result.variables, sets.train.x)
    d_id = deltas(scorer, state, sets.test.x, args.r1, r2s)
    for ood_name, ood in sets.ood.items():
      d_ood = deltas(scorer, state, ood.x, args.r1, r2s)
      for r2 in r2s:
        rows.append({"id": args.id, "model": model_name, "score": f"delta_r2={r2:g}",
                     "ood": ood_name, **metrics.ood_metrics(d_id[r2], d_ood[r2])})
    info[model_name] = {"train_steps": result.step, "resumed_from": result.resumed_from,
                        "input_shape": list(sets.hwc),
                        "mean_delta_id_test": {f"{r2:g}": float(np.mean(d_id[r2])) for r2 in r2s}}
  if not rows:
    raise InvalidInputError(f"no model could be scored: {notes}.")
  out = cli.default_out(args, "table5")
  meta = table1.run_meta(args, s, t0, {"r1": args.r1, "r2": r2s, "models": info, "notes": notes})
  return cli.write_run_report(
      "table5", args, out, title=f"Table 5 (Song et al.): Delta AUROC vs r2, r1 = {args.r1:g}, "
                                f"{args.id} ({args.preset} preset)",
      rows=rows, meta=meta, score_samples={})


def main(argv=None) -> int:
  return cli.run_main(run, parse_args, argv)


if __name__ == "__main__":
  sys.exit(main())
