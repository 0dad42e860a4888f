"""`python -m ood_jax.experiments.rose_capacity` (ROSE Table 3): widths -> ngf, training
steps per width, the paper's numbers, and the wiring end to end with training and scoring
replaced by fakes (no compile); the real thing on toy data is the slow test."""

import json
import os
import types

import numpy as np
import pytest

from conftest import slow_only, toy_square_images
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import pipeline, rose_capacity as rc
from ood_jax.train import TrainResult


def test_widths_map_to_the_right_ngf():
  assert rc.widths(rc.DEFAULT_WIDTHS) == [0.5, 1.0, 2.0, 4.0]
  for preset in ("cpu", "paper"):
    grey, colour = rc.base_ngf(preset, 1), rc.base_ngf(preset, 3)
    assert rc.width_ngfs(rc.widths(rc.DEFAULT_WIDTHS), grey) == {0.5: 16, 1.0: 32, 2.0: 64,
                                                                 4.0: 128}
    assert rc.width_ngfs(rc.widths(rc.DEFAULT_WIDTHS), colour) == {0.5: 32, 1.0: 64, 2.0: 128,
                                                                   4.0: 256}
  assert rc.base_ngf("smoke", 1) == 8
  assert rc.run_widths(_run()) == rc.run_widths(_run("paper")) == [0.5, 1.0, 2.0, 4.0]
  assert rc.run_widths(_run("smoke")) == [0.5, 1.0]
  assert rc.run_widths(_run("smoke", widths="2")) == [2.0]
  assert rc.base_ngf("cpu", 1, {"ngf": 10}) == 10                 # --model-args ngf=10
  for bad in ("", "0,1", "1,1", "a"):
    with pytest.raises(InvalidInputError, match="--widths"):
      rc.widths(bad)
  with pytest.raises(InvalidInputError, match="below one channel"):
    rc.width_ngfs([0.01, 1.0], 32)
  with pytest.raises(InvalidInputError, match="same ngf"):
    rc.width_ngfs([1.0, 1.01], 32)


def _run(preset="cpu", width_steps=None, train_steps=None, train_args=None, oods=rc.TABLE3_OODS,
         id_name="fashion_mnist", widths=None):
  return types.SimpleNamespace(preset=preset, options={"width_steps": width_steps, "widths": widths},
                               train_steps=train_steps, train_args=train_args or {},
                               oods=tuple(oods), id=id_name, data_dir=None)


def test_width_steps():
  ws = [0.5, 1.0, 2.0, 4.0]
  assert rc.width_steps(_run(), ws) == {w: 500 for w in ws}           # the cpu default
  assert rc.width_steps(_run("paper"), ws) == {} == rc.width_steps(_run("smoke"), ws)
  assert rc.width_steps(_run(train_steps=7), ws) == {}
  assert rc.width_steps(_run(train_args={"epochs": 1.0}), ws) == {}
  assert rc.width_steps(_run(width_steps="4:300,2:600"), ws) == {4.0: 300, 2.0: 600}
  assert rc.width_steps(_run("paper", width_steps="50"), ws) == {w: 50 for w in ws}
  assert rc.width_steps(_run(width_steps="none"), ws) == {}
  for bad in ("3:10", "4:0", "4:x"):
    with pytest.raises(InvalidInputError, match="--width-steps"):
      rc.width_steps(_run(width_steps=bad), ws)


def test_paper_numbers_and_default_oods(monkeypatch):
  assert [rc.paper_auroc("fashion_mnist", "mnist", w, "rose") for w in rc.PAPER_WIDTHS] == [
      0.997, 0.995, 0.991, 0.988]
  assert rc.paper_auroc("cifar10", "svhn", 1, "rose") == 0.907
  assert rc.paper_auroc("fashion_mnist", "mnist", 1, "nll") is None
  assert rc.paper_auroc("fashion_mnist", "mnist", 1, "rose[fisher=diag]") == 0.995
  assert rc.paper_auroc("fashion_mnist", "mnist", 3, "rose") is None
  assert rc.paper_auroc("svhn", "mnist", 1, "rose") is None
  assert set(rc.PAPER["fashion_mnist"]) == set(rc.PAPER["cifar10"]) == set(rc.TABLE3_OODS)
  # the default Table 3 list runs what is here and lists the rest; --ood sets are all run
  here = {"mnist", "noise"}
  monkeypatch.setattr(rc.availability, "missing",
                      lambda name, split, d: None if name in here else f"{name} is not here")
  run, skipped = rc.ood_sets(_run())
  assert run == ["mnist", "noise"] and [s["ood"] for s in skipped] == [
      "kmnist", "not_mnist", "svhn", "celeb_a", "lsun", "constant"]
  assert rc.ood_sets(_run(oods=("kmnist",))) == (["kmnist"], [])
  here.clear()
  with pytest.raises(InvalidInputError, match="give --ood"):
    rc.ood_sets(_run())


