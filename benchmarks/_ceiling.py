"""FLOP counts and this machine's float32 matmul peak: the arithmetic ceiling of a benchmark.

``flops(fn, *args)`` is XLA's own count (``compiled.cost_analysis()['flops']``) for one call
of ``jax.jit(fn)``; ``matmul_peak()`` is the best of a few large float32 matmuls, in
GFLOP/s. ``peak / flops`` bounds the calls per second no implementation can beat on this
device; the benchmarks print it beside their targets.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def flops(fn, *args) -> float:
  """XLA's FLOP count of one call of ``jax.jit(fn)(*args)`` (nan if the backend has none)."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """Best float32 GFLOP/s of an ``n x n`` by ``n x n`` matmul (all devices' threads)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(f(a, a))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(a, a))
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9
