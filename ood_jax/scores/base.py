"""The Scorer protocol shared by every OOD score.

    state = scorer.fit(model, variables, id_data)   # once: statistics of the ID data
    s = scorer.score(state, x)                      # float32[N], higher = more OOD

``score`` validates ``x`` (uint8 N x H x W x C at the model's resolution), cuts it into
fixed-size chunks (the last padded) so the jit-compiled chunk function is compiled once
and memory stays bounded, shards each chunk over all devices and returns a numpy array.
Engineers who want the raw compiled function use ``state.chunk_fn(state.params, x, rng)``:
it is pure and can be ``jit``/``vmap``-ed further.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import numpy as np
from tqdm.auto import tqdm

from ood_jax.data import batches
from ood_jax.data.pixels import validate_images
from ood_jax.errors import InvalidInputError, NonFiniteScoresError


@flax.struct.dataclass
class ScorerState:
  """What ``fit`` returns: the arrays a score needs plus its compiled chunk function."""
  params: Any                                                   # pytree of arrays
  chunk_fn: Callable = flax.struct.field(pytree_node=False)     # (params, x, rng) -> f32[B]
  image_shape: tuple = flax.struct.field(pytree_node=False)
  name: str = flax.struct.field(pytree_node=False, default="")


@dataclasses.dataclass(frozen=True)
class Scorer(abc.ABC):
  """Base of every OOD score: a frozen dataclass of settings; subclasses implement ``fit``.

  ``score`` (shared) validates the images, scores them in chunks of ``images_per_chunk()``
  and returns float32 ``N``, higher = more OOD. Subclasses are frozen dataclasses that
  override the defaults below (``name`` defaults to the score's registry name) and add
  their own fields, all with defaults.

  Attributes:
    name: the score's name in messages and progress bars (its registry name).
    seed: seeds the scoring noise (chunk i uses ``fold_in(PRNGKey(seed), i)``).
    progress: show a progress bar per pass.
    chunk_size: images per compiled call (an upper bound; see ``images_per_chunk``).
  """
  name: str = ""
  seed: int = 0
  progress: bool = False
  chunk_size: int = 256

  def __post_init__(self):
    """Range checks every scorer shares (subclasses call this first from their own):
    ``seed`` >= 0; ``chunk_size`` and, where a scorer has them, ``k`` and ``max_latents``
    >= 1 (``k = 0`` would average over no importance samples)."""
    for field, low in (("seed", 0), ("chunk_size", 1), ("k", 1), ("max_latents", 1)):
      v = getattr(self, field, None)
      if v is None:
        continue
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise InvalidInputError(f"{self.name or type(self).__name__}: {field} must be an "
                                f"integer >= {low}, got {v!r}.")

  def images_per_chunk(self) -> int:
    """Images per compiled call: ``chunk_size``, bounded so that images x ``k`` importance
    samples stay within ``max_latents`` for scorers that have those fields (the VAE's
    256-way logits are 1 MB per latent); scorers whose cost grows otherwise override this."""
    return latent_chunk(self.chunk_size, getattr(self, "max_latents", None),
                        getattr(self, "k", 1))

  @abc.abstractmethod
  def fit(self, model: nn.Module, variables: dict, id_data: np.ndarray | None) -> ScorerState:
    ...

  def score(self, state: ScorerState, x: np.ndarray) -> np.ndarray:
    x = validate_images(x, what=f"{self.name} score input", hwc=state.image_shape)
    chunk = _device_multiple(min(self.images_per_chunk(), len(x)))
    key = jax.random.PRNGKey(self.seed)
    out = []
    it = batches.padded_chunks(x, chunk)
    if self.progress:
      it = tqdm(it, total=-(-len(x) // chunk), desc=self.name, unit="chunk", leave=False)
    for i, (part, n) in enumerate(it):
      s = state.chunk_fn(state.params, batches.to_devices(part), jax.random.fold_in(key, i))
      out.append(np.asarray(jax.device_get(s))[:n])
    scores = np.concatenate(out).astype(np.float32)
    if not np.all(np.isfinite(scores)):
      bad = int(np.sum(~np.isfinite(scores)))
      why = ("every score is non-finite: the model's weights are broken (diverged training or "
             "a damaged checkpoint), not these inputs" if bad == len(scores) else
             "the model's likelihood overflowed on these inputs")
      raise NonFiniteScoresError(f"{self.name}: {bad} of {len(scores)} scores are NaN/inf ({why}).",
                                 all_bad=bad == len(scores))
    return scores


def latent_chunk(chunk_size: int, max_latents: int | None, latents_per_image: int) -> int:
  """``min(chunk_size, max_latents // latents_per_image)``, at least 1 (no bound if None)."""
  if max_latents is None:
    return chunk_size
  return max(1, min(chunk_size, max_latents // max(1, int(latents_per_image))))


def _device_multiple(n: int) -> int:
  d = jax.device_count()
  return max(d, -(-n // d) * d)