@pytest.fixture
def fmnist_dir(tmp_path):
  d = tmp_path / "data"
  d.mkdir()
  x = toy_square_images(96, 28)
  np.savez(d / "fashion_mnist_train.npz", x=x[:64])
  np.savez(d / "fashion_mnist_test.npz", x=x[64:])
  np.savez(d / "mnist_test.npz", x=toy_square_images(32, 28, lo=0, hi=90, seed=1))
  return str(d)


def test_one_row_per_width_ood_score_and_paper_numbers(fmnist_dir, tmp_path, monkeypatch):
  calls = []

  def fake_train(r, name, sets, overrides=None, label="", config=None):
    model = r.make_model(name, sets.hwc, **overrides)
    calls.append({"ngf": model.ngf, "label": label, "steps": config.num_steps,
                  "ckpt": r.checkpoint_dir(name, model, sets.train, config, label=label)})
    result = TrainResult(variables={}, step=config.num_steps, resumed_from=None, history=[],
                         seconds=0.0)
    return pipeline.Trained(name=name, model=model, result=result, config=config,
                            ckpt_dir=calls[-1]["ckpt"])

  def fake_scores(r, trained, sets):
    rng = np.random.default_rng(trained.model.ngf)
    return {s: {"__id__": rng.normal(size=len(sets.test.x)),
                **{n: rng.normal(1.0, size=len(o.x)) for n, o in sets.ood.items()}}
            for s in r.scores}

  monkeypatch.setattr(pipeline, "train_or_load", fake_train)
  monkeypatch.setattr(pipeline, "score_all", fake_scores)
  monkeypatch.setattr(pipeline, "samples_for", lambda *a, **k: {})   # no per-width histograms
  out = str(tmp_path / "out")
  argv = ["--preset", "cpu", "--data-dir", fmnist_dir, "--out", out, "--no-progress",
          "--ood", "mnist,noise,constant", "--n-eval", "16"]
  assert rc.main(argv) == 0
  # every width trained once, grey ngf 16 / 32 / 64 / 128, 500 steps each (the cpu default),
  # width 1 under table2's label, four different checkpoint directories
  assert [c["ngf"] for c in calls] == [16, 32, 64, 128]
  assert [c["label"] for c in calls] == ["ngf16", "", "ngf64", "ngf128"]
  assert {c["steps"] for c in calls} == {500} and len({c["ckpt"] for c in calls}) == 4
  rows = json.load(open(os.path.join(out, "results.json")))
  keys = [(r["model"], r["score"], r["ood"]) for r in rows]
  assert len(keys) == len(set(keys)) == 4 * 2 * 3
  assert set(keys) == {(f"vae_x{w}", s, o) for w in ("0.5", "1", "2", "4")
                       for s in ("rose", "nll") for o in ("mnist", "noise", "constant")}
  table = json.load(open(os.path.join(out, "capacity.json")))["rows"]
  mnist = {t["width"]: t["paper_auroc"] for t in table if (t["score"], t["ood"]) == ("rose", "mnist")}
  assert mnist == {0.5: 0.997, 1.0: 0.995, 2.0: 0.991, 4.0: 0.988}
  assert all(t["paper_auroc"] is None for t in table if t["score"] == "nll")
  report = open(os.path.join(out, "report.md")).read()
  assert "AUROC vs VAE width (ROSE Table 3)" in report and "x4 (ngf 128)" in report
  line = next(l for l in report.splitlines() if l.startswith("| mnist |") and "0.997" in l)
  assert "| 0.997 | 0.995 | 0.991 | 0.988 | 0.009 |" in line
  assert os.path.getsize(os.path.join(out, "auroc_vs_width.png")) > 1000
  with np.load(os.path.join(out, "scores.npz")) as z:             # the raw scores behind it
    assert len([k for k in z.files if "vae_x4" in k]) >= 2 * 4       # 2 scores x (ID + 3 OOD)
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["ngf"] == {"0.5": 16, "1": 32, "2": 64, "4": 128} and meta["ngf_1"] == 32
  # bad input: one error, nothing trained
  calls.clear()
  assert rc.main(argv + ["--widths", "0"]) == 2
  assert rc.main(argv + ["--width-steps", "3:5"]) == 2
  assert calls == []


@slow_only
def test_end_to_end_on_toy_data(fmnist_dir, tmp_path):
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--data-dir", fmnist_dir, "--out", out, "--no-progress",
          "--ood", "mnist,noise", "--n-eval", "16", "--k", "2", "--widths", "0.5,1",
          "--width-steps", "3", "--scores", "nll,rose[n_fisher=16,n_norm=16]"]
  assert rc.main(argv) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert len(rows) == 2 * 2 * 2
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert [meta["models"][f"vae_x{w}"]["train_steps"] for w in ("0.5", "1")] == [3, 3]
  assert meta["ngf"] == {"0.5": 4, "1": 8}
