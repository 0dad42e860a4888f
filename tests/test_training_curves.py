"""The training loop's checkpoint callback and ``EvalCurve`` (Nalisnick et al. Fig. 4d): called
at every checkpoint, one compilation for the whole run, resume continues the curve exactly; and
the ``nalisnick_training_curves`` experiment end to end."""

import json
import math
import os

import jax
import numpy as np
import pytest
from jax._src.dispatch import BACKEND_COMPILE_EVENT

from conftest import toy_pairs_dir
from ood_jax.errors import CheckpointError, InvalidInputError
from ood_jax.train import TrainConfig, train
from ood_jax.train.loop import CURVE_FILE, EvalCurve, rngs_for
from toy_models import GaussDensity, ToyBN

CFG = TrainConfig(batch_size=8, num_steps=7, learning_rate=1e-2, halve_every_epochs=None,
                  log_every=2, checkpoint_every=3)


def _data(n=40, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)


def _sets(x):
  return {"a": x[:10], "b": x[10:33]}


class _Compiles:
  """Counts XLA backend compilations while active."""

  def __enter__(self):
    self.n = 0
    self._fn = lambda name, secs, **kw: setattr(self, "n", self.n + (name == BACKEND_COMPILE_EVENT))
    jax.monitoring.register_event_duration_secs_listener(self._fn)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._fn)


def test_callback_is_called_at_every_checkpoint_with_its_steps(tmp_path):
  x = _data()
  calls = []
  record = lambda s, v: calls.append((s, jax.device_get(v)))
  full = train(ToyBN(), x, CFG, progress=False, on_checkpoint=record)     # no ckpt_dir: same steps
  assert [s for s, _ in calls] == [0, 3, 6, 7]
  for a, b in zip(jax.tree.leaves(calls[-1][1]), jax.tree.leaves(full.variables)):
    np.testing.assert_array_equal(a, np.asarray(b))                   # the step-7 variables
  assert not np.allclose(jax.tree.leaves(calls[0][1]["params"])[0],
                         jax.tree.leaves(calls[1][1]["params"])[0])   # step 0: the initial ones
  ck = str(tmp_path / "ck")
  steps = []
  train(ToyBN(), x, CFG, ck, progress=False, stop_after=5,
        on_checkpoint=lambda s, v: steps.append(s))
  assert steps == [0, 3]                                             # none at the stop_after end
  train(ToyBN(), x, CFG, ck, progress=False, on_checkpoint=lambda s, v: steps.append(s))
  assert steps == [0, 3, 3, 6, 7]                                    # restored step, then the rest
  train(ToyBN(), x, CFG, ck, progress=False, on_checkpoint=lambda s, v: steps.append(s))
  assert steps[5:] == [7]                                            # finished: only the start
  with pytest.raises(InvalidInputError, match="on_checkpoint must be a function"):
    train(ToyBN(), x, CFG, progress=False, on_checkpoint=3)


def test_eval_curve_compiles_once_and_gives_the_padded_chunk_means():
  x = _data()
  curve = EvalCurve(ToyBN(), _sets(x), chunk_size=8)
  per_call, fresh = [], []

  def measured(step, variables):
    with _Compiles() as c:
      curve(step, variables)
    per_call.append(c.n)

  def recompiling(step, variables):          # control: a new jitted function per checkpoint
    with _Compiles() as c:
      jax.block_until_ready(jax.jit(lambda v: jax.tree.map(lambda a: a * 2.0, v))(variables))
    fresh.append(c.n)

  result = train(ToyBN(), x, CFG, progress=False,
                 on_checkpoint=lambda s, v: (measured(s, v), recompiling(s, v)))
  assert curve.steps == [0, 3, 6, 7]
  assert per_call[0] >= 1 and per_call[1:] == [0, 0, 0], per_call
  assert curve.traces == 1
  assert all(n >= 1 for n in fresh), fresh     # the counter sees per-checkpoint compilations
  # the last point by hand: chunks of 8 (the last one padded, the padding dropped), chunk i of
  # set j with fold_in(fold_in(PRNGKey(0), j), i)
  key = jax.random.PRNGKey(0)
  for j, (name, xs) in enumerate(_sets(x).items()):
    losses = []
    for i, start in enumerate(range(0, len(xs), 8)):
      rng = jax.random.fold_in(jax.random.fold_in(key, j), i)
      part = xs[start:start + 8]
      padded = np.concatenate([part, np.repeat(part[:1], 8 - len(part), axis=0)])
      out = ToyBN().apply(result.variables, padded, train=False, rngs=rngs_for(rng))
      losses.append(np.asarray(out)[:len(part)])
    mean = float(np.mean(np.concatenate(losses).astype(np.float64)))
    assert curve.points[-1]["loss"][name] == pytest.approx(mean, rel=1e-6)
    bpd = curve.points[-1]["bits_per_dim"][name]
    assert bpd == pytest.approx(mean / (16 * math.log(2)), rel=1e-6)


