"""Batch normalisation as a flow layer (RealNVP, Dinh et al. 2017, appendix E).

Per channel ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta``.

* ``train=True``: ``mean``/``var`` are the (biased) batch statistics over N, H, W; the
  per-sample logdet is ``H * W * sum(log_gamma - 0.5 * log(var + eps))`` with the batch
  variance, i.e. the log-det of the per-sample map with the batch statistics held fixed
  (the map of the whole batch is not a bijection: its output has mean ``beta`` whatever the
  input, so its Jacobian is singular). Running averages are updated
  (``ra = momentum * ra + (1 - momentum) * batch``) only when the caller passes
  ``mutable=['batch_stats']`` (and never during ``init``).
* ``train=False``: the running averages; an exact per-sample bijection.
* ``reverse=True`` needs ``train=False``: the batch statistics of ``x`` cannot be read off ``y``.
logdet in nats per sample; the negative for ``reverse=True``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError


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


class BatchNormFlow(nn.Module):
  """Invertible batch normalisation with learnable ``log_gamma`` and ``beta``."""
  momentum: float = 0.9
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, reverse: bool = False):
    c = x.shape[-1]
    log_gamma = self.param("log_gamma", nn.initializers.zeros, (c,), jnp.float32)
    beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32)
    if train and reverse:
      raise InvalidInputError(
          "BatchNormFlow: reverse=True needs train=False (running statistics); the batch"
          " statistics of x cannot be recovered from y.")
    mean, var = channel_moments(self, x, train, self.momentum)
    inv_std = jax.lax.rsqrt(var + self.eps)
    logdet = x.shape[1] * x.shape[2] * jnp.sum(log_gamma + jnp.log(inv_std))
    logdet = jnp.full((x.shape[0],), logdet, jnp.float32)
    if reverse:
      return (x - beta) * jnp.exp(-log_gamma) / inv_std + mean, -logdet
    return (x - mean) * inv_std * jnp.exp(log_gamma) + beta, logdet
