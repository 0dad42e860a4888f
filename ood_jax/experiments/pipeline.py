"""Steps shared by the table experiments: load sets, train (or load) models, score, tabulate.

Everything that can be checked is checked before any training starts, so bad input
fails at once and leaves nothing in the output directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time

import jax
import numpy as np

from ood_jax import data, metrics
from ood_jax.data import ImageSet, synthetic
from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError, NonFiniteScoresError
from ood_jax.experiments import score_file
from ood_jax.experiments.run import split_list  # noqa: F401  (re-exported)
from ood_jax.models import registry as model_registry
from ood_jax.train import TrainConfig, TrainResult, train, update_for


def ood_spec(name: str, id_name: str) -> str:
  """An OOD entry that starts with a transform (``rotation``, ``brightness:0.5``) means
  the in-distribution test set with that transform."""
  return f"{id_name}+{name}" if data.is_transform(name.split("+")[0]) else name


OVERALL = "overall"


def _is_synthetic(spec: str) -> bool:
  """Whether ``spec``'s base set is generated (``noise``, ``constant``, ``constant:<v>``)."""
  return synthetic.is_synthetic(canonical_name(data.parse_spec(spec)[0]))


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
    spec = ood_spec(name, id_name)
    # a synthetic set is never larger than the ID test set (not the generator's 10000 default)
    n = min(n_eval or len(test_set.x), len(test_set.x)) if _is_synthetic(spec) else n_eval
    s = data.load(spec, "test", data_dir=data_dir, n=n, seed=seed + 2, like=like)
    ood[name] = dataclasses.replace(s, x=data.conform(s.x, hwc))
  if OVERALL in ood_names:
    ood = {n: (overall_set(ood, seed + 3) if n == OVERALL else ood[n]) for n in ood_names}
  conform = lambda s: dataclasses.replace(s, x=data.conform(s.x, hwc))
  return Sets(hwc=hwc, train=conform(train_set), test=conform(test_set), ood=ood)


def data_sources(sets: Sets) -> dict[str, str]:
  """``meta.json``'s ``data_sources``: where the ID train/test and every OOD set came from."""
  return {"id_train": sets.train.source, "id_test": sets.test.source,
          **{n: s.source for n, s in sets.ood.items()}}


def sets_for(run, models=None, oods=None, n_eval=None) -> dict[str, Sets]:
  """``{model: sets conformed to its input shape}`` for ``models`` (default the run's) and
  ``oods`` (default the run's); the sets are loaded once per distinct input shape (the flows
  and PixelCNN++ take 28 x 28 FashionMNIST, the VAE 32 x 32), so one table can hold models of
  different input sizes."""
  models = list(run.models if models is None else models)
  oods = list(run.oods if oods is None else oods)
  n_eval = run.n_eval if n_eval is None else n_eval
  id_hwc = tuple(data.load(run.id, "train", data_dir=run.data_dir, n=1, seed=run.seed).x.shape[1:])
  groups: dict[tuple, list[str]] = {}
  for m in models:
    groups.setdefault(model_registry.input_shape(m, id_hwc), []).append(m)
  for hwc, group in groups.items():
    for m in group:      # every model's own checks of its settings (e.g. an unknown mask): now
      run.make_model(m, hwc)
  out = {}
  for group in groups.values():
    sets = load_sets(run.id, oods, group, data_dir=run.data_dir, n_train=run.n_train,
                     n_eval=n_eval, seed=run.seed)
    out.update({m: sets for m in group})
  return out


def shapes_meta(sets: dict[str, Sets]) -> dict:
  """``{'input_shape': ...}`` for ``meta.json``: one shape, or ``{model: shape}`` if several."""
  shapes = {m: list(v.hwc) for m, v in sets.items()}
  distinct = {tuple(v) for v in shapes.values()}
  return {"input_shape": list(distinct.pop()) if len(distinct) == 1 else shapes}


@dataclasses.dataclass
class Trained:
  """A model trained (or loaded) for a run: the module, its training result and cache."""
  name: str
  model: object
  result: TrainResult
  config: TrainConfig
  ckpt_dir: str

  @property
  def variables(self):
    return self.result.variables

  @property
  def scores_ckpt_dir(self) -> str:
    """Where scorers that train models of their own cache them: beside the model's checkpoint."""
    return self.ckpt_dir + "_scores"

  def meta(self) -> dict:
    r = self.result
    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(r.variables.get("params", {})))
    return {"parameters": n_params, "train_steps": r.step, "resumed_from": r.resumed_from,
            "train_seconds_this_run": round(r.seconds, 1), "checkpoint": self.ckpt_dir,
            "final_train_loss_nats": r.history[-1]["loss"] if r.history else None}


