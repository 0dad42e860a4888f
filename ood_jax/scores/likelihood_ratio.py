"""``likelihood_ratio``: the background-model likelihood ratio of Ren et al. (2019).

    S(x) = -(log p_theta(x) - log p_bg(x)),   nats per image, higher = more OOD,

with ``p_theta`` the trained model and ``p_bg`` a *background* model: the same
architecture (``model.clone()``) trained on the in-distribution training images with each
sub-pixel replaced, with probability ``mu``, by a level drawn uniformly from 0..255 (it
may equal the old one: Ren's mutation), and with an L2 penalty of weight ``l2``.

* ``mu`` (default 0.2, the middle of Ren's sweep {0.1, 0.2, 0.3}).
* ``l2`` = lambda: the penalty ``lambda * sum(theta**2)`` over **all** parameters (kernels,
  biases, BatchNorm scale/bias) added to the mean per-image training loss in nats (the
  ``keras.regularizers.l2(lambda)`` convention of Ren's PixelCNN++ code, which puts it on
  kernels only). It is applied as coupled L2, ``TrainConfig.weight_decay = 2 * lambda``.
  Default 0: Ren's lambda in {0, 10, 100} was set for a PixelCNN++ and is not on the scale
  of this loss (a sum over the image's sub-pixels), so no value carries over; the sweep
  is open through the field.
* Perturbation randomness is a function of ``seed`` only: every training image is perturbed
  **once** (one fixed perturbed copy of the training set, ``perturb(x, mu, seed)``), not
  anew each epoch, so the background model trains through ``ood_jax.train.train`` like any
  model and resumes exactly.
* Training uses ``train_config`` (the main model's TrainConfig; default: 10 epochs, batch
  64, lr 1e-3 halved after 5) and is cached under ``ckpt_dir/bg_mu<mu>_l2<l2>_seed<seed>``
  (a rerun loads it). ``background_variables`` gives a ready background model instead.
* For latent-variable models both log-likelihoods are IWAE estimates with ``k`` samples
  and the **same** noise (the same rng), so the ratio does not carry two independent
  Monte-Carlo errors.
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
  mu: float = 0.2                       # mutation rate of the background training data
  l2: float = 0.0                       # lambda: penalty lambda * ||theta||^2 (see above)
  k: int = 20                           # importance samples (latent-variable models)
  train_config: TrainConfig | None = None
  ckpt_dir: str | None = None
  background_variables: Any = None      # a trained background model: skips training
  chunk_size: int = 256
  max_latents: int = 2560
  seed: int = 0
  progress: bool = False
  name: str = "likelihood_ratio"

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
