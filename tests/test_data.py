"""Tests of ood_jax.data: sources, preprocessing, transforms and the public API."""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from ood_jax import data
from ood_jax.data import idx, local, preprocess, synthetic, tfds_source, transforms
from ood_jax.errors import DatasetNotFoundError, InvalidInputError, UnknownNameError

SHARED = local.shared_dir()
FIXTURE = SHARED / "fixtures" / "lr_vae_fmnist" / "inputs.npz"
SHARED_MNIST = SHARED / "data" / "mnist_test.npz"
DEBIAN = pathlib.Path(idx.DEBIAN_FASHION_MNIST_DIR)

needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_file(), reason=f"parity fixture {FIXTURE} absent (no <repo root>/../shared)")
needs_shared_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_file(), reason=f"{SHARED_MNIST} absent (no <repo root>/../shared/data)")
needs_debian = pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason=f"{DEBIAN} absent: apt-get install -y dataset-fashion-mnist to run this test")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No data anywhere: empty cwd, no env dirs, no shared folder, no Debian, empty TFDS dir."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(local, "shared_dir", lambda: tmp_path / "no_shared")
  monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no_debian"))
  return tmp_path


def _save(directory: pathlib.Path, file: str, x, **extra) -> pathlib.Path:
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / file
  np.savez(path, x=x, **extra)
  return path


