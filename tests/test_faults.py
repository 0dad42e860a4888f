"""Faults and bad input found by a probe (issue 15): each refused with one clear error before
any work, or survived without a silently wrong number."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest

from ood_jax.errors import CheckpointError, InvalidInputError
from ood_jax.models import UniformModel
from ood_jax.scores import get_scorer
from ood_jax.train import TrainConfig, checkpoint, train
from toy_models import ToyBN

CFG = TrainConfig(batch_size=8, num_steps=4, learning_rate=1e-2, halve_every_epochs=None,
                  log_every=2, checkpoint_every=2)


def _data(seed=0, n=32):
  return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)


def test_checkpoint_of_other_training_data_is_refused(tmp_path):
  """Same shapes, other images (a replaced <name>_<split>.npz): never reuse the old model."""
  ck = str(tmp_path / "ck")
  train(ToyBN(), _data(0), CFG, ck, progress=False)
  with pytest.raises(CheckpointError, match="training data.*data: checkpoint has"):
    train(ToyBN(), _data(1), CFG, ck, progress=False)
  assert train(ToyBN(), _data(0), CFG, ck, progress=False).resumed_from == 4


def test_checkpoint_without_data_fingerprint_still_restores(tmp_path):
  """Checkpoints written before the data fingerprint: restored (nothing to compare)."""
  from ood_jax.train.loop import _meta
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  state = {"w": np.arange(3, dtype=np.float32)}
  new = _meta(ToyBN(), CFG, 32, 4, data_sha256="abc")
  checkpoint.save(mngr, 1, state, {k: v for k, v in new.items() if k != "data"})
  assert checkpoint.restore(mngr, state, new)[0] == 1
  mngr.close()


def test_flipped_weights_fail_the_checksum(tmp_path, monkeypatch):
  """Bits flipped in stored weights that still decode: the checksum written with them
  catches it (no silently different model), with no intact step left -> error."""
  mngr = checkpoint.manager(str(tmp_path / "ck"), keep=1)
  state = {"w": np.arange(4, dtype=np.float32)}
  checkpoint.save(mngr, 1, state, {"model": "toy"})
  assert checkpoint.restore(mngr, state, {"model": "toy"})[0] == 1
  # what a flipped bit in the array file restores as: other values under the same checksum
  real = checkpoint.tree_sha256
  monkeypatch.setattr(checkpoint, "tree_sha256",
                      lambda t: real(jax.tree.map(lambda a: np.asarray(a) + 1, t)))
  with pytest.raises(CheckpointError, match="do not match the checksum.*No intact step"):
    checkpoint.restore(mngr, state, {"model": "toy"})
  mngr.close()


def test_tree_checksum_sees_one_flipped_bit():
  a = {"w": np.arange(6, dtype=np.float32), "b": np.zeros(2, np.float32)}
  b = jax.tree.map(np.copy, a)
  b["w"].view(np.uint32)[3] ^= 1
  assert checkpoint.tree_sha256(a) != checkpoint.tree_sha256(b)
  assert checkpoint.tree_sha256(a) == checkpoint.tree_sha256(jax.tree.map(np.copy, a))


def test_parameter_free_model_skips_training(tmp_path):
  r = train(UniformModel((4, 4, 1)), _data(), CFG, str(tmp_path / "ck"), progress=False)
  assert r.step == 0 and r.history == [] and "params" not in r.variables
  assert not os.path.exists(tmp_path / "ck")               # nothing to checkpoint
  s = get_scorer("nll", k=1).fit(UniformModel((4, 4, 1)), r.variables)
  np.testing.assert_allclose(get_scorer("nll").score(s, _data()), 16 * np.log(256), rtol=1e-6)


@pytest.mark.parametrize("field,value", [("k", 0), ("k", -2), ("seed", -1), ("chunk_size", 0),
                                         ("max_latents", 0)])
def test_scorer_settings_range_checked(field, value):
  with pytest.raises(InvalidInputError, match=f"{field} must be an integer >="):
    get_scorer("nll", **{field: value})


def _make_run(argv):
  from ood_jax.experiments import table2
  return table2.EXPERIMENT.make_run(["--preset", "smoke", "--no-progress", *argv])


@pytest.mark.parametrize("argv,match", [
    (["--train-steps", "0"], "at least one training step"),
    (["--train-steps", "-3"], "at least one training step"),
    (["--k", "0"], "at least one importance sample"),
    (["--seed", "-1"], "non-negative"),
    (["--n-eval", "0"], "at least one image"),
    (["--models", "vae,vae"], "vae given more than once"),
    (["--ood", "mnist,mnist"], "mnist given more than once"),
    (["--scores", "nll,nll"], "nll given more than once"),
    (["--data-dir", "/does/not/exist"], "no such directory"),
    (["--train-args", "epochs=0"], "epochs must be > 0"),
    (["--train-args", "checkpoint_every=0"], "checkpoint_every must be >= 1"),
])
def test_bad_numbers_and_names_fail_before_work(argv, match, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(InvalidInputError, match=match):
    _make_run([*argv, "--out", str(out)])
  assert not out.exists()


def test_unwritable_outputs_fail_before_work(tmp_path):
  f = tmp_path / "a_file"
  f.write_text("x")
  with pytest.raises(InvalidInputError, match="exists and is not a directory"):
    _make_run(["--out", str(f)])
  with pytest.raises(InvalidInputError, match="is a file, not a directory"):
    _make_run(["--out", str(f / "sub")])
  with pytest.raises(InvalidInputError, match="--ckpt-dir .*is a file"):
    _make_run(["--out", str(tmp_path / "ok"), "--ckpt-dir", str(f / "ck")])
  ro = tmp_path / "ro"
  ro.mkdir()
  os.chmod(ro, 0o555)
  try:
    if os.access(ro, os.W_OK):       # root ignores the mode bits: use a location no one writes
      target = "/proc/ood-jax-test-out"
    else:
      target = str(ro / "out")
    with pytest.raises(InvalidInputError, match="cannot write in"):
      _make_run(["--out", target])
  finally:
    os.chmod(ro, 0o755)
  assert sorted(os.listdir(tmp_path)) == ["a_file", "ro"] and not os.listdir(ro)


def test_all_nonfinite_scores_blame_the_weights_and_name_the_checkpoint(tmp_path):
  from ood_jax.errors import NonFiniteScoresError
  from ood_jax.experiments import pipeline
  from ood_jax.data import ImageSet
  r = train(ToyBN(), _data(), CFG, str(tmp_path / "ck"), progress=False)
  broken = jax.tree.map(lambda a: np.full_like(np.asarray(a), np.nan), r.variables)
  trained = pipeline.Trained(name="toy", model=ToyBN(), ckpt_dir=str(tmp_path / "ck"),
                             result=dataclasses.replace(r, variables=broken), config=CFG)
  sets = pipeline.Sets(hwc=(4, 4, 1), train=ImageSet("toy", "train", _data(), "t"),
                       test=ImageSet("toy", "test", _data(1, 8), "t"), ood={})

  class _Run:
    scores = ("nll",)

    def scorer(self, name, *a, **k):
      return get_scorer(name, k=1)

  with pytest.raises(NonFiniteScoresError, match=r"8 of 8 .*weights are broken.*checkpoint "
                                                 rf".*{tmp_path.name}.*ck"):
    pipeline.score_all(_Run(), trained, sets)
  ok = pipeline.score_all(_Run(), dataclasses.replace(trained, result=r), sets)
  assert np.all(np.isfinite(ok["nll"]["__id__"]))


def test_synthetic_ood_sets_are_capped_at_the_id_test_size(tmp_path):
  from ood_jax.experiments import pipeline
  x = np.random.default_rng(0).integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
  for split in ("train", "test"):
    np.savez(tmp_path / f"tiny_{split}.npz", x=x[:20] if split == "train" else x[20:])
  sets = pipeline.load_sets("tiny", ["noise", "constant:0"], ["vae"], data_dir=str(tmp_path),
                            n_train=None, n_eval=None, seed=0)
  assert len(sets.test.x) == 10
  assert {n: len(s.x) for n, s in sets.ood.items()} == {"noise": 10, "constant:0": 10}
  sets = pipeline.load_sets("tiny", ["noise"], ["vae"], data_dir=str(tmp_path), n_train=None,
                            n_eval=500, seed=0)
  assert len(sets.ood["noise"].x) == 10


@pytest.mark.parametrize("fault,code,line", [
    (KeyboardInterrupt(), 130, "interrupted: rerun the same command to resume"),
    (OSError(28, "No space left on device"), 1, "No space left on device.*rerun the same command"),
])
def test_interrupt_and_full_disk_give_one_resume_line(fault, code, line, tmp_path, capsys):
  import re
  from ood_jax.experiments import table2
  ck = tmp_path / "out" / "checkpoints" / "fashion_mnist_vae"
  (ck / "12").mkdir(parents=True)

  def boom(run):
    raise fault

  exp = dataclasses.replace(table2.EXPERIMENT, run_fn=boom)
  assert exp.main(["--preset", "smoke", "--no-progress", "--out", str(tmp_path / "out")]) == code
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(line, err[0]), err
  assert "from step 12 of" in err[0] and not (tmp_path / "out" / "report.md").exists()
