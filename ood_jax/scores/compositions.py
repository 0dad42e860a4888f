"""Monte-Carlo batch compositions for BatchNorm train-mode scores (Song et al.).

A batch of size ``b`` holds ``m`` test samples (from the set being scored, q) and
``b - m`` training samples (from the in-distribution pool, p). In each of K rounds the
test set is shuffled and cut into groups of ``m``, so every test sample is scored exactly
once per round; a last short group is filled up with other test samples, drawn without
replacement from those *not* in that group, and marked invalid (their values are discarded):
no image enters a batch's BatchNorm statistics twice. Each group gets ``b - m`` training samples, taken as
consecutive whole slices of fresh random permutations of the pool (distinct within a
batch; every pool image is used about equally often).

Everything here is numpy and a pure function of ``(seed, stream, round)``: the same
arguments give the same batches, whatever else was computed before.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ood_jax.errors import InvalidInputError


def num_test_slots(r: float, b: int) -> int:
  """m = round(r * b), at least 1 (r -> 0: the test sample alone among training samples)."""
  return max(1, min(int(b), int(round(float(r) * int(b)))))


def check_mixing(b: int, r: float, rounds: int, what: str) -> None:
  """One clear error for a batch size below 2, a ratio outside [0, 1] or rounds below 1."""
  if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 2:
    raise InvalidInputError(f"{what}: batch size b must be an integer >= 2 (BatchNorm needs"
                            f" a batch), got {b!r}.")
  if not isinstance(r, (int, float, np.number)) or not 0.0 <= float(r) <= 1.0:
    raise InvalidInputError(f"{what}: test ratio r must be in [0, 1], got {r!r}.")
  if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
    raise InvalidInputError(f"{what}: K (Monte-Carlo rounds) must be an integer >= 1, got {rounds!r}.")


@dataclasses.dataclass(frozen=True)
class Compositions:
  """Index arrays of every batch of every round, one row per batch (``B = K * G`` rows)."""
  test_idx: np.ndarray    # int64 [B, m]: rows of the test set, in batch slots 0..m-1
  valid: np.ndarray       # bool [B, m]: False for filler test samples (values discarded)
  train_idx: np.ndarray   # int64 [B, b - m]: rows of the training pool, slots m..b-1
  ids: np.ndarray         # int32 [B, 3]: (stream, round, group), the batch's rng identity

  @property
  def num_batches(self) -> int:
    return int(self.test_idx.shape[0])

  @property
  def m(self) -> int:
    return int(self.test_idx.shape[1])

  @property
  def b(self) -> int:
    return int(self.test_idx.shape[1] + self.train_idx.shape[1])


def round_compositions(n_test: int, n_pool: int, *, b: int, m: int, seed: int, stream: int,
                       rnd: int) -> Compositions:
  """The G = ceil(n_test / m) batches of one round; a pure function of (seed, stream, rnd)."""
  if n_test < 1:
    raise InvalidInputError("compositions: the test set is empty.")
  if not 1 <= m <= b:
    raise InvalidInputError(f"compositions: need 1 <= m <= b, got m = {m}, b = {b}.")
  fill = b - m
  if fill and n_pool < fill:
    raise InvalidInputError(f"compositions: a batch of {b} with {m} test samples needs at least"
                            f" {fill} training samples, the pool has {n_pool}.")
  if n_test < m:
    raise InvalidInputError(
        f"compositions: a batch holds m = {m} test images but the test set has only {n_test}; "
        "a batch would repeat images in its BatchNorm statistics (use a smaller b or r).")
  rng = np.random.default_rng([int(seed), int(stream), int(rnd)])
  groups = -(-n_test // m)
  order = rng.permutation(n_test)
  extra = groups * m - n_test
  # Filler of the short last group: distinct images from the other groups (no duplicates).
  filler = (rng.choice(order[:(groups - 1) * m], extra, replace=False) if extra
            else np.zeros(0, np.int64))
  test_idx = np.concatenate([order, filler]).reshape(groups, m)
  valid = (np.arange(groups * m) < n_test).reshape(groups, m)
  if fill:
    per_perm = n_pool // fill               # whole slices of one permutation: no repeats
    perms = [rng.permutation(n_pool)[:per_perm * fill].reshape(per_perm, fill)
             for _ in range(-(-groups // per_perm))]
    train_idx = np.concatenate(perms)[:groups]
  else:
    train_idx = np.zeros((groups, 0), np.int64)
  ids = np.stack([np.full(groups, stream), np.full(groups, rnd), np.arange(groups)], axis=1)
  return Compositions(test_idx.astype(np.int64), valid, train_idx.astype(np.int64),
                      ids.astype(np.int32))


def compositions(n_test: int, n_pool: int, *, b: int, r: float, rounds: int, seed: int,
                 stream: int = 0, what: str = "compositions") -> Compositions:
  """All K rounds of batches for a test set of ``n_test`` images mixed at ratio ``r``."""
  check_mixing(b, r, rounds, what)
  m = num_test_slots(r, b)
  parts = [round_compositions(n_test, n_pool, b=b, m=m, seed=seed, stream=stream, rnd=t)
           for t in range(int(rounds))]
  return Compositions(*(np.concatenate([getattr(p, f.name) for p in parts])
                        for f in dataclasses.fields(Compositions)))


def gather_batches(x_test: np.ndarray, x_pool: np.ndarray | None, comps: Compositions,
                   rows: slice | np.ndarray) -> np.ndarray:
  """The uint8 images of batches ``rows``: ``[len(rows), b, H, W, C]``, test slots first."""
  parts = [x_test[comps.test_idx[rows]]]
  if comps.train_idx.shape[1]:
    parts.append(x_pool[comps.train_idx[rows]])
  return np.concatenate(parts, axis=1)


def average_over_rounds(values: np.ndarray, comps: Compositions, n_test: int) -> np.ndarray:
  """Mean over rounds of each test sample's value; ``values`` is ``[B, m]`` (test slots)."""
  sums = np.zeros(n_test, np.float64)
  counts = np.zeros(n_test, np.int64)
  np.add.at(sums, comps.test_idx[comps.valid], values[comps.valid])
  np.add.at(counts, comps.test_idx[comps.valid], 1)
  return (sums / np.maximum(counts, 1)).astype(np.float32)
