"""Throughput of every OOD score (ROSE's runtime comparison): images per second.

    python -m ood_jax.experiments.runtime                       # cpu preset, FashionMNIST
    python -m ood_jax.experiments.runtime --preset smoke --scores nll,input_complexity --n 64
    python -m ood_jax.experiments.runtime --scores 'rose[fisher=diag],rose[fisher=ekfac]'

Trains (or loads from the checkpoint cache) each model like ``table2``, then for each score
entry (``name`` or ``name[field=value,...]``; default every registered score): ``fit`` on
the ID training set (timed: ``fit_seconds``, which includes any model the score trains the
first time, e.g. the likelihood-ratio background), one warm-up call on one chunk
(compilation, reported as ``warmup_seconds``), then ``score`` on ``--n`` ID test images
(timed: ``img_per_s``). A score that cannot run on a model (e.g. a BatchNorm score on Glow)
is a skipped row with the reason. Writes ``report.md`` and ``results.json``
(``{'meta', 'command', 'rows'}``). There are no OOD sets (no ``--ood``).
"""

from __future__ import annotations

import sys

from ood_jax.errors import OODJaxError
from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run
from ood_jax.scores import known_scores


def time_score(r: Run, entry: str, trained: pipeline.Trained, sets: pipeline.Sets, n: int) -> dict:
  """``{'model', 'score', 'status', 'fit_seconds', 'warmup_seconds', 'score_seconds', 'n',
  'img_per_s', 'note'}`` for one score entry; status 'skipped' with the reason in ``note``."""
  row = {"model": trained.name, "score": entry, "status": "ok", "fit_seconds": None,
         "warmup_seconds": None, "score_seconds": None, "n": 0, "img_per_s": None, "note": ""}
  scorer = r.scorer(entry, trained.name, trained.scores_ckpt_dir)
  x = sets.test.x[:n]
  try:
    with pipeline.Timer() as tf:
      state = scorer.fit(trained.model, trained.variables, sets.train.x)
    warm = x[:min(len(x), scorer.images_per_chunk())]
    with pipeline.Timer() as tw:
      scorer.score(state, warm)
    with pipeline.Timer() as ts:
      scorer.score(state, x)
  except OODJaxError as e:
    return {**row, "status": "skipped", "note": f"{type(e).__name__}: {e}"}
  return {**row, "fit_seconds": round(tf.seconds, 3), "warmup_seconds": round(tw.seconds, 3),
          "score_seconds": round(ts.seconds, 3), "n": len(x),
          "img_per_s": round(len(x) / max(ts.seconds, 1e-9), 2)}


def markdown(rows: list[dict]) -> str:
  lines = ["## Throughput", "",
           "`img/s` = ID test images scored per second after one warm-up chunk (compilation"
           " excluded); `fit` = seconds of `fit` on the ID training set (includes training"
           " any model the score needs, unless cached).", "",
           "| model | score | img/s | n | fit (s) | warm-up (s) | note |",
           "|---|---|---:|---:|---:|---:|---|"]
  fmt = lambda v: "–" if v is None else f"{v:g}"
  for x in rows:
    lines.append(f"| {x['model']} | {x['score']} | {fmt(x['img_per_s'])} | {x['n']} |"
                 f" {fmt(x['fit_seconds'])} | {fmt(x['warmup_seconds'])} |"
                 f" {x['note'].replace('|', '/')[:200]} |")
  return "\n".join(lines)


def run(r: Run) -> Result:
  n = max(int(r.options["n"]), 1)
  by_model = pipeline.sets_for(r, oods=["noise"], n_eval=n)
  rows, info = [], {}
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    rows += [time_score(r, entry, trained, sets, n) for entry in r.scores]
    info[name] = trained.meta()
  meta = {**r.settings_meta(), "n": n, "models": info}
  return Result(title=f"Score throughput, {', '.join(r.models)} on {r.id} ({r.preset} preset)",
                meta=meta, results={"meta": meta, "command": r.command, "rows": rows},
                sections=[markdown(rows)])


EXPERIMENT = cli.Experiment(
    "runtime", run, description=__doc__.split("\n\n")[0],
    defaults={"scores": ",".join(known_scores()), "ood": ""}, omit=("--ood",),
    options=(cli.option("--n", type=int, default=256,
                        help="ID test images scored per score (default 256)"),))
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
