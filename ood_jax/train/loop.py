"""The training loop: one jit-compiled, data-parallel step; orbax checkpoints; exact resume.

Data (``train``'s ``data``, and its optional OOD stream ``ood``) is one of

* uint8 images ``N x H x W x C``, checked against ``model.image_shape`` (when the model has
  one; a model with ``image_shape`` always takes images);
* float32 vectors ``N x D``, finite, for models without ``image_shape`` (e.g. a vector
  RealNVP, ``__call__(x float32[N, D], train) -> NLL nats [N]``);
* a dict ``{key: array}`` of equal leading length, e.g. ``{'x': uint8 images, 'y': int
  labels}`` for a classifier whose ``__call__(batch_dict, train)`` returns the per-sample
  cross-entropy. Float arrays in it must be finite; 4-D uint8 ones are checked as images.

Batches keep the data's structure; ``model.init`` is called with the first ``batch_size``
examples. ``model.apply(variables, batch, train=True)`` returns the per-sample loss ``[N]``.

Objective: the scalar loss is ``objective(id_losses, ood_losses)`` of the per-sample losses
on the ID batch and on the OOD batch (an empty ``[0]`` array without an OOD stream); the
default (``None``) is the mean of the ID losses: plain maximum likelihood. An objective
with ``needs_ood = True`` (``ood_jax.train.negative``) is refused without an OOD stream, and an
OOD stream without an objective is refused (the default would ignore it).

OOD stream: each step also draws ``config.batch_size`` examples of ``ood`` in an order of its
own, a function of ``(seed, step)`` only (stream 1 of ``batches.epoch_permutation``, independent
of the ID order), cycling through epochs of the OOD set's own length. The ID and OOD batches go
through the model as ONE concatenated batch ``[ID; OOD]`` (one forward call), so train-mode
BatchNorm normalises with the statistics of the joint batch, and its running averages track
them, as Kirichenko et al.'s reference code does (``train_unsup_ood_negative.py`` runs
``net(torch.cat((x, x_ood)))``); the losses are split back into the two parts.

Everything random is a function of ``(config.seed, step)``: the batch orders
(``epoch_permutation``) and the model's noise (``fold_in(seed, step)``). A run killed
after its checkpoint at step s and resumed therefore ends with the same parameters as an
uninterrupted run, with or without an OOD stream.

Checkpoint meta: the model, the weight-changing config fields, ``n_train``, ``total_steps``,
``ood`` (None, or the OOD set's size, per-example shapes and dtypes and the sha256 of its
bytes) and ``objective`` (None for the default, else ``describe_objective``), so a checkpoint
trained with another OOD set or objective, or without them, is never resumed or loaded as
this one (checkpoints written before these keys existed read as None: plain training).

Checkpoint callback: ``train(..., on_checkpoint=fn)`` calls ``fn(step, variables)`` at every
checkpoint of the run: once for the state it starts from (step 0 and the initial variables for
a fresh run; the restored step for a resumed or finished one), then at every
``config.checkpoint_every``-th step and the last (after the save, with ``ckpt_dir``; at the same
steps without one), never at a ``stop_after`` end. ``variables`` are the live, replicated device
arrays: the next step donates them, so keep copies (``jax.device_get``), not references.
:class:`EvalCurve` is such a callback: the mean eval-mode loss and bits/dim of named eval sets
at every checkpoint (e.g. Nalisnick et al.'s Fig. 4d), one compiled function for the whole run,
its points saved as JSON beside the checkpoints so a resumed run continues the curve.

Update rules: ``train(..., update=rule)`` replaces the one optimiser on one loss by ``rule``'s own
step (:class:`UpdateRule`, e.g. ``ood_jax.train.soft_intro.SoftIntro``: an encoder step then a
decoder step with two optimisers). The loop keeps everything else: the batch order, the NaN guard
(a step whose ``stats['loss']`` or ``stats['grad_norm']`` is not finite leaves the state unchanged
and records ``bad_step``), checkpoints and exact resume (the rule's randomness must be a function
of ``(seed, state.step)``), and the meta records ``rule.describe()`` under ``update`` (None for the
default), so a checkpoint of another rule is never resumed or loaded as this one. An update rule
takes no OOD stream or objective.

Batch transforms: ``train(..., batch_transform=fn)`` replaces each host-side ID batch by
``fn(batch, step)`` (numpy in, numpy out of the same structure, shapes and dtypes; ``step`` the
global step) before it goes to the devices, e.g. a fresh perturbation of every batch for a
likelihood-ratio background model (``ood_jax.data.perturbations.BatchPerturbation``). Its
randomness must be a function of ``(its own seed, step)`` so a resumed run sees the batches an
uninterrupted one does; the OOD stream and the example batch given to ``model.init`` are not
transformed. The meta records ``describe_transform(fn)`` under ``batch_transform`` (None
without one, which is also what checkpoints from before the key read as), so a checkpoint
trained on other transformed batches, or on untransformed ones, is never resumed or loaded
as this one.

History: ``{'step', 'loss', 'bits_per_dim'}`` per log period (means over it): the objective,
and bits/dim of the mean ID per-sample loss (``D`` = H W C for images; for vectors ``D`` is
their dimension, the bits per dimension of the continuous density; None for dicts); with a
non-default objective also ``'id_loss'``, with an OOD stream ``'ood_loss'`` (mean per-sample
losses of each part); with an update rule also ``'id_loss'`` and the means of every other
statistic its step returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ood_jax.data import batches
from ood_jax.data.pixels import num_dims, validate_images
from ood_jax.errors import CheckpointError, InvalidInputError, TrainingDivergedError
from ood_jax.train import checkpoint
from ood_jax.train.config import NOT_WEIGHT_FIELDS, TrainConfig
from ood_jax.train.optim import make_optimizer
from ood_jax.train.state import TrainState, create

RNG_STREAMS = ("sample", "dequant", "dropout")
OOD_STREAM = 1        # ``batches.epoch_permutation`` stream of the OOD batch order

# objective(id_losses float32[B], ood_losses float32[B_ood]) -> scalar loss
Objective = Callable[[jax.Array, jax.Array], jax.Array]
# on_checkpoint(step, variables) -> None, called at every checkpoint (module docstring)
CheckpointCallback = Callable[[int, dict], Any]
# batch_transform(host batch, global step) -> host batch of the same structure (module docstring)
BatchTransform = Callable[[Any, int], Any]


class UpdateRule(Protocol):
  """A training step other than the default one (see the module docstring).

  ``init(params, config, steps_per_epoch)``: the optimiser state of the initial ``params``
  (any pytree; it is checkpointed with the rest of the state).
  ``make_step(model, config, seed, steps_per_epoch)``: a pure, jit-able
  ``step(state: TrainState, batch) -> (state, stats)`` returning the updated ``params``,
  ``model_state`` and ``opt_state`` (``state.replace(...)``; the loop sets ``step`` and
  ``bad_step``), its randomness a function of ``(seed, state.step)`` only; ``stats``: float32
  scalars, at least ``'loss'`` (what the step minimises), ``'id_loss'`` (the mean per-sample
  loss in nats, for bits/dim) and ``'grad_norm'`` (the global norm of every gradient it
  applied; with ``'loss'``, what the NaN guard checks); any others go into the history.
  ``describe()``: a JSON-able dict naming the rule and its settings (checkpoint meta).
  """

  def init(self, params: Any, config: TrainConfig, steps_per_epoch: int) -> Any: ...

  def make_step(self, model: nn.Module, config: TrainConfig, seed: int,
                steps_per_epoch: int) -> Callable: ...

  def describe(self) -> dict: ...


@dataclasses.dataclass
class TrainResult:
  variables: dict            # {'params': ..., 'batch_stats': ...}
  step: int                  # updates applied in total
  resumed_from: int | None   # step restored from a checkpoint, if any
  history: list[dict]        # [{'step', 'loss', 'bits_per_dim', ...}], mean over each log period
  seconds: float             # wall time of this call


def rngs_for(key: jax.Array) -> dict[str, jax.Array]:
  """Independent keys for every rng stream a model may ask for."""
  return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))


def init_variables(model: nn.Module, x_example, seed: int) -> dict:
  """``model.init`` on an example batch (an array or a dict of arrays)."""
  key = jax.random.PRNGKey(seed)
  return model.init({"params": key, **rngs_for(jax.random.fold_in(key, 1))},
                    jax.tree.map(jnp.asarray, x_example), train=False)


def mean_id_loss(id_losses: jax.Array, ood_losses: jax.Array) -> jax.Array:
  """The default objective: the mean ID per-sample loss (the OOD losses are ignored)."""
  del ood_losses
  return jnp.mean(id_losses)


# ----------------------------------------------------------------------------- data checks


def _is_float_matrix(x) -> bool:
  return (isinstance(x, (np.ndarray, jax.Array)) and x.ndim == 2
          and np.issubdtype(x.dtype, np.floating))


def _check_vectors(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.float32:
    raise InvalidInputError(
        f"{what}: vectors must be float32 N x D, got {x.dtype}; cast with x.astype(np.float32).")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise InvalidInputError(f"{what}: the set of vectors is empty (shape {x.shape}).")
  if not np.all(np.isfinite(x)):
    raise InvalidInputError(f"{what}: the vectors contain NaN or inf values.")
  return x


def _check_dict(data: Mapping, model: nn.Module, what: str) -> dict:
  if not data:
    raise InvalidInputError(f"{what}: the dict of arrays is empty.")
  hwc = getattr(model, "image_shape", None)
  out, lengths = {}, {}
  for key, v in data.items():
    if not isinstance(key, str):
      raise InvalidInputError(f"{what}: dict keys must be strings, got {key!r}.")
    if isinstance(v, jax.Array):
      v = np.asarray(v)
    if not isinstance(v, np.ndarray) or v.ndim < 1:
      raise InvalidInputError(
          f"{what}[{key!r}]: expected a numpy array with the examples on axis 0, got "
          f"{type(v).__name__}{'' if not isinstance(v, np.ndarray) else ' of shape ' + str(v.shape)}.")
    if not (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_):
      raise InvalidInputError(f"{what}[{key!r}]: expected a numeric array, got dtype {v.dtype}.")
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
      raise InvalidInputError(f"{what}[{key!r}]: contains NaN or inf values.")
    if v.dtype == np.uint8 and v.ndim == 4:
      v = validate_images(v, what=f"{what}[{key!r}]", hwc=None if hwc is None else tuple(hwc))
    out[key], lengths[key] = v, len(v)
  if len(set(lengths.values())) != 1:
    raise InvalidInputError(f"{what}: the arrays must have equal leading length, got {lengths}.")
  if not next(iter(lengths.values())):
    raise InvalidInputError(f"{what}: the set is empty (leading length 0).")
  return out


def check_data(data, model: nn.Module, what: str = "training set"):
  """``data`` checked (see the module docstring for the three kinds) as numpy arrays;
  raises ``InvalidInputError`` with one clear message otherwise."""
  if isinstance(data, Mapping):
    return _check_dict(data, model, what)
  hwc = getattr(model, "image_shape", None)
  if hwc is None and _is_float_matrix(data):
    return _check_vectors(data, what)
  return validate_images(data, what=what, hwc=None if hwc is None else tuple(hwc))


def _signature(x) -> dict:
  """``{key: (per-example shape, dtype)}`` of a checked data set (key '' for an array)."""
  items = x.items() if isinstance(x, Mapping) else [("", x)]
  return {k: (tuple(v.shape[1:]), str(v.dtype)) for k, v in items}


def _check_ood(ood, data, model: nn.Module):
  """The OOD set checked as ``data`` is, with the same structure, shapes and dtypes."""
  ood = check_data(ood, model, "OOD set")
  if isinstance(ood, Mapping) != isinstance(data, Mapping):
    kind = lambda x: "a dict of arrays" if isinstance(x, Mapping) else "an array"
    raise InvalidInputError(f"OOD set: is {kind(ood)} but the training set is {kind(data)}.")
  want, got = _signature(data), _signature(ood)
  if want != got:
    raise InvalidInputError(
        f"OOD set: per-example shapes/dtypes {got} do not match the training set's {want}; "
        "the two go through the model as one batch.")
  return ood


def fingerprint(x) -> dict:
  """Size, per-example shapes/dtypes and sha256 of the bytes of a checked data set."""
  h = hashlib.sha256()
  items = sorted(x.items()) if isinstance(x, Mapping) else [("", x)]
  for k, v in items:
    h.update(f"{k}|{v.dtype}|{v.shape}|".encode())
    h.update(np.ascontiguousarray(v).tobytes())
  return {"n": batches.num_examples(x),
          "shapes": {k: [list(s), d] for k, (s, d) in _signature(x).items()},
          "sha256": h.hexdigest()}


def describe_objective(objective: Objective | None) -> dict | None:
  """What the checkpoint meta records of an objective: None for the default; its
  ``describe()`` if it has one (``NegativeObjective``: name, ``c``, weighting); a dataclass
  instance: its type and fields; a function: ``module.qualname``; any other callable: its
  type's (two lambdas of one module, or two ``functools.partial``, read alike: give
  objectives that differ a ``describe()``)."""
  if objective is None:
    return None
  describe = getattr(objective, "describe", None)
  if callable(describe):
    return checkpoint.as_json(describe())
  if dataclasses.is_dataclass(objective) and not isinstance(objective, type):
    kind = type(objective)
    return checkpoint.as_json({"name": f"{kind.__module__}.{kind.__qualname__}",
                               **dataclasses.asdict(objective)})
  owner = objective if hasattr(objective, "__qualname__") else type(objective)
  return {"name": f"{owner.__module__}.{owner.__qualname__}"}


def describe_transform(transform: BatchTransform | None) -> dict | None:
  """What the checkpoint meta records of a batch transform: None without one; else as
  ``describe_objective`` reads an objective (its ``describe()``, a dataclass's fields, a
  function's ``module.qualname``)."""
  return describe_objective(transform)


def _check_transform(transform) -> None:
  if transform is not None and not callable(transform):
    raise InvalidInputError(
        f"batch_transform must be a function (batch, step) -> batch, got "
        f"{type(transform).__name__}.")


def _transformed(transform: BatchTransform, batch, step: int):
  """``transform(batch, step)``, checked to keep the batch's structure, shapes and dtypes."""
  out = transform(batch, step)
  if isinstance(batch, Mapping):
    ok = (isinstance(out, Mapping) and set(out) == set(batch)
          and all(isinstance(out[k], np.ndarray) for k in batch)
          and all(out[k].shape == batch[k].shape and out[k].dtype == batch[k].dtype for k in batch))
  else:
    ok = (isinstance(out, np.ndarray) and out.shape == batch.shape and out.dtype == batch.dtype)
  if not ok:
    got = ({k: (getattr(v, "shape", None), str(getattr(v, "dtype", type(v).__name__)))
            for k, v in out.items()} if isinstance(out, Mapping)
           else (getattr(out, "shape", None), str(getattr(out, "dtype", type(out).__name__))))
    want = ({k: (v.shape, str(v.dtype)) for k, v in batch.items()} if isinstance(batch, Mapping)
            else (batch.shape, str(batch.dtype)))
    raise InvalidInputError(
        f"batch_transform {describe_transform(transform)} must return a numpy batch of the "
        f"input's structure, shapes and dtypes {want}; got {got} at step {step}.")
  return out


def _check_objective(objective, ood, batch_size: int) -> None:
  if objective is not None and not callable(objective):
    raise InvalidInputError(
        f"objective must be a function (id_losses, ood_losses) -> scalar loss, got "
        f"{type(objective).__name__}.")
  if ood is not None and objective is None:
    raise InvalidInputError(
        "an OOD stream (ood=...) needs an objective that uses it (e.g. "
        "ood_jax.train.negative.negative_objective(c)); the default objective ignores it.")
  if ood is None and getattr(objective, "needs_ood", False):
    raise InvalidInputError(
        f"objective {describe_objective(objective)} needs an OOD stream; pass ood=<OOD set>.")
  if objective is not None:
    n_ood = 0 if ood is None else batch_size
    out = jax.eval_shape(objective, jax.ShapeDtypeStruct((batch_size,), jnp.float32),
                         jax.ShapeDtypeStruct((n_ood,), jnp.float32))
    if getattr(out, "shape", None) != ():
      raise InvalidInputError(
          f"objective {describe_objective(objective)} must return a scalar loss, got "
          f"{getattr(out, 'shape', type(out).__name__)}.")


# ----------------------------------------------------------------------------- the step


def _concat(batch, ood_batch):
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), batch, ood_batch)


