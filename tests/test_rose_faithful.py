"""ROSE as the paper and the public code define it (issue 14, item 1): the VAE objective at
``z = mu`` by default, the damping kinds, DIAG on Glow's InvConv layers by default, the ID
split, and the z-score's sigma.

Each test fails on the behaviour before the fix: the default took one random ``z`` (scores
changed with the seed), the damping was relative only, Glow got EKFAC, ``split_id`` shrank
``n_norm`` to half the images even when there were enough, and (guarded here) a score that
ignored sigma would not match the hand-computed one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.models import make_model
from ood_jax.scores import fisher
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores import rose as rose_mod
from ood_jax.scores.rose import Rose, aggregate, split_id


def _init(model, x, seed=0):
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "sample": jax.random.key(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _images(n, seed=0):
  rng = np.random.default_rng(seed)
  x = np.zeros((n, 32, 32, 1), np.uint8)
  x[:, 8:20, 8:20] = rng.integers(150, 255, (n, 12, 12, 1))
  return x


@pytest.fixture(scope="module")
def vae():
  model = make_model("vae", "smoke", (32, 32, 1))
  x = _images(6)
  return model, _init(model, x), x


def test_default_objective_is_at_the_posterior_mean(vae):
  model, v, x = vae
  assert Rose().z == "mean"
  objective = psg.objective_for(model)
  layers = tuple(Rose().chosen_layers(model, v, x))
  ones = jnp.ones((len(x),), jnp.float32)
  blocks = rose_mod.make_blocks_fn(objective, layers, z_mean=True)
  a = blocks(v, x, jax.random.key(1), ones)
  b = blocks(v, x, jax.random.key(2), ones)
  for k in a:                                      # no dependence on the noise key
    for u, w in zip(a[k], b[k]):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(w))
  # = the gradient of the negative ELBO with eps = 0 (z = mu), image by image.
  path = layers[0].path
  zero = jnp.zeros((1, model.latent_dim), jnp.float32)

  def loss(sub, x1):
    p = {**v["params"], "encoder": {**v["params"]["encoder"], path.split("/")[1]: sub}}
    return objective.batched({**v, "params": p}, x1, zero)[0]
  for i in range(len(x)):
    g = jax.grad(loss)(v["params"]["encoder"][path.split("/")[1]], x[i:i + 1])
    pmat, dmat = a[path]
    got = np.asarray(pmat[i]).T @ np.asarray(dmat[i])
    want = np.asarray(g["kernel"]).reshape(-1, got.shape[-1])
    np.testing.assert_allclose(got[:want.shape[0]], want, rtol=2e-4, atol=1e-6)
  # The sampled variant does depend on the key.
  s = rose_mod.make_blocks_fn(objective, layers, z_mean=False)
  sa, sb = s(v, x, jax.random.key(1), ones), s(v, x, jax.random.key(2), ones)
  assert any(not np.array_equal(np.asarray(sa[k][1]), np.asarray(sb[k][1])) for k in sa)


def test_default_scores_do_not_depend_on_the_noise_seed(vae):
  model, v, _ = vae
  x = _images(40, seed=3)
  layers = tuple(Rose().chosen_layers(model, v, x))
  raw = rose_mod._layer_scores(model, layers, True)
  sc = Rose(fisher="diag", n_fisher=16, n_norm=16, chunk_size=8, progress=False)
  st = sc.fit(model, v, x[:32])
  p = {"v": st.params["v"], "stats": st.params["stats"]}
  a = np.asarray(raw(p, jnp.asarray(x[32:]), jax.random.key(7)))
  b = np.asarray(raw(p, jnp.asarray(x[32:]), jax.random.key(8)))
  np.testing.assert_array_equal(a, b)
  sampled = Rose(fisher="diag", z="sample", n_fisher=16, n_norm=16, chunk_size=8, progress=False)
  st2 = sampled.fit(model, v, x[:32])
  assert not np.allclose(sampled.score(st2, x[32:]), sc.score(st, x[32:]))


def test_score_uses_the_z_score_sigma(vae):
  model, v, _ = vae
  x = _images(48, seed=4)
  sc = Rose(fisher="diag", n_fisher=16, n_norm=16, chunk_size=8, progress=False)
  st = sc.fit(model, v, x[:32])
  raw = np.asarray(st.chunk_fn.layer_scores({"v": st.params["v"], "stats": st.params["stats"]},
                                            jnp.asarray(x[32:]), jax.random.key(0)))
  mu, sd = np.asarray(st.params["mu"]), np.asarray(st.params["sigma"])
  assert raw.shape[1] > 1 and np.all(sd > 0) and not np.allclose(sd, 1.0)
  got = sc.score(st, x[32:])
  np.testing.assert_allclose(got, np.maximum((raw - mu) / sd, 0).sum(-1), rtol=1e-4, atol=1e-4)
  assert not np.allclose(got, np.maximum(raw - mu, 0).sum(-1), rtol=1e-3)
  # mu and sd are those of the held-out normalisation images (ddof = 1).
  _, idx_n = split_id(32, 16, 16, sc.seed)
  s_norm = np.asarray(st.chunk_fn.layer_scores({"v": st.params["v"], "stats": st.params["stats"]},
                                               jnp.asarray(x[:32][idx_n]), jax.random.key(0)))
  np.testing.assert_allclose(mu, s_norm.mean(0), rtol=1e-4)
  np.testing.assert_allclose(sd, s_norm.std(0, ddof=1), rtol=1e-3)


def test_damping_kinds():
  d = jnp.asarray([1e-6, 1e-2, 1.0], jnp.float32)
  np.testing.assert_allclose(fisher.inverse_diag(d, 1e-8, "absolute"), 1 / (np.asarray(d) + 1e-8),
                             rtol=1e-6)
  lam = 1e-3 * float(np.mean(np.asarray(d)))
  np.testing.assert_allclose(fisher.inverse_diag(d, 1e-3), 1 / (np.asarray(d) + lam), rtol=1e-6)
  with pytest.raises(ValueError):
    fisher.inverse_diag(d, 1e-3, "sometimes")
  with pytest.raises(InvalidInputError, match="damping_kind"):
    Rose(damping_kind="both")
  with pytest.raises(InvalidInputError, match="z must be"):
    Rose(z="mode")


def test_absolute_damping_changes_the_fit(vae):
  model, v, _ = vae
  x = _images(32, seed=5)
  rel = Rose(fisher="diag", n_fisher=16, n_norm=16, chunk_size=8, damping=1.0, progress=False)
  ab = Rose(fisher="diag", n_fisher=16, n_norm=16, chunk_size=8, damping=1.0,
            damping_kind="absolute", progress=False)
  k = next(iter(rel.fit(model, v, x).params["stats"]))
  i_rel = np.asarray(rel.fit(model, v, x).params["stats"][k]["inv"])
  i_abs = np.asarray(ab.fit(model, v, x).params["stats"][k]["inv"])
  # 1 / inv = diag + lambda: lambda_abs = 1, lambda_rel = 1 * mean(diag).
  diag = 1 / i_abs.astype(np.float64) - 1.0
  np.testing.assert_allclose(1 / i_rel, diag + diag.mean(), rtol=1e-4)
  assert abs(diag.mean() - 1.0) > 1e-3


def test_glow_gets_diag_on_invconv_by_default():
  from ood_jax.models.flows import glow
  model = glow.make_glow("smoke", (32, 32, 1))
  assert Rose().fisher_for(model) == "diag"
  assert Rose(fisher="ekfac").fisher_for(model) == "ekfac"
  assert Rose().fisher_for(make_model("vae", "smoke", (32, 32, 1))) == "ekfac"
  x = _images(12, seed=6)
  v = model.init({"params": jax.random.key(0), "sample": jax.random.key(1),
                  "dequant": jax.random.key(2)}, x[:1], train=False)
  st = Rose(n_fisher=6, n_norm=6, chunk_size=6, progress=False).fit(model, v, x)
  assert st.params["stats"] and all("ua" not in s for s in st.params["stats"].values())


def test_split_id_keeps_both_sizes_when_there_are_enough_images():
  f, n = split_id(3000, 1000, 2000, 0)
  assert (len(f), len(n)) == (1000, 2000) and not set(f) & set(n)
  f, n = split_id(1500, 1000, 1000, 0)                # too few: n_norm halves, Fisher the rest
  assert (len(f), len(n)) == (750, 750) and not set(f) & set(n)
  f, n = split_id(1500, 100, 1000, 0)
  assert (len(f), len(n)) == (100, 1000)
  f2, _ = split_id(3000, 1000, 2000, 1)               # another seed, another Fisher subset
  assert not np.array_equal(f, f2[:100]) and len(set(split_id(3000, 1000, 2000, 0)[0]) ^ set(f2)) > 0
  with pytest.raises(InvalidInputError):
    split_id(10, 0, 5, 0)


def test_aggregations_are_the_papers_sum_and_the_codes_max():
  z = jnp.array([[1.0, -2.0, 3.0]])
  assert float(aggregate(z, "relu_sum")[0]) == 4.0 and float(aggregate(z, "max")[0]) == 3.0
  assert Rose().aggregation == "relu_sum"
