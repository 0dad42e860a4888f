"""Kirichenko et al. section 4 (Figs 1b-c, 3, 9, 11; App. G, J): what the coupling layers compute.

    python -m ood_jax.experiments.kirichenko_couplings                 # cpu preset
    python -m ood_jax.experiments.kirichenko_couplings --preset smoke --out runs/k_coupl_smoke
    python -m ood_jax.experiments.kirichenko_couplings --pairs fashion_mnist:mnist,cifar10:celeb_a

For every ID set of ``--pairs`` (default FashionMNIST, OOD MNIST), trains (or loads from the
checkpoint cache shared with the other experiments) the models of ``--models`` (default the
baseline RealNVP and Glow at the run's model preset: ``kirichenko_cpu`` at ``cpu``,
``kirichenko`` at ``paper``) and the RealNVP variants of ``--variants``: ``small`` "a small
RealNVP with 2 coupling layers and checkerboard masks" (``num_scales=1, num_couplings=2``,
Fig. 3a-b), ``horizontal`` "a 3-layer RealNVP with horizontal masks" (``num_scales=1,
num_couplings=3, mask='horizontal'``, Figs 3c-d, 11), or any ``label[field=value,...]``
(module settings over the model preset, e.g. ``l10[skip=False,bottleneck=10]``). For each
model and each set (ID test, every OOD set) a figure ``couplings_<model>_<set>.png``: per
shown image (``--n-show``) the rows input, ``x0`` (masked part), ``s`` (masked part) and
output of every coupling layer (columns; at most ``--max-layers``, evenly spaced), in image
space (App. G: squeezes undone, factored-out tensors joined back; ``views.py``), each panel
normalised on its own (as the reference notebook), the entries a layer does not transform in
black.

``x0`` is the input the layer maps to zero: ``x0 = x_in - y_out * exp(-s)`` on the
transformed entries, whatever the convention: ``-t`` for the reference's (and the
``kirichenko`` presets') ``y = (x + t) * exp(s)`` (``shift_first``), ``-t * exp(-s)`` for
``y = x * exp(s) + t``. It is the st-network's estimate of the masked input (the paper:
"the -t outputs of the first coupling layers are a very close estimate of the input"). The
number the figures only show: per layer and set, over the first ``--n-eval`` images (pixels
at the bin centres, eval mode), ``MSE = mean (x0 - x_in)^2`` over the transformed entries
and ``rel. MSE = sum_images MSE / sum_images Var(x_in on those entries)`` (the fraction of
the masked input's variance that the estimate misses: 0 = perfect, 1 = no better than the
masked mean); also the mean ``s`` there. Expected (paper): small errors on ID and OOD
alike; with horizontal masks a poor first layer and "an almost ideal reconstruction" in the
second and third, "on both the in-distribution and, surprisingly, the OOD input".

``coupling_figures(run, trained, sets, prefix)`` and ``mse_table(rows)`` are the pieces
other experiments call (``kirichenko_bottleneck``'s l = 10 figure).

Cost at ``cpu`` (2 cores; batch-32 steps measured with ``benchmarks/train_steps.py``: RealNVP
0.26 s, Glow 0.73 s, ``small`` 0.11 s, ``horizontal`` 0.15 s; one FashionMNIST epoch is 1875
steps): about 40 min from cold, of which Glow is 23 and the baseline RealNVP 8; the baselines
are the checkpoints of ``kirichenko_table1`` / ``kirichenko_latents``, so after those about
10 min. The analysis itself (1000 images per set) takes a minute or two.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys

import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline, settings
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run
from ood_jax.models import registry as model_registry
from ood_jax.models.flows import views
from ood_jax.models.flows.flow_model import FlowModel

DEFAULT_PAIRS = "fashion_mnist:mnist"
VARIANTS = {"small": {"num_scales": 1, "num_couplings": 2},
            "horizontal": {"num_scales": 1, "num_couplings": 3, "mask": "horizontal"}}
DEFAULT_VARIANTS = "small,horizontal"
VARIANT_MODEL = "realnvp"
STAT_BATCH = 100
ARRAYS = ("x_in", "s", "t", "y_out")


# ----------------------------------------------------------------------------- options


def parse_variants(text: str) -> dict[str, dict]:
  """``'small,horizontal,l10[skip=False,bottleneck=10]'`` -> ``{label: RealNVP settings}``
  (a bare name must be one of ``VARIANTS``)."""
  out = {}
  for entry in settings.split_top_level(text or ""):
    label, inline = settings.parse_entry(entry)
    if not re.fullmatch(r"[A-Za-z0-9_.=-]+", label):
      raise InvalidInputError(f"--variants: label {label!r} must be a plain name.")
    if not inline and label not in VARIANTS:
      raise InvalidInputError(
          f"--variants: unknown variant {label!r}; known: {', '.join(VARIANTS)}, or give"
          " label[field=value,...].")
    if label in out:
      raise InvalidInputError(f"--variants: {label!r} given twice.")
    out[label] = dict(inline) if inline else dict(VARIANTS[label])
  return out


def check_flows(names) -> None:
  """The views need flows (RealNVP, Glow): one clear error for any other model."""
  for name in names:
    if not issubclass(model_registry.spec(name).module, FlowModel):
      raise InvalidInputError(f"--models: {name!r} is not a flow; this experiment views the "
                              "latents and coupling layers of flows (realnvp, glow, cv_glow).")


def check(r: Run) -> None:
  check_flows(r.models)
  if parse_variants(r.options["variants"]) and VARIANT_MODEL not in r.models:
    raise InvalidInputError(f"--variants are {VARIANT_MODEL} variants: add {VARIANT_MODEL} to"
                            " --models (its training settings are theirs), or --variants ''.")
  availability.parse_pairs(r.options["pairs"])
  for flag in ("n_show", "max_layers"):
    if int(r.options[flag]) < 1:
      raise InvalidInputError(f"--{flag.replace('_', '-')} must be >= 1, got {r.options[flag]}.")


# ----------------------------------------------------------------------------- numbers


def layer_stats(model, variables, x: np.ndarray, batch: int = STAT_BATCH,
                keep: int = 0) -> tuple[list[dict], list]:
  """``(stats, views)``: per coupling layer (forward order) ``mse``, ``rel_mse``, ``s_mean``
  of ``x0`` against the masked input over the images ``x`` (module docstring) with the
  layer's name and mask; and ``views.coupling_intermediates`` of the first ``keep`` images
  (from the first batch: one compile per batch shape; a short last batch is padded)."""
  sums, kept = None, []
  for i in range(0, len(x), batch):
    xb = x[i:i + batch]
    real = len(xb)
    if i > 0 and real < batch:
      xb = np.concatenate([xb, x[:batch - real]])
    cv = views.coupling_intermediates(model, variables, xb)
    if sums is None:
      sums = [dict(name=c.name, mask=c.mask, se=0.0, var=0.0, s=0.0, n=0) for c in cv]
      kept = [dataclasses.replace(c, **{k: getattr(c, k)[:keep] for k in ARRAYS}) for c in cv]
    for acc, c in zip(sums, cv):
      m = c.out_mask
      xin, err, s = c.x_in[:real, m], (c.x_zero - c.x_in)[:real, m], c.s[:real, m]
      acc["se"] += float(np.sum(np.mean(np.square(err), axis=1)))
      acc["var"] += float(np.sum(np.var(xin, axis=1)))
      acc["s"] += float(np.sum(np.mean(s, axis=1)))
      acc["n"] += real
  stats = []
  for layer, acc in enumerate(sums or []):
    n = max(acc["n"], 1)
    stats.append({"layer": layer, "name": acc["name"], "mask": acc["mask"], "n": acc["n"],
                  "mse": acc["se"] / n, "rel_mse": acc["se"] / max(acc["var"], 1e-12),
                  "s_mean": acc["s"] / n})
  return stats, kept


def estimate_label(model) -> str:
  """What ``x0`` is for this model's couplings (module docstring)."""
  if getattr(model, "additive", False):
    return "-t"
  return "-t" if getattr(model, "shift_first", False) else "-t*exp(-s)"


