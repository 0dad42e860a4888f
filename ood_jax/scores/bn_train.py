"""``bn_train_bpd``: bits/dim with BatchNorm in train mode, batches made of the scored set.

The set being scored is shuffled and cut into batches of ``b`` (``min(b, N)`` for a set
smaller than one batch; a last short batch is filled with other images of the set, whose
values are discarded), and each image's ``log p(x | batch)`` comes from one train-mode
forward of its batch: Song et al.'s "train mode" column of Table 1 (S_{b,1}). Over ``K``
rounds of shuffling the values are averaged. Score: ``-S / (D ln 2)``, bits per
dimension (higher = more OOD). Needs a BatchNorm model; needs no training data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ood_jax.data import batches
from ood_jax.data.pixels import num_dims, validate_images
from ood_jax.scores import train_mode
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.compositions import check_mixing, compositions


@dataclasses.dataclass(frozen=True)
class BNTrainBPD(Scorer):
  b: int = 64               # batch size
  K: int = 1                # rounds of shuffling averaged
  k: int = 16               # importance samples for latent-variable models
  max_latents: int = 2560   # bounds batches x b x k per compiled call
  seed: int = 0
  progress: bool = False
  name: str = "bn_train_bpd"

  def __post_init__(self):
    check_mixing(self.b, 1.0, self.K, self.name)

  def fit(self, model, variables, id_data=None) -> ScorerState:
    train_mode.check_batchnorm(model, variables, self.name)
    return ScorerState(params=batches.replicate(variables),
                       chunk_fn=train_mode.stacked_fn(model, self.k, self.seed),
                       image_shape=tuple(model.image_shape), name=self.name)

  def score(self, state: ScorerState, x: np.ndarray) -> np.ndarray:
    x = validate_images(x, what=f"{self.name} score input", hwc=state.image_shape)
    b = max(2, min(self.b, len(x)))
    comps = compositions(len(x), 0, b=b, r=1.0, rounds=self.K, seed=self.seed, what=self.name)
    per_call = train_mode.batches_per_call(b, self.k, self.max_latents, comps.num_batches)
    s = train_mode.mean_test_log_prob(state.chunk_fn, state.params, x, None, comps, per_call,
                                      progress=self.progress, desc=self.name)
    return (-s / (num_dims(state.image_shape) * math.log(2.0))).astype(np.float32)
