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
          "--scores", "nll,input_complexity", "--factors", "0.2,1.8"]
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
  assert rose_brightness.main(argv[:-2] + ["--factors", "dim"]) == 2


def test_default_factors_skip_identity():
  names = rose_brightness.factor_names(rose_brightness.DEFAULT_FACTORS)
  assert names[0] == "brightness:0.2" and "brightness:1" not in names and len(names) == 8
