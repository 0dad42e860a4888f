"""Nalisnick et al. data pieces: ``constant:<v>``, the ``gray:<a>`` transform and the
per-dimension statistics of ``nalisnick_statistics``."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import SHARED_DATA

from ood_jax import data
from ood_jax.data import local, synthetic, transforms
from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability
from ood_jax.experiments.nalisnick_statistics import (PAPER_VAR_SUMS, parse_sets, parse_shapes,
                                                      pixel_statistics, summarise)

LOSSLESS = SHARED_DATA / "cifar10_lossless4k.npz"


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
  """No local data anywhere (a name that is not synthetic is then not found)."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(local, "shared_dir", lambda: tmp_path / "no_shared")
  return tmp_path


# ----------------------------------------------------------------------------- constant:<v>


def test_constant_value_sets_every_pixel_and_channel(nowhere):
  for v, like in ((0, (4, 5, 1)), (128, (6, 6, 3)), (255, (2, 3, 3)), (7, (3, 3, 1))):
    s = data.load(f"constant:{v}", like=like, n=3)
    assert s.x.shape == (3, *like) and s.x.dtype == np.uint8
    assert np.all(s.x == v), v
    assert s.y is None and s.source == f"synthetic constant:{v} (seed 0)"
  # like the other synthetic sets: default size, like= required, n checked, any split
  assert data.load("constant:0", like=(2, 2, 1)).x.shape == (synthetic.DEFAULT_SIZE, 2, 2, 1)
  with pytest.raises(InvalidInputError, match="like"):
    data.load("constant:128")
  with pytest.raises(InvalidInputError, match="n must be"):
    synthetic.make("constant:128", "test", (2, 2, 1), n=0)
  a = data.load("constant:128", "train", like=(4, 4, 3), n=5, seed=3).x
  np.testing.assert_array_equal(a, data.load("constant:128", "test", like=(4, 4, 3), n=5).x)
  # spellings, transforms after it, conform to another shape: still every pixel v
  assert data.load(" Constant:007 ", like=(2, 2, 1), n=1).x.max() == 7
  assert canonical_name("Constant:007") == "constant:7"
  assert np.all(data.load("constant:200+gray:0.5", like=(4, 4, 3), n=2).x == 164)
  grey = data.load("constant:128", like=(28, 28, 1), n=2).x
  colour = data.conform(grey, (32, 32, 3))
  assert colour.shape == (2, 32, 32, 3) and np.all(colour == 128)
  assert availability.missing("constant:0", "test", None) is None


def test_plain_constant_is_unchanged_one_random_colour_per_image(nowhere):
  """``constant`` keeps its old images exactly (the generator of before ``constant:<v>``)."""
  for split, seed, like in (("test", 0, (5, 7, 3)), ("train", 4, (3, 3, 1))):
    x = data.load("constant", split, like=like, n=40, seed=seed).x
    rng = np.random.default_rng([seed, zlib.crc32(b"constant"), zlib.crc32(split.encode())])
    colours = rng.integers(0, 256, (40, 1, 1, like[-1]), dtype=np.uint8)
    np.testing.assert_array_equal(x, np.broadcast_to(colours, x.shape))
    assert len(np.unique(x[:, 0, 0, 0])) > 10
  noise = data.load("noise", like=(4, 4, 1), n=3, seed=1).x
  rng = np.random.default_rng([1, zlib.crc32(b"noise"), zlib.crc32(b"test")])
  np.testing.assert_array_equal(noise, rng.integers(0, 256, (3, 4, 4, 1), dtype=np.uint8))


@pytest.mark.parametrize("name", ["constant:300", "constant:256", "constant:x", "constant:",
                                  "constant:-1", "constant:1.5", "constant:0x10", "noise:3",
                                  "constant:128+resize:0"])
def test_bad_constant_values_are_one_clear_error(nowhere, name):
  with pytest.raises(InvalidInputError) as e:
    data.load(name, like=(4, 4, 1), n=2)
  msg = str(e.value)
  assert ("0..255" in msg) or ("takes no value" in msg) or ("resize" in msg)
  with pytest.raises(InvalidInputError):          # not 'not available': a bad name
    availability.missing(name, "test", None)


# ----------------------------------------------------------------------------- gray:<a>


def test_gray_exact_on_hand_made_images():
  x = np.array([0, 1, 13, 123, 127, 128, 129, 133, 254, 255], np.uint8).reshape(1, 2, 5, 1)
  # x' = round(128 + a (x - 128)), ties to even: 64.5 -> 64, 127.5 -> 128, 128.5 -> 128,
  # 191.5 -> 192; a = 0.9: 24.5 -> 24, 123.5 -> 124, 132.5 -> 132, 12.8 -> 13, 13.7 -> 14.
  want = {0.5: [64, 64, 70, 126, 128, 128, 128, 130, 191, 192],
          0.9: [13, 14, 24, 124, 127, 128, 129, 132, 241, 242],
          0.1: [115, 115, 116, 128, 128, 128, 128, 128, 141, 141],
          1.0: [0, 1, 13, 123, 127, 128, 129, 133, 254, 255],
          0.0: [128] * 10}
  for a, expected in want.items():
    got = transforms.gray(x, a)
    assert got.dtype == np.uint8 and got.shape == x.shape
    assert got.ravel().tolist() == expected, a
    assert data.apply_transforms(x, f"gray:{a}", seed=0).ravel().tolist() == expected
  # colour: every channel on its own
  rgb = np.array([[[[0, 128, 255], [1, 129, 254]]]], np.uint8)
  assert transforms.gray(rgb, 0.5).tolist() == [[[[64, 128, 192], [64, 128, 191]]]]
  assert transforms.parse_transform("gray:0.5") == ("gray", 0.5)
  assert data.is_transform("gray:0.3") and "gray" in data.TRANSFORMS


