"""Nalisnick et al. code statistics (``code_stats``) on a tiny CV-Glow against a direct
computation, and the three experiments (``nalisnick_statistics``, ``nalisnick_graying``,
``nalisnick_codes``) end to end on tiny local data.

The two model experiments share one data dir and one checkpoint cache and the same tiny
CV-Glow, so the model trains once (in the graying run) and the codes run loads it.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import (code_stats, nalisnick_codes, nalisnick_graying,
                                 nalisnick_statistics)
from ood_jax.models.flows import views
from ood_jax.models.flows.glow import make_cv_glow

PNG = b"\x89PNG\r\n\x1a\n"
TINY = "levels=1,steps=1,hidden=8"


def _is_png(path) -> bool:
  with open(path, "rb") as f:
    return f.read(8) == PNG and os.path.getsize(path) > 1000


def _report(out) -> tuple[str, object]:
  """The report's text and results.json; every linked figure exists and is a PNG."""
  report = open(os.path.join(out, "report.md")).read()
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
  assert linked
  for name in linked:
    assert _is_png(os.path.join(out, name)), name
  return report, json.load(open(os.path.join(out, "results.json")))


# ----------------------------------------------------------------------------- code statistics


def test_code_statistics_by_hand():
  z = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
  st = code_stats.code_statistics(z)
  np.testing.assert_allclose(st["mean"], [3.0, 5.0])
  np.testing.assert_allclose(st["std"], [2.0, np.sqrt(13.0)])            # 1/(N-1)
  np.testing.assert_allclose(st["norm"], np.sqrt([5 / 2, 25 / 2, 106 / 2]))
  s = code_stats.summary(st)
  assert s["D"] == 2 and s["N"] == 3 and s["mean_of_mu"] == 4.0
  assert s["mean_of_sigma"] == pytest.approx((2 + np.sqrt(13)) / 2)
  with pytest.raises(InvalidInputError, match="N >= 2"):
    code_stats.code_statistics(z[:1])
  with pytest.raises(InvalidInputError, match="NaN"):
    code_stats.code_statistics(np.array([[1.0], [np.nan]]))


def _random_variables(model, x, scale=0.3, seed=3):
  """Concrete variables of ``model`` from an abstract ``init`` (no compile): small random
  parameters around the identity (1x1-conv LU factors, ActNorm scales around 1)."""
  rngs = {"params": jax.random.PRNGKey(0), "dequant": jax.random.PRNGKey(1)}
  abstract = jax.eval_shape(lambda: model.init(rngs, x, True))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(k, "key", "") for k in path]
    noise = scale * rng.standard_normal(leaf.shape).astype(np.float32)
    if "actnorm" in names and names[-1] == "scale":
      return jnp.asarray(1.0 + noise)
    return jnp.asarray(noise)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.slow
