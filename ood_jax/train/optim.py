"""Optimizer construction (optax) from a TrainConfig: torch's update rules, as the papers'."""

from __future__ import annotations

import optax

from ood_jax.train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
  """The lr at each optimiser step: linear warm-up from 0 over ``warmup_steps``, then
  constant, halved every ``halve_every_epochs`` (counted from the end of warm-up) or
  multiplied by ``decay_factor`` from each of ``decay_steps`` on (absolute steps)."""
  lr, warmup = config.learning_rate, config.warmup_steps
  if config.halve_every_epochs:
    every = max(1, int(round(config.halve_every_epochs * steps_per_epoch)))
    sched = optax.exponential_decay(lr, transition_steps=every, decay_rate=0.5, staircase=True)
  elif config.decay_steps:
    # join_schedules counts the second schedule from the end of warm-up.
    sched = optax.piecewise_constant_schedule(
        lr, {s - warmup: config.decay_factor for s in config.decay_steps})
  else:
    sched = optax.constant_schedule(lr)
  if warmup > 0:
    warm = optax.linear_schedule(0.0, lr, warmup)
    sched = optax.join_schedules([warm, sched], [warmup])
  return sched


def optimizer_parts(config: TrainConfig,
                    lr: optax.ScalarOrSchedule) -> list[optax.GradientTransformation]:
  """The transforms to chain, in order (a flat list, so the optimiser state of the default
  Adam has the same tree as in earlier versions and old checkpoints restore):

  * global-norm clipping, when ``clip_grad_norm`` is set;
  * adam / adamax / rmsprop: ``g + weight_decay * theta`` (coupled L2, when non-zero), then
    ``optax.adam`` / ``optax.adamax`` / ``optax.rmsprop``; rmsprop is torch's
    ``v = a v + (1 - a) g²``, ``theta -= lr g / (sqrt(v) + eps)`` (``eps`` outside the
    root, ``v`` from 0, no momentum, not centered);
  * adamw: ``optax.adamw`` (decoupled decay ``lr * weight_decay * theta``).
  """
  parts = []
  if config.clip_grad_norm:
    parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
  if config.optimizer == "adamw":
    return parts + [optax.adamw(lr, b1=config.b1, b2=config.b2, eps=config.eps,
                                weight_decay=config.weight_decay)]
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  if config.optimizer == "adam":
    parts.append(optax.adam(lr, b1=config.b1, b2=config.b2, eps=config.eps))
  elif config.optimizer == "adamax":
    parts.append(optax.adamax(lr, b1=config.b1, b2=config.b2, eps=config.eps))
  else:
    parts.append(optax.rmsprop(lr, decay=config.rmsprop_alpha, eps=config.eps, eps_in_sqrt=False))
  return parts


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """``optax.chain`` of ``optimizer_parts`` with ``learning_rate_schedule``."""
  return optax.chain(*optimizer_parts(config, learning_rate_schedule(config, steps_per_epoch)))
