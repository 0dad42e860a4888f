"""``--weights MODEL=PATH[,PATH]``: score given weights (the authors' VAE) instead of training."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

import ood_jax
from ood_jax.errors import InvalidInputError

FIXTURE = (pathlib.Path(ood_jax.__file__).resolve().parent.parent.parent / "shared" / "fixtures"
           / "lr_vae_fmnist" / "weights.npz")


def _make_run(argv, tmp_path):
  from ood_jax.experiments import table2
  return table2.EXPERIMENT.make_run(["--preset", "smoke", "--no-progress",
                                     "--out", str(tmp_path / "out"), *argv])


@pytest.mark.parametrize("entry,match", [
    ("vae", "expected MODEL=PATH"),
    ("glow=w.npz", "not in --models"),
    ("vae=a.pth", "encoder,decoder .pth pair or one .npz"),
    ("vae=a.txt", "encoder,decoder .pth pair or one .npz"),
    ("vae=/no/such/w.npz", "no such file"),
])
def test_bad_weights_fail_before_work(entry, match, tmp_path):
  with pytest.raises(InvalidInputError, match=match):
    _make_run(["--weights", entry], tmp_path)
  assert not (tmp_path / "out").exists()


def test_weights_only_for_the_reference_vae(tmp_path):
  w = tmp_path / "w.npz"
  np.savez(w, x=np.zeros(1))
  with pytest.raises(InvalidInputError, match="load into .*vae.* not 'realnvp'"):
    _make_run(["--models", "realnvp", "--weights", f"realnvp={w}"], tmp_path)
  with pytest.raises(InvalidInputError, match="more than once"):
    _make_run(["--weights", f"vae={w}", "--weights", f"vae={w}"], tmp_path)


@pytest.mark.skipif(not FIXTURE.exists(), reason=f"Likelihood-Regret fixture not found at {FIXTURE}")
def test_given_weights_replace_training(tmp_path):
  from ood_jax.experiments import pipeline
  from ood_jax.models import load_reference_vae
  run = _make_run(["--weights", f"vae={FIXTURE}"], tmp_path)
  assert run.weights == {"vae": (str(FIXTURE),)}
  sets = pipeline.Sets(hwc=(32, 32, 1), train=None, test=None, ood={})
  trained = pipeline.train_or_load(run, "vae", sets)
  _, ref = load_reference_vae(FIXTURE)
  assert trained.result.step == 0 and trained.result.history == []
  for a, b in zip(jax.tree.leaves(trained.variables), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert "given_vae-" in trained.ckpt_dir and not (tmp_path / "out").exists()
  with pytest.raises(InvalidInputError, match=r"for \(32, 32, 1\) images"):
    pipeline.train_or_load(run, "vae", pipeline.Sets(hwc=(32, 32, 3), train=None, test=None, ood={}))
  assert run.settings_meta()["weights"] == {"vae": [str(FIXTURE)]}
