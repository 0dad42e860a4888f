"""st-networks of the coupling layers: RealNVP's residual network, Glow's 3-layer conv net
and the highway network of Kirichenko et al.'s Glow.

All are called as ``net(h, train) -> N x H x W x features`` and end in a zero-initialised
convolution, so every coupling starts as the identity.

* ``ResNetSTNet`` (RealNVP, Dinh et al.; the layout of the public PyTorch port that
  Kirichenko et al. build on): ``BatchNorm -> concat(h, -h) -> ReLU -> conv3x3(width)``, then
  ``num_blocks`` pre-activation residual blocks ``x + conv3x3(ReLU(BN(conv3x3(ReLU(BN(x))))))``;
  with ``skip`` (default, Dinh et al.) a 1x1 "skip" conv of the input and of every block
  output is summed, and ``BN -> ReLU -> conv1x1(features)`` (zero-init) of that sum is the
  output. ``skip=False`` (Kirichenko et al. App. L's baseline, the reference's ``--no_skip``)
  has no 1x1 skip convs at all: the output head reads the last block's output.
  With ``bottleneck = l`` (Kirichenko et al., App. K/L: "a pair of fully-connected layers
  projecting to a space of dimension l and back ... after the middle layer") the activations
  after block ``(num_blocks - 1) // 2`` go through two dense layers
  ``H*W*width -> l -> H*W*width``: linear, no activation between (the paper's wording and
  the reference's ``ResNetAE``; ``bottleneck_relu=True`` puts a ReLU between). With ``skip``
  the skip sum restarts there, so everything the output sees has passed through the
  l-dimensional bottleneck (the reference's ``ResNetAE`` has no skips: ``skip=False``).
  ``batchnorm=False`` drops every BatchNorm.
* ``GlowSTNet`` (Kingma & Dhariwal): ``conv3x3(hidden) -> ActNorm -> ReLU -> conv1x1(hidden)
  -> ActNorm -> ReLU -> conv3x3(features)`` (zero-init); the ActNorms are initialised from
  the data at ``init`` and have no batch statistics, so ``train`` has no effect.
* ``HighwaySTNet`` (Kirichenko et al. App. E: "a 3-layer Highway network with 200 hidden
  units"; layout of the reference's ``flow_ssl/highway``): ``conv3x3(hidden)``, then
  ``layers`` highway layers ``conv3x3_h(x) * g + x * (1 - g)``, ``g = sigmoid(conv3x3_t(x))``
  (no other nonlinearity), then a zero-initialised ``conv1x1(features)``. Its 3x3 kernels
  are initialised ``N(0, 0.05^2)``, biases 0 (the reference's ``Conv2d``). No normalisation,
  so ``train`` has no effect.

``BatchNorm`` here is standard BatchNorm whose running averages, like ``BatchNormFlow``'s, are
updated only when the caller passes ``mutable=['batch_stats']`` (flax's ``nn.BatchNorm``
raises in train mode without it; scoring in train mode must not update anything).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.actnorm import ActNorm
from ood_jax.models.flows.batchnorm_flow import channel_moments


class BatchNorm(nn.Module):
  """Per-channel BatchNorm (batch statistics over N, H, W in train mode, biased variance)."""
  momentum: float = 0.9
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    mean, var = channel_moments(self, x, train, self.momentum)
    return (x - mean) * (jax.lax.rsqrt(var + self.eps) * scale) + bias


def _norm(enabled: bool, momentum: float, name: str):
  """``BatchNorm`` or the identity, as ``f(x, train)``."""
  if enabled:
    return BatchNorm(momentum=momentum, name=name)
  return lambda x, train: x


def _conv(features: int, kernel: int, name: str, zero: bool = False,
          std: Optional[float] = None) -> nn.Conv:
  """SAME-padded conv; ``zero``: zero kernel and bias; ``std``: kernel ``N(0, std^2)``."""
  init = {}
  if zero:
    init = dict(kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
  elif std is not None:
    init = dict(kernel_init=nn.initializers.normal(std))
  return nn.Conv(features, (kernel, kernel), padding="SAME", name=name, **init)


class ResidualBlock(nn.Module):
  """Pre-activation residual block ``x + conv(ReLU(BN(conv(ReLU(BN(x))))))`` (3x3 convs)."""
  width: int
  batchnorm: bool = True
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = nn.relu(_norm(self.batchnorm, self.momentum, "norm1")(x, train))
    h = _conv(self.width, 3, "conv1")(h)
    h = nn.relu(_norm(self.batchnorm, self.momentum, "norm2")(h, train))
    return x + _conv(self.width, 3, "conv2")(h)


class ResNetSTNet(nn.Module):
  """RealNVP's residual st-network (see the module docstring)."""
  features: int
  width: int = 64
  num_blocks: int = 4
  batchnorm: bool = True
  bottleneck: Optional[int] = None
  momentum: float = 0.9
  skip: bool = True
  bottleneck_relu: bool = False

  @nn.nowrap
  def _bottleneck(self, x: jax.Array) -> jax.Array:
    """``Dense(l) -> [ReLU] -> Dense(H*W*C)`` of the flattened ``x``, reshaped back."""
    n, hh, ww, c = x.shape
    flat = nn.Dense(int(self.bottleneck), name="bottleneck_in")(x.reshape(n, -1))
    if self.bottleneck_relu:
      flat = nn.relu(flat)
    return nn.Dense(hh * ww * c, name="bottleneck_out")(flat).reshape(n, hh, ww, c)

  @nn.compact
  def __call__(self, h: jax.Array, train: bool) -> jax.Array:
    x = _norm(self.batchnorm, self.momentum, "in_norm")(h, train)
    x = _conv(self.width, 3, "in_conv")(nn.relu(jnp.concatenate([x, -x], axis=-1)))
    skip = _conv(self.width, 1, "in_skip")(x) if self.skip else None
    middle = (self.num_blocks - 1) // 2
    for i in range(self.num_blocks):
      x = ResidualBlock(self.width, self.batchnorm, self.momentum, name=f"block{i}")(x, train)
      if self.bottleneck and i == middle:
        x = self._bottleneck(x)
        if self.skip:
          skip = jnp.zeros_like(skip)
      if self.skip:
        skip = skip + _conv(self.width, 1, f"skip{i}")(x)
    x = skip if self.skip else x
    x = nn.relu(_norm(self.batchnorm, self.momentum, "out_norm")(x, train))
    return _conv(self.features, 1, "out_conv", zero=True)(x)


