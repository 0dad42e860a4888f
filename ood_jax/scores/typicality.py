"""``typicality``: the typicality test of Nalisnick et al. (2019), nats per image.

A batch of M images is atypical when its mean NLL is far from the entropy estimate
``H_hat``, the mean NLL of the training set: statistic ``|mean_M NLL - H_hat|``. The
Scorer (:class:`Typicality`) is the M = 1 point score; for M > 1:
:func:`batch_statistic` on consecutive batches, :func:`bootstrap_threshold` (bootstrap
batches of M drawn with replacement from held-out ID NLLs; the threshold is their
``alpha`` quantile) and :func:`is_atypical`.
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


def _nll_vector(nll, what: str) -> np.ndarray:
  v = np.asarray(nll, np.float64)
  if v.ndim != 1 or not len(v) or not np.all(np.isfinite(v)):
    raise InvalidInputError(f"{what}: expected a non-empty 1-D array of finite NLLs, got "
                            f"shape {v.shape}.")
  return v


def _check_m(m: int) -> None:
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
    raise InvalidInputError(f"typicality: batch size M must be an integer >= 1, got {m!r}.")


def batch_statistic(nll, entropy: float, m: int) -> np.ndarray:
  """``|mean NLL - H_hat|`` of each run of ``m`` consecutive values (a short tail is dropped),
  float64 ``[len(nll) // m]``, nats."""
  _check_m(m)
  v = _nll_vector(nll, "typicality batch_statistic")
  if len(v) < m:
    raise InvalidInputError(f"typicality: {len(v)} NLLs are fewer than one batch of M = {m}.")
  n = len(v) // m * m
  return np.abs(v[:n].reshape(-1, m).mean(axis=1) - float(entropy))


def bootstrap_threshold(heldout_nll, entropy: float, m: int, *, alpha: float = 0.99,
                        n_boot: int = 10000, seed: int = 0) -> float:
  """epsilon: the ``alpha`` quantile of ``|mean NLL - H_hat|`` over ``n_boot`` bootstrap
  batches of ``m`` held-out ID NLLs (drawn with replacement), nats. A batch whose
  statistic exceeds it is flagged OOD at false-alarm rate about ``1 - alpha``."""
  _check_m(m)
  v = _nll_vector(heldout_nll, "typicality bootstrap_threshold")
  if not 0.0 < alpha < 1.0:
    raise InvalidInputError(f"typicality: alpha must be in (0, 1), got {alpha!r}.")
  if n_boot < 1:
    raise InvalidInputError(f"typicality: n_boot must be >= 1, got {n_boot!r}.")
  idx = np.random.default_rng(seed).integers(0, len(v), (int(n_boot), int(m)))
  stats = np.abs(v[idx].mean(axis=1) - float(entropy))
  return float(np.quantile(stats, alpha))


def is_atypical(nll, entropy: float, m: int, threshold: float) -> np.ndarray:
  """bool ``[len(nll) // m]``: the typicality test's OOD decision for each batch of ``m``."""
  return batch_statistic(nll, entropy, m) > threshold


@dataclasses.dataclass(frozen=True)
class Typicality(Scorer):
  """``typicality``: the M = 1 typicality statistic ``|NLL(x) - H_hat|`` of Nalisnick et
  al. (2019), nats per image; higher = more OOD.

  NLL is the eval-mode ``-log_prob`` (IWAE with ``k`` samples for the VAE); ``fit``
  estimates the entropy ``H_hat`` as the mean NLL of ``n_fit`` random images of
  ``id_data``. Batch tests (M > 1): see the module's functions.

  Attributes:
    n_fit: ID images for ``H_hat`` (a random subset of ``id_data``); None = all.
    k: importance samples per image (latent-variable models).
    max_latents: bound on images x ``k`` per compiled call.
    name: ``'typicality'``.
    seed: seeds the subset and the importance samples.
    progress: show a progress bar.
    chunk_size: images per compiled call, at most.
  """
  name: str = "typicality"
  n_fit: int | None = 2000
  k: int = 16
  max_latents: int = 2560

  def id_nll(self, model, variables, x: np.ndarray) -> np.ndarray:
    """Eval-mode NLL of ``x``, nats per image (the same estimator as the score)."""
    nll = NLL(k=self.k, chunk_size=self.chunk_size, max_latents=self.max_latents,
              seed=self.seed + 1, progress=self.progress)
    return nll.score(nll.fit(model, variables, None), x)

  def fit(self, model, variables, id_data) -> ScorerState:
    if id_data is None:
      raise InvalidInputError(f"{self.name}: needs in-distribution training images (id_data) "
                              "to estimate the entropy.")
    hwc = tuple(model.image_shape)
    id_data = validate_images(id_data, what=f"{self.name} training set", hwc=hwc)
    n = len(id_data) if self.n_fit is None else max(1, min(int(self.n_fit), len(id_data)))
    idx = np.sort(np.random.default_rng([self.seed, 11]).permutation(len(id_data))[:n])
    entropy = float(np.mean(self.id_nll(model, variables, id_data[idx])))
    lp = log_prob_fn(model, self.k)
    fn = jax.jit(lambda p, x, rng: jnp.abs(-lp(p["variables"], x, rng) - p["entropy"]))
    params = {"variables": variables, "entropy": jnp.float32(entropy)}
    return ScorerState(params=batches.replicate(params), chunk_fn=fn, image_shape=hwc,
                       name=self.name)