def _make_step(model: nn.Module, tx: optax.GradientTransformation, seed: int,
               objective: Objective | None = None):
  """``step(state, batch, ood_batch=None) -> (state, stats)``; ``stats``: ``'loss'`` (the
  objective), ``'id_loss'`` and, with an OOD batch, ``'ood_loss'`` (mean per-sample losses)."""
  base = jax.random.PRNGKey(seed)
  fn = mean_id_loss if objective is None else objective

  def step(state: TrainState, batch, ood_batch=None):
    rngs = rngs_for(jax.random.fold_in(base, state.step))
    mutable = list(state.model_state.keys()) or False
    n_id = batches.num_examples(batch)
    joint = batch if ood_batch is None else _concat(batch, ood_batch)

    def loss_fn(params):
      out = model.apply({"params": params, **state.model_state}, joint, train=True,
                        rngs=rngs, mutable=mutable)
      losses, new_model_state = out if mutable else (out, state.model_state)
      if objective is None and ood_batch is None:
        loss = jnp.mean(losses)                   # plain training: exactly as before
      else:
        loss = fn(losses[:n_id], losses[n_id:])
      return loss, (new_model_state, losses)

    (loss, (new_model_state, losses)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        model_state=new_model_state, opt_state=new_opt_state)
    ok = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & (state.bad_step < 0)
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    bad_step = jnp.where(ok | (state.bad_step >= 0), state.bad_step, state.step)
    stats = {"loss": loss, "id_loss": loss if objective is None else jnp.mean(losses[:n_id])}
    if ood_batch is not None:
      stats["ood_loss"] = jnp.mean(losses[n_id:])
    return kept.replace(bad_step=bad_step), stats

  return step


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                    objective: Objective | None = None):
  """Returns ``step(state, batch, ood_batch=None) -> (state, loss)``; the caller jits it.

  ``loss`` is ``objective(id_losses, ood_losses)`` (default: the mean ID loss); with
  ``ood_batch`` the two batches go through the model as one concatenated batch. A step whose
  loss or gradient is not finite leaves the state unchanged and records its index in
  ``state.bad_step``; every later step is then a no-op too.
  """
  inner = _make_step(model, tx, seed, objective)

  def step(state: TrainState, batch, ood_batch=None):
    state, stats = inner(state, batch, ood_batch)
    return state, stats["loss"]

  return step


