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
