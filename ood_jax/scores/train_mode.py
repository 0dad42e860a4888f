"""BatchNorm train-mode likelihoods of many batches in one compiled call.

``log p_theta(x_j | batch)``: the model's ``log_prob`` with ``train=True``, so every
BatchNorm layer normalises with the statistics of the batch it is given (for the VAE,
the encoder sees the b images and the decoder the b*k importance latents). The updated
running statistics are returned by flax and discarded: scoring never changes the model.

:func:`stacked_fn` vmaps that forward over a stack of batches (statistics per batch) and
:func:`mean_test_log_prob` runs all batches of a :class:`Compositions` through it in
fixed-size chunks (one compiled shape), averaging each test sample's value over rounds:
S_{b,r}(x) in nats per image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ood_jax.data import batches
from ood_jax.errors import InvalidInputError
from ood_jax.scores.compositions import Compositions, average_over_rounds, gather_batches


def check_batchnorm(model: nn.Module, variables: dict, what: str) -> None:
  """Raises one clear error when the model has no BatchNorm (no ``batch_stats``)."""
  stats = variables.get("batch_stats") if hasattr(variables, "get") else None
  if not stats or not jax.tree.leaves(stats):
    raise InvalidInputError(
        f"{what}: model {type(model).__name__} has no BatchNorm layers (its variables have no"
        " 'batch_stats' collection), so it has no train mode to score with. BatchNorm"
        " train-mode scores need a BatchNorm model (vae, realnvp, pixelcnnpp); Glow uses"
        " actnorm, whose statistics do not depend on the batch.")


PARTS = ("all", "encoder", "decoder", "none")


def train_arg(parts: str = "all"):
  """The models' ``train`` argument for BatchNorm train mode in ``parts``: ``True`` for
  ``'all'``, ``False`` for ``'none'`` (eval mode everywhere: the same batches, noise and
  importance samples as train mode, so a train - eval gap is paired; Song Table 1), else
  ``{part: True}`` with the other parts in eval mode (Chen's thesis 3.3.5: the encoder's
  BatchNorm alone, ``'encoder'``)."""
  if parts not in PARTS:
    raise InvalidInputError(f"BatchNorm parts must be one of {', '.join(PARTS)}, got {parts!r}.")
  if parts == "none":
    return False
  return True if parts == "all" else {parts: True}


def check_parts(model: nn.Module, variables: dict, parts: str, what: str) -> None:
  """One clear error unless ``parts`` is 'all' or a top-level BatchNorm part of the model."""
  train_arg(parts)
  if parts in ("all", "none"):
    return
  have = sorted(variables.get("batch_stats", {}))
  if parts not in have:
    raise InvalidInputError(
        f"{what}: model {type(model).__name__} has no BatchNorm part {parts!r} (its BatchNorm"
        f" parts: {', '.join(have) or 'none'}); use parts='all'.")


def batch_log_prob_fn(model: nn.Module, k: int, parts: str = "all") -> Callable:
  """Pure ``(variables, x_batch [b, H, W, C], rng) -> float32[b]``: train-mode log p, nats,
  with BatchNorm in train mode in ``parts`` (see :func:`train_arg`)."""
  train = train_arg(parts)

  def fn(variables, x, rng):
    lp, _ = model.apply(variables, x, train=train, k=k, method="log_prob",
                        rngs={"sample": rng}, mutable=["batch_stats"])
    return lp
  return fn


def batch_key(seed: int, ids: jax.Array) -> jax.Array:
  """The rng of the batch identified by ``ids = (stream, round, group)`` (int32[3])."""
  key = jax.random.PRNGKey(seed)
  for i in range(3):
    key = jax.random.fold_in(key, ids[i])
  return key


@functools.lru_cache(maxsize=16)
def stacked_fn(model: nn.Module, k: int, seed: int, parts: str = "all") -> Callable:
  """Jitted ``(variables, xb [C, b, H, W, C'], ids int32[C, 3]) -> float32[C, b]``: one
  train-mode forward per batch, vmapped (BatchNorm statistics of each batch alone; train
  mode in ``parts`` only). Cached per ``(model, k, seed, parts)`` (modules compare by
  value), so scorers of one model share its compilations."""
  one = batch_log_prob_fn(model, k, parts)

  def fn(variables, xb, ids):
    keys = jax.vmap(lambda i: batch_key(seed, i))(ids)
    return jax.vmap(one, in_axes=(None, 0, 0))(variables, xb, keys)
  return jax.jit(fn)


def batches_per_call(b: int, k: int, max_latents: int, num_batches: int | None = None) -> int:
  """Batches per compiled call: at most ``max_latents // (b * k)`` (memory), balanced so
  that ``num_batches`` split into equal calls (the last call pads less than one batch per
  call), rounded up to a multiple of the device count (the stack is sharded over devices)."""
  c = max(1, int(max_latents) // max(1, int(b) * max(1, int(k))))
  if num_batches is not None:
    n = max(1, int(num_batches))
    c = -(-n // -(-n // c))
  d = jax.device_count()
  return max(d, -(-c // d) * d)


def slot_log_probs(fn: Callable, variables, x_test: np.ndarray, x_pool: np.ndarray | None,
                        comps: Compositions, per_call: int, *, progress: bool = False,
                        desc: str = "bn batches") -> np.ndarray:
  """float32 ``[B, m]``: train-mode log p of the test slots of every batch, nats."""
  n = comps.num_batches
  out = []
  starts = range(0, n, per_call)
  if progress:
    starts = tqdm(starts, desc=desc, unit="call", leave=False)
  for s in starts:
    rows = np.arange(s, s + per_call)
    rows = np.where(rows < n, rows, s)          # pad the last call with its first batch
    xb = gather_batches(x_test, x_pool, comps, rows)
    lp = fn(variables, batches.to_devices(xb), batches.to_devices(comps.ids[rows]))
    out.append(np.asarray(jax.device_get(lp))[:min(per_call, n - s), :comps.m])
  return np.concatenate(out).astype(np.float32)


def mean_test_log_prob(fn: Callable, variables, x_test: np.ndarray, x_pool: np.ndarray | None,
                       comps: Compositions, per_call: int, *, progress: bool = False,
                       desc: str = "bn batches") -> np.ndarray:
  """S_{b,r}: each test sample's train-mode log p averaged over the K rounds, float32[N], nats."""
  lp = slot_log_probs(fn, variables, x_test, x_pool, comps, per_call, progress=progress,
                           desc=desc)
  if not np.all(np.isfinite(lp[comps.valid])):
    raise InvalidInputError(f"{desc}: train-mode log-likelihoods are NaN/inf on some batches "
                            "(the model overflowed).")
  return average_over_rounds(lp, comps, len(x_test))


def loop_fns(model: nn.Module, k: int, seed: int,
             parts: str = "all") -> tuple[Callable, Callable]:
  """Jitted ``(single-batch train-mode log p, batch rng)`` for :func:`loop_mean_test_log_prob`."""
  return (jax.jit(batch_log_prob_fn(model, k, parts)),
          jax.jit(lambda ids: batch_key(seed, ids)))


def loop_mean_test_log_prob(fns: tuple[Callable, Callable], variables, x_test: np.ndarray,
                            x_pool: np.ndarray | None, comps: Compositions) -> np.ndarray:
  """The straightforward reference: one single-batch forward per batch in a Python loop
  (same compositions, same rngs; ``fns`` from :func:`loop_fns`). For tests and benchmarks."""
  one, key_fn = fns
  vals = np.zeros(comps.test_idx.shape, np.float32)
  for i in range(comps.num_batches):
    xb = gather_batches(x_test, x_pool, comps, np.array([i]))[0]
    lp = one(variables, jnp.asarray(xb), key_fn(jnp.asarray(comps.ids[i])))
    vals[i] = np.asarray(lp)[:comps.m]
  return average_over_rounds(vals, comps, len(x_test))
