"""Optimizer construction (optax) from a TrainConfig."""

from __future__ import annotations

import optax

from ood_jax.train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
  """Constant or step-halving lr, with optional linear warm-up."""
  lr = config.learning_rate
  if config.halve_every_epochs:
    every = max(1, int(round(config.halve_every_epochs * steps_per_epoch)))
    sched = optax.exponential_decay(lr, transition_steps=every, decay_rate=0.5, staircase=True)
  else:
    sched = optax.constant_schedule(lr)
  if config.warmup_steps > 0:
    warm = optax.linear_schedule(0.0, lr, config.warmup_steps)
    sched = optax.join_schedules([warm, sched], [config.warmup_steps])
  return sched


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  parts = []
  if config.clip_grad_norm:
    parts.append(optax.clip_by_global_norm(config.clip_grad_norm))
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  parts.append(optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=config.b1, b2=config.b2))
  return optax.chain(*parts)
