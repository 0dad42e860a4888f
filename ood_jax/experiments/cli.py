"""The command line of every experiment: one parser, one ``Run``, one writer, one ``main``.

An experiment module defines ``EXPERIMENT = Experiment(name, run_fn, ...)`` and
``main = EXPERIMENT.main``. Every experiment takes the common flags (``--preset``, ``--id``,
``--ood``, ``--models``, ``--scores``, ``--model-preset``, ``--model-args``, ``--score-args``,
``--train-args``, ``--data-dir``, ``--out``, ``--ckpt-dir``, ``--seed``, ``--n-eval``,
``--train-steps``, ``--k``, ``--no-progress``) with its own defaults, plus its own
``options``. ``main`` parses, checks everything (``run.make_run``), runs
``run_fn(run) -> report.Result``, writes the result atomically into ``--out``
(``report.write``), prints the report and ``wrote <out>``; bad input is one ``error: ...``
line on stderr, exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import platform
import sys
import time
from typing import Any, Callable, Sequence

import jax

from ood_jax.errors import OODJaxError
from ood_jax.experiments import configs, report, score_file
from ood_jax.experiments.run import Run, make_run

DEFAULT_ID = "fashion_mnist"
DEFAULT_OOD = "mnist,noise,constant,rotation"


@dataclasses.dataclass(frozen=True)
class Option:
  """An experiment's own flag: ``argparse.add_argument(flag, **kwargs)``; its value is in
  ``run.options[dest]`` (``dest`` = the flag without dashes, ``-`` -> ``_``)."""
  flag: str
  kwargs: dict

  @property
  def dest(self) -> str:
    return self.kwargs.get("dest") or self.flag.lstrip("-").replace("-", "_")


def option(flag: str, **kwargs) -> Option:
  return Option(flag, kwargs)


def common_flags(defaults: dict[str, Any]) -> list[Option]:
  """The common flags, with an experiment's ``defaults`` (keys: dests)."""
  d = {"id": DEFAULT_ID, "ood": DEFAULT_OOD, "models": "vae", "scores": "nll", **defaults}
  known = known_names()
  return [
      option("--preset", default=d.get("preset", "cpu"),
             help=f"experiment preset: {', '.join(configs.PRESETS)} (default cpu)"),
      option("--id", default=d["id"], help=f"in-distribution dataset (default {d['id']}; known: {known['datasets']})"),
      option("--ood", default=d["ood"],
             help="comma-separated OOD sets; a transform name (rotation, brightness:0.5) means "
                  f"the ID test set transformed (default {d['ood']}; datasets as --id, synthetic: "
                  f"{known['synthetic']}; transforms: {known['transforms']})"),
      option("--models", default=d["models"], help=f"comma-separated models (default {d['models']}; known: {known['models']})"),
      option("--model", dest="models", default=argparse.SUPPRESS, help=argparse.SUPPRESS),  # old spelling
      option("--scores", default=d["scores"], help=f"comma-separated scores (default {d['scores']}; known: {known['scores']})"),
      option("--model-preset", default=None,
             help="model preset (e.g. kirichenko; default: the experiment preset's)"),
      option("--model-args", default=None,
             help="model settings, e.g. mask=cycle,bottleneck=50 or realnvp.mask=cycle "
                  "(values are Python literals)"),
      option("--score-args", default=None,
             help="score settings, e.g. rose.fisher=diag,likelihood_ratio.mu=0.1"),
      option("--train-args", default=None,
             help="training settings, e.g. optimizer=rmsprop,lr=5e-5,epochs=80,"
                  "weight_decay=5e-5,batch_size=32"),
      option("--data-dir", default=None,
             help="directory of <name>_<split>.npz arrays (else $OOD_JAX_DATA_DIR, TFDS, ...)"),
      option("--out", default=None, help="output directory (default runs/<experiment>_<id>_<preset>)"),
      option("--ckpt-dir", default=None,
             help="trained-model cache (default runs/checkpoints, shared by every experiment;"
                  " <out>/checkpoints when --out is given)"),
      option("--weights", action="append", default=None, metavar="MODEL=PATH[,PATH]",
             help="score given weights instead of training MODEL: the authors' encoder/decoder "
                  ".pth pair (Likelihood Regret / ROSE VAE, read without PyTorch) or one .npz "
                  "in netE/ netG/ layout; repeat for several models"),
      option("--download", action="store_true",
             help="let TFDS download and prepare a dataset that is not found locally "
                  "(into $TFDS_DATA_DIR; needs internet)"),
      option("--seed", type=int, default=0),
      option("--n-eval", type=int, default=None, help="override the preset's images per set"),
      option("--train-steps", type=int, default=None, help="override the preset's training length"),
      option("--k", type=int, default=None, help="override the preset's importance samples"),
      option("--no-progress", action="store_true", help="no progress bars"),
  ]