def test_resumed_run_continues_the_curve_identically(tmp_path):
  x = _data()
  full_dir, ck = str(tmp_path / "full"), str(tmp_path / "killed")
  train(ToyBN(), x, CFG, full_dir, progress=False,
        on_checkpoint=EvalCurve(ToyBN(), _sets(x), os.path.join(full_dir, CURVE_FILE)))
  full = EvalCurve.read(os.path.join(full_dir, CURVE_FILE))
  assert [p["step"] for p in full] == [0, 3, 6, 7]
  path = os.path.join(ck, CURVE_FILE)
  train(ToyBN(), x, CFG, ck, progress=False, stop_after=5,
        on_checkpoint=EvalCurve(ToyBN(), _sets(x), path))             # "killed" after step 5
  assert [p["step"] for p in EvalCurve.read(path)] == [0, 3]
  saved = json.load(open(path))                                      # killed after the step-3
  saved["points"] = saved["points"][:1]                              # save, before the JSON write
  json.dump(saved, open(path, "w"))
  resumed = EvalCurve(ToyBN(), _sets(x), path)                       # a new process
  train(ToyBN(), x, CFG, ck, progress=False, on_checkpoint=resumed)
  assert resumed.traces == 1 and EvalCurve.read(path) == full        # the same points, exactly
  again = EvalCurve(ToyBN(), _sets(x), path)                         # finished: nothing to compute
  train(ToyBN(), x, CFG, ck, progress=False, on_checkpoint=again)
  assert again.traces == 0 and again.points == full
  other = EvalCurve(ToyBN(), {"a": x[:12]}, path)                    # other eval sets: no mixing
  with pytest.raises(CheckpointError, match="other eval sets"):
    train(ToyBN(), x, CFG, ck, progress=False, on_checkpoint=other)
  fresh_dir = str(tmp_path / "fresh")
  os.makedirs(fresh_dir)
  json.dump(saved, open(os.path.join(fresh_dir, CURVE_FILE), "w"))   # stale curve, no checkpoint
  replaced = EvalCurve(ToyBN(), {"a": x[:12]}, os.path.join(fresh_dir, CURVE_FILE))
  train(ToyBN(), x, CFG, fresh_dir, progress=False, on_checkpoint=replaced)
  assert [p["step"] for p in EvalCurve.read(os.path.join(fresh_dir, CURVE_FILE))] == [0, 3, 6, 7]
  assert list(replaced.points[0]["loss"]) == ["a"]


def test_eval_curve_bad_input_is_one_clear_error():
  x = _data()
  with pytest.raises(InvalidInputError, match="non-empty dict"):
    EvalCurve(ToyBN(), {})
  with pytest.raises(InvalidInputError, match="eval set 'b'"):
    EvalCurve(ToyBN(), {"a": x[:4], "b": x[:4, :2, :2]})
  with pytest.raises(InvalidInputError, match="chunk_size"):
    EvalCurve(ToyBN(), {"a": x[:4]}, chunk_size=0)








