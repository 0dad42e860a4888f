"""The real TFDS path, offline: a tiny builder prepared as ``array_record`` and read back.

No fake ``data_source`` here: ``OodJaxTiny`` is a ``tfds.core.GeneratorBasedBuilder`` whose
examples come from ``_generate_examples`` (no downloads), prepared into ``tmp_path`` with
``download_and_prepare(file_format='array_record')`` and read through ``data.load`` with
``$TFDS_DATA_DIR`` pointed there. Its image is a ``Tensor`` feature: TFDS's ``Image`` feature
encodes numpy images to PNG with TensorFlow, which is not needed (nor installed) here; given
PIL images (``OodJaxTinyPil``) it encodes them with PIL, and reading decodes PNGs with PIL,
so that path (how MNIST & co. are stored) needs no TensorFlow either.
"""

from __future__ import annotations

import os
import importlib.util

import numpy as np
import pytest
from PIL import Image

from ood_jax import data
from ood_jax.data import local
from ood_jax.data.registry import ImageSet, canonical_name
from ood_jax.errors import DatasetNotFoundError, InvalidInputError

tfds = pytest.importorskip("tensorflow_datasets")

SPEC = "tfds:ood_jax_tiny"
SIZES = {"train": 12, "test": 6}
OFFSETS = {"train": 0, "test": 100}


def tiny_images(split: str) -> np.ndarray:
  """The images ``OodJaxTiny`` yields for ``split``, in order: uint8 ``N x 8 x 8 x 1``."""
  i = np.arange(SIZES[split])[:, None, None, None]
  rows = np.arange(8)[None, :, None, None]
  cols = np.arange(8)[None, None, :, None]
  return ((OFFSETS[split] + 3 * i + 8 * rows + cols) % 256).astype(np.uint8)


def tiny_labels(split: str) -> np.ndarray:
  return np.arange(SIZES[split], dtype=np.int64) % 3


class OodJaxTiny(tfds.core.GeneratorBasedBuilder):
  """12 train and 6 test deterministic 8 x 8 x 1 images with labels 0..2; nothing to download."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
        }),
        disable_shuffling=True)   # records stay in generation order

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    for i, (x, y) in enumerate(zip(tiny_images(split), tiny_labels(split))):
      yield i, {"image": x, "label": int(y)}


class OodJaxTinyPng(OodJaxTiny):
  """``OodJaxTiny`` with TFDS's ``Image`` feature, whose encoding needs TensorFlow."""

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)}))


