"""Benchmark: PixelCNN++ train-step time per preset, with the ConvVAE step as the yardstick.

Times one jitted train step of ``ood_jax.train.loop.make_train_step`` (Adam, BatchNorm in
train mode) at batch 64 on 28 x 28 x 1 for PixelCNN++ settings, interleaved with the
reference ConvVAE ``cpu`` preset (32 x 32 x 1) so both see the same machine load
(compile and warm-up excluded; median of ``--steps`` rounds). Prints a markdown table
with the ratio to the VAE step. Weights are drawn with numpy (a jitted threefry init
takes about a minute to compile on XLA:CPU). Usage::

  python benchmarks/pixelcnnpp_step.py [--steps 5] [--batch 64] \
      [--configs cpu smoke cpu:num_filters=32 paper:num_resnet=1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.models import make_model
from ood_jax.train.config import TrainConfig
from ood_jax.train.loop import make_train_step
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
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def make_step(name: str, preset: str, shape, batch: int, **overrides):
  """A no-argument callable running one train step (state kept between calls)."""
  model = make_model(name, preset, shape, **overrides)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch,) + tuple(shape), np.uint8))
  tx = make_optimizer(TrainConfig(), 100)
  state = [create(_numpy_variables(model, x), tx)]
  step = jax.jit(make_train_step(model, tx, 0), donate_argnums=0)

  def run():
    state[0], loss = step(state[0], x)
    loss.block_until_ready()
  run()
  run()
  return run


def _parse(config: str) -> tuple[str, dict]:
  preset, _, rest = config.partition(":")
  kw = {}
  for item in filter(None, rest.split(",")):
    k, v = item.split("=")
    kw[k] = v if k == "norm" else (float(v) if "." in v else int(v))
  return preset, kw


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--configs", nargs="+", default=["cpu", "smoke"])
  args = ap.parse_args()
  runs = {"vae cpu (32x32x1)": make_step("vae", "cpu", (32, 32, 1), args.batch)}
  for config in args.configs:
    preset, kw = _parse(config)
    runs[f"pixelcnnpp {config} (28x28x1)"] = make_step("pixelcnnpp", preset, (28, 28, 1),
                                                        args.batch, **kw)
  times = {k: [] for k in runs}
  for _ in range(args.steps):
    for k, run in runs.items():
      t = time.perf_counter()
      run()
      times[k].append(time.perf_counter() - t)
  base = statistics.median(times["vae cpu (32x32x1)"])
  print(f"| model (batch {args.batch}) | train step (ms) | ratio to the VAE step |")
  print("|---|---:|---:|")
  for k, ts in times.items():
    med = statistics.median(ts)
    print(f"| {k} | {1000 * med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
  main()
