"""``nll``: the negative log-likelihood in eval mode, nats per image (higher = more OOD).

For the VAE, ``log_prob`` is the IWAE estimate with ``k`` importance samples.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from ood_jax.data import batches
from ood_jax.scores.base import Scorer, ScorerState


def log_prob_fn(model: nn.Module, k: int):
  """Pure ``(variables, x_uint8, rng) -> log p(x)`` in eval mode (nats per image)."""
  def fn(variables, x, rng):
    return model.apply(variables, x, train=False, k=k, method="log_prob", rngs={"sample": rng})
  return fn


@dataclasses.dataclass(frozen=True)
class NLL(Scorer):
  k: int = 16           # importance samples for latent-variable models
  chunk_size: int = 256
  max_latents: int = 2560   # bounds chunk x k: the VAE's 256-way logits are 1 MB per latent
  seed: int = 0
  progress: bool = False
  name: str = "nll"

  def fit(self, model, variables, id_data=None) -> ScorerState:
    lp = log_prob_fn(model, self.k)
    fn = jax.jit(lambda v, x, rng: -lp(v, x, rng))
    return ScorerState(params=batches.replicate(variables), chunk_fn=fn,
                       image_shape=tuple(model.image_shape), name=self.name)
