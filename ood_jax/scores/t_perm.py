"""``t_perm``: Song et al.'s permutation-style rank baseline on eval-mode likelihoods.

``T_perm(x) = |sum_i I[log p(x_i) <= log p(x)] - N/2|`` over N training samples x_i
(a count, higher = more OOD: x is atypical when its likelihood sits in either tail of the
training likelihoods, too low or too high). ``log p`` is the model's eval-mode
``log_prob`` (IWAE with ``k`` samples for the VAE), nats per image. The N reference
samples are a random subset of ``id_data`` (``n_ref``, a function of ``seed``).
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
  n_ref: int = 1000         # N training samples (a random subset of id_data)
  k: int = 16
  chunk_size: int = 256
  max_latents: int = 2560
  seed: int = 0
  progress: bool = False
  name: str = "t_perm"

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