def _guarded(inner: Callable) -> Callable:
  """An update rule's ``step(state, batch) -> (state, stats)`` under the NaN guard of the
  default step: a non-finite ``stats['loss']`` or ``stats['grad_norm']`` leaves the state
  unchanged and records the step in ``bad_step``; after that every step is a no-op."""

  def step(state: TrainState, batch, ood_batch=None):
    del ood_batch                                  # refused with an update rule
    new, stats = inner(state, batch)
    new = new.replace(step=state.step + 1, bad_step=state.bad_step)
    ok = jnp.isfinite(stats["loss"]) & jnp.isfinite(stats["grad_norm"]) & (state.bad_step < 0)
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    bad_step = jnp.where(ok | (state.bad_step >= 0), state.bad_step, state.step)
    return kept.replace(bad_step=bad_step), stats

  return step


def describe_update(update: UpdateRule | None) -> dict | None:
  """What the checkpoint meta records of an update rule: None for the default step, else
  ``update.describe()`` as it reads back from JSON."""
  return None if update is None else checkpoint.as_json(update.describe())


def _check_update(update, ood, objective) -> None:
  if update is None:
    return
  missing = [m for m in ("init", "make_step", "describe") if not callable(getattr(update, m, None))]
  if missing:
    raise InvalidInputError(
        f"update must be an update rule with init, make_step and describe (ood_jax.train.loop."
        f"UpdateRule), got {type(update).__name__} without {', '.join(missing)}.")
  if ood is not None or objective is not None:
    raise InvalidInputError(
        f"update rule {describe_update(update)} takes no OOD stream or objective; its step "
        "defines its own losses.")


