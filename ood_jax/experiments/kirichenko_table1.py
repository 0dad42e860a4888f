"""Kirichenko et al. App. F (Table 1, Fig. 6): baseline NLL AUROC (%) of RealNVP and Glow.

    python -m ood_jax.experiments.kirichenko_table1                  # cpu preset
    python -m ood_jax.experiments.kirichenko_table1 --preset smoke --out runs/k_table1_smoke
    python -m ood_jax.experiments.kirichenko_table1 --preset paper   # App. E architectures, recipes

For every (train set -> OOD set) pair of the paper's Table 1 whose data exists here, trains
RealNVP and Glow on the train split (model preset ``kirichenko`` at ``paper``,
``kirichenko_cpu`` at ``cpu``: App. E's optimiser, learning rate, batch size and weight decay;
see ``realnvp.py`` / ``glow.py``), scores the ID test split, a same-sized subset of the ID
training split and every OOD set by negative log-likelihood (one dequantisation draw, as the
reference code; ``--score-args nll.k=K`` for the K-draw bound), and reports AUROC (%, OOD
positive) beside the paper's, mean bits/dim per split (Fig. 6: train and test are close) and
the histograms. Pairs whose train or OOD data is absent here (SVHN, notMNIST, the MNIST and
CelebA training splits) are listed with the reason.
"""

from __future__ import annotations

import sys

import numpy as np

from ood_jax.data.registry import canonical_name
from ood_jax.experiments import availability, cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

# Table 1 (AUROC %, RealNVP / Glow). The RealNVP SVHN -> CIFAR-10 cell is not legible in
# our copy of the text (None).
PAPER = {
    ("celeb_a", "cifar10"): (67.7, 69.1), ("celeb_a", "svhn"): (6.3, 6.4),
    ("cifar10", "celeb_a"): (56.0, 52.9), ("cifar10", "svhn"): (6.0, 5.5),
    ("svhn", "celeb_a"): (99.0, 99.9), ("svhn", "cifar10"): (None, 99.1),
    ("mnist", "fashion_mnist"): (99.99, 99.96), ("mnist", "not_mnist"): (99.99, 100.0),
    ("fashion_mnist", "mnist"): (10.8, 13.3), ("fashion_mnist", "not_mnist"): (72.1, 80.2),
}
PAPER_MODELS = ("realnvp", "glow")
# NLL with one dequantisation draw, as the reference code scores (``--score-args nll.k=K``
# for the importance-weighted bound over K draws).
NLL_BASE = {"k": 1}
DEFAULT_PAIRS = ("fashion_mnist:mnist+not_mnist,cifar10:celeb_a+svhn,celeb_a:cifar10+svhn,"
                 "svhn:celeb_a+cifar10,mnist:fashion_mnist+not_mnist")


def paper_auroc(id_name: str, ood: str, model: str):
  """The paper's Table 1 AUROC (%) for a pair and model, or None."""
  vals = PAPER.get((canonical_name(id_name), canonical_name(ood)))
  if vals is None or model not in PAPER_MODELS:
    return None
  return vals[PAPER_MODELS.index(model)]


def plan(pairs, data_dir) -> tuple[list[tuple[str, list[str]]], list[dict]]:
  """``availability.plan`` of local image sets: a pair runs when the ID train and test splits
  and the OOD test split (a transform: of the ID test set) load here."""
  return availability.plan(pairs, lambda n, split: availability.missing(n, split, data_dir),
                           ood_name=pipeline.ood_spec)


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()


def _fmt(v) -> str:
  return "–" if v is None else f"{v:.1f}"


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  rows, samples, model_meta, table = [], {}, {}, []
  runs = [r.for_id(id_name, oods) for id_name, oods in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}       # every model built and checked first
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(ri, trained, sets, scores=["nll"], base=NLL_BASE)
        scorer = ri.scorer("nll", name, base=NLL_BASE)
        state = scorer.fit(trained.model, trained.variables, sets.train.x)
        n = min(len(sets.test.x), len(sets.train.x))
        train_nll = scorer.score(state, sets.train.x[:n])
      label = f"{name}_{ri.id}"
      rows += pipeline.metric_rows(ri.id, name, vals)
      samples.update(pipeline.samples_for(ri.id, label, vals, sets.hwc))
      bpd = {"id_train": float(np.mean(pipeline.bits_per_dim(train_nll, sets.hwc)))}
      bpd.update({("id_test" if k == "__id__" else k): float(np.mean(pipeline.bits_per_dim(v, sets.hwc)))
                  for k, v in vals["nll"].items()})
      model_meta[label] = {**trained.meta(), "train_config": dict(vars(trained.config)),
                           "bits_per_dim_mean": {k: round(v, 4) for k, v in bpd.items()},
                           "score_seconds": round(ts.seconds, 1)}
      for row in rows[-len(sets.ood):]:
        table.append({"train": ri.id, "ood": row["ood"], "model": name,
                      "auroc_percent": round(100 * row["auroc"], 2),
                      "paper_auroc_percent": paper_auroc(ri.id, row["ood"], name),
                      "bpd_id_train": round(bpd["id_train"], 3), "bpd_id_test": round(bpd["id_test"], 3),
                      "bpd_ood": round(bpd[row["ood"]], 3)})
  lines = ["## Table 1: NLL AUROC (%), ours beside the paper's", "",
           "| train | OOD | model | AUROC ours | AUROC paper | bits/dim ID train | ID test | OOD |",
           "|---|---|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['train']} | {t['ood']} | {t['model']} | {t['auroc_percent']:.1f} | "
                 f"{_fmt(t['paper_auroc_percent'])} | {t['bpd_id_train']:.3f} | "
                 f"{t['bpd_id_test']:.3f} | {t['bpd_ood']:.3f} |")
  if skipped:
    lines += ["", "Pairs of the paper's table not run here:", ""]
    for s in skipped:
      for m in r.models:
        p = paper_auroc(s["id"], s["ood"], m)
        lines.append(f"* {s['id']} -> {s['ood']} ({m}, paper {_fmt(p)}): {s['reason']}.")
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models": model_meta,
          "data_sources": {ri.id: pipeline.data_sources(by_id[ri.id][ri.models[0]]) for ri in runs}}
  return Result(title=f"Kirichenko et al. Table 1: baseline NLL AUROC ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, sections=["\n".join(lines)],
                json_files={"table1.json": table})


EXPERIMENT = cli.Experiment(
    "kirichenko_table1", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp,glow", "scores": "nll"}, omit=("--id", "--ood", "--scores"),
    model_presets={"cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help="train:ood+ood pairs, comma-separated (default: the paper's Table 1)"),),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
