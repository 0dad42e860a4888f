"""The Chen (thesis, ch. 3) experiments end to end on tiny local data: ``chen_backbones``,
``chen_bn_adaptation``, ``chen_elbo_components``, ``chen_latent_svm``.

They share one data dir and one checkpoint cache (module scope), so every backbone trains
once (a few steps, tiny widths) and the later experiments load it.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from conftest import toy_square_images
from ood_jax.experiments import (chen_backbones, chen_bn_adaptation, chen_elbo_components,
                                 chen_latent_svm)

PNG = b"\x89PNG\r\n\x1a\n"
TINY = "ngf=4,latent_dim=4"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  d = tmp_path_factory.mktemp("chen")
  data = d / "data"
  data.mkdir()
  x = toy_square_images(96, 32)
  np.savez(data / "toy_train.npz", x=x[:64])
  np.savez(data / "toy_test.npz", x=x[64:])
  np.savez(data / "other_test.npz", x=toy_square_images(32, 32, lo=0, hi=120, seed=1))
  return {"data": str(data), "ckpt": str(d / "checkpoints")}


def _argv(shared, out, **extra) -> list[str]:
  base = {"--preset": "smoke", "--data-dir": shared["data"], "--out": out,
          "--ckpt-dir": shared["ckpt"], "--train-steps": "3", "--n-eval": "16", "--k": "2",
          "--model-args": TINY, "--pairs": "toy:other+svhn"}
  base.update(extra)
  argv = []
  for k, v in base.items():
    if v is not None:
      argv += [k, v]
  return argv + ["--no-progress"]


def _report(out) -> tuple[str, object, dict]:
  report = open(os.path.join(out, "report.md")).read()
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
  assert linked
  for name in linked:
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == PNG, name
  meta = json.load(open(os.path.join(out, "meta.json")))
  return report, json.load(open(os.path.join(out, "results.json"))), meta


@pytest.mark.slow
def test_backbones_smoke(shared, tmp_path):
  out = str(tmp_path / "bb")
  assert chen_backbones.main(_argv(shared, out)) == 0
  report, rows, meta = _report(out)
  got = {(r["model"], r["score"]) for r in rows}
  assert got == {("ae", "recon_error"), ("vae", "nll"), ("vae", "recon_error"),
                 ("vae_gaussian", "nll"), ("vae_gaussian", "recon_error"),
                 ("gan_vae", "nll"), ("gan_vae", "recon_error")}
  assert all(r["ood"] == "other" and 0 <= r["auroc"] <= 1 for r in rows)
  for f in ("recon_ae_toy.png", "recon_gan_vae_toy.png", "samples_gan_vae_toy.png"):
    assert f in report
  assert "samples_ae_toy.png" not in report
  assert "toy -> svhn: svhn (test split) is not available here" in report
  assert "## FID" in report and "Not computed: no Inception weights" in report
  assert meta["models_trained"]["vae_gaussian_toy"]["likelihood"] == "gaussian"
  assert meta["models_trained"]["gan_vae_toy"]["likelihood"] == "gaussian:0.5"
  means = json.load(open(os.path.join(out, "means.json")))
  assert {m["set"] for m in means} == {"toy test (ID)", "other"}


@pytest.mark.slow
def test_bn_adaptation_smoke(shared, tmp_path):
  out = str(tmp_path / "bn")
  argv = _argv(shared, out, **{"--models": "vae_gaussian,gan_vae", "--b": "8"})
  assert chen_bn_adaptation.main(argv) == 0
  report, rows, meta = _report(out)
  assert {(r["model"], r["score"]) for r in rows} == {
      (m, v) for m in ("vae_gaussian", "gan_vae") for v in chen_bn_adaptation.VARIANTS}
  # The checkpoints of the backbones run are reused: no training here.
  for m in ("vae_gaussian", "gan_vae"):
    assert meta["models_trained"][f"{m}_toy"]["resumed_from"] == 3
    sc = meta["models_trained"][f"{m}_toy"]["scorers"]
    assert sc["eval"]["k"] == sc["encoder"]["k"] == sc["both"]["k"] == 2
    assert (sc["encoder"]["parts"], sc["decoder"]["parts"], sc["both"]["parts"]) == (
        "encoder", "decoder", "all")
    assert sc["encoder"]["b"] == 8
  bpd = json.load(open(os.path.join(out, "bpd.json")))
  vals = {(t["model"], t["variant"], t["set"]): t["bpd_mean"] for t in bpd}
  # Train mode in some part changes the likelihood of the OOD set (it is not eval mode).
  for m in ("vae_gaussian", "gan_vae"):
    assert vals[(m, "encoder", "other")] != vals[(m, "eval", "other")]
  assert "hist_gan_vae_toy.png" in report and "recon_gan_vae_toy.png" in report


@pytest.mark.slow
def test_elbo_components_smoke(shared, tmp_path):
  out = str(tmp_path / "elbo")
  assert chen_elbo_components.main(_argv(shared, out, **{"--models": "vae,gan_vae",
                                                          "--b": "8"})) == 0
  report, rows, meta = _report(out)
  assert [(r["model"], r["bn"]) for r in rows] == [
      (m, s) for m in ("vae", "gan_vae") for s in ("eval", "encoder")]
  for r in rows:
    assert all(0 <= r[t] <= 1 for t in chen_elbo_components.TERMS)
  means = json.load(open(os.path.join(out, "means.json")))
  for m in means:       # the three terms sum to the ELBO (rounded means: to 3e-3)
    assert abs(m["log_px_z"] + m["log_pz"] + m["neg_log_qz"] - m["elbo"]) < 3e-3
    assert m["sq_error"] >= 0 and m["mu_sq"] >= 0
  assert "terms_vae_toy_encoder.png" in report


def test_elbo_components_batches_cover_each_image_once():
  calls = []

  def fn(xb, key):
    calls.append(len(xb))
    v = np.asarray(xb, np.float64).reshape(len(xb), -1)[:, 0]
    return {t: v for t in chen_elbo_components.TERMS}
  x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
  out = chen_elbo_components.components(fn, x, b=4, seed=0)
  assert calls == [4, 4, 4]
  np.testing.assert_array_equal(out["elbo"], np.arange(10))     # each image's own value


@pytest.mark.slow
def test_latent_svm_smoke(shared, tmp_path):
  out = str(tmp_path / "svm")
  argv = _argv(shared, out, **{"--models": "vae,gan_vae", "--b": "8", "--tsne-n": "10",
                               "--bn-train-models": "vae"})
  assert chen_latent_svm.main(argv) == 0
  report, rows, meta = _report(out)
  models = [r["model"] for r in rows]
  assert models.count("vae") == 2 and models.count("vae (BN train)") == 2
  assert models.count("gan_vae") == 2 and any(m.startswith("random projection") for m in models)
  for r in rows:
    assert 0 <= r["pos_acc"] <= 1 and 0 <= r["neg_acc"] <= 1 and r["n_pos"] == 16
  # Dark squares on black vs darker images: the raw-pixel baseline separates them.
  rp = [r for r in rows if r["model"].startswith("random projection")][0]
  assert rp["pos_acc"] + rp["neg_acc"] > 1.5
  for f in ("svm_d_vae_toy_other.png", "tsne_vae_toy_other.png", "svm_walk_gan_vae_toy_other.png",
            "svm_hardest_vae_toy_other.png", "svm_d_vs_nll_vae_toy_other.png"):
    assert f in report


@pytest.mark.parametrize("module, extra, match", [
    (chen_backbones, {"--models": "glow", "--model-args": None}, "backbones"),
    (chen_bn_adaptation, {"--models": "ae"}, "likelihood"),
    (chen_elbo_components, {"--models": "ae"}, "ELBO"),
    (chen_latent_svm, {"--bn-train-models": "gan_vae", "--models": "vae"}, "--bn-train-models"),
    (chen_latent_svm, {"--tsne-n": "-1"}, "--tsne-n"),
    (chen_latent_svm, {"--b": "0"}, "--b"),
    (chen_elbo_components, {"--b": "1"}, "--b"),
    (chen_bn_adaptation, {"--b": "1"}, "b"),
    (chen_backbones, {"--colour-models": "glow"}, "--colour-models"),
    (chen_backbones, {"--fid-weights": "/nonexistent/pt_inception.npz"}, "Inception"),
])
def test_bad_options_fail_before_work(shared, tmp_path, capsys, module, extra, match):
  out = str(tmp_path / "bad")
  assert module.main(_argv(shared, out, **extra)) == 2
  assert match in capsys.readouterr().err
  assert not os.path.exists(os.path.join(out, "report.md"))
