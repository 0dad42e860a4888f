"""``likelihood_ratio``: the background-model likelihood ratio of Ren et al. (2019); see
:class:`LikelihoodRatio`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from ood_jax.data import batches, perturbations
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import log_prob_fn
from ood_jax.train import TrainConfig, train

DEFAULT_TRAIN = TrainConfig(batch_size=64, epochs=10, learning_rate=1e-3, halve_every_epochs=5)


def perturb(x: np.ndarray, mu: float, seed) -> np.ndarray:
  """Ren's mutation of uint8 ``x`` at rate ``mu`` (``perturbations.mutate``): each
  sub-pixel, with probability ``mu``, replaced by a level uniform on 0..255. A function of
  ``(x, mu, seed)`` only."""
  return perturbations.mutate(x, mu, seed)


def background_dir(ckpt_dir: str, mu: float, l2: float, seed: int,
                   perturbation: str = "random") -> str:
  """``ckpt_dir/bg_mu<mu>_l2<l2>_seed<seed>`` for ``'random'`` (the name from before the
  other perturbations existed), ``ckpt_dir/bg_<perturbation>_l2<l2>_seed<seed>`` otherwise."""
  what = f"mu{mu:g}" if perturbation == "random" else perturbation
  return os.path.join(ckpt_dir, f"bg_{what}_l2{l2:g}_seed{seed}")


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
  (``model.clone()``) trained on perturbed ID training images (``perturbation``, default
  Ren's mutation: each sub-pixel replaced, with probability ``mu``, by a level uniform on
  0..255; a FRESH mutation for every training batch, as Ren's background training does,
  drawn from ``(seed, step)`` so a resumed run sees the same batches; the blurs of ROSE
  App. B.3, ``svd<K>`` / ``dct<K>`` / ``blur``, are deterministic:
  ``ood_jax.data.perturbations``) and an L2 penalty ``l2 * sum(theta**2)`` over all
  parameters added to the mean per-image loss in nats (coupled L2,
  ``TrainConfig.weight_decay = 2 * l2``; Ren's ``keras.regularizers.l2`` puts it on
  kernels only, and his lambda in {0, 10, 100} was set for a PixelCNN++ loss of another
  scale, so the default is 0). Trained with ``train_config`` (default: 10 epochs, batch
  64, lr 1e-3 halved after 5), cached under ``ckpt_dir/bg_mu<mu>_l2<l2>_seed<seed>``
  (``random``) or ``ckpt_dir/bg_<perturbation>_l2<l2>_seed<seed>`` (the blurs). For
  latent-variable models both log-likelihoods are IWAE estimates with ``k`` samples and
  the same noise.

  Attributes:
    perturbation: how the background's training batches are perturbed: ``'random'``
      (Ren's mutation at rate ``mu``), ``'svd<K>'`` (``svd22``, ``svd28``: the K smallest
      singular values zeroed per image and channel), ``'dct<K>'`` (``dct28``: the K
      largest 2-D DCT coefficients kept) or ``'blur'`` (Gaussian 3x3, sigma 0.8); ROSE
      Table 10 compares them.
    mu: mutation rate of ``'random'``, in [0, 1] (Ren: 0.1-0.3; unused by the blurs).
    l2: lambda, weight of the background model's penalty ``lambda * ||theta||²`` (nats).
    k: importance samples per image (latent-variable models).
    train_config: how the background model is trained; None = ``DEFAULT_TRAIN``.
    ckpt_dir: the background model is cached under it; None: not cached.
    background_variables: a trained background model; skips training.
    max_latents: bound on images x ``k`` per compiled call.
    name: ``'likelihood_ratio'``.
    seed: seeds the mutations (with the step) and the importance samples.
    progress: show progress bars (training and scoring).
    chunk_size: images per compiled call, at most.
  """
  name: str = "likelihood_ratio"
  perturbation: str = "random"
  mu: float = 0.2
  l2: float = 0.0
  k: int = 20
  train_config: TrainConfig | None = None
  ckpt_dir: str | None = None
  background_variables: Any = None
  max_latents: int = 2560

  def __post_init__(self):
    super().__post_init__()
    try:
      perturbations.parse(self.perturbation)
      perturbations.check_mu(self.mu)
    except InvalidInputError as e:
      raise InvalidInputError(f"{self.name}: {e}") from None

  def batch_transform(self) -> perturbations.BatchPerturbation:
    """What the background's training loop applies to every batch."""
    return perturbations.BatchPerturbation(self.perturbation, self.mu, self.seed)

  def background_config(self) -> TrainConfig:
    cfg = self.train_config or DEFAULT_TRAIN
    return dataclasses.replace(cfg, weight_decay=2.0 * self.l2)

  def train_background(self, model, id_data: np.ndarray) -> dict:
    """Trains (or loads from ``ckpt_dir``) the background model on ``id_data``, every
    training batch perturbed afresh (``batch_transform``)."""
    x = validate_images(id_data, what="likelihood_ratio training set", hwc=tuple(model.image_shape))
    ckpt = None if self.ckpt_dir is None else background_dir(
        self.ckpt_dir, self.mu, self.l2, self.seed, self.perturbation)
    what = f"mu={self.mu:g}" if self.perturbation == "random" else self.perturbation
    result = train(model.clone(), x, self.background_config(), ckpt, progress=self.progress,
                   desc=f"train background ({what}, l2={self.l2:g})",
                   batch_transform=self.batch_transform())
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
