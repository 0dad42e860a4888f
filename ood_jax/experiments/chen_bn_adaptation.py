"""Chen's thesis, 3.3.5 (Fig. 3.7): BatchNorm in train mode in the encoder, the decoder or both.

    python -m ood_jax.experiments.chen_bn_adaptation                   # cpu preset
    python -m ood_jax.experiments.chen_bn_adaptation --preset smoke --out runs/chen_bn_smoke
    python -m ood_jax.experiments.chen_bn_adaptation --models gan_vae --b 64

For every available pair of ``--pairs`` (``chen_common``) and every model of ``--models``
(default the categorical VAE, the Gaussian-decoder VAE and the GAN-VAE; trained or loaded
from the cache shared with the other Chen experiments) scores the ID test split and every
OOD set with the IWAE log-likelihood (``k`` = the preset's importance samples, the same for
every variant) under four BatchNorm settings:

* ``eval``: every BatchNorm layer at its running statistics (``nll``);
* ``encoder``: the encoder's BatchNorm normalises with the statistics of the scored batch,
  the decoder at its running statistics (``bn_enc_train_bpd``, the thesis' adaptation);
* ``decoder``: the reverse (``bn_train_bpd`` with ``parts='decoder'``);
* ``both``: every BatchNorm layer in train mode (``bn_train_bpd``, Song et al.'s train mode).

Batches are made of the scored set alone, shuffled, ``b`` (``--b``, default 64) images each,
as ``bn_train_bpd``: a set's values depend on the set scored with it. Reported: mean bits/dim
of ID and OOD per variant, AUROC of every variant (OOD positive), the histograms per variant
and a reconstruction grid per variant (the first images of each set, reconstructed inside a
batch of ``b`` of their own set). Expected (thesis, figures only): "the key to improving OoD
likelihood is to adjust that of the encoder", and it "does not affect ID data much".
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from ood_jax.experiments import availability, bn_settings, chen_common, cli, figures, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

VARIANTS = {"eval": ("nll", {}), "encoder": ("bn_enc_train_bpd", {}),
            "decoder": ("bn_train_bpd", {"parts": "decoder"}), "both": ("bn_train_bpd", {})}
TRAIN_ARG = {"eval": False, "encoder": {"encoder": True}, "decoder": {"decoder": True},
             "both": True}
N_GRID = 8


def check(r: Run) -> None:
  chen_common.check_run(r, chen_common.LIKELIHOOD_MODELS, "BatchNorm variants of the likelihood are defined for the likelihood models only")
  chen_common.check_b(r)
  for v in VARIANTS:                # every scorer's settings, before any training
    variant_scorer(r, v, r.models[0])


def variant_base(r: Run, variant: str) -> dict:
  """The scorer settings of ``variant``: ``k`` = the run's importance samples (``--k``) in
  every variant, one shuffling round; ``--b``, ``--rounds`` and ``--bn-k`` override."""
  score, extra = VARIANTS[variant]
  if score == "nll":
    return {"k": r.k}
  return {"k": r.k, "K": 1, **bn_settings.bn_settings(r), **extra}


def variant_scorer(r: Run, variant: str, model: str):
  return r.scorer(VARIANTS[variant][0], model, base=variant_base(r, variant))


def bits(score_name: str, s: np.ndarray, hwc) -> np.ndarray:
  """bits/dim from a score: ``nll`` is nats per image, the BN scores already bits/dim."""
  return chen_common.nats_to_bpd(s, hwc) if score_name == "nll" else np.asarray(s, np.float64)


def recon_in_mode(trained, x: np.ndarray, train, b: int) -> np.ndarray:
  """Reconstructions of ``x[:N_GRID]`` with BatchNorm per ``train``, inside one batch made of
  the first ``b`` images of ``x`` (its statistics are that batch's)."""
  if train is False:
    return chen_common.reconstruct(trained, x[:N_GRID])
  m, v = trained.model, trained.variables
  out, _ = m.apply(v, x[:b], train, method="reconstruct", mutable=["batch_stats"])
  return np.clip(np.round(np.asarray(jax.device_get(out))[:N_GRID] * 255), 0, 255).astype(np.uint8)


def run(r: Run) -> Result:
  runs, runnable, skipped = chen_common.runs_for(r)
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}
  b = chen_common.batch_size(r)
  rows, table, figs, info = [], [], {}, {}
  for ri in runs:
    for name in chen_common.models_for(r, ri, by_id[ri.id]):
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      named = {"__id__": sets.test.x, **{o: s.x for o, s in sets.ood.items()}}
      panels, grid, seconds = {}, {}, {}
      for variant in VARIANTS:
        scorer = variant_scorer(ri, variant, name)
        with pipeline.Timer() as ts:
          state = scorer.fit(trained.model, trained.variables, sets.train.x)
          vals = {k: bits(VARIANTS[variant][0], scorer.score(state, x), sets.hwc)
                  for k, x in named.items()}
        seconds[variant] = round(ts.seconds, 1)
        for row in pipeline.metric_rows(ri.id, name, {variant: vals}):
          rows.append(row)
        for k, v in vals.items():
          table.append({"train": ri.id, "model": name, "variant": variant,
                        "set": f"{ri.id} test (ID)" if k == "__id__" else k,
                        "bpd_mean": round(float(np.mean(v)), 4), "n": int(v.size)})
        panels[f"{variant}"] = {("ID " + ri.id if k == "__id__" else k): -v for k, v in vals.items()}
        mode = TRAIN_ARG[variant]
        grid[f"{ri.id} ({variant})"] = recon_in_mode(trained, sets.test.x, mode, b)
        for o, s in sets.ood.items():
          grid[f"{o} ({variant})"] = recon_in_mode(trained, s.x, mode, b)
      label = f"{name}_{ri.id}"
      figs[f"hist_{label}.png"] = functools.partial(
          figures.histograms, panels=panels, xlabel="log-likelihood per dimension (bits)",
          title=f"{name} on {ri.id}: BatchNorm train mode per part (Fig. 3.7)")
      originals = {f"{ri.id} test": sets.test.x[:N_GRID],
                   **{o: s.x[:N_GRID] for o, s in sets.ood.items()}}
      figs[f"recon_{label}.png"] = functools.partial(
          figures.image_grid, rows={**originals, **grid},
          title=f"{name} on {ri.id}: reconstructions per BatchNorm variant")
      info[label] = {**chen_common.backbone_meta(trained), "score_seconds": seconds,
                     "scorers": {v: ri.scorer_meta(VARIANTS[v][0], base=variant_base(ri, v))
                                 for v in VARIANTS}}
  lines = ["## AUROC (OOD positive) per BatchNorm variant", "",
           "| train | model | OOD | " + " | ".join(VARIANTS) + " |",
           "|---|---|---|" + "---:|" * len(VARIANTS)]
  keyed = {(x["id"], x["model"], x["ood"], x["score"]): x["auroc"] for x in rows}
  for (i, m, o) in dict.fromkeys((x["id"], x["model"], x["ood"]) for x in rows):
    lines.append(f"| {i} | {m} | {o} | " +
                 " | ".join(f"{keyed[(i, m, o, v)]:.3f}" for v in VARIANTS) + " |")
  lines += ["", "## Mean bits/dim per set and variant", "",
            "| train | model | set | " + " | ".join(VARIANTS) + " |",
            "|---|---|---|" + "---:|" * len(VARIANTS)]
  means = {(t["train"], t["model"], t["set"], t["variant"]): t["bpd_mean"] for t in table}
  for (i, m, s) in dict.fromkeys((t["train"], t["model"], t["set"]) for t in table):
    lines.append(f"| {i} | {m} | {s} | " +
                 " | ".join(f"{means[(i, m, s, v)]:.3f}" for v in VARIANTS) + " |")
  lines += ["", "Thesis (Fig. 3.7, figures only): the encoder's train mode raises the OOD "
            "bits/dim (lower likelihood) and leaves ID about where it was; the decoder's alone "
            "matters less for the likelihood.",
            f"Train-mode batches: b = {b} images of the scored set; k = {r.k} importance samples "
            "in every variant (the thesis: K = 5 and 50).", "", chen_common.GAUSSIAN_FLOOR_NOTE]
  lines += chen_common.colour_note(r, by_id) + availability.skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "data_sources": chen_common.data_sources(runs, by_id)}
  return Result(title=f"Chen 3.3.5: BatchNorm adaptation per part ({r.preset} preset)",
                meta=meta, rows=rows, sections=["\n".join(lines)],
                json_files={"bpd.json": table}, figures=figs)


EXPERIMENT = cli.Experiment(
    "chen_bn_adaptation", run, description=__doc__.split("\n\n")[0],
    defaults={"models": ",".join(chen_common.LIKELIHOOD_MODELS), "scores": "nll"},
    omit=("--id", "--ood", "--scores"),
    options=(cli.option("--pairs", default=chen_common.DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {chen_common.DEFAULT_PAIRS})"),
             cli.option("--colour-models", default=None, help=chen_common.COLOUR_OPTION_HELP),
             *bn_settings.OPTIONS),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