def _images(n=5, h=6, w=6, c=1, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


# ----------------------------------------------------------------------------- local npz


def test_local_npz_precedence_data_dir_env_cwd(isolated, monkeypatch):
  a, b, c = _images(seed=1), _images(seed=2), _images(seed=3)
  pa = _save(isolated / "arg", "mnist_test.npz", a, y=np.arange(5))
  pb = _save(isolated / "env", "mnist_test.npz", b)
  _save(isolated / "data", "mnist_test.npz", c)
  monkeypatch.setenv(local.ENV_DATA_DIR, str(isolated / "env"))

  s = data.load("mnist", data_dir=str(isolated / "arg"))
  np.testing.assert_array_equal(s.x, a)
  assert s.source == f"local npz {pa}" and s.name == "mnist" and s.split == "test"
  s = data.load("mnist")
  np.testing.assert_array_equal(s.x, b)
  assert str(pb) in s.source
  monkeypatch.delenv(local.ENV_DATA_DIR)
  np.testing.assert_array_equal(data.load("mnist").x, c)   # ./data


def test_any_local_name_loads_by_name(isolated):
  x = _images(n=3, h=4, w=5, c=3)
  _save(isolated / "d", "my_faces_train.npz", x)
  s = data.load("my_faces", "train", data_dir=str(isolated / "d"))
  np.testing.assert_array_equal(s.x, x)   # no preprocessing for unknown names
  s = data.load("my_faces+grayscale", "train", data_dir=str(isolated / "d"))
  assert s.x.shape == (3, 4, 5, 1) and s.name == "my_faces+grayscale"


def test_nhw_npz_gets_channel_axis(isolated):
  _save(isolated / "data", "plain_test.npz", _images(n=4)[..., 0])
  assert data.load("plain").x.shape == (4, 6, 6, 1)


@pytest.mark.parametrize("bad", [
    np.zeros((2, 6, 6, 1), np.float32),          # float
    np.zeros((2, 6, 6, 4), np.uint8),            # 4 channels
    np.zeros((2, 3, 6, 6), np.uint8),            # channels first
    np.zeros((0, 6, 6, 1), np.uint8),            # empty
])
def test_invalid_npz_raises(isolated, bad):
  _save(isolated / "data", "bad_test.npz", bad)
  with pytest.raises(InvalidInputError):
    data.load("bad")


def test_npz_without_x_raises(isolated):
  (isolated / "data").mkdir()
  np.savez(isolated / "data" / "nox_test.npz", images=_images())
  with pytest.raises(InvalidInputError, match="'x'"):
    data.load("nox")


# ------------------------------------------------------------------------- not found


def test_missing_dataset_message_lists_every_place(isolated, monkeypatch):
  monkeypatch.setenv(local.ENV_DATA_DIR, str(isolated / "env"))
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("kmnist", data_dir=str(isolated / "arg"))
  msg = str(e.value)
  for path in local.candidate_paths("kmnist", "test", str(isolated / "arg")):
    assert path in msg
  assert str(isolated / "arg" / "kmnist_test.npz") in msg
  assert str(isolated / "env" / "kmnist_test.npz") in msg
  assert str(isolated / "data" / "kmnist_test.npz") in msg
  assert str(isolated / "no_shared" / "data" / "kmnist_test.npz") in msg
  assert "TFDS 'kmnist'" in msg and str(isolated / "tfds") in msg
  assert "tfds build kmnist" in msg and "OOD_JAX_DATA_DIR" in msg and "--data-dir" in msg


def test_missing_fashion_mnist_mentions_debian(isolated):
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("fashion_mnist", "train")
  msg = str(e.value)
  assert str(isolated / "no_debian" / "train-images-idx3-ubyte.gz") in msg
  assert "apt-get install -y dataset-fashion-mnist" in msg
  assert "tfds build fashion_mnist" in msg


def test_unknown_name_lists_known_names(isolated):
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("mnistt")
  msg = str(e.value)
  assert "mnistt_test.npz" in msg and "not a known dataset" in msg
  assert all(name in msg for name in data.DATASETS)


def test_unknown_transform_and_bad_arguments():
  with pytest.raises(UnknownNameError) as e:
    data.load("mnist+blur")
  assert "blur" in str(e.value) and all(t in str(e.value) for t in data.TRANSFORMS)
  assert "'brightness:0.2'" in str(e.value)                 # how to spell an argument
  for bad in ["mnist+resize", "mnist+resize:0", "mnist+resize:3.5", "mnist+brightness:-1",
              "mnist+brightness:x", "mnist+rotation:30", "mnist++rgb", "resize:32", ""]:
    with pytest.raises(InvalidInputError):
      data.parse_spec(bad)
  with pytest.raises(UnknownNameError):
    data.apply_transforms(_images(), ["sharpen"], seed=0)


def test_parse_spec_and_is_transform():
  assert data.parse_spec("mnist") == ("mnist", [])
  assert data.parse_spec("fashion_mnist+resize:32+rotation") == (
      "fashion_mnist", ["resize:32", "rotation"])
  assert data.parse_spec("lsun/bedroom + brightness:0.2") == ("lsun/bedroom", ["brightness:0.2"])
  assert data.is_transform("rotation") and data.is_transform("resize:32")
  assert data.is_transform("brightness:0.5") and data.is_transform("grayscale")
  assert not data.is_transform("mnist") and not data.is_transform("noise")
  assert transforms.parse_transform("resize:32") == ("resize", 32)
  assert transforms.parse_transform("brightness:0.2") == ("brightness", 0.2)


# ------------------------------------------------------------------------- synthetic


def test_synthetic_noise_and_constant(isolated):
  for name in ("noise", "constant"):
    s = data.load(name, like=(8, 8, 3), n=20, seed=0)
    assert s.x.shape == (20, 8, 8, 3) and s.x.dtype == np.uint8
    assert s.source == f"synthetic {name} (seed 0)"
    np.testing.assert_array_equal(s.x, data.load(name, like=(8, 8, 3), n=20, seed=0).x)
    assert not np.array_equal(s.x, data.load(name, like=(8, 8, 3), n=20, seed=1).x)
    assert not np.array_equal(s.x, data.load(name, "train", like=(8, 8, 3), n=20, seed=0).x)
  assert data.load("noise", like=(4, 4, 1)).x.shape == (synthetic.DEFAULT_SIZE, 4, 4, 1)
  c = data.load("constant", like=(5, 7, 3), n=50).x
  np.testing.assert_array_equal(c, np.broadcast_to(c[:, :1, :1, :], c.shape))
  assert len(np.unique(c[:, 0, 0, 0])) > 10     # colours vary between images...
  assert not np.array_equal(c[..., 0], c[..., 1])  # ... and between channels
  n = data.load("noise", like=(16, 16, 1), n=10).x
  assert len(np.unique(n)) > 200
  with pytest.raises(InvalidInputError, match="like"):
    data.load("noise")


# ------------------------------------------------------------------------- transforms


def test_rotation_shape_determinism_and_direction():
  x = np.zeros((50, 16, 16, 1), np.uint8)
  x[:, 1:5, 1:5] = 255          # bright block in the top-left corner
  r1 = data.apply_transforms(x, ["rotation"], seed=0)
  r2 = data.apply_transforms(x, "rotation", seed=0)
  assert r1.shape == x.shape and r1.dtype == np.uint8
  np.testing.assert_array_equal(r1, r2)
  assert not np.array_equal(r1, data.apply_transforms(x, "rotation", seed=1))
  # Any angle in (90, 270) moves the block out of the top-left quadrant.
  assert r1[:, :8, :8].sum() == 0
  assert (r1.reshape(50, -1) == 255).sum(1).min() >= 12     # the block is still there
  angles = transforms.rotation_angles(10000, np.random.default_rng(0))
  assert angles.min() > 90 and angles.max() < 270
  # Angles in (90, 180]: counter-clockwise, so the top-left block ends up bottom-left.
  a = transforms.rotate(x[:1], [120.0])
  assert a[0, 8:, :8].sum() > 0 and a[0, :8].sum() == 0
  np.testing.assert_array_equal(transforms.rotate(x[:1], [180.0]), x[:1, ::-1, ::-1])
  rgb = transforms.rotate(np.repeat(x[:2], 3, -1), [180.0, 180.0])
  np.testing.assert_array_equal(rgb, np.repeat(x[:2, ::-1, ::-1], 3, -1))


def test_brightness_math():
  x = np.array([0, 1, 3, 100, 200, 255], np.uint8).reshape(1, 1, 6, 1)
  half = data.apply_transforms(x, "brightness:0.5", seed=0).ravel()
  np.testing.assert_array_equal(half, [0, 0, 1, 50, 100, 127])   # truncates, as torchvision
  double = data.apply_transforms(x, "brightness:2", seed=0).ravel()
  np.testing.assert_array_equal(double, [0, 2, 6, 200, 255, 255])  # clipped
  np.testing.assert_array_equal(data.apply_transforms(x, "brightness:0", seed=0), 0 * x)
  np.testing.assert_array_equal(data.apply_transforms(x, "brightness:1", seed=0), x)


def test_grayscale_luma_and_rgb():
  x = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]],
               np.uint8).reshape(1, 1, 5, 3)
  g = data.apply_transforms(x, "grayscale", seed=0)
  assert g.shape == (1, 1, 5, 1)
  np.testing.assert_array_equal(g.ravel(), [76, 150, 29, 255, 18])
  rnd = _images(n=4, h=9, w=7, c=3)
  pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rnd])[..., None]
  np.testing.assert_array_equal(data.apply_transforms(rnd, "grayscale", 0), pil)
  grey = _images(n=2)
  np.testing.assert_array_equal(data.apply_transforms(grey, "grayscale", 0), grey)
  rgb = data.apply_transforms(grey, "rgb", 0)
  assert rgb.shape == (2, 6, 6, 3)
  for ch in range(3):
    np.testing.assert_array_equal(rgb[..., ch], grey[..., 0])
  np.testing.assert_array_equal(data.apply_transforms(rgb, "rgb", 0), rgb)


