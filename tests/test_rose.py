"""ROSE: per-sample gradients vs a loop of single-image grads, DIAG and EKFAC quadratic forms
vs explicit matrices, aggregation, the Scorer protocol and the ablation experiment.

Speed (XLA:CPU): one smoke VAE (ngf 8, latent 16), weights drawn with numpy (no threefry
initialiser), ``rbg`` keys for the noise, each compiled function shared through module
fixtures.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.models import make_model
from ood_jax.scores import fisher, get_scorer
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores.rose import Rose, aggregate

N = 4
DAMP = 1e-3


def _init(model, x, seed=0):
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "sample": jax.random.key(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":       # wider than DCGAN's 0.02: gradients well above float32 noise
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _id_images(n, seed=0):
  """Dark images with a bright square (the 'ID' data of these tests)."""
  rng = np.random.default_rng(seed)
  x = np.zeros((n, 32, 32, 1), np.uint8)
  x[:, 8:20, 8:20] = rng.integers(150, 255, (n, 12, 12, 1))
  return x


@pytest.fixture(scope="module")
def vae():
  model = make_model("vae", "smoke", (32, 32, 1))
  x = np.random.default_rng(1).integers(0, 256, (N, 32, 32, 1), dtype=np.uint8)
  variables = _init(model, x)
  objective = psg.objective_for(model)
  layers = psg.describe_layers(objective, variables, jnp.asarray(x),
                               psg.select_layers(variables["params"], "encoder/*conv*"))
  eps = objective.noise(jax.random.key(3, impl="rbg"), N)
  pd = jax.jit(lambda v, xx, e: psg.patches_and_deltas(objective, layers, v, xx, e))(
      variables, x, eps)

  @jax.jit
  def one_grad(v, x1, e1):      # the straightforward per-image gradient (batch of 1)
    def loss(enc):
      return objective.batched({**v, "params": {**v["params"], "encoder": enc}}, x1, e1)[0]
    return jax.grad(loss)(v["params"]["encoder"])
  loop = [one_grad(variables, x[i:i + 1], eps[i:i + 1]) for i in range(N)]
  return dict(model=model, v=variables, x=x, eps=eps, layers=layers, pd=pd, loop=loop,
              objective=objective)


def _loop_matrix(vae, layer, i):
  """Image i's looped gradient of ``layer`` as the ``k x out`` matrix (bias row last)."""
  g = vae["loop"][i][layer.path.split("/")[1]]
  m = np.asarray(g["kernel"], np.float64).reshape(-1, layer.kernel_shape[-1])
  return np.concatenate([m, np.asarray(g["bias"], np.float64)[None]]) if "bias" in g else m


def _assert_rel(a, b, rtol):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  err, scale = np.max(np.abs(a - b)), np.max(np.abs(b))
  assert err <= rtol * scale, (err, scale)


def test_layer_selection(vae):
  assert [l.path for l in vae["layers"]] == [       # parameter-tree (sorted) order
      "encoder/input_conv", "encoder/logvar_conv", "encoder/mu_conv", "encoder/pyramid_conv1",
      "encoder/pyramid_conv2"]
  assert all(l.kind == "conv" for l in vae["layers"])
  assert [l.use_bias for l in vae["layers"]] == [False, True, True, False, False]
  with pytest.raises(InvalidInputError, match="match no parameter module"):
    psg.select_layers(vae["v"]["params"], "nothing*")


def test_per_sample_grads_equal_loop_of_single_image_grads(vae):
  for layer in vae["layers"]:
    p, d = vae["pd"][layer.path]
    assert p.shape[:2] == d.shape[:2] and p.shape[0] == N
    g = psg.grad_matrix_to_params(psg.grads_from_patches(p, d), layer)
    for i in range(N):
      want = vae["loop"][i][layer.path.split("/")[1]]
      assert set(g) == set(want)
      for k in want:
        _assert_rel(g[k][i], want[k], 1e-4)
  # The generic fallback (vmap of jax.grad over the layer's subtree) agrees too.
  path = "encoder/mu_conv"
  gen = jax.jit(lambda v, xx, e: psg.generic_grads(vae["objective"], [path], v, xx, e)[path])(
      vae["v"], vae["x"], vae["eps"])
  for i in range(N):
    for k in ("kernel", "bias"):
      _assert_rel(gen[k][i], vae["loop"][i]["mu_conv"][k], 1e-4)


def test_patches_are_im2col():
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
  layer = psg.Layer("c", "conv", (3, 3, 3, 4), True, (2, 2), ((1, 1), (1, 1)))
  p = np.asarray(psg.extract_patches(jnp.asarray(x), layer))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = [np.r_[xp[n, 2 * i:2 * i + 3, 2 * j:2 * j + 3].ravel(), 1.0]
          for n in range(2) for i in range(3) for j in range(3)]
  np.testing.assert_allclose(p.reshape(18, -1), np.array(want), rtol=0, atol=0)


