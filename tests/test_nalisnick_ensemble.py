"""The ensemble predictive statistic of the WAIC scorer (Nalisnick et al. App. F) and the
``nalisnick_ensemble`` experiment end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import toy_pairs_dir, toy_square_images
from ood_jax.errors import InvalidInputError
from ood_jax.scores import get_scorer
from ood_jax.scores.waic import member_log_probs, neg_log_predictive, neg_waic, stack_members
from toy_models import GaussDensity




def _members(m, seed=0):
  rng = np.random.default_rng(seed)
  return [{"params": {"mu": rng.uniform(0.2, 0.8, (8, 8, 1)).astype(np.float32),
                      "log_s": rng.uniform(-2.0, -0.5, (8, 8, 1)).astype(np.float32)}}
          for _ in range(m)]


def _numpy_log_p(v, x):
  y = (x.astype(np.float64) + 0.5) / 256.0
  mu, log_s = (np.asarray(v["params"][k], np.float64) for k in ("mu", "log_s"))
  z = (y - mu) * np.exp(-log_s)
  ll = -0.5 * z ** 2 - log_s - 0.5 * math.log(2 * math.pi) - math.log(256.0)
  return ll.reshape(len(x), -1).sum(-1)


def test_predictive_statistic_equals_a_numpy_logsumexp():
  x = toy_square_images(20, 8)
  members = _members(3)
  lp = np.stack([_numpy_log_p(v, x) for v in members])                    # [M, N] float64
  top = lp.max(0)
  want = -(top + np.log(np.exp(lp - top).sum(0)) - math.log(3))
  model = GaussDensity()
  kw = dict(ensemble_variables=stack_members(members), k=1, chunk_size=8)
  pred = get_scorer("waic", statistic="predictive", **kw)
  state = pred.fit(model, None, None)
  np.testing.assert_allclose(pred.score(state, x), want, rtol=2e-5)
  waic = get_scorer("waic", **kw)                                          # default: -WAIC
  np.testing.assert_allclose(waic.score(waic.fit(model, None, None), x),
                             lp.var(0) - lp.mean(0), rtol=2e-5)
  np.testing.assert_allclose(pred.score(pred.member_state(model, state), x), lp.T, rtol=2e-5)
  # the ensemble is no single member: it differs from each member's NLL
  assert all(np.max(np.abs(want + lp[m])) > 1.0 for m in range(3))
  with pytest.raises(InvalidInputError, match="statistic must be one of"):
    get_scorer("waic", statistic="mean")


def test_one_member_and_identical_members_give_the_single_models_nll():
  x = toy_square_images(20, 8)
  model, (v,) = GaussDensity(), _members(1)
  nll = get_scorer("nll", k=1).score(get_scorer("nll", k=1).fit(model, v), x)
  lps = member_log_probs(model, 1)(stack_members([v]), x, jax.random.PRNGKey(0))   # M = 1
  np.testing.assert_allclose(neg_log_predictive(lps), nll, rtol=1e-6)
  np.testing.assert_allclose(neg_waic(lps), nll, rtol=1e-6)
  pred = get_scorer("waic", statistic="predictive", ensemble_variables=stack_members([v] * 4), k=1)
  np.testing.assert_allclose(pred.score(pred.fit(model, None, None), x), nll, rtol=1e-5)
  lp = np.array([[-1.0, -3.0], [-2.0, -3.0]])
  np.testing.assert_allclose(neg_log_predictive(jnp.asarray(lp)),
                             -np.log(np.exp(lp).mean(0)), rtol=1e-6)






@pytest.mark.slow
def test_experiment_smoke_writes_the_report_and_caches_members(tmp_path, gauss_model):
  from ood_jax.experiments import nalisnick_ensemble as exp
  d = toy_pairs_dir(tmp_path)
  out = str(tmp_path / "out")
  args = ["--preset", "smoke", "--pairs", "toy:other", "--data-dir", str(d), "--out", out,
          "--models", gauss_model, "--members", "3", "--member-steps", "12", "--n-eval", "32",
          "--train-args", "batch_size=16,lr=0.03", "--no-progress"]
  assert exp.main(args) == 0
  for f in ("report.md", "results.json", "meta.json", "ensemble.json", "fig9_toy_gauss_toy.png"):
    assert os.path.getsize(os.path.join(out, f)) > 100
  rows = json.load(open(os.path.join(out, "results.json")))
  assert {(r["score"], r["ood"]) for r in rows} == {("nll", "other"),
                                                    ("ensemble_predictive", "other")}
  meta = json.load(open(os.path.join(out, "meta.json")))
  info = meta["models"]["toy_gauss_toy"]
  assert meta["members"] == 3 and info["member_train_config"]["num_steps"] == 12
  assert info["predictive_vs_member_logprobs_max_abs_nats"] < 1e-2
  scores_dir = info["checkpoint"] + "_scores"
  assert {f"member{i}" for i in (1, 2)} <= set(os.listdir(os.path.join(scores_dir, "waic")))
  s = meta["summary"][0]
  assert [b["set"] for b in s["bits_per_dim"]] == ["toy train (subset)", "toy test", "other"]
  assert len(s["ood"][0]["auroc_members"]) == 3
  first = s["ood"][0]["auroc_members"][0]                # member 0 is the single model
  assert first == pytest.approx(s["ood"][0]["auroc_single"], abs=1e-9)
  report = open(os.path.join(out, "report.md")).read()
  assert "single model vs ensemble predictive (M = 3, 12 steps each)" in report
  assert exp.main(args) == 0                              # members reloaded from the cache
  again = json.load(open(os.path.join(out, "meta.json")))
  assert again["models"]["toy_gauss_toy"]["resumed_from"] == 12
  assert again["summary"] == meta["summary"]


def test_experiment_bad_options_are_one_clear_error(tmp_path, capsys):
  from ood_jax.experiments import nalisnick_ensemble as exp
  d = toy_pairs_dir(tmp_path)
  out = str(tmp_path / "out")
  base = ["--preset", "smoke", "--pairs", "toy:other", "--data-dir", str(d), "--out", out]
  for extra, message in ((["--members", "1"], "--members must be >= 2"),
                         (["--member-steps", "0"], "--member-steps must be >= 1"),
                         (["--score-args", "waic.statistic=waic"], "statistic=predictive"),
                         (["--score-args", "waic.members=4"], "with --members"),
                         (["--score-args", "waic.statistic=median"], "statistic must be one of")):
    assert exp.main(base + extra) == 2, extra
    assert message in capsys.readouterr().err
  assert not os.path.exists(out)


def test_member_budget_by_preset():
  from ood_jax.experiments import nalisnick_ensemble as exp
  r = exp.EXPERIMENT.make_run(["--preset", "smoke"])
  assert (exp.members(r), exp.member_steps(r)) == (2, None)
  r = exp.EXPERIMENT.make_run(["--preset", "smoke", "--members", "4", "--member-steps", "7"])
  assert (exp.members(r), exp.member_steps(r)) == (4, 7)
  assert exp.member_config(r, "glow").num_steps == 7
  assert exp.member_config(r, "glow").warmup_steps == 0          # a tenth of 7 steps
  r = exp.EXPERIMENT.make_run(["--preset", "smoke", "--member-steps", "300"])
  assert exp.member_config(r, "glow").warmup_steps == 30         # not the flows' 200