def mse_table(rows: list[dict]) -> str:
  """Markdown: per model (``rows``' ``model``), one line per layer with the MSE and rel. MSE
  of ``x0`` on every set, and the mean ``s``."""
  lines = []
  for model in dict.fromkeys(r["model"] for r in rows):
    sub = [r for r in rows if r["model"] == model]
    sets = list(dict.fromkeys(r["set"] for r in sub))
    by = {(r["layer"], r["set"]): r for r in sub}
    est = sub[0]["estimate"]
    lines += [f"### {model} (x0 = {est}; n = {', '.join(str(by[(0, s)]['n']) for s in sets)})", "",
              "| layer | name | mask | "
              + " | ".join(f"{s} MSE | {s} rel. MSE | {s} mean s" for s in sets) + " |",
              "|---:|---|---|" + "---:|---:|---:|" * len(sets)]
    for layer in dict.fromkeys(r["layer"] for r in sub):
      first = by[(layer, sets[0])]
      cells = []
      for s in sets:
        r = by[(layer, s)]
        cells += [f"{r['mse']:.4g}", f"{r['rel_mse']:.3f}", f"{r['s_mean']:.3f}"]
      lines.append(f"| {layer} | {first['name']} | {first['mask']} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines).rstrip()


# ----------------------------------------------------------------------------- figures


def short_name(name: str) -> str:
  """Column title of a layer: ``'scales_0/channel_coupling1'`` -> ``'s0 ch1'``,
  ``'scales_1/coupling2'`` -> ``'s1 c2'``, ``'level_1/step3/coupling'`` -> ``'l1 k3'``."""
  s = re.sub(r"^scales_(\d+)/", r"s\1 ", name)
  s = re.sub(r"^level_(\d+)/step(\d+)/coupling$", r"l\1 k\2", s)
  return s.replace("channel_coupling", "ch").replace("coupling", "c")


def _masked(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """``a`` (``N x H x W x C``) with the entries outside ``mask`` set to each image's
  minimum inside it (drawn black under per-image normalisation)."""
  inside = np.where(mask[None], a, np.inf).reshape(a.shape[0], -1).min(axis=1)
  return np.where(mask[None], a, inside[:, None, None, None]).astype(np.float32)


def pick_layers(n: int, most: int) -> list[int]:
  """At most ``most`` of ``n`` layer indices, evenly spaced, first and last included."""
  if n <= most:
    return list(range(n))
  return sorted({int(round(i)) for i in np.linspace(0, n - 1, most)})


def draw_couplings(path: str, cv: list, x_uint8: np.ndarray, title: str, estimate: str,
                   layers: list[int]) -> str:
  """One figure of ``views.coupling_intermediates`` output: per image the rows input,
  ``x0`` and ``s`` (masked part) and output, one column per layer in ``layers``."""
  rows = {}
  for i in range(x_uint8.shape[0]):
    rows[f"#{i} image"] = x_uint8[i:i + 1]
    rows[f"#{i} input"] = np.stack([cv[l].x_in[i] for l in layers])
    rows[f"#{i} x0={estimate}"] = np.stack([_masked(cv[l].x_zero[i:i + 1], cv[l].out_mask)[0]
                                            for l in layers])
    rows[f"#{i} s"] = np.stack([_masked(cv[l].s[i:i + 1], cv[l].out_mask)[0] for l in layers])
    rows[f"#{i} output"] = np.stack([cv[l].y_out[i] for l in layers])
  return figures.image_grid(path, rows, title=title, norm="image",
                            col_titles=[short_name(cv[l].name) for l in layers])


def coupling_figures(run: Run, trained: pipeline.Trained, sets: pipeline.Sets,
                     prefix: str) -> tuple[dict, list[dict]]:
  """``({file name: draw(path)}, rows)`` for one trained flow: a figure per set (ID test and
  every OOD set: ``<prefix>_<set>.png``) and per layer and set a row ``{model: prefix, set,
  layer, name, mask, n, mse, rel_mse, s_mean, estimate}`` over the set's first ``run.n_eval``
  images (module docstring). Options read from ``run.options`` when present: ``n_show``
  (default 3), ``max_layers`` (default 12)."""
  n_show = int(run.options.get("n_show", 3))
  max_layers = int(run.options.get("max_layers", 12))
  model, variables = trained.model, trained.variables
  est = estimate_label(model)
  figs, rows = {}, []
  named = {f"{sets.test.name} (ID)": sets.test.x, **{n: s.x for n, s in sets.ood.items()}}
  for label, x in named.items():
    n = len(x) if run.n_eval is None else min(len(x), int(run.n_eval))
    stats, cv = layer_stats(model, variables, x[:n], keep=n_show)
    rows += [{"model": prefix, "set": label, "estimate": est, **st} for st in stats]
    shown = x[:min(n_show, n)]
    name = f"{prefix}_{run_slug(label)}.png"
    figs[name] = functools.partial(
        draw_couplings, cv=cv, x_uint8=shown, estimate=est,
        layers=pick_layers(len(cv), max_layers),
        title=f"{prefix}: coupling layers on {label} (image space; x0 = input mapped to 0)")
  return figs, rows


def run_slug(text: str) -> str:
  """A file-name-safe form of ``text``."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


skipped_lines = availability.skipped_lines      # re-exported (kirichenko_latents, ...)


# ----------------------------------------------------------------------------- experiment


def _jobs(ri: Run, extra: dict) -> list[tuple[str, str, dict]]:
  """``[(label, registry model, module settings)]``: the run's models, then the variants."""
  return ([(name, name, {}) for name in ri.models]
          + [(label, VARIANT_MODEL, over) for label, over in extra.items()])


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  extra = parse_variants(r.options["variants"])
  runs = [r.for_id(i, o) for i, o in runnable]
  plans = []
  for ri in runs:                                   # every model built (checked) first
    jobs = _jobs(ri, extra)
    by_model = pipeline.sets_for(ri, models=list(dict.fromkeys(m for _, m, _ in jobs)))
    for _, name, over in jobs:
      ri.make_model(name, by_model[name].hwc, **over)
    plans.append((ri, by_model, jobs))
  figs, rows, info = {}, [], {}
  for ri, by_model, jobs in plans:
    for label, name, over in jobs:
      sets = by_model[name]
      trained = pipeline.train_or_load(ri, name, sets, overrides=over or None,
                                       label=label if over else "")
      prefix = f"couplings_{run_slug(label)}_{ri.id}"
      with pipeline.Timer() as t:
        f, rws = coupling_figures(ri, trained, sets, prefix)
      figs.update(f)
      rows += rws
      info[prefix] = {**trained.meta(), "model": name, "settings": over,
                      "x0": estimate_label(trained.model), "analysis_seconds": round(t.seconds, 1)}
  sections = ["## Coupling layers: the st-network's estimate x0 of the masked input", "",
              "x0 is the input each layer maps to 0 (`x0 = x_in - y_out * exp(-s)` on the "
              "transformed entries; `-t` for `y = (x + t) * exp(s)`, the paper's coupling). "
              "MSE: mean squared error of x0 against the masked input (in the layer's input "
              "space: logit pixels for the first RealNVP layer); rel. MSE: that error over the "
              "masked input's variance. Paper (section 4, figures only): the first layers' -t "
              "closely estimates the input on ID and OOD images alike; with horizontal masks "
              "the first layer predicts poorly and the second and third almost ideally, on "
              "both.", "", mse_table(rows)]
  sections += skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "variants": extra, "models_trained": info}
  return Result(title=f"Kirichenko et al. section 4: coupling layers ({r.preset} preset)",
                meta=meta, results=rows, sections=["\n".join(sections)], figures=figs)


EXPERIMENT = cli.Experiment(
    "kirichenko_couplings", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp,glow", "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--k"),
    model_presets={"smoke": "smoke", "cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--variants", default=DEFAULT_VARIANTS,
                        help="RealNVP variants: small, horizontal, or label[field=value,...]; "
                             f"'' for none (default {DEFAULT_VARIANTS})"),
             cli.option("--n-show", type=int, default=3, help="images per set in the figures"),
             cli.option("--max-layers", type=int, default=12,
                        help="coupling layers (columns) per figure, evenly spaced (default 12)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
