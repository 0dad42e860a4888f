"""Benchmark: train-step time of any model and preset, with the ConvVAE step as the yardstick.

Times one jitted step of the library's own ``ood_jax.train.make_train_step`` with
``ood_jax.train.optim.make_optimizer`` and ``ood_jax.train.state.create`` (the step
``ood_jax.train.loop.train`` runs: Adam with the model's default warm-up/clipping settings,
BatchNorm in train mode) at batch ``--batch`` on FashionMNIST-shaped input (each model's input size from the registry: 28 x 28
x 1 for the flows and PixelCNN++, 32 x 32 x 1 for the VAE), interleaved round-robin so every
model sees the same machine load (compile and warm-up excluded; median of ``--steps``
rounds). Prints a markdown table with the ratio to the ``vae:cpu`` step. Weights are drawn
with numpy (a jitted threefry init takes about a minute to compile on XLA:CPU). Usage::

  python benchmarks/train_steps.py [--steps 5] [--batch 64] \
      [--runs vae:cpu realnvp:cpu glow:cpu pixelcnnpp:cpu pixelcnnpp:cpu:num_filters=32]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.experiments import settings
from ood_jax.models import make_model
from ood_jax.models import registry
from ood_jax.train import make_train_step
from ood_jax.train.config import TrainConfig
from ood_jax.train.optim import make_optimizer
from ood_jax.train.state import create


def _numpy_variables(model, x, seed: int = 0) -> dict:
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "sample": jax.random.key(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 1 / math.sqrt(int(np.prod(s.shape[:-1]))), s.shape), s.dtype)
    if name == "perm":  # LU 1x1 convs (flow_constants): identity permutation
      return jnp.eye(s.shape[0], dtype=s.dtype)
    if name in ("scale", "var", "sign_s"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def make_step(name: str, preset: str, batch: int, **overrides):
  """A no-argument callable running one train step (state kept between calls)."""
  shape = registry.input_shape(name, (28, 28, 1))
  model = make_model(name, preset, shape, **overrides)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch,) + tuple(shape), np.uint8))
  tx = make_optimizer(TrainConfig(**registry.train_defaults(name)), 100)
  state = [create(_numpy_variables(model, x), tx)]
  step = jax.jit(make_train_step(model, tx, 0), donate_argnums=0)

  def run():
    state[0], loss = step(state[0], x)
    loss.block_until_ready()
  run()
  run()
  return run


def _parse(run: str) -> tuple[str, str, dict]:
  """``'name:preset[:key=value,...]'`` -> ``(name, preset, overrides)``."""
  name, _, rest = run.partition(":")
  preset, _, rest = (rest or "cpu").partition(":")
  return name, preset, settings.parse_pairs(rest, "--runs")   # the experiments' --model-args


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--runs", nargs="+",
                  default=["vae:cpu", "realnvp:cpu", "glow:cpu", "pixelcnnpp:cpu"])
  args = ap.parse_args()
  runs = {"vae:cpu": make_step("vae", "cpu", args.batch)}
  for run in args.runs:
    if run not in runs:
      name, preset, kw = _parse(run)
      runs[run] = make_step(name, preset, args.batch, **kw)
  times = {k: [] for k in runs}
  for _ in range(args.steps):
    for k, run in runs.items():
      t = time.perf_counter()
      run()
      times[k].append(time.perf_counter() - t)
  base = statistics.median(times["vae:cpu"])
  print(f"device: {jax.devices()[0].platform}, jax {jax.__version__}, batch {args.batch},"
        f" median of {args.steps}\n")
  print(f"| model:preset (batch {args.batch}) | train step (ms) | ratio to the vae:cpu step |")
  print("|---|---:|---:|")
  for k, ts in times.items():
    med = statistics.median(ts)
    print(f"| {k} | {1000 * med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
  main()
