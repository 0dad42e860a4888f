"""Benchmark: fast transposed convolution (sub-pixel forward, custom VJP) vs the plain one.

Times one jitted Adam train step of the reference ConvVAE (categorical256, batch 64 by
default) with ``fast_convt_grad=True`` and ``False`` (compile and warm-up excluded; median
of ``--steps`` steps), then, for each decoder transposed convolution alone, the forward
pass (sub-pixel vs ``lhs_dilation``) and the kernel gradient (custom VJP vs autodiff).
Then, per stride-2 layer, forward / input gradient / kernel gradient with the phases as
convolutions vs as im2col matmuls (``matmul=True``; the VAE uses it for its wide output
layer). Prints markdown tables. Usage::

  python benchmarks/conv_transpose.py [--batch 64] [--steps 10] [--channels 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ood_jax.models import make_model
from ood_jax.models.conv_transpose import conv_transpose


def _median_seconds(fn, steps: int) -> float:
  jax.block_until_ready(fn())          # compile + warm-up
  jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def time_train_step(fast: bool, batch: int, steps: int, channels: int) -> float:
  """Median seconds of one Adam step (forward, backward, update, BN-stat update)."""
  model = make_model("vae", "paper", (32, 32, channels), fast_convt_grad=fast)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 32, 32, channels), np.uint8))
  variables = jax.jit(lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                                         x[:1], train=False))()
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, stats, opt, key):
    def loss_fn(p):
      loss, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                              mutable=["batch_stats"], rngs={"sample": key})
      return loss.mean(), upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, loss

  state = [variables["params"], variables["batch_stats"], tx.init(variables["params"])]
  key = jax.random.key(2)

  def run():
    nonlocal state
    params, stats, opt, loss = step(*state, key)
    state = [params, stats, opt]
    return loss
  return _median_seconds(run, steps)


def _decoder_layers(channels: int) -> list[tuple[str, int, int, int, int, int]]:
  """(name, input size, C_in, C_out, stride, padding) of the decoder's transposed convs."""
  ngf, nz = (32, 100) if channels == 1 else (64, 200)
  return [("initial 100->4ngf, 1->4", 1, nz, 4 * ngf, 1, 0),
          ("pyramid 4ngf->2ngf, 4->8", 4, 4 * ngf, 2 * ngf, 2, 1),
          ("pyramid 2ngf->ngf, 8->16", 8, 2 * ngf, ngf, 2, 1),
          ("final ngf->256C, 16->32", 16, ngf, 256 * channels, 2, 1)]


def time_forwards(batch: int, steps: int, channels: int) -> list[tuple[str, float, float]]:
  """Median seconds of the forward pass alone for each decoder transposed convolution:
  ``(name, fast, plain)`` with fast = sub-pixel phases (stride 2), plain = the
  ``lhs_dilation`` convolution. The two are timed alternately (a busy CPU drifts)."""
  rng = np.random.default_rng(0)
  out = []
  for name, h, cin, cout, s, p in _decoder_layers(channels):
    x = jnp.asarray(rng.normal(size=(batch, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, cin, cout)) * 0.02, jnp.float32)
    fns = [jax.jit(lambda x, w, s=s, p=p, fast=fast: conv_transpose(x, w, s, p, fast_grad=fast))
           for fast in (True, False)]
    times = ([], [])
    for f in fns:
      jax.block_until_ready(f(x, w))   # compile + warm-up
    for _ in range(steps):
      for f, t_list in zip(fns, times):
        t = time.perf_counter()
        jax.block_until_ready(f(x, w))
        t_list.append(time.perf_counter() - t)
    out.append((name, statistics.median(times[0]), statistics.median(times[1])))
  return out


def time_kernel_grads(fast: bool, batch: int, steps: int, channels: int) -> list[tuple[str, float]]:
  """Median seconds of dL/dw alone for each decoder transposed convolution."""
  rng = np.random.default_rng(0)
  out = []
  for name, h, cin, cout, s, p in _decoder_layers(channels):
    x = jnp.asarray(rng.normal(size=(batch, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, cin, cout)) * 0.02, jnp.float32)
    y_shape = jax.eval_shape(lambda: conv_transpose(x, w, s, p)).shape
    g = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    f = jax.jit(lambda x, w, g, s=s, p=p: jax.vjp(
        lambda ww: conv_transpose(x, ww, s, p, fast_grad=fast), w)[1](g)[0])
    out.append((name, _median_seconds(lambda: f(x, w, g), steps)))
  return out


def time_matmul_phases(batch: int, steps: int, channels: int) -> list[tuple]:
  """Per decoder layer, ``(name, [(fwd, dx, dw) ms for sub-pixel conv, for phase matmul])``:
  the choice behind ``ConvTranspose(matmul=...)``."""
  rng = np.random.default_rng(0)
  out = []
  for name, h, cin, cout, s, p in _decoder_layers(channels):
    if s == 1:
      continue
    x = jnp.asarray(rng.normal(size=(batch, h, h, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 4, cin, cout)) * 0.02, jnp.float32)
    y_shape = jax.eval_shape(lambda: conv_transpose(x, w, s, p)).shape
    g = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    per = []
    for mm in (False, True):
      f = lambda a, b, s=s, p=p, mm=mm: conv_transpose(a, b, s, p, matmul=mm)
      fwd = jax.jit(f)
      dx = jax.jit(lambda a, b, g, f=f: jax.vjp(f, a, b)[1](g)[0])
      dw = jax.jit(lambda a, b, g, f=f: jax.vjp(f, a, b)[1](g)[1])
      per.append(tuple(1e3 * _median_seconds(lambda fn=fn, args=args: fn(*args), steps)
                       for fn, args in ((fwd, (x, w)), (dx, (x, w, g)), (dw, (x, w, g)))))
    out.append((name, per))
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
  args = ap.parse_args()
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, batch {args.batch},"
        f" {args.channels} channel(s), median of {args.steps}\n")
  rows = [("VAE train step (Adam, BN train mode)",
           time_train_step(True, args.batch, args.steps, args.channels),
           time_train_step(False, args.batch, args.steps, args.channels))]
  for name, f, s in time_forwards(args.batch, args.steps, args.channels):
    rows.append((f"decoder forward: {name}", f, s))
  fast_k = time_kernel_grads(True, args.batch, args.steps, args.channels)
  slow_k = time_kernel_grads(False, args.batch, args.steps, args.channels)
  for (name, f), (_, s) in zip(fast_k, slow_k):
    rows.append((f"decoder kernel grad: {name}", f, s))
  rows.append(("decoder kernel grads, all 4", sum(f for _, f in fast_k), sum(s for _, s in slow_k)))
  print("| what | fast: sub-pixel fwd + custom VJP (ms) | plain: lhs_dilation + autodiff (ms)"
        " | speed-up |")
  print("|---|---:|---:|---:|")
  for name, f, s in rows:
    print(f"| {name} | {f * 1e3:.1f} | {s * 1e3:.1f} | {s / f:.1f}x |")
  print("\nPhases as im2col matmuls (`matmul=True`, plain autodiff) vs sub-pixel convolutions"
        " (custom VJP), ms:\n")
  print("| layer | conv fwd | conv dx | conv dw | matmul fwd | matmul dx | matmul dw |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name, (conv, mm) in time_matmul_phases(args.batch, args.steps, args.channels):
    print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in conv + mm) + " |")


if __name__ == "__main__":
  main()
