"""OOD scores, one Scorer each: ``fit(model, variables, id_data) -> state``,
``score(state, x) -> float32[N]`` (higher = more OOD)."""

from __future__ import annotations

import dataclasses

from ood_jax.errors import UnknownNameError
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import NLL

SCORERS = {"nll": NLL}


def get_scorer(name: str, **kwargs) -> Scorer:
  """The scorer called ``name``, configured with the ``kwargs`` it takes (others are ignored,
  so one experiment config can serve every score)."""
  if name not in SCORERS:
    raise UnknownNameError(f"unknown score {name!r}; known scores: {', '.join(sorted(SCORERS))}.")
  cls = SCORERS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in kwargs.items() if k in fields})


__all__ = ["NLL", "SCORERS", "Scorer", "ScorerState", "get_scorer"]