@pytest.fixture
def tfds_dir(tmp_path, monkeypatch):
  """An empty ``$TFDS_DATA_DIR``, and no local npz directories in the way."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  monkeypatch.setattr(local, "shared_dir", lambda: tmp_path / "no_shared")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  return tmp_path / "tfds"


def _record_files(root) -> list:
  return sorted(p.name for p in root.glob("ood_jax_tiny/1.0.0/*.array_record*"))


def test_prepared_offline_reads_exact_pixels(tfds_dir):
  OodJaxTiny(data_dir=str(tfds_dir)).download_and_prepare(file_format="array_record")
  assert len(_record_files(tfds_dir)) == 2                    # train and test

  s = data.load(SPEC, "test")
  assert s.source == "tfds ood_jax_tiny (data_source)"
  assert s.x.dtype == np.uint8 and s.x.shape == (6, 8, 8, 1)
  np.testing.assert_array_equal(s.x, tiny_images("test"))
  np.testing.assert_array_equal(s.y, tiny_labels("test"))
  np.testing.assert_array_equal(s.indices, np.arange(6))

  keep = np.random.default_rng(1).permutation(12)[:5]         # n / seed pick these records
  t = data.load(SPEC + "+rgb", "train", n=5, seed=1)          # transforms keep indices
  np.testing.assert_array_equal(t.indices, keep)
  np.testing.assert_array_equal(t.y, tiny_labels("train")[keep])
  np.testing.assert_array_equal(t.x, np.repeat(tiny_images("train")[keep], 3, axis=-1))


def test_not_prepared_without_download_fails_and_says_how(tfds_dir):
  with pytest.raises(DatasetNotFoundError) as e:
    data.load(SPEC, "test")
  msg = str(e.value)
  assert str(tfds_dir / "ood_jax_tiny") in msg                   # where it looked
  assert "--download" in msg and "download=True" in msg
  assert not (tfds_dir / "ood_jax_tiny").exists()                # nothing was prepared


def test_download_true_prepares_then_reads(tfds_dir):
  s = data.load(SPEC, "train", download=True)
  assert "prepared" in s.source
  np.testing.assert_array_equal(s.x, tiny_images("train"))
  np.testing.assert_array_equal(s.y, tiny_labels("train"))
  assert len(_record_files(tfds_dir)) == 2                     # prepared as array_record
  t = data.load(SPEC, "test")                                  # now there: no download needed
  assert t.source == "tfds ood_jax_tiny (data_source)"
  np.testing.assert_array_equal(t.x, tiny_images("test"))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed: the Image feature can be encoded")
def test_download_true_image_feature_without_tensorflow_says_why(tfds_dir):
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("tfds:ood_jax_tiny_png", "test", download=True)
  msg = str(e.value)
  assert "download_and_prepare failed" in msg and "tensorflow" in msg.lower()


def test_indices_of_local_and_synthetic_sets(tfds_dir):
  (tfds_dir.parent / "data").mkdir()
  x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
  np.savez(tfds_dir.parent / "data" / "ramp_test.npz", x=x)
  s = data.load("ramp", n=7, seed=3)
  np.testing.assert_array_equal(s.indices, np.random.default_rng(3).permutation(20)[:7])
  np.testing.assert_array_equal(s.x.ravel(), s.indices)         # row i is record indices[i]
  assert s.indices.dtype == np.int64
  np.testing.assert_array_equal(data.load("ramp+rgb").indices, np.arange(20))
  noise = data.load("noise", n=4, like=(2, 2, 1))
  assert noise.indices.dtype == np.int64
  np.testing.assert_array_equal(noise.indices, np.arange(4))


def test_cli_download_flag_lets_every_load_of_the_run_download(monkeypatch, tmp_path):
  """``--download`` sets $OOD_JAX_DOWNLOAD for the process; ``load(download=None)`` reads it."""
  from ood_jax.data import registry
  from ood_jax.experiments import table2
  monkeypatch.setenv(registry.ENV_DOWNLOAD, "0")      # restored after the test
  seen = []

  def offline(*a, **k):            # no network in tests: record the flag, find nothing
    seen.append(k["download"])
    raise registry.tfds_source.TfdsUnavailable("offline in this test")

  monkeypatch.setattr(registry.tfds_source, "read_labeled", offline)
  with pytest.raises(Exception):
    registry.load("svhn", "test", data_dir=str(tmp_path))
  table2.EXPERIMENT.make_run(["--preset", "smoke", "--download", "--out", str(tmp_path / "o"),
                              "--no-progress"])
  assert os.environ[registry.ENV_DOWNLOAD] == "1"
  with pytest.raises(Exception):
    registry.load("svhn", "test", data_dir=str(tmp_path))
  assert seen[0] is False and seen[-1] is True


class OodJaxTinyPil(OodJaxTinyPng):
  """``OodJaxTinyPng`` yielding PIL images: the ``Image`` feature then needs no TensorFlow."""

  def _info(self):
    info = super()._info()
    return tfds.core.DatasetInfo(builder=self, features=info.features, disable_shuffling=True)

  def _generate_examples(self, split):
    for i, (x, y) in enumerate(zip(tiny_images(split), tiny_labels(split))):
      yield i, {"image": Image.fromarray(x[..., 0]), "label": int(y)}


def test_download_true_calls_download_and_prepare_once(tfds_dir, monkeypatch):
  calls, original = [], OodJaxTinyPil.download_and_prepare

  def spy(self, **kw):
    calls.append(kw)
    return original(self, **kw)

  monkeypatch.setattr(OodJaxTinyPil, "download_and_prepare", spy)
  keep = np.random.default_rng(2).permutation(12)[:4]
  s = data.load("tfds:ood_jax_tiny_pil", "train", n=4, seed=2, download=True)
  assert calls == [dict(file_format="array_record")]
  assert s.source == "tfds ood_jax_tiny_pil (data_source; downloaded and prepared now)"
  np.testing.assert_array_equal(s.x, tiny_images("train")[keep])     # PNG-encoded, PIL-decoded
  np.testing.assert_array_equal(s.indices, keep)
  again = data.load("tfds:ood_jax_tiny_pil", "test", download=True)  # prepared: reused
  assert len(calls) == 1 and again.source == "tfds ood_jax_tiny_pil (data_source)"
  np.testing.assert_array_equal(again.x, tiny_images("test"))


def test_download_failure_and_bad_names_are_reported(tfds_dir):
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("tfds:ood_jax_no_such_builder", download=True)
  msg = str(e.value)
  assert "download=True, but download_and_prepare failed" in msg
  assert "pass --download" not in msg             # it was passed: the reason is listed instead
  if importlib.util.find_spec("tensorflow") is None:
    with pytest.raises(DatasetNotFoundError, match="TensorFlow is not installed"):
      data.load("tfds:ood_jax_tiny_png", download=True)
  with pytest.raises(DatasetNotFoundError) as e:
    data.load("tfds:ood_jax_tiny", "test")
  assert "local file" not in str(e.value)         # tfds: names are read from TFDS only
  with pytest.raises(DatasetNotFoundError, match="--download"):
    data.load("kmnist")                           # the registry's own TFDS names say it too
  with pytest.raises(InvalidInputError, match="TFDS name"):
    data.load("tfds: ")
  assert canonical_name(" TFDS: ood_jax_tiny ") == "tfds:ood_jax_tiny"


def test_image_set_indices_are_validated():
  x = np.zeros((3, 2, 2, 1), np.uint8)
  assert ImageSet(name="a", split="test", x=x, source="s").indices is None
  with pytest.raises(InvalidInputError, match="indices"):
    ImageSet(name="a", split="test", x=x, source="s", indices=np.arange(2))
