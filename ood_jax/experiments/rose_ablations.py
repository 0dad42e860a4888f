"""ROSE ablations: DIAG vs EKFAC (ROSE Table 6), InvConv vs all layers for Glow (Table 7),
Fisher sample count (Fig. 5); AUROC per OOD set.

    python -m ood_jax.experiments.rose_ablations                      # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_ablations --preset smoke --out runs/rose_abl_smoke
    python -m ood_jax.experiments.rose_ablations --models vae,glow --fisher-sizes 10,100,1000

Trains (or reloads from the checkpoint cache shared with ``table2``) each model on the ID
training split, then fits and evaluates one ``rose`` scorer per variant: ``rose_diag``,
``rose_ekfac`` (default layers, N = 1000 Fisher images), for the models of ``--all-layers``
(default Glow and CV-Glow, ROSE Table 7: their default layers are the invertible 1x1
convolutions) also ``rose_ekfac_all`` (every parameter module), and ``rose_ekfac_N<n>`` for
each Fisher size (capped at the training images left after the 1000 held out for the
z-scores; N = 1000 is ``rose_ekfac``). ``--score-args rose.<field>=...`` applies to every
variant, except for the field a variant is about (``fisher``, ``layers``, ``n_fisher``). Writes ``report.md``,
``results.json`` (one row per model x variant x OOD set), ``meta.json`` and figures.
"""

from __future__ import annotations

import dataclasses
import sys

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list
from ood_jax.scores.rose import Rose, split_id

DEFAULT_SIZES = "10,100,1000,10000"
DEFAULT_ALL_LAYERS = "glow,cv_glow"    # ROSE Table 7: InvConv layers vs every layer, for Glow


def fisher_sizes(arg: str) -> list[int]:
  try:
    sizes = [int(s) for s in split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--fisher-sizes: expected comma-separated integers, got {arg!r}.") from None
  if not sizes or min(sizes) < 1:
    raise InvalidInputError(f"--fisher-sizes: expected positive integers, got {arg!r}.")
  return sizes


def check(r: Run) -> None:
  fisher_sizes(r.options["fisher_sizes"])


def variants(model_name: str, sizes: list[int], n_train: int, base: Rose,
             all_layers=("glow", "cv_glow")) -> dict[str, dict]:
  """``{label: Rose settings}`` of every ablation run for one model (duplicates dropped)."""
  out = {"rose_diag": dict(fisher="diag"), "rose_ekfac": dict(fisher="ekfac")}
  if model_name in all_layers:
    out["rose_ekfac_all"] = dict(fisher="ekfac", layers="all")
  seen = {len(split_id(n_train, base.n_fisher, base.n_norm, 0)[0])}
  for n in sizes:
    eff = len(split_id(n_train, n, base.n_norm, 0)[0])
    if eff not in seen:
      seen.add(eff)
      out[f"rose_ekfac_N{eff}"] = dict(fisher="ekfac", n_fisher=eff)
  return out


def run(r: Run) -> Result:
  sizes = fisher_sizes(r.options["fisher_sizes"])
  by_model = pipeline.sets_for(r)
  rows, samples, model_meta = [], {}, {}
  base = r.scorer("rose")
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    vals, info = {}, {}
    all_layers = split_list(r.options["all_layers"])
    for label, over in variants(name, sizes, len(sets.train.x), base, all_layers).items():
      scorer = r.scorer("rose", name, **over)
      with pipeline.Timer() as tf:
        state = scorer.fit(trained.model, trained.variables, sets.train.x)
      with pipeline.Timer() as ts:
        v = {"__id__": scorer.score(state, sets.test.x)}
        v.update({n: scorer.score(state, s.x) for n, s in sets.ood.items()})
      vals[label] = v
      n_fisher = len(split_id(len(sets.train.x), scorer.n_fisher, scorer.n_norm, r.seed)[0])
      info[label] = {**over, "n_fisher": n_fisher, "fit_seconds": round(tf.seconds, 1),
                     "score_seconds": round(ts.seconds, 1)}
    samples.update(pipeline.samples_for(r.id, name, vals))
    rows += pipeline.metric_rows(r.id, name, vals)
    model_meta[name] = {**trained.meta(), "variants": info}
  rose_settings = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)
                   if f.name not in ("progress", "name")}
  first = by_model[r.models[0]]
  meta = {**r.settings_meta(), **pipeline.shapes_meta(by_model), "fisher_sizes": sizes,
          "rose_settings": rose_settings, "n_train": len(first.train.x),
          "models": model_meta, "data_sources": pipeline.data_sources(first)}
  return Result(title=f"ROSE ablations, {r.id} in-distribution ({r.preset} preset)", meta=meta,
                rows=rows, samples=samples)


EXPERIMENT = cli.Experiment(
    "rose_ablations", run, description=__doc__.split("\n\n")[0], defaults={"scores": "rose"},
    omit=("--scores",),
    options=(cli.option("--fisher-sizes", default=DEFAULT_SIZES,
                        help=f"Fisher image counts for the Fig. 5 sweep (default {DEFAULT_SIZES})"),
             cli.option("--all-layers", default=DEFAULT_ALL_LAYERS,
                        help="models that also get the every-layer variant rose_ekfac_all "
                             f"(default {DEFAULT_ALL_LAYERS})")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
