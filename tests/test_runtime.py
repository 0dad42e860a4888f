"""`python -m ood_jax.experiments.runtime` end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import runtime
from ood_jax.scores import SCORERS


@pytest.fixture
def data_dir(tmp_path):
  d = tmp_path / "data"
  d.mkdir()
  x = np.zeros((96, 28, 28, 1), np.uint8)
  x[:, 8:20, 8:20] = np.random.default_rng(0).integers(150, 255, (96, 12, 12, 1))
  np.savez(d / "toy_train.npz", x=x[:64])
  np.savez(d / "toy_test.npz", x=x[64:])
  return str(d)


def test_runtime_end_to_end_and_skips_missing_scores(data_dir, tmp_path, monkeypatch):
  monkeypatch.setitem(SCORERS, "not_yet", "ood_jax.scores.no_such_module:Nope")
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--id", "toy", "--data-dir", data_dir, "--out", out,
          "--train-steps", "4", "--n", "8", "--k", "2", "--no-progress",
          "--scores", "nll,input_complexity,not_yet"]
  assert runtime.main(argv) == 0
  res = json.load(open(os.path.join(out, "results.json")))
  rows = {r["score"]: r for r in res["rows"]}
  assert list(rows) == ["nll", "input_complexity", "not_yet"]
  for name in ("nll", "input_complexity"):
    r = rows[name]
    assert r["status"] == "ok" and r["n"] == 8 and r["img_per_s"] > 0 and r["fit_seconds"] >= 0
  assert rows["not_yet"]["status"] == "skipped" and "no_such_module" in rows["not_yet"]["note"]
  report = open(os.path.join(out, "report.md")).read()
  assert "| nll |" in report and "| not_yet | – |" in report
  assert runtime.main(argv[:-1] + ["nll,bogus"]) == 2


def test_score_entries_with_settings():
  from ood_jax.errors import InvalidInputError
  from ood_jax.experiments.runtime import parse_entry, split_entries
  entries = split_entries("nll, rose[fisher=diag,n_fisher=100],bn_mixed[statistic=t]")
  assert entries == ["nll", "rose[fisher=diag,n_fisher=100]", "bn_mixed[statistic=t]"]
  assert parse_entry(entries[1]) == ("rose", {"fisher": "diag", "n_fisher": 100})
  assert parse_entry(entries[2]) == ("bn_mixed", {"statistic": "t"})
  for bad in ("rose[fisher]", "1abc", "rose[fisher=diag"):
    with pytest.raises(InvalidInputError):
      parse_entry(bad)
