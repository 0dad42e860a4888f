"""``recon_error``: the eval-mode squared reconstruction error; see :class:`ReconError`."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from ood_jax.data import batches
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState


def recon_error_fn(model: nn.Module):
  """Pure ``(variables, x_uint8, rng) -> recon_error(x)`` in eval mode, float32 ``[B]``."""
  def fn(variables, x, rng):
    del rng  # deterministic: the reconstruction decodes the posterior mean / the code
    return model.apply(variables, x, train=False, method="recon_error")
  return fn


@dataclasses.dataclass(frozen=True)
class ReconError(Scorer):
  """``recon_error``: ``sum_{h,w,c} (x/255 - reconstruct(x))^2`` in eval mode (higher = more OOD).

  The reconstruction score of Chen's thesis (Sec. 3.3.4, 3.3.6): the model's
  ``recon_error`` with BatchNorm running statistics; the autoencoder (``ae``) decodes its
  code ``enc(x)``, the VAE its posterior mean ``mu(x)``, and the reconstruction is the
  decoder likelihood's mean on [0, 1]. Units: squared [0, 1] pixel values summed over the
  H*W*C sub-pixels (not nats). Deterministic; needs no training data.

  Attributes:
    name: ``'recon_error'``.
    seed: unused (the score is deterministic), kept for the shared interface.
    progress: show a progress bar.
    chunk_size: images per compiled call, at most.
  """
  name: str = "recon_error"

  def fit(self, model, variables, id_data=None) -> ScorerState:
    if not callable(getattr(model, "recon_error", None)):
      raise InvalidInputError(
          f"{self.name}: {type(model).__name__} has no recon_error method; the score needs a"
          " model that reconstructs its input (e.g. 'ae' or 'vae').")
    fn = jax.jit(recon_error_fn(model))
    return ScorerState(params=batches.replicate(variables), chunk_fn=fn,
                       image_shape=tuple(model.image_shape), name=self.name)
