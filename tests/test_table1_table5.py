"""`python -m ood_jax.experiments.table1` and `table5` end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import table1, table5


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir()
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
  return str(d)


def _args(data_dir, out, ckpt, **kw):
  a = {"--preset": "smoke", "--id": "toy", "--ood": "other", "--data-dir": data_dir,
       "--out": out, "--ckpt-dir": ckpt, "--train-steps": "4", "--n-eval": "16", "--k": "1",
       "--b": "8"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


def test_table1_and_table5_end_to_end(data_dir, tmp_path):
  ckpt = str(tmp_path / "ckpt")
  out1 = str(tmp_path / "t1")
  assert table1.main(_args(data_dir, out1, ckpt, **{"--models": "vae"})) == 0
  rows = json.load(open(os.path.join(out1, "results.json")))
  assert [(r["model"], r["set"]) for r in rows] == [("vae", "toy (ID test)"), ("vae", "other")]
  for r in rows:
    assert r["n"] == 16 and r["delta_mean"] >= 0.0
    assert r["train_minus_eval"] == pytest.approx(r["train_bpd"] - r["eval_bpd"])
    assert 0.0 < r["eval_bpd"] < 10.0 and 0.0 < r["train_bpd"] < 10.0
  report = open(os.path.join(out1, "report.md")).read()
  assert "| vae | other | 16 |" in report
  meta = json.load(open(os.path.join(out1, "meta.json")))
  assert meta["models"]["vae"]["resumed_from"] is None

  out5 = str(tmp_path / "t5")
  args5 = _args(data_dir, out5, ckpt, **{"--r2": "0.5,0.9"})
  assert table5.main(args5) == 0
  rows5 = json.load(open(os.path.join(out5, "results.json")))
  assert [r["score"] for r in rows5] == ["delta_r2=0.5", "delta_r2=0.9"]
  assert all(r["ood"] == "other" and 0.0 <= r["auroc"] <= 1.0 for r in rows5)
  meta5 = json.load(open(os.path.join(out5, "meta.json")))
  assert meta5["models"]["vae"]["resumed_from"] == 4          # table1's checkpoint reused
  assert "delta_r2=0.9" in open(os.path.join(out5, "report.md")).read()


@pytest.mark.parametrize("main, override, message", [
    (table1.main, {"--b": "1"}, "b must be an integer >= 2"),
    (table5.main, {"--r2": "0.5,1.5"}, "r must be in [0, 1]"),
    (table5.main, {"--r2": "x"}, "--r2"),
    (table1.main, {"--rounds": "0"}, "K (Monte-Carlo rounds)"),
    (table1.main, {"--models": "bogusnet"}, "unknown model 'bogusnet'"),
])
def test_bad_input_is_one_clear_error(data_dir, tmp_path, capsys, main, override, message):
  out = str(tmp_path / "out")
  assert main(_args(data_dir, out, str(tmp_path / "ckpt"), **override)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
  assert not os.path.exists(out)