# ----------------------------------------------------------------------------- the loop


def _meta(model: nn.Module, config: TrainConfig, n_train: int, total: int,
          ood_meta: dict | None = None, objective_meta: dict | None = None,
          update_meta: dict | None = None, data_sha256: str | None = None,
          transform_meta: dict | None = None) -> dict:
  cfg = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_WEIGHT_FIELDS}
  # "update" / "batch_transform": None (the default step, no transform) is also what
  # checkpoints from before the key read as; "data" (the training data's sha256) is compared
  # only where the checkpoint has it.
  return {"model": repr(model), "config": cfg, "n_train": int(n_train), "total_steps": int(total),
          "ood": ood_meta, "objective": objective_meta, "update": update_meta,
          "data": data_sha256, "batch_transform": transform_meta}


def _diverged(bad_step: int, last_saved: int | None, ckpt_dir: str | None) -> TrainingDivergedError:
  kept = (f"The last good checkpoint (step {last_saved}) is kept in {ckpt_dir}."
          if last_saved is not None else "No checkpoint had been written yet.")
  return TrainingDivergedError(
      f"training stopped: the loss became NaN/inf at step {bad_step}. {kept} "
      "Lower the learning rate, or turn on warm-up (warmup_steps) and gradient clipping "
      "(clip_grad_norm).")


