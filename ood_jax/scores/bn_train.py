"""``bn_train_bpd``: bits/dim with BatchNorm in train mode, batches made of the scored set
(Song et al.'s "train mode" column); see :class:`BNTrainBPD`.
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
  """``bn_train_bpd``: bits per dimension with BatchNorm in train mode (Song et al., Table 1,
  "train mode": S_{b,1}); higher = more OOD. Needs a BatchNorm model, no training data.

  The set being scored is shuffled and cut into batches of ``b`` (``min(b, N)`` for a set
  smaller than one batch; a short last batch is filled with other images of the set, whose
  values are discarded); each image's ``log p(x | batch)`` (nats) comes from one
  train-mode forward of its batch. Over ``K`` shufflings the values are averaged:
  ``S``; the score is ``-S / (D ln 2)``. Scores depend on the set scored together.

  ``parts`` puts only one part of the model in train mode (Chen's thesis 3.3.5, Fig. 3.7:
  ``'encoder'``, the encoder's BatchNorm on the scored batch with the decoder at its running
  statistics; ``'decoder'`` the reverse); ``bn_enc_train_bpd`` is this score with
  ``parts='encoder'``. The model must have that BatchNorm part (the VAE's ``encoder`` /
  ``decoder``). ``parts='none'`` is eval mode with exactly the same batches, importance
  samples and dequantisation noise (the eval-mode partner of a paired train - eval gap).

  Attributes:
    b: batch size, images (at least 2).
    K: rounds of shuffling averaged.
    k: importance samples per image (latent-variable models).
    max_latents: bound on batches x ``b`` x ``k`` per compiled call.
    parts: ``'all'``, ``'encoder'``, ``'decoder'`` or ``'none'``: where BatchNorm is in
      train mode.
    name: ``'bn_train_bpd'``.
    seed: seeds the shuffles and the importance samples.
    progress: show a progress bar.
    chunk_size: unused (calls are bounded by ``max_latents``).
  """
  name: str = "bn_train_bpd"
  b: int = 64
  K: int = 1
  k: int = 16
  max_latents: int = 2560
  parts: str = "all"

  def __post_init__(self):
    super().__post_init__()
    check_mixing(self.b, 1.0, self.K, self.name)
    train_mode.train_arg(self.parts)

  def fit(self, model, variables, id_data=None) -> ScorerState:
    train_mode.check_batchnorm(model, variables, self.name)
    train_mode.check_parts(model, variables, self.parts, self.name)
    return ScorerState(params=batches.replicate(variables),
                       chunk_fn=train_mode.stacked_fn(model, self.k, self.seed, self.parts),
                       image_shape=tuple(model.image_shape), name=self.name)

  def score(self, state: ScorerState, x: np.ndarray) -> np.ndarray:
    x = validate_images(x, what=f"{self.name} score input", hwc=state.image_shape)
    b = max(2, min(self.b, len(x)))
    comps = compositions(len(x), 0, b=b, r=1.0, rounds=self.K, seed=self.seed, what=self.name)
    per_call = train_mode.batches_per_call(b, self.k, self.max_latents, comps.num_batches)
    s = train_mode.mean_test_log_prob(state.chunk_fn, state.params, x, None, comps, per_call,
                                      progress=self.progress, desc=self.name)
    return (-s / (num_dims(state.image_shape) * math.log(2.0))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class BNEncoderTrainBPD(BNTrainBPD):
  """``bn_enc_train_bpd``: :class:`BNTrainBPD` with BatchNorm in train mode in the encoder
  only (Chen's thesis 3.3.5: "the key to improving OoD likelihood is to adjust that of the
  encoder"); the decoder keeps its running statistics. Needs a model with an ``encoder``
  BatchNorm part (the VAE, the GAN-VAE)."""
  name: str = "bn_enc_train_bpd"
  parts: str = "encoder"


# The settings are BNTrainBPD's (defaults: name 'bn_enc_train_bpd', parts 'encoder').
BNEncoderTrainBPD.__doc__ += "\n\n" + BNTrainBPD.__doc__[
    BNTrainBPD.__doc__.index("  Attributes:"):].replace("'bn_train_bpd'", "'bn_enc_train_bpd'")
