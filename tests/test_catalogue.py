"""The experiment catalogue (``python -m ood_jax.experiments``) and ``reproduce``."""

from __future__ import annotations

import json
import os

import pytest

from ood_jax.experiments import __main__ as listing
from ood_jax.experiments import catalogue, reproduce
from ood_jax.registry import Registry


def test_every_entry_names_a_runnable_experiment_and_its_default_command_parses():
  es = catalogue.entries()
  assert {e.module for e in es} >= {"table1", "table2", "table5", "rose_brightness",
                                    "rose_ablations", "runtime"}
  for e in es:
    exp = e.experiment()
    r = exp.make_run(list(e.args) + ["--preset", "smoke"])   # checks every name and setting
    assert r.experiment == e.module
  text = listing.listing()
  for e in es:
    assert e.name in text and e.command in text


@pytest.fixture
def toy(toy_dir, monkeypatch):
  d = toy_dir(size=8, n_test=16)
  fake = Registry("experiment")
  common = ("--id", "toy", "--ood", "noise", "--train-steps", "2", "--n-eval", "16", "--k", "1",
            "--models", "realnvp")
  fake.register("a_nll", catalogue.Entry("a_nll", "table2", "song", "Table X", common))
  fake.register("b_delta", catalogue.Entry("b_delta", "table5", "song", "Table Y",
                                           common + ("--b", "8", "--r2", "0.5")))
  fake.register("c_rose", catalogue.Entry("c_rose", "table2", "rose", "Table Z",
                                          common + ("--scores", "input_complexity")))
  monkeypatch.setattr(catalogue, "CATALOGUE", fake)
  return str(d)


def test_reproduce_runs_everything_writes_index_and_resumes(toy, tmp_path, monkeypatch):
  out = str(tmp_path / "repro")
  argv = ["--preset", "smoke", "--out", out, "--data-dir", toy, "--no-progress", "--only", "song"]
  assert reproduce.main(argv) == 0
  done = json.load(open(os.path.join(out, "done.json")))
  assert list(done) == ["a_nll", "b_delta"] and all(d["status"] == "done" for d in done.values())
  index = open(os.path.join(out, "index.md")).read()
  assert "[a_nll/report.md](a_nll/report.md)" in index and "c_rose" not in index
  for name in ("a_nll", "b_delta"):
    assert os.path.exists(os.path.join(out, name, "report.md"))
  # both share one checkpoint cache: the second reused the first's model
  meta = json.load(open(os.path.join(out, "b_delta", "meta.json")))
  assert meta["models"]["realnvp"]["resumed_from"] == 2
  # a rerun skips what is done and runs what is new
  ran = []
  real = catalogue.Entry.experiment
  def spy(entry):
    exp = real(entry)
    ran.append(entry.name)
    return exp
  monkeypatch.setattr(catalogue.Entry, "experiment", spy)
  calls = []
  import ood_jax.experiments.cli as cli
  real_execute = cli.Experiment.execute
  monkeypatch.setattr(cli.Experiment, "execute", lambda self, r: (calls.append(r.experiment),
                                                                  real_execute(self, r))[1])
  assert reproduce.main(argv[:-1] + ["song,rose"]) == 0
  assert calls == ["table2"]                                  # only c_rose ran
  done = json.load(open(os.path.join(out, "done.json")))
  assert list(done) == ["a_nll", "b_delta", "c_rose"]
  # another seed is another command: it runs again
  assert reproduce.main(argv[:-1] + ["a_nll", "--seed", "1"]) == 0
  assert calls == ["table2", "table2"]
  assert "--seed 1" in json.load(open(os.path.join(out, "done.json")))["a_nll"]["command"]


def test_reproduce_rejects_unknown_papers(toy, tmp_path, capsys):
  assert reproduce.main(["--only", "nosuchpaper", "--out", str(tmp_path / "r")]) == 2
  assert "nosuchpaper" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "r")
