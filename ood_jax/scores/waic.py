"""``waic``: the Watanabe-Akaike information criterion over an ensemble (Choi et al. 2018),
the baseline of Song et al.; with ``statistic='predictive'`` the negative log of the ensemble
predictive ``(1/M) sum_m p(x; theta_m)`` (Nalisnick et al. App. F); see :class:`WAIC`.

The ensemble's variables are stacked on a leading axis and the members' forwards are
vmapped in one compiled call, not looped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores.base import Scorer, ScorerState, latent_chunk
from ood_jax.scores.nll import log_prob_fn
from ood_jax.train import TrainConfig, train


def stack_members(members: list) -> Any:
  """Stacks M variable pytrees of one architecture on a new leading axis."""
  return jax.tree.map(lambda *a: jnp.stack(a), *members)


def ensemble_size(stacked: Any) -> int:
  sizes = {leaf.shape[0] if getattr(leaf, "ndim", 0) else None for leaf in jax.tree.leaves(stacked)}
  if len(sizes) != 1 or None in sizes:
    raise InvalidInputError(f"waic: ensemble_variables must have one leading (member) axis on "
                            f"every leaf; got leading sizes {sorted(map(str, sizes))}.")
  return int(sizes.pop())


def member_log_probs(model, k: int):
  """Pure ``(stacked_variables, x, rng) -> float32[M, N]``: every member's eval-mode log p
  (nats), vmapped over the members; member i uses ``split(rng, M)[i]``."""
  lp = log_prob_fn(model, k)

  def fn(stacked, x, rng):
    m = jax.tree.leaves(stacked)[0].shape[0]
    return jax.vmap(lp, in_axes=(0, None, 0))(stacked, x, jax.random.split(rng, m))
  return fn


def neg_waic(lps: jax.Array) -> jax.Array:
  """``-WAIC = Var - E`` over the member axis 0 of ``lps`` ``[M, N]``, nats."""
  return jnp.var(lps, axis=0) - jnp.mean(lps, axis=0)


def neg_log_predictive(lps: jax.Array) -> jax.Array:
  """``-log((1/M) sum_m p(x; theta_m)) = -(logsumexp_m lps - log M)`` over the member axis 0
  of ``lps`` ``[M, N]``, nats: the ensemble predictive's NLL (M = 1: the member's NLL)."""
  return -(jax.scipy.special.logsumexp(lps, axis=0) - math.log(lps.shape[0]))


STATISTICS = {"waic": neg_waic, "predictive": neg_log_predictive}


@dataclasses.dataclass(frozen=True)
class WAIC(Scorer):
  """``waic``: ``-WAIC(x) = Var_theta[log p_theta(x)] - E_theta[log p_theta(x)]`` over an
  ensemble of M models (Choi et al. 2018), nats; higher = more OOD. With
  ``statistic='predictive'``: ``-log p_ens(x) = -(logsumexp_m log p_m(x) - log M)``, the NLL of
  the ensemble predictive ``(1/M) sum_m p(x; theta_m)`` (Nalisnick et al. App. F, Fig. 9),
  nats per image; the same members (and member cache) either way.

  Mean and population variance (ddof 0) over the members' eval-mode ``log_prob`` (IWAE
  with ``k`` samples for the VAE; member i draws its own noise). ``fit(model, variables,
  id_data)`` takes ``variables`` as member 0 and trains members 1..M-1 itself: the same
  architecture with ``train_config`` and seeds ``train_config.seed + i``, each cached
  under ``ckpt_dir/member<i>`` (a rerun reloads them). The experiment presets set
  ``members`` through ``score_settings`` (smoke 2, cpu 3).

  Attributes:
    members: M, ensemble size, at least 2 (Song et al., Nalisnick et al.: 5).
    statistic: ``'waic'`` (default, ``-WAIC``) or ``'predictive'`` (the ensemble
      predictive's NLL).
    train_config: how members 1..M-1 are trained (required unless ``ensemble_variables``).
    ckpt_dir: member i is cached under ``ckpt_dir/member<i>``; None: not cached.
    ensemble_variables: a ready ensemble (every leaf with a leading axis of size M);
      skips training.
    k: importance samples per image (latent-variable models).
    max_latents: bound on members x images x ``k`` per compiled call.
    name: ``'waic'``.
    seed: seeds the importance samples.
    progress: show progress bars (training and scoring).
    chunk_size: images per compiled call, at most.
  """
  name: str = "waic"
  members: int = 5
  statistic: str = "waic"
  train_config: TrainConfig | None = None
  ckpt_dir: str | None = None
  ensemble_variables: Any = None
  k: int = 16
  max_latents: int = 2560

  def __post_init__(self):
    super().__post_init__()
    if self.statistic not in STATISTICS:
      raise InvalidInputError(f"{self.name}: statistic must be one of {tuple(STATISTICS)}, got "
                              f"{self.statistic!r}.")

  def images_per_chunk(self) -> int:
    m = self.members if self.ensemble_variables is None else ensemble_size(self.ensemble_variables)
    return latent_chunk(self.chunk_size, self.max_latents, self.k * m)

  def train_members(self, model, variables, id_data) -> Any:
    """Member 0 = ``variables``; members 1..M-1 trained (or reloaded) here; stacked."""
    if isinstance(self.members, bool) or not isinstance(self.members, int) or self.members < 2:
      raise InvalidInputError(f"{self.name}: members must be an integer >= 2, got {self.members!r}.")
    if self.train_config is None or id_data is None:
      raise InvalidInputError(
          f"{self.name}: training the ensemble needs train_config and id_data; pass "
          "ensemble_variables to use an ensemble trained elsewhere.")
    id_data = validate_images(id_data, what=f"{self.name} training set",
                              hwc=tuple(model.image_shape))
    out = [variables]
    for i in range(1, self.members):
      cfg = dataclasses.replace(self.train_config, seed=self.train_config.seed + i)
      ckpt = None if self.ckpt_dir is None else os.path.join(self.ckpt_dir, f"member{i}")
      out.append(train(model, id_data, cfg, ckpt, progress=self.progress,
                       desc=f"waic member {i}").variables)
    return stack_members([jax.device_get(v) for v in out])

  def fit(self, model, variables, id_data) -> ScorerState:
    if self.ensemble_variables is not None:
      stacked = self.ensemble_variables
      if ensemble_size(stacked) < 2:
        raise InvalidInputError(f"{self.name}: an ensemble needs at least 2 members.")
    else:
      stacked = self.train_members(model, variables, id_data)
    lps = member_log_probs(model, self.k)
    stat = STATISTICS[self.statistic]
    fn = jax.jit(lambda v, x, rng: stat(lps(v, x, rng)))
    return ScorerState(params=batches.replicate(stacked), chunk_fn=fn,
                       image_shape=tuple(model.image_shape), name=self.name)

  def member_state(self, model, state: ScorerState) -> ScorerState:
    """A state of the same ensemble whose ``score(member_state, x)`` is every member's
    eval-mode ``log p(x)``, float32 ``[N, M]`` nats, with the chunks and noise of
    ``score(state, x)``: ``statistic`` of its rows (transposed) is ``score(state, x)`` up
    to float rounding. For per-member results beside the ensemble's (e.g. member 0 alone)."""
    lps = member_log_probs(model, self.k)
    fn = jax.jit(lambda v, x, rng: lps(v, x, rng).T)
    return state.replace(chunk_fn=fn, name=f"{self.name} members")
