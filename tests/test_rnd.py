"""RND (SVD-RND, Choi & Chung 2020; ROSE App. B.3): the score is ||f(x) - g0(x)||^2; after
fitting on a tiny set it is lower on the ID training images than on their perturbations
and on noise; the targets never move; perturbed rows (and only they) reach the step
perturbed; bad settings fail before any work; the nets are cached."""

import os

import jax
import numpy as np
import pytest

from ood_jax import scores
from ood_jax.data import batches, perturbations
from ood_jax.errors import InvalidInputError
from ood_jax.scores import get_scorer
from ood_jax.scores.rnd import RND, PerturbTargets, RNDNet, rnd_dir
from ood_jax.train import TrainConfig, init_variables

CFG = TrainConfig(batch_size=32, num_steps=60, learning_rate=3e-3, halve_every_epochs=None,
                  log_every=30, checkpoint_every=60)


class Shape:
  """Stands in for the generative model: RND uses only its ``image_shape``."""
  image_shape = (8, 8, 1)


def _smooth(n=64, seed=0):
  """Blocky 8x8 images (4x4 random levels, each repeated 2x2)."""
  lo = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
  return np.repeat(np.repeat(lo, 2, axis=1), 2, axis=2)


def _leaves(tree):
  return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_registered_and_score_is_the_squared_distance_to_g0():
  assert scores.RND is RND and isinstance(get_scorer("rnd"), RND)
  net = RNDNet(image_shape=(8, 8, 1), feature_dim=5, width=2)
  x = _smooth(6)
  v = init_variables(net, {"x": x, "target": np.zeros(6, np.uint8)}, seed=0)
  assert set(v) == {"params", "target"} and set(v["target"]) == {"target0", "target1"}
  scorer = get_scorer("rnd", rnd_variables=v, feature_dim=5, width=2)
  got = scorer.score(scorer.fit(Shape(), None, None), x)
  h = x.astype(np.float32) / 127.5 - 1.0
  parts = jax.jit(lambda v, h: net.apply(v, h, method=lambda m, h: (m.predictor(h), m.target0(h),
                                                                     m.target1(h))))
  f, g0, g1 = parts(v, h)
  np.testing.assert_allclose(got, np.sum((np.asarray(f) - np.asarray(g0)) ** 2, -1), rtol=1e-5)
  assert got.dtype == np.float32 and got.shape == (6,) and got.min() > 0
  assert np.abs(np.asarray(g0) - np.asarray(g1)).max() > 1e-3       # two different targets
  # the training loss picks g1 for perturbed rows
  loss = net.apply(v, {"x": x, "target": np.array([0, 1, 0, 1, 1, 0], np.uint8)})
  want = np.where(np.array([0, 1, 0, 1, 1, 0])[:, None] == 1, g1, g0)
  np.testing.assert_allclose(loss, np.sum((np.asarray(f) - want) ** 2, -1), rtol=1e-5)


def test_fit_scores_id_lower_than_perturbed_and_noise_targets_fixed_and_cached(tmp_path,
                                                                              monkeypatch):
  x = _smooth()
  scorer = get_scorer("rnd", perturbation="random", mu=0.3, feature_dim=16, width=4,
                      train_config=CFG, ckpt_dir=str(tmp_path), seed=2)
  seen = []
  real = batches.to_devices
  monkeypatch.setattr(batches, "to_devices", lambda b: (seen.append(b), real(b))[1])
  state = scorer.fit(Shape(), None, x)
  train_batches = [b for b in seen if isinstance(b, dict)]
  assert len(train_batches) == CFG.num_steps
  # perturbed rows reach the step perturbed (about mu of their sub-pixels), ID rows as they are
  data = {"x": np.concatenate([x, x]), "target": np.repeat(np.array([0, 1], np.uint8), len(x))}
  raw = [b for _, b in batches.train_batches(data, CFG.batch_size, CFG.seed, 0, 3)]
  for got, want in zip(train_batches, raw):
    rows = want["target"] == 1
    assert 0 < rows.sum() < len(rows)
    np.testing.assert_array_equal(got["x"][~rows], want["x"][~rows])
    assert abs(np.mean(got["x"][rows] != want["x"][rows]) - 0.3) < 0.1
  s_id = scorer.score(state, x)
  s_pert = scorer.score(state, perturbations.perturb(x, "random", mu=0.3, seed=9))
  s_noise = scorer.score(state, np.random.default_rng(5).integers(0, 256, x.shape, dtype=np.uint8))
  assert np.mean(s_id < np.median(s_pert)) > 0.9, (s_id.mean(), s_pert.mean())
  assert np.mean(s_id < np.median(s_noise)) > 0.9, (s_id.mean(), s_noise.mean())
  assert 3 * s_id.mean() < s_pert.mean()
  # the targets are where they were initialised; the predictor moved
  net = scorer.net(Shape.image_shape)
  init = init_variables(net, {"x": x[:32], "target": np.zeros(32, np.uint8)}, seed=CFG.seed)
  trained = jax.device_get(state.params)
  for a, b in zip(_leaves(trained["target"]), _leaves(init["target"])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b)
             for a, b in zip(_leaves(trained["params"]), _leaves(init["params"])))
  # cached under its own name: a second fit loads it, same scores
  assert os.path.isdir(rnd_dir(str(tmp_path), "random", 0.3, 16, 4, 2))
  again = scorer.score(scorer.fit(Shape(), None, x), x)
  np.testing.assert_array_equal(again, s_id)


def test_perturb_targets_touches_only_the_perturbed_rows():
  x = _smooth(8)
  batch = {"x": x, "target": np.array([0, 1] * 4, np.uint8)}
  tf = PerturbTargets("blur", seed=0)
  out = tf(batch, 3)
  np.testing.assert_array_equal(out["x"][0::2], x[0::2])
  np.testing.assert_array_equal(out["x"][1::2], perturbations.gaussian_blur(x[1::2]))
  assert out["target"] is batch["target"] and batch["x"] is x and np.array_equal(batch["x"], x)
  rand = PerturbTargets("random", 0.5, seed=0)
  assert not np.array_equal(rand(batch, 0)["x"], rand(batch, 1)["x"])


@pytest.mark.parametrize("bad", [dict(perturbation="svd0"), dict(perturbation="noise"),
                                 dict(mu=2.0), dict(feature_dim=0), dict(width=-1),
                                 dict(feature_dim=True), dict(train_config="fast"),
                                 dict(seed=-1)])
def test_bad_settings_raise_before_work(bad):
  with pytest.raises(InvalidInputError):
    get_scorer("rnd", **bad)


def test_fit_without_data_or_variables_and_bad_data_raise():
  with pytest.raises(InvalidInputError, match="ID training images"):
    RND().fit(Shape(), None, None)
  with pytest.raises(InvalidInputError, match="image shape"):
    RND(train_config=CFG).fit(Shape(), None, _smooth(40)[:, :4, :4])
  with pytest.raises(InvalidInputError, match="unknown|valid"):
    get_scorer("rnd", featuredim=3)
