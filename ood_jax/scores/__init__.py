"""OOD scores, one Scorer each: ``fit(model, variables, id_data) -> state``,
``score(state, x) -> float32[N]`` (higher = more OOD).

Scorers are frozen dataclasses registered by name; each lives in its own module, imported
on first use (``get_scorer``, or an attribute such as ``ood_jax.scores.Rose``), so
importing ``ood_jax.scores`` stays cheap. ``help(ood_jax.scores.<Class>)`` documents a
score's estimator, units and settings.

    get_scorer("rose", fisher="diag")                  # strict: unknown field -> error
    get_scorer("rose", context={"k": 20, "seed": 1})   # shared values: only rose's fields
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ood_jax.errors import InvalidInputError
from ood_jax.registry import Registry, check_settings
from ood_jax.scores.base import Scorer, ScorerState
from ood_jax.scores.nll import NLL

SCORERS = Registry("score", {
    "nll": NLL,
    "recon_error": "ood_jax.scores.reconstruction:ReconError",  # Chen's thesis (issue 13)
    # Song et al. (issue 4): BatchNorm train mode and the baselines it is compared with.
    "bn_train_bpd": "ood_jax.scores.bn_train:BNTrainBPD",
    # Chen's thesis 3.3.5 (issue 13): the encoder's BatchNorm alone in train mode.
    "bn_enc_train_bpd": "ood_jax.scores.bn_train:BNEncoderTrainBPD",
    "bn_mixed": "ood_jax.scores.bn_mixed:BNMixed",
    "t_perm": "ood_jax.scores.t_perm:TPerm",
    "waic": "ood_jax.scores.waic:WAIC",
    "typicality": "ood_jax.scores.typicality:Typicality",
    # ROSE (Choi et al.) and its baselines (issue 5).
    "rose": "ood_jax.scores.rose:Rose",
    "likelihood_regret": "ood_jax.scores.likelihood_regret:LikelihoodRegret",
    "likelihood_ratio": "ood_jax.scores.likelihood_ratio:LikelihoodRatio",
    "input_complexity": "ood_jax.scores.input_complexity:InputComplexity",
    "rnd": "ood_jax.scores.rnd:RND",  # SVD-RND (Choi & Chung 2020), ROSE App. B.3 Table 11
    # Chen's thesis §3.3.7 (issue 13): SUPERVISED, fitted on auxiliary OOD codes.
    "latent_svm": "ood_jax.scores.latent_svm:LatentSVM",
})


def register_scorer(name: str, cls: type | str) -> None:
  """Adds (or replaces) a scorer: a frozen-dataclass ``Scorer`` subclass or a lazy
  ``"module:Class"`` path."""
  if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, Scorer)
                                       and dataclasses.is_dataclass(cls)):
    raise InvalidInputError(f"register_scorer({name!r}): expected a dataclass subclass of "
                            f"Scorer or a 'module:Class' path, got {cls!r}.")
  SCORERS.register(name, cls)


def known_scores() -> list[str]:
  return SCORERS.names()


def scorer_class(name: str) -> type:
  """The Scorer class registered as ``name`` (imports its module on first use); an unknown
  name raises ``UnknownNameError`` listing the known ones."""
  return SCORERS.get(name)


def scorer_fields(name: str) -> dict[str, Any]:
  """``{field: default}`` of the settings of score ``name`` (every init field but ``name``)."""
  out = {}
  for f in dataclasses.fields(scorer_class(name)):
    if f.init and f.name != "name":
      out[f.name] = (f.default_factory() if f.default is dataclasses.MISSING  # type: ignore[misc]
                     else f.default)
  return out


def get_scorer(name: str, /, context: Mapping[str, Any] | None = None, **settings) -> Scorer:
  """The scorer ``name`` configured with ``settings`` and the ``context`` values it takes.

  Args:
    name: a registered score name (``known_scores()``).
    context: shared values (``k``, ``seed``, ``progress``, ``train_config``, ``ckpt_dir``,
      ...) offered to every score: only those that are fields of this scorer are passed,
      the rest ignored. ``settings`` win over ``context``.
    **settings: this scorer's own fields. Strict: an unknown field or a value of the wrong
      type raises one ``InvalidInputError`` listing the valid fields.
  """
  cls = scorer_class(name)
  settings = check_settings(f"score {name!r}", cls, settings, exclude=("name",))
  fields = scorer_fields(name)
  shared = {k: v for k, v in (context or {}).items() if k in fields and k not in settings}
  return cls(**shared, **settings)


def __getattr__(attr: str):
  """``ood_jax.scores.Rose`` etc.: a registered class by its class name, imported lazily."""
  for name in SCORERS.names():
    path = SCORERS.lazy_path(name)
    if (path.rsplit(":", 1)[1] if path else getattr(SCORERS.get(name), "__name__", None)) == attr:
      return SCORERS.get(name)
  raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["NLL", "SCORERS", "Scorer", "ScorerState", "get_scorer", "known_scores",
           "register_scorer", "scorer_class", "scorer_fields"]
