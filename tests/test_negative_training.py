"""Negative training (Kirichenko et al. App. D): the objective, the loop's OOD stream, vector and
dict data, exact resume with the OOD stream, and the ``kirichenko_negative`` experiment."""

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import toy_square_images
from ood_jax.data import batches
from ood_jax.data.pixels import to_unit
from ood_jax.errors import CheckpointError, InvalidInputError, UnknownNameError
from ood_jax.train import TrainConfig, negative_objective, train
from ood_jax.train.loop import OOD_STREAM
from ood_jax.train.negative import negative_terms, paper_c
from toy_models import GaussDensity, ToyBN




class VectorGauss(nn.Module):
  """A diagonal Gaussian of float32 vectors (no ``image_shape``): NLL nats ``[N]``."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    mu = self.param("mu", nn.initializers.zeros, (x.shape[-1],))
    log_s = self.param("log_s", nn.initializers.zeros, (x.shape[-1],))
    z = (x - mu) * jnp.exp(-log_s)
    return jnp.sum(0.5 * z ** 2 + log_s + 0.5 * math.log(2 * math.pi), axis=-1)


class TinyClassifier(nn.Module):
  """``__call__({'x': uint8 images, 'y': labels}, train) -> cross-entropy [N]``."""
  image_shape: tuple = (4, 4, 1)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    h = to_unit(batch["x"]).reshape(batch["x"].shape[0], -1)
    logits = nn.Dense(2)(h)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], axis=-1)[:, 0]


class BNProbe(nn.Module):
  """BatchNorm straight on the pixels: its running mean is the mean of the batch it saw."""
  image_shape: tuple = (2, 2, 1)

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = to_unit(x).reshape(x.shape[0], -1)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.0, use_bias=False,
                     use_scale=False)(h)
    w = self.param("w", nn.initializers.ones, (h.shape[-1],))
    return jnp.sum((h * w) ** 2, axis=-1)


def _cfg(**kw):
  base = dict(batch_size=16, num_steps=40, learning_rate=3e-2, halve_every_epochs=None,
              log_every=10, checkpoint_every=3)
  return TrainConfig(**{**base, **kw})


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- the objective


def test_negative_training_lowers_the_ood_likelihood():
  x_id = toy_square_images(64, 8, lo=150, hi=255, seed=0)
  x_ood = toy_square_images(96, 8, lo=0, hi=120, seed=1)
  x_ood_train, x_ood_eval = x_ood[:64], x_ood[64:]
  model = GaussDensity()
  plain = train(model, x_id, _cfg(), progress=False)
  neg = train(model, x_id, _cfg(), ood=x_ood_train, objective=negative_objective(-1e9),
              progress=False)
  lp = lambda res, x: float(jnp.mean(model.apply(res.variables, x, method="log_prob")))
  assert lp(neg, x_ood_eval) < lp(plain, x_ood_eval) - 20.0      # held-out OOD images
  assert lp(neg, x_id) > lp(neg, x_ood_eval)
  assert "ood_loss" in neg.history[-1] and "id_loss" in neg.history[-1]
  assert neg.history[-1]["ood_loss"] > neg.history[0]["ood_loss"]  # OOD NLL pushed up


@pytest.mark.parametrize("weighting, factor", [("paper", 1.0), ("reference", 0.5)])
def test_indicator_gives_no_gradient_below_c(weighting, factor):
  obj = negative_objective(-100.0, weighting)
  id_l = jnp.array([3.0, 5.0])
  ood_l = jnp.array([50.0, 150.0, 99.0, jnp.inf, jnp.nan])   # log p: -50, -150, -99, -inf, nan
  loss = obj(id_l, ood_l)
  assert float(loss) == pytest.approx(factor * (4.0 + (-50.0 - 99.0) / 2))
  g_id, g_ood = jax.grad(lambda a, b: obj(a, b), argnums=(0, 1))(id_l, ood_l)
  np.testing.assert_allclose(np.asarray(g_ood), factor * np.array([-0.5, 0.0, -0.5, 0.0, 0.0]))
  np.testing.assert_allclose(np.asarray(g_id), factor * np.array([0.5, 0.5]))
  _, _, n = negative_terms(id_l, ood_l, -100.0)
  assert int(n) == 2


@pytest.mark.parametrize("weighting", ["paper", "reference"])
def test_no_ood_above_c_gives_the_plain_loss(weighting):
  obj = negative_objective(-30000.0, weighting)
  id_l = jnp.array([700.0, 800.0, 900.0])
  for ood_l in (jnp.array([40000.0, 31000.0]), jnp.zeros((0,))):
    loss, (g_id, g_ood) = jax.value_and_grad(lambda a, b: obj(a, b), argnums=(0, 1))(id_l, ood_l)
    assert float(loss) == pytest.approx(800.0)                  # the mean ID NLL, no NaN
    np.testing.assert_allclose(np.asarray(g_id), np.full(3, 1 / 3), rtol=1e-6)
    assert np.all(np.asarray(g_ood) == 0.0)


def test_objective_settings_are_checked():
  with pytest.raises(InvalidInputError, match="finite"):
    negative_objective(float("nan"))
  with pytest.raises(InvalidInputError, match="finite"):
    negative_objective(True)
  with pytest.raises(UnknownNameError, match="weighting"):
    negative_objective(-1.0, "half")
  assert paper_c("mnist", 1) == -30000.0 and paper_c("cifar10+resize:28", 1) == -100000.0
  assert paper_c("toy", 1) == -30000.0 and paper_c("toy", 3) == -100000.0


# ----------------------------------------------------------------------------- the OOD stream


def test_ood_batch_order_is_deterministic_and_independent_of_the_id_order():
  ood = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
  idx = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
  seq = lambda x, seed, stream, start=0, n=12: [
      b.ravel().tolist() for _, b in batches.train_batches(x, 8, seed, start, n, stream=stream)]
  a = seq(ood, 3, OOD_STREAM)
  assert a == seq(ood, 3, OOD_STREAM)                      # a function of (seed, step)
  assert a[7:] == seq(ood, 3, OOD_STREAM, start=7)         # resumable mid-way
  assert a != seq(idx, 3, 0)                                # not the ID order
  assert a != seq(ood, 4, OOD_STREAM)                       # the seed matters
  # the OOD epoch has its own length (5 batches of 40), whatever the ID set's size
  assert sorted(sum(a[:5], [])) == list(range(40))
  assert seq(ood, 3, 0) == seq(idx, 3, 0)                   # stream 0 = the old ID order
  np.testing.assert_array_equal(batches.epoch_permutation(40, 3, 0),
                                np.random.default_rng([3, 0]).permutation(40))


def test_id_and_ood_go_through_one_batchnorm_batch_in_the_ood_order():
  """BNProbe's running mean (momentum 0) is the mean of the last batch it normalised: the joint
  batch [ID; OOD] of the last step, whose OOD half follows stream 1's order through epochs of
  the OOD set's own length (12 images, 3 batches: step 4 is in its second epoch)."""
  x_id = np.full((8, 2, 2, 1), 255, np.uint8)
  x_ood = (np.arange(12, dtype=np.uint8) * 20)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  cfg = _cfg(batch_size=4, num_steps=5, learning_rate=1e-6, seed=2)
  res = train(BNProbe(), x_id, cfg, ood=x_ood, objective=negative_objective(-1e9), progress=False)
  mean = np.asarray(res.variables["batch_stats"]["BatchNorm_0"]["mean"])
  joint = lambda stream: (4 * 1.0 + float(list(batches.train_batches(
      x_ood, 4, 2, 0, 5, stream=stream))[4][1].sum()) / 4 / 255) / 8
  np.testing.assert_allclose(mean, joint(OOD_STREAM), rtol=1e-5)
  assert abs(joint(OOD_STREAM) - joint(0)) > 1e-3          # stream 0's order would differ


