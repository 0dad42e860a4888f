"""Training: a jit-compiled data-parallel step, optax, orbax checkpoints, exact resume."""

from ood_jax.train.config import TrainConfig
from ood_jax.train.loop import TrainResult, init_variables, make_train_step, train

__all__ = ["TrainConfig", "TrainResult", "init_variables", "make_train_step", "train"]
