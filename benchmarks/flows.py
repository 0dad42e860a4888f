"""Benchmark: flow training steps and scoring throughput, ours (JAX) vs a PyTorch CPU baseline.

Configurations of issue 3's "Speed" section:

* RealNVP in Kirichenko et al.'s FashionMNIST configuration (28 x 28 x 1; 2 scales, 6 residual
  blocks, 64 channels; 14.7 M parameters), BatchNorm in train mode;
* Glow with L = 3, K = 8, hidden 400 on 32 x 32 x 3 (LU 1x1 convs, affine couplings).

For each: median seconds of one step of the library's own jitted training step
(``ood_jax.train.make_train_step``: Adam with the model's warm-up/clipping defaults, as
``ood_jax.train.loop.train`` runs it) at batch ``--batch`` (default 32; compile and warm-up
excluded) and scoring throughput (eval-mode ``log_prob``, k = 1, batch
``--score-batch``) in images/s. The baseline is a same-architecture PyTorch model (``torch_flows.py``; NCHW,
``torch.set_num_threads(--threads)``) when ``torch`` is importable; otherwise the issue's quoted
numbers for the public PyTorch references on one core (4.7 s / 21.5 img/s; 1.16 s / 101 img/s)
are shown, labelled as quoted. Prints a markdown table, then the arithmetic ceiling: XLA's
FLOP count of the compiled step and scorer against this machine's float32 matmul peak
(``_ceiling.py``), i.e. the fastest any implementation could run, and the GFLOP/s each
target would need. Usage::

  python benchmarks/flows.py [--batch 32] [--score-batch 64] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import _ceiling
from ood_jax.models import make_model, registry
from ood_jax.train import make_train_step
from ood_jax.train.config import TrainConfig
from ood_jax.train.optim import make_optimizer
from ood_jax.train.state import create

QUOTED = {"realnvp": (4.7, 21.5), "glow": (1.16, 101.0)}   # torch refs, one core (issue 3)
TARGETS = {"realnvp": (2.0, 60.0), "glow": (0.5, 250.0)}


def _median_seconds(fn, steps: int) -> float:
  fn()                                 # compile + warm-up
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _model(name: str):
  if name == "realnvp":
    return make_model("realnvp", "kirichenko", (28, 28, 1))
  return make_model("glow", "paper", (32, 32, 3), levels=3, steps=8, hidden=400)


def jax_times(name: str, batch: int, score_batch: int, steps: int) -> tuple:
  """``(seconds per train step, scoring images/s, parameter count, (step FLOP, score FLOP per
  image))`` of our model; FLOPs are XLA's count of the compiled functions."""
  model = _model(name)
  shape = tuple(model.image_shape)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (batch, *shape), np.uint8))
  xs = jnp.asarray(rng.integers(0, 256, (score_batch, *shape), np.uint8))
  keys = {"params": jax.random.key(0), "dequant": jax.random.key(1), "sample": jax.random.key(2)}
  variables = jax.jit(lambda x: model.init(keys, x, train=False))(x)
  n_params = sum(int(a.size) for a in jax.tree.leaves(variables["params"]))
  # The library's own training step (as ``ood_jax.train.loop.train`` builds it): Adam with
  # the model's warm-up / clipping defaults, non-finite-step guard, BatchNorm in train mode.
  tx = make_optimizer(TrainConfig(**registry.spec(name).train_defaults), 100)
  state = [create(variables, tx)]
  step = jax.jit(make_train_step(model, tx, 0), donate_argnums=0)
  score = jax.jit(lambda v, x, key: model.apply(v, x, method="log_prob", rngs={"sample": key}))
  key = jax.random.key(3)
  flop = (_ceiling.flops(step, state[0], x),
          _ceiling.flops(score, variables, xs, key) / score_batch)

  def run_step():
    state[0], loss = step(state[0], x)
    jax.block_until_ready(loss)

  def scored():
    return {"params": state[0].params, **state[0].model_state}

  t_step = _median_seconds(run_step, steps)
  t_score = _median_seconds(lambda: jax.block_until_ready(score(scored(), xs, key)), steps)
  return t_step, score_batch / t_score, n_params, flop


