"""Benchmark: ``bn_mixed``'s vectorised train-mode batches vs the straightforward loop.

Scores ``--n`` test images with S_{b,r} (batch ``--b``, ratio ``--r``, ``--rounds`` K,
``--k`` importance samples) on the ``cpu``-size VAE (random init; speed does not depend
on the weights) two ways over the *same* compositions and rngs:

* ``vectorised``: ``train_mode.mean_test_log_prob``: batches stacked and vmapped, one
  compiled call per chunk of ``max_latents // (b k)`` batches (what the scorer runs);
* ``loop``: one jitted single-batch train-mode forward per batch in a Python loop.

Compilation is excluded (one warm-up pass each); the two are timed alternately and the
median of ``--repeats`` passes is reported, with their largest difference in nats.
Prints a markdown table. Usage::

  python benchmarks/bn_mixed.py [--n 256] [--b 64] [--r 0.1] [--rounds 1] [--k 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from ood_jax.models import make_model
from ood_jax.scores import train_mode
from ood_jax.scores.compositions import compositions
from ood_jax.train import init_variables


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=256, help="test images scored")
  p.add_argument("--pool", type=int, default=1024, help="training images in the pool")
  p.add_argument("--b", type=int, default=64)
  p.add_argument("--r", type=float, default=0.1)
  p.add_argument("--rounds", type=int, default=1, help="K, Monte-Carlo rounds")
  p.add_argument("--k", type=int, default=1, help="importance samples per image")
  p.add_argument("--max-latents", type=int, default=2560)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--channels", type=int, default=1)
  args = p.parse_args(argv)

  hwc = (32, 32, args.channels)
  rng = np.random.default_rng(0)
  x_test = rng.integers(0, 256, (args.n, *hwc), dtype=np.uint8)
  pool = rng.integers(0, 256, (args.pool, *hwc), dtype=np.uint8)
  model = make_model("vae", "cpu", hwc)
  variables = jax.device_put(init_variables(model, pool[:2], seed=0))
  comps = compositions(args.n, args.pool, b=args.b, r=args.r, rounds=args.rounds, seed=0)
  per_call = train_mode.batches_per_call(args.b, args.k, args.max_latents, comps.num_batches)
  vec_fn = train_mode.stacked_fn(model, args.k, seed=0)
  loop_fns = train_mode.loop_fns(model, args.k, 0)
  runs = {
      "vectorised": lambda: train_mode.mean_test_log_prob(vec_fn, variables, x_test, pool, comps,
                                                          per_call),
      "loop": lambda: train_mode.loop_mean_test_log_prob(loop_fns, variables, x_test, pool, comps),
  }
  out = {name: fn() for name, fn in runs.items()}           # compile + warm-up
  diff = float(np.max(np.abs(out["vectorised"] - out["loop"])))
  times = {name: [] for name in runs}
  for _ in range(args.repeats):
    for name, fn in runs.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  med = {name: statistics.median(ts) for name, ts in times.items()}
  imgs = args.n * args.rounds
  print(f"bn_mixed S_b,r: VAE cpu size {hwc}, n = {args.n}, b = {args.b}, r = {args.r} "
        f"(m = {comps.m}), K = {args.rounds}, k = {args.k}, {comps.num_batches} batches, "
        f"{per_call} batches per vectorised call; devices: {jax.devices()}")
  print(f"max |vectorised - loop| = {diff:.2e} nats\n")
  print("| method | seconds (median) | test img/s | batches/s | speed-up vs loop |")
  print("|---|---:|---:|---:|---:|")
  for name in runs:
    s = med[name]
    print(f"| {name} | {s:.3f} | {imgs / s:.1f} | {comps.num_batches / s:.1f} | "
          f"{med['loop'] / s:.2f}x |")


if __name__ == "__main__":
  main()
