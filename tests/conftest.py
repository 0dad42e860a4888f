"""Shared test helpers: where ``../shared`` is, tiny uint8 images, a PRNG key.

Tests import the plain functions (``from conftest import tiny_images``) or use the fixtures.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
import pytest

from ood_jax.data import local

SHARED = local.shared_dir()
SHARED_DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures"
FMNIST_DEBIAN = pathlib.Path("/usr/share/datasets/fashion-mnist")
SLOW = os.environ.get("OOD_JAX_SLOW_TESTS") == "1"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} absent (no <repo root>/../shared/data)")
needs_fmnist = pytest.mark.skipif(
    not FMNIST_DEBIAN.is_dir(),
    reason=f"FashionMNIST not installed at {FMNIST_DEBIAN} (apt-get install dataset-fashion-mnist)")
slow_only = pytest.mark.skipif(not SLOW, reason="slow check; set OOD_JAX_SLOW_TESTS=1 (CI does)")


def tiny_images(n: int = 8, shape=(8, 8, 1), seed: int = 0) -> np.ndarray:
  """``n`` random uint8 images ``n x H x W x C``."""
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture
def rng() -> jax.Array:
  return jax.random.PRNGKey(0)


@pytest.fixture
def images():
  """``tiny_images`` as a fixture factory: ``images(n, shape, seed)``."""
  return tiny_images


@pytest.fixture
def data_dir(tmp_path):
  """A temporary data dir; ``write(name, split, x)`` saves ``<name>_<split>.npz`` there."""
  class _Dir:
    path = tmp_path

    def write(self, name, split, x, y=None):
      arrays = {"x": x} if y is None else {"x": x, "y": y}
      np.savez(tmp_path / f"{name}_{split}.npz", **arrays)
      return tmp_path / f"{name}_{split}.npz"
  return _Dir()


def toy_square_images(n: int = 96, size: int = 28, lo: int = 150, hi: int = 255,
                      seed: int = 0) -> np.ndarray:
  """The experiments' toy ID set: dark ``size x size`` images with a bright random square."""
  x = np.zeros((n, size, size, 1), np.uint8)
  a, b = size * 2 // 7, size * 5 // 7
  x[:, a:b, a:b] = np.random.default_rng(seed).integers(lo, hi, (n, b - a, b - a, 1))
  return x


@pytest.fixture
def toy_dir(tmp_path):
  """``make(lo=150, hi=255, size=28, n_train=64, n_test=32) -> data dir`` holding
  ``toy_train.npz`` / ``toy_test.npz`` of ``toy_square_images``."""
  def make(lo=150, hi=255, size=28, n_train=64, n_test=32):
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    x = toy_square_images(n_train + n_test, size, lo, hi)
    np.savez(d / "toy_train.npz", x=x[:n_train])
    np.savez(d / "toy_test.npz", x=x[n_train:])
    return d
  return make


@pytest.fixture
def gauss_model():
  """``toy_models.GaussDensity`` registered as model ``'toy_gauss'`` (smoke preset) for the
  experiments' end-to-end tests; unregistered afterwards."""
  from ood_jax.models import registry
  from ood_jax.models.spec import ModelSpec
  from toy_models import GaussDensity
  registry.register_model("toy_gauss", ModelSpec(
      name="toy_gauss", module=GaussDensity, presets={"smoke": {1: {}, 3: {}}},
      has_batchnorm=False))
  yield "toy_gauss"
  registry._MODELS.unregister("toy_gauss")


def toy_pairs_dir(tmp_path):
  """A data dir with ``toy`` (8 x 8 squares: 64 train, 32 test) and ``other`` (32 test, darker)."""
  d = tmp_path / "data"
  d.mkdir()
  x = toy_square_images(96, 8)
  np.savez(d / "toy_train.npz", x=x[:64])
  np.savez(d / "toy_test.npz", x=x[64:])
  np.savez(d / "other_test.npz", x=toy_square_images(32, 8, lo=0, hi=120, seed=1))
  return d
