"""``Chain``: flow layers run one after the other, as one bijector.

``forward_and_log_det(x, train)`` runs ``layers`` in order and sums their log-dets;
``inverse_and_log_det(y)`` runs their inverses, last layer first (eval mode). Log-dets are
float32 ``[N]``, nats per sample; the inverse's is minus the forward's. A chain's log-det
is constant iff every layer's is (``constant_log_det(train)``).

The layers are modules of the chain's owner (created in the owner's ``setup`` or compact
method and passed in), so their parameters keep the owner's paths
(``level_0/step0/invconv/...``); the chain itself holds no variables. Layers may be chains.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector


class Chain(Bijector):
  """Composition of bijector layers (each with ``forward_and_log_det(x, train)``,
  ``inverse_and_log_det(y)`` and ``constant_log_det(train)``)."""
  layers: Sequence[nn.Module]

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    logdet = jnp.zeros((x.shape[0],), jnp.float32)
    for layer in self.layers:
      x, ld = layer.forward_and_log_det(x, train)
      logdet = logdet + ld
    return x, logdet

  def inverse_and_log_det(self, y: jax.Array):
    logdet = jnp.zeros((y.shape[0],), jnp.float32)
    for layer in reversed(self.layers):
      y, ld = layer.inverse_and_log_det(y)
      logdet = logdet + ld
    return y, logdet

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    return all(layer.constant_log_det(train) for layer in self.layers)
