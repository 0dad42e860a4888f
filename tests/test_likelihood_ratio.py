"""Likelihood Ratio: the score equals -(log p - log p_bg) at the same noise; the mutation
replaces about mu of the sub-pixels; the background model is trained once and cached."""

import os

import jax
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.scores import get_scorer
from ood_jax.scores.likelihood_ratio import background_dir, perturb
from ood_jax.train import TrainConfig, init_variables
from toy_models import ToyBN


def _x(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)


@pytest.mark.parametrize("mu", [0.1, 0.3])
def test_perturbation_replaces_about_mu_of_the_pixels(mu):
  x = np.zeros((400, 8, 8, 1), np.uint8)                 # 25600 sub-pixels
  y = perturb(x, mu, seed=1)
  changed = np.mean(y != x)                               # a replacement equals 0 w.p. 1/256
  assert abs(changed - mu * 255 / 256) < 0.015, changed
  assert np.array_equal(perturb(x, mu, seed=1), y)
  assert not np.array_equal(perturb(x, mu, seed=2), y)
  assert np.array_equal(perturb(x, 0.0, seed=1), x)
  assert y[y != 0].std() > 60                             # uniform levels, not a constant
  with pytest.raises(InvalidInputError, match="mu"):
    perturb(x, 1.5, seed=0)


def test_score_is_the_hand_formula_with_a_given_background():
  model = ToyBN()
  x = _x(6, seed=1)
  v, bg = init_variables(model, _x(8), seed=0), init_variables(model, _x(8), seed=1)
  scorer = get_scorer("likelihood_ratio", seed=2, background_variables=bg)
  got = scorer.score(scorer.fit(model, v, None), x)
  rng = jax.random.fold_in(jax.random.PRNGKey(2), 0)
  lp = lambda vv: np.asarray(model.apply(vv, x, train=False, method="log_prob", rngs={"sample": rng}))
  np.testing.assert_allclose(got, -(lp(v) - lp(bg)), rtol=1e-5, atol=1e-4)
  assert np.abs(got).max() > 1e-3


def test_background_is_trained_on_perturbed_data_and_cached(tmp_path):
  model = ToyBN()
  x = _x(64, seed=3)
  v = init_variables(model, x, seed=0)
  cfg = TrainConfig(batch_size=16, num_steps=3, halve_every_epochs=None, log_every=1)
  scorer = get_scorer("likelihood_ratio", train_config=cfg, ckpt_dir=str(tmp_path), mu=0.3, l2=5.0)
  assert scorer.background_config().weight_decay == 10.0
  s1 = scorer.score(scorer.fit(model, v, x), x[:8])
  assert os.path.isdir(background_dir(str(tmp_path), 0.3, 5.0, 0))
  s2 = scorer.score(scorer.fit(model, v, x), x[:8])         # loads the cached background
  np.testing.assert_array_equal(s1, s2)
  with pytest.raises(InvalidInputError, match="background"):
    get_scorer("likelihood_ratio").fit(model, v, None)
