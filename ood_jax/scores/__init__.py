"""OOD scores, one Scorer each: ``fit(model, variables, id_data) -> state``,
``score(state, x) -> float32[N]`` (higher = more OOD).

Scorers are registered by name; each lives in its own module, imported on first use
(``get_scorer``), so importing ``ood_jax.scores`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib

from ood_jax.errors import UnknownNameError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import NLL

# name -> Scorer class, or "module:Class" imported on first use.
SCORERS: dict[str, type | str] = {
    "nll": NLL,
    # Song et al. (issue 4): BatchNorm train mode and the baselines it is compared with.
    "bn_train_bpd": "ood_jax.scores.bn_train:BNTrainBPD",
    "bn_mixed": "ood_jax.scores.bn_mixed:BNMixed",
    "t_perm": "ood_jax.scores.t_perm:TPerm",
    "waic": "ood_jax.scores.waic:WAIC",
    "typicality": "ood_jax.scores.typicality:Typicality",
    # ROSE (Choi et al.) and its baselines (issue 5).
    "rose": "ood_jax.scores.rose:Rose",
    "likelihood_regret": "ood_jax.scores.likelihood_regret:LikelihoodRegret",
    "likelihood_ratio": "ood_jax.scores.likelihood_ratio:LikelihoodRatio",
    "input_complexity": "ood_jax.scores.input_complexity:InputComplexity",
}


def register_scorer(name: str, cls: type | str) -> None:
  """Adds (or replaces) a scorer: a ``Scorer`` subclass or a ``"module:Class"`` path."""
  SCORERS[name] = cls


def known_scores() -> list[str]:
  return sorted(SCORERS)


def scorer_class(name: str) -> type:
  """The Scorer class registered as ``name`` (imports its module on first use)."""
  if name not in SCORERS:
    raise UnknownNameError(f"unknown score {name!r}; known scores: {', '.join(known_scores())}.")
  cls = SCORERS[name]
  if isinstance(cls, str):
    module, attr = cls.split(":")
    cls = SCORERS[name] = getattr(importlib.import_module(module), attr)
  return cls


def get_scorer(name: str, **kwargs) -> Scorer:
  """The scorer called ``name``, configured with the ``kwargs`` it takes (others are ignored,
  so one experiment config can serve every score)."""
  cls = scorer_class(name)
  fields = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in kwargs.items() if k in fields})


__all__ = ["NLL", "SCORERS", "Scorer", "ScorerState", "get_scorer", "known_scores",
           "register_scorer", "scorer_class"]
