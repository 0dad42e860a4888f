"""Labels on image sets, the feature-file loader, the Classifier, and the
``kirichenko_embeddings`` experiment end to end on tiny local data."""

import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax import data
from ood_jax.data import idx, local, tfds_source
from ood_jax.data.registry import ImageSet
from ood_jax.errors import DatasetNotFoundError, InvalidInputError
from ood_jax.experiments import kirichenko_embeddings as emb
from ood_jax.models.classifier import Classifier


@pytest.fixture
def isolated(tmp_path, monkeypatch):
  """No data anywhere but what a test writes into ``tmp_path / 'd'``."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv(local.ENV_DATA_DIR, raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(local, "shared_dir", lambda: tmp_path / "no_shared")
  monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no_debian"))
  (tmp_path / "d").mkdir()
  return tmp_path / "d"


def _indexed_images(n, hw=4, c=1):
  """Image i is filled with the value i, so a subset's order can be read off its pixels."""
  return np.repeat(np.arange(n, dtype=np.uint8), hw * hw * c).reshape(n, hw, hw, c)


# ----------------------------------------------------------------------------- labels


def test_local_labels_are_subset_with_the_images(isolated):
  x = _indexed_images(20)
  y = (np.arange(20) * 7) % 10
  np.savez(isolated / "toy_train.npz", x=x, y=y)
  full = data.load("toy", "train", data_dir=str(isolated))
  np.testing.assert_array_equal(full.y, y)
  assert full.y.dtype == np.int64
  sub = data.load("toy", "train", data_dir=str(isolated), n=6, seed=3)
  rows = sub.x[:, 0, 0, 0].astype(int)
  assert len(set(rows)) == 6 and list(rows) != sorted(rows)     # a shuffled subset
  np.testing.assert_array_equal(sub.y, y[rows])
  resized = data.load("toy+resize:8", "train", data_dir=str(isolated), n=6, seed=3)
  np.testing.assert_array_equal(resized.y, sub.y)                 # transforms keep labels
  np.savez(isolated / "plain_test.npz", x=x)
  assert data.load("plain", data_dir=str(isolated)).y is None
  with pytest.raises(InvalidInputError, match="no class labels"):
    data.load("plain", data_dir=str(isolated)).require_labels()
  assert data.load("noise", n=3, like=(4, 4, 1)).y is None


def test_odd_label_arrays(isolated):
  x = _indexed_images(5)
  np.savez(isolated / "col_test.npz", x=x, y=np.arange(5)[:, None])
  np.testing.assert_array_equal(data.load("col", data_dir=str(isolated)).y, np.arange(5))
  np.savez(isolated / "attrs_test.npz", x=x, y=np.zeros((5, 40), np.int8))   # not classes
  assert data.load("attrs", data_dir=str(isolated)).y is None
  np.savez(isolated / "floaty_test.npz", x=x, y=np.zeros(5, np.float32))
  assert data.load("floaty", data_dir=str(isolated)).y is None
  np.savez(isolated / "pickled_test.npz", x=x, y=np.array([{"a": 1}] * 5, dtype=object))
  assert data.load("pickled", data_dir=str(isolated)).y is None        # images still load
  np.savez(isolated / "short_test.npz", x=x, y=np.arange(4))
  with pytest.raises(InvalidInputError, match="4 labels for 5"):
    data.load("short", data_dir=str(isolated))
  with pytest.raises(InvalidInputError, match="one label per image"):
    ImageSet(name="a", split="test", x=x, source="s", y=np.arange(3))


def test_debian_fashion_mnist_labels(isolated, monkeypatch):
  images = _indexed_images(6, hw=28)[..., 0]
  labels = np.array([3, 1, 4, 1, 5, 9], np.uint8)
  deb = isolated / "deb"
  deb.mkdir()
  header = lambda a: bytes([0, 0, 0x08, a.ndim]) + b"".join(
      d.to_bytes(4, "big") for d in a.shape)
  (deb / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header(images) + images.tobytes()))
  monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(deb))
  assert data.load("fashion_mnist").y is None                    # no labels file: None
  (deb / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header(labels) + labels.tobytes()))
  s = data.load("fashion_mnist", n=4, seed=1)
  np.testing.assert_array_equal(s.y, labels[s.x[:, 0, 0, 0].astype(int)])


