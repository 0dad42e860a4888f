"""`python -m ood_jax.experiments.table2` end to end on tiny local data, and its errors."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import table2


@pytest.fixture
def data_dir(toy_dir):
  # "toy" in-distribution: dark images with a bright square; OOD "other": bright noise
  d = toy_dir()
  rng = np.random.default_rng(0)
  np.savez(d / "other_test.npz", x=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8))
  np.savez(d / "floaty_test.npz", x=rng.random((8, 28, 28, 1)).astype(np.float32))
  return str(d)


def _args(data_dir, out, **kw):
  a = {"--preset": "smoke", "--id": "toy", "--ood": "other,noise,rotation", "--data-dir": data_dir,
       "--out": out, "--train-steps": "4", "--n-eval": "32", "--k": "2"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


def test_end_to_end_writes_report_and_reuses_checkpoint(data_dir, tmp_path, capsys):
  out = str(tmp_path / "out")
  assert table2.main(_args(data_dir, out)) == 0
  rows = json.load(open(os.path.join(out, "results.json")))
  assert [r["ood"] for r in rows] == ["other", "noise", "rotation"]
  keys = {"id", "model", "score", "ood", "auroc", "auprc_in", "auprc_out", "fpr80", "fpr95",
          "n_id", "n_ood"}
  for r in rows:
    assert set(r) == keys and r["model"] == "vae" and r["score"] == "nll"
    assert 0.0 <= r["auroc"] <= 1.0 and r["n_id"] == 32 and r["n_ood"] == 32
  report = open(os.path.join(out, "report.md")).read()
  assert "| other |" in report and "table2" in report
  for f in ("hist_vae_nll.png", "roc_vae_nll.png", "meta.json"):
    assert os.path.getsize(os.path.join(out, f)) > 1000
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["input_shape"] == [32, 32, 1]          # 28x28 ID resized for the VAE
  assert meta["models"]["vae"]["resumed_from"] is None
  assert meta["models"]["vae"]["bits_per_dim_mean"]["noise"] > 6.0   # noise is ~8 bits/dim
  # the per-image scores behind every AUROC, with the image indices of each seeded subset
  from ood_jax import metrics
  from ood_jax.experiments import score_file
  id_name, scores, indices = score_file.read(os.path.join(out, "scores.npz"))
  assert id_name == "toy" and set(indices) >= {"__id__", "other", "noise", "rotation"}
  s_id = scores[("vae", "nll", "__id__")]
  for r in rows:
    assert np.isclose(metrics.auroc(s_id, scores[("vae", "nll", r["ood"])]), r["auroc"])
  assert len(set(indices["__id__"].tolist())) == 32 and len(indices["rotation"]) == 32
  # a rerun loads the finished checkpoint instead of training, and gives the same table
  assert table2.main(_args(data_dir, out)) == 0
  meta2 = json.load(open(os.path.join(out, "meta.json")))
  assert meta2["models"]["vae"]["resumed_from"] == 4
  assert json.load(open(os.path.join(out, "results.json"))) == rows


@pytest.mark.parametrize("override, message", [
    ({"--id": "nosuchset"}, "nosuchset"),
    ({"--ood": "nosuchood"}, "nosuchood"),
    ({"--scores": "nll,bogus"}, "unknown score 'bogus'"),
    ({"--models": "bogusnet"}, "unknown model 'bogusnet'"),
    ({"--preset": "huge"}, "unknown preset 'huge'"),
    ({"--ood": "floaty"}, "uint8"),
    ({"--ood": "toy+spin"}, "spin"),
    ({"--ood": ""}, "no OOD sets"),
    ({"--ood": "overall"}, "equal mix"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(data_dir, tmp_path, capsys, override,
                                                         message):
  out = str(tmp_path / "out")
  assert table2.main(_args(data_dir, out, **override)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
  assert len(err.strip().splitlines()) == 1 or "Looked in" in err   # not-found lists places
  assert not os.path.exists(out)


def test_overall_is_an_equal_mix_of_the_other_sets(data_dir):
  from ood_jax.experiments import pipeline
  sets = pipeline.load_sets("toy", ["other", "noise", "overall"], ["vae"], data_dir=data_dir,
                            n_train=None, n_eval=20, seed=0)
  assert list(sets.ood) == ["other", "noise", "overall"]
  mixed = sets.ood["overall"].x
  assert mixed.shape == (20, 32, 32, 1)                   # 10 of each, conformed like the rest
  rows = {r.tobytes() for r in mixed}
  for name in ("other", "noise"):
    assert sum(r.tobytes() in rows for r in sets.ood[name].x) == 10


def test_models_of_different_input_sizes_share_one_table(data_dir, tmp_path):
  """The VAE takes 32x32 (the 28x28 ID data resized), RealNVP the native 28x28: each model
  gets the sets conformed to its own input shape, in one table."""
  out = str(tmp_path / "out")
  assert table2.main(_args(data_dir, out, **{"--models": "vae,realnvp",
                                             "--ood": "noise", "--train-steps": "2"})) == 0
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["input_shape"] == {"vae": [32, 32, 1], "realnvp": [28, 28, 1]}
  assert meta["models"]["vae"]["input_shape"] == [32, 32, 1]
  assert meta["models"]["realnvp"]["input_shape"] == [28, 28, 1]
  rows = json.load(open(os.path.join(out, "results.json")))
  assert sorted(r["model"] for r in rows) == ["realnvp", "vae"]
