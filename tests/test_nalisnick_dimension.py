"""``nalisnick_dimension`` (Nalisnick et al. App. C-D, Fig. 7): the replicated two moons, the
sign of the sigmoid-scale log-dets, the change-of-variables parts and Jacobian bounds, the
trend verdicts, bad input, and the smoke preset end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import nalisnick_dimension as nd
from ood_jax.models.flows.vector_realnvp import VectorRealNVP


def _random_variables(model, dim, seed=0, scale=0.5):
  """``model``'s variables with every parameter redrawn from N(0, scale^2), so the couplings
  (zero-initialised output layers) are far from the identity."""
  x = jnp.zeros((4, dim), jnp.float32)
  v = model.init(jax.random.PRNGKey(seed), x)
  leaves, tree = jax.tree.flatten(v)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [scale * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


def _points(n, dim, seed=0):
  return np.random.default_rng(seed).normal(0.0, 2.0, (n, dim)).astype(np.float32)


# ----------------------------------------------------------------------------- data


def test_replicate_tiles_the_two_columns():
  x2 = np.arange(10, dtype=np.float32).reshape(5, 2)
  np.testing.assert_array_equal(nd.replicate(x2, 2), x2)
  x7 = nd.replicate(x2, 7)
  assert x7.shape == (5, 7) and x7.dtype == np.float32
  for j in range(7):
    np.testing.assert_array_equal(x7[:, j], x2[:, j % 2])
  assert nd.replicate(x2, 100).shape == (5, 100)
  for bad_x, bad_d in [(x2, 1), (x2, 2.0), (x2, True), (np.zeros((5, 3)), 4), (np.zeros((0, 2)), 4)]:
    with pytest.raises(InvalidInputError):
      nd.replicate(bad_x, bad_d)


def test_moons_fixed_seed():
  a, b, c = nd.moons(200, 0.05, 0), nd.moons(200, 0.05, 0), nd.moons(200, 0.05, 1)
  assert a.shape == (200, 2) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert -1.5 < a[:, 0].min() and a[:, 0].max() < 2.5          # the moons' extent
  with pytest.raises(InvalidInputError):
    nd.moons(0, 0.05, 0)
  with pytest.raises(InvalidInputError):
    nd.moons(10, -0.1, 0)


# ----------------------------------------------------------------------------- the flow


def test_sigmoid_couplings_never_expand_and_exp_ones_can():
  dim, x = 7, _points(64, 7)
  for scale_fn in ("sigmoid", "exp"):
    model = VectorRealNVP(dim=dim, num_couplings=3, hidden=16, hidden_layers=0, scale_fn=scale_fn)
    v = _random_variables(model, dim, scale=1.0)
    fn = jax.jit(lambda v_, x_: model.apply(v_, x_, method=model.log_prob_parts,
                                            mutable=["intermediates"]))
    (_, logdet), inter = fn(v, x)
    per = [np.asarray(inter["intermediates"][f"coupling{i}"]["s"][0]).sum(axis=-1)
           for i in range(3)]
    np.testing.assert_allclose(sum(per), np.asarray(logdet), rtol=1e-5, atol=1e-4)
    if scale_fn == "sigmoid":
      assert all(np.all(p <= 0) for p in per) and np.all(np.asarray(logdet) <= 0)
    else:
      assert np.any(np.concatenate(per) > 0)          # the check above can fail


def test_parts_sum_to_log_likelihood_and_match_the_jacobian():
  dim, x = 6, _points(40, 6, seed=1)
  for scale_fn in ("exp", "sigmoid"):
    model = VectorRealNVP(dim=dim, num_couplings=3, hidden=16, hidden_layers=1, scale_fn=scale_fn)
    v = _random_variables(model, dim, seed=2)
    log_pz, log_det = nd.log_prob_parts(model, v, x, chunk=16)        # padded last chunk
    log_px = np.asarray(model.apply(v, x, method=model.log_prob), np.float64)
    np.testing.assert_allclose(log_pz + log_det, log_px, rtol=1e-5, atol=1e-4)
    z = np.asarray(model.apply(v, x, method=model.encode), np.float64)
    np.testing.assert_allclose(log_pz, -0.5 * np.sum(z ** 2, axis=1) - 0.5 * dim * math.log(2 * math.pi),
                               rtol=1e-5, atol=1e-4)
    jac = nd.jacobians(model, v, x, chunk=16)
    assert jac.shape == (40, dim, dim)
    _, logabs = np.linalg.slogdet(jac)
    np.testing.assert_allclose(logabs, log_det, rtol=1e-4, atol=1e-3)
    st = nd.jacobian_stats(jac, log_det)
    assert st["slogdet_max_abs_error"] < 1e-3
    assert np.mean(log_det) <= st["hadamard_columns_mean"] + 1e-6     # Hadamard's inequality
    assert st["hadamard_columns_mean"] <= st["d_log_spectral_mean"] + 1e-6
    assert st["d_log_spectral_mean"] <= st["d_log_lipschitz_estimate"] + 1e-6
    assert log_pz.max() <= -0.5 * dim * math.log(2 * math.pi)          # the Eq. 8 bound


# ----------------------------------------------------------------------------- verdicts


def test_slopes_and_verdicts():
  assert nd.slope([2, 10, 20], [1.0, 5.0, 10.0]) == pytest.approx(0.5)
  assert nd.slope([2, 2], [1.0, 3.0]) is None
  assert nd.verdict("exp", -1.0, 2.0) == "matches"
  assert nd.verdict("exp", -1.0, -2.0) == "does not match"
  assert nd.verdict("sigmoid", -1.0, -0.1) == "matches"
  assert nd.verdict("sigmoid", -1.0, 0.1) == "does not match"
  assert nd.verdict("sigmoid", -1.0, -1e-5).startswith("in part")   # flat, not downward
  assert nd.verdict("exp", -1.0, 1e-5) == "does not match"
  assert nd.verdict("sigmoid", None, -1.0) == "needs at least two D"
  assert nd.parse_dims("2, 10,5") == (2, 10, 5)


# ----------------------------------------------------------------------------- experiment


def test_bad_input_is_one_error_and_writes_nothing(tmp_path, capsys):
  for bad, message in [(["--dims", "1,4"], ">= 2"), (["--dims", "2,x"], "not an integer"),
                       (["--dims", "4,4"], "twice"), (["--scale-fns", "exp,cubic"], "cubic"),
                       (["--n-train", "10"], "smaller than one batch"),
                       (["--noise", "-1"], "--noise"), (["--jacobian-points", "-2"], "--jacobian"),
                       (["--flow-args", "scale_fn='exp'"], "scale_fn"),
                       (["--flow-args", "hidden=0"], "hidden"),
                       (["--flow-train-args", "lr=-1"], "learning_rate")]:
    out = str(tmp_path / "bad")
    assert nd.main(["--preset", "smoke", "--no-progress", "--out", out, *bad]) == 2, bad
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, (bad, err)
    assert not os.path.exists(out)


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path, capsys):
  out = str(tmp_path / "out")
  assert nd.main(["--preset", "smoke", "--no-progress", "--out", out]) == 0
  report = open(os.path.join(out, "report.md")).read()
  assert "### exp scales" in report and "### sigmoid scales" in report
  assert "gives no numbers" in report and "both change-of-variable terms" in report
  results = json.load(open(os.path.join(out, "results.json")))
  assert [(x["scale_fn"], x["dim"]) for x in results] == [
      ("exp", 2), ("exp", 4), ("sigmoid", 2), ("sigmoid", 4)]
  for x in results:
    assert x["train_steps"] == 30 and x["resumed_from"] is None
    assert x["bound_log_pz"] == pytest.approx(-0.5 * x["dim"] * math.log(2 * math.pi))
    assert x["test_log_pz"] <= x["bound_log_pz"]
    assert x["test_log_px"] == pytest.approx(x["test_log_pz"] + x["test_log_det"])
    assert x["jacobian"]["n_points"] == 32 and x["jacobian"]["slogdet_max_abs_error"] < 1e-2
    if x["scale_fn"] == "sigmoid":
      assert x["bound_log_det"] == 0.0 and x["train_log_det_max"] <= 0
  trends = json.load(open(os.path.join(out, "trends.json")))
  assert [t["scale_fn"] for t in trends] == ["exp", "sigmoid"]
  assert all(t["verdict"] in ("matches", "does not match") or t["verdict"].startswith("in part")
             for t in trends)
  for name in ("terms_vs_dimension.png", "moons.png"):
    assert os.path.getsize(os.path.join(out, name)) > 1000
  # A second run reuses the checkpoint of (exp, D = 2) and trains nothing.
  assert nd.main(["--preset", "smoke", "--no-progress", "--out", out, "--dims", "2",
                  "--scale-fns", "exp"]) == 0
  again = json.load(open(os.path.join(out, "results.json")))
  assert len(again) == 1 and again[0]["resumed_from"] == 30
  assert again[0]["test_log_det"] == pytest.approx(results[0]["test_log_det"], abs=1e-6)
  trends = json.load(open(os.path.join(out, "trends.json")))
  assert trends[0]["verdict"] == "needs at least two D"
  capsys.readouterr()