def known_names() -> dict[str, str]:
  """Comma-joined names ``--help`` lists: datasets, synthetic sets, transforms, models, scores."""
  from ood_jax import scores
  from ood_jax.data import registry as data_registry, synthetic, transforms
  from ood_jax.models import registry as model_registry
  return {"datasets": ", ".join(data_registry.DATASETS),
          "synthetic": ", ".join(f"{n}, {n}:<v>" if n == "constant" else n
                                 for n in synthetic.SYNTHETIC),
          "transforms": ", ".join(transforms.TRANSFORMS),
          "models": ", ".join(model_registry.known_models()),
          "scores": ", ".join(scores.known_scores())}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One experiment command: ``python -m ood_jax.experiments.<name>``.

  ``run_fn(run) -> report.Result``; ``defaults`` replace the common flags' defaults
  (``{'models': 'realnvp,vae'}``); ``options`` are its own flags; ``check(run)`` validates
  the options before any work (raise ``InvalidInputError``).
  """
  name: str
  run_fn: Callable[[Run], "report.Result"]
  description: str = ""
  defaults: dict = dataclasses.field(default_factory=dict)
  options: tuple[Option, ...] = ()
  check: Callable[[Run], None] | None = None
  omit: tuple[str, ...] = ()      # common flags it does not take (their value: the default)
  model_presets: dict = dataclasses.field(default_factory=dict)

  def _flags(self) -> list[Option]:
    return [o for o in common_flags(self.defaults) if o.flag not in self.omit] + list(self.options)

  def parser(self) -> argparse.ArgumentParser:
    via_entry = (sys.argv[0] or "").startswith("ood-jax ")   # set by ood_jax.cli_entry
    p = argparse.ArgumentParser(prog=(f"ood-jax {self.name}" if via_entry else
                                      f"python -m ood_jax.experiments.{self.name}"),
                                description=self.description)
    for o in self._flags():
      p.add_argument(o.flag, **o.kwargs)
    p.set_defaults(**{o.dest: o.kwargs.get("default") for o in common_flags(self.defaults)
                      if o.flag in self.omit})
    return p

  def make_run(self, argv: Sequence[str] | None = None) -> Run:
    """Parses ``argv`` and checks everything; raises ``OODJaxError`` for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
      args = self.parser().parse_args(argv)
    except SystemExit as e:        # argparse printed its one-line error (or --help)
      raise _ParserExit(e.code) from None
    options = {o.dest: getattr(args, o.dest) for o in self.options}
    args.id_optional = "--id" in self.omit    # experiments over --pairs: --id unused
    run = make_run(self.name, args, options=options, argv=argv, model_presets=self.model_presets)
    if self.check is not None:
      self.check(run)
    return run

  def execute(self, run: Run) -> dict[str, str]:
    """Runs and writes the report; ``{file name: path}``."""
    t0 = time.perf_counter()
    result = self.run_fn(run)
    result.meta = {**result.meta, **environment_meta(t0)}
    if not result.arrays and result.samples:
      try:                           # never lose a finished run over the extra file
        result.arrays = samples_arrays(run.id, result.samples)
      except OODJaxError as e:
        result.meta["scores_npz"] = f"not written: {e}"
    return report.write(run.out, run.command, result)

  def main(self, argv: Sequence[str] | None = None) -> int:
    """Parse, check, run, write; 0 on success, 2 with one ``error: ...`` line for bad input."""
    run = None
    try:
      run = self.make_run(argv)
      files = self.execute(run)
    except _ParserExit as e:
      return e.code
    except OODJaxError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    except KeyboardInterrupt:
      print(f"interrupted: {resume_hint(run)}", file=sys.stderr)
      return 130
    except OSError as e:
      if e.errno not in _DISK_ERRNOS:
        raise
      print(f"error: {os.strerror(e.errno)} ({e.filename or 'writing'}): nothing half-written "
            f"is kept. {resume_hint(run)}", file=sys.stderr)
      return 1
    with open(files["report.md"]) as f:
      print(f.read())
    print(f"wrote {run.out}")
    return 0


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def latest_checkpoint(root: str) -> tuple[str, int] | None:
  """``(model directory, step)`` of the most recently written checkpoint step under ``root``."""
  best = None
  try:
    models = [os.path.join(root, d) for d in os.listdir(root)]
  except OSError:
    return None
  for d in models:
    try:
      steps = [int(n) for n in os.listdir(d) if n.isdigit()]
    except OSError:
      continue
    for step in steps:
      t = os.path.getmtime(os.path.join(d, str(step)))
      if best is None or t > best[0]:
        best = (t, d, step)
  return None if best is None else (best[1], best[2])


def resume_hint(run: Run | None) -> str:
  """One line: rerun the same command to resume, and from which checkpoint step."""
  if run is None:
    return "nothing was started; rerun the same command."
  last = latest_checkpoint(run.ckpt_root)
  where = (f"training resumes from step {last[1]} of {last[0]}" if last else
           f"no checkpoint was written yet under {run.ckpt_root}")
  return f"rerun the same command to resume ({where}; finished models are reused)."


def samples_arrays(id_name: str, samples: dict) -> dict:
  """``scores.npz`` contents from a result's plotted per-image values (for experiments that do
  not give their raw scores: ``nll`` is then in bits/dim, a fixed multiple of nats, which
  changes no ranking or z-score); '/' in a name becomes '_'."""
  clean = lambda t: str(t).replace("/", "_")
  scores = {}
  for (model, score), sample in samples.items():
    scores[(clean(model), clean(score), score_file.ID_SET)] = sample["id"]
    for name, v in sample["ood"].items():
      scores[(clean(model), clean(score), clean(name))] = v
  return score_file.to_arrays(id_name, scores, {})


class _ParserExit(Exception):
  """argparse exited (bad flags: it printed the error; ``--help``: code 0)."""

  def __init__(self, code):
    super().__init__(code)
    self.code = 0 if code is None else int(code)


def wall_seconds(t0: float) -> float:
  """Seconds since ``t0`` (a ``time.perf_counter()`` value), rounded to 0.1 s."""
  return round(time.perf_counter() - t0, 1)


def platform_meta() -> dict:
  """The JAX devices and versions a run used."""
  return {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
          "python": platform.python_version(), "machine": platform.machine(),
          "cpu_count": os.cpu_count()}


def environment_meta(t0: float) -> dict:
  """``meta.json``'s closing entries: wall-clock seconds since ``t0``, then the platform."""
  return {"wall_seconds": wall_seconds(t0), **platform_meta()}