class _Records:
  """A random-access source of dict records (what ``tfds.data_source`` returns)."""

  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def test_tfds_labels_follow_the_selected_records():
  recs = [{"image": np.full((4, 4, 1), i, np.uint8), "label": 10 + i} for i in range(5)]
  prep = lambda ims: np.stack(ims)
  select = lambda n: np.array([4, 0, 2])
  x, y = tfds_source._read_random_access_labeled(_Records(recs), "mnist", select, prep)
  np.testing.assert_array_equal(x[:, 0, 0, 0], [4, 0, 2])
  np.testing.assert_array_equal(y, [14, 10, 12])
  x2, y2 = tfds_source._read_sequential_labeled(iter(recs), "mnist", select, prep)
  np.testing.assert_array_equal(y2, y)
  np.testing.assert_array_equal(x2, x)
  faces = [{"image": r["image"], "attributes": {"Smiling": True}} for r in recs]
  assert tfds_source._read_random_access_labeled(_Records(faces), "celeb_a", select, prep)[1] is None


# ----------------------------------------------------------------------------- features


def test_feature_files_load_and_subset(tmp_path):
  x = np.arange(40, dtype=np.float64).reshape(10, 4)
  np.savez(tmp_path / "emb_train.npz", x=x, y=np.arange(10))
  f = data.load_features("emb", "train", str(tmp_path))
  assert f.x.dtype == np.float32 and f.x.shape == (10, 4) and f.dim == 4
  sub = data.load_features("emb", "train", str(tmp_path), n=3, seed=2)
  np.testing.assert_array_equal(sub.y, sub.x[:, 0] // 4)          # labels follow the rows
  np.savez(tmp_path / "celeb_a_test.npz", x=x)
  assert data.load_features("celeba", "test", str(tmp_path)).source.endswith("celeb_a_test.npz")


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 8, 8, 3), np.uint8), "looks like images"),
    (np.zeros((3, 8, 8, 3), np.float32), "looks like images"),
    (np.zeros((3, 4), np.uint8), "expected float feature vectors"),
    (np.zeros(3, np.float32), r"x\[:, None\]"),
    (np.zeros((3, 4, 2), np.float32), "2 dimensions"),
    (np.full((3, 4), np.nan, np.float32), "NaN"),
    (np.zeros((0, 4), np.float32), "empty"),
])
def test_bad_feature_files_are_one_clear_error(tmp_path, x, message):
  np.savez(tmp_path / "bad_test.npz", x=x)
  with pytest.raises(InvalidInputError, match=message):
    data.load_features("bad", "test", str(tmp_path))


def test_feature_loader_other_errors(tmp_path):
  with pytest.raises(DatasetNotFoundError, match="nothere_test.npz"):
    data.load_features("nothere", "test", str(tmp_path))
  np.savez(tmp_path / "nox_test.npz", z=np.zeros((3, 4), np.float32))
  with pytest.raises(InvalidInputError, match="no array 'x'"):
    data.load_features("nox", "test", str(tmp_path))
  np.savez(tmp_path / "ok_test.npz", x=np.zeros((3, 4), np.float32))
  with pytest.raises(InvalidInputError, match="expected 5 features"):
    data.load_features("ok", "test", str(tmp_path), dim=5)
  with pytest.raises(InvalidInputError, match="directory"):
    data.load_features("ok", "test", None)
  with pytest.raises(InvalidInputError, match="transforms"):
    data.load_features("ok+rotation", "test", str(tmp_path))


# ----------------------------------------------------------------------------- classifier


def test_classifier_loss_logits_and_features():
  m = Classifier(image_shape=(8, 8, 3), num_classes=3, widths=(4, 4), convs_per_stage=1,
                 feature_dim=6, augment=True, shift=1)
  rng = np.random.default_rng(0)
  batch = {"x": rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), "y": np.array([0, 1, 2, 1, 0])}

  @jax.jit
  def run(key):
    v = m.init(key, batch)
    ce_train, new = m.apply(v, batch, train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.fold_in(key, 1)})
    return (v, m.apply(v, batch), ce_train, new, m.apply(v, batch["x"], method=m.features),
            m.apply(v, batch["x"], method=m.logits))

  v, ce, ce_train, new, feats, logits = run(jax.random.PRNGKey(0))
  assert ce.shape == (5,) and bool(jnp.all(jnp.isfinite(ce))) and bool(jnp.all(ce > 0))
  assert ce_train.shape == (5,) and bool(jnp.all(jnp.isfinite(ce_train)))
  assert feats.shape == (5, 6) and logits.shape == (5, 3)
  np.testing.assert_allclose(ce, -jax.nn.log_softmax(logits)[jnp.arange(5), batch["y"]],
                             rtol=1e-5)
  assert set(v) == {"params", "batch_stats"}
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], new["batch_stats"])
  assert any(jax.tree.leaves(changed))                           # train mode updates them
  with pytest.raises(InvalidInputError, match="expected a batch"):
    m.apply(v, batch["x"])
  with pytest.raises(InvalidInputError, match="N x 8 x 8 x 3"):
    m.apply(v, {"x": batch["x"][:, :4], "y": batch["y"]})
  with pytest.raises(InvalidInputError, match="expected 5 labels"):
    m.apply(v, {"x": batch["x"], "y": batch["y"][:3]})
  with pytest.raises(InvalidInputError, match="widths"):
    Classifier(widths=())


