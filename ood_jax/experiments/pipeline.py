"""Steps shared by the table experiments: load sets, train (or load) models, score, tabulate.

Everything that can be checked is checked before any training starts, so bad input
fails at once and leaves nothing in the output directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import numpy as np

from ood_jax import data, metrics
from ood_jax.data import ImageSet
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import configs
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer
from ood_jax.train import TrainConfig, TrainResult, train


def split_list(arg: str | None) -> list[str]:
  return [s.strip() for s in (arg or "").split(",") if s.strip()]


def ood_spec(name: str, id_name: str) -> str:
  """An OOD entry that starts with a transform (``rotation``, ``brightness:0.5``) means
  the in-distribution test set with that transform."""
  return f"{id_name}+{name}" if data.is_transform(name.split("+")[0]) else name


OVERALL = "overall"


def overall_set(ood: dict[str, ImageSet], seed: int) -> ImageSet:
  """ROSE's ``overall`` OOD set (§5.1): an equal mix of every other OOD set, ``m`` random
  images of each, ``m = min_i |set_i| // (number of sets)`` (so it is about one set's size)."""
  if not ood:
    raise InvalidInputError("OOD set 'overall' is an equal mix of the other OOD sets given with "
                            "--ood, and none were given.")
  rng = np.random.default_rng(seed)
  m = max(1, min(len(s.x) for s in ood.values()) // len(ood))
  parts = [s.x[np.sort(rng.choice(len(s.x), m, replace=False))] for s in ood.values()]
  source = "equal mix of " + ", ".join(f"{m} x {n}" for n in ood)
  return ImageSet(name=OVERALL, split="test", x=np.concatenate(parts), source=source)


@dataclasses.dataclass
class Sets:
  hwc: tuple[int, int, int]          # model input shape every set is conformed to
  train: ImageSet
  test: ImageSet
  ood: dict[str, ImageSet]


def load_sets(id_name: str, ood_names: list[str], model_names: list[str], *, data_dir, n_train,
              n_eval, seed) -> Sets:
  """Loads ID train/test and every OOD set, conformed to the models' input shape."""
  if not ood_names:
    raise InvalidInputError("no OOD sets given (--ood).")
  train_set = data.load(id_name, "train", data_dir=data_dir, n=n_train, seed=seed)
  test_set = data.load(id_name, "test", data_dir=data_dir, n=n_eval, seed=seed + 1)
  shapes = {model_registry.input_shape(m, train_set.x.shape[1:]) for m in model_names}
  if len(shapes) != 1:
    raise InvalidInputError(f"models {model_names} need different input shapes {shapes}; "
                            "run them separately.")
  hwc = shapes.pop()
  like = tuple(test_set.x.shape[1:])
  ood = {}
  for name in ood_names:
    if name == OVERALL:
      continue
    s = data.load(ood_spec(name, id_name), "test", data_dir=data_dir, n=n_eval, seed=seed + 2,
                  like=like)
    ood[name] = dataclasses.replace(s, x=data.conform(s.x, hwc))
  if OVERALL in ood_names:
    ood = {n: (overall_set(ood, seed + 3) if n == OVERALL else ood[n]) for n in ood_names}
  conform = lambda s: dataclasses.replace(s, x=data.conform(s.x, hwc))
  return Sets(hwc=hwc, train=conform(train_set), test=conform(test_set), ood=ood)


def data_sources(sets: Sets) -> dict[str, str]:
  """``meta.json``'s ``data_sources``: where the ID train/test and every OOD set came from."""
  return {"id_train": sets.train.source, "id_test": sets.test.source,
          **{n: s.source for n, s in sets.ood.items()}}


def slug(*parts) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts))


def model_train_config(model_name: str, config: TrainConfig,
                       model_preset: str | None = None) -> TrainConfig:
  """The experiment's TrainConfig for one model: the model's own defaults (flows: warm-up,
  clipping) where the experiment leaves them off, then the model's training budget under
  ``model_preset`` (``configs.MODEL_BUDGETS``: slower models train shorter on a CPU)."""
  base = TrainConfig()
  fill = {k: v for k, v in model_registry.train_defaults(model_name).items()
          if getattr(config, k) == getattr(base, k)}
  fill.update(configs.MODEL_BUDGETS.get(model_preset, {}).get(model_name, {}))
  return dataclasses.replace(config, **fill)


def ckpt_root(ckpt_dir: str | None, out: str | None) -> str:
  """The trained-model cache: ``--ckpt-dir``; else ``<out>/checkpoints`` when ``--out`` is
  given; else ``runs/checkpoints``, shared by every experiment run with default paths."""
  if ckpt_dir:
    return ckpt_dir
  return os.path.join(out, "checkpoints") if out else os.path.join("runs", "checkpoints")


def checkpoint_dir(ckpt_root: str, train_name: str, model_name: str, model_preset: str,
                   seed: int) -> str:
  """Where a trained model is cached: one directory per (ID set, model, preset, seed)."""
  return os.path.join(ckpt_root, slug(train_name, model_name, model_preset, f"seed{seed}"))


def train_or_load(model_name: str, model_preset: str, sets: Sets, config: TrainConfig,
                  ckpt_root: str, *, progress: bool) -> tuple[object, TrainResult]:
  """Trains ``model_name`` on the ID training set, or loads its finished checkpoint."""
  model = model_registry.make_model(model_name, model_preset, sets.hwc)
  config = model_train_config(model_name, config, model_preset)
  ckpt = checkpoint_dir(ckpt_root, sets.train.name, model_name, model_preset, config.seed)
  result = train(model, sets.train.x, config, ckpt, progress=progress,
                 desc=f"train {model_name} on {sets.train.name}")
  return model, result


def score_all(model, variables, score_names: list[str], sets: Sets, *, k: int, seed: int,
              progress: bool, ckpt_dir: str | None = None,
              train_config: TrainConfig | None = None,
              score_settings: dict[str, dict] | None = None) -> dict[str, dict[str, np.ndarray]]:
  """``{score: {'__id__': s_id, ood_name: s_ood, ...}}`` for one trained model.

  Scorers that train models of their own (``waic``'s ensemble, ``likelihood_ratio``'s
  background model) cache them under ``ckpt_dir`` and train with ``train_config``.
  ``score_settings[name]`` overrides scorer ``name``'s fields (a preset's
  ``score_settings``, e.g. fewer Monte-Carlo rounds on a CPU).
  """
  out = {}
  for name in score_names:
    kwargs = dict(k=k, seed=seed, progress=progress, train_config=train_config,
                  ckpt_dir=None if ckpt_dir is None else os.path.join(ckpt_dir, name))
    kwargs.update((score_settings or {}).get(name, {}))
    scorer = get_scorer(name, **kwargs)
    state = scorer.fit(model, variables, sets.train.x)
    vals = {"__id__": scorer.score(state, sets.test.x)}
    for ood_name, s in sets.ood.items():
      vals[ood_name] = scorer.score(state, s.x)
    out[name] = vals
  return out


def metric_rows(id_name: str, model_name: str, scores: dict) -> list[dict]:
  rows = []
  for score_name, vals in scores.items():
    for ood_name, s_ood in vals.items():
      if ood_name == "__id__":
        continue
      m = metrics.ood_metrics(vals["__id__"], s_ood)
      rows.append({"id": id_name, "model": model_name, "score": score_name, "ood": ood_name, **m})
  return rows


def bits_per_dim(nll_nats: np.ndarray, hwc) -> np.ndarray:
  return nll_nats / (int(np.prod(hwc)) * math.log(2.0))


class Timer:
  def __enter__(self):
    self.t0 = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.t0