@pytest.mark.slow
def test_experiment_smoke_records_the_curve_and_reads_it_back(tmp_path, gauss_model):
  from ood_jax.experiments import nalisnick_training_curves as exp
  d = toy_pairs_dir(tmp_path)
  out = str(tmp_path / "out")
  args = ["--preset", "smoke", "--pairs", "toy:other+nosuchset", "--data-dir", str(d), "--out", out,
          "--models", gauss_model, "--train-steps", "20", "--points", "4", "--n-eval", "32",
          "--train-args", "batch_size=16,lr=0.03", "--no-progress"]
  assert exp.main(args) == 0
  for f in ("report.md", "results.json", "meta.json", "curves.json", "fig4d_toy_gauss_toy.png"):
    assert os.path.getsize(os.path.join(out, f)) > 100
  curves = json.load(open(os.path.join(out, "curves.json")))
  c = curves["toy_gauss_toy"]
  assert [p["step"] for p in c["points"]] == [0, 5, 10, 15, 20] and c["missing_steps"] == []
  assert set(c["points"][-1]["bits_per_dim"]) == {"id_train", "id_test", "other"}
  bpd = [p["bits_per_dim"]["id_test"] for p in c["points"]]
  assert bpd[-1] < bpd[0] - 0.05                      # the curve follows the training
  assert set(c["crossings"]["other"]) == {"crossings_vs_id_test", "crossings_vs_id_train",
                                          "ood_below_id_test_from_step",
                                          "ood_below_id_test", "checkpoints"}
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["models"]["toy_gauss_toy"]["eval_traces"] == 1
  assert meta["skipped"] and meta["skipped"][0]["ood"] == "nosuchset"
  ckpt = meta["models"]["toy_gauss_toy"]["checkpoint"]
  assert "curve_e5_" in ckpt and os.path.exists(os.path.join(ckpt, CURVE_FILE))
  report = open(os.path.join(out, "report.md")).read()
  assert "bits/dim at every checkpoint" in report and "crossings with ID test" in report
  assert exp.main(args) == 0                                         # finished: read back
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["models"]["toy_gauss_toy"]["eval_traces"] == 0
  assert meta["models"]["toy_gauss_toy"]["resumed_from"] == 20
  assert json.load(open(os.path.join(out, "curves.json")))["toy_gauss_toy"]["points"] == c["points"]


def test_experiment_bad_options_are_one_clear_error(tmp_path, capsys):
  from ood_jax.experiments import nalisnick_training_curves as exp
  d = toy_pairs_dir(tmp_path)
  out = str(tmp_path / "out")
  base = ["--preset", "smoke", "--pairs", "toy:other", "--data-dir", str(d), "--out", out]
  for extra, message in ((["--points", "0"], "--points must be >= 1"),
                         (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 1"),
                         (["--pairs", "toy"], "expected 'id:ood+ood,id:ood'")):
    assert exp.main(base + extra) == 2
    assert message in capsys.readouterr().err
  assert not os.path.exists(out)


def test_crossings_are_found_between_checkpoints():
  from ood_jax.experiments.nalisnick_training_curves import crossings, expected_steps
  assert crossings([1, 2, 3], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == []
  assert crossings([1, 2, 3, 4], [1.0, 3.0, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0]) == [[1, 2], [3, 4]]
  assert crossings([1, 2], [1.0, None], [2.0, 0.0]) == []
  assert expected_steps(20, 5) == [0, 5, 10, 15, 20] and expected_steps(7, 3) == [0, 3, 6, 7]


def test_curve_summary_counts_the_checkpoints_below_the_id_test_curve():
  from ood_jax.experiments.nalisnick_training_curves import curve_summary
  pts = [{"step": s, "bits_per_dim": {"id_train": t, "id_test": t + 0.1, "o": o}}
         for s, t, o in ((0, 5.0, 4.0), (2, 4.0, 4.5), (4, 3.0, 2.0), (6, 2.5, 1.5))]
  s = curve_summary(pts, {"id_train": "", "id_test": "", "o": ""}, ["o"])["o"]
  assert s == {"ood_below_id_test_from_step": 4, "crossings_vs_id_test": [[2, 4]],
               "crossings_vs_id_train": [[2, 4]], "ood_below_id_test": 2, "checkpoints": 3}
