"""Nalisnick et al. App. B (Fig. 6): the reverse direction is not fooled (asymmetry).

    python -m ood_jax.experiments.nalisnick_asymmetry                 # cpu preset
    python -m ood_jax.experiments.nalisnick_asymmetry --preset smoke --out runs/n_asym_smoke

Trains Glow (``--models``; model preset ``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at
``paper``) on the sets the main experiments use as OOD (default MNIST -> FashionMNIST and SVHN
-> CIFAR-10, the paper's, and CelebA -> CIFAR-10, a local pair) and scores the reverse
direction: mean bits/dim of the training data, the held-out ID data and the OOD set, NLL
AUROC (OOD positive) and the histograms of Fig. 6. Expected (paper): "the model trained on
SVHN (MNIST) is able to assign lower likelihood to CIFAR-10 (FashionMNIST)".

Where the ID set has no training split here (MNIST and CelebA have only their test split), it
is split into two fixed halves (``kirichenko_negative.split_halves``: a permutation from
``np.random.default_rng(0)``, independent of ``--seed``): the model trains on the first and is
evaluated on the second (said in the report). To give the model about as many optimiser steps
as the forward direction's (60k FashionMNIST images against 5k MNIST ones), the training half
is seen ``--repeat`` (12) times the preset's epochs; step budgets given as steps (the
``nalisnick`` recipe's 100K, ``--train-steps``, smoke) are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import numpy as np

from ood_jax import data
from ood_jax.data import ImageSet
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline
from ood_jax.experiments.kirichenko_negative import SPLIT_SEED, split_halves
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

DEFAULT_PAIRS = "mnist:fashion_mnist,svhn:cifar10,celeb_a:cifar10"
# Fig. 1 (bottom): Glow trained on MNIST / SVHN, bits/dim of their own test split.
PAPER_TEST_BPD = {"mnist": 1.262, "svhn": 2.057}


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])
  if int(r.options["repeat"]) < 1:
    raise InvalidInputError(f"--repeat must be >= 1, got {r.options['repeat']}.")


def plan(pairs, data_dir):
  """Pairs whose ID set has a test split (its training split, or a half of its test split,
  trains) and whose OOD set has a test split."""
  def missing(name, split):
    why = availability.missing(name, split, data_dir)
    if why and split == "train":
      return availability.missing(name, "test", data_dir)
    return why
  return availability.plan(pairs, missing)


def id_sets(ri: Run, hwc) -> tuple[ImageSet, ImageSet, bool]:
  """``(train, held-out, halved)``: the ID set's train / test splits, or two halves of its
  test split where it has no training split; conformed to ``hwc``."""
  if availability.missing(ri.id, "train", ri.data_dir) is None:
    tr = data.load(ri.id, "train", data_dir=ri.data_dir, n=ri.n_train, seed=ri.seed)
    te = data.load(ri.id, "test", data_dir=ri.data_dir, n=ri.n_eval, seed=ri.seed + 1)
    return (dataclasses.replace(tr, x=data.conform(tr.x, hwc)),
            dataclasses.replace(te, x=data.conform(te.x, hwc)), False)
  s = data.load(ri.id, "test", data_dir=ri.data_dir, seed=ri.seed + 1)
  x = data.conform(s.x, hwc)
  a, b = split_halves(x, SPLIT_SEED)
  a = a[:ri.n_train] if ri.n_train else a
  b = b[:ri.n_eval] if ri.n_eval else b
  source = f"{s.source}: fixed half split (rng {SPLIT_SEED}) of its {len(x)} test images"
  return (ImageSet(name=ri.id, split="test[train half]", x=x[a], source=source),
          ImageSet(name=ri.id, split="test[held-out half]", x=x[b], source=source), True)


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  repeat = int(r.options["repeat"])
  table, rows, figs, model_meta = [], [], {}, {}
  for id_name, oods in runnable:
    ri = r.for_id(id_name, oods)
    like = tuple(data.load(id_name, "test", data_dir=r.data_dir, n=1, seed=r.seed).x.shape[1:])
    for name in ri.models:
      hwc = ri.make_model(name, like).image_shape
      train_set, held_out, halved = id_sets(ri, hwc)
      ood = {}
      for o in oods:
        s = data.load(o, "test", data_dir=r.data_dir, n=r.n_eval, seed=r.seed + 2, like=like)
        ood[o] = dataclasses.replace(s, x=data.conform(s.x, hwc))
      sets = pipeline.Sets(hwc=tuple(hwc), train=train_set, test=held_out, ood=ood)
      config = ri.train_configs[name]
      if halved and config.num_steps is None:
        config = dataclasses.replace(config, epochs=config.epochs * repeat)
      trained = pipeline.train_or_load(ri, name, sets, config=config,
                                       label="half" if halved else "")
      vals = pipeline.score_all(ri, trained, sets, scores=["nll"], base={"k": 1})["nll"]
      scorer = ri.scorer("nll", name, trained.scores_ckpt_dir, base={"k": 1})
      n = min(len(sets.test.x), len(sets.train.x))
      train_nll = scorer.score(scorer.fit(trained.model, trained.variables), sets.train.x[:n])
      rows += pipeline.metric_rows(id_name, name, {"nll": vals})
      bpd = {"id_train": pipeline.bits_per_dim(train_nll, hwc),
             "id_test": pipeline.bits_per_dim(vals["__id__"], hwc),
             **{o: pipeline.bits_per_dim(vals[o], hwc) for o in oods}}
      for o in oods:
        row = next(x for x in rows[::-1] if x["ood"] == o and x["model"] == name)
        table.append({"train": id_name, "model": name, "ood": o, "halved": halved,
                      "n_train": len(train_set.x), "train_steps": trained.result.step,
                      "bpd_id_train": round(float(bpd["id_train"].mean()), 4),
                      "bpd_id_test": round(float(bpd["id_test"].mean()), 4),
                      "bpd_ood": round(float(bpd[o].mean()), 4),
                      "paper_bpd_id_test": PAPER_TEST_BPD.get(id_name) if name == "glow" else None,
                      "auroc": round(row["auroc"], 4)})
      test_label = f"{id_name} {'held-out half' if halved else 'test'}"
      panels = {f"{name} on {id_name}: {o}": {f"{id_name} train": -bpd["id_train"],
                                              test_label: -bpd["id_test"], o: -bpd[o]}
                for o in oods}
      figs[f"hist_{name}_{id_name}.png"] = functools.partial(
          figures.histograms, panels=panels, xlabel="log-likelihood per dimension (bits)",
          title=f"{name} trained on {id_name} (Fig. 6)")
      model_meta[f"{name}_{id_name}"] = {**trained.meta(), "train_config": dict(vars(config)),
                                         "data_sources": pipeline.data_sources(sets)}
  lines = ["## The reverse direction (App. B, Fig. 6)", "",
           "| train | model | OOD | train images | steps | bits/dim ID train | ID held-out | OOD | "
           "paper ID test | AUROC | OOD less likely on average |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for t in table:
    p = "–" if t["paper_bpd_id_test"] is None else f"{t['paper_bpd_id_test']:.3f}"
    lines.append(f"| {t['train']}{' (half)' if t['halved'] else ''} | {t['model']} | {t['ood']} | "
                 f"{t['n_train']} | {t['train_steps']} | {t['bpd_id_train']:.3f} | "
                 f"{t['bpd_id_test']:.3f} | {t['bpd_ood']:.3f} | {p} | {t['auroc']:.3f} | "
                 f"{'yes' if t['bpd_ood'] > t['bpd_id_test'] else 'no'} |")
  lines += ["", "Paper (Fig. 6, histograms only): trained on MNIST (SVHN), Glow gives FashionMNIST "
            "(CIFAR-10) the lower likelihood. '(half)': the ID set has no training split here; "
            "the model trained on one half of its test split and is evaluated on the other."]
  lines += availability.skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped), "models": model_meta,
          "repeat": repeat}
  return Result(title=f"Nalisnick et al. App. B: asymmetry ({r.preset} preset)", meta=meta,
                rows=rows, sections=["\n".join(lines)], json_files={"asymmetry.json": table},
                figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_asymmetry", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "glow", "scores": "nll"}, omit=("--id", "--ood", "--scores"),
    model_presets={"cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--repeat", type=int, default=12,
                        help="epochs multiplier for an ID set trained on half its test split")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