def test_codes_of_a_tiny_cv_glow_match_a_direct_computation():
  model = make_cv_glow("smoke", (8, 8, 3), steps=1, hidden=4)      # 2 levels: a split latent
  x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
  variables = _random_variables(model, x)
  key = jax.random.PRNGKey(5)
  z = code_stats.codes(model, variables, x, rng=key, batch=6)
  assert z.shape == (6, 8 * 8 * 3) and z.dtype == np.float32
  # direct: encode_unit on the same dequantised pixels, latents flattened and concatenated
  y = views.dequantize(x, jax.random.fold_in(key, 0))
  eps, _, _ = jax.jit(lambda v, y_: model.apply(v, y_, False, method=model.encode_unit))(
      variables, y)
  assert len(eps) == 2
  direct = np.concatenate([np.asarray(e).reshape(6, -1) for e in eps], axis=1).astype(np.float64)
  n, d = direct.shape
  mean = np.array([sum(direct[:, j]) / n for j in range(d)])
  std = np.array([np.sqrt(sum((direct[:, j] - mean[j]) ** 2) / (n - 1)) for j in range(d)])
  norm = np.array([np.sqrt(sum(direct[i] ** 2) / d) for i in range(n)])
  st = code_stats.code_statistics(z)
  np.testing.assert_allclose(st["norm"], norm, rtol=1e-5)                 # per image
  np.testing.assert_allclose(np.sort(st["mean"]), np.sort(mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sort(st["std"]), np.sort(std), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sort(z, axis=1), np.sort(direct, axis=1), rtol=1e-5, atol=1e-6)
  # the image-space order: code d of the unsqueezed latent is pixel d's entry
  np.testing.assert_allclose(z, views.join_latents(model, eps).reshape(6, -1), rtol=1e-6)
  # chunks: 4 + 2 (padded), the same codes; bin centres without rng
  np.testing.assert_allclose(code_stats.codes(model, variables, x, rng=key, batch=4)[:4], z[:4],
                             rtol=1e-5, atol=1e-6)
  centres = code_stats.codes(model, variables, x, batch=6)
  assert not np.allclose(centres, z)
  with pytest.raises(InvalidInputError, match="uint8"):
    code_stats.codes(model, variables, x.astype(np.float32))


# ----------------------------------------------------------------------------- experiments


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """``(data dir, checkpoint dir)``: ``ctoy`` (8 x 8 x 3, ID) and ``cother`` (OOD), and grey
  ``gtoy`` / ``gother`` (8 x 8 x 1)."""
  d = tmp_path_factory.mktemp("data")
  rng = np.random.default_rng(0)
  for c, p in ((3, "c"), (1, "g")):
    np.savez(d / f"{p}toy_train.npz", x=rng.integers(60, 200, (32, 8, 8, c), dtype=np.uint8))
    np.savez(d / f"{p}toy_test.npz", x=rng.integers(60, 200, (8, 8, 8, c), dtype=np.uint8))
    np.savez(d / f"{p}other_test.npz", x=rng.integers(0, 256, (8, 8, 8, c), dtype=np.uint8))
  return str(d), str(tmp_path_factory.mktemp("ckpt"))


def _argv(shared, out, **kw):
  data, ckpt = shared
  a = {"--preset": "smoke", "--data-dir": data, "--ckpt-dir": ckpt, "--out": out,
       "--train-steps": "1", "--n-eval": "6", "--model-args": TINY}
  a.update(kw)
  return [t for k, v in a.items() if v is not None for t in (k, v)] + ["--no-progress"]


def test_statistics_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "stats")
  data, _ = shared
  argv = ["--preset", "smoke", "--data-dir", data, "--out", out, "--no-progress",
          "--sets", "ctoy@train,gtoy@test,svhn,noise,constant:128", "--shapes", "8x8x3,4x4x1"]
  assert nalisnick_statistics.main(argv) == 0
  report, rows = _report(out)
  for f in ("stats_8x8x3_mean.png", "stats_8x8x3_var.png", "stats_4x4x1_mean.png",
            "stats_4x4x1_var.png"):
    assert f in report
  assert "svhn (test): svhn (test split) is not available here" in report
  by = {(r["shape"], r["set"]): r for r in rows}
  assert set(by) == {(s, n) for s in ("8x8x3", "4x4x1")
                     for n in ("ctoy (train)", "gtoy (test)", "noise", "constant:128")}
  c = by[("8x8x3", "constant:128")]
  assert c["mean_mu"] == 0.5 and c["mean_var"] == 0.0 and c["var_sum_per_channel"] == [0, 0, 0]
  assert c["n"] == 500                                  # the smoke preset's synthetic size
  assert abs(by[("8x8x3", "noise")]["mean_var"] - (256 ** 2 - 1) / 12 / 256 ** 2) < 0.01
  assert by[("8x8x3", "ctoy (train)")]["n"] == 32 and by[("4x4x1", "gtoy (test)")]["D"] == 16
  assert by[("8x8x3", "ctoy (train)")]["max_abs_mean_diff_vs_reference_levels"] == 0.0
  stats = json.load(open(os.path.join(out, "statistics.json")))
  counts = stats["histograms"]["8x8x3"]["mean"]["counts"]["ctoy (train)"]
  assert sum(counts) == 8 * 8 * 3
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["skipped"] == [{"set": "svhn (test)", "reason": "svhn (test split) is not available here"}]


