"""ROSE ablations: DIAG vs EKFAC (ROSE Table 6), InvConv vs all layers for Glow (Table 7),
the damping, the latent at which the VAE objective is taken, and the Fisher sample count
with repeats (Fig. 5); AUROC per OOD set.

    python -m ood_jax.experiments.rose_ablations                      # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_ablations --preset smoke --out runs/rose_abl_smoke
    python -m ood_jax.experiments.rose_ablations --models vae,glow --fisher-sizes 10,100,1000
    python -m ood_jax.experiments.rose_ablations --ood mnist,noise,constant,overall --repeats 10

Trains (or reloads from the checkpoint cache shared with ``table2``) each model on the ID
training split, then fits and evaluates one ``rose`` scorer per variant, all with N = 1000
Fisher images and the model's default layers unless named: ``rose_diag``, ``rose_ekfac``
(ROSE Table 6); ``rose_abs_damping`` (the public code's absolute damping ``λ = 1e-8``
instead of our relative ``1e-3 mean(diag F)``, with the model's default Fisher);
``rose_z_sample`` (latent models only: the objective at one sampled ``z`` instead of ``z =
mu``); for the models of ``--all-layers`` (default Glow and CV-Glow, ROSE Table 7: their
default layers are the invertible 1x1 convolutions) ``rose_all_layers`` (every parameter
module, the model's default Fisher: DIAG for Glow).

Fig. 5 ("computing ROSE ten times for each sampling number, varying it from ten to 10K"): for
each Fisher size of ``--fisher-sizes`` (capped at the training images left after the
``n_norm`` held out for the z-scores) and each of ``--repeats`` repeats, ROSE with the
model's default Fisher is fitted on a different random Fisher subset (repeat ``i`` splits
the ID training set with seed ``seed + 1000 i``; repeat 0 is the run's own split) and
scored on every set; the report gives the median and range of the AUROC per size and OOD
set, ``fisher_sweep.json`` every value, and ``rose_fisher_sweep_<model>.png`` the box plot
(the ``overall`` set when given, as in the paper, else every OOD set).
``--score-args rose.<field>=...`` applies to every variant, except for the field a variant
is about. Writes ``report.md``, ``results.json`` (one row per model x variant x OOD set),
``meta.json`` and figures.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, figures, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores.rose import Rose, split_id

DEFAULT_SIZES = "10,100,1000,10000"
DEFAULT_ALL_LAYERS = "glow,cv_glow"    # ROSE Table 7: InvConv layers vs every layer, for Glow
REPEATS = {"smoke": 2, "cpu": 10, "paper": 10}
REFERENCE_DAMPING = 1e-8               # the public ROSE code's absolute damping


def fisher_sizes(arg: str) -> list[int]:
  try:
    sizes = [int(s) for s in split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--fisher-sizes: expected comma-separated integers, got {arg!r}.") from None
  if not sizes or min(sizes) < 1:
    raise InvalidInputError(f"--fisher-sizes: expected positive integers, got {arg!r}.")
  return sizes


def repeats(r: Run) -> int:
  n = r.options["repeats"]
  n = REPEATS.get(r.preset, 10) if n is None else n
  if n < 1:
    raise InvalidInputError(f"--repeats: expected a positive integer, got {n}.")
  return n


def check(r: Run) -> None:
  fisher_sizes(r.options["fisher_sizes"])
  repeats(r)


def variants(model_name: str, latent: bool, all_layers=("glow", "cv_glow")) -> dict[str, dict]:
  """``{label: Rose settings}`` of the ablation variants of one model (``latent``: the
  model's objective has per-image latent noise, so ``z`` matters)."""
  out = {"rose_diag": dict(fisher="diag"), "rose_ekfac": dict(fisher="ekfac"),
         "rose_abs_damping": dict(damping=REFERENCE_DAMPING, damping_kind="absolute")}
  if latent:
    out["rose_z_sample"] = dict(z="sample")
  if model_name in all_layers:
    out["rose_all_layers"] = dict(layers="all")
  return out


def effective_sizes(sizes: list[int], n_train: int, n_norm: int) -> list[int]:
  """The Fisher sizes after capping at the images left for the Fisher (duplicates dropped)."""
  return list(dict.fromkeys(len(split_id(n_train, n, n_norm, 0)[0]) for n in sizes))


def fisher_sweep(r: Run, name: str, trained, sets, base: Rose, sizes: list[int],
                 n_rep: int) -> dict:
  """``{size: {set: [AUROC per repeat]}}`` (OOD sets only) for the Fig. 5 sweep."""
  out = {}
  for n in effective_sizes(sizes, len(sets.train.x), base.n_norm):
    out[n] = {o: [] for o in sets.ood}
    for i in range(n_rep):
      scorer = r.scorer("rose", name, n_fisher=n, seed=r.seed + 1000 * i)
      state = scorer.fit(trained.model, trained.variables, sets.train.x)
      s_id = scorer.score(state, sets.test.x)
      for o, s in sets.ood.items():
        out[n][o].append(float(metrics.auroc(s_id, scorer.score(state, s.x))))
  return out


def sweep_markdown(name: str, sweep: dict) -> str:
  oods = list(next(iter(sweep.values())))
  lines = [f"## {name}: AUROC vs Fisher sample count (ROSE Fig. 5)", "",
           "Median [min, max] of the AUROC over the repeats, each on another random Fisher "
           "subset (the paper plots the `overall` set: it reads robust even at N = 10 and "
           "rising slowly with N).", "",
           "| N | repeats | " + " | ".join(oods) + " |", "|---:|---:|" + "---:|" * len(oods)]
  for n, per in sweep.items():
    cells = [f"{np.median(a):.3f} [{min(a):.3f}, {max(a):.3f}]" for a in per.values()]
    lines.append(f"| {n} | {len(next(iter(per.values())))} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sweep_figure(name: str, sweep: dict):
  sets = [pipeline.OVERALL] if pipeline.OVERALL in next(iter(sweep.values())) else \
      list(next(iter(sweep.values())))

  def draw(path):
    fig = figures.Figure(figsize=(4.0 * len(sets), 3.6))
    for j, o in enumerate(sets):
      ax = fig.add_subplot(1, len(sets), j + 1)
      ax.boxplot([sweep[n][o] for n in sweep])
      ax.set_xticks(range(1, len(sweep) + 1), [str(n) for n in sweep])
      ax.set_xlabel("Fisher images N")
      ax.set_ylabel("AUROC")
      ax.set_title(f"{name}: {o}", fontsize="medium")
    return figures._save(fig, path, "ROSE AUROC vs Fisher sample count (Fig. 5)")
  return draw


def run(r: Run) -> Result:
  sizes, n_rep = fisher_sizes(r.options["fisher_sizes"]), repeats(r)
  by_model = pipeline.sets_for(r)
  rows, samples, model_meta, sections, figs, sweeps = [], {}, {}, [], {}, {}
  base = r.scorer("rose")
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    vals, info = {}, {}
    all_layers = split_list(r.options["all_layers"])
    latent = psg.objective_for(trained.model).per_image
    for label, over in variants(name, latent, all_layers).items():
      scorer = r.scorer("rose", name, **over)
      with pipeline.Timer() as tf:
        state = scorer.fit(trained.model, trained.variables, sets.train.x)
      with pipeline.Timer() as ts:
        v = {"__id__": scorer.score(state, sets.test.x)}
        v.update({n: scorer.score(state, s.x) for n, s in sets.ood.items()})
      vals[label] = v
      n_fisher = len(split_id(len(sets.train.x), scorer.n_fisher, scorer.n_norm, r.seed)[0])
      info[label] = {**over, "fisher": scorer.fisher_for(trained.model), "n_fisher": n_fisher,
                     "fit_seconds": round(tf.seconds, 1), "score_seconds": round(ts.seconds, 1)}
    samples.update(pipeline.samples_for(r.id, name, vals))
    rows += pipeline.metric_rows(r.id, name, vals)
    with pipeline.Timer() as tw:
      sweep = fisher_sweep(r, name, trained, sets, base, sizes, n_rep)
    sweeps[name] = {str(n): v for n, v in sweep.items()}
    sections.append(sweep_markdown(name, sweep))
    figs[f"rose_fisher_sweep_{name}.png"] = sweep_figure(name, sweep)
    model_meta[name] = {**trained.meta(), "variants": info,
                        "fisher_sweep_seconds": round(tw.seconds, 1)}
  rose_settings = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)
                   if f.name not in ("progress", "name")}
  first = by_model[r.models[0]]
  meta = {**r.settings_meta(), **pipeline.shapes_meta(by_model), "fisher_sizes": sizes,
          "repeats": n_rep, "rose_settings": rose_settings, "n_train": len(first.train.x),
          "models": model_meta, "data_sources": pipeline.data_sources(first)}
  return Result(title=f"ROSE ablations, {r.id} in-distribution ({r.preset} preset)", meta=meta,
                rows=rows, samples=samples, sections=sections, figures=figs,
                json_files={"fisher_sweep.json": {"command": r.command, "auroc": sweeps}})


EXPERIMENT = cli.Experiment(
    "rose_ablations", run, description=__doc__.split("\n\n")[0], defaults={"scores": "rose"},
    omit=("--scores",),
    options=(cli.option("--fisher-sizes", default=DEFAULT_SIZES,
                        help=f"Fisher image counts for the Fig. 5 sweep (default {DEFAULT_SIZES})"),
             cli.option("--repeats", type=int, default=None,
                        help="fits per Fisher size, each on another random subset (default: "
                             "the preset's, smoke 2, cpu and paper 10)"),
             cli.option("--all-layers", default=DEFAULT_ALL_LAYERS,
                        help="models that also get the every-layer variant rose_all_layers "
                             f"(default {DEFAULT_ALL_LAYERS})")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
