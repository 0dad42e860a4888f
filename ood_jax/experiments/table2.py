"""OOD detection table (Song et al. Table 2 / ROSE Table 2 layout).

    python -m ood_jax.experiments.table2                       # cpu preset, FashionMNIST
    python -m ood_jax.experiments.table2 --preset smoke --out runs/smoke
    python -m ood_jax.experiments.table2 --id cifar10 --ood celeb_a,noise,constant
    python -m ood_jax.experiments.table2 --models realnvp --model-args mask=cycle --preset smoke

Trains (or reloads from the checkpoint cache, ``--ckpt-dir``) each model on the in-distribution
training split, scores the ID test split and every OOD set, and writes ``report.md``,
``results.json`` (one row per model x score x OOD set), ``meta.json`` and PNG histograms
and ROC curves into ``--out``. OOD is the positive class; higher score = more OOD.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run


def run(r: Run) -> Result:
  by_model = pipeline.sets_for(r)
  rows, samples, model_meta, raw = [], {}, {}, {}
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    with pipeline.Timer() as ts:
      vals = pipeline.score_all(r, trained, sets)
    raw[name] = vals
    rows += pipeline.metric_rows(r.id, name, vals)
    samples.update(pipeline.samples_for(r.id, name, vals, sets.hwc))
    info = {"input_shape": list(sets.hwc), **trained.meta(),
            "train_config": dataclasses.asdict(trained.config),
            "score_seconds": round(ts.seconds, 1)}
    if "nll" in vals:
      info["bits_per_dim_mean"] = {
          ("id_test" if n == "__id__" else n): round(float(np.mean(pipeline.bits_per_dim(s, sets.hwc))), 4)
          for n, s in vals["nll"].items()}
    model_meta[name] = info
  first = by_model[r.models[0]]
  meta = {**r.settings_meta(), **pipeline.shapes_meta(by_model), "n_train": len(first.train.x),
          "n_id_test": len(first.test.x), "models": model_meta,
          "data_sources": pipeline.data_sources(first)}
  return Result(title=f"OOD detection, {r.id} in-distribution ({r.preset} preset)", meta=meta,
                rows=rows, samples=samples, arrays=pipeline.score_arrays(r.id, raw, first))


EXPERIMENT = cli.Experiment("table2", run, description=__doc__.split("\n\n")[0])
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
