"""Fréchet distance between Gaussian fits of two feature sets (the FID of Heusel et al.).

Chen's thesis (§3.3.2) quotes FID for generation quality. FID is the Fréchet (2-Wasserstein)
distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` fitted to the features of two
image sets:

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``

computed exactly as pytorch-fid's ``calculate_frechet_distance`` (float64 numpy):
``scipy.linalg.sqrtm`` of the product ``sigma1 @ sigma2``; if that square root is not
finite (a singular product), ``eps * I`` is added to both covariances and it is taken again;
a complex result whose diagonal has an imaginary part above 1e-3 is an error, otherwise
its real part is used. ``gaussian_stats`` is pytorch-fid's ``np.mean(axis=0)`` /
``np.cov(rowvar=False)`` (the unbiased ``1 / (N - 1)`` covariance).

Features: float arrays ``N x D``, one row per image, finite, N >= 2. The usual FID features
are the 2048-d pool features of pytorch-fid's FID Inception-v3. Its architecture is in
``ood_jax.models.fid_inception``, but its weights are NOT bundled: its ``load_feature_net(path)`` loads
them from a user-supplied ``.npz`` (pytorch-fid's ``.pth`` converted with torch), and
without that file FID needs user-supplied features. A value is only comparable with
published FIDs when the features come from that network with those weights.
Units: squared feature units; 0 for identical statistics; lower = closer.
"""

from __future__ import annotations

import warnings

import numpy as np

from ood_jax.errors import InvalidInputError


def _features(f, what: str) -> np.ndarray:
  a = np.asarray(f)
  if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                               or np.issubdtype(a.dtype, np.integer)):
    raise InvalidInputError(f"{what}: expected real-valued features N x D, got dtype {a.dtype}.")
  if a.ndim != 2 or a.shape[1] == 0:
    raise InvalidInputError(f"{what}: expected a 2-D array N x D of features, got shape {a.shape}.")
  if a.shape[0] < 2:
    raise InvalidInputError(f"{what}: {a.shape[0]} feature row(s); a covariance needs N >= 2.")
  a = a.astype(np.float64)
  if not np.all(np.isfinite(a)):
    raise InvalidInputError(f"{what}: {int(np.sum(~np.isfinite(a)))} NaN/inf values.")
  return a


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """``(mu, sigma)`` of features ``N x D``: float64 ``[D]`` mean and ``D x D`` covariance
  with the ``1 / (N - 1)`` normalisation (``np.cov(features, rowvar=False)``)."""
  f = _features(features, "gaussian_stats features")
  return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _stats(mu, sigma, what: str) -> tuple[np.ndarray, np.ndarray]:
  mu = np.atleast_1d(np.asarray(mu, np.float64))
  sigma = np.atleast_2d(np.asarray(sigma, np.float64))
  if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
    raise InvalidInputError(f"frechet_distance: {what} mean has shape {mu.shape} and covariance "
                            f"{sigma.shape}; expected [D] and D x D.")
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise InvalidInputError(f"frechet_distance: {what} statistics contain NaN/inf.")
  return mu, sigma


def _sqrtm(a: np.ndarray) -> np.ndarray:
  from scipy import linalg  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():  # singular products: handled by the finiteness check
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` as pytorch-fid.

  Args:
    mu1, sigma1: mean ``[D]`` and covariance ``D x D`` of the first set.
    mu2, sigma2: those of the second set.
    eps: added to both diagonals when ``sqrtm(sigma1 @ sigma2)`` is not finite.

  Raises ``InvalidInputError`` on mismatched shapes, NaN/inf statistics, or a square root
  whose diagonal has an imaginary component above 1e-3 (pytorch-fid's ``ValueError``).
  """
  mu1, sigma1 = _stats(mu1, sigma1, "first")
  mu2, sigma2 = _stats(mu2, sigma2, "second")
  if mu1.shape != mu2.shape:
    raise InvalidInputError(f"frechet_distance: the two sets have feature dimensions "
                            f"{mu1.size} and {mu2.size}.")
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.all(np.isfinite(covmean)):
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise InvalidInputError(f"frechet_distance: the matrix square root has an imaginary "
                              f"component up to {np.max(np.abs(covmean.imag)):.3g}.")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(features_a, features_b, eps: float = 1e-6) -> float:
  """:func:`frechet_distance` between the :func:`gaussian_stats` of two feature sets
  ``N_a x D`` and ``N_b x D`` (features of the caller's choice; see the module docstring)."""
  a = _features(features_a, "fid features_a")
  b = _features(features_b, "fid features_b")
  if a.shape[1] != b.shape[1]:
    raise InvalidInputError(f"fid: features_a have dimension {a.shape[1]}, features_b "
                            f"{b.shape[1]}.")
  return frechet_distance(*gaussian_stats(a), *gaussian_stats(b), eps=eps)