# ----------------------------------------------------------------------------- experiment

TINY = ["--preset", "smoke", "--n-eval", "16", "--no-progress",
        "--classifier-args", "widths=(4,),feature_dim=4",
        "--classifier-train-args", "steps=2,batch_size=16",
        "--flow-args", "num_couplings=2,hidden=8,hidden_layers=0",
        "--flow-train-args", "steps=2,batch_size=16"]


@pytest.fixture
def toy_data(isolated):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 64)
  x = np.zeros((64, 6, 6, 3), np.uint8)
  for i, c in enumerate(y):
    x[i, :, :, c] = rng.integers(100, 255, (6, 6))
  np.savez(isolated / "toy_train.npz", x=x[:48], y=y[:48])
  np.savez(isolated / "toy_test.npz", x=x[48:], y=y[48:])
  np.savez(isolated / "other_test.npz", x=rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8))
  np.savez(isolated / "nolab_train.npz", x=x[:48])
  np.savez(isolated / "nolab_test.npz", x=x[48:])
  return isolated


def test_experiment_on_images_writes_report(toy_data, tmp_path, capsys):
  out = str(tmp_path / "out")
  pairs = "toy:other+noise,nolab:other,svhn:toy"
  assert emb.main(["--data-dir", str(toy_data), "--out", out, "--pairs", pairs, *TINY]) == 0
  report = open(os.path.join(out, "report.md")).read()
  assert "Table 2(a)" in report and "| toy | other |" in report and "Deviation" in report
  assert "nolab (train split) has no class labels" in report
  assert "svhn (train split) is not available here" in report
  table = json.load(open(os.path.join(out, "table2a.json")))
  assert [t["ood"] for t in table] == ["other", "noise"]
  assert all(0 <= t["auroc_percent"] <= 100 for t in table)
  rows = json.load(open(os.path.join(out, "results.json")))
  assert {r["model"] for r in rows} == {"vector_realnvp_toy"} and rows[0]["n_id"] == 16
  meta = json.load(open(os.path.join(out, "meta.json")))
  pair = meta["per_pair"]["toy"]
  assert pair["feature_dim"] == 4 and pair["classifier"]["num_classes"] == 3
  assert pair["classifier"]["train_steps"] == 2 and pair["flow"]["train_steps"] == 2
  assert 0 <= pair["classifier"]["id_test_accuracy"] <= 1
  assert set(pair["loglik_mean_nats"]) == {"id_train", "id_test", "other", "noise"}
  assert os.path.getsize(os.path.join(out, "loglik_toy.png")) > 1000


def test_experiment_on_feature_files_and_bad_input(tmp_path, capsys):
  rng = np.random.default_rng(0)
  fdir = tmp_path / "feats"
  fdir.mkdir()
  np.savez(fdir / "a_train.npz", x=rng.normal(size=(40, 3)).astype(np.float32))
  np.savez(fdir / "a_test.npz", x=rng.normal(size=(20, 3)).astype(np.float32))
  np.savez(fdir / "b_test.npz", x=rng.normal(3.0, 1.0, size=(20, 3)).astype(np.float32))
  out = str(tmp_path / "out")
  args = ["--features", str(fdir), "--out", out, "--pairs", "a:b+c", *TINY]
  assert emb.main(args) == 0
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["per_pair"]["a"]["source"] == "feature files"
  assert meta["skipped"] == [{"id": "a", "ood": "c", "reason": f"no feature file {fdir / 'c_test.npz'}"}]
  assert meta["per_pair"]["a"]["flow"]["resumed_from"] is None
  assert emb.main(args) == 0                                     # reuses the flow checkpoint
  assert json.load(open(os.path.join(out, "meta.json")))["per_pair"]["a"]["flow"]["resumed_from"] == 2
  capsys.readouterr()
  for bad, message in [(["--pairs", "c:a"], "no pair has its data"),
                       (["--flow-args", "scale_fn=cubic"], "cubic"),
                       (["--classifier-args", "widths=3"], "widths"),
                       (["--flow-train-args", "lr=-1"], "learning_rate")]:
    bad_out = str(tmp_path / "bad")
    assert emb.main(args[:-len(TINY)] + TINY + bad + ["--out", bad_out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not os.path.exists(bad_out)