def test_diag_score_equals_hand_computed(vae):
  for layer in vae["layers"]:        # input/pyramid convs: T > 1; heads: T = 1 (rank-1 path)
    block = vae["pd"][layer.path]
    inv = fisher.inverse_diag(fisher.sum_sq(block) / N, DAMP)
    s = fisher.quad_form(block, inv)
    gs = np.stack([_loop_matrix(vae, layer, i) for i in range(N)])
    f = np.mean(gs ** 2, axis=0)
    f = f + DAMP * f.mean()
    want = [g.ravel() @ (g.ravel() / f.ravel()) for g in gs]
    np.testing.assert_allclose(np.asarray(s), want, rtol=2e-4)


def _ekfac_by_hand(gs, ua, us):
  """``gᵀ F̂⁻¹ g`` with ``F̂ = (U_A ⊗ U_S) diag(Λ + λ) (U_A ⊗ U_S)ᵀ`` formed explicitly."""
  k = np.kron(ua, us)                        # vec(U_Aᵀ G U_S) = kᵀ vec(G) (row-major vec)
  lam = np.mean([(k.T @ g.ravel()) ** 2 for g in gs], axis=0)
  f_hat = k @ np.diag(lam + DAMP * lam.mean()) @ k.T
  return [g.ravel() @ np.linalg.solve(f_hat, g.ravel()) for g in gs]


def test_ekfac_factors_and_score_on_a_small_layer(vae):
  layer = vae["layers"][0]                   # input_conv: 16 x 8 kernel, 256 positions
  block = vae["pd"][layer.path]
  p, d = (np.asarray(b, np.float64) for b in block)
  a_sum, s_sum, t = fisher.factor_sums(block)
  assert t == 256
  a_hand = sum(np.outer(p[n, i], p[n, i]) for n in range(N) for i in range(t))
  s_hand = sum(np.outer(d[n, i], d[n, i]) for n in range(N) for i in range(t))
  _assert_rel(a_sum, a_hand, 1e-5)
  _assert_rel(s_sum, s_hand, 1e-5)
  ua, us = fisher.eigenbasis(a_sum / (N * t)), fisher.eigenbasis(s_sum / N)
  w = np.linalg.eigvalsh(a_hand)
  _assert_rel(np.asarray(a_sum) @ np.asarray(ua), np.asarray(ua) * w, 1e-4)     # A U = U diag(w)
  inv = fisher.inverse_diag(fisher.sum_sq(block, ua, us) / N, DAMP)
  s = fisher.quad_form(block, inv, ua, us)
  gs = [_loop_matrix(vae, layer, i) for i in range(N)]
  want = _ekfac_by_hand(gs, np.asarray(ua, np.float64), np.asarray(us, np.float64))
  np.testing.assert_allclose(np.asarray(s), want, rtol=1e-3)


def test_rank_one_and_generic_blocks_match_explicit_forms():
  rng = np.random.default_rng(0)
  p = rng.normal(size=(6, 1, 5)).astype(np.float32)        # T = 1: G_n = a bᵀ, never formed
  d = rng.normal(size=(6, 1, 3)).astype(np.float32)
  gs = np.einsum("ntk,nto->nko", p, d).astype(np.float64)
  for block, a_sum in (((p, d), None), ((jnp.asarray(gs, jnp.float32),), None)):
    a_sum, s_sum, _ = fisher.factor_sums(block)
    ua, us = fisher.eigenbasis(a_sum), fisher.eigenbasis(s_sum)
    if len(block) == 1:      # generic blocks: A = Σ G Gᵀ, S = Σ Gᵀ G
      _assert_rel(a_sum, np.einsum("nkc,nlc->kl", gs, gs), 1e-5)
      _assert_rel(s_sum, np.einsum("nkc,nkd->cd", gs, gs), 1e-5)
    inv = fisher.inverse_diag(fisher.sum_sq(block, ua, us) / 6, DAMP)
    want = _ekfac_by_hand(gs, np.asarray(ua, np.float64), np.asarray(us, np.float64))
    np.testing.assert_allclose(np.asarray(fisher.quad_form(block, inv, ua, us)), want, rtol=1e-3)
    f = np.mean(gs ** 2, axis=0)
    f = f + DAMP * f.mean()
    inv = fisher.inverse_diag(fisher.sum_sq(block) / 6, DAMP)
    np.testing.assert_allclose(np.asarray(fisher.quad_form(block, inv)),
                               np.sum(gs ** 2 / f, axis=(1, 2)), rtol=1e-4)


def test_aggregation_on_hand_made_z():
  z = jnp.array([[1.0, -2.0, 3.0], [-1.0, -0.5, -3.0], [0.25, 0.0, 0.5]])
  np.testing.assert_allclose(aggregate(z, "relu_sum"), [4.0, 0.0, 0.75])
  np.testing.assert_allclose(aggregate(z, "max"), [3.0, -0.5, 0.5])
  with pytest.raises(InvalidInputError, match="aggregation"):
    aggregate(z, "mean")


