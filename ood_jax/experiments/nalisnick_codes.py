"""Nalisnick et al. App. H, Fig. 11: CV-Glow code statistics, in-distribution vs OOD.

    python -m ood_jax.experiments.nalisnick_codes                     # cpu preset
    python -m ood_jax.experiments.nalisnick_codes --preset smoke --out runs/n_codes_smoke

For every pair of ``--pairs`` (default FashionMNIST -> MNIST and CIFAR-10 -> CelebA, SVHN
where present; it is not in this checkout) trains (or loads from the checkpoint cache shared
with the other Nalisnick experiments) the flows of ``--models`` (default ``cv_glow``; model
preset ``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at ``paper``, ``smoke`` at ``smoke``) on the
ID training split, and computes the codes (``code_stats``: the standardised latents of
``encode_unit``, every level joined, ``D = H W C`` per image, one dequantisation draw) of the
first ``--n-eval`` images of the ID training split, of the ID test split and of each OOD set.
Reported per set (Fig. 11's three columns): histograms of the per-dimension code means
``mu_d``, of the per-dimension standard deviations ``sigma_d`` (``1/(N-1)``) and of the
per-image norms ``|z_n| / sqrt(D)``, overlaid, with a draw of ``N x D`` standard normals for
reference (what the prior says: ``mu_d`` about 0 with spread ``1/sqrt(N)``, ``sigma_d`` and
the norms about 1); a table of their means; ``codes.json``. Expected (paper, figures only):
the OOD set that gets the higher likelihood (MNIST, SVHN) has codes of smaller spread (smaller
``sigma_d`` and norms) than the ID data.

Cost at ``cpu``: the training of the two ``cv_glow`` models (shared with ``nalisnick_graying``
and the other Nalisnick experiments through the checkpoint cache, nothing once cached) plus a
few seconds of encoding.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from ood_jax.experiments import availability, cli, code_stats, pipeline
from ood_jax.experiments.kirichenko_couplings import check_flows, run_slug, skipped_lines
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

DEFAULT_PAIRS = "fashion_mnist:mnist,cifar10:celeb_a+svhn"
PRIOR = "N(0, I) draw"


def check(r: Run) -> None:
  check_flows(r.models)
  availability.parse_pairs(r.options["pairs"])


def prior_stats(n: int, d: int, seed: int) -> dict[str, np.ndarray]:
  """Code statistics of ``n x d`` standard normals (the prior's sampling spread)."""
  z = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
  return code_stats.code_statistics(z)


def summary_lines(rows: list[dict]) -> list[str]:
  lines = ["## Code statistics (CV-Glow codes, D = H W C per image)", "",
           "Means over the D dimensions of mu_d (and their spread) and of sigma_d, and over the "
           "N images of |z_n| / sqrt(D). Under the prior: mu_d about 0 (spread 1/sqrt(N)), "
           "sigma_d and the norms about 1. Paper (Fig. 11, histograms only): the OOD set with "
           "the higher likelihood has codes of smaller spread.", "",
           "| train | model | set | N | D | mean mu_d | std of mu_d | mean sigma_d | "
           "mean \\|z\\|/sqrt(D) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for s in rows:
    lines.append(f"| {s['id']} | {s['model']} | {s['set']} | {s['N']} | {s['D']} | "
                 f"{s['mean_of_mu']:.4f} | {s['std_of_mu']:.4f} | {s['mean_of_sigma']:.4f} | "
                 f"{s['mean_of_norm']:.4f} |")
  return lines


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  runs = [r.for_id(i, o) for i, o in runnable]
  plans = [(ri, pipeline.sets_for(ri)) for ri in runs]       # every model built (checked) first
  rows, figs, info = [], {}, {}
  for ri, by_model in plans:
    for name in ri.models:
      sets = by_model[name]
      trained = pipeline.train_or_load(ri, name, sets)
      n_train = min(len(sets.train.x), len(sets.test.x))
      named = {f"{ri.id} train (ID)": sets.train.x[:n_train],
               f"{ri.id} test (ID)": sets.test.x, **{n: s.x for n, s in sets.ood.items()}}
      by_label = {}
      with pipeline.Timer() as t:
        for j, (label, x) in enumerate(named.items()):
          key = jax.random.fold_in(jax.random.PRNGKey(ri.seed), j)
          by_label[label] = code_stats.stats_of(trained.model, trained.variables, x, rng=key)
      d = int(np.prod(sets.hwc))
      by_label[PRIOR] = prior_stats(len(sets.test.x), d, ri.seed)
      for label, st in by_label.items():
        rows.append({"id": ri.id, "model": name, "set": label, **code_stats.summary(st)})
      prefix = f"codes_{name}_{run_slug(ri.id)}"
      figs[f"{prefix}.png"] = functools.partial(
          code_stats.figure, by_label=by_label,
          title=f"{name} trained on {ri.id}: code statistics (Fig. 11)")
      info[prefix] = {**trained.meta(), "encode_seconds": round(t.seconds, 1),
                      "input_shape": list(sets.hwc)}
  lines = summary_lines(rows) + skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info,
          "data_sources": {ri.id: pipeline.data_sources(bm[ri.models[0]]) for ri, bm in plans}}
  return Result(title=f"Nalisnick et al. App. H, Fig. 11: CV-Glow codes ({r.preset} preset)",
                meta=meta, results=rows, sections=["\n".join(lines)],
                json_files={"codes.json": rows}, figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_codes", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "cv_glow", "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--k"),
    model_presets={"smoke": "smoke", "cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
