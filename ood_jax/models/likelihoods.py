"""Decoder output distributions over the 256 levels of an 8-bit sub-pixel.

Every likelihood here is a *normalised* distribution over the levels ``k = 0..255``, so
``log p(x|z)`` summed over sub-pixels is a proper discrete log-probability in nats per
image, comparable across models (``bits_per_dim`` of the uniform model is exactly 8).
The decoder emits ``P`` numbers per sub-pixel (``num_params``); outputs are shaped
``(..., P)`` and targets are the uint8 levels themselves (never recomputed from floats).

* ``categorical256`` (P = 256): softmax over logits (the Likelihood-Regret reference).
* ``bernoulli`` (P = 1): Binomial(255, sigmoid(logit)) over the levels. The common
  "Bernoulli cross-entropy on x/255" ``x log p + (1-x) log(1-p)`` is *not* a distribution
  over 8-bit levels (at p = 1/2 its probabilities over the 256 levels sum to 128), so its
  values are not likelihoods. The Binomial log-pmf with ``x = k/255`` is
  ``255 * [x log p + (1-x) log(1-p)] + log C(255, k)``: the same dependence on the logit
  (gradients are the BCE's times 255) plus a parameter-free normaliser.
* ``dgaussian`` (P = 2: mean, log-scale on the x/255 scale): mass of the bin
  ``[(k-0.5)/255, (k+0.5)/255]`` under N(mean, exp(log_scale)^2), with the edge bins
  extended to -inf / +inf (as PixelCNN++'s discretised logistic). ``log_scale`` is clipped
  to [-10, 10] for numerical safety (outside, the distribution is a point mass / flat to
  float32 precision).

One exception, by name only (not in ``LIKELIHOODS``, which holds the normalised ones):

* ``gaussian`` / ``gaussian:<variance>`` (P = 1): the continuous decoder
  ``N(y | sigmoid(out), variance)`` of Chen's thesis (Fig. 3.1, 3.3.6: "constant sigma^2 = 0.1",
  the default) on the dequantised pixel ``y = (x + 1/2) / 256`` in [0, 1] (the bin centre: a
  deterministic dequantisation), reported in the flows' convention
  ``log N(y) - log 256`` per sub-pixel: the log of density x bin width, nats of the 8-bit data.
  It is a density, *not* normalised over the 256 levels (at variance 0.1 about 11% of the mass of
  a mean-1/2 pixel lies outside [0, 1]), so its bits/dim compare with the discrete models' as the
  flows' do (an upper bound's worth of slack), never as exactly. ``gaussian:0.5`` is the Gaussian
  whose negative log-density is the sum of squared errors up to a constant (Soft-IntroVAE's loss).

``Likelihood.mean(out)``: the expected pixel on the [0, 1] scale (``k / 255`` for the discrete
ones, computed exactly from ``log_prob_all``; the Gaussian's mean), e.g. for reconstructions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from ood_jax.errors import InvalidInputError
from ood_jax.registry import choose

NUM_LEVELS = 256
_LEVELS = np.arange(NUM_LEVELS)
# log C(255, k), float64 -> float32 table.
_LOG_BINOM_255 = np.array([math.lgamma(256) - math.lgamma(k + 1) - math.lgamma(256 - k)
                           for k in range(NUM_LEVELS)], np.float32)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_BIN = 1.0 / 255.0                 # bin width on the x/255 scale
_LOG_SCALE_CLIP = 10.0
_MIDPOINT_BELOW = 1e-2             # use density * width when (width/sigma) * max(|z|,1) is below


def image_sum(v: jax.Array) -> jax.Array:
  """Sums the last three axes (H, W, C) by pairwise halving, e.g. log p(x|z) per image.

  Rounding error grows as O(log D) ulps instead of O(D) for a sequential float32 sum, and
  D identical terms (D a power of two) sum exactly, so a uniform model gives exactly
  -D log 256 nats (8 bits/dim).
  """
  n = v.shape[-3] * v.shape[-2] * v.shape[-1]
  v = v.reshape(v.shape[:-3] + (n,))
  size = 1 << max(n - 1, 0).bit_length()
  if size != n:
    v = jnp.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, size - n)])
  while v.shape[-1] > 1:
    half = v.shape[-1] // 2
    v = v[..., :half] + v[..., half:]
  return v[..., 0]


def _take_level(table: jax.Array, x_uint8: jax.Array) -> jax.Array:
  """``table[..., x]`` for a ``(..., 256)`` table and integer levels ``(...)``."""
  return jnp.take_along_axis(table, x_uint8.astype(jnp.int32)[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- categorical
def categorical_log_prob(out: jax.Array, x_uint8: jax.Array) -> jax.Array:
  """``log softmax(out)[x]`` in nats; ``out`` ``(..., 256)`` logits (stable for |logit| ~ 1e4)."""
  return _take_level(out, x_uint8) - jax.nn.logsumexp(out, axis=-1)


def categorical_log_prob_all(out: jax.Array) -> jax.Array:
  return jax.nn.log_softmax(out, axis=-1)


def categorical_sample(rng: jax.Array, out: jax.Array) -> jax.Array:
  return jax.random.categorical(rng, out, axis=-1).astype(jnp.uint8)


# --------------------------------------------------------------------------- bernoulli
def _binomial_log_pmf(logit: jax.Array, k: jax.Array) -> jax.Array:
  k = k.astype(jnp.float32)
  log_p = jax.nn.log_sigmoid(logit)
  log_q = jax.nn.log_sigmoid(-logit)
  # where() keeps 0 * (-inf) from producing NaN at k = 0 or k = 255.
  a = jnp.where(k > 0, k * log_p, 0.0)
  b = jnp.where(k < 255, (255.0 - k) * log_q, 0.0)
  return a + b


def bernoulli_log_prob(out: jax.Array, x_uint8: jax.Array) -> jax.Array:
  """Binomial(255, sigmoid(logit)) log-pmf at the level ``x``; ``out`` ``(..., 1)``."""
  logit = out[..., 0]
  table = jnp.asarray(_LOG_BINOM_255)
  return table[x_uint8.astype(jnp.int32)] + _binomial_log_pmf(logit, x_uint8)


def bernoulli_log_prob_all(out: jax.Array) -> jax.Array:
  k = jnp.asarray(_LEVELS)
  return jnp.asarray(_LOG_BINOM_255) + _binomial_log_pmf(out, k)  # out (..., 1) broadcasts


def bernoulli_sample(rng: jax.Array, out: jax.Array) -> jax.Array:
  p = jax.nn.sigmoid(out[..., 0])
  return jax.random.binomial(rng, 255.0, p).astype(jnp.uint8)


# --------------------------------------------------------------------------- dgaussian
def _dgaussian_log_mass(mean: jax.Array, log_scale: jax.Array, k: jax.Array) -> jax.Array:
  """log P(level k) for the discretised Gaussian; all branches finite (safe gradients)."""
  log_scale = jnp.clip(log_scale, -_LOG_SCALE_CLIP, _LOG_SCALE_CLIP)
  inv_s = jnp.exp(-log_scale)
  kf = k.astype(jnp.float32)
  centre = kf / 255.0
  # (k +- 0.5) is exact, so bin k's upper edge and bin k+1's lower edge round identically
  # and the masses telescope to 1.
  z_lo = ((kf - 0.5) / 255.0 - mean) * inv_s
  z_hi = ((kf + 0.5) / 255.0 - mean) * inv_s
  z_mid = (centre - mean) * inv_s
  width = _BIN * inv_s                              # bin width in standard units
  # Interior bins: log(Phi(b) - Phi(a)) on the side of the mode where both CDFs are small.
  flip = z_lo + z_hi > 0
  a = jnp.where(flip, -z_hi, z_lo)
  b = jnp.where(flip, -z_lo, z_hi)
  log_a, log_b = log_ndtr(a), log_ndtr(b)
  diff = jnp.minimum(log_a - log_b, -1e-30)
  cdf_diff = log_b + jnp.log(-jnp.expm1(diff))
  # Narrow bins (relative to sigma): density at the centre times the width.
  midpoint = -0.5 * z_mid ** 2 - _HALF_LOG_2PI + jnp.log(width)
  use_mid = width * jnp.maximum(jnp.abs(z_mid), 1.0) < _MIDPOINT_BELOW
  interior = jnp.where(use_mid, midpoint, cdf_diff)
  first = log_ndtr(z_hi)                           # (-inf, 0.5/255]
  last = log_ndtr(-z_lo)                           # [254.5/255, +inf)
  return jnp.where(k == 0, first, jnp.where(k == NUM_LEVELS - 1, last, interior))


def dgaussian_log_prob(out: jax.Array, x_uint8: jax.Array) -> jax.Array:
  """Discretised-Gaussian log-mass of level ``x``; ``out`` ``(..., 2)`` = (mean, log_scale)."""
  return _dgaussian_log_mass(out[..., 0], out[..., 1], x_uint8.astype(jnp.int32))


def dgaussian_log_prob_all(out: jax.Array) -> jax.Array:
  k = jnp.asarray(_LEVELS)
  return _dgaussian_log_mass(out[..., 0:1], out[..., 1:2], k)


def dgaussian_sample(rng: jax.Array, out: jax.Array) -> jax.Array:
  log_scale = jnp.clip(out[..., 1], -_LOG_SCALE_CLIP, _LOG_SCALE_CLIP)
  v = out[..., 0] + jnp.exp(log_scale) * jax.random.normal(rng, out.shape[:-1])
  return jnp.clip(jnp.round(v * 255.0), 0, 255).astype(jnp.uint8)


# --------------------------------------------------------------------------- gaussian
DEFAULT_GAUSSIAN_VARIANCE = 0.1
_LOG_256 = math.log(NUM_LEVELS)


def _gaussian_fns(variance: float):
  inv2v = 0.5 / variance
  const = -0.5 * math.log(2.0 * math.pi * variance) - _LOG_256

  def log_density(mean, k):
    y = (k.astype(jnp.float32) + 0.5) / NUM_LEVELS
    return -inv2v * (y - mean) ** 2 + const

  def log_prob(out, x_uint8):
    return log_density(jax.nn.sigmoid(out[..., 0]), x_uint8)

  def log_prob_all(out):
    return log_density(jax.nn.sigmoid(out), jnp.asarray(_LEVELS))   # out (..., 1) broadcasts

  def sample(rng, out):
    y = jax.nn.sigmoid(out[..., 0]) + math.sqrt(variance) * jax.random.normal(rng, out.shape[:-1])
    return jnp.clip(jnp.floor(y * NUM_LEVELS), 0, NUM_LEVELS - 1).astype(jnp.uint8)

  return log_prob, log_prob_all, sample, lambda out: jax.nn.sigmoid(out[..., 0])


def gaussian_likelihood(variance: float = DEFAULT_GAUSSIAN_VARIANCE) -> Likelihood:
  """The continuous Gaussian decoder with fixed ``variance`` (module docstring); name
  ``gaussian`` for the default 0.1, else ``gaussian:<variance>``."""
  variance = float(variance)
  if not (math.isfinite(variance) and variance > 0):
    raise InvalidInputError(f"gaussian likelihood: the variance must be > 0, got {variance}.")
  name = "gaussian" if variance == DEFAULT_GAUSSIAN_VARIANCE else f"gaussian:{variance:g}"
  lp, lp_all, sample, mean = _gaussian_fns(variance)
  return Likelihood(name, 1, lp, lp_all, sample, normalised=False, mean_fn=mean)


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Likelihood:
  """A decoder output distribution over the 256 levels.

  Attributes:
    name: registry name.
    num_params: ``P``, numbers the decoder emits per sub-pixel.
    log_prob: ``(out (..., P), x_uint8 (...)) -> (...)`` log-probability in nats.
    log_prob_all: ``out (..., P) -> (..., 256)`` log-probabilities of every level.
    sample: ``(rng, out (..., P)) -> uint8 (...)``.
    normalised: whether the 256 level probabilities sum to 1 (all but ``gaussian``).
    mean_fn: ``out (..., P) -> (...)`` the expected pixel on [0, 1], or None to compute it
      from ``log_prob_all`` (see :meth:`mean`).
  """
  name: str
  num_params: int
  log_prob: Callable[[jax.Array, jax.Array], jax.Array]
  log_prob_all: Callable[[jax.Array], jax.Array]
  sample: Callable[[jax.Array, jax.Array], jax.Array]
  normalised: bool = True
  mean_fn: Callable[[jax.Array], jax.Array] | None = None

  def mean(self, out: jax.Array) -> jax.Array:
    """The expected pixel on the [0, 1] scale (``E[k] / 255`` for the discrete likelihoods)."""
    if self.mean_fn is not None:
      return self.mean_fn(out)
    p = jnp.exp(self.log_prob_all(out))
    return jnp.sum(p * jnp.asarray(_LEVELS, jnp.float32), axis=-1) / (NUM_LEVELS - 1)


LIKELIHOODS: dict[str, Likelihood] = {
    "categorical256": Likelihood("categorical256", NUM_LEVELS, categorical_log_prob,
                                 categorical_log_prob_all, categorical_sample),
    "bernoulli": Likelihood("bernoulli", 1, bernoulli_log_prob, bernoulli_log_prob_all,
                            bernoulli_sample),
    "dgaussian": Likelihood("dgaussian", 2, dgaussian_log_prob, dgaussian_log_prob_all,
                            dgaussian_sample),
}


def get_likelihood(name: str) -> Likelihood:
  """The likelihood called ``name`` (``gaussian:<variance>`` parameterised);
  ``UnknownNameError`` lists the known ones."""
  if isinstance(name, str) and (name == "gaussian" or name.startswith("gaussian:")):
    if name == "gaussian":
      return gaussian_likelihood()
    try:
      variance = float(name.split(":", 1)[1])
    except ValueError:
      raise InvalidInputError(
          f"likelihood {name!r}: write gaussian:<variance>, e.g. gaussian:0.1.") from None
    return gaussian_likelihood(variance)
  return LIKELIHOODS[choose("likelihood", name, sorted(LIKELIHOODS),
                            "Also: gaussian, gaussian:<variance> (continuous, fixed variance).")]
