"""``Bijector``: the base of every flow layer (distrax's Bijector contract, the linen way).

A subclass implements ``forward_and_log_det(x, train) -> (y, logdet)`` and
``inverse_and_log_det(y) -> (x, logdet)`` (eval mode), both from one shared parameter setup;
``logdet`` is float32 ``[N]``, nats per sample, the inverse's minus the forward's. It states
whether its log-det is independent of the input by the class attribute ``constant``
(``True``: in every BatchNorm mode; layers whose answer depends on the mode or a setting
override ``constant_log_det``). Calling the layer runs the forward map (so ``init`` does).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax


class Bijector(nn.Module):
  """Base class of the flow layers (see the module docstring)."""
  constant: ClassVar[bool] = False

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    raise NotImplementedError

  def inverse_and_log_det(self, y: jax.Array):
    raise NotImplementedError

  @nn.nowrap
  def constant_log_det(self, train: bool) -> bool:
    """Whether the log-det is the same for every input in BatchNorm mode ``train``."""
    del train
    return self.constant

  def __call__(self, x: jax.Array, train: bool = False):
    return self.forward_and_log_det(x, train)
