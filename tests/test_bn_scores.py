"""BatchNorm train-mode scores: bn_mixed (S_b,r, Delta, T) and bn_train_bpd.

Checks batch-composition dependence, the compositions themselves, the vectorised
statistic against a plain loop of single-batch forwards (toy model and the VAE), T by
hand from the reference Deltas, and the errors.
"""

import math

import jax
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.models import make_model
from ood_jax.scores import get_scorer, train_mode
from ood_jax.scores.bn_mixed import BNMixed
from ood_jax.scores.compositions import compositions, num_test_slots
from ood_jax.train import init_variables
from toy_models import ToyBN


def _x(n, seed=0, shape=(4, 4, 1)):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture(scope="module")
def toy():
  model = ToyBN()
  return model, init_variables(model, _x(8), seed=0)


def test_train_mode_depends_on_batch_composition_eval_mode_does_not(toy):
  model, v = toy
  fn = jax.jit(train_mode.batch_log_prob_fn(model, 1))
  x, others = _x(1, seed=1), _x(10, seed=2)
  key = jax.random.PRNGKey(0)
  a = fn(v, np.concatenate([x, others[:5]]), key)[0]
  b = fn(v, np.concatenate([x, others[5:]]), key)[0]
  assert abs(float(a) - float(b)) > 1e-3
  ev = lambda xb: model.apply(v, xb, train=False, method="log_prob", rngs={"sample": key})[0]
  np.testing.assert_allclose(ev(np.concatenate([x, others[:5]])), ev(np.concatenate([x, others[5:]])),
                             rtol=1e-6)


def test_compositions_cover_each_test_sample_once_per_round():
  assert num_test_slots(0.0, 64) == 1 and num_test_slots(0.1, 64) == 6
  assert num_test_slots(0.9, 64) == 58 and num_test_slots(1.0, 8) == 8
  c = compositions(13, 20, b=8, r=0.25, rounds=3, seed=4)
  assert c.m == 2 and c.b == 8 and c.num_batches == 3 * 7
  for t in range(3):
    rows = c.ids[:, 1] == t
    np.testing.assert_array_equal(np.sort(c.test_idx[rows][c.valid[rows]]), np.arange(13))
  assert c.train_idx.min() >= 0 and c.train_idx.max() < 20
  assert all(len(set(row)) == 6 for row in c.train_idx)
  # a pure function of (seed, stream, round): round 1 is the same whatever K is
  c2 = compositions(13, 20, b=8, r=0.25, rounds=2, seed=4)
  np.testing.assert_array_equal(c2.test_idx[7:14], c.test_idx[7:14])
  np.testing.assert_array_equal(c2.train_idx[7:14], c.train_idx[7:14])
  assert not np.array_equal(compositions(13, 20, b=8, r=0.25, rounds=1, seed=5).test_idx,
                            c.test_idx[:7])


def test_padded_last_batch_repeats_no_image_in_its_statistics():
  # 13 images in groups of m = 5 (b = 8, r = 0.6): the last group has 3 real images and 2
  # fillers, which must be other images (no image twice in one batch's BatchNorm statistics).
  for seed in range(20):
    c = compositions(13, 20, b=8, r=0.6, rounds=2, seed=seed)
    assert c.m == 5 and c.num_batches == 2 * 3
    assert all(len(set(row)) == c.m for row in c.test_idx)
    for t in range(2):
      rows = c.ids[:, 1] == t
      np.testing.assert_array_equal(np.sort(c.test_idx[rows][c.valid[rows]]), np.arange(13))
  # bn_train_bpd's batches (r = 1): 10 images, b = 4 -> the last batch 2 real + 2 fillers.
  for seed in range(20):
    c = compositions(10, 0, b=4, r=1.0, rounds=1, seed=seed)
    assert all(len(set(row)) == 4 for row in c.test_idx)
  with pytest.raises(InvalidInputError, match="only 3"):
    compositions(3, 20, b=8, r=0.6, rounds=1, seed=0)


