"""Training loop: determinism, exact resume, checkpoint errors, NaN guard, schedules."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from ood_jax.errors import CheckpointError, InvalidInputError, TrainingDivergedError
from ood_jax.train import TrainConfig, checkpoint, train
from ood_jax.train.optim import learning_rate_schedule
from toy_models import Exploding, ToyBN


def _data(n=40, shape=(4, 4, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


CFG = TrainConfig(batch_size=8, num_steps=7, learning_rate=1e-2, halve_every_epochs=None,
                  log_every=2, checkpoint_every=3)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_same_seed_same_parameters_and_loss_decreases():
  x = _data()
  a = train(ToyBN(), x, CFG, progress=False)
  b = train(ToyBN(), x, CFG, progress=False)
  _leaves_equal(a.variables, b.variables)
  c = train(ToyBN(), x, TrainConfig(**{**CFG.__dict__, "seed": 1}), progress=False)
  assert not np.allclose(jax.tree.leaves(a.variables["params"])[0],
                         jax.tree.leaves(c.variables["params"])[0])
  long = train(ToyBN(), x, TrainConfig(**{**CFG.__dict__, "num_steps": 60, "log_every": 10}),
               progress=False)
  assert long.history[-1]["loss"] < long.history[0]["loss"]
  assert "batch_stats" in a.variables


def test_killed_and_resumed_run_ends_with_identical_state(tmp_path):
  x = _data()
  full = train(ToyBN(), x, CFG, str(tmp_path / "full"), progress=False)
  ck = str(tmp_path / "killed")
  part = train(ToyBN(), x, CFG, ck, progress=False, stop_after=5)  # "killed" after step 5
  assert part.step == 5
  resumed = train(ToyBN(), x, CFG, ck, progress=False)
  assert resumed.resumed_from == 3          # last checkpoint before the kill
  assert resumed.step == 7
  _leaves_equal(full.variables, resumed.variables)
  again = train(ToyBN(), x, CFG, ck, progress=False)   # finished: just loads
  assert again.resumed_from == 7 and again.history == []
  _leaves_equal(full.variables, again.variables)


def test_checkpoint_for_other_config_is_rejected(tmp_path):
  x = _data()
  ck = str(tmp_path / "ck")
  train(ToyBN(), x, CFG, ck, progress=False)
  with pytest.raises(CheckpointError, match="different model, config"):
    train(ToyBN(width=16), x, CFG, ck, progress=False)
  with pytest.raises(CheckpointError, match="learning_rate"):
    train(ToyBN(), x, TrainConfig(**{**CFG.__dict__, "learning_rate": 0.5}), ck, progress=False)


def test_resume_with_decay_steps_tuple_meta(tmp_path):
  """decay_steps is a tuple in the config and a list in the JSON meta: resume still works."""
  x = _data()
  cfg = dataclasses.replace(CFG, decay_steps=(2, 5), optimizer="rmsprop")
  ck = str(tmp_path / "ck")
  full = train(ToyBN(), x, cfg, progress=False)
  train(ToyBN(), x, cfg, ck, progress=False, stop_after=5)
  resumed = train(ToyBN(), x, cfg, ck, progress=False)
  assert resumed.resumed_from == 3 and resumed.step == 7
  _leaves_equal(full.variables, resumed.variables)


def test_checkpoint_without_newer_config_fields_restores(tmp_path):
  """A checkpoint whose meta predates a TrainConfig field (optimizer, decay_steps, ...) was
  trained as the field's default does: it restores into the default, not into another."""
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  state = {"w": np.arange(3, dtype=np.float32)}
  meta = lambda cfg: {"model": "toy", "config": dataclasses.asdict(cfg), "n_train": 8}
  old = meta(CFG)
  for k in ("optimizer", "decay_steps", "decay_factor", "eps", "rmsprop_alpha"):
    del old["config"][k]
  checkpoint.save(mngr, 1, state, old)
  step, restored = checkpoint.restore(mngr, state, meta(CFG))
  assert step == 1
  np.testing.assert_array_equal(restored["w"], state["w"])
  with pytest.raises(CheckpointError, match="optimizer"):
    checkpoint.restore(mngr, state, meta(dataclasses.replace(CFG, optimizer="adamax")))
  mngr.close()


