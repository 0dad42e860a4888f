"""The run object: settings parsed from the command line, checked before any work."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.experiments import settings, table2
from ood_jax.experiments.run import resolve_train_config
from ood_jax.experiments import configs


# ----------------------------------------------------------------------------- parsing

def test_pairs_are_python_literals_else_strings():
  got = settings.parse_pairs("mask=cycle,bottleneck=50,lr=5e-5,bn=True,none=None,"
                             "steps=(80000, 90000),name='a,b',layers=['x*','y']", "--x")
  assert got == {"mask": "cycle", "bottleneck": 50, "lr": 5e-5, "bn": True, "none": None,
                 "steps": (80000, 90000), "name": "a,b", "layers": ["x*", "y"]}
  assert settings.parse_pairs("", "--x") == {}
  assert settings.render({"b": 50, "mask": "cycle"}) == "b=50,mask=cycle"


@pytest.mark.parametrize("text, message", [
    ("mask", "expected key=value"), ("a=1,a=2", "given twice"), ("a=(1,2", "unbalanced"),
    ("=3", "expected key=value")])
def test_bad_pairs(text, message):
  with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
    settings.parse_pairs(text, "--x")


def test_scoped_settings_and_entries():
  got = settings.parse_scoped("rose.fisher=diag,likelihood_ratio.mu=0.1,k=3", "--score-args",
                              ["rose", "likelihood_ratio"], "score")
  assert got == {"rose": {"fisher": "diag"}, "likelihood_ratio": {"mu": 0.1}, "*": {"k": 3}}
  with pytest.raises(InvalidInputError, match="does not use"):
    settings.parse_scoped("nll.k=3", "--score-args", ["rose"], "score")
  assert settings.parse_entry("rose[fisher=diag,n_fisher=100]") == (
      "rose", {"fisher": "diag", "n_fisher": 100})
  assert settings.split_top_level("nll,rose[fisher=diag,n_fisher=1],x") == [
      "nll", "rose[fisher=diag,n_fisher=1]", "x"]
  assert settings.train_pairs("lr=0.1,optimizer=rmsprop") == {"learning_rate": 0.1,
                                                               "optimizer": "rmsprop"}


# ----------------------------------------------------------------------------- the Run

def _run(argv):
  return table2.EXPERIMENT.make_run(argv)


def test_run_resolves_every_setting_once():
  r = _run(["--preset", "smoke", "--models", "vae,realnvp", "--scores", "nll,rose",
            "--model-args", "realnvp.mask=cycle,ngf=16", "--score-args", "rose.fisher=diag",
            "--train-args", "lr=5e-4,batch_size=16", "--seed", "3", "--train-steps", "7"])
  assert r.models == ("vae", "realnvp") and r.scores == ("nll", "rose")
  assert r.model_args == {"vae": {"ngf": 16}, "realnvp": {"mask": "cycle"}}  # bare ngf: VAE only
  assert r.score_settings("rose")["fisher"] == "diag"
  assert r.score_settings("rose")["n_fisher"] == 256                      # the smoke preset's
  for m in ("vae", "realnvp"):
    c = r.train_configs[m]
    assert (c.learning_rate, c.batch_size, c.seed, c.num_steps) == (5e-4, 16, 3, 7)
  assert r.train_configs["realnvp"].warmup_steps == 200                   # the flow's default
  assert r.train_configs["vae"].warmup_steps == 0
  assert r.scorer("rose").fisher == "diag"
  assert r.scorer("rose[fisher=ekfac]").fisher == "ekfac"                 # inline wins
  meta = r.settings_meta()
  json.dumps(meta)
  assert meta["model_args"]["realnvp"] == {"mask": "cycle"}
  assert meta["train_configs"]["vae"]["learning_rate"] == 5e-4


def test_model_budgets_come_from_the_spec():
  cpu = configs.get_preset("cpu")
  assert resolve_train_config(cpu, "pixelcnnpp", 0, None, {}).epochs == 0.5
  assert resolve_train_config(cpu, "realnvp", 0, None, {}).epochs == 1
  assert resolve_train_config(cpu, "vae", 0, None, {}).epochs == 2
  assert resolve_train_config(cpu, "realnvp", 0, None, {"epochs": 3}).epochs == 3   # explicit wins
  smoke = configs.get_preset("smoke")                       # the smoke preset fixes num_steps...
  assert resolve_train_config(smoke, "vae", 0, None, {}).num_steps == 150
  c = resolve_train_config(smoke, "vae", 0, None, {"epochs": 3})   # ...explicit epochs replace it
  assert c.num_steps is None and c.epochs == 3


@pytest.mark.parametrize("argv, error, message", [
    (["--score-args", "rose.fishr=diag", "--scores", "rose"], InvalidInputError, "fisher"),
    (["--score-args", "rose.fisher=3", "--scores", "rose"], InvalidInputError, "fisher"),
    (["--score-args", "nll.k=3"], None, None),
    (["--score-args", "rose.fisher=diag"], InvalidInputError, "does not use"),
    (["--scores", "rose[fishr=diag]"], InvalidInputError, "fisher"),
    (["--model-args", "ngff=3"], InvalidInputError, "ngf"),
    (["--model-args", "vae.ngf='wide'"], InvalidInputError, "ngf"),
    (["--model-preset", "kirichenko"], UnknownNameError, "kirichenko"),
    (["--train-args", "optimizr=adam"], InvalidInputError, "optimizer"),
    (["--train-args", "batch_size=3.5"], InvalidInputError, "batch_size"),
    (["--train-args", "optimizer=sgdx"], UnknownNameError, "rmsprop"),
    (["--scores", "rose", "--score-args", "rose.fisher=kfac"], InvalidInputError, "ekfac"),
])
def test_bad_settings_are_one_error_naming_the_valid_fields(argv, error, message):
  argv = ["--preset", "smoke"] + argv
  if error is None:
    _run(argv)
    return
  with pytest.raises(error) as e:
    _run(argv)
  assert message in str(e.value)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture
def toy8(toy_dir):
  return str(toy_dir(size=8, n_test=16))


def _argv(toy_dir, out, *extra):
  return ["--preset", "smoke", "--id", "toy", "--ood", "noise", "--data-dir", toy_dir,
          "--out", out, "--train-steps", "2", "--n-eval", "16", "--k", "1", "--no-progress",
          "--models", "realnvp", *extra]


def test_model_variants_train_separate_checkpoints(toy8, tmp_path):
  toy_dir = toy8
  out = str(tmp_path / "out")
  assert table2.main(_argv(toy_dir, out)) == 0
  base = json.load(open(os.path.join(out, "meta.json")))["models"]["realnvp"]
  assert table2.main(_argv(toy_dir, out, "--model-args", "mask=cycle")) == 0
  cycle = json.load(open(os.path.join(out, "meta.json")))["models"]["realnvp"]
  assert base["checkpoint"] != cycle["checkpoint"] and "mask=cycle" in cycle["checkpoint"]
  assert cycle["resumed_from"] is None                       # trained, not the default's weights
  ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
  assert len(ckpts) == 2
  assert table2.main(_argv(toy_dir, out)) == 0               # the default is reused
  again = json.load(open(os.path.join(out, "meta.json")))["models"]["realnvp"]
  assert again["checkpoint"] == base["checkpoint"] and again["resumed_from"] == 2
  assert table2.main(_argv(toy_dir, out, "--model-args", "mask=cyclee")) == 2  # before training
  assert len(os.listdir(os.path.join(out, "checkpoints"))) == 2


def test_train_args_reach_the_optimizer(toy8, tmp_path, monkeypatch):
  toy_dir = toy8
  from ood_jax.train import optim
  seen = []
  real = optim.make_optimizer
  monkeypatch.setattr(optim, "make_optimizer", lambda c, spe: (seen.append(c), real(c, spe))[1])
  import ood_jax.train.loop as loop
  monkeypatch.setattr(loop, "make_optimizer", optim.make_optimizer)
  out = str(tmp_path / "out")
  assert table2.main(_argv(toy_dir, out, "--train-args", "optimizer=rmsprop,lr=5e-5")) == 0
  assert seen and seen[0].optimizer == "rmsprop" and seen[0].learning_rate == 5e-5
  meta = json.load(open(os.path.join(out, "meta.json")))
  assert meta["models"]["realnvp"]["train_config"]["optimizer"] == "rmsprop"


def test_bad_score_args_exit_2_and_leave_out_untouched(toy8, tmp_path, capsys):
  toy_dir = toy8
  out = str(tmp_path / "out")
  assert table2.main(_argv(toy_dir, out, "--scores", "rose", "--score-args", "rose.fishr=diag")) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "fishr" in err and "fisher" in err and "n_fisher" in err
  assert not os.path.exists(out)


def test_old_single_model_flag_still_works():
  from ood_jax.experiments import runtime
  assert runtime.EXPERIMENT.make_run(["--preset", "smoke", "--model", "glow"]).models == ("glow",)
  assert runtime.EXPERIMENT.make_run(["--preset", "smoke"]).models == ("vae",)


def test_model_preset_recipes_and_experiment_model_presets(tmp_path):
  """A model preset's training recipe replaces the experiment preset's optimiser settings
  (grey vs colour by the ID data); its epochs apply only under ``paper``; explicit
  --train-args win; an experiment's ``model_presets`` picks the model preset per preset."""
  from ood_jax.experiments import cli
  from ood_jax.models import registry as model_registry
  from ood_jax.models.flows import realnvp
  recipes = {"smoke": {1: dict(optimizer="rmsprop", learning_rate=5e-5, batch_size=8, epochs=80),
                       3: dict(optimizer="adam", learning_rate=1e-4, batch_size=8,
                               weight_decay=5e-5)}}
  model_registry.register_model("recipe_flow", dataclasses.replace(realnvp.SPEC, recipes=recipes))
  try:
    np.savez(tmp_path / "grey_train.npz", x=np.zeros((4, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "colour_train.npz", x=np.zeros((4, 8, 8, 3), np.uint8))
    exp = cli.Experiment("table2", table2.run, model_presets={"cpu": "smoke", "paper": "smoke"})
    base = ["--models", "recipe_flow,vae", "--data-dir", str(tmp_path)]
    grey = exp.make_run(base + ["--id", "grey", "--preset", "cpu"])
    assert grey.model_preset == "smoke"                         # from model_presets, not 'cpu'
    c = grey.train_configs["recipe_flow"]
    assert (c.optimizer, c.learning_rate, c.batch_size) == ("rmsprop", 5e-5, 8)
    assert c.epochs == 1                                         # the cpu budget, not the recipe's
    assert grey.train_configs["vae"].optimizer == "adam"         # no recipe: untouched
    rgb = exp.make_run(base + ["--id", "colour", "--preset", "cpu"]).train_configs["recipe_flow"]
    assert (rgb.optimizer, rgb.learning_rate, rgb.weight_decay) == ("adam", 1e-4, 5e-5)
    paper = exp.make_run(base + ["--id", "grey", "--preset", "paper"]).train_configs["recipe_flow"]
    assert paper.epochs == 80                                    # budget fields under paper
    over = exp.make_run(base + ["--id", "grey", "--preset", "cpu", "--train-args", "lr=1e-3"])
    assert over.train_configs["recipe_flow"].learning_rate == 1e-3
    assert exp.make_run(base + ["--id", "grey", "--preset", "cpu", "--model-preset", "paper"]
                        ).train_configs["recipe_flow"].optimizer == "adam"   # paper: no recipe
  finally:
    model_registry._MODELS.unregister("recipe_flow")
