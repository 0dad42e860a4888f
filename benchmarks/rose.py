"""Benchmark: ROSE scoring (DIAG, EKFAC) and EKFAC fit vs a one-image-at-a-time baseline.

Model: the reference ConvVAE (ngf 32, latent 100, categorical-256 decoder, 32x32x1), with
the Likelihood-Regret fixture weights when ``../shared/fixtures/lr_vae_fmnist/weights.npz``
exists, else random DCGAN initialisation (speed does not depend on the weights). Layers:
the five encoder convolutions. Images: random uint8 (content does not change the cost).

* ours: ``Rose.score`` (chunked, one compiled call per chunk: patches x output gradients,
  batched matmuls) and ``Rose.fit`` with ``n_fisher = 1000`` (compile excluded: a second,
  warm fit is timed; the fit also scores ``n_norm`` held-out images for the z-scores, so
  "Fisher only" subtracts the time of scoring those).
* baseline: the straightforward port of the public code: a Python loop over images, each
  a jitted batch-1 ``jax.grad`` of that image's loss over the encoder parameters, each
  layer's gradient matrix ``G`` formed and rotated explicitly (``U_Aᵀ G U_S``), same
  statistics as ours; its fit accumulates ``A``, ``S`` from batch-1 activations and output
  gradients (hooks), ``eigh``, then ``Λ`` from the explicit rotations, timed on
  ``--base-images`` images and extrapolated to N = 1000. The baseline's layer scores on the
  first images are checked against ours (same noise).

Usage::

  python benchmarks/rose.py [--images 512] [--base-images 24] [--chunk 128]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import ood_jax
from ood_jax.models import load_reference_vae, make_model
from ood_jax.scores import fisher
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores.rose import Rose

FIXTURE = (pathlib.Path(ood_jax.__file__).resolve().parent.parent.parent / "shared" / "fixtures"
           / "lr_vae_fmnist" / "weights.npz")


def reference_model():
  if FIXTURE.exists():
    model, variables = load_reference_vae(FIXTURE)
    return model, variables, "fixture weights"
  model = make_model("vae", "cpu", (32, 32, 1))
  x = np.zeros((2, 32, 32, 1), np.uint8)
  variables = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x,
                         train=False)
  return model, variables, "random init"


def _timed(fn):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


def _cpu_timed(fn):
  """``(out, wall seconds, process CPU seconds)``: CPU time is less sensitive to other
  processes on a shared machine (on an idle 2-core one, wall is about CPU / 2)."""
  t0, c0 = time.perf_counter(), time.process_time()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0, time.process_time() - c0


def _matrix(g: dict) -> jax.Array:
  k = g["kernel"]
  m = k.reshape(-1, k.shape[-1])
  return jnp.concatenate([m, g["bias"][None]], axis=0) if "bias" in g else m


def baseline_fns(model, layers, ekfac: bool):
  """Jitted batch-1 functions of the baseline: layer scores, A/S factors, Λ terms (the
  statistics are arguments, not compile-time constants)."""
  objective = psg.objective_for(model)
  names = [l.path.split("/")[1] for l in layers]

  def grads(v, x1, eps1):
    def loss(enc):
      vv = {**v, "params": {**v["params"], "encoder": enc}}
      return objective.batched(vv, x1, eps1)[0]
    g = jax.grad(loss)(v["params"]["encoder"])
    return [_matrix(g[n]) for n in names]

  def rotated(gs, stats):
    if not ekfac:
      return gs
    return [stats[l.path]["ua"].T @ g @ stats[l.path]["us"] for l, g in zip(layers, gs)]

  @jax.jit
  def score(v, stats, x1, eps1):
    gs = rotated(grads(v, x1, eps1), stats)
    return jnp.stack([jnp.sum(g ** 2 * stats[l.path]["inv"]) for l, g in zip(layers, gs)])

  @jax.jit
  def factors(v, x1, eps1):
    pd = psg.patches_and_deltas(objective, list(layers), v, x1, eps1)
    return {p: fisher.factor_sums(b)[:2] for p, b in pd.items()}

  @jax.jit
  def lam(v, stats, x1, eps1):
    return [g ** 2 for g in rotated(grads(v, x1, eps1), stats)]
  return score, factors, lam


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--images", type=int, default=512, help="images scored by ours")
  ap.add_argument("--base-images", type=int, default=24, help="images for the slow baseline")
  ap.add_argument("--chunk", type=int, default=128)
  ap.add_argument("--n-fisher", type=int, default=1000)
  args = ap.parse_args()
  model, variables, source = reference_model()
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (max(args.images, args.n_fisher) + 1000, 32, 32, 1), dtype=np.uint8)
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}; reference VAE "
        f"({source}); chunk {args.chunk}; ours on {args.images} images, baseline on "
        f"{args.base_images}\n")
  rows = []
  for fisher_kind in ("diag", "ekfac"):
    sc = Rose(fisher=fisher_kind, n_fisher=args.n_fisher, n_norm=1000, chunk_size=args.chunk)
    id_x = x[:args.n_fisher + 1000]
    _, t_cold = _timed(lambda: sc.fit(model, variables, id_x).params)
    state, t_fit = _timed(lambda: sc.fit(model, variables, id_x))
    xs = x[:args.images]
    sc.score(state, xs[:args.chunk])                        # compile this chunk shape
    _, t_score, c_score = _cpu_timed(lambda: sc.score(state, xs))
    ours_rate = len(xs) / t_score
    t_fisher = t_fit - 1000 / ours_rate

    # Baseline: same statistics, one image at a time.
    layers = sc.chosen_layers(model, variables, x)
    stats = jax.device_get(state.params["stats"])
    b_score, b_factors, b_lam = baseline_fns(model, layers, fisher_kind == "ekfac")
    n_b = args.base_images
    eps = psg.objective_for(model).noise(jax.random.fold_in(jax.random.PRNGKey(0), 0),
                                         min(args.chunk, len(xs)))
    b_score(variables, stats, x[:1], eps[:1]).block_until_ready()
    base, t_base, c_base = _cpu_timed(lambda: np.stack([
        np.asarray(b_score(variables, stats, x[i:i + 1], eps[i:i + 1])) for i in range(n_b)]))
    base_rate = n_b / t_base
    ours_raw = np.asarray(state.chunk_fn.layer_scores(
        {"v": state.params["v"], "stats": state.params["stats"]}, jnp.asarray(xs[:len(eps)]),
        jax.random.fold_in(jax.random.PRNGKey(0), 0)))[:n_b]
    rel = float(np.max(np.abs(ours_raw - base) / np.abs(base)))
    rows.append((f"{fisher_kind.upper()} score (img/s)", ours_rate, base_rate,
                 ours_rate / base_rate,
                 f"CPU ms/img: ours {c_score / len(xs) * 1e3:.2f}, baseline "
                 f"{c_base / n_b * 1e3:.1f}; layer scores agree to {rel:.1e} (rel)"))
    if fisher_kind == "ekfac":
      b_factors(variables, x[:1], eps[:1])
      b_lam(variables, stats, x[:1], eps[:1])
      t0 = time.perf_counter()
      tot = None
      for i in range(n_b):
        f = b_factors(variables, x[i:i + 1], eps[i:i + 1])
        tot = f if tot is None else jax.tree.map(jnp.add, tot, f)
      jax.block_until_ready(tot)
      t_pass1 = (time.perf_counter() - t0) / n_b
      _, t_eigh = _timed(lambda: [fisher.eigenbasis(m) for ab in tot.values() for m in ab])
      t0 = time.perf_counter()
      lam = [b_lam(variables, stats, x[i:i + 1], eps[i:i + 1]) for i in range(n_b)]
      jax.block_until_ready(lam)
      t_pass2 = (time.perf_counter() - t0) / n_b
      base_fit = args.n_fisher * (t_pass1 + t_pass2) + t_eigh
      rows.append((f"EKFAC fit, Fisher only, N={args.n_fisher} (s)", t_fisher, base_fit,
                   base_fit / t_fisher, f"baseline extrapolated from {n_b} images"))
      rows.append((f"EKFAC fit incl. 1000 held-out for z-scores (s)", t_fit,
                   base_fit + 1000 / base_rate, (base_fit + 1000 / base_rate) / t_fit,
                   f"cold (with compile): {t_cold:.1f} s"))
    else:
      rows.append((f"DIAG fit incl. 1000 held-out, N={args.n_fisher} (s)", t_fit, float("nan"),
                   float("nan"), f"cold (with compile): {t_cold:.1f} s"))
  print("| what | ours | baseline (one image at a time) | speed-up | note |")
  print("|---|---:|---:|---:|---|")
  for name, ours, base, ratio, note in rows:
    b, r = ("–", "–") if np.isnan(base) else (f"{base:.1f}", f"{ratio:.1f}x")
    print(f"| {name} | {ours:.1f} | {b} | {r} | {note} |")


if __name__ == "__main__":
  main()
