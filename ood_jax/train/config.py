"""Training settings: one frozen dataclass, defaults = the ROSE VAE recipe."""

from __future__ import annotations

import dataclasses
import math

from ood_jax.errors import InvalidInputError
from ood_jax.registry import choose

OPTIMIZERS = ("adam", "adamw", "adamax", "rmsprop")


# TrainConfig fields that do not change the trained weights (left out of checkpoint meta
# and of experiment checkpoint keys).
NOT_WEIGHT_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train one model.

  Defaults follow ROSE (Choi et al.) for the VAE: Adam, lr 1e-3 halved every 30 epochs,
  batch 64. The optimisers follow torch's update rules (what the papers used): ``eps``
  outside the square root, coupled weight decay for adam/adamax/rmsprop.

  Attributes:
    batch_size: images per step (global, over all devices).
    epochs: passes over the training set; ``num_steps`` overrides it when set.
    num_steps: optimiser steps; None = ``epochs`` x steps per epoch.
    optimizer: ``'adam'`` | ``'adamw'`` | ``'adamax'`` | ``'rmsprop'`` (torch's Adam,
      AdamW, Adamax, RMSprop; optax transforms).
    learning_rate: peak step size (after warm-up, before decay).
    halve_every_epochs: step decay: lr halved every this many epochs, counted from the end
      of warm-up (ROSE: 30); None (or 0) = no periodic halving.
    decay_steps: step decay at these optimiser steps (absolute, warm-up included): from
      step ``decay_steps[i]`` on, lr is multiplied by ``decay_factor ** (i + 1)``
      (Nalisnick et al.: ``(80000, 90000)`` of 100k). Exclusive with
      ``halve_every_epochs``.
    decay_factor: lr multiplier at each of ``decay_steps``, in (0, 1].
    warmup_steps: linear warm-up from 0 over this many steps.
    clip_grad_norm: global-norm gradient clipping (before weight decay); None (or 0) = off.
    b1: first-moment decay (adam, adamw, adamax).
    b2: second-moment decay (adam, adamw; adamax: infinity-norm decay).
    eps: the denominator's epsilon, outside the square root (torch's).
    rmsprop_alpha: rmsprop's squared-gradient decay (torch ``alpha``); no momentum, not
      centered (torch defaults).
    weight_decay: adam, adamax, rmsprop: coupled L2, ``weight_decay * theta`` added to the
      gradient (torch's ``weight_decay``); adamw: decoupled decay ``lr * weight_decay *
      theta`` (optax.adamw, torch AdamW).
    seed: initialisation and batch-order seed.
    log_every: progress/NaN-check period, steps.
    checkpoint_every: checkpoint period, steps (the last step is always saved).
    keep_checkpoints: checkpoints kept on disk.
  """
  batch_size: int = 64
  epochs: float = 100.0
  num_steps: int | None = None
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  halve_every_epochs: float | None = 30.0
  decay_steps: tuple[int, ...] | None = None
  decay_factor: float = 0.5
  warmup_steps: int = 0
  clip_grad_norm: float | None = None
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  rmsprop_alpha: float = 0.99
  weight_decay: float = 0.0
  seed: int = 0
  log_every: int = 50
  checkpoint_every: int = 500
  keep_checkpoints: int = 2

  def __post_init__(self):
    choose("optimizer", self.optimizer, OPTIMIZERS)
    if self.decay_steps is not None:
      object.__setattr__(self, "decay_steps", _steps(self.decay_steps))
    _check(self.batch_size >= 1, "batch_size must be >= 1", self.batch_size)
    _check(self.epochs > 0, "epochs must be > 0", self.epochs)
    _check(self.num_steps is None or self.num_steps >= 1, "num_steps must be >= 1 or None",
           self.num_steps)
    _check(0 < self.learning_rate < math.inf, "learning_rate must be > 0 and finite",
           self.learning_rate)
    _check(self.halve_every_epochs is None or self.halve_every_epochs >= 0,
           "halve_every_epochs must be >= 0 or None (0 and None: off)", self.halve_every_epochs)
    _check(0 < self.decay_factor <= 1, "decay_factor must be in (0, 1]", self.decay_factor)
    _check(self.warmup_steps >= 0, "warmup_steps must be >= 0", self.warmup_steps)
    _check(self.clip_grad_norm is None or self.clip_grad_norm >= 0,
           "clip_grad_norm must be >= 0 or None (0 and None: off)", self.clip_grad_norm)
    for name in ("b1", "b2", "rmsprop_alpha"):
      _check(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1)", getattr(self, name))
    _check(self.eps >= 0, "eps must be >= 0", self.eps)
    _check(self.weight_decay >= 0, "weight_decay must be >= 0", self.weight_decay)
    for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
      _check(getattr(self, name) >= 1, f"{name} must be >= 1", getattr(self, name))
    if self.decay_steps is not None:
      if self.halve_every_epochs:
        raise InvalidInputError(
            f"TrainConfig: decay_steps={self.decay_steps} and halve_every_epochs="
            f"{self.halve_every_epochs} are two step decays; set halve_every_epochs=None.")
      _check(self.decay_steps[0] >= self.warmup_steps,
             f"decay_steps must not start within the warm-up ({self.warmup_steps} steps)",
             self.decay_steps)

  def total_steps(self, steps_per_epoch: int) -> int:
    if self.num_steps is not None:
      return int(self.num_steps)
    return max(1, int(round(self.epochs * steps_per_epoch)))


def _check(ok: bool, what: str, value) -> None:
  """Raises ``InvalidInputError`` unless ``ok`` (NaN settings fail every comparison)."""
  if not ok:
    raise InvalidInputError(f"TrainConfig: {what}, got {value!r}.")


def _steps(steps) -> tuple[int, ...]:
  """``steps`` as a tuple of strictly increasing integers >= 1 (a JSON list is accepted)."""
  try:
    out = tuple(int(s) for s in steps)
    ok = (len(out) > 0 and all(float(s) == o for s, o in zip(steps, out))
          and all(not isinstance(s, bool) for s in steps))
  except (TypeError, ValueError):
    out, ok = steps, False
  ok = ok and out[0] >= 1 and all(a < b for a, b in zip(out, out[1:]))
  if not ok:
    raise InvalidInputError(
        f"TrainConfig: decay_steps must be strictly increasing integers >= 1, e.g. "
        f"(80000, 90000), got {steps!r}.")
  return out