def test_gray_is_half_to_even_hence_symmetric_about_128():
  v = np.arange(1, 256, dtype=np.uint8)[None, :, None, None]
  for a in [k / 10 for k in range(11)] + [0.25, 0.75, 0.05]:
    g = transforms.gray(v, a).astype(int).ravel()
    mirrored = transforms.gray((256 - v.astype(int)).astype(np.uint8), a).astype(int).ravel()
    np.testing.assert_array_equal(g + mirrored, 256)     # half-up would break this at ties
    exact = [min(255, max(0, round(128 + a * (int(x) - 128)))) for x in v.ravel()]
    if a in (0.5, 0.25, 0.75):                          # exact binary fractions: plain rint
      np.testing.assert_array_equal(g, exact)
  # 0.9 means 9/10 exactly (the decimal as written), whatever the double is
  table = transforms.gray_table(0.9)
  assert table[13] == 24 and table[143] == 142        # 24.5 -> 24, 141.5 -> 142


def test_gray_on_a_local_set_and_bad_factors(data_dir):
  x = np.array([[0, 255], [127, 129]], np.uint8).reshape(1, 2, 2, 1)
  data_dir.write("hand", "test", x)
  s = data.load("hand+gray:0.5", data_dir=str(data_dir.path))
  assert s.x.ravel().tolist() == [64, 192, 128, 128]
  for bad in ["hand+gray", "hand+gray:1.5", "hand+gray:-0.1", "hand+gray:x", "hand+gray:nan",
              "hand+gray:inf"]:
    with pytest.raises(InvalidInputError, match="gray"):
      data.load(bad, data_dir=str(data_dir.path))
  with pytest.raises(InvalidInputError, match="uint8"):
    transforms.gray(x.astype(np.float32), 0.5)
  for a in (1.01, -0.5, float("nan"), "half", True):
    with pytest.raises(InvalidInputError, match="gray"):
      transforms.gray(x, a)


# ----------------------------------------------------------------------------- statistics


def test_pixel_statistics_match_a_numpy_loop():
  x = np.random.default_rng(0).integers(0, 256, (11, 3, 2, 3), dtype=np.uint8)
  mu, var = pixel_statistics(x, chunk=4)              # chunks of 4, 4, 3 images
  flat = x.reshape(11, -1).astype(np.float64) / 256.0
  for d in range(flat.shape[1]):
    col = flat[:, d]
    m = sum(col) / len(col)
    assert mu[d] == pytest.approx(m, rel=1e-12)
    assert var[d] == pytest.approx(sum((c - m) ** 2 for c in col) / (len(col) - 1), rel=1e-10)
    assert var[d] == pytest.approx(np.var(col, ddof=1), rel=1e-10)
  s = summarise(mu, var, (3, 2, 3), mu)
  np.testing.assert_allclose(s["var_sum_per_channel"],
                             np.round(var.reshape(6, 3).sum(axis=0), 3))
  assert s["D"] == 18 and s["max_abs_mean_diff_vs_reference_levels"] == 0.0
  assert s["mean_var"] == pytest.approx(var.mean())
  with pytest.raises(InvalidInputError, match="N >= 2"):
    pixel_statistics(x[:1])
  with pytest.raises(InvalidInputError, match="uint8"):
    pixel_statistics(x.astype(np.float32))


def test_statistics_set_and_shape_parsing():
  assert parse_sets("mnist, cifar10@train,constant:128,cifar10+gray:0.5@test") == [
      ("mnist", "test"), ("cifar10", "train"), ("constant:128", "test"),
      ("cifar10+gray:0.5", "test")]
  assert parse_shapes("32x32x3, 28X28x1") == [(32, 32, 3), (28, 28, 1)]
  for bad in ["constant:300", "mnist@", "@train", "mnist+blur:3", "mnist,mnist", ""]:
    with pytest.raises(Exception) as e:
      parse_sets(bad)
    assert isinstance(e.value, (InvalidInputError, KeyError))
  for bad in ["32x28x3", "32x32x2", "32x32", "axbxc", ""]:
    with pytest.raises(InvalidInputError, match="--shapes"):
      parse_shapes(bad)


@pytest.mark.skipif(not LOSSLESS.is_file(), reason=f"{LOSSLESS} absent (no <repo root>/../shared/data)")
def test_cifar10_variance_sums_match_eq6():
  """Eq. 6's CIFAR-10 sums (61.9, 59.2, 68.1) from the exact-pixel 4k CIFAR-10 images."""
  x = data.load("cifar10", "lossless4k").x
  mu, var = pixel_statistics(x)
  got = summarise(mu, var, (32, 32, 3), None)["var_sum_per_channel"]
  np.testing.assert_allclose(got, PAPER_VAR_SUMS["cifar10"], atol=1.0)
