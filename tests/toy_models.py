"""Tiny models that follow the library's model protocol, for fast tests of the layers above."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import LOG_256, to_unit


class ToyBN(nn.Module):
  """Per-sample loss through Dense + BatchNorm + noise: exercises params, batch_stats, rngs."""
  image_shape: tuple = (4, 4, 1)
  width: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = to_unit(x).reshape(x.shape[0], -1)
    h = nn.Dense(self.width)(h)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    h = h + 0.1 * jax.random.normal(self.make_rng("sample"), h.shape)
    out = nn.Dense(h.shape[-1] * 0 + x[0].size)(nn.relu(h))
    return jnp.sum((out - to_unit(x).reshape(x.shape[0], -1)) ** 2, axis=-1)

  def log_prob(self, x, train: bool = False, k: int = 1):
    return -self(x, train)


class Exploding(nn.Module):
  """Loss (w . x)^2: with a huge learning rate the second step overflows to inf."""
  image_shape: tuple = (2, 2, 1)

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = self.param("w", nn.initializers.ones, (x[0].size,))
    return jnp.square(to_unit(x).reshape(x.shape[0], -1) @ w)


class GaussDensity(nn.Module):
  """Per-pixel Gaussian density of dequantised pixels ``(x + u) / 256``: ``__call__`` is the
  NLL in nats per image of the 8-bit data; ``log_prob`` uses the bin centres (deterministic,
  so scores do not depend on the noise a member draws). A fast stand-in for the flows in the
  end-to-end runs (Glow's eager init alone takes ~15 s on a loaded 2-core machine)."""
  image_shape: tuple = (8, 8, 1)

  def setup(self):
    self.mu = self.param("mu", nn.initializers.constant(0.5), self.image_shape)
    self.log_s = self.param("log_s", nn.initializers.constant(math.log(0.3)), self.image_shape)

  def _log_p(self, x, u):
    z = ((x.astype(jnp.float32) + u) / 256.0 - self.mu) * jnp.exp(-self.log_s)
    ll = -0.5 * z ** 2 - self.log_s - 0.5 * math.log(2 * math.pi) - LOG_256
    return jnp.sum(ll.reshape(x.shape[0], -1), axis=-1)

  def __call__(self, x, train: bool = False):
    return -self._log_p(x, jax.random.uniform(self.make_rng("dequant"), x.shape))

  def log_prob(self, x, train: bool = False, k: int = 1):
    return self._log_p(x, 0.5)
