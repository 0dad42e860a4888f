"""Song et al. Fig. 3 (``song_ratio``): bits/dim against the test ratio r of the batch."""

import json
import math
import os

import jax
import numpy as np
import pytest

from conftest import slow_only
from toy_models import ToyBN
from ood_jax.experiments import pipeline, song_ratio
from ood_jax.scores.bn_mixed import BNMixed
from ood_jax.scores.bn_train import BNTrainBPD

HWC = (4, 4, 1)


@pytest.fixture(scope="module")
def toy():
  model = ToyBN(image_shape=HWC)
  rng = np.random.default_rng(0)
  x0 = rng.integers(0, 256, (8, *HWC), dtype=np.uint8)
  variables = model.init({"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x0)
  pool = rng.integers(0, 120, (40, *HWC), dtype=np.uint8)          # darker: ID-like
  return model, dict(variables), pool


@pytest.mark.parametrize("n", [24, 21])           # whole batches, and a padded last batch
def test_r1_is_bn_train_bpd_on_the_same_batches_and_values_are_bits_per_dim(toy, n):
  model, variables, pool = toy
  x = np.random.default_rng(n).integers(0, 256, (n, *HWC), dtype=np.uint8)
  one = dict(b=8, K=2, k=1, seed=5, max_latents=8)      # one batch per call: one compile
  scorer = BNMixed(**one)
  state = scorer.fit(model, variables, pool)
  got = song_ratio.ratio_bpd(scorer, state, x, [0.25, 1.0], HWC)
  bpd = BNTrainBPD(**one)
  want = bpd.score(bpd.fit(model, variables), x)
  np.testing.assert_allclose(got[1.0], want, rtol=1e-6, atol=1e-6)    # S_{b,1} = train mode
  # bits/dim: -S / (D ln 2), D = 16 dimensions
  for r in (0.25, 1.0):
    s = scorer.mixed_log_prob(state, x, r, stream=song_ratio.STREAM)
    np.testing.assert_allclose(got[r] * 16 * math.log(2.0), -s, rtol=1e-6)
  assert not np.allclose(got[0.25], got[1.0])          # the ID images in the batch matter


@pytest.mark.parametrize("arg, message", [("0.1,1.5", "must be in"), ("a", "--ratios"),
                                          ("0.5,0.5", "twice"), ("", "no ratios")])
def test_bad_ratios(arg, message):
  from ood_jax.errors import InvalidInputError
  with pytest.raises(InvalidInputError, match=message):
    song_ratio.ratios(arg)


def _args(data_dir, out, ckpt, **kw):
  a = {"--preset": "smoke", "--id": "toy", "--ood": "other", "--data-dir": data_dir,
       "--out": out, "--ckpt-dir": ckpt, "--train-steps": "4", "--n-eval": "16", "--k": "1",
       "--b": "8", "--ratios": "0.5,1.0", "--model-args": "ngf=4,latent_dim=4"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir()
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
  return str(d)


@slow_only
def test_song_ratio_end_to_end_r1_equals_bn_train_bpd(data_dir, tmp_path):
  out, ckpt = str(tmp_path / "fig3"), str(tmp_path / "ckpt")
  argv = _args(data_dir, out, ckpt)
  assert song_ratio.main(argv) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [(x["set"], x["r"]) for x in rows] == [
      ("toy (ID test)", None), ("toy (ID test)", 0.5), ("toy (ID test)", 1.0),
      ("other", None), ("other", 0.5), ("other", 1.0)]
  assert [x["m"] for x in rows[:3]] == [None, 4, 8]
  assert os.path.getsize(os.path.join(out, "fig3_vae.png")) > 1000
  assert "| other |" in open(os.path.join(out, "report.md")).read()
  # the r = 1 mean is bn_train_bpd's on the same model, b, K, k and seed
  run = song_ratio.EXPERIMENT.make_run(argv)
  sets = pipeline.sets_for(run)["vae"]
  trained = pipeline.train_or_load(run, "vae", sets)                # the cached checkpoint
  sc = run.scorer("bn_train_bpd", base={"b": 8})
  state = sc.fit(trained.model, trained.variables)
  for x, name in ((sets.test.x, "toy (ID test)"), (sets.ood["other"].x, "other")):
    want = float(np.mean(sc.score(state, x)))
    got = next(v["mean_bpd"] for v in rows if v["set"] == name and v["r"] == 1.0)
    assert got == pytest.approx(want, rel=1e-6)