def _dims(data) -> int | None:
  """D for bits/dim: H W C of images, the dimension of vectors; None for dicts."""
  if isinstance(data, Mapping):
    return None
  return num_dims(data)


def train(model: nn.Module, data, config: TrainConfig, ckpt_dir: str | None = None, *,
          ood=None, objective: Objective | None = None, progress: bool = True,
          desc: str = "train", stop_after: int | None = None,
          on_checkpoint: CheckpointCallback | None = None,
          update: UpdateRule | None = None,
          batch_transform: BatchTransform | None = None) -> TrainResult:
  """Trains ``model`` on ``data`` (uint8 images N x H x W x C, float32 vectors N x D, or a
  dict of arrays; see the module docstring) with ``objective`` (default: the mean ID loss),
  optionally with the OOD stream ``ood`` (same kind as ``data``).

  With ``ckpt_dir``, resumes from the latest checkpoint there and saves every
  ``config.checkpoint_every`` steps and at the end; a finished checkpoint is simply
  loaded. ``stop_after`` ends the call after that many total steps without saving
  (it stands in for a killed process in tests). ``on_checkpoint(step, variables)`` is called
  for the state the run starts from and at every checkpoint step (module docstring; e.g. an
  :class:`EvalCurve`). ``update``: an :class:`UpdateRule` training with its own step instead
  of one optimiser on the mean loss (e.g. ``soft_intro.SoftIntro()``; module docstring).
  ``batch_transform(batch, step)``: each host-side ID batch (numpy, the data's structure) is
  replaced by its result before the step, e.g. ``perturbations.BatchPerturbation`` (a fresh,
  reproducible mutation per step); module docstring.
  """
  t0 = time.perf_counter()
  data = check_data(data, model, "training set")
  if ood is not None:
    ood = _check_ood(ood, data, model)
  _check_objective(objective, ood, config.batch_size)
  _check_update(update, ood, objective)
  _check_transform(batch_transform)
  if on_checkpoint is not None and not callable(on_checkpoint):
    raise InvalidInputError(
        f"on_checkpoint must be a function (step, variables) -> None, got "
        f"{type(on_checkpoint).__name__}.")
  batches.check_divisible(config.batch_size)
  spe = batches.steps_per_epoch(batches.num_examples(data), config.batch_size)
  if ood is not None:
    batches.steps_per_epoch(batches.num_examples(ood), config.batch_size, what="OOD set")
  total = config.total_steps(spe)
  first = batches.take(data, np.arange(config.batch_size))
  initial = dict(init_variables(model, first, config.seed))
  if not jax.tree_util.tree_leaves(initial.get("params", {})):
    # A parameter-free model (e.g. 'uniform') has nothing to train: no steps, no checkpoint.
    return TrainResult(variables=initial, step=0, resumed_from=None, history=[],
                       seconds=time.perf_counter() - t0)
  if update is None:
    tx = make_optimizer(config, spe)
    state = create(initial, tx)
  else:
    variables = initial
    params = variables.pop("params")
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                       opt_state=update.init(params, config, spe),
                       bad_step=jnp.full((), -1, jnp.int32))
  meta = _meta(model, config, batches.num_examples(data), total,
               None if ood is None else fingerprint(ood), describe_objective(objective),
               describe_update(update), fingerprint(data)["sha256"] if ckpt_dir else None,
               describe_transform(batch_transform))

  mngr, start, resumed = None, 0, None
  if ckpt_dir is not None:
    mngr = checkpoint.manager(ckpt_dir, config.keep_checkpoints)
    restored = checkpoint.restore(mngr, state, meta)
    if restored is not None:
      start, state = restored
      resumed = start
  last_saved = resumed
  state = batches.replicate(state)
  if int(state.bad_step) >= 0:
    raise _diverged(int(state.bad_step), last_saved, ckpt_dir)

  end = total if stop_after is None else min(total, stop_after)
  step_fn = jax.jit(_make_step(model, tx, config.seed, objective) if update is None else
                    _guarded(update.make_step(model, config, config.seed, spe)),
                    donate_argnums=0)
  dims = _dims(data)
  id_batches = batches.train_batches(data, config.batch_size, config.seed, start, end)
  ood_batches = (None if ood is None else
                 batches.train_batches(ood, config.batch_size, config.seed, start, end,
                                       stream=OOD_STREAM))
  per_step = config.batch_size * (1 if ood is None else 2)
  history, pending = [], []
  bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not progress,
             dynamic_ncols=True, leave=True)
  t_log, n_log = time.perf_counter(), 0
  try:
    if on_checkpoint is not None:
      on_checkpoint(start, state.variables)
    for step, batch in id_batches:
      if batch_transform is not None:
        batch = _transformed(batch_transform, batch, step)
      ood_batch = None if ood_batches is None else batches.to_devices(next(ood_batches)[1])
      state, stats = step_fn(state, batches.to_devices(batch), ood_batch)
      pending.append(stats)
      n_log += 1
      done = step + 1
      at_period = done % config.checkpoint_every == 0 or done == total
      at_ckpt = mngr is not None and at_period
      at_call = on_checkpoint is not None and at_period
      if done % config.log_every == 0 or done == end or at_ckpt or at_call:
        if int(state.bad_step) >= 0:
          raise _diverged(int(state.bad_step), last_saved, ckpt_dir)
        if pending:
          history.append(_log_entry(done, jax.device_get(pending), dims,
                                    objective is not None or update is not None))
          rate = n_log * per_step / max(time.perf_counter() - t_log, 1e-9)
          bar.set_postfix(_postfix(history[-1], rate))
          bar.update(n_log)
          pending, t_log, n_log = [], time.perf_counter(), 0
      if at_ckpt:
        checkpoint.save(mngr, done, state, meta)
        last_saved = done
      if at_call:
        on_checkpoint(done, state.variables)
  finally:
    bar.close()
    if mngr is not None:
      mngr.close()
  return TrainResult(variables=state.variables, step=int(state.step), resumed_from=resumed,
                     history=history, seconds=time.perf_counter() - t0)


