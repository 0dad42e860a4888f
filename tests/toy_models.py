"""Tiny models that follow the library's model protocol, for fast tests of the layers above."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import to_unit


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
