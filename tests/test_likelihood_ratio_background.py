"""The likelihood-ratio background model trains on a FRESH perturbation of every batch
(Ren et al.'s background training), through ``train(..., batch_transform=)``: the batches
the step sees differ from the raw ones at about rate mu and differ between epochs for the
same image; a resumed background is bit-identical to an uninterrupted one; perturbations
never share a cache directory."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from ood_jax.data import batches, perturbations
from ood_jax.errors import CheckpointError, InvalidInputError
from ood_jax.experiments import settings
from ood_jax.scores import get_scorer
from ood_jax.scores.likelihood_ratio import LikelihoodRatio, background_dir
from ood_jax.train import TrainConfig, train
from toy_models import ToyBN

CFG = TrainConfig(batch_size=16, num_steps=8, halve_every_epochs=None, log_every=1,
                  checkpoint_every=4)


def _x(n=32, seed=3):
  return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)


def _record(monkeypatch):
  """Every host batch the training loop sends to the devices (what the step sees)."""
  seen = []
  real = batches.to_devices

  def spy(x):
    seen.append(np.array(x))
    return real(x)
  monkeypatch.setattr(batches, "to_devices", spy)
  return seen


def test_background_batches_are_perturbed_afresh_at_about_mu(monkeypatch):
  x, mu = _x(), 0.3
  scorer = LikelihoodRatio(mu=mu, train_config=CFG, seed=4)
  seen = _record(monkeypatch)
  scorer.train_background(ToyBN(), x)
  raw = [b for _, b in batches.train_batches(x, CFG.batch_size, CFG.seed, 0, CFG.num_steps)]
  assert len(seen) == len(raw) == CFG.num_steps
  rates = [np.mean(s != r) for s, r in zip(seen, raw)]
  assert all(abs(r - mu * 255 / 256) < 0.1 for r in rates), rates      # 256 sub-pixels: sd 0.029
  assert abs(np.mean(rates) - mu * 255 / 256) < 0.03
  # each image comes back every 2 steps (32 images, batch 16): a different mutation each time
  by_image = {}
  for step, (s, r) in enumerate(zip(seen, raw)):
    idx = np.sort(batches.epoch_permutation(len(x), CFG.seed, step // 2)[
        (step % 2) * 16:(step % 2 + 1) * 16])
    np.testing.assert_array_equal(r, x[idx])
    for i, img in zip(idx, s):
      by_image.setdefault(int(i), []).append(img)
  assert all(len(v) == 4 for v in by_image.values())
  fresh = np.mean([not np.array_equal(v[0], v[1]) for v in by_image.values()])
  assert fresh > 0.9, fresh
  # the steps' mutations are the scorer's transform at those steps, nothing else
  tf = scorer.batch_transform()
  for step in (0, 5):
    np.testing.assert_array_equal(seen[step], tf(raw[step], step))


def test_a_blur_background_sees_the_blurred_batches(monkeypatch):
  x = _x()
  seen = _record(monkeypatch)
  LikelihoodRatio(perturbation="blur", train_config=CFG).train_background(ToyBN(), x)
  raw = [b for _, b in batches.train_batches(x, CFG.batch_size, CFG.seed, 0, CFG.num_steps)]
  for s, r in zip(seen, raw):
    np.testing.assert_array_equal(s, perturbations.gaussian_blur(r))


def test_resumed_background_is_bit_identical(tmp_path):
  x = _x()
  scorer = LikelihoodRatio(mu=0.2, train_config=CFG, ckpt_dir=str(tmp_path / "a"), seed=1)
  ckpt = background_dir(scorer.ckpt_dir, 0.2, 0.0, 1)
  part = train(ToyBN(), x, scorer.background_config(), ckpt, progress=False, stop_after=5,
               batch_transform=scorer.batch_transform())
  assert part.step == 5
  resumed = train(ToyBN(), x, scorer.background_config(), ckpt, progress=False,
                  batch_transform=scorer.batch_transform())
  assert resumed.resumed_from == 4 and resumed.step == CFG.num_steps
  whole = dataclasses.replace(scorer, ckpt_dir=str(tmp_path / "b")).train_background(ToyBN(), x)
  flat_r, flat_w = jax.tree.leaves(resumed.variables), jax.tree.leaves(whole)
  assert len(flat_r) == len(flat_w)
  for a, b in zip(flat_r, flat_w):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # trained on other batches (no transform, or another one): another model, never loaded as this
  plain = train(ToyBN(), x, scorer.background_config(), None, progress=False).variables
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(plain), flat_w))
  with pytest.raises(CheckpointError, match="batch_transform"):
    train(ToyBN(), x, scorer.background_config(), ckpt, progress=False)
  with pytest.raises(CheckpointError, match="batch_transform"):
    train(ToyBN(), x, scorer.background_config(), ckpt, progress=False,
          batch_transform=perturbations.BatchPerturbation("random", 0.3, 1))


def test_perturbation_field_names_the_cache_and_is_checked(tmp_path):
  assert background_dir("c", 0.2, 0.0, 0) == os.path.join("c", "bg_mu0.2_l20_seed0")  # as before
  assert background_dir("c", 0.2, 0.0, 0, "random") == os.path.join("c", "bg_mu0.2_l20_seed0")
  dirs = {background_dir("c", 0.2, 0.0, 0, p) for p in perturbations.EXAMPLES}
  assert len(dirs) == len(perturbations.EXAMPLES)
  name, inline = settings.parse_entry("likelihood_ratio[perturbation=svd22]")
  scorer = get_scorer(name, context={"ckpt_dir": str(tmp_path), "train_config": CFG}, **inline)
  assert scorer.perturbation == "svd22"
  scorer.train_background(ToyBN(), _x())
  assert os.listdir(tmp_path) == ["bg_svd22_l20_seed0"]
  for bad in (dict(perturbation="svd"), dict(perturbation="gauss"), dict(mu=1.5)):
    with pytest.raises(InvalidInputError, match="likelihood_ratio"):
      get_scorer("likelihood_ratio", **bad)


def test_batch_transform_is_checked():
  x = _x()
  with pytest.raises(InvalidInputError, match="batch_transform must be a function"):
    train(ToyBN(), x, CFG, None, progress=False, batch_transform=3)
  with pytest.raises(InvalidInputError, match="same|structure"):
    train(ToyBN(), x, CFG, None, progress=False,
          batch_transform=lambda b, s: b.astype(np.float32))
  with pytest.raises(InvalidInputError, match="structure"):
    train(ToyBN(), x, CFG, None, progress=False, batch_transform=lambda b, s: b[:4])