def _log_entry(done: int, stats: list[dict], dims: int | None, custom: bool) -> dict:
  """One history entry: means over the log period (see the module docstring)."""
  mean = lambda k: float(np.mean([s[k] for s in stats]))
  entry = {"step": done, "loss": mean("loss"),
           "bits_per_dim": None if dims is None else mean("id_loss") / (dims * math.log(2.0))}
  if custom:
    entry["id_loss"] = mean("id_loss")
  if "ood_loss" in stats[0]:
    entry["ood_loss"] = mean("ood_loss")
  for k in stats[0]:        # an update rule's other statistics (the default step has none)
    if k not in ("loss", "id_loss", "ood_loss"):
      entry[k] = mean(k)
  return entry


def _postfix(entry: dict, rate: float) -> dict[str, str]:
  out = {"loss": f"{entry['loss']:.1f}"}
  if entry["bits_per_dim"] is not None:
    out["bpd"] = f"{entry['bits_per_dim']:.3f}"
  if "ood_loss" in entry:
    out["ood"] = f"{entry['ood_loss']:.1f}"
  out["img_s"] = f"{rate:.0f}"
  return out


# ----------------------------------------------------------------------------- eval curves

CURVE_FILE = "eval_curve.json"     # where experiments keep an EvalCurve: in the checkpoint dir
_CURVE_VERSION = 1


