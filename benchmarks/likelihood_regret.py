"""Benchmark: vectorised Likelihood Regret vs a one-image-at-a-time loop of the same math.

* ours: ``LikelihoodRegret.score``: one compiled call per chunk of ``--chunk`` images
  (vmap over images, each with its own encoder copy and Adam state, ``lax.scan`` over the
  steps, encoder convolutions as im2col matmuls, IWAE before/after in the same call);
* loop: what the reference does, image by image: a jitted single-image optimiser step
  called ``--steps`` times from Python (the model's own ``lax`` convolutions), then a jitted
  k-sample IWAE NLL before and after.

Both use the same optimiser, steps and k. Compilation and warm-up are excluded. The
arithmetic ceiling is printed too: XLA's FLOP count of one image's work (``steps`` optimiser
steps plus two IWAE NLLs, from the loop's compiled functions) against this machine's
float32 matmul peak (``_ceiling.py``); no implementation beats ``peak / FLOP`` img/s. The
model is the Likelihood-Regret reference VAE when its fixture weights are present (else
the ``vae`` cpu preset at its initialisation: the same architecture and cost). Usage::

  python benchmarks/likelihood_regret.py [--n 32] [--loop-n 4] [--chunk 16] [--steps 100] [--k 20]
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import _ceiling
from ood_jax.models import load_reference_vae, make_model
from ood_jax.scores import likelihood_regret as lr
from ood_jax.train import init_variables

FIXTURES = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "lr_vae_fmnist"


def load(n: int):
  if (FIXTURES / "weights.npz").exists():
    model, v = load_reference_vae(FIXTURES / "weights.npz")
    x = np.load(FIXTURES / "inputs.npz")["x_uint8_32"][..., None]
    return model, v, np.resize(x, (n, *x.shape[1:])), "reference LR VAE (fixture weights)"
  model = make_model("vae", "cpu", (32, 32, 1))
  x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
  return model, init_variables(model, x[:2], seed=0), x, "vae cpu preset (random init)"


def time_ours(model, v, x, chunk: int, steps: int, k: int) -> float:
  scorer = lr.LikelihoodRegret(k=k, steps=steps, chunk_size=chunk)
  state = scorer.fit(model, v, None)
  scorer.score(state, x[:chunk])                    # compile + warm-up
  t = time.perf_counter()
  scorer.score(state, x)
  return time.perf_counter() - t


def image_flops(model, v, x1, steps: int, k: int) -> float:
  """XLA's FLOP count of one image's regret: ``steps`` Adam steps and two k-sample NLLs."""
  tx = lr.LikelihoodRegret().optimizer()
  enc0 = v["params"]["encoder"]
  eps_steps, eps_iwae = lr.noise(jax.random.PRNGKey(0), steps, k, model.latent_dim)
  f_step = _ceiling.flops(lr.make_step(model, tx), v, enc0, tx.init(enc0), x1, eps_steps[0])
  f_nll = _ceiling.flops(lambda vv, x1, eps: model.apply(vv, x1, eps[None], method="log_weights"),
                         v, x1, eps_iwae)
  return steps * f_step + 2 * f_nll


def time_loop(model, v, x, steps: int, k: int) -> float:
  tx = lr.LikelihoodRegret().optimizer()
  step = jax.jit(lr.make_step(model, tx))
  nll = jax.jit(lambda vv, x1, eps: -(jax.nn.logsumexp(
      model.apply(vv, x1, eps[None], method="log_weights")[0]) - math.log(k)))
  enc0 = v["params"]["encoder"]

  def one(x1, key):
    eps_steps, eps_iwae = lr.noise(key, steps, k, model.latent_dim)
    enc, opt = enc0, tx.init(enc0)
    for s in range(steps):
      enc, opt, _ = step(v, enc, opt, x1, eps_steps[s])
    return nll(v, x1, eps_iwae) - nll(lr.with_encoder(v, enc), x1, eps_iwae)

  jax.block_until_ready(one(x[:1], jax.random.PRNGKey(0)))      # compile + warm-up
  t = time.perf_counter()
  for i in range(len(x)):
    jax.block_until_ready(one(x[i:i + 1], jax.random.PRNGKey(i)))
  return time.perf_counter() - t


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=32, help="images for the vectorised scorer")
  ap.add_argument("--loop-n", type=int, default=4, help="images for the loop")
  ap.add_argument("--chunk", type=int, default=16)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--k", type=int, default=20)
  args = ap.parse_args()
  model, v, x, what = load(max(args.n, args.loop_n))
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, {os.cpu_count()} CPUs;"
        f" model: {what}; steps {args.steps}, k {args.k}, chunk {args.chunk}\n")
  t_ours = time_ours(model, v, x[:args.n], args.chunk, args.steps, args.k)
  t_loop = time_loop(model, v, x[:args.loop_n], args.steps, args.k)
  ours, loop = args.n / t_ours, args.loop_n / t_loop
  print("| implementation | images | seconds | img/s | speed-up |")
  print("|---|---:|---:|---:|---:|")
  print(f"| loop: one image at a time, jitted step per Adam step | {args.loop_n} | {t_loop:.2f} |"
        f" {loop:.2f} | 1.0x |")
  print(f"| ours: vmap over {args.chunk} images x scan over steps | {args.n} | {t_ours:.2f} |"
        f" {ours:.2f} | {ours / loop:.1f}x |")
  flop = image_flops(model, v, x[:1], args.steps, args.k)
  peak = _ceiling.matmul_peak()
  print(f"\nceiling: {flop / 1e9:.2f} GFLOP per image (XLA count), float32 matmul peak"
        f" {peak:.0f} GFLOP/s -> at most {peak * 1e9 / flop:.2f} img/s; ours runs at"
        f" {ours * flop / 1e9:.0f} GFLOP/s ({ours * flop / 1e9 / peak:.0%} of peak). 10x the loop"
        f" ({10 * loop:.1f} img/s) would need {10 * loop * flop / 1e9:.0f} GFLOP/s.")


if __name__ == "__main__":
  main()
