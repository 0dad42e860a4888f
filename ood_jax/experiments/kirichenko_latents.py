"""Kirichenko et al. section 3 (Figs 2, 8; App. H): flow latents keep the input's edges.

    python -m ood_jax.experiments.kirichenko_latents                   # cpu preset
    python -m ood_jax.experiments.kirichenko_latents --preset smoke --out runs/k_latents_smoke

For every pair of ``--pairs`` (default FashionMNIST -> MNIST and CIFAR-10 -> CelebA; the
paper's colour model is trained on CelebA, which has no training split here) trains (or
loads from the checkpoint cache shared with the other experiments) the flows of ``--models``
(default RealNVP and Glow at the run's model preset: ``kirichenko_cpu`` at ``cpu``,
``kirichenko`` at ``paper``; on colour ID sets only those also in ``--colour-models``,
default RealNVP, as the paper) and shows, for the first ``--n-show`` images of the ID test
split and of each OOD set: the image, its edge map, the latent unsqueeze(z) of one
dequantisation draw (``z = f(x + u)``, eval mode), the latent averaged over ``--k-avg``
(K = 40) draws, ``1/K sum_k unsqueeze(f(x + u_k))``, and (models with BatchNorm) the latent
with BatchNorm in train mode, the batch being the set's first ``--bn-batch`` images. Latents
are in App. G's image space (squeezes undone, factored-out latents joined; ``views.py``),
clipped to [-2, 2] as the reference notebook; colour latents also as their blue channel
(the paper's panel 7).

The number (ours; the paper shows pictures): per set, the Pearson correlation over pixels
between the latent's magnitude ``|z|`` (mean over channels) and the image's edge map
``|grad x|`` (central differences of the channel-mean image), averaged over the first
``--n-stat`` images: for the single-draw latent, the K-draw average and the BatchNorm
train-mode latent. Expected (paper): "we can recognize edges of the inputs in their latent
representations", clearest in the average; in train mode "for in-distribution data there is
no structure visible ..., the out-of-distribution latent clearly preserves the shape".

Cost at ``cpu`` (2 cores): training about 8 min (RealNVP, FashionMNIST), 23 min (Glow) and
10 min (RealNVP, CIFAR-10; 0.40 s per batch-32 step) from cold, nothing once
``kirichenko_table1`` or the other Kirichenko experiments cached them; the analysis (K = 40
draws of 100 images per set) a few minutes.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline
from ood_jax.experiments.kirichenko_couplings import check_flows, run_slug, skipped_lines
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list
from ood_jax.models import registry as model_registry
from ood_jax.models.flows import views

DEFAULT_PAIRS = "fashion_mnist:mnist,cifar10:celeb_a"
CLIP = 2.0


def check(r: Run) -> None:
  check_flows(r.models)
  availability.parse_pairs(r.options["pairs"])
  for flag in ("n_show", "k_avg", "bn_batch", "n_stat"):
    if int(r.options[flag]) < 1:
      raise InvalidInputError(f"--{flag.replace('_', '-')} must be >= 1, got {r.options[flag]}.")
  if int(r.options["bn_batch"]) < 2:
    raise InvalidInputError(
        f"--bn-batch must be >= 2 (batch statistics), got {r.options['bn_batch']}.")


# ----------------------------------------------------------------------------- numbers


def edge_map(x_uint8: np.ndarray) -> np.ndarray:
  """``N x H x W``: ``|grad x|`` of the channel-mean image (central differences, one-sided
  at the border; pixel levels per pixel)."""
  g = np.asarray(x_uint8, np.float64).mean(axis=-1)
  gy, gx = np.gradient(g, axis=(1, 2))
  return np.sqrt(gx ** 2 + gy ** 2)


def magnitude(z: np.ndarray) -> np.ndarray:
  """``N x H x W``: ``|z|`` averaged over the channels."""
  return np.abs(np.asarray(z, np.float64)).mean(axis=-1)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image Pearson correlation of two ``N x ...`` arrays over everything but the first
  axis (NaN where either is constant)."""
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  a = a - a.mean(axis=1, keepdims=True)
  b = b - b.mean(axis=1, keepdims=True)
  den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, np.sum(a * b, axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _mean(v: np.ndarray):
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else None


def has_batchnorm(name: str, model) -> bool:
  hb = model_registry.spec(name).has_batchnorm
  return bool(hb(model) if callable(hb) else hb)


def batched(fn, x: np.ndarray, size: int) -> np.ndarray:
  """``fn`` over ``x`` in chunks of ``size`` images, the last chunk padded with copies of the
  first image (one compile per chunk shape), results concatenated and trimmed to ``len(x)``;
  ``fn(chunk, i)`` gets the chunk's start ``i``."""
  out = []
  for i in range(0, len(x), size):
    chunk = x[i:i + size]
    real = len(chunk)
    if real < size and i > 0:
      chunk = np.concatenate([chunk, np.repeat(x[:1], size - real, axis=0)])
    out.append(fn(chunk, i)[:real])
  return np.concatenate(out)


def latents_of(model, variables, x: np.ndarray, key, k_avg: int, bn: bool,
               bn_batch: int, batch: int = 100) -> dict[str, np.ndarray]:
  """``{'z', 'z_avg', 'z_bn_train'?}`` image-space latents (``N x H x W x C``) of ``x``:
  one draw, the ``k_avg``-draw average (eval mode, about ``batch`` images per call), and
  with ``bn`` the train-mode latent of the first ``bn_batch`` images (their own batch
  statistics)."""
  k1, k2, k3 = jax.random.split(key, 3)
  size = min(len(x), batch)
  z = batched(lambda c, i: views.latent_image(model, variables, c, rng=jax.random.fold_in(k1, i)),
              x, size)
  per = min(len(x), max(1, batch // k_avg))
  z_avg = batched(lambda c, i: views.latent_image(model, variables, c, k=k_avg,
                                                  rng=jax.random.fold_in(k2, i)), x, per)
  out = {"z": z, "z_avg": z_avg}
  if bn:
    out["z_bn_train"] = views.latent_image(model, variables, x[:bn_batch], rng=k3, train=True)
  return out


def latent_stats(x: np.ndarray, lat: dict[str, np.ndarray]) -> dict:
  """Mean per-image correlation of ``|latent|`` with the edge map, per latent kind."""
  edges = edge_map(x)
  return {f"edge_corr_{k}": _mean(pearson(magnitude(v), edges[:len(v)])) for k, v in lat.items()}


# ----------------------------------------------------------------------------- figures


def draw_latents(path: str, shown: dict, colour: bool, title: str, k_avg: int) -> str:
  """Rows per set: image, edge map, latents (clipped to [-2, 2]; colour: also the blue
  channel), columns the shown images."""
  names = {"z": "z", "z_avg": f"z avg K={k_avg}", "z_bn_train": "z BN train"}
  rows = {}
  for label, (x, lat) in shown.items():
    rows[f"{label} image"] = x
    rows[f"{label} |grad x|"] = edge_map(x)[..., None]
    for key, z in lat.items():
      zc = np.clip(z, -CLIP, CLIP)
      rows[f"{label} {names[key]}"] = zc
      if colour:
        rows[f"{label} {names[key]} blue"] = zc[..., 2:3]
  return figures.image_grid(path, rows, title=title, norm="row")


# ----------------------------------------------------------------------------- experiment


def models_for(ri: Run, channels: int, colour_models: list[str]) -> list[str]:
  return [m for m in ri.models if channels == 1 or m in colour_models]


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  colour_models = split_list(r.options["colour_models"])
  n_show, k_avg = int(r.options["n_show"]), int(r.options["k_avg"])
  bn_batch, n_stat = int(r.options["bn_batch"]), int(r.options["n_stat"])
  runs = [r.for_id(i, o) for i, o in runnable]
  plans = [(ri, pipeline.sets_for(ri)) for ri in runs]       # every model built (checked) first
  figs, results, info, lines = {}, [], {}, []
  for ri, by_model in plans:
    channels = next(iter(by_model.values())).hwc[-1]
    for name in models_for(ri, channels, colour_models):
      sets = by_model[name]
      trained = pipeline.train_or_load(ri, name, sets)
      model, variables = trained.model, trained.variables
      bn = has_batchnorm(name, model)
      named = {f"{sets.test.name} (ID)": sets.test.x, **{n: s.x for n, s in sets.ood.items()}}
      shown = {}
      with pipeline.Timer() as t:
        for j, (label, x) in enumerate(named.items()):
          n = min(len(x), n_stat)
          key = jax.random.fold_in(jax.random.PRNGKey(ri.seed), j)
          lat = latents_of(model, variables, x[:max(n, n_show)], key, k_avg, bn,
                           min(bn_batch, len(x)))
          stats = latent_stats(x[:n], {k: v[:n] for k, v in lat.items()})
          results.append({"id": ri.id, "model": name, "set": label, "n": n,
                          "n_bn_batch": min(bn_batch, len(x)) if bn else None, **stats})
          shown[label] = (x[:n_show], {k: v[:n_show] for k, v in lat.items()})
      prefix = f"latents_{name}_{run_slug(ri.id)}"
      figs[f"{prefix}.png"] = functools.partial(
          draw_latents, shown=shown, colour=channels == 3, k_avg=k_avg,
          title=f"{name} trained on {ri.id}: latents unsqueeze(z) (clipped to [-2, 2])")
      info[prefix] = {**trained.meta(), "batchnorm": bn, "analysis_seconds": round(t.seconds, 1)}
  lines = ["## Latents vs the image's edges", "",
           "Mean per-image Pearson correlation between |z| (mean over channels) and the edge "
           "map |grad x| of the image, for one dequantisation draw, the average over "
           f"K = {k_avg} draws and (BatchNorm models) train-mode BatchNorm with the set's "
           f"first {bn_batch} images as the batch. Paper (figures only): the edges show in "
           "the latents of ID and OOD images, clearest in the average; in train mode the OOD "
           "latent keeps the input's shape, the ID latent does not.", "",
           "| train | model | set | n | r single draw | r average | r BN train |",
           "|---|---|---|---:|---:|---:|---:|"]
  fmt = lambda v: "–" if v is None else f"{v:.3f}"
  for row in results:
    lines.append(f"| {row['id']} | {row['model']} | {row['set']} | {row['n']} | "
                 f"{fmt(row.get('edge_corr_z'))} | {fmt(row.get('edge_corr_z_avg'))} | "
                 f"{fmt(row.get('edge_corr_z_bn_train'))} |")
  lines += skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "k_avg": k_avg, "bn_batch": bn_batch, "n_stat": n_stat}
  return Result(title=f"Kirichenko et al. section 3: flow latents ({r.preset} preset)", meta=meta,
                results=results, sections=["\n".join(lines)], figures=figs)


EXPERIMENT = cli.Experiment(
    "kirichenko_latents", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp,glow", "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--k"),
    model_presets={"smoke": "smoke", "cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--colour-models", default="realnvp",
                        help="the models of --models also run on colour ID sets (default realnvp)"),
             cli.option("--n-show", type=int, default=6, help="images per set in the figures"),
             cli.option("--k-avg", type=int, default=40,
                        help="dequantisation draws averaged (the paper's K = 40)"),
             cli.option("--bn-batch", type=int, default=32,
                        help="batch of the train-mode BatchNorm latents (default 32)"),
             cli.option("--n-stat", type=int, default=100,
                        help="images per set for the edge correlations (default 100)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
