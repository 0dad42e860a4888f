"""What Song et al.'s BatchNorm tables (``table1``, ``table5``) share: their flags and the
BatchNorm-score settings those flags give (under ``--score-args``)."""

from __future__ import annotations

import jax

from ood_jax.experiments import cli
from ood_jax.experiments.run import Run

OPTIONS = (
    cli.option("--bn-k", type=int, default=1,
               help="importance samples inside train-mode batches (default 1)"),
    cli.option("--rounds", type=int, default=1, help="K, Monte-Carlo batch compositions (default 1)"),
    cli.option("--b", type=int, default=64, help="BatchNorm batch size (default 64)"),
)


def bn_settings(run: Run, **extra) -> dict:
  """``bn_train_bpd`` / ``bn_mixed`` settings from ``--b``, ``--rounds``, ``--bn-k``."""
  o = run.options
  return {"b": o["b"], "K": o["rounds"], "k": o["bn_k"], **extra}


def has_batchnorm(variables: dict) -> bool:
  """Whether trained ``variables`` keep batch statistics (Glow: actnorm only, no train mode;
  PixelCNN++ with weight norm neither)."""
  return bool(jax.tree.leaves(variables.get("batch_stats", {})))
