"""Likelihood-family baselines: T_perm and typicality on hand-made likelihoods, WAIC's
stacked vmapped ensemble against a per-model loop, and WAIC's own member training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.scores import get_scorer
from ood_jax.scores.nll import log_prob_fn
from ood_jax.scores.t_perm import rank_statistic
from ood_jax.scores.typicality import batch_statistic, bootstrap_threshold, is_atypical
from ood_jax.scores.waic import neg_waic, stack_members
from ood_jax.train import TrainConfig, init_variables
from toy_models import ToyBN


def _x(n, seed=0, shape=(4, 4, 1)):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_t_perm_rank_statistic_by_hand():
  ref = jnp.sort(jnp.array([-5.0, -4.0, -3.0, -2.0, -1.0, 0.0]))     # N = 6, N/2 = 3
  lp = jnp.array([-10.0, -3.0, -2.5, 0.0, 7.0])
  # counts of ref <= lp: 0, 3, 3, 6, 6 -> |count - 3|
  np.testing.assert_array_equal(rank_statistic(ref, lp), [3.0, 0.0, 0.0, 3.0, 3.0])


def test_t_perm_scorer_ranks_eval_log_probs():
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  train_x, x = _x(50, seed=1), _x(7, seed=2)
  scorer = get_scorer("t_perm", n_ref=20, k=1, seed=0)
  state = scorer.fit(model, v, train_x)
  got = scorer.score(state, x)
  ref = np.asarray(state.params["ref"])
  assert ref.shape == (20,) and np.all(np.diff(ref) >= 0)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 0)
  lp = np.asarray(log_prob_fn(model, 1)(v, x, key))
  np.testing.assert_allclose(got, [abs((ref <= l).sum() - 10.0) for l in lp])
  with pytest.raises(InvalidInputError, match="id_data"):
    scorer.fit(model, v, None)


def test_neg_waic_by_hand():
  lps = jnp.array([[-1.0, -10.0], [-3.0, -10.0]])    # members x images
  np.testing.assert_allclose(neg_waic(lps), [1.0 + 2.0, 0.0 + 10.0])


def test_waic_stacked_vmapped_equals_per_model_loop():
  model = ToyBN()
  members = [init_variables(model, _x(8), seed=s) for s in range(3)]
  x = _x(6, seed=3)
  scorer = get_scorer("waic", ensemble_variables=stack_members(members), k=1, seed=4)
  got = scorer.score(scorer.fit(model, None, None), x)
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(4), 0), 3)
  lp = log_prob_fn(model, 1)
  lps = np.stack([np.asarray(lp(m, x, keys[i])) for i, m in enumerate(members)])
  np.testing.assert_allclose(got, lps.var(0) - lps.mean(0), rtol=1e-5, atol=1e-4)
  assert scorer.images_per_chunk() == 256
  with pytest.raises(InvalidInputError, match="at least 2"):
    get_scorer("waic", ensemble_variables=stack_members(members[:1])).fit(model, None, None)


def test_waic_trains_and_caches_members(tmp_path):
  model = ToyBN()
  train_x = _x(32, seed=5)
  v = init_variables(model, train_x[:8], seed=0)
  cfg = TrainConfig(batch_size=8, num_steps=2, seed=0)
  kw = dict(members=2, train_config=cfg, ckpt_dir=str(tmp_path), k=1)
  state = get_scorer("waic", **kw).fit(model, v, train_x)
  leaf = jax.tree.leaves(state.params["params"])[0]
  assert leaf.shape[0] == 2
  np.testing.assert_array_equal(leaf[0], jax.tree.leaves(v["params"])[0])
  assert not np.array_equal(leaf[0], leaf[1])                   # member 1: seed 1, trained
  assert (tmp_path / "member1").is_dir()
  state2 = get_scorer("waic", **kw).fit(model, v, train_x)      # reloads the cached member
  np.testing.assert_array_equal(jax.tree.leaves(state2.params["params"])[0], leaf)
  with pytest.raises(InvalidInputError, match="train_config"):
    get_scorer("waic", members=2).fit(model, v, train_x)


def test_typicality_batch_statistic_and_bootstrap_by_hand():
  nll = np.array([1.0, 3.0, 2.0, 2.0, 10.0, 0.0, 5.0])
  np.testing.assert_allclose(batch_statistic(nll, 2.0, 2), [0.0, 0.0, 3.0])   # tail dropped
  np.testing.assert_allclose(batch_statistic(nll, 2.0, 1), np.abs(nll - 2.0))
  # held-out NLLs +-1 around H = 0: a bootstrap batch of M has |mean| = |2 Bin(M, 1/2) - M| / M
  heldout = np.array([-1.0, 1.0] * 50)
  eps = bootstrap_threshold(heldout, 0.0, 4, alpha=0.99, n_boot=4000, seed=0)
  assert eps == pytest.approx(1.0)                  # P(|mean| = 1) = 1/8 > 1 - alpha
  eps = bootstrap_threshold(heldout, 0.0, 4, alpha=0.5, n_boot=4000, seed=0)
  assert eps == pytest.approx(0.5)                  # P(0) = 3/8, P(<= 0.5) = 7/8
  np.testing.assert_array_equal(is_atypical([1, 1, 1, 1, 0, 0, 1, -1], 0.0, 4, 0.5), [True, False])
  with pytest.raises(InvalidInputError, match="M must be"):
    batch_statistic(nll, 0.0, 0)
  with pytest.raises(InvalidInputError, match="fewer than one batch"):
    batch_statistic(nll, 0.0, 8)
  with pytest.raises(InvalidInputError, match="finite"):
    bootstrap_threshold([np.nan], 0.0, 1)


def test_typicality_point_score():
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  train_x, x = _x(40, seed=6), _x(5, seed=7)
  scorer = get_scorer("typicality", n_fit=None, k=1, seed=0)
  state = scorer.fit(model, v, train_x)
  h = float(state.params["entropy"])
  np.testing.assert_allclose(h, scorer.id_nll(model, v, train_x).mean(), rtol=1e-5)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 0)     # score's chunk-0 key
  nll = -np.asarray(log_prob_fn(model, 1)(v, x, key))
  np.testing.assert_allclose(scorer.score(state, x), np.abs(nll - h), rtol=1e-4, atol=1e-4)
