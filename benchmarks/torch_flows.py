"""Same-architecture PyTorch RealNVP and Glow (NCHW): the CPU baseline of ``flows.py``.

Mirrors ``ood_jax.models.flows`` (Kirichenko et al.'s RealNVP: logit, checkerboard and
channel affine couplings with ResNet st-nets, BatchNorm flow layers; Glow: ActNorm, LU 1x1
conv, affine channel couplings, learned split priors). ``forward(y)`` of each model returns
``(log p(z), log|det dz/dy|)``, nats per image ``[N]``, for pixels ``y`` in ``[0, 1)``.
Importing this module needs ``torch``; ``flows.py`` imports it only when torch is present.
"""

from __future__ import annotations

import math

import numpy as np
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


def build(name: str) -> nn.Module:
  """``'realnvp'`` (28 x 28 x 1, 2 scales, 6 blocks, 64 channels) or ``'glow'`` (32 x 32 x 3,
  L = 3, K = 8, hidden 400)."""
  return RealNVP() if name == "realnvp" else Glow()
