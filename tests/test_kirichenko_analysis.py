"""figures.py and the Kirichenko et al. analysis experiments (couplings, latents, re-sampling)
end to end on tiny local data.

The three experiments share one data dir and one checkpoint cache and use the same tiny
RealNVP (one coupling), so the model trains once and every later run loads it.
"""

import json
import os
import re

import numpy as np
import pytest
from conftest import toy_square_images

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import (figures, kirichenko_couplings, kirichenko_latents,
                                 kirichenko_resample)

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == PNG and os.path.getsize(path) > 1000


def test_image_grid_writes_a_png_and_checks_its_input(tmp_path):
  rng = np.random.default_rng(0)
  rows = {"uint8": rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8),
          "float, two": rng.normal(size=(2, 8, 8)),
          "rgb": rng.random((4, 6, 6, 3))}
  for norm in ("fixed", "row", "image"):
    path = str(tmp_path / f"grid_{norm}.png")
    assert figures.image_grid(path, rows, title="a grid", norm=norm, col_titles=["a", "b"]) == path
    assert _is_png(path)
  path = str(tmp_path / "samples.png")
  figures.samples_grid(path, rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), "samples", cols=4)
  assert _is_png(path)
  bad = [({}, {}), ({"a": np.zeros((2, 8, 8, 2))}, {}), ({"a": np.full((1, 4, 4), np.nan)}, {}),
         (rows, {"norm": "global"}), (rows, {"norm": "row", "vmin": 0.0}),
         (rows, {"col_titles": list("abcdefg")})]
  for r, kw in bad:
    with pytest.raises(InvalidInputError, match="image_grid"):
      figures.image_grid(str(tmp_path / "bad.png"), r, **kw)
  with pytest.raises(InvalidInputError, match="uint8"):
    figures.samples_grid(str(tmp_path / "bad.png"), np.zeros((2, 4, 4, 1)), "x")
  assert not os.path.exists(tmp_path / "bad.png")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """``(data dir, checkpoint dir)``: grey ``toy`` (28 x 28, ID) and ``other`` (OOD)."""
  d = tmp_path_factory.mktemp("data")
  x = toy_square_images(40, 28)
  np.savez(d / "toy_train.npz", x=x[:32])
  np.savez(d / "toy_test.npz", x=x[32:])
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8))
  return str(d), str(tmp_path_factory.mktemp("ckpt"))


def _argv(shared, out, **kw):
  data, ckpt = shared
  a = {"--preset": "smoke", "--pairs": "toy:other", "--data-dir": data, "--ckpt-dir": ckpt,
       "--out": out, "--train-steps": "1", "--n-eval": "4", "--models": "realnvp",
       "--model-args": "num_scales=1,num_couplings=1", "--n-show": "2"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


def _check_report(out) -> tuple[str, list]:
  """The report's text and results; every figure it links exists and is a PNG."""
  report = open(os.path.join(out, "report.md")).read()
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
  assert linked
  for name in linked:
    assert _is_png(os.path.join(out, name)), name
  return report, json.load(open(os.path.join(out, "results.json")))


def test_couplings_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "couplings")
  argv = _argv(shared, out, **{"--variants": "tiny[num_couplings=1]", "--max-layers": "4"})
  assert kirichenko_couplings.main(argv) == 0
  report, rows = _check_report(out)
  assert "couplings_realnvp_toy_toy-ID.png" in report and "couplings_tiny_toy_other.png" in report
  assert "x0 = -t" in report                        # the smoke RealNVP: y = x exp(s) + t
  assert {r["model"] for r in rows} == {"couplings_realnvp_toy", "couplings_tiny_toy"}
  assert {r["set"] for r in rows} == {"toy (ID)", "other"}
  for r in rows:
    assert r["n"] == 4 and r["mse"] >= 0 and r["rel_mse"] >= 0 and r["name"] == "scales_0/coupling0"
  table = kirichenko_couplings.mse_table(rows)
  assert table.count("| 0 | scales_0/coupling0 | checkerboard |") == 2


def test_latents_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "latents")
  argv = _argv(shared, out, **{"--k-avg": "2", "--bn-batch": "4", "--n-stat": "4"})
  assert kirichenko_latents.main(argv) == 0
  report, rows = _check_report(out)
  assert "latents_realnvp_toy.png" in report
  assert [r["set"] for r in rows] == ["toy (ID)", "other"]
  for r in rows:
    for key in ("edge_corr_z", "edge_corr_z_avg", "edge_corr_z_bn_train"):
      assert -1.0 <= r[key] <= 1.0
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["models_trained"]["latents_realnvp_toy"]["resumed_from"] == 1   # shared cache


def test_resample_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "resample")
  argv = _argv(shared, out, **{"--square": "10", "--n-stat": "4", "--n-samples": "4"})
  assert kirichenko_resample.main(argv) == 0
  report, rows = _check_report(out)
  assert "resample_realnvp_toy.png" in report and "samples_realnvp_toy.png" in report
  for r in rows:
    assert r["round_trip_max_abs"] <= 1                 # invertible up to float rounding
    assert r["inside_mean_abs"] > r["outside_mean_abs"]


def test_edge_helpers():
  x = np.zeros((1, 6, 6, 1), np.uint8)
  x[:, :, 3:] = 200
  e = kirichenko_latents.edge_map(x)
  assert e[0, 0, 0] == 0 and e[0, 0, 2] == e[0, 0, 3] == 100
  a = np.arange(12.0).reshape(2, 6)
  np.testing.assert_allclose(kirichenko_latents.pearson(a, 2 * a + 1), [1.0, 1.0])
  assert np.isnan(kirichenko_latents.pearson(np.ones((1, 4)), a[:1, :4]))[0]
  m = np.zeros((6, 6), bool)
  m[2:4, 2:4] = True
  assert kirichenko_resample.grow(m, 1).sum() == 16
  assert kirichenko_couplings.pick_layers(32, 5) == [0, 8, 16, 23, 31]
  assert kirichenko_couplings.short_name("scales_1/channel_coupling2") == "s1 ch2"
  assert kirichenko_couplings.parse_variants("small,b[bottleneck=10]") == {
      "small": {"num_scales": 1, "num_couplings": 2}, "b": {"bottleneck": 10}}


@pytest.mark.parametrize("module, extra, message", [
    (kirichenko_couplings, {"--variants": "bogus"}, "unknown variant 'bogus'"),
    (kirichenko_couplings, {"--models": "vae", "--model-args": "latent_dim=4"}, "not a flow"),
    (kirichenko_couplings, {"--models": "glow", "--model-args": "levels=1"}, "add realnvp"),
    (kirichenko_latents, {"--bn-batch": "1"}, "--bn-batch"),
    (kirichenko_resample, {"--square": "0"}, "--square"),
    (kirichenko_resample, {"--pairs": "toy"}, "--pairs"),
])
def test_bad_options_are_one_clear_error(shared, tmp_path, capsys, module, extra, message):
  out = str(tmp_path / "bad")
  assert module.main(_argv(shared, out, **extra)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(out)