@pytest.mark.slow
def test_graying_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "gray")
  argv = _argv(shared, out, **{"--id": "ctoy", "--ood": "cother,svhn", "--models": "cv_glow",
                               "--alphas": "1,0.5,0.1"})
  assert nalisnick_graying.main(argv) == 0
  report, rows = _report(out)
  for f in ("graying_curve.png", "graying_hist_cv_glow.png", "graying_codes_cv_glow.png",
            "graying_examples.png"):
    assert f in report
  assert "OOD svhn: svhn (test split) is not available here" in report
  assert [(r["set"], r["alpha"]) for r in rows] == [
      (s, a) for a in (1.0, 0.5, 0.1) for s in ("ctoy test (ID)", "cother")]
  bpd = {(r["set"], r["alpha"]): r["mean_bits_per_dim"] for r in rows}
  for s in ("ctoy test (ID)", "cother"):
    assert bpd[(s, 0.1)] < bpd[(s, 1.0)]       # near the identity a flow favours gray images
  res = json.load(open(os.path.join(out, "graying.json")))
  codes = {(c["set"], c["alpha"]): c for c in res["codes"]}
  assert len(codes) == 6 and all(c["N"] == 6 and c["D"] == 192 for c in codes.values())
  for s in ("ctoy test (ID)", "cother"):   # graying shrinks the codes' spread
    assert codes[(s, 0.1)]["mean_of_sigma"] < codes[(s, 1.0)]["mean_of_sigma"]
    assert codes[(s, 0.1)]["mean_of_norm"] < codes[(s, 1.0)]["mean_of_norm"]


@pytest.mark.slow
def test_codes_smoke(shared, tmp_path, capsys):
  out = str(tmp_path / "codes")
  argv = _argv(shared, out, **{"--pairs": "ctoy:cother+svhn"})
  assert nalisnick_codes.main(argv) == 0
  report, rows = _report(out)
  assert "codes_cv_glow_ctoy.png" in report and "ctoy -> svhn: svhn (test split)" in report
  assert [r["set"] for r in rows] == ["ctoy train (ID)", "ctoy test (ID)", "cother",
                                      nalisnick_codes.PRIOR]
  assert all(r["D"] == 192 and r["N"] == 6 for r in rows)
  prior = rows[-1]
  assert abs(prior["mean_of_sigma"] - 1) < 0.15 and abs(prior["mean_of_norm"] - 1) < 0.1
  meta = json.load(open(os.path.join(out, "meta.json")))
  trained = meta["models_trained"]["codes_cv_glow_ctoy"]
  assert trained["train_steps"] == 1


@pytest.mark.parametrize("module, extra, message", [
    (nalisnick_graying, {"--alphas": "1,1.5"}, "gray"),
    (nalisnick_graying, {"--alphas": "0.5,0.5"}, "twice"),
    (nalisnick_graying, {"--code-models": "glow"}, "--code-models"),
    (nalisnick_graying, {"--models": "vae", "--code-models": "vae", "--model-args": None},
     "not a flow"),
    (nalisnick_codes, {"--models": "vae", "--model-args": None}, "not a flow"),
    (nalisnick_codes, {"--pairs": "ctoy"}, "--pairs"),
])
def test_bad_options_are_one_clear_error(shared, tmp_path, capsys, module, extra, message):
  out = str(tmp_path / "bad")
  base = {"--id": "ctoy", "--ood": "cother", "--models": "cv_glow"} if module is nalisnick_graying \
      else {"--pairs": "ctoy:cother"}
  assert module.main(_argv(shared, out, **{**base, **extra})) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(out)


@pytest.mark.parametrize("extra, message", [
    (["--sets", "constant:300"], "0..255"), (["--shapes", "32x28x3"], "--shapes"),
    (["--n-images", "1"], "--n-images"), (["--sets", "nothing_here"], "none of the sets"),
])
def test_statistics_bad_options(shared, tmp_path, capsys, extra, message):
  out = str(tmp_path / "bad")
  argv = ["--preset", "smoke", "--data-dir", shared[0], "--out", out, "--no-progress", *extra]
  assert nalisnick_statistics.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(out)
