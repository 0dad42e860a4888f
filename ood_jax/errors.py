"""Exceptions shared by every layer. Each carries one clear, user-facing message."""


class OODJaxError(Exception):
  """Base class for every error ood-jax raises on purpose."""


class InvalidInputError(OODJaxError, ValueError):
  """Bad images or arguments: wrong shape, dtype, range, channel count, NaN, empty set."""


class DatasetNotFoundError(OODJaxError, FileNotFoundError):
  """A dataset name could not be resolved; the message lists every place searched."""


class UnknownNameError(OODJaxError, KeyError):
  """An unknown dataset, transform, model, preset or score name."""

  def __str__(self):  # KeyError would repr() the message; show it as written.
    return str(self.args[0]) if self.args else ""


class CheckpointError(OODJaxError):
  """A corrupt checkpoint, or one that does not match the model being restored."""


class TrainingDivergedError(OODJaxError, FloatingPointError):
  """The loss became NaN/inf; the last good checkpoint is kept."""


class NonFiniteScoresError(InvalidInputError):
  """A scorer produced NaN/inf scores; ``all_bad``: every score of the set (broken weights)."""

  def __init__(self, message: str, all_bad: bool = False):
    super().__init__(message)
    self.all_bad = all_bad
