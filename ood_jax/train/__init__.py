"""Training: a jit-compiled data-parallel step, optax, orbax checkpoints, exact resume;
an optional OOD stream and objective (negative training, ``ood_jax.train.negative``); a
checkpoint callback (``on_checkpoint``; ``EvalCurve``: eval-set bits/dim at every checkpoint);
update rules other than the default step (``update=``; ``SoftIntro``: Soft-IntroVAE)."""

from ood_jax.errors import InvalidInputError
from ood_jax.train.config import TrainConfig
from ood_jax.train.loop import (EvalCurve, TrainResult, UpdateRule, init_variables,
                                make_train_step, mean_id_loss, train)
from ood_jax.train.negative import NegativeObjective, negative_objective
from ood_jax.train.soft_intro import SoftIntro

# ModelSpec.trainer -> the update rule it trains with (None: the default step).
TRAINERS = {"mle": lambda: None, "soft_intro": SoftIntro}


def update_for(spec_or_name) -> UpdateRule | None:
  """The update rule ``train(..., update=)`` takes for a model, from its ``ModelSpec.trainer``
  (a ``ModelSpec`` or a registry name): None for ``'mle'`` (the default step), ``SoftIntro()``
  for ``'soft_intro'``. Look it up by the registry name, not by ``spec_of(model)``: a ``vae``
  with a ``gaussian:0.5`` likelihood is built like a ``gan_vae`` but trains by maximum
  likelihood."""
  if isinstance(spec_or_name, str):
    from ood_jax.models import registry  # noqa: PLC0415  (train -> models: a downward import)
    spec_or_name = registry.spec(spec_or_name)
  trainer = getattr(spec_or_name, "trainer", None)
  if trainer not in TRAINERS:
    raise InvalidInputError(f"update_for: {getattr(spec_or_name, 'name', spec_or_name)!r} has "
                            f"trainer {trainer!r}; known: {', '.join(sorted(TRAINERS))}.")
  return TRAINERS[trainer]()


__all__ = ["EvalCurve", "NegativeObjective", "SoftIntro", "TRAINERS", "TrainConfig",
           "TrainResult", "UpdateRule", "init_variables", "make_train_step", "mean_id_loss",
           "negative_objective", "train", "update_for"]
