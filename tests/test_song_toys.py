"""Song et al.'s toy examples (§3, App. D): the paper's printed numbers and brute-force checks."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ood_jax.experiments import song_toy_math as tm
from ood_jax.experiments import song_toys


# ----------------------------------------------------------------------------- §3, 1-D


def test_1d_ml_fit_is_the_papers_and_matches_the_moments_of_samples():
  mu, sigma = tm.mixture_ml_fit(tm.VAR_1D)
  assert (round(mu, 1), round(sigma, 1)) == (0.0, 1.0)            # "(mu*, sigma*) ~ (0.0, 1.0)"
  assert sigma == pytest.approx(math.sqrt(1.01))                    # 0.01 is a variance
  x = tm.sample_mixture(200_000, tm.VAR_1D, seed=3)
  m, s = tm.ml_gaussian(x)
  # brute force: the sample moments by hand; 5 standard errors of the population values
  assert m == pytest.approx(x.sum() / len(x)) and s == pytest.approx(np.sqrt(np.var(x)))
  assert abs(m - mu) < 5 * sigma / math.sqrt(len(x))
  assert abs(s - sigma) < 5 * sigma / math.sqrt(2 * len(x))
  # the fit is a stationary point of the mean Gaussian log-likelihood (jax.grad)
  ll = lambda th: jnp.mean(-0.5 * jnp.log(2 * jnp.pi * th[1] ** 2)
                           - 0.5 * (jnp.asarray(x) - th[0]) ** 2 / th[1] ** 2)
  g = jax.grad(ll)(jnp.array([m, s], jnp.float32))
  assert np.max(np.abs(np.asarray(g))) < 1e-3


def test_1d_model_prefers_x0_where_p_has_almost_no_mass():
  cf = tm.one_d_closed_form(tm.VAR_1D, q_var=0.01)
  grid = np.linspace(-3, 3, 6001)
  lm = tm.gauss_log_pdf(grid, cf["mu"], cf["sigma"] ** 2)
  assert abs(grid[np.argmax(lm)]) < 1e-9                             # the model's mode is 0
  assert cf["log_p_at_0"] < -40 < cf["log_model_at_0"]
  assert cf["log_p_at_0"] == pytest.approx(
      math.log(stats.norm(1, 0.1).pdf(0)), rel=1e-9)                 # 1/2 + 1/2 of N(+-1, 0.1^2)
  assert cf["E_q_log_model"] > cf["E_p_log_model"]                   # OOD q: higher likelihood
  # closed forms against numerical integration
  f = lambda v, lp: integrate.quad(lambda t: np.exp(lp(t)) * tm.gauss_log_pdf(t, 0.0, 1.01),
                                   -4, 4, points=[-1, 0, 1], limit=200)[0]
  assert cf["E_p_log_model"] == pytest.approx(f(0, lambda t: tm.mixture_log_pdf(t)), abs=1e-6)
  assert cf["E_q_log_model"] == pytest.approx(
      f(0, lambda t: tm.gauss_log_pdf(t, 0.0, 0.01)), abs=1e-6)
  kl_q = integrate.quad(lambda t: np.exp(tm.gauss_log_pdf(t, 0, 0.01)) * (
      tm.gauss_log_pdf(t, 0, 0.01) - tm.gauss_log_pdf(t, 0, 1.01)), -2, 2, limit=200)[0]
  assert cf["kl_q_model"] == pytest.approx(kl_q, abs=1e-6)
  # KL(p || model) = -H(p) - E_p log model, H(p) ~ H(N(0, 0.01)) + log 2 for separated modes
  h_p = 0.5 * math.log(2 * math.pi * math.e * 0.01) + math.log(2)
  assert tm.kl_mixture_model() == pytest.approx(-h_p - cf["E_p_log_model"], abs=1e-6)


# ----------------------------------------------------------------------------- App. D, 2-D


def test_2d_closed_form_prints_the_papers_numbers():
  cf = tm.two_d_closed_form(1.0, 0.0)
  assert round(cf["p_eval"], 2) == -2.84
  assert round(cf["q_eval"], 2) == -1.92
  assert round(cf["q_train"], 2) == -2.38
  assert cf["p_train"] == pytest.approx(cf["p_eval"])               # ID unchanged by train mode
  # by hand: 2 log phi(1); 2 E log phi(x), E x^2 = 1/12; E log phi(x) + log phi(sqrt(12) x)
  lp = -0.5 * math.log(2 * math.pi)
  assert cf["p_eval"] == pytest.approx(2 * lp - 1.0)
  assert cf["q_eval"] == pytest.approx(2 * lp - 1 / 12)
  assert cf["q_train"] == pytest.approx(2 * lp - 1 / 24 - 12 / 24)


def test_2d_monte_carlo_matches_closed_form_to_printed_precision():
  mc = tm.two_d_monte_carlo(2 ** 18, 512, 1.0, 0.0, 0.0, seed=0)
  cf = tm.two_d_closed_form(1.0, 0.0)
  for k in cf:
    assert mc[k] == pytest.approx(cf[k], abs=2e-3), k
  assert {k: round(mc[k], 2) for k in song_toys.PAPER_2D} == song_toys.PAPER_2D


def test_2d_flow_log_prob_against_a_numpy_loop():
  x = np.array([[0.3, 0.1], [-0.2, 0.0], [0.45, -0.3], [-0.1, 0.2]], np.float32)
  gamma, beta = 1.3, -0.2
  got_train = np.asarray(tm.flow_log_prob(jnp.asarray(x), gamma, beta, train=True))
  got_eval = np.asarray(tm.flow_log_prob(jnp.asarray(x), gamma, beta, train=False,
                                         running=(0.1, 2.0)))
  m, v = x[:, 0].mean(), x[:, 0].var()                # biased, as BatchNorm
  for i, (x1, x2) in enumerate(x):
    for got, (mean, var) in ((got_train, (m, v)), (got_eval, (0.1, 2.0))):
      z2 = x2 + (x1 - mean) / math.sqrt(var) * gamma + beta
      want = stats.norm.logpdf(x1) + stats.norm.logpdf(z2)
      assert got[i] == pytest.approx(want, abs=1e-5)


def test_2d_log_det_against_jacfwd_in_both_modes():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)), jnp.float32)
  # eval mode: one point's 2 x 2 Jacobian
  f1 = lambda p: tm.coupling(p, 1.7, 0.3, 0.2, 1.5)
  for p in x:
    j = jax.jacfwd(f1)(p)
    assert float(jnp.linalg.slogdet(j)[1]) == pytest.approx(0.0, abs=1e-6)
  # train mode: the whole batch map, all x1 first then all x2: unit block-triangular
  def fb(flat):
    xb = jnp.stack([flat[:5], flat[5:]], axis=1)
    z = tm.coupling_batch(xb, 1.7, 0.3, train=True)
    return jnp.concatenate([z[:, 0], z[:, 1]])
  jb = jax.jacfwd(fb)(jnp.concatenate([x[:, 0], x[:, 1]]))
  sign, logdet = jnp.linalg.slogdet(jb)
  assert float(sign) == 1.0 and float(logdet) == pytest.approx(0.0, abs=1e-5)
  np.testing.assert_allclose(np.asarray(tm.coupling_log_det(x)), 0.0)
  # train mode couples the points: z2_0 depends on x1_1 (it does not in eval mode)
  assert abs(float(jb[5, 1])) > 1e-3


def test_gamma_of_footnote_4_and_the_ml_of_the_model_as_written():
  s = np.linspace(0.01, 3, 2991)
  assert s[np.argmax(tm.paper_gamma_objective(s))] == pytest.approx(1.0, abs=1e-3)
  g, b = np.meshgrid(np.linspace(-2, 2, 401), np.linspace(-2, 2, 401))
  obj = tm.stated_model_objective(g, b)
  i = np.unravel_index(np.argmax(obj), obj.shape)
  assert (g[i], b[i]) == pytest.approx((0.0, 0.0), abs=1e-9)
  # the objective against the mean log p_f of p (the two points, equally often), eval mode
  xp = jnp.asarray([[-1.0, 0.0], [1.0, 0.0]] * 8, jnp.float32)
  for gamma, beta in ((1.0, 0.0), (0.5, 0.3)):
    mc = float(jnp.mean(tm.flow_log_prob(xp, gamma, beta, train=False)))
    assert mc == pytest.approx(float(tm.stated_model_objective(gamma, beta)), abs=1e-5)
  ml = tm.two_d_closed_form(0.0, 0.0)
  assert ml["q_eval"] == pytest.approx(ml["q_train"])               # no BatchNorm effect at 0


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_variance_is_one_clear_error(bad):
  from ood_jax.errors import InvalidInputError
  with pytest.raises(InvalidInputError, match="sigma2"):
    tm.two_d_closed_form(1.0, 0.0, bad)


# ----------------------------------------------------------------------------- experiment


def test_song_toys_end_to_end(tmp_path, capsys):
  out = str(tmp_path / "toys")
  assert song_toys.main(["--preset", "smoke", "--out", out, "--n-samples", "8192",
                         "--batch", "256", "--no-progress"]) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["all_match_paper"] is True and meta["n_samples"] == 8192
  papers = [r for r in rows if r["paper"] is not None]
  assert len(papers) == 5 and all(r["matches_paper"] for r in papers)
  report = open(os.path.join(out, "report.md")).read()
  assert "| E_q log p_f, train mode | -2.38 | -2.3795 |" in report
  assert "| sigma* | 1.0 | 1.0050 |" in report
  for f in ("fig1_right.png", "fig2.png"):
    assert os.path.getsize(os.path.join(out, f)) > 1000
  capsys.readouterr()
  assert song_toys.main(["--preset", "smoke", "--out", str(tmp_path / "bad"), "--batch", "1"]) == 2
  assert "--batch" in capsys.readouterr().err and not os.path.exists(tmp_path / "bad")
