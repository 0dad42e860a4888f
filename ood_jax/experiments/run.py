"""``Run``: everything one experiment run uses, parsed once from the command line and checked.

``make_run(experiment, args)`` turns the parsed flags into one frozen ``Run`` after checking
every name and setting (models, model preset, ``--model-args``, scores, ``--score-args``,
``--train-args``, the experiment preset), so bad input is one clear error before any work.
The per-model training configuration is resolved here, once:

    preset.train (seed = --seed)
      -> the model's own train_defaults, where the preset leaves that field at its default
      -> the model's budget for this experiment preset (ModelSpec.budgets: the cpu preset
         trains the flows 1 epoch, PixelCNN++ 0.5)
      -> the training recipe of the model preset (ModelSpec.recipes, e.g. ``kirichenko``:
         Adam, lr 5e-5, batch 32 for grey RealNVP); its epochs only under ``paper``
      -> --train-steps
      -> --train-args (explicit settings win)

Settings of models (``--model-args``) and scores (``--score-args``) are ``field=value``
(every model / score of the run that has the field) or ``name.field=value`` (that one only);
an unknown field or a value of the wrong type is an error listing the valid fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
from typing import Any, Mapping

from ood_jax import registry as settings_check
from ood_jax.data import registry as data_registry
from ood_jax.errors import DatasetNotFoundError, InvalidInputError
from ood_jax.experiments import configs, report, settings
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer, scorer_class, scorer_fields
from ood_jax.train import TrainConfig
from ood_jax.train.config import NOT_WEIGHT_FIELDS

_SCORER_CONTEXT = ("k", "seed", "progress", "train_config", "ckpt_dir")


def split_list(text: str | None) -> list[str]:
  """``'a, b,,c'`` -> ``['a', 'b', 'c']``."""
  return [s.strip() for s in (text or "").split(",") if s.strip()]


def slug(*parts) -> str:
  """A file-name-safe join of ``parts``."""
  return re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(str(p) for p in parts if p != ""))


@dataclasses.dataclass(frozen=True)
class Run:
  """One experiment run: the preset, data, models, scores, every override and where to write.

  ``model_args[m]`` / ``score_args[s]`` are the explicit settings of model m / score s (the
  preset's score settings are under them in ``score_settings``); ``train_configs[m]`` the
  resolved ``TrainConfig`` of model m; ``options`` the experiment's own flags.
  """
  experiment: str
  preset: str
  id: str
  oods: tuple[str, ...]
  models: tuple[str, ...]
  scores: tuple[str, ...]
  model_preset: str
  model_args: Mapping[str, Mapping[str, Any]]
  score_args: Mapping[str, Mapping[str, Any]]
  train_args: Mapping[str, Any]
  train_configs: Mapping[str, TrainConfig]
  data_dir: str | None
  out: str
  ckpt_root: str
  seed: int
  progress: bool
  n_train: int | None
  n_eval: int | None
  k: int
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  argv: tuple[str, ...] = ()
  train_steps: int | None = None
  weights: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  download: bool = False

  def for_id(self, id_name: str, oods=None) -> "Run":
    """This run with another in-distribution set (and OOD sets), for experiments over
    several ID sets: the training configs are resolved again (a grey and a colour set
    get their model preset's grey and colour recipes)."""
    channels = None
    if any(model_registry.has_recipe(m, self.model_preset) for m in self.models):
      channels = _id_channels(id_name, self.data_dir, self.seed)
    configs_ = {m: resolve_train_config(self.config, m, self.seed, self.train_steps,
                                        self.train_args, self.model_preset, channels)
                for m in self.models}
    return dataclasses.replace(self, id=id_name, train_configs=configs_,
                               oods=self.oods if oods is None else tuple(oods))

  @property
  def config(self) -> configs.Preset:
    return configs.get_preset(self.preset)

  @property
  def command(self) -> str:
    """``python -m ood_jax.experiments.<experiment> <argv>``, shell-quoted."""
    return (f"python -m ood_jax.experiments.{self.experiment} "
            + " ".join(shlex.quote(a) for a in self.argv)).strip()

  # ------------------------------------------------------------------ models
  def make_model(self, name: str, hwc, **overrides):
    """Model ``name`` at the run's model preset with its ``--model-args``, then ``overrides``
    (an experiment's variant, e.g. ``mask='cycle'``: the variant's own settings win)."""
    return model_registry.make_model(name, self.model_preset, hwc,
                                     **{**self.model_args.get(name, {}), **overrides})

  def checkpoint_dir(self, name: str, model, train_set, config: TrainConfig | None = None,
                     label: str = "") -> str:
    """Where model ``name`` trained on ``train_set`` is cached: a readable slug (ID set,
    model, model preset, the variant's ``label``, explicit model settings, seed) plus a short hash of everything that
    changes the weights: the built module, the training config (``epochs`` left out when
    ``num_steps`` fixes the length) and the training images themselves (their bytes, so two
    data dirs with a same-named set, or another subset seed, never share a checkpoint)."""
    config = config or self.train_configs[name]
    cfg = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_WEIGHT_FIELDS}
    if cfg["num_steps"] is not None:
      cfg.pop("epochs")
    key = json.dumps({"model": repr(model), "train": cfg, "train_set": train_set.name,
                      "images": hashlib.sha256(train_set.x.tobytes()).hexdigest(),
                      "hwc": list(train_set.x.shape[1:])}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    variant = settings.render(self.model_args.get(name, {}))[:60]
    return os.path.join(self.ckpt_root, slug(train_set.name, name, self.model_preset, label[:40],
                                             variant, f"seed{config.seed}") + f"-{digest}")

  # ------------------------------------------------------------------ scores
  def score_settings(self, entry: str) -> dict[str, Any]:
    """The explicit settings of score entry ``entry``: the preset's, then ``--score-args``,
    then the entry's inline ones (the scorer's defaults fill the rest)."""
    score, inline = settings.parse_entry(entry)
    return {**self.config.score_settings.get(score, {}), **self.score_args.get(score, {}), **inline}

  def scorer(self, entry: str, model_name: str | None = None, ckpt_dir: str | None = None,
             base: Mapping[str, Any] | None = None, **settings_over):
    """The scorer of score entry ``entry`` (``name`` or ``name[field=value,...]``) with, in
    rising order, the preset's settings, ``base`` (an experiment's own defaults, e.g.
    table1's ``--b``), the run's ``--score-args``, the entry's inline settings and
    ``settings_over``; shared context: k, seed, progress, and for scorers that train models
    of their own the model's training config and ``<ckpt_dir>/<name>``."""
    score, inline = settings.parse_entry(entry)
    context = {"k": self.k, "seed": self.seed, "progress": self.progress}
    if model_name is not None:
      context["train_config"] = self.train_configs[model_name]
    if ckpt_dir is not None:
      context["ckpt_dir"] = os.path.join(ckpt_dir, score)
    settings_ = {**self.config.score_settings.get(score, {}), **(base or {}),
                 **self.score_args.get(score, {}), **inline, **settings_over}
    return get_scorer(score, context=context, **settings_)

  # ------------------------------------------------------------------ meta
  def scorer_meta(self, entry: str, **kwargs) -> dict:
    """Every field of the scorer ``Run.scorer(entry, **kwargs)`` builds (``meta.json``)."""
    sc = self.scorer(entry, **kwargs)
    return {f.name: getattr(sc, f.name) for f in dataclasses.fields(sc)
            if f.name not in ("progress", "train_config", "ckpt_dir", "ensemble_variables",
                              "background_variables", "rnd_variables")}

  def settings_meta(self) -> dict:
    """The resolved settings for ``meta.json``."""
    return {"experiment": self.experiment, "preset": self.preset, "seed": self.seed,
            "id": self.id, "ood": list(self.oods), "models": list(self.models),
            "scores": list(self.scores), "model_preset": self.model_preset,
            "model_args": {m: dict(v) for m, v in self.model_args.items()},
            "score_settings": {s: self.score_settings(s) for s in self.scores},  # explicit
            "scorers": {s: self.scorer_meta(s) for s in self.scores},          # resolved
            "train_args": dict(self.train_args),
            "train_configs": {m: dataclasses.asdict(c) for m, c in self.train_configs.items()},
            "n_train": self.n_train, "n_eval": self.n_eval, "k_importance": self.k,
            "options": dict(self.options), "ckpt_root": self.ckpt_root,
            **({"weights": {m: list(p) for m, p in self.weights.items()}} if self.weights else {})}


# ----------------------------------------------------------------------------- building


def _distribute(scoped: dict[str, dict], names: list[str], fields_of, what: str,
                flag: str) -> dict[str, dict]:
  """Bare fields (scope ``'*'``) go to every name whose fields include them; a bare field no
  name has is an error listing each name's fields."""
  out = {n: dict(scoped.get(n, {})) for n in names}
  for field, value in scoped.get("*", {}).items():
    takers = [n for n in names if field in fields_of(n)]
    if not takers:
      listing = "; ".join(f"{n}: {', '.join(sorted(fields_of(n)))}" for n in names)
      raise InvalidInputError(f"{flag}: no {what} of this run has a field {field!r}. Fields: {listing}.")
    for n in takers:
      out[n].setdefault(field, value)
  return {n: v for n, v in out.items() if v}


def _model_fields(name: str) -> set[str]:
  module = model_registry.spec(name).module
  return {f.name for f in dataclasses.fields(module) if f.init} - {"parent", "name", "image_shape"}


def _score_fields(name: str) -> set[str]:
  return set(scorer_fields(name))


def _check_model_args(models: list[str], model_preset: str, model_args: dict) -> None:
  for m in models:
    spec = model_registry.spec(m)
    settings_check.choose(f"model preset of {m!r}", model_preset, spec.presets)
    settings_check.check_settings(f"--model-args for model {m!r}", spec.module,
                                  model_args.get(m, {}), exclude=("parent", "name", "image_shape"))


def resolve_train_config(preset: configs.Preset, name: str, seed: int, train_steps: int | None,
                         train_args: Mapping[str, Any], model_preset: str | None = None,
                         channels: int | None = None) -> TrainConfig:
  """The ``TrainConfig`` of model ``name`` (see the module docstring for the order); the
  recipe of ``model_preset`` (if it has one) needs the ID data's ``channels``."""
  base = TrainConfig()
  cfg = dataclasses.replace(preset.train, seed=seed)
  fill = {k: v for k, v in model_registry.train_defaults(name).items()
          if getattr(cfg, k) == getattr(base, k)}
  fill.update(model_registry.budget(name, preset.name))
  if model_preset is not None and model_registry.has_recipe(name, model_preset):
    if channels is None:
      raise InvalidInputError(f"the {model_preset!r} recipe of {name!r} needs the data's channels.")
    fill.update(model_registry.recipe(name, model_preset, channels, preset.name))
  cfg = dataclasses.replace(cfg, **fill)
  if train_steps is not None:
    cfg = dataclasses.replace(cfg, num_steps=int(train_steps))
  if "epochs" in train_args and "num_steps" not in train_args:
    cfg = dataclasses.replace(cfg, num_steps=None)      # explicit epochs: not the preset's steps
  return dataclasses.replace(cfg, **train_args)


def _id_channels(id_name: str, data_dir: str | None, seed: int) -> int:
  """Channels of the ID set (one image of its training split loaded; of its test split where
  it has no training split, for experiments that train on a part of it), for grey/colour
  training recipes."""
  from ood_jax import data  # noqa: PLC0415  (only runs that need it pay for the load)
  from ood_jax.errors import DatasetNotFoundError  # noqa: PLC0415
  try:
    return int(data.load(id_name, "train", data_dir=data_dir, n=1, seed=seed).x.shape[-1])
  except DatasetNotFoundError:
    return int(data.load(id_name, "test", data_dir=data_dir, n=1, seed=seed).x.shape[-1])


def _unique_names(names, flag: str) -> None:
  """One error for a name given twice (``--models vae,vae``), before any work."""
  twice = sorted({n for n in names if list(names).count(n) > 1})
  if twice:
    raise InvalidInputError(f"{flag}: {', '.join(twice)} given more than once.")


def _check_numbers(args) -> None:
  """Range checks of the numeric common flags (argparse checks only that they are ints)."""
  checks = (("seed", 0, "a seed must be a non-negative integer below 2**32"),
            ("n_eval", 1, "at least one image per set"),
            ("train_steps", 1, "at least one training step (0 would score an untrained model)"),
            ("k", 1, "at least one importance sample"))
  for dest, low, why in checks:
    v = getattr(args, dest, None)
    if v is not None and (int(v) < low or (dest == "seed" and int(v) >= 2 ** 32)):
      raise InvalidInputError(f"--{dest.replace('_', '-')} {v}: {why}.")


def check_writable_dir(path: str, flag: str) -> None:
  """Raises ``InvalidInputError`` unless ``path`` is (or can be created as) a directory this
  process can write in: an existing file, a path under a file, or an unwritable or
  read-only location fails now, with one line, instead of after the training. Creates
  nothing (a probe file in the nearest existing directory is removed at once)."""
  import tempfile  # noqa: PLC0415
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise InvalidInputError(f"{flag} {path}: exists and is not a directory.")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise InvalidInputError(f"{flag} {path}: {parent} is a file, not a directory.")
  try:
    fd, probe = tempfile.mkstemp(prefix=".ood-jax-write-check-", dir=parent)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise InvalidInputError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e}).") from None