def test_exact_resume_with_the_ood_stream(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
  x_ood = np.random.default_rng(1).integers(0, 128, (28, 4, 4, 1), dtype=np.uint8)
  cfg = _cfg(batch_size=8, num_steps=7, learning_rate=1e-2, log_every=2)
  obj = negative_objective(-1e9)
  full = train(ToyBN(), x, cfg, ood=x_ood, objective=obj, progress=False)
  ck = str(tmp_path / "ck")
  part = train(ToyBN(), x, cfg, ck, ood=x_ood, objective=obj, progress=False, stop_after=5)
  assert part.step == 5
  resumed = train(ToyBN(), x, cfg, ck, ood=x_ood, objective=obj, progress=False)
  assert resumed.resumed_from == 3 and resumed.step == 7
  _leaves_equal(full.variables, resumed.variables)


def test_checkpoint_meta_tells_ood_streams_and_objectives_apart(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
  x_ood = np.random.default_rng(1).integers(0, 128, (24, 4, 4, 1), dtype=np.uint8)
  cfg = _cfg(batch_size=8, num_steps=3)
  plain_ck, neg_ck = str(tmp_path / "plain"), str(tmp_path / "neg")
  train(ToyBN(), x, cfg, plain_ck, progress=False)
  with pytest.raises(CheckpointError, match="ood"):          # plain is never read as negative
    train(ToyBN(), x, cfg, plain_ck, ood=x_ood, objective=negative_objective(-1e9), progress=False)
  train(ToyBN(), x, cfg, neg_ck, ood=x_ood, objective=negative_objective(-1e9), progress=False)
  with pytest.raises(CheckpointError, match="ood"):          # nor negative as plain
    train(ToyBN(), x, cfg, neg_ck, progress=False)
  with pytest.raises(CheckpointError, match="objective"):
    train(ToyBN(), x, cfg, neg_ck, ood=x_ood, objective=negative_objective(-5.0), progress=False)
  with pytest.raises(CheckpointError, match="sha256"):
    train(ToyBN(), x, cfg, neg_ck, ood=x_ood[::-1].copy(), objective=negative_objective(-1e9),
          progress=False)
  again = train(ToyBN(), x, cfg, neg_ck, ood=x_ood, objective=negative_objective(-1e9),
                progress=False)
  assert again.resumed_from == 3


def test_bad_ood_stream_and_objective_are_one_clear_error():
  x = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
  cfg = _cfg(batch_size=8, num_steps=2)
  neg = negative_objective(-1e9)
  cases = [
      (dict(ood=x), "needs an objective"),
      (dict(objective=neg), "needs an OOD stream"),
      (dict(ood=x[:4], objective=neg), "OOD set has 4 examples, fewer than one batch"),
      (dict(ood=np.zeros((16, 5, 5, 1), np.uint8), objective=neg), "does not match"),
      (dict(ood={"x": x}, objective=neg), "dict of arrays"),
      (dict(ood=x, objective="negative"), "must be a function"),
      (dict(ood=x, objective=lambda a, b: a - jnp.mean(b)), "must return a scalar"),
  ]
  for kwargs, message in cases:
    with pytest.raises(InvalidInputError, match=message):
      train(ToyBN(), x, cfg, progress=False, **kwargs)


# ----------------------------------------------------------------------------- vectors, dicts


def test_vector_data_trains_with_and_without_an_ood_stream():
  rng = np.random.default_rng(0)
  v = (rng.normal(size=(64, 5)) * 0.5 + 2.0).astype(np.float32)
  cfg = _cfg(num_steps=30, learning_rate=5e-2)
  res = train(VectorGauss(), v, cfg, progress=False)
  h = res.history
  assert h[-1]["loss"] < h[0]["loss"]
  assert h[-1]["bits_per_dim"] == pytest.approx(h[-1]["loss"] / (5 * math.log(2)))   # D = 5
  v_ood = (rng.normal(size=(32, 5)) * 0.5 - 2.0).astype(np.float32)
  neg = train(VectorGauss(), v, cfg, ood=v_ood, objective=negative_objective(-1e9), progress=False)
  nll = lambda r, x: float(jnp.mean(VectorGauss().apply(r.variables, x)))
  assert nll(neg, v_ood) > nll(res, v_ood)
  with pytest.raises(InvalidInputError, match="float32"):
    train(VectorGauss(), v.astype(np.float64), cfg, progress=False)
  with pytest.raises(InvalidInputError, match="NaN"):
    train(VectorGauss(), np.where(v > 2.5, np.nan, v).astype(np.float32), cfg, progress=False)


def test_dict_data_trains_a_classifier():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 64)
  x = np.where(y[:, None, None, None] == 1, 200, 30).astype(np.uint8) * np.ones((1, 4, 4, 1), np.uint8)
  data = {"x": x, "y": y}
  res = train(TinyClassifier(), data, _cfg(num_steps=30, learning_rate=5e-2), progress=False)
  assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
  assert res.history[-1]["bits_per_dim"] is None
  ce = TinyClassifier().apply(res.variables, {"x": x, "y": y})
  assert float(jnp.mean(ce)) < 0.3
  with pytest.raises(InvalidInputError, match="equal leading length"):
    train(TinyClassifier(), {"x": x, "y": y[:10]}, _cfg(), progress=False)
  with pytest.raises(InvalidInputError, match="does not match"):
    train(TinyClassifier(), {"x": x[:, :3, :3], "y": y}, _cfg(), progress=False)


# ----------------------------------------------------------------------------- the experiment




def test_experiment_smoke_writes_the_report(toy_dir, tmp_path, gauss_model, capsys):
  from ood_jax.experiments import kirichenko_negative as exp
  d = toy_dir(size=8, n_train=64, n_test=32)
  np.savez(d / "other_test.npz", x=toy_square_images(64, 8, lo=0, hi=120, seed=1))
  out = str(tmp_path / "out")
  args = ["--preset", "smoke", "--id", "toy", "--minimise", "other", "--third", "noise",
          "--models", gauss_model, "--data-dir", str(d), "--out", out, "--train-steps", "30",
          "--n-eval", "32", "--k", "1", "--train-args", "batch_size=16,lr=0.03", "--c=-1e9",
          "--no-progress"]
  assert exp.main(args) == 0
  for f in ("report.md", "results.json", "meta.json", "summary.json", "fig5_toy_gauss.png"):
    assert os.path.getsize(os.path.join(out, f)) > 100
  rows = json.load(open(os.path.join(out, "results.json")))
  assert {(r["model"], r["ood"]) for r in rows} == {
      (m, o) for m in ("toy_gauss", "toy_gauss+negative") for o in ("other (held-out half)", "noise")}
  assert all(r["n_ood"] == 32 for r in rows if r["ood"] != "noise")
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["minimised_sets"]["toy_gauss"] == {
      "train_half": 32, "held_out": 32, "source": meta["minimised_sets"]["toy_gauss"]["source"]}
  assert meta["objective"] == {"name": "negative", "c": -1e9, "weighting": "reference"}
  assert meta["models"]["toy_gauss"]["checkpoint"] != meta["models"]["toy_gauss+negative"]["checkpoint"]
  mean = {(s["training"], s["set"]): s["mean_log_p"] for s in meta["summary"]}
  held = "other (held-out half)"          # about -885 vs -386 nats: not the dequantisation noise
  assert mean[("negative", held)] < mean[("maximum likelihood", held)] - 100.0
  report = open(os.path.join(out, "report.md")).read()
  assert "fig5_toy_gauss.png" in report and "Mean log-likelihood per set" in report


@pytest.mark.parametrize("extra, message", [
    (["--weighting", "half"], "unknown negative-training weighting 'half'"),
    (["--c=nan"], "c must be a finite number"),
    (["--minimise", "toy"], "is the ID set itself"),
    (["--third", "other"], "is the minimised set"),
    (["--third", ","], "at least one evaluation set"),
    (["--minimise", "nosuchset"], "nosuchset"),
    (["--train-args", "batch_size=64"], "fewer than one batch of 64"),
])
def test_experiment_bad_options_are_one_clear_error(toy_dir, tmp_path, gauss_model, capsys,
                                                    extra, message):
  from ood_jax.experiments import kirichenko_negative as exp
  d = toy_dir(size=8, n_train=64, n_test=32)
  np.savez(d / "other_test.npz", x=toy_square_images(64, 8, lo=0, hi=120, seed=1))
  out = str(tmp_path / "out")
  args = ["--preset", "smoke", "--id", "toy", "--minimise", "other", "--third", "noise",
          "--models", gauss_model, "--data-dir", str(d), "--out", out, "--no-progress"]
  assert exp.main(args + extra) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
  assert not os.path.exists(os.path.join(out, "checkpoints"))     # nothing trained


def test_minimised_halves_are_disjoint_and_fixed_and_defaults_by_id():
  from ood_jax.experiments import kirichenko_negative as exp
  from ood_jax.experiments.kirichenko_negative import split_halves
  with pytest.raises(InvalidInputError, match="no default minimised set for ID set 'toy'"):
    exp.EXPERIMENT.make_run(["--id", "toy", "--preset", "smoke"])
  r = exp.EXPERIMENT.make_run(["--preset", "smoke"])
  assert (exp.minimised_name(r), exp.third_names(r), r.model_preset) == ("mnist", ["cifar10"], "smoke")
  assert exp.objective_for(r, 1).describe() == {"name": "negative", "c": -30000.0,
                                                "weighting": "reference"}
  r = exp.EXPERIMENT.make_run(["--preset", "smoke", "--id", "cifar10", "--c", "-5"])
  assert (exp.minimised_name(r), exp.objective_for(r, 3).c) == ("celeb_a", -5.0)
  x = np.zeros((11, 1, 1, 1), np.uint8)
  a, b = split_halves(x)
  assert len(a) == 5 and len(b) == 6 and not set(a) & set(b) and set(a) | set(b) == set(range(11))
  a2, b2 = split_halves(x)
  np.testing.assert_array_equal(a, a2)
  np.testing.assert_array_equal(b, b2)