# ------------------------------------------------------------------ PyTorch baseline


def torch_times(name: str, batch: int, score_batch: int, steps: int,
                threads: int) -> tuple[float, float, int]:
  """(seconds per train step, scoring images/s, parameter count) of the PyTorch baseline."""
  import torch
  torch.set_num_threads(threads)
  import torch_flows  # pylint: disable=import-outside-toplevel  (needs torch)
  model = torch_flows.build(name)
  shape = (28, 28, 1) if name == "realnvp" else (32, 32, 3)
  d = int(np.prod(shape))
  rng = np.random.default_rng(0)
  x = torch.tensor(rng.integers(0, 256, (batch, shape[2], shape[0], shape[1])), dtype=torch.float32)
  xs = torch.tensor(rng.integers(0, 256, (score_batch, shape[2], shape[0], shape[1])),
                    dtype=torch.float32)
  opt = torch.optim.Adam(model.parameters(), 1e-3)

  def run_step():
    model.train()
    log_pz, logdet = model((x + torch.rand_like(x)) / 256.0)
    loss = -(log_pz + logdet - d * math.log(256.0)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

  def run_score():
    model.eval()
    with torch.no_grad():
      model((xs + torch.rand_like(xs)) / 256.0)

  n_params = sum(p.numel() for p in model.parameters())
  return (_median_seconds(run_step, steps), score_batch / _median_seconds(run_score, steps),
          n_params)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--score-batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--models", default="realnvp,glow")
  args = ap.parse_args()
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    have_torch = True
  except ImportError:
    have_torch = False
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}), jax {jax.__version__}, train batch"
        f" {args.batch}, score batch {args.score_batch}, median of {args.steps}\n")
  print("| model | params (ours / torch) | ours: s/step | baseline: s/step | speed-up"
        " | ours: img/s | baseline: img/s | speed-up | target |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
  ceilings = []
  for name in args.models.split(","):
    t_step, rate, n, flop = jax_times(name, args.batch, args.score_batch, args.steps)
    ceilings.append((name, t_step, rate, flop))
    print(f"<!-- {name} ours: {t_step:.2f} s/step, {rate:.1f} img/s -->", flush=True)
    if have_torch:
      b_step, b_rate, bn = torch_times(name, args.batch, args.score_batch, args.steps,
                                       args.threads)
      label = f"{n / 1e6:.2f} M / {bn / 1e6:.2f} M"
    else:
      (b_step, b_rate), label = QUOTED[name], f"{n / 1e6:.2f} M / quoted"
    tgt = TARGETS[name]
    print(f"| {name} | {label} | {t_step:.2f} | {b_step:.2f} | {b_step / t_step:.1f}x"
          f" | {rate:.0f} | {b_rate:.0f} | {rate / b_rate:.1f}x"
          f" | <= {tgt[0]} s, >= {tgt[1]:.0f} img/s |")
  if not have_torch:
    print("\nbaseline: the issue's quoted numbers for the public PyTorch references on ONE core"
          " of this CPU (torch not importable here).")
  else:
    print(f"\nbaseline: same-architecture PyTorch {torch.__version__} model, NCHW,"
          f" {args.threads} threads, in this run.")
  peak = _ceiling.matmul_peak()
  print(f"\nArithmetic ceiling (XLA FLOP counts; float32 matmul peak here {peak:.0f} GFLOP/s):\n")
  print("| model | GFLOP per train step | ours GFLOP/s | s/step at peak | target s/step needs"
        " | GFLOP per scored image | ours GFLOP/s | img/s at peak | target img/s needs |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for name, t_step, rate, (f_step, f_img) in ceilings:
    tgt = TARGETS[name]
    print(f"| {name} | {f_step / 1e9:.1f} | {f_step / t_step / 1e9:.0f} | {f_step / peak / 1e9:.2f}"
          f" | {f_step / tgt[0] / 1e9:.0f} GFLOP/s | {f_img / 1e9:.2f} | {rate * f_img / 1e9:.0f}"
          f" | {peak * 1e9 / f_img:.0f} | {tgt[1] * f_img / 1e9:.0f} GFLOP/s |")


if __name__ == "__main__":
  main()
