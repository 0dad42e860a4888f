"""The ``ood-jax`` console script (``ood_jax.cli_entry``): catalogue, unknown names, dispatch."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ood_jax import cli_entry


@pytest.mark.parametrize("argv", [[], ["list"], ["--help"]])
def test_no_experiment_prints_the_catalogue(argv, capsys):
  assert cli_entry.main(argv) == 0
  out = capsys.readouterr().out
  assert "usage: ood-jax <experiment>" in out
  assert "song_table2" in out and "python -m ood_jax.experiments.table2" in out


def test_unknown_experiment_is_one_error_line(capsys):
  assert cli_entry.main(["nope", "--preset", "smoke"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  assert err[0].startswith("error: unknown experiment 'nope'; known: ")
  assert "table2" in err[0] and "reproduce" in err[0]


def test_known_names_cover_the_catalogue():
  from ood_jax.experiments import catalogue
  names = cli_entry.known()
  modules = {e.module for e in catalogue.entries()}
  for e in catalogue.entries():
    assert names[e.module] == (e.module, ())
    if e.name not in modules:  # a module name means the module itself, as python -m does
      assert names[e.name] == (e.module, tuple(e.args))
  assert {"reproduce", "combine"} <= set(names)
  assert "cli" not in names and "pipeline" not in names  # helpers are not experiments


def test_table2_help_lists_its_flags(capsys):
  assert cli_entry.main(["table2", "--help"]) == 0
  out = capsys.readouterr().out
  for flag in ("--preset", "--out", "--scores", "--no-progress"):
    assert flag in out


def test_reproduce_help_exits_zero(capsys):
  # reproduce uses plain argparse, whose --help raises SystemExit(0)
  assert cli_entry.main(["reproduce", "--help"]) == 0
  assert "--preset" in capsys.readouterr().out


def test_entry_name_prepends_its_default_flags(monkeypatch):
  seen = []
  from ood_jax.experiments import table2
  monkeypatch.setattr(table2, "main", lambda argv: seen.append(argv) or 0)
  assert cli_entry.main(["song_table2", "--preset", "smoke"]) == 0
  assert seen == [["--models", "vae,realnvp", "--scores", "nll,t_perm,waic,bn_mixed",
                   "--preset", "smoke"]]


@pytest.mark.skipif(shutil.which("ood-jax") is None,
                    reason="ood-jax script not installed (pip install -e .)")
def test_installed_script():
  r = subprocess.run(["ood-jax"], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and "song_table2" in r.stdout
  r = subprocess.run(["ood-jax", "nope"], capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and r.stderr.startswith("error: unknown experiment 'nope'")
  r = subprocess.run(["ood-jax", "table2", "--help"], capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0 and "--preset" in r.stdout
