"""What Song et al.'s BatchNorm tables (``table1``, ``table5``) share: their flags and the
BatchNorm-score settings those flags give (under ``--score-args``)."""

from __future__ import annotations

import jax

from ood_jax.experiments import cli
from ood_jax.experiments.run import Run

OPTIONS = (
    cli.option("--bn-k", type=int, default=None,
               help="importance samples inside train-mode batches (default: the preset's, "
                    "1 for smoke and cpu; else the scorer's 16)"),
    cli.option("--rounds", type=int, default=None,
               help="K, Monte-Carlo batch compositions (default: the preset's, 1 for smoke and "
                    "cpu; else the scorer's)"),
    cli.option("--b", type=int, default=None, help="BatchNorm batch size (default 64)"),
)


def bn_settings(run: Run, **extra) -> dict:
  """``bn_train_bpd`` / ``bn_mixed`` settings from those of ``--b``, ``--rounds``, ``--bn-k``
  that were given (the others stay the preset's or the scorer's)."""
  o = run.options
  given = {"b": o["b"], "K": o["rounds"], "k": o["bn_k"]}
  return {**{k: v for k, v in given.items() if v is not None}, **extra}


def has_batchnorm(variables: dict) -> bool:
  """Whether trained ``variables`` keep batch statistics (Glow: actnorm only, no train mode;
  PixelCNN++ with weight norm neither)."""
  return bool(jax.tree.leaves(variables.get("batch_stats", {})))
