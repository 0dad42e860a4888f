"""Training: a jit-compiled data-parallel step, optax, orbax checkpoints, exact resume;
an optional OOD stream and objective (negative training, ``ood_jax.train.negative``); a
checkpoint callback (``on_checkpoint``; ``EvalCurve``: eval-set bits/dim at every checkpoint)."""

from ood_jax.train.config import TrainConfig
from ood_jax.train.loop import (EvalCurve, TrainResult, init_variables, make_train_step,
                                mean_id_loss, train)
from ood_jax.train.negative import NegativeObjective, negative_objective

__all__ = ["EvalCurve", "NegativeObjective", "TrainConfig", "TrainResult", "init_variables",
           "make_train_step", "mean_id_loss", "negative_objective", "train"]