WEIGHT_MODELS = ("vae",)          # models --weights can load (the reference VAE's layout)


def parse_weights(entries, models) -> dict[str, tuple[str, ...]]:
  """``--weights MODEL=PATH[,PATH]`` (repeatable) -> ``{model: paths}``, checked now: the model
  is one of --models and loadable, the paths exist (two .pth, or one .npz)."""
  out: dict[str, tuple[str, ...]] = {}
  for entry in entries or ():
    name, sep, paths = str(entry).partition("=")
    name, paths = name.strip(), tuple(p.strip() for p in paths.split(",") if p.strip())
    if not sep or not name or not paths:
      raise InvalidInputError(f"--weights {entry!r}: expected MODEL=PATH[,PATH], e.g. "
                              "vae=netE.pth,netG.pth or vae=weights.npz.")
    if name not in models:
      raise InvalidInputError(f"--weights {entry!r}: model {name!r} is not in --models {list(models)}.")
    if name not in WEIGHT_MODELS:
      raise InvalidInputError(f"--weights {entry!r}: given weights load into {WEIGHT_MODELS} only "
                              f"(the reference VAE's torch layout), not {name!r}.")
    if name in out:
      raise InvalidInputError(f"--weights: {name} given more than once.")
    kinds = [os.path.splitext(p)[1].lower() for p in paths]
    if not (kinds == [".npz"] or (len(paths) == 2 and all(k in (".pth", ".pt") for k in kinds))):
      raise InvalidInputError(f"--weights {entry!r}: give an encoder,decoder .pth pair or one .npz.")
    for path in paths:
      if not os.path.isfile(path):
        raise InvalidInputError(f"--weights {entry!r}: no such file {path}.")
    out[name] = paths
  return out