@needs_fixture
def test_resize_matches_pil_bilinear_fixture():
  f = np.load(FIXTURE)
  for raw, want in ((f["raw_fmnist"], f["x_uint8_32"][:64]), (f["raw_mnist"], f["x_uint8_32"][64:])):
    got = data.apply_transforms(raw[..., None], "resize:32", seed=0)
    assert got.shape == (64, 32, 32, 1)
    np.testing.assert_array_equal(got[..., 0], want)
    np.testing.assert_array_equal(data.conform(raw[..., None], (32, 32, 1))[..., 0], want)


def test_resize_non_square_and_downscale():
  x = _images(n=2, h=40, w=30, c=3)
  y = data.apply_transforms(x, "resize:32", seed=0)
  assert y.shape == (2, 32, 32, 3)
  # Upscale: width 30 -> 32, height int(32 * 40 / 30) = 42, bilinear, then crop rows 5..36.
  ref = np.asarray(Image.fromarray(x[0]).resize((32, 42), Image.Resampling.BILINEAR))[5:37]
  np.testing.assert_array_equal(y[0], ref)
  # Shorter side already 32: only a centre crop.
  z = _images(n=2, h=40, w=32, c=1)
  np.testing.assert_array_equal(data.apply_transforms(z, "resize:32", 0), z[:, 4:36])
  # Downscale uses bicubic.
  big = _images(n=1, h=64, w=64, c=1)
  ref = np.asarray(Image.fromarray(big[0, ..., 0]).resize((16, 16), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(data.apply_transforms(big, "resize:16", 0)[0, ..., 0], ref)


def test_conform():
  grey = _images(n=3, h=28, w=28, c=1)
  y = data.conform(grey, (32, 32, 3))
  assert y.shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(y[..., 0], data.apply_transforms(grey, "resize:32", 0)[..., 0])
  np.testing.assert_array_equal(data.conform(grey, (28, 28, 1)), grey)
  assert data.conform(_images(c=3), (6, 6, 1)).shape == (5, 6, 6, 1)
  with pytest.raises(InvalidInputError):
    data.conform(grey, (32, 28, 1))
  with pytest.raises(InvalidInputError):
    data.conform(grey, (32, 32, 2))


def test_transforms_compose_in_order():
  x = _images(n=4, h=10, w=10, c=3)
  a = data.apply_transforms(x, "grayscale+resize:12+rotation", seed=3)
  b = data.apply_transforms(x, ["grayscale", "resize:12", "rotation"], seed=3)
  assert a.shape == (4, 12, 12, 1)
  np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------- subsets


def test_n_subset_is_a_deterministic_shuffle(isolated):
  x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
  _save(isolated / "data", "ramp_test.npz", x)
  a = data.load("ramp", n=10, seed=0).x.ravel()
  np.testing.assert_array_equal(a, data.load("ramp", n=10, seed=0).x.ravel())
  np.testing.assert_array_equal(a, np.random.default_rng(0).permutation(100)[:10])
  assert not np.array_equal(a, data.load("ramp", n=10, seed=1).x.ravel())
  np.testing.assert_array_equal(data.load("ramp").x.ravel(), np.arange(100))
  np.testing.assert_array_equal(data.load("ramp", n=500).x.ravel(), np.arange(100))
  with pytest.raises(InvalidInputError):
    data.load("ramp", n=0)


# ------------------------------------------------------------------------- IDX / Debian


def test_idx_reader(tmp_path):
  arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
  (tmp_path / "t.idx.gz").write_bytes(gzip.compress(header + arr.tobytes()))
  (tmp_path / "t.idx").write_bytes(header + arr.tobytes())
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "t.idx.gz")), arr)
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "t.idx")), arr)
  i32 = np.array([1, -2, 70000], np.int32)
  raw = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + i32.astype(">i4").tobytes()
  np.testing.assert_array_equal(idx.parse_idx(raw), i32)
  (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04junk"))
  with pytest.raises(InvalidInputError, match="IDX"):
    idx.read_idx(str(tmp_path / "bad.gz"))
  (tmp_path / "short.gz").write_bytes(gzip.compress(header + arr.tobytes()[:-1]))
  with pytest.raises(InvalidInputError, match="bytes"):
    idx.read_idx(str(tmp_path / "short.gz"))


def test_debian_fashion_mnist_source(isolated, monkeypatch):
  arr = _images(n=7, h=28, w=28, c=1)[..., 0]
  header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
  deb = isolated / "deb"
  deb.mkdir()
  (deb / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + arr.tobytes()))
  monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(deb))
  s = data.load("fashion_mnist")
  np.testing.assert_array_equal(s.x[..., 0], arr)
  assert s.source == f"debian {deb / 't10k-images-idx3-ubyte.gz'}"
  assert data.load("fmnist+resize:32").x.shape == (7, 32, 32, 1)


