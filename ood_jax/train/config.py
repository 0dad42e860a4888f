"""Training settings: one frozen dataclass, defaults = the ROSE VAE recipe."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train one model.

  Defaults follow ROSE (Choi et al.) for the VAE: Adam, lr 1e-3 halved every 30 epochs,
  batch 64. ``num_steps`` overrides ``epochs`` when set.
  """
  batch_size: int = 64
  epochs: float = 100.0
  num_steps: int | None = None
  learning_rate: float = 1e-3
  halve_every_epochs: float | None = 30.0  # step decay; None = constant
  warmup_steps: int = 0                     # linear warm-up from 0
  clip_grad_norm: float | None = None       # global-norm clipping
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0                 # coupled L2 (torch Adam weight_decay)
  seed: int = 0
  log_every: int = 50                       # progress/NaN check period, steps
  checkpoint_every: int = 500               # steps; the last step is always saved
  keep_checkpoints: int = 2

  def total_steps(self, steps_per_epoch: int) -> int:
    if self.num_steps is not None:
      return int(self.num_steps)
    return max(1, int(round(self.epochs * steps_per_epoch)))
