"""Command-line plumbing shared by the experiment modules.

The common arguments (``--preset``, ``--id``, ``--out``, ...) and the preset settings they
select (``setup``); the pipeline steps with those settings applied (``load_sets``,
``train_or_load``, ``score_all``); the command line, run environment and ``meta.json``
layout recorded in the reports; and the ``main`` wrapper (one ``error: ...`` line on
stderr and exit status 2 for bad input).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time
from typing import Callable, Iterable, Sequence

import jax

from ood_jax.errors import OODJaxError
from ood_jax import data
from ood_jax.experiments import configs, pipeline
from ood_jax.models import registry as model_registry
from ood_jax.experiments.report import write_report
from ood_jax.train import TrainConfig, TrainResult

DEFAULT_ID = "fashion_mnist"
DEFAULT_OOD = "mnist,noise,constant,rotation"

# ``argparse.add_argument`` keywords of every common argument; ``help`` is the text most
# modules use, which ``add_common_args(..., helps=...)`` replaces per module.
COMMON_ARGS: dict[str, dict] = {
    "--preset": dict(default="cpu", help=f"one of {', '.join(configs.PRESETS)} (default cpu)"),
    "--id": dict(default=DEFAULT_ID, help="in-distribution dataset (default fashion_mnist)"),
    "--ood": dict(default=DEFAULT_OOD,
                  help=f"comma-separated OOD sets; a transform name means the ID test set "
                       f"transformed (default {DEFAULT_OOD})"),
    "--data-dir": dict(default=None, help="directory of <name>_<split>.npz arrays "
                                          "(else $OOD_JAX_DATA_DIR, TFDS, ...)"),
    "--out": dict(default=None, help="output directory"),
    "--ckpt-dir": dict(default=None, help="trained-model cache (as table2)"),
    "--seed": dict(type=int, default=0),
    "--n-eval": dict(type=int, default=None, help="override the preset's images per set"),
    "--train-steps": dict(type=int, default=None, help="override the preset's training length"),
    "--k": dict(type=int, default=None, help="override the preset's importance samples"),
    "--no-progress": dict(action="store_true", help="no progress bars"),
}


def add_common_args(p: argparse.ArgumentParser, flags: Iterable[str],
                    helps: dict[str, str | None] | None = None) -> None:
  """Adds the common arguments ``flags`` (keys of ``COMMON_ARGS``) to ``p`` in that order;
  ``helps[flag]`` replaces that argument's help text (``None``: no help text)."""
  for flag in flags:
    kwargs = dict(COMMON_ARGS[flag])
    if helps and flag in helps:
      kwargs["help"] = helps[flag]
    p.add_argument(flag, **kwargs)


def out_help(module: str) -> str:
  """``--out``'s help for a module whose default is ``default_out(args, module)``."""
  return f"output directory (default runs/{module}_<id>_<preset>)"


def default_out(args: argparse.Namespace, module: str) -> str:
  """``--out``, else ``runs/<module>_<id>_<preset>``."""
  return args.out or os.path.join("runs", f"{module}_{args.id}_{args.preset}")


@dataclasses.dataclass
class Setup:
  """The preset a run uses and the command-line overrides applied to it."""
  preset: configs.Preset
  train_cfg: TrainConfig
  n_eval: int | None        # images per evaluation set; None = all
  k: int                    # importance samples for IWAE likelihoods
  progress: bool
  ckpt_root: str


def setup(args: argparse.Namespace) -> Setup:
  """The preset ``--preset`` with ``--seed``, ``--train-steps``, ``--n-eval`` and ``--k``
  applied (the last two only where the module has them); raises UnknownNameError."""
  preset = configs.get_preset(args.preset)
  overrides = {"seed": args.seed}
  if args.train_steps is not None:
    overrides["num_steps"] = args.train_steps
  n_eval = getattr(args, "n_eval", None)
  k = getattr(args, "k", None)
  return Setup(preset=preset, train_cfg=dataclasses.replace(preset.train, **overrides),
               n_eval=n_eval if n_eval is not None else preset.n_eval,
               k=k if k is not None else preset.k, progress=not args.no_progress,
               ckpt_root=pipeline.ckpt_root(args.ckpt_dir, args.out))


def load_sets(args: argparse.Namespace, s: Setup, models: list[str],
              oods: list[str]) -> pipeline.Sets:
  """``pipeline.load_sets`` of ``--id`` and ``oods`` for ``models``, with ``--data-dir``,
  ``--seed`` and the run's set sizes."""
  return pipeline.load_sets(args.id, oods, models, data_dir=args.data_dir,
                            n_train=s.preset.n_train, n_eval=s.n_eval, seed=args.seed)


def sets_by_model(args: argparse.Namespace, s: Setup, models: list[str],
                  oods: list[str]) -> dict[str, pipeline.Sets]:
  """``{model: sets conformed to its input shape}``; the sets are loaded once per distinct
  input shape (the flows and PixelCNN++ take 28 x 28 FashionMNIST, the VAE 32 x 32), so
  one table can hold models of different input sizes."""
  id_hwc = _id_shape(args)
  like = {}
  for m in models:
    like.setdefault(model_registry.input_shape(m, id_hwc), []).append(m)
  out = {}
  for group in like.values():
    sets = load_sets(args, s, group, oods)
    out.update({m: sets for m in group})
  return out


