"""Deterministic batching and data-parallel sharding.

Training order depends only on ``(seed, epoch)`` (and the ``stream``: 0 for the training
set, 1 for the OOD set of negative training, an order independent of stream 0's), so a run
resumed at step ``s`` sees exactly the batches an uninterrupted run would. A data set is an
array with the examples on axis 0 or a dict ``{key: array}`` of equal leading length (batches
keep its structure; ``take`` / ``num_examples``). Arrays go to the devices sharded on
the batch axis over every device in ``jax.devices()`` (a 1-D ``'data'`` mesh);
parameters are replicated, and XLA inserts the cross-device reductions (BatchNorm
statistics included), so 1 and 8 devices compute the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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


def to_devices(x):
  """Puts a host batch (an array or a dict of arrays) on the devices, sharded over the batch
  axis."""
  return jax.device_put(x, data_sharding())


def replicate(tree):
  return jax.device_put(tree, replicated())


def epoch_permutation(n: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
  """The order of ``n`` examples in ``epoch``: a function of ``(seed, epoch, stream)`` only
  (stream 0 seeds ``[seed, epoch]``, as before streams existed; stream k > 0 seeds
  ``[seed, epoch, k]``, an independent order)."""
  entropy = [seed, epoch] if stream == 0 else [seed, epoch, stream]
  return np.random.default_rng(entropy).permutation(n)


def num_examples(x) -> int:
  """Examples in an array (axis 0) or in a dict of arrays (their common leading length)."""
  if isinstance(x, Mapping):
    return len(next(iter(x.values())))
  return len(x)


def take(x, idx: np.ndarray):
  """Rows ``idx`` of an array, or of every array of a dict (same keys)."""
  if isinstance(x, Mapping):
    return {k: v[idx] for k, v in x.items()}
  return x[idx]


def steps_per_epoch(n: int, batch_size: int, what: str = "training set") -> int:
  """Full batches per epoch (the remainder is dropped, a different one each epoch)."""
  if n < batch_size:
    raise InvalidInputError(f"{what} has {n} examples, fewer than one batch of {batch_size}.")
  return n // batch_size


def train_batches(x, batch_size: int, seed: int, start_step: int = 0,
                  num_steps: int | None = None, stream: int = 0) -> Iterator[tuple[int, object]]:
  """Yields ``(step, batch)`` from ``start_step``; epochs (of ``x``'s own length) reshuffle
  deterministically. ``x``: an array or a dict of arrays (batches keep the structure)."""
  n = num_examples(x)
  spe = steps_per_epoch(n, batch_size)
  step = start_step
  while num_steps is None or step < num_steps:
    epoch, i = divmod(step, spe)
    perm = epoch_permutation(n, seed, epoch, stream)
    idx = np.sort(perm[i * batch_size:(i + 1) * batch_size])  # sorted: faster gather
    yield step, take(x, idx)
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
