"""``nll``: the eval-mode negative log-likelihood, nats per image; see :class:`NLL`."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from ood_jax.data import batches
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState


def log_prob_fn(model: nn.Module, k: int):
  """Pure ``(variables, x_uint8, rng) -> log p(x)`` in eval mode (nats per image)."""
  def fn(variables, x, rng):
    return model.apply(variables, x, train=False, k=k, method="log_prob", rngs={"sample": rng})
  return fn


@dataclasses.dataclass(frozen=True)
class NLL(Scorer):
  """``nll``: ``-log p(x)`` in eval mode, nats per image of the 8-bit data (higher = more OOD).

  ``log p`` is the model's ``log_prob`` with BatchNorm running statistics: exact for
  autoregressive models, the importance-weighted dequantisation bound for flows and the
  IWAE estimate with ``k`` samples for the VAE. Needs no training data.

  Attributes:
    k: importance samples per image (latent-variable models; flows: dequantisation draws).
    max_latents: bound on images x ``k`` per compiled call (the VAE's 256-way logits are
      1 MB per latent).
    name: ``'nll'``.
    seed: seeds the importance samples (chunk i: ``fold_in(PRNGKey(seed), i)``).
    progress: show a progress bar.
    chunk_size: images per compiled call, at most.
  """
  name: str = "nll"
  k: int = 16
  max_latents: int = 2560

  def fit(self, model, variables, id_data=None) -> ScorerState:
    if not callable(getattr(model, "log_prob", None)):
      raise InvalidInputError(
          f"{self.name}: {type(model).__name__} has no log_prob (it is not a likelihood model,"
          " e.g. the autoencoder 'ae'); score it with the 'recon_error' score instead.")
    lp = log_prob_fn(model, self.k)
    fn = jax.jit(lambda v, x, rng: -lp(v, x, rng))
    return ScorerState(params=batches.replicate(variables), chunk_fn=fn,
                       image_shape=tuple(model.image_shape), name=self.name)
