"""Kirichenko et al. Table 1, masks and bottleneck experiments end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import kirichenko_bottleneck, kirichenko_masks, kirichenko_table1


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir(size=16)
  rng = np.random.default_rng(0)
  np.savez(d / "other_test.npz", x=rng.integers(0, 256, (32, 16, 16, 1), dtype=np.uint8))
  return str(d)


def _args(data_dir, out, **kw):
  a = {"--preset": "smoke", "--pairs": "toy:other+not_mnist,svhn:toy", "--data-dir": data_dir,
       "--out": out, "--train-steps": "3", "--n-eval": "16"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


def test_plan_runs_what_exists_and_says_why_not(data_dir):
  pairs = kirichenko_table1.availability.parse_pairs("toy:other+svhn,svhn:toy")
  runnable, skipped = kirichenko_table1.plan(pairs, data_dir)
  assert runnable == [("toy", ["other"])]
  assert [(s["id"], s["ood"]) for s in skipped] == [("toy", "svhn"), ("svhn", "toy")]
  assert all("not available here" in s["reason"] for s in skipped)
  assert kirichenko_table1.paper_auroc("fashion_mnist", "mnist", "glow") == 13.3
  assert kirichenko_table1.paper_auroc("cifar10", "celeb_a", "realnvp") == 56.0


def test_table1_end_to_end(data_dir, tmp_path):
  out = str(tmp_path / "t1")
  assert kirichenko_table1.main(_args(data_dir, out)) == 0
  table = json.load(open(os.path.join(out, "table1.json")))
  assert [(t["train"], t["ood"], t["model"]) for t in table] == [
      ("toy", "other", "realnvp"), ("toy", "other", "glow")]
  assert all(0 <= t["auroc_percent"] <= 100 and t["paper_auroc_percent"] is None for t in table)
  report = open(os.path.join(out, "report.md")).read()
  assert "svhn (train split) is not available here" in report
  assert "not_mnist (test split) is not available here" in report


def test_no_runnable_pair_is_one_error(data_dir, tmp_path, capsys):
  out = str(tmp_path / "none")
  assert kirichenko_table1.main(_args(data_dir, out, **{"--pairs": "svhn:toy"})) == 2
  assert "no pair has its data here" in capsys.readouterr().err and not os.path.exists(out)


def test_masks_train_one_single_scale_flow_per_mask(data_dir, tmp_path):
  out = str(tmp_path / "masks")
  assert kirichenko_masks.main(_args(data_dir, out, **{"--pairs": "toy:other",
                                                       "--couplings": "2"})) == 0
  summary = json.load(open(os.path.join(out, "masks.json")))
  assert [s["variant"] for s in summary] == ["checkerboard", "horizontal", "cycle"]
  assert all(s["settings"] == {"num_scales": 1, "num_couplings": 2, "mask": s["variant"]}
             for s in summary)
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["couplings"] == 2
  for m in ("checkerboard", "horizontal", "cycle"):
    assert os.path.getsize(os.path.join(out, f"samples_{m}_toy.png")) > 500
  assert kirichenko_masks.main(_args(data_dir, str(tmp_path / "bad"), **{"--masks": "zigzag"})) == 2


def test_bottleneck_variants_and_coupling_figure(data_dir, tmp_path):
  assert kirichenko_bottleneck.variants_for(1, [10, 50], [30]) == {
      "baseline": {"skip": False}, "l10": {"skip": False, "bottleneck": 10},
      "l50": {"skip": False, "bottleneck": 50}}
  assert list(kirichenko_bottleneck.variants_for(3, [10], [30, 80])) == ["baseline", "l30", "l80"]
  out = str(tmp_path / "bn")
  assert kirichenko_bottleneck.main(_args(data_dir, out, **{"--pairs": "toy:other",
                                                            "--grey-dims": "4"})) == 0
  summary = json.load(open(os.path.join(out, "bottleneck.json")))
  assert [s["variant"] for s in summary] == ["baseline", "l4"]
  files = json.load(open(os.path.join(out, ".report-files.json")))
  assert any(f.startswith("couplings_l4_toy") for f in files)


def test_pairs_merge_a_repeated_id_and_transforms_are_available(data_dir):
  parse = kirichenko_table1.availability.parse_pairs
  assert parse("toy:other,toy:rotation+other,b:c") == [("toy", ["other", "rotation"]), ("b", ["c"])]
  runnable, skipped = kirichenko_table1.plan(parse("toy:rotation+other"), data_dir)
  assert runnable == [("toy", ["rotation", "other"])] and not skipped
  assert kirichenko_table1.paper_auroc("FashionMNIST", "mnist", "realnvp") == 10.8   # an alias


def test_for_id_resolves_each_id_sets_recipe(tmp_path):
  """Experiments over several ID sets resolve the grey and the colour recipe per set."""
  np.savez(tmp_path / "greyset_train.npz", x=np.zeros((4, 8, 8, 1), np.uint8))
  np.savez(tmp_path / "colourset_train.npz", x=np.zeros((4, 8, 8, 3), np.uint8))
  r = kirichenko_table1.EXPERIMENT.make_run(["--preset", "cpu", "--data-dir", str(tmp_path),
                                             "--pairs", "greyset:x"])
  assert r.model_preset == "kirichenko_cpu"
  grey = r.for_id("greyset").train_configs["realnvp"]
  colour = r.for_id("colourset").train_configs["realnvp"]
  assert (grey.learning_rate, grey.weight_decay, grey.batch_size) == (5e-5, 0.0, 32)
  assert (colour.learning_rate, colour.weight_decay) == (1e-4, 5e-5)
  assert r.for_id("colourset").train_configs["glow"].optimizer == "rmsprop"
