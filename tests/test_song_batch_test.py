"""Song et al. §6 (``song_batch_test``): the permutation test over whole batches."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import slow_only
from toy_models import ToyBN
from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import song_batch_test as sbt
from ood_jax.scores.bn_train import BNTrainBPD
from ood_jax.scores.compositions import compositions
from ood_jax.scores.train_mode import batch_key
from ood_jax.scores.t_perm import rank_statistic


def _brute_t(ref, values):
  n = len(ref)
  return np.array([abs(sum(1 for r in ref if r <= v) - n / 2) for v in values])


@pytest.mark.parametrize("seed", range(4))
def test_batch_t_perm_against_a_loop_with_ties(seed):
  rng = np.random.default_rng(seed)
  ref = rng.integers(0, 6, 7).astype(float)                 # ties on purpose
  values = np.concatenate([rng.integers(-1, 8, 9).astype(float), ref[:2]])
  np.testing.assert_array_equal(sbt.batch_t_perm(ref, values), _brute_t(ref, values))
  # and the library's per-sample T_perm (Song Eq. 2), float32
  np.testing.assert_allclose(
      sbt.batch_t_perm(ref, values),
      np.asarray(rank_statistic(jnp.sort(jnp.asarray(ref, jnp.float32)),
                                jnp.asarray(values, jnp.float32))))
  with pytest.raises(InvalidInputError, match="no reference"):
    sbt.batch_t_perm([], values)


def test_partition_and_batch_means_against_loops():
  idx = sbt.partition(23, 5, rounds=3, seed=2, stream=1)
  assert idx.shape == (12, 5)                                   # 3 rounds x 4 whole batches
  for t in range(3):
    block = idx[4 * t:4 * t + 4].ravel()
    assert len(set(block)) == 20 and block.max() < 23          # one permutation's prefix
  assert not np.array_equal(idx[:4], idx[4:8])                  # fresh rounds
  np.testing.assert_array_equal(idx, sbt.partition(23, 5, 3, 2, 1))
  assert not np.array_equal(idx, sbt.partition(23, 5, 3, 2, 2))  # streams differ
  v = np.random.default_rng(0).normal(size=23)
  want = [sum(v[i] for i in row) / 5 for row in idx]
  np.testing.assert_allclose(sbt.batch_means(v, idx), want, rtol=1e-12)
  with pytest.raises(InvalidInputError, match="no whole batch"):
    sbt.partition(4, 5, 1, 0)


def test_shifted_batches_are_detected_in_either_direction():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=640)
  ids, hi, lo = rng.normal(size=640), rng.normal(0.5, 1, 640), rng.normal(-0.5, 1, 640)
  t = lambda v, s: sbt.batch_t_perm(sbt.batch_means(ref, sbt.partition(640, 64, 4, 0, 0)),
                                    sbt.batch_means(v, sbt.partition(640, 64, 4, 0, s)))
  for ood in (hi, lo):            # two-sided: too likely and too unlikely batches are OOD
    assert metrics.ood_metrics(t(ids, 1), t(ood, 2))["auroc"] > 0.95


def test_batch_train_means_is_the_train_mode_log_prob_of_each_batch():
  model = ToyBN(image_shape=(4, 4, 1))
  x = np.random.default_rng(0).integers(0, 256, (24, 4, 4, 1), dtype=np.uint8)
  variables = dict(model.init({"params": jax.random.PRNGKey(0),
                               "sample": jax.random.PRNGKey(1)}, x[:8]))
  sc = BNTrainBPD(b=8, K=1, k=1, seed=3, max_latents=8)
  idx = sbt.partition(24, 8, 2, seed=0)
  got = sbt.batch_train_means(sc, sc.fit(model, variables), x, idx, (4, 4, 1))
  # brute force: one train-mode forward of each batch (BatchNorm with its own statistics), in
  # the order and with the rng bn_train_bpd gives a lone batch
  comps = compositions(8, 0, b=8, r=1.0, rounds=1, seed=3)
  key = batch_key(3, jnp.asarray(comps.ids[0]))
  fwd = jax.jit(lambda xb, train: model.apply(
      variables, xb, train=train, k=1, method="log_prob", rngs={"sample": key},
      mutable=["batch_stats"])[0], static_argnums=1)
  for i, row in enumerate(idx):
    xb = x[row][comps.test_idx[0]]
    assert got[i] == pytest.approx(float(jnp.mean(fwd(xb, True))), rel=1e-5)
    assert abs(got[i] - float(jnp.mean(fwd(xb, False)))) > 1e-3   # not eval mode
  # exactly bn_train_bpd's bits/dim averaged over the batch, converted to nats per image
  row = idx[1]
  want = -float(np.mean(sc.score(sc.fit(model, variables), x[row]))) * 16 * math.log(2.0)
  assert got[1] == pytest.approx(want, rel=1e-6)


def test_paper_numbers_are_the_sections():
  assert sbt.paper_values("cifar10", "svhn") == (1.00, 1.00)
  assert sbt.paper_values("cifar10", "cifar100") == (0.56, 0.64)
  assert sbt.paper_values("cifar10", "lsun") == (0.82, 0.68)
  assert sbt.paper_values("cifar10", "imagenet32") == (0.56, 0.68)
  assert sbt.paper_values("fashion_mnist", "mnist") is None


def _args(data_dir, out, ckpt, **kw):
  a = {"--preset": "smoke", "--pairs": "toy:other+bogus", "--data-dir": data_dir,
       "--out": out, "--ckpt-dir": ckpt, "--train-steps": "4", "--n-eval": "32", "--k": "1",
       "--b": "8", "--models": "vae", "--model-args": "ngf=4,latent_dim=4"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir(n_train=64, n_test=32)
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8))
  return str(d)


@pytest.mark.parametrize("override, message", [
    ({"--b": "1"}, "--b must be"), ({"--partitions": "0"}, "--partitions"),
    ({"--reference": "x"}, "--reference"), ({"--pairs": "toy"}, "--pairs")])
def test_bad_input_is_one_clear_error(data_dir, tmp_path, capsys, override, message):
  out = str(tmp_path / "out")
  assert sbt.main(_args(data_dir, out, str(tmp_path / "ckpt"), **override)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and not os.path.exists(out)


@slow_only
def test_song_batch_test_end_to_end(data_dir, tmp_path):
  out = str(tmp_path / "bt")
  assert sbt.main(_args(data_dir, out, str(tmp_path / "ckpt"), **{"--partitions": "3"})) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [(x["score"], x["ood"]) for x in rows] == [(sbt.EVAL, "other"), (sbt.TRAIN, "other")]
  assert all(x["n_id"] == 12 and x["n_ood"] == 12 for x in rows)    # 3 x 32 // 8
  batches = json.load(open(os.path.join(out, "batches.json")))
  ev = {x["set"]: x for x in batches if x["mode"] == "eval"}
  t = sbt.batch_t_perm(-np.array(ev["__ref__"]["mean_bpd"]), -np.array(ev["other"]["mean_bpd"]))
  np.testing.assert_allclose(ev["other"]["t"], t)                   # T of the batch means
  report = open(os.path.join(out, "report.md")).read()
  assert "| toy | vae | other | 12 / 12 |" in report and "bogus" in report
  assert os.path.exists(os.path.join(out, "hist_batch_bpd_vae_toy.png"))
