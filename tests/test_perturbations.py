"""ROSE App. B.3 perturbations (``ood_jax.data.perturbations``) against brute force on tiny
images: SVD by an explicit rank-keep sum, DCT by an explicit DCT-II matrix, the blur by an
explicit 3x3 Gaussian with reflected borders; names parse bare in score entries."""

import math

import numpy as np
import pytest

from ood_jax.data import perturbations as P
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import settings


def _x(n=3, h=6, w=5, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _round(y):
  return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def test_names_parse_and_bad_ones_list_the_forms():
  assert P.parse("random") == ("random", None)
  assert P.parse("svd22") == ("svd", 22) and P.parse("svd28") == ("svd", 28)
  assert P.parse("dct28") == ("dct", 28) and P.parse("blur") == ("blur", None)
  for bad in ("svd", "svd0", "dct-3", "SVD22", "gauss", "", None, 22):
    with pytest.raises(InvalidInputError, match="svd<K>.*dct<K>.*blur"):
      P.parse(bad)
  # bare names on the command line (no quoting), as rose[fisher=diag] reads
  for name in P.EXAMPLES:
    assert settings.parse_entry(f"likelihood_ratio[perturbation={name}]") == (
        "likelihood_ratio", {"perturbation": name})
  assert settings.parse_entry("rnd[perturbation=random,mu=0.1]") == (
      "rnd", {"perturbation": "random", "mu": 0.1})


def test_svd_keeps_the_largest_singular_values_per_image_and_channel():
  x = _x()
  assert P.svd_keep(32, 32, 28) == 4 and P.svd_keep(32, 32, 22) == 10
  assert P.svd_keep(28, 28, 28) == 1 and P.svd_keep(6, 5, 2) == 3
  got = P.perturb(x, "svd2")
  want = np.zeros(x.shape)
  for n in range(x.shape[0]):
    for c in range(x.shape[3]):
      u, s, vh = np.linalg.svd(x[n, :, :, c].astype(np.float64))
      want[n, :, :, c] = sum(s[i] * np.outer(u[:, i], vh[i]) for i in range(3))  # 5 - 2 kept
  np.testing.assert_array_equal(got, _round(want))
  assert got.dtype == np.uint8 and got.shape == x.shape
  assert np.mean(got != x) > 0.5                     # a real blur of random pixels
  # an image of rank 1 is left as it is by any svd<K>
  flat = np.broadcast_to(np.arange(5, dtype=np.uint8) * 40, (1, 6, 5)).copy()[..., None]
  np.testing.assert_array_equal(P.perturb(flat, "svd28"), flat)


def _dct_matrix(n):
  """The orthonormal DCT-II: C[k, i] = a_k cos(pi (2i + 1) k / (2n))."""
  c = np.zeros((n, n))
  for k in range(n):
    for i in range(n):
      a = math.sqrt(1.0 / n) if k == 0 else math.sqrt(2.0 / n)
      c[k, i] = a * math.cos(math.pi * (2 * i + 1) * k / (2 * n))
  return c


def test_dct_keeps_the_largest_magnitude_coefficients():
  x = _x(seed=1)
  ch, cw = _dct_matrix(6), _dct_matrix(5)
  np.testing.assert_allclose(ch @ ch.T, np.eye(6), atol=1e-12)
  got = P.perturb(x, "dct4")
  want = np.zeros(x.shape)
  for n in range(x.shape[0]):
    for c in range(x.shape[3]):
      coef = ch @ x[n, :, :, c].astype(np.float64) @ cw.T
      top = sorted(range(coef.size), key=lambda j: -abs(coef.flat[j]))[:4]
      kept = np.zeros_like(coef)
      kept.flat[top] = coef.flat[top]
      want[n, :, :, c] = ch.T @ kept @ cw
  np.testing.assert_array_equal(got, _round(want))
  assert got.dtype == np.uint8
  np.testing.assert_array_equal(P.perturb(x, "dct30"), x)        # all 30 kept: identity
  assert np.mean(got != x) > 0.5


def test_blur_is_the_3x3_gaussian_with_sigma_0_8_and_reflected_borders():
  x = _x(n=2, h=5, w=4, c=3, seed=2)
  e = math.exp(-1.0 / (2 * 0.8 ** 2))
  g = np.array([e, 1.0, e]) / (1.0 + 2.0 * e)
  np.testing.assert_allclose(P.gaussian_kernel(), g, rtol=1e-12)
  k2 = np.outer(g, g)
  h, w = x.shape[1:3]
  refl = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
  want = np.zeros(x.shape)
  for a in range(h):
    for b in range(w):
      for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
          want[:, a, b] += k2[di + 1, dj + 1] * x[:, refl(a + di, h), refl(b + dj, w)]
  got = P.perturb(x, "blur")
  np.testing.assert_array_equal(got, _round(want))
  const = np.full((1, 4, 4, 1), 77, np.uint8)
  np.testing.assert_array_equal(P.perturb(const, "blur"), const)   # weights sum to 1


def test_random_is_rens_mutation_and_a_function_of_the_seed():
  x = np.zeros((200, 8, 8, 1), np.uint8)
  y = P.perturb(x, "random", mu=0.2, seed=3)
  assert abs(np.mean(y != x) - 0.2 * 255 / 256) < 0.015
  rng = np.random.default_rng([3, 0x5EED])                 # the draw from before this module
  mask = rng.random(x.shape) < 0.2
  np.testing.assert_array_equal(y, np.where(mask, rng.integers(0, 256, x.shape, dtype=np.uint8), x))
  assert np.array_equal(P.mutate(x, 0.2, (3, 5)), P.mutate(x, 0.2, (3, 5)))
  assert not np.array_equal(P.mutate(x, 0.2, (3, 5)), P.mutate(x, 0.2, (3, 6)))
  for bad in (-0.1, 1.5, "0.2", True):
    with pytest.raises(InvalidInputError, match="mu"):
      P.perturb(x, "random", mu=bad)
  with pytest.raises(InvalidInputError, match="uint8"):
    P.perturb(x.astype(np.float32), "blur")


def test_batch_perturbation_draws_per_step_and_blurs_alike():
  x = _x(n=4, h=8, w=8, c=1, seed=4)
  rand = P.BatchPerturbation("random", 0.3, seed=1)
  a, b = rand(x, 0), rand(x, 1)
  assert np.mean(a != x) > 0.2 and np.mean(b != x) > 0.2
  assert not np.array_equal(a, b)                          # a fresh mutation per step
  np.testing.assert_array_equal(rand(x, 1), b)             # the same step: the same draw
  blur = P.BatchPerturbation("svd6", seed=1)
  np.testing.assert_array_equal(blur(x, 0), blur(x, 7))
  np.testing.assert_array_equal(blur(x, 0), P.svd_blur(x, 6))
  assert rand.describe() == {"name": "perturbation", "perturbation": "random", "mu": 0.3, "seed": 1}
  assert "mu" not in blur.describe()
  with pytest.raises(InvalidInputError):
    P.BatchPerturbation("svd0")
