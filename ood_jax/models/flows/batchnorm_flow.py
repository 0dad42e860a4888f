"""Batch normalisation as a flow layer (RealNVP, Dinh et al. 2017, appendix E).

Per channel ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta``.

* ``forward_and_log_det(x, train=True)``: ``mean``/``var`` are the (biased) batch statistics
  over N, H, W; the per-sample logdet is ``H * W * sum(log_gamma - 0.5 * log(var + eps))``
  with the batch variance, i.e. the log-det of the per-sample map with the batch statistics
  held fixed (the map of the whole batch is not a bijection: its output has mean ``beta``
  whatever the input, so its Jacobian is singular). It depends on the batch, so it is not
  constant (``constant_log_det(True)`` is False). Running averages are updated
  (``ra = momentum * ra + (1 - momentum) * batch``) only when the caller passes
  ``mutable=['batch_stats']`` (and never during ``init``).
* ``train=False``: the running averages; an exact per-sample bijection with a constant
  log-det.
* ``inverse_and_log_det(y)`` always uses the running averages (the batch statistics of ``x``
  cannot be read off ``y``).
logdet in nats per sample; the inverse's is the negative.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector


def channel_moments(module: nn.Module, x: jax.Array, train: bool,
                    momentum: float) -> tuple[jax.Array, jax.Array]:
  """Per-channel ``(mean, var)`` of ``x`` (N x H x W x C) for a BatchNorm-style ``module``.

  Declares the running averages ``batch_stats/{mean, var}`` in ``module``. ``train=True``:
  the batch statistics (over N, H, W; biased variance), and the running averages are
  updated (``ra = momentum * ra + (1 - momentum) * batch``) only when the caller made
  ``batch_stats`` mutable (and never during ``init``); ``train=False``: the running averages.
  """
  c = x.shape[-1]
  ra_mean = module.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
  ra_var = module.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
  if not train:
    return ra_mean.value, ra_var.value
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
  if module.is_mutable_collection("batch_stats") and not module.is_initializing():
    ra_mean.value = momentum * ra_mean.value + (1.0 - momentum) * jax.lax.stop_gradient(mean)
    ra_var.value = momentum * ra_var.value + (1.0 - momentum) * jax.lax.stop_gradient(var)
  return mean, var


class BatchNormFlow(Bijector):
  """Invertible batch normalisation with learnable ``log_gamma`` and ``beta`` (bijector)."""
  momentum: float = 0.9
  eps: float = 1e-5

  @nn.compact
  def _params(self, x: jax.Array, train: bool):
    """``(log_gamma, beta, mean, inv_std)``, ``[C]`` each (batch or running statistics)."""
    c = x.shape[-1]
    log_gamma = self.param("log_gamma", nn.initializers.zeros, (c,), jnp.float32)
    beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32)
    mean, var = channel_moments(self, x, train, self.momentum)
    return log_gamma, beta, mean, jax.lax.rsqrt(var + self.eps)

  @staticmethod
  def _log_det(x: jax.Array, log_gamma: jax.Array, inv_std: jax.Array) -> jax.Array:
    logdet = x.shape[1] * x.shape[2] * jnp.sum(log_gamma + jnp.log(inv_std))
    return jnp.full((x.shape[0],), logdet, jnp.float32)

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    log_gamma, beta, mean, inv_std = self._params(x, train)
    y = (x - mean) * inv_std * jnp.exp(log_gamma) + beta
    return y, self._log_det(x, log_gamma, inv_std)

  def inverse_and_log_det(self, y: jax.Array):
    """Eval mode (running statistics)."""
    log_gamma, beta, mean, inv_std = self._params(y, False)
    x = (y - beta) * jnp.exp(-log_gamma) / inv_std + mean
    return x, -self._log_det(y, log_gamma, inv_std)

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    return not train