def test_vectorised_statistic_equals_loop_toy(toy):
  model, v = toy
  x_test, pool = _x(13, seed=3), _x(30, seed=4)
  fn, loop = train_mode.stacked_fn(model, 1, seed=7), train_mode.loop_fns(model, 1, 7)
  for r in (0.0, 0.5):
    comps = compositions(len(x_test), len(pool), b=6, r=r, rounds=2, seed=1, stream=int(r * 2))
    vec = train_mode.mean_test_log_prob(fn, v, x_test, pool, comps, per_call=4)
    ref = train_mode.loop_mean_test_log_prob(loop, v, x_test, pool, comps)
    np.testing.assert_allclose(vec, ref, rtol=1e-5, atol=1e-5)
  assert fn._cache_size() == 1            # one compiled shape for both ratios


def test_bn_mixed_vae_equals_loop_and_t_is_the_rank():
  model = make_model("vae", "smoke", (32, 32, 1))
  x = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 1), dtype=np.uint8)
  v = init_variables(model, x[:4], seed=0)
  pool, ref, q = x[:12], x[12:18], x[18:]
  # max_latents = 4 batches x b x k: every call has the same shape (one compilation)
  kw = dict(K=2, b=4, r1=0.25, r2=0.75, k=2, seed=3, n_ref=6, max_latents=32)
  scorer = get_scorer("bn_mixed", statistic="t", **kw)
  state = scorer.fit(model, v, x[:18])
  fns = train_mode.loop_fns(model, 2, 3)
  loop = lambda xq, r, stream: train_mode.loop_mean_test_log_prob(
      fns, v, xq, pool, compositions(len(xq), len(pool), b=4, r=r, rounds=2, seed=3,
                                     stream=stream))
  delta_loop = np.abs(loop(q, 0.25, 0) - loop(q, 0.75, 1))
  delta = BNMixed(**kw).score(state, q)
  np.testing.assert_allclose(delta, delta_loop, rtol=1e-4, atol=1e-3)
  ref_delta = np.abs(loop(ref, 0.25, 2) - loop(ref, 0.75, 3))
  np.testing.assert_allclose(np.sort(ref_delta), state.params["ref"], rtol=1e-4, atol=1e-3)
  t = scorer.score(state, q)
  t_hand = [(state.params["ref"] <= d).sum() for d in delta]
  np.testing.assert_array_equal(t, t_hand)
  assert t.dtype == np.float32 and 0 <= t.min() and t.max() <= 6
  assert state.chunk_fn._cache_size() == 1