def _padded_chunks(x, chunk: int):
  """Yields ``(batch of exactly chunk examples, real count)`` of an array or dict of arrays;
  the last batch is padded by repeating its first example."""
  n = batches.num_examples(x)
  for start in range(0, n, chunk):
    idx = np.arange(start, min(start + chunk, n))
    real = len(idx)
    if real < chunk:
      idx = np.concatenate([idx, np.full(chunk - real, idx[0])])
    yield batches.take(x, idx), real


def read_curve(path: str) -> dict | None:
  """The JSON an :class:`EvalCurve` saved at ``path`` (``{'version', 'description',
  'points'}``), or None if there is none; a damaged file is a ``CheckpointError``."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    if not isinstance(saved.get("points"), list) or "description" not in saved:
      raise ValueError("missing 'points' or 'description'")
  except (OSError, ValueError, AttributeError) as e:
    raise CheckpointError(f"eval curve {path} is unreadable ({type(e).__name__}: {str(e)[:200]});"
                          " delete it (and its checkpoints) to record the curve again.") from e
  return saved


class EvalCurve:
  """An ``on_checkpoint`` callback of :func:`train`: the mean eval-mode per-sample loss
  (nats) and bits/dim of every named eval set at every checkpoint of a run.

      curve = EvalCurve(model, {"id_train": x_sub, "id_test": x_test, "mnist": x_ood},
                        os.path.join(ckpt_dir, CURVE_FILE))
      train(model, x_train, config, ckpt_dir, on_checkpoint=curve)
      curve.points   # [{'step', 'loss': {set: nats}, 'bits_per_dim': {set: bpd}}, ...]

  One jit-compiled function ``(variables, batch, rng) -> loss [chunk]`` scores every set in
  chunks of one fixed size (the last chunk padded, the padding dropped), so it is traced and
  compiled once for the whole run, not per checkpoint (``traces`` counts its traces). The loss
  is ``loss_fn(variables, batch, rng)`` (default: the model's own per-sample loss in eval mode,
  ``model.apply(variables, batch, train=False)``, e.g. a flow's dequantised NLL with one draw);
  chunk i of set j uses ``fold_in(fold_in(PRNGKey(seed), j), i)``, the same noise at every
  checkpoint, so the curve moves with the weights only. Bits/dim: the mean loss over
  ``D ln 2`` (``D`` = H W C of images, the dimension of vectors; None for dicts); a mean that
  is not finite (a likelihood that overflowed) is recorded as None.

  With ``path``, the points are written there as JSON (atomically: a temporary file renamed)
  after every checkpoint, with a description of the eval sets (their sha256, the loss, chunk
  size and seed) and read back on construction: a call at step s keeps the points before s,
  reuses a saved point at s (a resumed run: its checkpoint is the one that point was computed
  on) or computes it (a kill between the checkpoint and the JSON write), and a call at step 0
  (a fresh run) starts the curve again; so a killed and resumed run records the same points
  as an uninterrupted one. A saved curve of other eval sets is an error on resume (a fresh run
  replaces it). ``EvalCurve.read(path)`` gives a finished run's points without training.
  """

  def __init__(self, model: nn.Module, eval_sets: Mapping[str, Any], path: str | None = None,
               *, loss_fn: Callable | None = None, loss_name: str | None = None,
               chunk_size: int = 256, seed: int = 0):
    if not isinstance(eval_sets, Mapping) or not eval_sets:
      raise InvalidInputError("EvalCurve: eval_sets must be a non-empty dict {name: data}.")
    if loss_fn is not None and not callable(loss_fn):
      raise InvalidInputError(f"EvalCurve: loss_fn must be a function (variables, batch, rng) "
                              f"-> loss [N], got {type(loss_fn).__name__}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
      raise InvalidInputError(f"EvalCurve: chunk_size must be an integer >= 1, got {chunk_size!r}.")
    self.sets = {}
    for name, x in eval_sets.items():
      if not isinstance(name, str) or not name:
        raise InvalidInputError(f"EvalCurve: set names must be non-empty strings, got {name!r}.")
      self.sets[name] = check_data(x, model, f"eval set {name!r}")
    sigs = {name: _signature(x) for name, x in self.sets.items()}
    if len({json.dumps(s, sort_keys=True) for s in sigs.values()}) != 1:
      raise InvalidInputError(f"EvalCurve: the eval sets have different per-example shapes/"
                              f"dtypes {sigs}; one compiled function scores them all.")
    n_dev = jax.device_count()
    largest = max(batches.num_examples(x) for x in self.sets.values())
    self.chunk = -(-min(chunk_size, largest) // n_dev) * n_dev
    self.dims = {name: _dims(x) for name, x in self.sets.items()}
    self.path, self.seed, self.traces = path, int(seed), 0
    if loss_name is None and loss_fn is not None:
      qualname = getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__)
      if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidInputError(
            "EvalCurve: a lambda or local loss_fn needs a loss_name (it names the loss in the "
            "saved curve, so a resumed run never continues another loss's curve).")
      loss_name = f"{getattr(loss_fn, '__module__', '')}.{qualname}"
    # "order": each set's noise is fold_in(key, its position), so the order is part of the curve.
    self.description = checkpoint.as_json({
        "model": repr(model), "loss": loss_name or "model.apply(train=False)", "chunk": self.chunk,
        "seed": self.seed, "order": list(self.sets),
        "sets": {name: fingerprint(x) for name, x in self.sets.items()}})

    def loss(variables, x, rng):
      self.traces += 1                      # runs once per trace, not per call
      if loss_fn is not None:
        return loss_fn(variables, x, rng)
      return model.apply(variables, x, train=False, rngs=rngs_for(rng))
    self._fn = jax.jit(loss)
    self.points: list[dict] = []
    self._stale = None                      # a saved curve of other eval sets
    saved = None if path is None else read_curve(path)
    if saved is not None:
      if saved["description"] == self.description:
        self.points = sorted(saved["points"], key=lambda p: p["step"])
      else:
        self._stale = path

  @staticmethod
  def read(path: str) -> list[dict] | None:
    """The points saved at ``path``, or None if there is no curve there."""
    saved = read_curve(path)
    return None if saved is None else saved["points"]

  @property
  def steps(self) -> list[int]:
    return [p["step"] for p in self.points]

  def evaluate(self, step: int, variables) -> dict:
    """The point of ``variables`` at ``step`` (computed now; the curve is not changed)."""
    key = jax.random.PRNGKey(self.seed)
    loss, bpd = {}, {}
    for j, (name, x) in enumerate(self.sets.items()):
      total, n = 0.0, 0
      for i, (part, real) in enumerate(_padded_chunks(x, self.chunk)):
        rng = jax.random.fold_in(jax.random.fold_in(key, j), i)
        out = np.asarray(jax.device_get(self._fn(variables, batches.to_devices(part), rng)))
        total += float(np.sum(out[:real], dtype=np.float64))
        n += real
      mean = total / n
      loss[name] = mean if math.isfinite(mean) else None
      d = self.dims[name]
      bpd[name] = None if d is None or loss[name] is None else mean / (d * math.log(2.0))
    return {"step": int(step), "loss": loss, "bits_per_dim": bpd}

  def __call__(self, step: int, variables) -> None:
    step = int(step)
    if self._stale is not None:
      if step > 0:
        raise CheckpointError(
            f"eval curve {self._stale} was recorded on other eval sets (or another loss, chunk "
            "size or seed) than this run's; resuming would mix two curves. Delete the checkpoint "
            "directory to record the curve again, or use another one.")
      self._stale = None
    saved = {p["step"]: p for p in self.points}
    point = saved[step] if step > 0 and step in saved else self.evaluate(step, variables)
    self.points = [p for p in self.points if p["step"] < step] + [point]
    if self.path is not None:
      self._write()

  def _write(self) -> None:
    folder = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(folder, exist_ok=True)
    body = {"version": _CURVE_VERSION, "description": self.description, "points": self.points}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".curve-", suffix=".json.tmp")
    try:
      with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1, allow_nan=False)
      os.replace(tmp, self.path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
