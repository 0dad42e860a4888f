"""The training loop: one jit-compiled, data-parallel step; orbax checkpoints; exact resume.

Everything random is a function of ``(config.seed, step)``: the batch order
(``epoch_permutation``) and the model's noise (``fold_in(seed, step)``). A run killed
after its checkpoint at step s and resumed therefore ends with the same parameters as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ood_jax.data import batches
from ood_jax.data.pixels import num_dims, validate_images
from ood_jax.errors import TrainingDivergedError
from ood_jax.train import checkpoint
from ood_jax.train.config import NOT_WEIGHT_FIELDS, TrainConfig
from ood_jax.train.optim import make_optimizer
from ood_jax.train.state import TrainState, create

RNG_STREAMS = ("sample", "dequant", "dropout")


@dataclasses.dataclass
class TrainResult:
  variables: dict            # {'params': ..., 'batch_stats': ...}
  step: int                  # updates applied in total
  resumed_from: int | None   # step restored from a checkpoint, if any
  history: list[dict]        # [{'step', 'loss', 'bits_per_dim'}], mean over each log period
  seconds: float             # wall time of this call


def rngs_for(key: jax.Array) -> dict[str, jax.Array]:
  """Independent keys for every rng stream a model may ask for."""
  return dict(zip(RNG_STREAMS, jax.random.split(key, len(RNG_STREAMS))))


def init_variables(model: nn.Module, x_example: np.ndarray, seed: int) -> dict:
  key = jax.random.PRNGKey(seed)
  return model.init({"params": key, **rngs_for(jax.random.fold_in(key, 1))},
                    jnp.asarray(x_example), train=False)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, seed: int):
  """Returns ``step(state, batch) -> (state, loss)``; the caller jits it.

  A step whose loss or gradient is not finite leaves the state unchanged and records
  its index in ``state.bad_step``; every later step is then a no-op too.
  """
  base = jax.random.PRNGKey(seed)

  def step(state: TrainState, batch: jax.Array):
    rngs = rngs_for(jax.random.fold_in(base, state.step))
    mutable = list(state.model_state.keys()) or False

    def loss_fn(params):
      out = model.apply({"params": params, **state.model_state}, batch, train=True,
                        rngs=rngs, mutable=mutable)
      losses, new_model_state = out if mutable else (out, state.model_state)
      return jnp.mean(losses), new_model_state

    (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        model_state=new_model_state, opt_state=new_opt_state)
    ok = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & (state.bad_step < 0)
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    bad_step = jnp.where(ok | (state.bad_step >= 0), state.bad_step, state.step)
    return kept.replace(bad_step=bad_step), loss

  return step


def _meta(model: nn.Module, config: TrainConfig, n_train: int, total: int) -> dict:
  cfg = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_WEIGHT_FIELDS}
  return {"model": repr(model), "config": cfg, "n_train": int(n_train), "total_steps": int(total)}


def _diverged(bad_step: int, last_saved: int | None, ckpt_dir: str | None) -> TrainingDivergedError:
  kept = (f"The last good checkpoint (step {last_saved}) is kept in {ckpt_dir}."
          if last_saved is not None else "No checkpoint had been written yet.")
  return TrainingDivergedError(
      f"training stopped: the loss became NaN/inf at step {bad_step}. {kept} "
      "Lower the learning rate, or turn on warm-up (warmup_steps) and gradient clipping "
      "(clip_grad_norm).")


def train(model: nn.Module, x_train: np.ndarray, config: TrainConfig,
          ckpt_dir: str | None = None, *, progress: bool = True, desc: str = "train",
          stop_after: int | None = None) -> TrainResult:
  """Trains ``model`` on uint8 images ``x_train`` (N x H x W x C).

  With ``ckpt_dir``, resumes from the latest checkpoint there and saves every
  ``config.checkpoint_every`` steps and at the end; a finished checkpoint is simply
  loaded. ``stop_after`` ends the call after that many total steps without saving
  (it stands in for a killed process in tests).
  """
  t0 = time.perf_counter()
  x_train = validate_images(x_train, what="training set", hwc=tuple(model.image_shape))
  batches.check_divisible(config.batch_size)
  spe = batches.steps_per_epoch(len(x_train), config.batch_size)
  total = config.total_steps(spe)
  tx = make_optimizer(config, spe)
  state = create(init_variables(model, x_train[:config.batch_size], config.seed), tx)
  meta = _meta(model, config, len(x_train), total)

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
  step_fn = jax.jit(make_train_step(model, tx, config.seed), donate_argnums=0)
  dims = num_dims(tuple(model.image_shape))
  history, pending = [], []
  bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not progress,
             dynamic_ncols=True, leave=True)
  t_log, n_log = time.perf_counter(), 0
  try:
    for step, batch in batches.train_batches(x_train, config.batch_size, config.seed, start, end):
      state, loss = step_fn(state, batches.to_devices(batch))
      pending.append(loss)
      n_log += 1
      done = step + 1
      at_ckpt = mngr is not None and (done % config.checkpoint_every == 0 or done == total)
      if done % config.log_every == 0 or done == end or at_ckpt:
        if int(state.bad_step) >= 0:
          raise _diverged(int(state.bad_step), last_saved, ckpt_dir)
        if pending:
          mean_loss = float(np.mean(jax.device_get(pending)))
          rate = n_log * config.batch_size / max(time.perf_counter() - t_log, 1e-9)
          bpd = mean_loss / (dims * math.log(2.0))
          history.append({"step": done, "loss": mean_loss, "bits_per_dim": bpd})
          bar.set_postfix(loss=f"{mean_loss:.1f}", bpd=f"{bpd:.3f}", img_s=f"{rate:.0f}")
          bar.update(n_log)
          pending, t_log, n_log = [], time.perf_counter(), 0
      if at_ckpt:
        checkpoint.save(mngr, done, state, meta)
        last_saved = done
  finally:
    bar.close()
    if mngr is not None:
      mngr.close()
  return TrainResult(variables=state.variables, step=int(state.step), resumed_from=resumed,
                     history=history, seconds=time.perf_counter() - t0)
