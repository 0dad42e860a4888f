"""Nalisnick et al. section 5 (``models/flows/second_order.py``) and its experiment.

* alpha and the linearised Jacobian from the kernels against a brute-force ``jax.jacfwd`` of
  tiny CV-Glows whose coupling translations are zeroed (the st-nets' output convs set to 0:
  an additive coupling is then the identity): two levels with ActNorm and LU 1x1 convs, and
  one level without ActNorm with plain convs (highway st-net, as the ``nalisnick`` presets);
* the traces under the linearised model (block form vs full ``D x D`` covariances);
* the variance sums and patch covariances against numpy loops;
* the trained-model Hessian trace against an explicit ``jax.hessian`` on a tiny input;
* Eq. 4 in full is exact for the linearised (quadratic) model;
* the paper's single-level formula as a special case, bad input, and the experiment end to
  end on tiny local data.

Speed (XLA:CPU): tiny 8 x 8 models, variables drawn with numpy (no init compile).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_square_images

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import nalisnick_second_order as exp
from ood_jax.models.flows import second_order as so
from ood_jax.models.flows.glow import make_cv_glow, make_glow

OUT_CONVS = ("conv3", "out_conv")        # GlowSTNet's and HighwaySTNet's last layer

# name -> (image shape, CV-Glow settings over the smoke preset)
CONFIGS = {
    "two_levels_actnorm_lu": ((8, 8, 1), dict(levels=2, steps=2, hidden=4)),
    "one_level_plain_no_actnorm": ((8, 8, 3), dict(levels=1, steps=2, hidden=4, lu=False,
                                                   actnorm=False, st_net="highway",
                                                   highway_layers=1)),
}


def _variables(model, seed=0, zero_translations=True, scale=0.3):
  """Variables drawn with numpy: every parameter its neutral value (0; 1 for scales;
  identity for plain 1x1 kernels) plus ``N(0, scale^2)``; LU: a random permutation and
  mixed signs; ``zero_translations``: the st-nets' output convs all zero."""
  x = np.zeros((1, *model.image_shape), np.uint8)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "dequant": jax.random.PRNGKey(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    names = [p.key for p in path]
    if names[-1] == "perm":
      return jnp.asarray(np.eye(s.shape[0])[rng.permutation(s.shape[0])], s.dtype)
    if names[-1] == "sign_s":
      return jnp.asarray(rng.choice([-1.0, 1.0], s.shape), s.dtype)
    if zero_translations and any(n in OUT_CONVS for n in names):
      return jnp.zeros(s.shape, s.dtype)
    base = 1.0 if names[-1] == "scale" else 0.0
    if names[-1] == "kernel" and "invconv" in names:
      base = np.eye(s.shape[0])
    return jnp.asarray(base + scale * rng.normal(size=s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _make(name):
  shape, kw = CONFIGS[name]
  return make_cv_glow("smoke", shape, learn_prior=False, **kw)


@pytest.fixture(scope="module")
def linearised():
  """``{config: (model, variables, flow, brute-force dz/dy D x D)}``."""
  out = {}
  for name in CONFIGS:
    model = _make(name)
    variables = _variables(model)

    def z_of(y, model=model, variables=variables):
      eps, _, _ = model.apply(variables, y[None], method=model.encode_unit)
      return jnp.concatenate([e.reshape(-1) for e in eps])
    y0 = jnp.asarray(np.random.default_rng(1).uniform(size=model.image_shape), jnp.float32)
    jac = np.asarray(jax.jit(jax.jacfwd(z_of))(y0), np.float64)
    out[name] = (model, variables, so.linear_flow(model, variables),
                 jac.reshape(jac.shape[0], -1))
  return out


def _rel(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_alpha_and_jacobian_match_brute_force(linearised, name):
  model, variables, flow, jac = linearised[name]
  h, w, c = model.image_shape
  t = flow.period
  assert t == 2 ** model.levels
  has_actnorm = "actnorm" in variables["params"]["level_0"]["step0"]
  assert has_actnorm == name.startswith("two")
  assert _rel(so.linear_jacobian(flow), jac) < 1e-5        # every entry, rows in latent order
  gram = jac.T @ jac                                       # -Hessian of log p (sigma = 1)
  a2 = so.alphas(model, variables) ** 2                    # T x T x C, from the kernels
  tiled = np.tile(a2, (h // t, w // t, 1))
  assert _rel(tiled.reshape(-1), np.diag(gram)) < 1e-5
  # The test has power: alpha depends on the phase, and not symmetrically (a transposed or
  # channel-major squeeze mapping fails it).
  assert a2.std() > 0.1 * a2.mean()
  wrong = np.tile(a2.transpose(1, 0, 2), (h // t, w // t, 1))
  assert _rel(wrong.reshape(-1), np.diag(gram)) > 1e-2
  # A^T A is B^T B on every T x T patch and 0 across patches.
  b = so.block_jacobian(flow)
  idx = np.arange(h * w * c).reshape(h, w, c)
  patch = idx[:t, :t].reshape(-1)
  np.testing.assert_allclose(b.T @ b, gram[np.ix_(patch, patch)], rtol=1e-5,
                             atol=1e-5 * np.abs(gram).max())
  if h > t:
    other = idx[t:2 * t, :t].reshape(-1)
    assert np.abs(gram[np.ix_(patch, other)]).max() < 1e-5 * np.abs(gram).max()


def test_linearised_hessian_and_traces(linearised, images):
  model, variables, flow, jac = linearised["two_levels_actnorm_lu"]
  h, w, c = model.image_shape
  t = flow.period
  gram = jac.T @ jac
  log_p = so.log_density_fn(model, variables)
  y0 = jnp.full(model.image_shape, 0.4, jnp.float32)
  hess = np.asarray(jax.jit(jax.hessian(log_p))(y0), np.float64).reshape(h * w * c, -1)
  assert _rel(hess, -gram) < 1e-4                         # App. G: H = -J^T J / sigma^2
  xq, xp = images(30, model.image_shape, 1), images(30, model.image_shape, 2)
  xq = (xq // 2 + 60).astype(np.uint8)                     # a smaller-variance "q"
  cov = lambda x: np.cov((x.astype(np.float64) / 256).reshape(len(x), -1), rowvar=False,
                         bias=True)
  exact = -0.5 * np.sum(gram * (cov(xq) - cov(xp)))
  gq, gp = so.phase_covariance(xq, t), so.phase_covariance(xp, t)
  assert abs(so.linear_trace_gap(so.block_jacobian(flow), gq, gp) - exact) < 1e-6 * abs(exact)
  diag = -0.5 * np.sum(np.diag(gram) * (np.diag(cov(xq)) - np.diag(cov(xp))))
  pred = so.predicted_gap(so.flow_alphas(flow), so.variance_sums(xq, t), so.variance_sums(xp, t))
  assert abs(pred - diag) < 1e-5 * abs(diag) and pred > 0
  v = (xq.astype(np.float64) - xp.astype(np.float64))[:5] / 256
  np.testing.assert_allclose(so.linear_quadratic_forms(flow, v),
                             -np.einsum("ni,ij,nj->n", v.reshape(5, -1), gram, v.reshape(5, -1)),
                             rtol=1e-5)


def test_eq4_in_full_is_exact_for_the_linearised_model(linearised, images):
  """For a quadratic log p the second-order expansion about x0 is exact: the experiment's
  'Eq. 4 in full' equals the gap of log p at the bin centres (what it predicts there)."""
  model, variables, flow, _ = linearised["two_levels_actnorm_lu"]
  xp = images(12, model.image_shape, 3)
  xq = (images(10, model.image_shape, 4) // 3 + 90).astype(np.uint8)
  log_p = jax.jit(jax.vmap(so.log_density_fn(model, variables)))
  ll = lambda x: np.asarray(log_p(jnp.asarray((x + 0.5) / 256, jnp.float32)), np.float64)
  per_id, rows = exp.analyse(model, variables, xp, {"q": xq}, ll(xp), {"q": ll(xq)},
                             n_hessian=12, batch=16)
  r = rows[0]
  assert abs(r["pred_eq4_full"] - r["measured"]) < 1e-3 * abs(r["measured"])
  assert abs(r["pred_hessian"] - r["pred_linear_full"]) < 1e-4 * abs(r["pred_linear_full"])
  assert abs(r["linear_same_images"] - r["pred_linear_full"]) < 1e-6 * abs(r["pred_linear_full"])
  assert r["sign_linear_full"] in (True, False) and per_id["period"] == 4
  assert len(per_id["alpha"]) == 4 and r["var_sums_ood"][0] < r["var_sums_id"][0]


def test_hessian_trace_matches_explicit_hessian(images):
  """The trained (nonlinear) model: st-net outputs not zero, so couplings add curvature."""
  model = _make("two_levels_actnorm_lu")
  variables = _variables(model, seed=5, zero_translations=False, scale=0.5)
  log_p = so.log_density_fn(model, variables)
  x0 = jnp.asarray(np.random.default_rng(0).uniform(0.3, 0.7, model.image_shape), jnp.float32)
  d = int(np.prod(model.image_shape))
  hess = np.asarray(jax.jit(jax.hessian(log_p))(x0), np.float64).reshape(d, d)
  xq, xp = images(7, model.image_shape, 5), images(9, model.image_shape, 6)
  dev = lambda x: x / 256.0 - (x / 256.0).mean(axis=0, keepdims=True)
  dq, dp = dev(xq.astype(np.float64)), dev(xp.astype(np.float64))
  cov = lambda v: np.einsum("ni,nj->ij", v.reshape(len(v), -1), v.reshape(len(v), -1)) / len(v)
  exact = np.sum(hess * (cov(dq) - cov(dp)))
  got = so.hessian_trace(log_p, x0, dq, dp, batch=4)        # chunks of 4, padded
  assert abs(got["trace"] - exact) < 1e-3 * abs(exact)
  assert len(got["forms_q"]) == 7 and got["se"] > 0
  g = np.asarray(jax.grad(log_p)(x0)).reshape(-1)
  np.testing.assert_allclose(so.gradient(log_p, x0).reshape(-1), g, atol=1e-5 * np.abs(g).max())
  flow = so.linear_flow(model, variables)                  # the couplings' curvature matters
  lin = so.linear_quadratic_forms(flow, dq).mean() - so.linear_quadratic_forms(flow, dp).mean()
  assert abs(lin - exact) > 1e-3 * abs(exact)


def test_variance_sums_and_patch_covariance_against_loops(images):
  x = images(6, (8, 4, 3), 7)
  y = x.astype(np.float64) / 256
  for t in (1, 2, 4):
    want = np.zeros((t, t, 3))
    for h in range(8):
      for w in range(4):
        for c in range(3):
          want[h % t, w % t, c] += np.var(y[:, h, w, c])
    np.testing.assert_allclose(so.variance_sums(x, t), want, rtol=1e-12)
  g = so.phase_covariance(x, 2)
  want = np.zeros((12, 12))
  for i in range(0, 8, 2):
    for j in range(0, 4, 2):
      p = y[:, i:i + 2, j:j + 2].reshape(6, -1)
      want += np.cov(p, rowvar=False, bias=True)
  np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(np.diag(g), so.variance_sums(x, 2).reshape(-1), rtol=1e-12)
  # The paper's Eq. 6 numbers: per-channel SVHN / CIFAR-10 sums, alpha = 1.
  q, p = exp.PAPER_SUMS["svhn"], exp.PAPER_SUMS["cifar10"]
  assert so.predicted_gap(np.ones(3), q, p) == pytest.approx(0.5 * (12.3 + 6.5 + 14.5))
  m = so.means_condition(x[:3], x[3:])
  assert 0 <= m["frac_within"] <= 1 and m["max_abs_diff_levels"] > 0
  same = so.means_condition(x, x)
  assert same["all_within"] and same["max_abs_diff_levels"] == 0


def test_paper_single_level_formula_is_the_special_case():
  rng = np.random.default_rng(0)
  diag = [np.diag(rng.normal(size=3)) for _ in range(3)]
  flow = so.LinearFlow((4, 4, 3), (diag[2] @ diag[1] @ diag[0],), (3,), squeeze=False)
  assert flow.period == 1
  np.testing.assert_allclose(so.flow_alphas(flow).reshape(-1), np.abs(so.paper_alphas(diag)))
  full = [np.eye(3) + 0.5 * rng.normal(size=(3, 3)) for _ in range(2)]
  m = full[1] @ full[0]
  flow = so.LinearFlow((4, 4, 3), (m,), (3,), squeeze=False)
  np.testing.assert_allclose(so.flow_alphas(flow).reshape(-1), np.linalg.norm(m, axis=0))
  assert not np.allclose(so.flow_alphas(flow).reshape(-1), np.abs(so.paper_alphas(full)))
  np.testing.assert_allclose(so.linear_jacobian(flow), np.kron(np.eye(16), m))


def test_bad_input_is_one_clear_error(images):
  x = images(4, (8, 8, 1), 0)
  cases = [
      (lambda: so.check_linearisable(make_cv_glow("smoke", (8, 8, 1))), "learn_prior"),
      (lambda: so.check_linearisable(make_glow("smoke", (8, 8, 1), learn_prior=False)),
       "additive"),
      (lambda: so.check_linearisable(make_cv_glow("smoke", (8, 8, 1), learn_prior=False,
                                                  logit=True)), "logit"),
      (lambda: so.variance_sums(x.astype(np.float32)), "uint8"),
      (lambda: so.variance_sums(x, 3), "divisible"),
      (lambda: so.variance_sums(x[:1]), "N >= 2"),
      (lambda: so.predicted_gap(np.ones(3), np.ones(3), np.ones(2)), "one shape"),
      (lambda: so.paper_alphas([np.ones((2, 3))]), "square"),
      (lambda: so.hessian_quadratic_forms(lambda y: jnp.sum(y), jnp.zeros((2, 2)),
                                          np.zeros((3, 2))), "do not match"),
  ]
  for fn, message in cases:
    with pytest.raises(InvalidInputError, match=message):
      fn()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """``(data dir, checkpoint dir)``: grey 8 x 8 ``toy`` (ID) and ``other`` (OOD)."""
  d = tmp_path_factory.mktemp("data")
  x = toy_square_images(40, 8)
  np.savez(d / "toy_train.npz", x=x[:32])
  np.savez(d / "toy_test.npz", x=x[32:])
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8))
  return str(d), str(tmp_path_factory.mktemp("ckpt"))


def _argv(shared, out, **kw):
  data, ckpt = shared
  a = {"--preset": "smoke", "--pairs": "toy:other+svhn", "--data-dir": data,
       "--ckpt-dir": ckpt, "--out": out, "--train-steps": "1", "--n-eval": "4",
       "--n-hessian": "4", "--hessian-batch": "8", "--model-args": "hidden=4,steps=1"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


@pytest.mark.parametrize("extra, message", [
    ({"--n-hessian": "1"}, "--n-hessian"),
    ({"--hessian-batch": "0"}, "--hessian-batch"),
    ({"--pairs": "toy"}, "--pairs"),
    ({"--model-args": "learn_prior=True"}, "learn_prior"),
])
def test_bad_options_are_one_clear_error(shared, tmp_path, capsys, extra, message):
  out = str(tmp_path / "bad")
  assert exp.main(_argv(shared, out, **extra)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(out)


@pytest.mark.slow
def test_experiment_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "so")
  assert exp.main(_argv(shared, out)) == 0
  report = open(os.path.join(out, "report.md")).read()
  assert "second_order_toy.png" in report and "toy -> other" in report
  assert "svhn (test split) is not available here" in report and "49.6 / 61.9" in report
  with open(os.path.join(out, "second_order_toy.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [(r["id"], r["ood"]) for r in rows] == [("toy", "other")]
  r = rows[0]
  for key, _ in exp.PREDICTIONS:
    assert np.isfinite(r[f"pred_{key}"]) and r[f"sign_{key}"] in (True, False)
  assert r["n_hessian_id"] == 4 and r["n_hessian_ood"] == 4 and np.isfinite(r["measured"])
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["model_overrides"] == {"learn_prior": False}
  per_id = json.load(open(os.path.join(out, "second_order.json")))["toy"]
  assert per_id["period"] == 4 and np.array(per_id["alpha"]).shape == (4, 4, 1)