class GlowSTNet(nn.Module):
  """Glow's st-network: 3x3 conv, 1x1 conv (``hidden`` channels, ActNorm + ReLU), 3x3 conv."""
  features: int
  hidden: int = 400

  @nn.compact
  def __call__(self, h: jax.Array, train: bool) -> jax.Array:
    h = nn.Conv(self.hidden, (3, 3), padding="SAME", use_bias=False, name="conv1")(h)
    h = nn.relu(ActNorm(name="actnorm1")(h, train)[0])
    h = nn.Conv(self.hidden, (1, 1), padding="SAME", use_bias=False, name="conv2")(h)
    h = nn.relu(ActNorm(name="actnorm2")(h, train)[0])
    return _conv(self.features, 3, "conv3", zero=True)(h)


HIGHWAY_INIT_STD = 0.05  # the reference's Conv2d: kernels N(0, 0.05^2), biases 0


class HighwayLayer(nn.Module):
  """``conv3x3_h(x) * g + x * (1 - g)``, ``g = sigmoid(conv3x3_t(x))`` (``x``'s channels)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    gate = jax.nn.sigmoid(_conv(c, 3, "conv_t", std=HIGHWAY_INIT_STD)(x))
    return _conv(c, 3, "conv_h", std=HIGHWAY_INIT_STD)(x) * gate + x * (1.0 - gate)


class HighwaySTNet(nn.Module):
  """Kirichenko et al.'s Glow st-network: ``conv3x3(hidden)``, ``layers`` highway layers,
  zero-initialised ``conv1x1(features)`` (see the module docstring)."""
  features: int
  hidden: int = 200
  layers: int = 3

  @nn.compact
  def __call__(self, h: jax.Array, train: bool) -> jax.Array:
    del train  # No batch statistics here.
    x = _conv(self.hidden, 3, "in_conv", std=HIGHWAY_INIT_STD)(h)
    for i in range(self.layers):
      x = HighwayLayer(name=f"highway{i}")(x)
    return _conv(self.features, 1, "out_conv", zero=True)(x)
