"""Kirichenko et al. App. M.1 (Fig. 16) and M (Fig. 15): re-sampling the latents of a square.

    python -m ood_jax.experiments.kirichenko_resample                  # cpu preset
    python -m ood_jax.experiments.kirichenko_resample --preset smoke --out runs/k_resample_smoke

For every pair of ``--pairs`` (default CIFAR-10 -> CelebA, 32 x 32 colour, and FashionMNIST
-> MNIST, 28 x 28; the paper's model is trained on CelebA, which has no training split here)
trains (or loads from the checkpoint cache shared with the other experiments) the flows of
``--models`` (default RealNVP at the run's model preset: ``kirichenko_cpu`` at ``cpu``,
``kirichenko`` at ``paper``). For the ID test images and every OOD set it "randomly
re-sample[s] the subset of latent variables corresponding to a 10x10 square in the center of
the image (to find the corresponding latent variables we apply the squeeze layers from the
flow to the 32x32 mask)" (``--square``; the square's corner at ``(H - size) // 2``;
``views.latent_mask``), draws them from the prior at ``--temperature``, inverts the flow
(eval mode; pixels at the bin centres) and shows originals, reconstructions and ``|change|``.

Numbers (ours; the paper: "the model almost ideally preserves the part of the image other
than the center"): per set over the first ``--n-stat`` images, the mean absolute change in
pixel levels (0..255) outside and inside the square, the fraction of outside entries changed
at all and by more than 8 levels, the same outside a 2-pixel ring around the square (the
couplings' st-nets see neighbouring pixels), and the largest change of a plain round trip
(no re-sampling: the flow's invertibility, should be 0). Also ``--n-samples`` samples of
every model at ``--sample-temperature`` (Fig. 15).

Cost at ``cpu`` (2 cores): training the two RealNVPs about 18 min from cold (shared with
``kirichenko_table1`` / ``kirichenko_latents``), the analysis about a minute.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline, variants
from ood_jax.experiments.kirichenko_couplings import check_flows, run_slug, skipped_lines
from ood_jax.experiments.kirichenko_latents import batched
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run
from ood_jax.models.flows import views

DEFAULT_PAIRS = "cifar10:celeb_a,fashion_mnist:mnist"
RING = 2


def check(r: Run) -> None:
  check_flows(r.models)
  availability.parse_pairs(r.options["pairs"])
  for flag in ("square", "n_show", "n_stat"):
    if int(r.options[flag]) < 1:
      raise InvalidInputError(f"--{flag.replace('_', '-')} must be >= 1, got {r.options[flag]}.")
  if int(r.options["n_samples"]) < 0:
    raise InvalidInputError(f"--n-samples must be >= 0, got {r.options['n_samples']}.")
  for flag in ("temperature", "sample_temperature"):
    if not float(r.options[flag]) > 0:
      raise InvalidInputError(f"--{flag.replace('_', '-')} must be > 0, got {r.options[flag]}.")


def grow(mask: np.ndarray, px: int) -> np.ndarray:
  """``mask`` (``H x W`` bool) dilated by ``px`` pixels (a square neighbourhood)."""
  out = mask.copy()
  h, w = mask.shape
  for dy in range(-px, px + 1):
    for dx in range(-px, px + 1):
      shifted = np.zeros_like(mask)
      shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
          mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
      out |= shifted
  return out


def change_stats(x: np.ndarray, x_new: np.ndarray, x_round: np.ndarray, mask: np.ndarray) -> dict:
  """The numbers of the module docstring for originals ``x``, re-sampled ``x_new`` and plain
  round trips ``x_round`` (uint8 ``N x H x W x C``), square ``mask`` (``H x W``)."""
  d = np.abs(x_new.astype(np.int16) - x.astype(np.int16)).astype(np.float64)
  outside, far = ~mask, ~grow(mask, RING)
  return {"outside_mean_abs": float(d[:, outside].mean()),
          "outside_changed_frac": float((d[:, outside] > 0).mean()),
          "outside_changed_gt8_frac": float((d[:, outside] > 8).mean()),
          "beyond_ring_mean_abs": float(d[:, far].mean()) if far.any() else None,
          "beyond_ring_changed_frac": float((d[:, far] > 0).mean()) if far.any() else None,
          "inside_mean_abs": float(d[:, mask].mean()),
          "round_trip_max_abs": int(np.abs(x_round.astype(np.int16) - x.astype(np.int16)).max())}


def draw_resampled(path: str, shown: dict, title: str) -> str:
  rows = {}
  for label, (x, x_new) in shown.items():
    rows[f"{label} original"] = x
    rows[f"{label} re-sampled"] = x_new
    rows[f"{label} |change|"] = np.abs(x_new.astype(np.float32) - x.astype(np.float32)).mean(
        axis=-1, keepdims=True)
  return figures.image_grid(path, rows, title=title, norm="row")


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  size, temp = int(r.options["square"]), float(r.options["temperature"])
  n_show, n_stat = int(r.options["n_show"]), int(r.options["n_stat"])
  n_samples, sample_t = int(r.options["n_samples"]), float(r.options["sample_temperature"])
  runs = [r.for_id(i, o) for i, o in runnable]
  plans = [(ri, pipeline.sets_for(ri)) for ri in runs]       # every model built (checked) first
  for ri, by_model in plans:
    for sets in by_model.values():
      views.square_mask(sets.hwc, size)                      # the square fits every input
  figs, results, info = {}, [], {}
  for ri, by_model in plans:
    for name in ri.models:
      sets = by_model[name]
      trained = pipeline.train_or_load(ri, name, sets)
      model, variables = trained.model, trained.variables
      mask = views.square_mask(sets.hwc, size)
      named = {f"{sets.test.name} (ID)": sets.test.x, **{n: s.x for n, s in sets.ood.items()}}
      shown = {}
      with pipeline.Timer() as t:
        for j, (label, x) in enumerate(named.items()):
          x = x[:max(min(len(x), n_stat), n_show)]
          key = jax.random.fold_in(jax.random.PRNGKey(ri.seed), j)
          size_b = min(len(x), 100)
          x_new = batched(lambda c, i: views.resample_latents(
              model, variables, c, mask, jax.random.fold_in(key, i), temp), x, size_b)
          x_round = batched(lambda c, i: views.resample_latents(
              model, variables, c, np.zeros_like(mask), key, temp), x, size_b)
          n = min(len(x), n_stat)
          results.append({"id": ri.id, "model": name, "set": label, "n": n, "square": size,
                          "temperature": temp,
                          **change_stats(x[:n], x_new[:n], x_round[:n], mask)})
          shown[label] = (x[:n_show], x_new[:n_show])
      prefix = f"resample_{name}_{run_slug(ri.id)}"
      figs[f"{prefix}.png"] = functools.partial(
          draw_resampled, shown=shown,
          title=f"{name} trained on {ri.id}: latents of the centre {size}x{size} square "
                f"re-sampled (T = {temp:g})")
      if n_samples:
        imgs = variants.model_samples(trained, n_samples, ri.seed, sample_t)
        figs[f"samples_{name}_{run_slug(ri.id)}.png"] = functools.partial(
            figures.samples_grid, images_uint8=imgs,
            title=f"{name} samples, trained on {ri.id} (T = {sample_t:g})")
      info[prefix] = {**trained.meta(), "analysis_seconds": round(t.seconds, 1)}
  lines = [f"## Image change when the latents of the centre {size}x{size} square are re-sampled",
           "",
           "Pixel levels 0..255, over each set's first images (n). Outside: every pixel outside "
           f"the square; beyond ring: outside the square grown by {RING} pixels. Round trip: "
           "the largest change without re-sampling (invertibility; 0 expected). Paper (Fig. 16, "
           "figures only): the part of the image other than the centre is almost ideally "
           "preserved, for ID and OOD inputs.", "",
           "| train | model | set | n | outside mean abs | outside changed | outside > 8 | "
           "beyond ring mean abs | beyond ring changed | inside mean abs | round trip max |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  fmt = lambda v, f: "–" if v is None else format(v, f)
  for s in results:
    lines.append(f"| {s['id']} | {s['model']} | {s['set']} | {s['n']} | "
                 f"{s['outside_mean_abs']:.2f} | {s['outside_changed_frac']:.3f} | "
                 f"{s['outside_changed_gt8_frac']:.3f} | {fmt(s['beyond_ring_mean_abs'], '.2f')} | "
                 f"{fmt(s['beyond_ring_changed_frac'], '.3f')} | {s['inside_mean_abs']:.2f} | "
                 f"{s['round_trip_max_abs']} |")
  lines += skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "square": size, "temperature": temp, "n_stat": n_stat}
  return Result(title=f"Kirichenko et al. App. M.1: latent re-sampling ({r.preset} preset)",
                meta=meta, results=results, sections=["\n".join(lines)], figures=figs)


EXPERIMENT = cli.Experiment(
    "kirichenko_resample", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp", "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--k"),
    model_presets={"smoke": "smoke", "cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--square", type=int, default=10,
                        help="side of the centred square re-sampled (default 10)"),
             cli.option("--temperature", type=float, default=1.0,
                        help="prior temperature of the re-sampled latents (default 1)"),
             cli.option("--n-show", type=int, default=8, help="images per set in the figures"),
             cli.option("--n-stat", type=int, default=100,
                        help="images per set for the numbers (default 100)"),
             cli.option("--n-samples", type=int, default=32,
                        help="samples per model (Fig. 15; 0 for none)"),
             cli.option("--sample-temperature", type=float, default=1.0,
                        help="temperature of the samples (default 1)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