@needs_debian
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  train = data.load("fashion_mnist", "train")
  assert train.x.shape == (60000, 28, 28, 1) and train.x.dtype == np.uint8
  assert train.source.startswith("debian ")
  test = data.load("fashion_mnist", "test")
  assert test.x.shape == (10000, 28, 28, 1)
  if FIXTURE.is_file():   # the fixture's 64 images are the first 64 of permutation(seed 0)
    np.testing.assert_array_equal(
        data.load("fashion_mnist", n=64, seed=0).x[..., 0], np.load(FIXTURE)["raw_fmnist"])


@needs_shared_mnist
def test_shared_mnist_test(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  s = data.load("mnist")
  assert s.x.shape == (10000, 28, 28, 1) and s.x.dtype == np.uint8
  assert s.source == f"local npz {SHARED_MNIST}"
  if FIXTURE.is_file():
    np.testing.assert_array_equal(
        data.load("mnist", n=64, seed=1).x[..., 0], np.load(FIXTURE)["raw_mnist"])


# ------------------------------------------------------------------------- TFDS adapter


class _FakeSource:
  """Stands in for a tfds ArrayRecordDataSource: random access to dict records."""

  def __init__(self, images):
    self.images = images
    self.requested = []

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": i}

  def __getitems__(self, indices):
    self.requested.extend(indices)
    return [self[i] for i in indices]


@pytest.fixture
def fake_tfds(isolated, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  calls, sources = [], {}

  def data_source(name, *, split, data_dir, download=True, try_gcs=False, **kw):
    calls.append(dict(name=name, split=split, data_dir=data_dir, download=download))
    if name not in sources:
      raise FileNotFoundError(f"fake: {name} not prepared")
    return sources[name]

  monkeypatch.setattr(tfds, "data_source", data_source)
  monkeypatch.setattr(tfds, "load", lambda *a, **k: (_ for _ in ()).throw(
      FileNotFoundError("fake tfds.load: not prepared")))

  def add(tfds_name, images):
    (isolated / "tfds" / tfds_name).mkdir(parents=True, exist_ok=True)
    sources[tfds_name] = _FakeSource(images)
    return sources[tfds_name]

  return add, calls


def test_tfds_adapter_shapes_and_celeb_a_preprocessing(fake_tfds, isolated):
  add, calls = fake_tfds
  rng = np.random.default_rng(0)
  add("mnist", [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(5)])
  s = data.load("mnist", "train")
  assert s.x.shape == (5, 28, 28, 1) and s.x.dtype == np.uint8
  assert s.source == "tfds mnist (data_source)"
  assert calls[-1] == dict(name="mnist", split="train", data_dir=str(isolated / "tfds"),
                           download=False)

  faces = [rng.integers(0, 256, (218, 178, 3), dtype=np.uint8) for _ in range(4)]
  src = add("celeb_a", faces)
  s = data.load("celeb_a", n=2, seed=0)
  assert s.x.shape == (2, 32, 32, 3) and s.x.dtype == np.uint8
  order = np.random.default_rng(0).permutation(4)[:2]
  assert src.requested == list(order)        # only the needed records are read
  # 178 -> 32 wide, 218 -> int(32 * 218 / 178) = 39 high (bicubic), crop rows 4..35.
  ref = np.asarray(Image.fromarray(faces[order[0]]).resize((32, 39), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(s.x[0], ref[4:36])


def test_tfds_names_and_splits(fake_tfds, isolated):
  add, calls = fake_tfds
  add("lsun/classroom", [np.full((40, 50, 3), 7, np.uint8)] * 2)
  s = data.load("lsun")
  assert s.x.shape == (2, 32, 32, 3) and s.source == "tfds lsun/classroom (data_source)"
  assert calls[-1]["split"] == "validation"
  add("svhn_cropped", [np.zeros((32, 32, 3), np.uint8)] * 3)
  assert data.load("svhn", "train").x.shape == (3, 32, 32, 3)
  assert calls[-1]["name"] == "svhn_cropped" and calls[-1]["split"] == "train"


def test_tfds_sequential_fallback_reader(monkeypatch):
  monkeypatch.setattr(tfds_source, "CHUNK", 2)
  records = [{"image": np.full((4, 4, 1), i, np.uint8)} for i in range(5)]
  prep = lambda ims: preprocess.preprocess("mnist", ims)
  x = tfds_source._read_sequential(iter(records), "mnist", lambda n: np.array([3, 0]), prep)
  np.testing.assert_array_equal(x[:, 0, 0, 0], [3, 0])
  with pytest.raises(InvalidInputError, match="'image'"):
    tfds_source._read_sequential(iter([{"label": 1}]), "mnist", np.arange, prep)


def test_tfds_not_prepared(fake_tfds, isolated):
  _, calls = fake_tfds
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("cifar100")
  assert not calls                                      # no directory: tfds is not asked
  assert str(isolated / "tfds" / "cifar100") in str(e.value)
  (isolated / "tfds" / "cifar100").mkdir(parents=True)  # a directory tfds cannot read
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("cifar100")
  assert calls and "data_source failed" in str(e.value) and "tfds build cifar100" in str(e.value)


# ------------------------------------------------------------------------- preprocessing


def test_omniglot_preprocessing():
  page = np.full((3, 105, 105, 3), 255, np.uint8)
  page[:, 40:60, 50:55] = 0                      # black stroke on white
  y = preprocess.preprocess("omniglot", page)
  assert y.shape == (3, 28, 28, 1) and y.dtype == np.uint8
  assert y.mean() < 60 and y[:, 12, 13, 0].min() > 150   # white strokes on black
  inverted = 255 - page[..., :1]                 # already white on black: kept as is
  np.testing.assert_array_equal(preprocess.preprocess("omniglot", inverted), y)


def test_preprocess_variable_sizes_and_empty():
  imgs = [np.zeros((64, 80, 3), np.uint8), np.zeros((48, 48, 3), np.uint8)]
  assert preprocess.preprocess("lsun/bedroom", imgs).shape == (2, 32, 32, 3)
  small = np.zeros((2, 32, 32, 3), np.uint8)
  assert preprocess.preprocess("imagenet32", small) is small
  assert preprocess.preprocess("cifar10", small) is small
  with pytest.raises(InvalidInputError, match="empty"):
    preprocess.preprocess("celeb_a", [])
  with pytest.raises(InvalidInputError, match="empty"):
    preprocess.preprocess("mnist", np.zeros((0, 28, 28, 1), np.uint8))


def test_public_api_reexports():
  for name in ("validate_images", "to_unit", "dequantize", "bits_per_dim", "num_dims", "load",
               "conform", "apply_transforms", "parse_spec", "is_transform", "ImageSet"):
    assert hasattr(data, name)
  assert "noise" in data.DATASETS and "lsun" in data.DATASETS
  assert set(data.TRANSFORMS) == {"rotation", "brightness", "gray", "grayscale", "rgb", "resize"}
  assert os.path.basename(local.file_name("lsun/bedroom", "test")) == "lsun_bedroom_test.npz"
