"""Benchmark: flow training steps and scoring throughput, ours (JAX) vs a PyTorch CPU baseline.

Configurations of issue 3's "Speed" section:

* RealNVP in Kirichenko et al.'s FashionMNIST configuration (28 x 28 x 1; 2 scales, 6 residual
  blocks, 64 channels; 14.7 M parameters), BatchNorm in train mode;
* Glow with L = 3, K = 8, hidden 400 on 32 x 32 x 3 (LU 1x1 convs, affine couplings).

For each: median seconds of one jitted Adam training step at batch ``--batch`` (default 32;
compile and warm-up excluded) and scoring throughput (eval-mode ``log_prob``, k = 1, batch
``--score-batch``) in images/s. The baseline is a same-architecture PyTorch model (NCHW,
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
import optax

import _ceiling
from ood_jax.models import make_model

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
  params = variables.pop("params")
  n_params = sum(int(a.size) for a in jax.tree.leaves(params))
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, state, opt, key):
    def loss_fn(p):
      loss, upd = model.apply({"params": p, **state}, x, train=True, mutable=["batch_stats"],
                              rngs={"dequant": key})
      return loss.mean(), upd
    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), {**state, **upd}, opt, loss

  score = jax.jit(lambda v, x, key: model.apply(v, x, method="log_prob", rngs={"sample": key}))
  carry = [params, variables, tx.init(params)]
  key = jax.random.key(3)

  def run_step():
    params, state, opt, loss = step(*carry, key)
    carry[:] = [params, state, opt]
    jax.block_until_ready(loss)

  flop = (_ceiling.flops(step, *carry, key),
          _ceiling.flops(score, {"params": carry[0], **carry[1]}, xs, key) / score_batch)
  t_step = _median_seconds(run_step, steps)
  t_score = _median_seconds(
      lambda: jax.block_until_ready(score({"params": carry[0], **carry[1]}, xs, key)), steps)
  return t_step, score_batch / t_score, n_params, flop


# ------------------------------------------------------------------ PyTorch baseline


def _torch_models():
  """Same-architecture PyTorch RealNVP and Glow (NCHW), built only when torch is present."""
  import torch
  from torch import nn

  def squeeze(x):
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)

  class ResNet(nn.Module):
    def __init__(self, cin, width, cout, blocks):
      super().__init__()
      self.in_norm = nn.BatchNorm2d(cin)
      self.in_conv = nn.Conv2d(2 * cin, width, 3, padding=1)
      self.in_skip = nn.Conv2d(width, width, 1)
      self.blocks = nn.ModuleList(nn.Sequential(
          nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
          nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
          for _ in range(blocks))
      self.skips = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(blocks))
      self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, cout, 1))

    def forward(self, h):
      x = self.in_norm(h)
      x = self.in_conv(torch.relu(torch.cat([x, -x], 1)))
      skip = self.in_skip(x)
      for block, sk in zip(self.blocks, self.skips):
        x = x + block(x)
        skip = skip + sk(x)
      return self.out(skip)

  class Coupling(nn.Module):
    def __init__(self, c, hw, kind, parity, net_fn):
      super().__init__()
      self.kind, self.parity = kind, parity
      if kind == "checkerboard":
        ii, jj = np.meshgrid(np.arange(hw[0]), np.arange(hw[1]), indexing="ij")
        b = ((ii + jj) % 2 == parity).astype(np.float32)
        self.register_buffer("b", torch.tensor(b)[None, None])
        self.cb, self.net = c, net_fn(c, 2 * c)
      else:
        self.cb, self.net = c - c // 2, net_fn(c // 2, 2 * (c - c // 2))
      self.scale = nn.Parameter(torch.ones(1, self.cb, 1, 1))

    def forward(self, x):
      if self.kind == "checkerboard":
        h = self.net(x * self.b)
        s = self.scale * torch.tanh(h[:, :self.cb]) * (1 - self.b)
        t = h[:, self.cb:] * (1 - self.b)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)
      xa, xb = x[:, :x.shape[1] // 2], x[:, x.shape[1] // 2:]
      h = self.net(xa)
      s = self.scale * torch.tanh(h[:, :self.cb])
      return torch.cat([xa, xb * torch.exp(s) + h[:, self.cb:]], 1), s.flatten(1).sum(1)

  class BNFlow(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.log_gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
      self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
      self.register_buffer("mean", torch.zeros(1, c, 1, 1))
      self.register_buffer("var", torch.ones(1, c, 1, 1))

    def forward(self, x):
      if self.training:
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
        with torch.no_grad():
          self.mean.mul_(0.9).add_(0.1 * mean)
          self.var.mul_(0.9).add_(0.1 * var)
      else:
        mean, var = self.mean, self.var
      inv = torch.rsqrt(var + 1e-5)
      ld = x.shape[2] * x.shape[3] * (self.log_gamma + torch.log(inv)).sum()
      return (x - mean) * inv * torch.exp(self.log_gamma) + self.beta, ld.expand(x.shape[0])

  def gauss(z, mean=0.0, logs=0.0):
    mean, logs = torch.as_tensor(mean), torch.as_tensor(logs)
    per = -0.5 * ((z - mean) * torch.exp(-logs)) ** 2 - logs - 0.5 * math.log(2 * math.pi)
    return (per + torch.zeros_like(z)).flatten(1).sum(1)

  class RealNVP(nn.Module):
    def __init__(self, shape=(28, 28, 1), scales=2, blocks=6, width=64):
      super().__init__()
      h, w, c = shape
      self.layers, self.scales = nn.ModuleList(), scales
      for s in range(scales):
        last = s == scales - 1
        net = lambda ci, co, wd=width * 2 ** s: ResNet(ci, wd, co, blocks)
        group = nn.ModuleList()
        for i in range(4 if last else 3):
          group.extend([Coupling(c, (h, w), "checkerboard", i % 2, net), BNFlow(c)])
        if not last:
          net2 = lambda ci, co, wd=width * 2 ** (s + 1): ResNet(ci, wd, co, blocks)
          for i in range(3):
            group.extend([Coupling(4 * c, None, "channel", i % 2, net2), BNFlow(4 * c)])
          h, w, c = h // 2, w // 2, 2 * c
        self.layers.append(group)

    def forward(self, y):
      p = 0.05 + 0.9 * y
      x = torch.log(p) - torch.log1p(-p)
      logdet = (math.log(0.9) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
      log_pz = 0.0
      for s, group in enumerate(self.layers):
        for i, layer in enumerate(group):
          if i == 6 and s < self.scales - 1:  # after 3 checkerboard couplings (+ BN)
            x = squeeze(x)
          x, ld = layer(x)
          logdet = logdet + ld
        if s < self.scales - 1:
          keep = x.shape[1] // 2
          log_pz = log_pz + gauss(x[:, keep:])
          x = x[:, :keep]
      return log_pz + gauss(x), logdet

  class ActNorm(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
      self.logs = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
      ld = x.shape[2] * x.shape[3] * self.logs.sum()
      return (x + self.bias) * torch.exp(self.logs), ld.expand(x.shape[0])

  class InvConvLU(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.lower = nn.Parameter(torch.zeros(c, c))
      self.upper = nn.Parameter(torch.zeros(c, c))
      self.log_s = nn.Parameter(torch.zeros(c))
      self.register_buffer("perm", torch.eye(c))

    def forward(self, x):
      eye = torch.eye(self.log_s.shape[0])
      w = self.perm @ (torch.tril(self.lower, -1) + eye) @ (
          torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_s)))
      ld = x.shape[2] * x.shape[3] * self.log_s.sum()
      return nn.functional.conv2d(x, w[:, :, None, None]), ld.expand(x.shape[0])

  class GlowNet(nn.Module):
    def __init__(self, cin, hidden, cout):
      super().__init__()
      self.c1 = nn.Conv2d(cin, hidden, 3, padding=1, bias=False)
      self.a1 = ActNorm(hidden)
      self.c2 = nn.Conv2d(hidden, hidden, 1, bias=False)
      self.a2 = ActNorm(hidden)
      self.c3 = nn.Conv2d(hidden, cout, 3, padding=1)

    def forward(self, h):
      h = torch.relu(self.a1(self.c1(h))[0])
      return self.c3(torch.relu(self.a2(self.c2(h))[0]))

  class Glow(nn.Module):
    def __init__(self, shape=(32, 32, 3), levels=3, steps=8, hidden=400):
      super().__init__()
      h, w, c = shape
      self.levels, self.priors = nn.ModuleList(), nn.ModuleList()
      for l in range(levels):
        h, w, c = h // 2, w // 2, 4 * c
        net = lambda ci, co: GlowNet(ci, hidden, co)
        self.levels.append(nn.ModuleList(
            m for _ in range(steps)
            for m in (ActNorm(c), InvConvLU(c), Coupling(c, None, "channel", 0, net))))
        if l < levels - 1:
          self.priors.append(nn.Conv2d(c // 2, 2 * (c - c // 2), 3, padding=1))
          c = c // 2
      self.top_mean = nn.Parameter(torch.zeros(1, c, h, w))
      self.top_logs = nn.Parameter(torch.zeros(1, c, h, w))

    def forward(self, y):
      x, logdet, log_pz = y - 0.5, 0.0, 0.0
      for l, level in enumerate(self.levels):
        x = squeeze(x)
        for layer in level:
          x, ld = layer(x)
          logdet = logdet + ld
        if l < len(self.priors):
          keep = x.shape[1] // 2
          out = self.priors[l](x[:, :keep])
          c2 = x.shape[1] - keep
          log_pz = log_pz + gauss(x[:, keep:], out[:, :c2], out[:, c2:])
          x = x[:, :keep]
      return log_pz + gauss(x, self.top_mean, self.top_logs), logdet

  return RealNVP, Glow


def torch_times(name: str, batch: int, score_batch: int, steps: int,
                threads: int) -> tuple[float, float, int]:
  """(seconds per train step, scoring images/s, parameter count) of the PyTorch baseline."""
  import torch
  torch.set_num_threads(threads)
  realnvp_cls, glow_cls = _torch_models()
  model = realnvp_cls() if name == "realnvp" else glow_cls()
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
