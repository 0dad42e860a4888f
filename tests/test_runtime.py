"""`python -m ood_jax.experiments.runtime` end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import runtime


@pytest.fixture
def data_dir(toy_dir):
  return str(toy_dir())


def test_runtime_end_to_end_and_skips_scores_that_cannot_run(data_dir, tmp_path):
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--id", "toy", "--data-dir", data_dir, "--out", out,
          "--train-steps", "4", "--n", "8", "--k", "2", "--no-progress",
          "--scores", "nll,input_complexity,bn_mixed[b=8]", "--models", "glow"]
  assert runtime.main(argv) == 0
  res = json.load(open(os.path.join(out, "results.json")))
  rows = {r["score"]: r for r in res["rows"]}
  assert list(rows) == ["nll", "input_complexity", "bn_mixed[b=8]"]
  for name in ("nll", "input_complexity"):
    r = rows[name]
    assert r["status"] == "ok" and r["n"] == 8 and r["img_per_s"] > 0 and r["fit_seconds"] >= 0
  assert rows["bn_mixed[b=8]"]["status"] == "skipped"          # Glow has no BatchNorm
  assert "BatchNorm" in rows["bn_mixed[b=8]"]["note"]
  report = open(os.path.join(out, "report.md")).read()
  assert "| glow | nll |" in report and "| glow | bn_mixed[b=8] | – |" in report
  assert runtime.main(argv[:-3] + ["nll,bogus"]) == 2
  assert runtime.main(argv[:-3] + ["rose[fishr=diag]"]) == 2


def test_score_entries_with_settings():
  from ood_jax.errors import InvalidInputError
  from ood_jax.experiments.settings import parse_entry, split_top_level
  entries = split_top_level("nll, rose[fisher=diag,n_fisher=100],bn_mixed[statistic=t]")
  assert entries == ["nll", "rose[fisher=diag,n_fisher=100]", "bn_mixed[statistic=t]"]
  assert parse_entry(entries[1]) == ("rose", {"fisher": "diag", "n_fisher": 100})
  assert parse_entry(entries[2]) == ("bn_mixed", {"statistic": "t"})
  for bad in ("rose[fisher]", "1abc", "rose[fisher=diag"):
    with pytest.raises(InvalidInputError):
      parse_entry(bad)
