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
from ood_jax.models import registry as model_registry
from ood_jax.scores import get_scorer
from ood_jax.train import TrainConfig, TrainResult, train


def split_list(arg: str | None) -> list[str]:
  return [s.strip() for s in (arg or "").split(",") if s.strip()]


def ood_spec(name: str, id_name: str) -> str:
  """An OOD entry that starts with a transform (``rotation``, ``brightness:0.5``) means
  the in-distribution test set with that transform."""
  return f"{id_name}+{name}" if data.is_transform(name.split("+")[0]) else name


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
    s = data.load(ood_spec(name, id_name), "test", data_dir=data_dir, n=n_eval, seed=seed + 2,
                  like=like)
    ood[name] = dataclasses.replace(s, x=data.conform(s.x, hwc))
  conform = lambda s: dataclasses.replace(s, x=data.conform(s.x, hwc))
  return Sets(hwc=hwc, train=conform(train_set), test=conform(test_set), ood=ood)


def slug(*parts) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts))


def train_or_load(model_name: str, model_preset: str, sets: Sets, config: TrainConfig,
                  ckpt_root: str, *, progress: bool) -> tuple[object, TrainResult]:
  """Trains ``model_name`` on the ID training set, or loads its finished checkpoint."""
  model = model_registry.make_model(model_name, model_preset, sets.hwc)
  ckpt = os.path.join(ckpt_root, slug(sets.train.name, model_name, model_preset,
                                      f"seed{config.seed}"))
  result = train(model, sets.train.x, config, ckpt, progress=progress,
                 desc=f"train {model_name} on {sets.train.name}")
  return model, result


def score_all(model, variables, score_names: list[str], sets: Sets, *, k: int, seed: int,
              progress: bool) -> dict[str, dict[str, np.ndarray]]:
  """``{score: {'__id__': s_id, ood_name: s_ood, ...}}`` for one trained model."""
  out = {}
  for name in score_names:
    scorer = get_scorer(name, k=k, seed=seed, progress=progress)
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
