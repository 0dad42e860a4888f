"""The training state: one pytree that a checkpoint holds completely."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: number of updates applied
  params: Any
  model_state: Any           # non-parameter collections, e.g. {'batch_stats': ...}
  opt_state: Any
  bad_step: jax.Array        # int32 scalar: first step whose loss was not finite, or -1

  @property
  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}


def create(variables: dict, tx) -> TrainState:
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params), bad_step=jnp.full((), -1, jnp.int32))
