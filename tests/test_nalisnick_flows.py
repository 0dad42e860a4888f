"""Nalisnick et al. Fig. 1 bits/dim and §4 decomposition: numbers on tiny flows, end to end."""

import json
import os

import jax
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import nalisnick_bpd, nalisnick_decomposition
from ood_jax.models.flows.glow import make_cv_glow, make_glow


def _variables(model, x, seed=0, scale=0.05):
  """Initialised variables with every parameter perturbed by ``N(0, scale^2)`` (so kernels,
  ActNorm scales and st-nets are all non-trivial)."""
  v = model.init({"params": jax.random.PRNGKey(seed), "dequant": jax.random.PRNGKey(seed + 1)},
                 x, train=False)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda p: p + scale * rng.normal(size=p.shape).astype(p.dtype),
                                  v["params"])
  return {**v, "params": params}


def _images(n, shape=(16, 16, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("kw", [{}, dict(actnorm=False), dict(lu=False)],
                         ids=["actnorm_lu", "no_actnorm", "plain_conv"])
def test_cv_glow_volume_from_kernels_is_every_inputs_log_det(kw):
  model = make_cv_glow("smoke", (16, 16, 1), **kw)
  x = _images(6)
  v = _variables(model, x)
  lpz, ld = nalisnick_decomposition.log_prob_parts(model, v, x, seed=0, chunk=4)
  vol = nalisnick_decomposition.cv_glow_volume(model, v)
  assert abs(vol) > 1e-2                           # the perturbed kernels have a volume
  np.testing.assert_allclose(ld, vol, rtol=1e-5, atol=1e-3)
  assert np.ptp(ld) < 1e-3                         # the same for every input
  assert np.ptp(lpz) > 1.0                         # ... while log p(z) is not


def test_parts_sum_to_log_prob_and_affine_glow_has_no_constant_volume():
  model = make_glow("smoke", (16, 16, 1))
  x = _images(4, seed=1)
  v = _variables(model, x, seed=2)
  lpz, ld = nalisnick_decomposition.log_prob_parts(model, v, x, seed=3, chunk=4)
  lp = np.asarray(nalisnick_decomposition._log_prob(model, v, x, 3), np.float64)
  np.testing.assert_allclose(lpz + ld - model.num_dims * np.log(256.0), lp, rtol=1e-6, atol=1e-3)
  assert np.ptp(ld) > 1e-3                         # affine couplings: input-dependent volume
  with pytest.raises(InvalidInputError, match="constant-volume"):
    nalisnick_decomposition.cv_glow_volume(model, v)


def test_paper_numbers_lookup():
  assert nalisnick_bpd.paper_bpd("glow", "fashion_mnist", "mnist") == 1.833
  assert nalisnick_bpd.paper_bpd("glow", "cifar10", "constant:128") == 0.589
  assert nalisnick_bpd.paper_bpd("glow", "cifar10", "id_train") == 3.386
  assert nalisnick_bpd.paper_bpd("cv_glow", "cifar10", "id_train") is None


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir(size=16)
  np.savez(d / "other_test.npz", x=_images(32, seed=5))
  np.savez(d / "half_test.npz", x=_images(80, seed=6))      # a set with only a test split
  return str(d)


def _args(data_dir, out, **kw):
  a = {"--preset": "smoke", "--data-dir": data_dir, "--out": out, "--train-steps": "3",
       "--n-eval": "16"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


@pytest.mark.slow
def test_bpd_end_to_end(data_dir, tmp_path):
  out = str(tmp_path / "bpd")
  assert nalisnick_bpd.main(_args(data_dir, out, **{
      "--pairs": "toy:other+noise+constant:0+svhn", "--models": "cv_glow"})) == 0
  table = json.load(open(os.path.join(out, "bpd.json")))
  assert [t["set"] for t in table] == ["id_train", "id_test", "other", "noise", "constant:0"]
  assert all(t["bpd_mean"] > 0 and t["n"] > 0 for t in table)
  report = open(os.path.join(out, "report.md")).read()
  assert "svhn (test split) is not available here" in report
  assert os.path.exists(os.path.join(out, "hist_cv_glow_toy.png"))


@pytest.mark.slow
def test_decomposition_end_to_end_and_bad_models(data_dir, tmp_path, capsys):
  out = str(tmp_path / "dec")
  assert nalisnick_decomposition.main(_args(data_dir, out, **{
      "--pairs": "toy:other", "--models": "cv_glow", "--chunk": "8"})) == 0
  checks = json.load(open(os.path.join(out, "checks.json")))
  assert len(checks) == 1 and checks[0]["max_abs_parts_minus_log_prob"] < 1e-2
  assert checks[0]["max_abs_volume_minus_kernels"] < 1e-2
  assert os.path.exists(os.path.join(out, "decomposition_cv_glow_toy.png"))
  bad = str(tmp_path / "bad")
  assert nalisnick_decomposition.main(_args(data_dir, bad, **{"--models": "vae"})) == 2
  assert "not a Glow flow" in capsys.readouterr().err and not os.path.exists(bad)


@pytest.mark.slow
def test_asymmetry_trains_on_half_of_a_test_only_set(data_dir, tmp_path):
  from ood_jax.experiments import nalisnick_asymmetry
  out = str(tmp_path / "asym")
  # 'half' has only a test split: the model trains on one half and is evaluated on the other.
  assert nalisnick_asymmetry.main(_args(data_dir, out, **{
      "--pairs": "half:toy,svhn:toy", "--models": "cv_glow", "--n-eval": "100"})) == 0
  table = json.load(open(os.path.join(out, "asymmetry.json")))
  assert len(table) == 1 and table[0]["halved"] and table[0]["n_train"] == 40
  meta = json.load(open(os.path.join(out, "meta.json")))
  src = meta["models"]["cv_glow_half"]["data_sources"]
  assert "half split" in src["id_train"] and "half split" in src["id_test"]
  assert "svhn (test split) is not available here" in open(os.path.join(out, "report.md")).read()
  halves = nalisnick_asymmetry.split_halves(np.zeros((32, 1)))
  assert len(set(halves[0]) & set(halves[1])) == 0 and len(halves[0]) + len(halves[1]) == 32


def test_bpd_colour_models_by_preset():
  exp = nalisnick_bpd.EXPERIMENT
  assert nalisnick_bpd.colour_models(exp.make_run(["--preset", "cpu"])) == ["glow", "cv_glow"]
  assert nalisnick_bpd.colour_models(exp.make_run(["--preset", "paper"])) == [
      "glow", "cv_glow", "gated_pixelcnn", "vae"]
  assert nalisnick_bpd.colour_models(exp.make_run(["--colour-models", "all"]))[-1] == "vae"
  with pytest.raises(InvalidInputError, match="not in --models"):
    exp.make_run(["--models", "glow", "--colour-models", "vae"])