def make_run(experiment: str, args, *, options: Mapping[str, Any] | None = None,
             argv=(), model_presets: Mapping[str, str] | None = None) -> Run:
  """The checked ``Run`` of parsed flags ``args`` (an ``argparse.Namespace`` with the common
  flags of ``cli.COMMON_FLAGS``); ``model_presets`` maps experiment presets to the model
  preset used when ``--model-preset`` is not given (else the experiment preset's own);
  raises ``UnknownNameError`` / ``InvalidInputError``."""
  if getattr(args, "download", False):   # every data.load of this process may download
    os.environ[data_registry.ENV_DOWNLOAD] = "1"
  preset = configs.get_preset(args.preset)
  _check_numbers(args)
  models = split_list(getattr(args, "models", ""))
  _unique_names(models, "--models")
  _unique_names(split_list(getattr(args, "ood", "")), "--ood")
  scores = settings.split_top_level(getattr(args, "scores", "") or "")
  for m in models:
    model_registry.check_name(m)
  _unique_names(scores, "--scores")
  score_names = list(dict.fromkeys(settings.parse_entry(s)[0] for s in scores))
  for s in score_names:
    scorer_class(s)
  model_preset = (getattr(args, "model_preset", None) or dict(model_presets or {}).get(preset.name)
                  or preset.model_preset)
  model_args = _distribute(settings.parse_scoped(getattr(args, "model_args", None), "--model-args",
                                                 models, "model"),
                           models, _model_fields, "model", "--model-args")
  _check_model_args(models, model_preset, model_args)
  score_args = _distribute(settings.parse_scoped(getattr(args, "score_args", None), "--score-args",
                                                 score_names, "score"),
                           score_names, _score_fields, "score", "--score-args")
  train_args = settings.train_pairs(getattr(args, "train_args", None))
  settings_check.check_settings("--train-args", TrainConfig, train_args)
  seed = int(args.seed)
  channels = None
  if any(model_registry.has_recipe(m, model_preset) for m in models):
    try:
      channels = _id_channels(args.id, args.data_dir, seed)
    except DatasetNotFoundError:
      if not getattr(args, "id_optional", False):
        raise
      channels = 1   # experiments over --pairs resolve each ID set's configs (Run.for_id)
  train_configs = {m: resolve_train_config(preset, m, seed, getattr(args, "train_steps", None),
                                           train_args, model_preset, channels) for m in models}
  n_eval = getattr(args, "n_eval", None)
  k = getattr(args, "k", None)
  out = args.out or os.path.join("runs", f"{experiment}_{args.id}_{args.preset}")
  if args.ckpt_dir:
    ckpt_root = args.ckpt_dir
  else:
    ckpt_root = os.path.join(args.out, "checkpoints") if args.out else os.path.join("runs", "checkpoints")
  if args.data_dir and not os.path.isdir(args.data_dir):
    raise InvalidInputError(f"--data-dir {args.data_dir}: no such directory.")
  weights = parse_weights(getattr(args, "weights", None), models)
  check_writable_dir(out, "--out")
  report.recover(out)          # a report write killed part-way: the checkpoints come back first
  check_writable_dir(ckpt_root, "--ckpt-dir" if args.ckpt_dir else "the checkpoint directory")
  run = Run(experiment=experiment, preset=preset.name, id=args.id,
            oods=tuple(split_list(getattr(args, "ood", ""))), models=tuple(models),
            scores=tuple(scores), model_preset=model_preset, model_args=model_args,
            score_args=score_args, train_args=train_args, train_configs=train_configs,
            data_dir=args.data_dir, out=out, ckpt_root=ckpt_root, seed=seed,
            progress=not args.no_progress, n_train=preset.n_train,
            n_eval=n_eval if n_eval is not None else preset.n_eval,
            k=k if k is not None else preset.k, options=dict(options or {}), argv=tuple(argv),
            train_steps=getattr(args, "train_steps", None), weights=weights,
            download=bool(getattr(args, "download", False)))
  for s in scores:                     # every scorer's own checks (ranges, choices): now
    run.scorer(s)
  return run