def test_bad_settings_are_one_clear_error():
  with pytest.raises(InvalidInputError, match="fisher"):
    Rose(fisher="kfac")
  with pytest.raises(InvalidInputError, match="aggregation"):
    get_scorer("rose", aggregation="sum")


@pytest.mark.parametrize("fisher_kind", ["diag", "ekfac"])
def test_scorer_protocol(vae, fisher_kind):
  # Default chunk size and 16-image sets: the same compiled shapes as the ablation test below.
  x_id = _id_images(72)
  noise = np.random.default_rng(5).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
  sc = get_scorer("rose", fisher=fisher_kind, n_fisher=32, n_norm=24, seed=1,
                  context={"k": 3, "train_config": None})   # shared values rose lacks: ignored
  state = sc.fit(vae["model"], vae["v"], x_id[:56])
  s_id = sc.score(state, x_id[56:])
  s_ood = sc.score(state, noise)
  assert s_id.dtype == np.float32 and s_id.shape == (16,) and s_ood.shape == (16,)
  assert np.all(np.isfinite(s_ood)) and np.all(s_id >= 0)        # relu_sum of z-scores
  assert np.median(s_ood) > np.max(s_id)                          # higher = more OOD
  compiled = state.chunk_fn.layer_scores._cache_size()
  np.testing.assert_array_equal(sc.score(state, noise), s_ood)   # deterministic
  assert state.chunk_fn.layer_scores._cache_size() == compiled    # no new compile
  with pytest.raises(InvalidInputError):
    sc.score(state, noise.astype(np.float32))


def test_rose_ablations_end_to_end(tmp_path):
  from ood_jax.experiments import rose_ablations
  d = tmp_path / "data"
  d.mkdir()
  x = _id_images(96)
  np.savez(d / "toy_train.npz", x=x[:64])
  np.savez(d / "toy_test.npz", x=x[64:])
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--id", "toy", "--ood", "noise", "--data-dir", str(d), "--out", out,
          "--train-steps", "2", "--n-eval", "16", "--fisher-sizes", "10,1000", "--no-progress"]
  assert rose_ablations.main(argv) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [r["score"] for r in rows] == ["rose_diag", "rose_ekfac", "rose_abs_damping",
                                        "rose_z_sample"]
  assert all(r["ood"] == "noise" and 0.0 <= r["auroc"] <= 1.0 for r in rows)
  meta = json.load(open(os.path.join(out, "meta.json")))
  var = meta["models"]["vae"]["variants"]
  assert var["rose_abs_damping"]["damping"] == 1e-8 and var["rose_ekfac"]["fisher"] == "ekfac"
  # 64 train images: 32 held out for the z-scores, N = 1000 caps at 32; smoke: 2 repeats.
  sweep = json.load(open(os.path.join(out, "fisher_sweep.json")))["auroc"]["vae"]
  assert list(sweep) == ["10", "32"] and all(len(v["noise"]) == 2 for v in sweep.values())
  report = open(os.path.join(out, "report.md")).read()
  assert "Fig. 5" in report and os.path.exists(os.path.join(out, "rose_fisher_sweep_vae.png"))
  assert rose_ablations.main(argv[:-3] + ["--fisher-sizes", "0", "--no-progress"]) == 2
  assert rose_ablations.main(argv[:-1] + ["--repeats", "0", "--no-progress"]) == 2


def test_glow_invconv_layers_use_the_generic_fallback():
  from ood_jax.models.flows import glow
  model = glow.make_glow("smoke", (32, 32, 1))
  x = _id_images(3)
  variables = model.init({"params": jax.random.key(0), "sample": jax.random.key(1),
                          "dequant": jax.random.key(2)}, x[:1], train=False)
  layers = Rose().chosen_layers(model, variables, x)
  assert layers and all("invconv" in l.path and l.kind == "generic" for l in layers)
  objective, path = psg.objective_for(model), layers[0].path
  key = jax.random.key(4, impl="rbg")
  g = jax.jit(lambda v, xx: psg.generic_grads(objective, [path], v, xx, key)[path])(variables, x)

  @jax.jit
  def one(v, x1, k):
    def loss(sub):
      p = jax.tree.map(lambda a: a, v["params"])
      node = p
      for name in path.split("/")[:-1]:
        node = node[name]
      node[path.split("/")[-1]] = sub
      return objective.batched({**v, "params": p}, x1, k)[0]
    return jax.grad(loss)(psg.subtree(v["params"], path))
  for i in range(3):     # float32 rounding of the flow's log-det terms: ~1e-3 relative
    want = one(variables, x[i:i + 1], jax.random.fold_in(key, i))
    for name in want:
      _assert_rel(g[name][i], want[name], 5e-3)
