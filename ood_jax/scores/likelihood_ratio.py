"""``likelihood_ratio``: the background-model likelihood ratio of Ren et al. (2019); see
:class:`LikelihoodRatio`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import log_prob_fn
from ood_jax.train import TrainConfig, train

DEFAULT_TRAIN = TrainConfig(batch_size=64, epochs=10, learning_rate=1e-3, halve_every_epochs=5)


def perturb(x: np.ndarray, mu: float, seed: int) -> np.ndarray:
  """Ren's mutation: each sub-pixel of uint8 ``x`` is, with probability ``mu``, replaced by
  a level uniform on 0..255 (independently; the new level may equal the old one).
  A function of ``(x, mu, seed)`` only."""
  if not 0.0 <= mu <= 1.0:
    raise InvalidInputError(f"likelihood_ratio: mutation rate mu must be in [0, 1], got {mu}.")
  rng = np.random.default_rng([seed, 0x5EED])
  mask = rng.random(x.shape) < mu
  levels = rng.integers(0, 256, size=x.shape, dtype=np.uint8)
  return np.where(mask, levels, x).astype(np.uint8)


def background_dir(ckpt_dir: str, mu: float, l2: float, seed: int) -> str:
  return os.path.join(ckpt_dir, f"bg_mu{mu:g}_l2{l2:g}_seed{seed}")


def ratio_fn(model, k: int):
  """Pure ``({'model', 'background'}, x, rng) -> -(log p - log p_bg)``, same rng for both."""
  lp = log_prob_fn(model, k)

  def fn(params, x, rng):
    return lp(params["background"], x, rng) - lp(params["model"], x, rng)
  return fn


@dataclasses.dataclass(frozen=True)
class LikelihoodRatio(Scorer):
  """``likelihood_ratio``: ``S(x) = -(log p_theta(x) - log p_bg(x))``, nats per image (Ren et
  al. 2019); higher = more OOD.

  ``p_theta`` is the trained model, ``p_bg`` a *background* model: the same architecture
  (``model.clone()``) trained on the ID training images with each sub-pixel replaced, with
  probability ``mu``, by a level uniform on 0..255 (Ren's mutation; every image perturbed
  once, a function of ``seed``) and an L2 penalty ``l2 * sum(theta**2)`` over all
  parameters added to the mean per-image loss in nats (coupled L2,
  ``TrainConfig.weight_decay = 2 * l2``; Ren's ``keras.regularizers.l2`` puts it on
  kernels only, and his lambda in {0, 10, 100} was set for a PixelCNN++ loss of another
  scale, so the default is 0). Trained with ``train_config`` (default: 10 epochs, batch
  64, lr 1e-3 halved after 5), cached under ``ckpt_dir/bg_mu<mu>_l2<l2>_seed<seed>``. For
  latent-variable models both log-likelihoods are IWAE estimates with ``k`` samples and
  the same noise.

  Attributes:
    mu: mutation rate of the background training data, in [0, 1] (Ren: 0.1-0.3).
    l2: lambda, weight of the background model's penalty ``lambda * ||theta||²`` (nats).
    k: importance samples per image (latent-variable models).
    train_config: how the background model is trained; None = ``DEFAULT_TRAIN``.
    ckpt_dir: the background model is cached under it; None: not cached.
    background_variables: a trained background model; skips training.
    max_latents: bound on images x ``k`` per compiled call.
    name: ``'likelihood_ratio'``.
    seed: seeds the mutation and the importance samples.
    progress: show progress bars (training and scoring).
    chunk_size: images per compiled call, at most.
  """
  name: str = "likelihood_ratio"
  mu: float = 0.2
  l2: float = 0.0
  k: int = 20
  train_config: TrainConfig | None = None
  ckpt_dir: str | None = None
  background_variables: Any = None
  max_latents: int = 2560

  def background_config(self) -> TrainConfig:
    cfg = self.train_config or DEFAULT_TRAIN
    return dataclasses.replace(cfg, weight_decay=2.0 * self.l2)

  def train_background(self, model, id_data: np.ndarray) -> dict:
    """Trains (or loads from ``ckpt_dir``) the background model on perturbed ``id_data``."""
    x = validate_images(id_data, what="likelihood_ratio training set", hwc=tuple(model.image_shape))
    ckpt = None if self.ckpt_dir is None else background_dir(self.ckpt_dir, self.mu, self.l2, self.seed)
    result = train(model.clone(), perturb(x, self.mu, self.seed), self.background_config(), ckpt,
                   progress=self.progress, desc=f"train background (mu={self.mu:g}, l2={self.l2:g})")
    return result.variables

  def fit(self, model, variables, id_data=None) -> ScorerState:
    bg = self.background_variables
    if bg is None:
      if id_data is None:
        raise InvalidInputError("likelihood_ratio needs the ID training images (to train its"
                                " background model) or background_variables.")
      bg = self.train_background(model, id_data)
    params = batches.replicate({"model": variables, "background": bg})
    return ScorerState(params=params, chunk_fn=jax.jit(ratio_fn(model, self.k)),
                       image_shape=tuple(model.image_shape), name=self.name)
