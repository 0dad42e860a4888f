"""Fréchet distance / FID (``ood_jax.fid``) against closed forms.

Closed forms: for diagonal covariances ``||mu1 - mu2||^2 + sum(s1 + s2 - 2 sqrt(s1 s2))``;
for commuting covariances ``Q diag(a) Q^T``, ``Q diag(b) Q^T`` the same with the
eigenvalues (``tr (S1 S2)^(1/2) = sum sqrt(a b)``).
"""

import numpy as np
import pytest

from ood_jax import fid as F
from ood_jax.errors import InvalidInputError


def _diag_closed_form(mu1, s1, mu2, s2):
  return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


def test_diagonal_closed_form():
  rng = np.random.default_rng(0)
  for d in (1, 3, 16):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    got = F.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(_diag_closed_form(mu1, s1, mu2, s2), rel=1e-10, abs=1e-12)
  # by hand, D = 2: |(1, 2)|^2 + (1 + 4 - 2*2) + (9 + 1 - 2*3) = 5 + 1 + 4
  assert F.frechet_distance([0, 0], np.diag([1, 9]), [1, 2], np.diag([4, 1])) == pytest.approx(10.0)


def test_commuting_full_covariances():
  rng = np.random.default_rng(1)
  d = 6
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  a, b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
  s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
  assert np.abs(s1 - np.diag(np.diag(s1))).max() > 0.1          # genuinely non-diagonal
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  got = F.frechet_distance(mu1, s1, mu2, s2)
  assert got == pytest.approx(_diag_closed_form(mu1, a, mu2, b), rel=1e-9)


def test_zero_symmetric_and_shift():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 5))
  b = rng.normal(size=(80, 5)) * 2 + 1
  mu, sigma = F.gaussian_stats(a)
  assert abs(F.frechet_distance(mu, sigma, mu, sigma)) < 1e-8
  assert abs(F.fid(a, a)) < 1e-8
  assert F.fid(a, b) == pytest.approx(F.fid(b, a), rel=1e-9)
  assert F.fid(a, b) > 0
  # a mean shift adds exactly |m|^2 (same covariance)
  m = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
  assert F.fid(a, a + m) == pytest.approx(float(m @ m), rel=1e-8)


def test_gaussian_stats_is_unbiased_cov():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(7, 3))
  mu, sigma = F.gaussian_stats(x)
  c = x - x.mean(0)
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(sigma, c.T @ c / 6, rtol=1e-12)
  mu1, s1 = F.gaussian_stats(x[:, :1])
  assert mu1.shape == (1,) and s1.shape == (1, 1)
  assert s1[0, 0] == pytest.approx(np.var(x[:, 0], ddof=1))


def test_fid_of_samples_tends_to_squared_mean_shift():
  rng = np.random.default_rng(4)
  d = 4
  m = np.array([1.0, 0.5, -1.0, 2.0])                               # |m|^2 = 6.25
  errs = []
  for n in (1000, 100000):
    a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + m
    errs.append(abs(F.fid(a, b) - m @ m))
  assert errs[1] < 0.05 and errs[1] < errs[0] + 0.02


def test_singular_product():
  """N < D: rank-deficient covariances and a singular product; the result is finite and
  matches ``tr (S1 S2)^(1/2) = sum sqrt(eig(S1 S2))`` (scipy >= 1.16's sqrtm stays finite
  here; the eps path is checked in ``test_eps_offset_path``)."""
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(3, 6)), rng.normal(size=(4, 6))
  got = F.fid(a, b)
  assert np.isfinite(got)
  mu1, s1 = F.gaussian_stats(a)
  mu2, s2 = F.gaussian_stats(b)
  # exactly singular diagonal product: sqrtm is finite there, no offset needed
  z = np.diag([1.0, 0.0, 2.0])
  assert F.frechet_distance(np.zeros(3), z, np.zeros(3), z) == pytest.approx(0.0, abs=1e-8)
  eig = np.linalg.eigvals(s1 @ s2)
  ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2)
              - 2 * np.sum(np.sqrt(np.clip(eig.real, 0, None))))
  assert got == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_eps_offset_path(monkeypatch):
  """When sqrtm(sigma1 sigma2) is not finite (old scipy on singular products), the root of
  ``(sigma1 + eps I)(sigma2 + eps I)`` is used and the traces stay unshifted (pytorch-fid)."""
  rng = np.random.default_rng(6)
  s1 = np.diag(rng.uniform(0.5, 2, 3))
  s2 = np.diag(rng.uniform(0.5, 2, 3))
  mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
  real_sqrtm, calls = F._sqrtm, []

  def flaky(a):
    calls.append(a.copy())
    return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)
  monkeypatch.setattr(F, "_sqrtm", flaky)
  eps = 0.25
  got = F.frechet_distance(mu1, s1, mu2, s2, eps=eps)
  np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(3)) @ (s2 + eps * np.eye(3)))
  ref = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * np.sum(np.sqrt((np.diag(s1) + eps) * (np.diag(s2) + eps))))
  assert got == pytest.approx(ref, rel=1e-10)


def test_errors_and_no_bundled_network():
  with pytest.raises(InvalidInputError, match="dimension"):
    F.fid(np.zeros((3, 2)), np.zeros((3, 4)))
  with pytest.raises(InvalidInputError, match="N >= 2"):
    F.gaussian_stats(np.zeros((1, 3)))
  with pytest.raises(InvalidInputError, match="NaN"):
    F.fid(np.full((3, 2), np.nan), np.zeros((3, 2)))
  with pytest.raises(InvalidInputError, match="expected"):
    F.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(InvalidInputError, match="imaginary"):
    # sigma1 @ sigma2 with a negative eigenvalue (sigma2 not PSD): sqrtm is truly complex
    F.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -4.0]))
