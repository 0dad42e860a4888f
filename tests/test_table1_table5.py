"""`python -m ood_jax.experiments.table1` and `table5` end to end on tiny local data."""

import json
import os

import numpy as np
import pytest

from ood_jax.experiments import table1, table5


@pytest.fixture
def data_dir(toy_dir):
  d = toy_dir()
  np.savez(d / "other_test.npz",
           x=np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8))
  return str(d)


def _args(data_dir, out, ckpt, **kw):
  a = {"--preset": "smoke", "--id": "toy", "--ood": "other", "--data-dir": data_dir,
       "--out": out, "--ckpt-dir": ckpt, "--train-steps": "4", "--n-eval": "16", "--k": "1",
       "--b": "8"}
  a.update(kw)
  return [t for k, v in a.items() for t in (k, v)] + ["--no-progress"]


def test_table1_and_table5_end_to_end(data_dir, tmp_path):
  ckpt = str(tmp_path / "ckpt")
  out1 = str(tmp_path / "t1")
  assert table1.main(_args(data_dir, out1, ckpt, **{"--models": "vae"})) == 0
  rows = json.load(open(os.path.join(out1, "results.json")))
  assert [(r["model"], r["set"]) for r in rows] == [("vae", "toy (ID test)"), ("vae", "other")]
  for r in rows:
    assert r["n"] == 16 and r["delta_mean"] >= 0.0
    assert r["train_minus_eval"] == pytest.approx(r["train_bpd"] - r["eval_bpd"])
    assert 0.0 < r["eval_bpd"] < 10.0 and 0.0 < r["train_bpd"] < 10.0
    assert 0.0 < r["eval_bpd_nll"] < 10.0
  report = open(os.path.join(out1, "report.md")).read()
  assert "| vae | other | 16 |" in report and "paired" in report
  meta = json.load(open(os.path.join(out1, "meta.json")))
  assert meta["models"]["vae"]["resumed_from"] is None

  out5 = str(tmp_path / "t5")
  args5 = _args(data_dir, out5, ckpt, **{"--r2": "0.5,0.9"})
  assert table5.main(args5) == 0
  rows5 = json.load(open(os.path.join(out5, "results.json")))
  assert [r["score"] for r in rows5] == ["delta_r2=0.5", "delta_r2=0.9"]
  assert all(r["ood"] == "other" and 0.0 <= r["auroc"] <= 1.0 for r in rows5)
  meta5 = json.load(open(os.path.join(out5, "meta.json")))
  assert meta5["models"]["vae"]["resumed_from"] == 4          # table1's checkpoint reused
  assert "delta_r2=0.9" in open(os.path.join(out5, "report.md")).read()


@pytest.mark.parametrize("main, override, message", [
    (table1.main, {"--b": "1"}, "b must be an integer >= 2"),
    (table5.main, {"--r2": "0.5,1.5"}, "r must be in [0, 1]"),
    (table5.main, {"--r2": "x"}, "--r2"),
    (table1.main, {"--rounds": "0"}, "K (Monte-Carlo rounds)"),
    (table1.main, {"--models": "bogusnet"}, "unknown model 'bogusnet'"),
])
def test_bad_input_is_one_clear_error(data_dir, tmp_path, capsys, main, override, message):
  out = str(tmp_path / "out")
  assert main(_args(data_dir, out, str(tmp_path / "ckpt"), **override)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
  assert not os.path.exists(out)


def test_eval_mode_partner_uses_the_same_batches_and_samples_as_train_mode():
  """``bn_train_bpd`` with ``parts='none'`` (table1's ``eval bpd``) = the eval-mode log p of
  every batch with exactly the train-mode score's importance samples: a loop of single
  eval-mode forwards with the same batch keys, and independent of the batch size (eval mode:
  images do not interact) except through the noise."""
  import jax
  import jax.numpy as jnp
  from ood_jax.models import make_model
  from ood_jax.scores import get_scorer
  from ood_jax.scores.compositions import compositions, gather_batches
  from ood_jax.scores.train_mode import batch_key
  model = make_model("vae", "smoke", (32, 32, 1))
  x = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
  v = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x[:2], train=False)
  v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.3, v["batch_stats"])}
  ev = get_scorer("bn_train_bpd", parts="none", b=4, k=2, seed=3)
  tr = get_scorer("bn_train_bpd", b=4, k=2, seed=3)
  got = ev.score(ev.fit(model, v), x)
  comps = compositions(len(x), 0, b=4, r=1.0, rounds=1, seed=3, what="t")
  want = np.zeros(len(x))
  for i in range(comps.num_batches):
    xb = gather_batches(x, None, comps, np.array([i]))[0]
    lp = model.apply(v, jnp.asarray(xb), train=False, k=2, method="log_prob",
                     rngs={"sample": batch_key(3, jnp.asarray(comps.ids[i]))})
    want[comps.test_idx[i]] = np.asarray(lp)[:comps.m]
  np.testing.assert_allclose(got, -want / (32 * 32 * np.log(2.0)), rtol=1e-5)
  # Train mode differs (the batch statistics are not the running ones).
  assert np.abs(tr.score(tr.fit(model, v), x) - got).max() > 1e-3