def test_checkpoint_from_before_ood_streams_restores_as_plain_training(tmp_path):
  """Checkpoints written before the meta had ``ood`` / ``objective`` were plain training: they
  restore into a plain run and never into one with an OOD stream or another objective."""
  from ood_jax.train.loop import _meta
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  state = {"w": np.arange(3, dtype=np.float32)}
  new = _meta(ToyBN(), CFG, 40, 7)
  assert new["ood"] is None and new["objective"] is None
  checkpoint.save(mngr, 1, state, {k: v for k, v in new.items() if k not in ("ood", "objective")})
  assert checkpoint.restore(mngr, state, new)[0] == 1
  with pytest.raises(CheckpointError, match="ood"):
    checkpoint.restore(mngr, state, _meta(ToyBN(), CFG, 40, 7, {"n": 8, "sha256": "x"}, None))
  with pytest.raises(CheckpointError, match="objective"):
    checkpoint.restore(mngr, state, _meta(ToyBN(), CFG, 40, 7, None, {"name": "negative"}))
  mngr.close()


def _garble(step_dir):
  for root, _, files in os.walk(step_dir):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")


def test_corrupt_latest_checkpoint_falls_back_to_an_intact_step(tmp_path):
  x = _data()
  ck = tmp_path / "ck"
  full = train(ToyBN(), x, CFG, str(ck), progress=False)
  assert sorted(int(d) for d in os.listdir(ck) if d.isdigit()) == [6, 7]
  _garble(ck / "7")
  with pytest.warns(UserWarning, match=r"checkpoint .*7 is corrupt.*intact step 6"):
    again = train(ToyBN(), x, CFG, str(ck), progress=False)
  assert again.resumed_from == 6 and again.step == 7
  assert (ck / "corrupt-7").is_dir()                  # set aside, not deleted
  _leaves_equal(full.variables, again.variables)      # the lost step is repeated exactly
  _garble(ck / "6")
  _garble(ck / "7")
  with pytest.raises(CheckpointError, match="corrupt.*No intact step"):
    train(ToyBN(), x, CFG, str(ck), progress=False)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  x = np.full((16, 2, 2, 1), 200, np.uint8)
  cfg = TrainConfig(batch_size=8, num_steps=10, learning_rate=1e30, halve_every_epochs=None,
                    log_every=1, checkpoint_every=1)
  ck = str(tmp_path / "ck")
  with pytest.raises(TrainingDivergedError, match=r"step 1\b.*last good checkpoint \(step 1\)"):
    train(Exploding(), x, cfg, ck, progress=False)
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.abspath(ck))
  assert mngr.latest_step() == 1
  mngr.close()


def test_bad_training_input():
  with pytest.raises(InvalidInputError, match="does not match"):
    train(ToyBN(), _data(shape=(5, 5, 1)), CFG, progress=False)
  with pytest.raises(InvalidInputError, match="fewer than one batch"):
    train(ToyBN(), _data(n=4), CFG, progress=False)
  with pytest.raises(InvalidInputError, match="uint8"):
    train(ToyBN(), _data().astype(np.float32), CFG, progress=False)


def test_schedule_halves_and_warms_up():
  cfg = TrainConfig(learning_rate=1e-3, halve_every_epochs=2, warmup_steps=0)
  s = learning_rate_schedule(cfg, steps_per_epoch=10)
  assert float(s(0)) == pytest.approx(1e-3)
  assert float(s(19)) == pytest.approx(1e-3)
  assert float(s(20)) == pytest.approx(5e-4)
  assert float(s(45)) == pytest.approx(2.5e-4)
  w = learning_rate_schedule(TrainConfig(learning_rate=1e-3, halve_every_epochs=None,
                                         warmup_steps=10), 10)
  assert float(w(0)) == 0.0 and float(w(5)) == pytest.approx(5e-4) and float(w(50)) == pytest.approx(1e-3)
