"""`python -m ood_jax.experiments.rose_brightness` end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import rose_brightness


@pytest.fixture
def data_dir(toy_dir):
  return str(toy_dir(lo=60, hi=120))


def test_brightness_end_to_end(data_dir, tmp_path):
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--id", "toy", "--data-dir", data_dir, "--out", out,
          "--train-steps", "4", "--n-eval", "16", "--k", "2", "--no-progress",
          "--scores", "nll,input_complexity", "--ood-base", "id", "--factors", "0.2,1.8"]
  assert rose_brightness.main(argv) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [(r["score"], r["ood"]) for r in rows] == [
      ("nll", "brightness:0.2"), ("nll", "brightness:1.8"),
      ("input_complexity", "brightness:0.2"), ("input_complexity", "brightness:1.8")]
  summary = json.load(open(os.path.join(out, "summary.json")))["auroc_over_factors"]
  for score in ("nll", "input_complexity"):
    a = [r["auroc"] for r in rows if r["score"] == score]
    assert summary[score]["auroc_mean"] == pytest.approx(np.mean(a))
    assert summary[score]["auroc_std"] == pytest.approx(np.std(a))
  # darkening by 0.2 leaves an almost black image: PNG length collapses, IC sees it
  assert [r["auroc"] for r in rows if r["score"] == "input_complexity"][0] != 0.5
  report = open(os.path.join(out, "report.md")).read()
  assert "AUROC over brightness factors" in report and "| input_complexity |" in report
  assert "not ROSE Table 1" in report and "Beside ROSE Table 1" not in report
  assert rose_brightness.main(argv[:-2] + ["--factors", "dim"]) == 2
  assert rose_brightness.main(argv[:-2] + ["--factors", "0.2,0.2"]) == 2


def test_table1_protocol_shifts_the_named_ood_set(data_dir, tmp_path):
  np.savez(os.path.join(data_dir, "other_test.npz"),
           x=np.random.default_rng(2).integers(0, 256, (24, 28, 28, 1), dtype=np.uint8))
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--id", "toy", "--data-dir", data_dir, "--out", out,
          "--train-steps", "4", "--n-eval", "16", "--k", "2", "--no-progress",
          "--scores", "nll", "--ood-base", "other", "--factors", "0.2,1.0"]
  assert rose_brightness.main(argv) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [r["ood"] for r in rows] == ["other+brightness:0.2", "other+brightness:1"]
  report = open(os.path.join(out, "report.md")).read()
  assert "Beside ROSE Table 1 (brightness of other)" in report and "0.883" in report
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["ood_base"] == "other" and meta["factors"] == [0.2, 1.0]


def test_default_factors_and_paper_rows():
  class R:
    def __init__(self, base, factors=None):
      self.options = {"ood_base": base, "factors": factors}
  names = rose_brightness.factor_names(R("id"))
  assert names[0] == "brightness:0.2" and "brightness:1" not in names and len(names) == 8
  names = rose_brightness.factor_names(R("celeb_a"))
  assert len(names) == 9 and "celeb_a+brightness:1" in names
  assert rose_brightness.paper_row("rose", [0.2, 1.0, 1.8]) == (0.954, 0.778, 0.976)
  assert rose_brightness.paper_row("nll", [0.2]) is None
  rose = rose_brightness.PAPER_TABLE1["rose"]
  assert round(float(np.mean(rose)), 3) == 0.883 and round(float(np.std(rose)), 3) == 0.074