def train_or_load(run, name: str, sets: Sets, overrides: dict | None = None,
                  label: str = "", config: TrainConfig | None = None) -> Trained:
  """Trains model ``name`` on the ID training set with the run's config, or loads its
  finished checkpoint from the run's cache (one directory per weight-changing setting).

  ``overrides``: module settings of an experiment's variant (over ``--model-args``), e.g.
  ``{'mask': 'cycle'}``; ``label`` names the variant in its checkpoint directory (the
  directory's hash already tells variants apart); ``config`` replaces the run's config.
  A model whose ``ModelSpec.trainer`` is an update rule (``gan_vae``: Soft-IntroVAE) trains
  with it (``ood_jax.train.update_for``)."""
  if name in getattr(run, "weights", {}) and not overrides:
    return given_weights(run, name, sets)
  model = run.make_model(name, sets.hwc, **(overrides or {}))
  config = config or run.train_configs[name]
  ckpt = run.checkpoint_dir(name, model, sets.train, config, label=label)
  what = f"{name}[{label}]" if label else name
  result = train(model, sets.train.x, config, ckpt, progress=run.progress,
                 desc=f"train {what} on {sets.train.name}", update=update_for(name))
  return Trained(name=name, model=model, result=result, config=config, ckpt_dir=ckpt)


def load_given_weights(paths) -> tuple[object, dict]:
  """``(model, variables)`` of ``--weights`` paths: an encoder/decoder ``.pth`` pair (the
  authors' torch checkpoints, read without PyTorch) or one ``.npz`` in netE/ netG/ layout."""
  from ood_jax.models import torch_pth, torch_weights
  if len(paths) == 1:
    return torch_weights.load_reference_vae(paths[0])
  return torch_pth.load_torch_checkpoint(*paths)


def given_weights(run, name: str, sets: Sets) -> Trained:
  """A model scored with ``--weights`` instead of trained: no training, step 0; scorers that
  train models of their own cache them under a directory named by the weights' sha256."""
  paths = run.weights[name]
  with Timer() as t:
    model, variables = load_given_weights(paths)
  shape = tuple(model.image_shape)
  if shape != tuple(sets.hwc):
    raise InvalidInputError(f"--weights {name}: the weights are for {shape} images, the sets "
                            f"are conformed to {tuple(sets.hwc)}; use a matching --id.")
  digest = hashlib.sha256()
  for p in paths:
    with open(p, "rb") as f:
      digest.update(hashlib.sha256(f.read()).digest())
  result = TrainResult(variables=variables, step=0, resumed_from=None, history=[],
                       seconds=t.seconds)
  ckpt = os.path.join(run.ckpt_root, f"given_{name}-{digest.hexdigest()[:12]}")
  return Trained(name=name, model=model, result=result, config=run.train_configs[name],
                 ckpt_dir=ckpt)


def score_all(run, trained: Trained, sets: Sets, scores=None, base=None,
              **settings_over) -> dict[str, dict[str, np.ndarray]]:
  """``{score: {'__id__': s_id, ood_name: s_ood, ...}}`` for one trained model, each scorer
  with the run's settings (``Run.scorer``: ``base`` under ``--score-args``,
  ``settings_over`` above) fitted on the ID training set."""
  out = {}
  for name in (run.scores if scores is None else scores):
    scorer = run.scorer(name, trained.name, trained.scores_ckpt_dir, base=base, **settings_over)
    state = scorer.fit(trained.model, trained.variables, sets.train.x)
    vals = {}
    for set_name, s in [("__id__", sets.test), *sets.ood.items()]:
      try:
        vals[set_name] = scorer.score(state, s.x)
      except NonFiniteScoresError as e:
        if not e.all_bad:
          raise
        raise NonFiniteScoresError(
            f"{e} Model {trained.name!r} (checkpoint {trained.ckpt_dir}), set "
            f"{s.name!r}: delete that checkpoint to retrain, or check its training log.",
            all_bad=True) from None
    out[name] = vals
  return out


def score_arrays(id_name: str, vals_by_model: dict[str, dict], sets: Sets) -> dict:
  """``scores.npz`` contents: every model's raw ``score_all`` output and the image indices of
  each set's seeded subset (``ImageSet.indices``)."""
  scores = {(m, score, set_name): v for m, vals in vals_by_model.items()
            for score, by_set in vals.items() for set_name, v in by_set.items()}
  indices = {score_file.ID_SET: getattr(sets.test, "indices", None),
             **{n: getattr(s, "indices", None) for n, s in sets.ood.items()}}
  return score_file.to_arrays(id_name, scores, indices)


def samples_for(id_name: str, model_name: str, vals: dict, hwc=None) -> dict:
  """``score_samples`` of the report for one model's ``score_all`` output: bits/dim for
  ``nll`` (given ``hwc``), the score itself otherwise."""
  samples = {}
  for score_name, v in vals.items():
    if score_name == "nll" and hwc is not None:
      plot, xlabel = {n: bits_per_dim(s, hwc) for n, s in v.items()}, "bits/dim"
    else:
      plot, xlabel = v, f"{score_name} score (higher = more OOD)"
    samples[(model_name, score_name)] = {
        "id_name": f"{id_name} test", "id": plot["__id__"],
        "ood": {n: s for n, s in plot.items() if n != "__id__"}, "xlabel": xlabel}
  return samples


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