def _id_shape(args: argparse.Namespace) -> tuple:
  """The ID training images' ``(H, W, C)`` (read from a 1-image load)."""
  return tuple(data.load(args.id, "train", data_dir=args.data_dir, n=1, seed=args.seed).x.shape[1:])


def shapes_meta(sets: dict[str, pipeline.Sets]) -> dict:
  """``{'input_shape': ...}`` for ``meta.json``: one shape, or ``{model: shape}`` if several."""
  shapes = {m: list(v.hwc) for m, v in sets.items()}
  distinct = {tuple(v) for v in shapes.values()}
  return {"input_shape": list(distinct.pop()) if len(distinct) == 1 else shapes}


def train_or_load(model_name: str, sets: pipeline.Sets, s: Setup) -> tuple[object, TrainResult]:
  """``pipeline.train_or_load`` with the run's preset, training config and checkpoint cache."""
  return pipeline.train_or_load(model_name, s.preset.model_preset, sets, s.train_cfg,
                                s.ckpt_root, progress=s.progress)


def scores_ckpt_dir(model_name: str, sets: pipeline.Sets, s: Setup) -> str:
  """Where scorers that train models of their own cache them: beside the model's checkpoint."""
  return pipeline.checkpoint_dir(s.ckpt_root, sets.train.name, model_name,
                                 s.preset.model_preset, s.train_cfg.seed) + "_scores"


def score_all(model_name: str, model, variables, scores: list[str], sets: pipeline.Sets,
              s: Setup) -> dict[str, dict]:
  """``pipeline.score_all`` with the run's k, seed, preset score settings, and the model's
  training config and score cache for scorers that train models of their own."""
  return pipeline.score_all(
      model, variables, scores, sets, k=s.k, seed=s.train_cfg.seed, progress=s.progress,
      ckpt_dir=scores_ckpt_dir(model_name, sets, s),
      train_config=pipeline.model_train_config(model_name, s.train_cfg, s.preset.model_preset),
      score_settings=s.preset.score_settings)


def command_line(module: str, args: argparse.Namespace) -> str:
  """``python -m ood_jax.experiments.<module> <args>``, shell-quoted, as the run was given
  (``args.argv``, set by ``run_main``; else ``sys.argv``)."""
  argv = args.argv if hasattr(args, "argv") else sys.argv[1:]
  return (f"python -m ood_jax.experiments.{module} "
          + " ".join(shlex.quote(a) for a in argv)).strip()


def wall_seconds(t0: float) -> float:
  """Seconds since ``t0`` (a ``time.perf_counter()`` value), rounded to 0.1 s."""
  return round(time.perf_counter() - t0, 1)


def platform_meta() -> dict:
  """The JAX devices and versions a run used."""
  return {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
          "python": platform.python_version(), "machine": platform.machine()}


def environment_meta(t0: float) -> dict:
  """``meta.json``'s closing entries: wall-clock seconds since ``t0``, then the platform."""
  return {"wall_seconds": wall_seconds(t0), **platform_meta()}


def table_meta(args: argparse.Namespace, sets: pipeline.Sets, train_cfg: TrainConfig,
              models: dict, t0: float, extra: dict) -> dict:
  """``meta.json`` of a run over ``pipeline.load_sets`` sets (``table2``'s layout): the run's
  settings, the set sizes, ``extra``, the training config, ``models`` (per-model entries),
  where each set came from and ``environment_meta(t0)``."""
  return {"preset": args.preset, "seed": args.seed, "id": args.id,
          "input_shape": list(sets.hwc), "n_train": len(sets.train.x),
          "n_id_test": len(sets.test.x), **extra,
          "train_config": dataclasses.asdict(train_cfg), "models": models,
          "data_sources": pipeline.data_sources(sets), **environment_meta(t0)}


def write_run_report(module: str, args: argparse.Namespace, out: str, *, title: str,
                     rows: list[dict], meta: dict, score_samples: dict) -> dict:
  """``report.write_report`` into ``out`` with this run's ``command_line``; returns the
  experiment's result, ``{'rows', 'meta', 'files', 'out'}``."""
  files = write_report(out, title=title, rows=rows, meta=meta, score_samples=score_samples,
                       command=command_line(module, args))
  return {"rows": rows, "meta": meta, "files": files, "out": out}


def run_main(run_fn: Callable[[argparse.Namespace], dict],
             parse_fn: Callable[[Sequence[str] | None], argparse.Namespace],
             argv: Sequence[str] | None = None) -> int:
  """An experiment's ``main``: parses ``argv`` (default ``sys.argv[1:]``), runs it, prints
  the report and ``wrote <out>``; 0 on success, 2 with one ``error: ...`` line on stderr
  for an ``OODJaxError``."""
  args = parse_fn(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  try:
    result = run_fn(args)
  except OODJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  files = result["files"]
  if "report.md" in files:
    with open(files["report.md"]) as f:
      print(f.read())
  else:
    print(result["out"])
  print(f"wrote {result['out']}")
  return 0
