"""``t_perm``: Song et al.'s permutation-style rank baseline on eval-mode likelihoods; see
:class:`TPerm`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import NLL, log_prob_fn


def rank_statistic(ref_sorted: jax.Array, lp: jax.Array) -> jax.Array:
  """``|#{i: ref_i <= lp} - N/2|`` for each ``lp``; ``ref_sorted`` ascending, float32."""
  count = jnp.searchsorted(ref_sorted, lp, side="right")
  return jnp.abs(count.astype(jnp.float32) - ref_sorted.shape[0] / 2.0)


@dataclasses.dataclass(frozen=True)
class TPerm(Scorer):
  """``t_perm``: ``T_perm(x) = |#{i: log p(x_i) <= log p(x)} - N/2|`` over N training images
  x_i (Song et al.'s baseline), a count; higher = more OOD (x's likelihood sits in either
  tail of the training likelihoods, too low or too high).

  ``log p`` is the eval-mode ``log_prob`` (IWAE with ``k`` samples for the VAE), nats per
  image. The N = ``n_ref`` reference images are a random subset of ``id_data`` (a function
  of ``seed``).

  Attributes:
    n_ref: N, reference ID images (all of ``id_data`` if it has fewer).
    k: importance samples per image (latent-variable models).
    max_latents: bound on images x ``k`` per compiled call.
    name: ``'t_perm'``.
    seed: seeds the reference subset and the importance samples.
    progress: show a progress bar.
    chunk_size: images per compiled call, at most.
  """
  name: str = "t_perm"
  n_ref: int = 1000
  k: int = 16
  max_latents: int = 2560

  def _nll(self) -> NLL:
    return NLL(k=self.k, chunk_size=self.chunk_size, max_latents=self.max_latents,
               seed=self.seed + 1, progress=self.progress)

  def fit(self, model, variables, id_data) -> ScorerState:
    if id_data is None:
      raise InvalidInputError(f"{self.name}: needs in-distribution training images (id_data).")
    if isinstance(self.n_ref, bool) or not isinstance(self.n_ref, int) or self.n_ref < 1:
      raise InvalidInputError(f"{self.name}: n_ref must be an integer >= 1, got {self.n_ref!r}.")
    hwc = tuple(model.image_shape)
    id_data = validate_images(id_data, what=f"{self.name} training set", hwc=hwc)
    n = min(self.n_ref, len(id_data))
    idx = np.sort(np.random.default_rng([self.seed, 7]).permutation(len(id_data))[:n])
    nll = self._nll()
    ref_lp = -nll.score(nll.fit(model, variables, None), id_data[idx])
    lp = log_prob_fn(model, self.k)
    fn = jax.jit(lambda p, x, rng: rank_statistic(p["ref"], lp(p["variables"], x, rng)))
    params = {"variables": variables, "ref": jnp.sort(jnp.asarray(ref_lp))}
    return ScorerState(params=batches.replicate(params), chunk_fn=fn, image_shape=hwc,
                       name=self.name)
