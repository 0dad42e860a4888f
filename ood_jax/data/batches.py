"""Deterministic batching and data-parallel sharding.

Training order depends only on ``(seed, epoch)``, so a run resumed at step ``s`` sees
exactly the batches an uninterrupted run would. Arrays go to the devices sharded on
the batch axis over every device in ``jax.devices()`` (a 1-D ``'data'`` mesh);
parameters are replicated, and XLA inserts the cross-device reductions (BatchNorm
statistics included), so 1 and 8 devices compute the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ood_jax.errors import InvalidInputError


def mesh() -> Mesh:
  """A 1-D mesh over all devices with axis name ``'data'``."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def data_sharding() -> NamedSharding:
  """Shards axis 0 over all devices."""
  return NamedSharding(mesh(), P("data"))


def replicated() -> NamedSharding:
  return NamedSharding(mesh(), P())


def check_divisible(batch_size: int, what: str = "batch size") -> None:
  n = jax.device_count()
  if batch_size % n:
    raise InvalidInputError(
        f"{what} {batch_size} is not divisible by the {n} devices; choose a multiple of {n}.")


def to_devices(x: np.ndarray) -> jax.Array:
  """Puts a host batch on the devices, sharded over the batch axis."""
  return jax.device_put(x, data_sharding())


def replicate(tree):
  return jax.device_put(tree, replicated())


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The order of ``n`` examples in ``epoch``: a function of ``(seed, epoch)`` only."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped, a different one each epoch)."""
  if n < batch_size:
    raise InvalidInputError(f"training set has {n} images, fewer than one batch of {batch_size}.")
  return n // batch_size


def train_batches(x: np.ndarray, batch_size: int, seed: int, start_step: int = 0,
                  num_steps: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """Yields ``(step, batch)`` from ``start_step``; epochs reshuffle deterministically."""
  spe = steps_per_epoch(len(x), batch_size)
  step = start_step
  while num_steps is None or step < num_steps:
    epoch, i = divmod(step, spe)
    perm = epoch_permutation(len(x), seed, epoch)
    idx = np.sort(perm[i * batch_size:(i + 1) * batch_size])  # sorted: faster gather
    yield step, x[idx]
    step += 1


def padded_chunks(x: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, int]]:
  """Yields fixed-size chunks (the last one padded by repeating its first row) and the
  number of real rows, so a compiled function sees a single shape."""
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    n = len(part)
    if n < chunk:
      pad = np.repeat(part[:1], chunk - n, axis=0)
      part = np.concatenate([part, pad], axis=0)
    yield part, n
