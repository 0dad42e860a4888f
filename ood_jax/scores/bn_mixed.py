"""``bn_mixed``: Song et al.'s mixed-batch BatchNorm statistics S_{b,r}, Delta and T; see
:class:`BNMixed`.

Each round partitions the test set into groups of m and one train-mode forward scores all
m test samples of a batch at once; all batches are vmapped in chunks of
``max_latents // (b*k)`` batches, one compiled call per chunk (see ``train_mode.py``;
``compositions.py`` for the batches).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores import train_mode
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.compositions import check_mixing, compositions, num_test_slots

STATISTICS = ("delta", "s", "t")


@dataclasses.dataclass(frozen=True)
class BNMixed(Scorer):
  """``bn_mixed``: BatchNorm train-mode likelihoods in batches mixing test and training
  images (Song et al.): S_{b,r}, Delta or T; higher = more OOD for all three.

  A batch of ``b`` holds ``m = round(r*b)`` (at least 1) images of the scored set (the
  test pool q; scores depend on the set scored together, that is the method) and
  ``b - m`` in-distribution images from ``id_data`` (p). The model's train-mode
  ``log_prob`` (BatchNorm with the batch's statistics; IWAE with ``k`` samples for the
  VAE) gives ``log p(x | batch)``. Over ``K`` Monte-Carlo rounds:

  * ``S_{b,r}(x) = mean_K log p(x | batch)``, nats per image (``statistic='s'`` scores
    ``-S_{b,r1}``);
  * ``Delta(x) = |S_{b,r1}(x) - S_{b,r2}(x)|``, nats (``'delta'``, the default);
  * ``T(x) = #{i: Delta(x_i) <= Delta(x)}`` over ``n_ref`` reference ID images, a count
    (``'t'``): the last ``n_ref`` images of ``id_data``, whose own batches draw training
    images from the rest. T is a monotone map of Delta (same AUROC up to ties).

  A model without BatchNorm (Glow: actnorm) is refused with one clear error.

  Attributes:
    K: Monte-Carlo rounds (batch compositions per test image).
    b: batch size, images.
    r1: test fraction of S_{b,r1} (also that of statistic ``'s'``), in [0, 1] (m >= 1).
    r2: test fraction of S_{b,r2}, in [0, 1].
    statistic: ``'delta'`` | ``'s'`` | ``'t'``.
    n_ref: reference ID images of ``'t'`` (the last ``n_ref`` of ``id_data``).
    k: importance samples per image (latent-variable models).
    max_latents: bound on batches x ``b`` x ``k`` per compiled call.
    name: ``'bn_mixed'``.
    seed: seeds the batch compositions and the importance samples.
    progress: show a progress bar.
    chunk_size: unused (calls are bounded by ``max_latents``).
  """
  name: str = "bn_mixed"
  K: int = 4
  b: int = 64
  r1: float = 0.1
  r2: float = 0.9
  statistic: str = "delta"
  n_ref: int = 1000
  k: int = 16
  max_latents: int = 2560

  def __post_init__(self):
    super().__post_init__()
    for r in (self.r1, self.r2):
      check_mixing(self.b, r, self.K, self.name)
    if self.statistic not in STATISTICS:
      raise InvalidInputError(f"{self.name}: statistic must be one of {STATISTICS}, got "
                              f"{self.statistic!r}.")
    if self.statistic == "t" and (not isinstance(self.n_ref, int) or self.n_ref < 1):
      raise InvalidInputError(f"{self.name}: n_ref must be an integer >= 1, got {self.n_ref!r}.")

  def _ratios(self) -> tuple[float, ...]:
    return (self.r1,) if self.statistic == "s" else (self.r1, self.r2)

  def _fill(self) -> int:
    return max(self.b - num_test_slots(r, self.b) for r in self._ratios())

  def fit(self, model, variables, id_data) -> ScorerState:
    train_mode.check_batchnorm(model, variables, self.name)
    if id_data is None:
      raise InvalidInputError(f"{self.name}: needs in-distribution training images (id_data) "
                              "to fill the batches.")
    hwc = tuple(model.image_shape)
    id_data = validate_images(id_data, what=f"{self.name} training pool", hwc=hwc)
    pool, ref = id_data, None
    if self.statistic == "t":
      if len(id_data) < self.n_ref + self._fill():
        raise InvalidInputError(
            f"{self.name}: statistic 't' needs n_ref = {self.n_ref} reference images plus at"
            f" least {self._fill()} training images for the batches; id_data has {len(id_data)}.")
      pool, ref = id_data[:-self.n_ref], id_data[-self.n_ref:]
    elif len(pool) < self._fill():
      raise InvalidInputError(f"{self.name}: a batch needs {self._fill()} training images, "
                              f"id_data has {len(pool)}.")
    state = ScorerState(
        params={"variables": batches.replicate(variables), "pool": pool, "ref": None},
        chunk_fn=train_mode.stacked_fn(model, self.k, self.seed), image_shape=hwc,
        name=self.name)
    if ref is not None:
      ref_delta = np.sort(self.delta(state, ref, stream=len(self._ratios())))
      state = state.replace(params={**state.params, "ref": ref_delta})
    return state

  def mixed_log_prob(self, state: ScorerState, x: np.ndarray, r: float,
                     stream: int = 0) -> np.ndarray:
    """S_{b,r}(x) for every image of the test pool ``x``: float32[N], nats per image."""
    x = validate_images(x, what=f"{self.name} score input", hwc=state.image_shape)
    pool = state.params["pool"]
    comps = compositions(len(x), len(pool), b=self.b, r=r, rounds=self.K, seed=self.seed,
                         stream=stream, what=self.name)
    per_call = train_mode.batches_per_call(self.b, self.k, self.max_latents, comps.num_batches)
    return train_mode.mean_test_log_prob(state.chunk_fn, state.params["variables"], x, pool,
                                         comps, per_call, progress=self.progress,
                                         desc=f"{self.name} r={r:g}")

  def delta(self, state: ScorerState, x: np.ndarray, stream: int = 0) -> np.ndarray:
    """Delta(x) = |S_{b,r1} - S_{b,r2}|, float32[N], nats (rng streams ``stream, stream+1``)."""
    s1 = self.mixed_log_prob(state, x, self.r1, stream)
    s2 = self.mixed_log_prob(state, x, self.r2, stream + 1)
    return np.abs(s1 - s2).astype(np.float32)

  def score(self, state: ScorerState, x: np.ndarray) -> np.ndarray:
    x = validate_images(x, what=f"{self.name} score input", hwc=state.image_shape)
    if self.statistic == "s":
      return -self.mixed_log_prob(state, x, self.r1)
    d = self.delta(state, x)
    if self.statistic == "delta":
      return d
    ref = state.params["ref"]
    if ref is None:
      raise InvalidInputError(f"{self.name}: this state was fitted without reference samples; "
                              "fit with statistic='t'.")
    return np.searchsorted(ref, d, side="right").astype(np.float32)