def test_s_statistic_and_train_bpd_on_toy(toy):
  model, v = toy
  x, pool = _x(9, seed=5), _x(20, seed=6)
  s = get_scorer("bn_mixed", statistic="s", K=3, b=5, r1=0.2, k=1, seed=2)
  got = s.score(s.fit(model, v, pool), x)
  comps = compositions(9, 20, b=5, r=0.2, rounds=3, seed=2)
  fns = train_mode.loop_fns(model, 1, 2)
  np.testing.assert_allclose(got, -train_mode.loop_mean_test_log_prob(fns, v, x, pool, comps),
                             rtol=1e-5, atol=1e-5)
  # bn_train_bpd: batches of the scored set alone (r = 1), bits/dim; b = min(b, N)
  for b in (4, 64):
    bpd = get_scorer("bn_train_bpd", b=b, K=2, k=1, seed=2)
    got = bpd.score(bpd.fit(model, v, None), x)
    comps = compositions(9, 0, b=min(b, 9), r=1.0, rounds=2, seed=2)
    want = -train_mode.loop_mean_test_log_prob(fns, v, x, None, comps) / (16 * math.log(2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_errors():
  uniform = make_model("uniform", "smoke", (4, 4, 1))
  for name in ("bn_mixed", "bn_train_bpd"):
    with pytest.raises(InvalidInputError, match="no BatchNorm.*Glow uses actnorm"):
      get_scorer(name).fit(uniform, {}, _x(100))
  with pytest.raises(InvalidInputError, match="r must be in"):
    BNMixed(r2=1.5)
  with pytest.raises(InvalidInputError, match="b must be an integer >= 2"):
    BNMixed(b=1)
  with pytest.raises(InvalidInputError, match="K .* >= 1"):
    BNMixed(K=0)
  with pytest.raises(InvalidInputError, match="statistic"):
    BNMixed(statistic="z")
  model = ToyBN()
  v = init_variables(model, _x(8), seed=0)
  scorer = BNMixed(b=8, r1=0.25, k=1)
  with pytest.raises(InvalidInputError, match="needs 6 training images"):
    scorer.fit(model, v, _x(5))
  with pytest.raises(InvalidInputError, match="id_data"):
    scorer.fit(model, v, None)
  with pytest.raises(InvalidInputError, match="n_ref"):
    BNMixed(statistic="t", n_ref=10).fit(model, v, _x(20))
  state = scorer.fit(model, v, _x(20))
  with pytest.raises(InvalidInputError, match="empty"):
    scorer.score(state, _x(0))
  with pytest.raises(InvalidInputError, match="does not match"):
    scorer.score(state, _x(3, shape=(8, 8, 1)))


def test_encoder_only_train_mode_vae():
  """bn_enc_train_bpd: the encoder normalises with the scored batch, the decoder with its
  running statistics (Chen 3.3.5), checked against hand-built calls on a VAE whose running
  statistics are far from any batch's, so that the decoder's mode changes the result."""
  model = make_model("vae", "smoke", (32, 32, 1))
  x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
  v = init_variables(model, x[:4], seed=0)
  v = jax.tree_util.tree_map(lambda a: a, v)
  # Running statistics that no batch has: mean 0.3, variance 4 everywhere.
  v["batch_stats"] = jax.tree_util.tree_map_with_path(
      lambda p, a: np.full_like(a, 0.3 if p[-1].key == "mean" else 4.0), v["batch_stats"])
  key = jax.random.PRNGKey(0)

  def lp(train):
    out, _ = model.apply(v, x, train=train, k=1, method="log_prob", rngs={"sample": key},
                         mutable=["batch_stats"])
    return np.asarray(out)

  enc = np.asarray(jax.jit(train_mode.batch_log_prob_fn(model, 1, "encoder"))(v, x, key))
  np.testing.assert_allclose(enc, lp({"encoder": True, "decoder": False}), rtol=1e-6)
  both, dec, ev = lp(True), lp({"decoder": True}), lp(False)
  for other in (both, dec, ev):           # each part's mode matters on this model
    assert np.max(np.abs(enc - other)) > 1e-2
  # The registered score: one batch of the whole set (b = N), k = 1, nats -> bits/dim.
  s = get_scorer("bn_enc_train_bpd", b=8, K=1, k=1, seed=0)
  assert (s.name, s.parts) == ("bn_enc_train_bpd", "encoder")
  got = s.score(s.fit(model, v, None), x)
  comps = compositions(8, 0, b=8, r=1.0, rounds=1, seed=0)
  want = -train_mode.loop_mean_test_log_prob(train_mode.loop_fns(model, 1, 0, "encoder"), v, x,
                                             None, comps) / (1024 * math.log(2))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  full = get_scorer("bn_train_bpd", b=8, K=1, k=1, seed=0)
  assert np.max(np.abs(full.score(full.fit(model, v, None), x) - got)) > 1e-4
  with pytest.raises(InvalidInputError, match="parts"):
    get_scorer("bn_train_bpd", parts="middle")
  toy = ToyBN()
  with pytest.raises(InvalidInputError, match="no BatchNorm part 'encoder'"):
    s.fit(toy, init_variables(toy, _x(8), seed=0), None)
