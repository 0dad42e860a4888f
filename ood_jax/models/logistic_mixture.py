"""Discretised logistic mixture likelihood of PixelCNN++ (Salimans et al. 2017).

A pixel with C channels (C = 1 or 3) and levels ``k = 0..255`` is modelled on the
``x = k / 127.5 - 1`` scale (``[-1, 1]``, bin half-width ``1/255``) by a mixture of K
components shared by its channels (one component per pixel, as the original):

  p(x) = sum_j pi_j  prod_c  L(x_c; mu_jc(x_<c), s_jc),

where ``L(k; mu, s)`` is the mass of bin ``[(2k-1)/255 - 1, (2k+1)/255 - 1]`` under a
logistic with mean ``mu`` and scale ``s``; the edge bins extend to -inf (k = 0) and +inf
(k = 255), so every component is a normalised distribution over the 256 levels. RGB
(the original's channel conditioning): ``mu_R = m_R``, ``mu_G = m_G + a x_R``,
``mu_B = m_B + b x_R + c x_G`` with ``a, b, c = tanh(raw coefficients)`` and ``x_R, x_G``
the data's (scaled) values. Grey: a plain mixture.

Parameter layout (the original's): ``out[..., :K]`` are the mixture logits; the rest,
reshaped to ``(..., C, n*K)``, holds per channel the means ``[:K]``, the log-scales
``[K:2K]`` (clipped to ``[-7, 7]``: -7 is the original's floor, 7 keeps the bin masses
finite in float32) and, for RGB, the raw coefficients ``[2K:3K]`` (channel 0: a, 1: b,
2: c). So ``P = 10K`` for RGB and ``3K`` for grey (:func:`num_params`).

Bin masses are computed in log space without the original's density fallback:
``log(sigmoid(b) - sigmoid(a)) = b - softplus(b) - softplus(a) + log(1 - exp(a - b))``
for the standardised edges ``a < b``; every branch is finite (``b - a >= 2/255 e^-7``),
so gradients are safe for any parameters. Units: nats.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError

LOG_SCALE_MIN = -7.0
LOG_SCALE_MAX = 7.0


def _per_channel(channels: int) -> int:
  if channels not in (1, 3):
    raise InvalidInputError(f"logistic mixture: channels must be 1 or 3, got {channels}.")
  return 3 if channels == 3 else 2


def num_params(channels: int, num_mix: int) -> int:
  """Numbers per pixel: ``10 K`` for RGB, ``3 K`` for grey."""
  return num_mix * (1 + channels * _per_channel(channels))


def scale_levels(x_uint8: jax.Array) -> jax.Array:
  """uint8 levels -> float32 ``k / 127.5 - 1`` in [-1, 1] (the network's input scale)."""
  return x_uint8.astype(jnp.float32) / 127.5 - 1.0


@dataclasses.dataclass(frozen=True)
class MixtureParams:
  """Unpacked parameters: ``logits (..., K)``, ``means``/``log_scales (..., C, K)``,
  ``coeffs (..., 3, K)`` (tanh applied; RGB only, else None)."""
  logits: jax.Array
  means: jax.Array
  log_scales: jax.Array
  coeffs: jax.Array | None


def unpack(out: jax.Array, channels: int) -> MixtureParams:
  """Splits the network output ``(..., P)`` into :class:`MixtureParams`."""
  per = _per_channel(channels)
  p = out.shape[-1]
  if p % (1 + channels * per):
    raise InvalidInputError(
        f"logistic mixture: {p} parameters per pixel is not a multiple of"
        f" {1 + channels * per} (for {channels} channel(s)).")
  k = p // (1 + channels * per)
  rest = out[..., k:].reshape(out.shape[:-1] + (channels, per * k))
  log_scales = jnp.clip(rest[..., k:2 * k], LOG_SCALE_MIN, LOG_SCALE_MAX)
  coeffs = jnp.tanh(rest[..., 2 * k:3 * k]) if channels == 3 else None
  return MixtureParams(out[..., :k], rest[..., :k], log_scales, coeffs)


def conditional_means(p: MixtureParams, x_scaled: jax.Array) -> jax.Array:
  """Means ``(..., C, K)`` after the RGB conditioning on the preceding channels.

  ``x_scaled (..., C)`` holds the data on the [-1, 1] scale; channel c's mean uses only
  channels < c.
  """
  if p.coeffs is None:
    return p.means
  r, g = x_scaled[..., 0:1], x_scaled[..., 1:2]
  m = p.means
  mu_g = m[..., 1, :] + p.coeffs[..., 0, :] * r
  mu_b = m[..., 2, :] + p.coeffs[..., 1, :] * r + p.coeffs[..., 2, :] * g
  return jnp.stack(jnp.broadcast_arrays(m[..., 0, :], mu_g, mu_b), axis=-2)


def logistic_bin_log_mass(levels: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """log P(level) of a discretised logistic on the [-1, 1] scale, nats (broadcasting).

  Bin edges are computed from the integer level, so bin k's upper edge and bin k+1's
  lower edge are the same float; the edge bins extend to -inf / +inf.
  """
  kf = levels.astype(jnp.float32)
  inv_s = jnp.exp(-log_scale)
  a = ((2.0 * kf - 1.0) / 255.0 - 1.0 - mean) * inv_s     # lower edge, standard units
  b = ((2.0 * kf + 1.0) / 255.0 - 1.0 - mean) * inv_s     # upper edge
  # a - b from the rounded edges: the masses then telescope (sum to 1 to float precision)
  # even where rounding of ``edge - mean`` is large against the bin width (scale e^-7).
  interior = b - jax.nn.softplus(b) - jax.nn.softplus(a) + jnp.log(-jnp.expm1(a - b))
  first = -jax.nn.softplus(-b)                             # log sigmoid(b): (-inf, b]
  last = -jax.nn.softplus(a)                               # log(1 - sigmoid(a)): [a, inf)
  return jnp.where(levels == 0, first, jnp.where(levels == 255, last, interior))


def component_log_probs(out: jax.Array, x_uint8: jax.Array,
                        x_scaled: jax.Array | None = None) -> jax.Array:
  """Per channel and component ``log L(x_c; mu_jc(x_<c), s_jc)``, shape ``(..., C, K)``.

  ``out (..., P)``, ``x_uint8 (..., C)``. ``x_scaled`` (default: ``scale_levels(x)``)
  are the conditioning values of the RGB means; tests pass a float array here to
  differentiate through the channel conditioning.
  """
  c = x_uint8.shape[-1]
  p = unpack(out, c)
  xs = scale_levels(x_uint8) if x_scaled is None else x_scaled
  mu = conditional_means(p, xs)
  return logistic_bin_log_mass(x_uint8.astype(jnp.int32)[..., None], mu, p.log_scales)


def log_prob(out: jax.Array, x_uint8: jax.Array, x_scaled: jax.Array | None = None) -> jax.Array:
  """Joint log-probability of each pixel's C levels, nats, shape ``(...)``."""
  comp = component_log_probs(out, x_uint8, x_scaled)
  k = comp.shape[-1]
  log_pi = jax.nn.log_softmax(out[..., :k], axis=-1)
  return jax.nn.logsumexp(log_pi + jnp.sum(comp, axis=-2), axis=-1)


def sub_pixel_log_probs(out: jax.Array, x_uint8: jax.Array,
                        x_scaled: jax.Array | None = None) -> jax.Array:
  """Chain-rule conditionals ``log p(x_c | x_<c)`` of each pixel, nats, ``(..., C)``.

  ``log p(x_<=c) = logsumexp_j(log pi_j + sum_{c'<=c} log L_jc')`` (the component is
  shared, so later channels also sharpen the component posterior); the conditionals are
  its differences and sum to :func:`log_prob`.
  """
  comp = component_log_probs(out, x_uint8, x_scaled)
  k = comp.shape[-1]
  log_pi = jax.nn.log_softmax(out[..., :k], axis=-1)
  prefix = jax.nn.logsumexp(log_pi[..., None, :] + jnp.cumsum(comp, axis=-2), axis=-1)
  return jnp.diff(prefix, axis=-1, prepend=jnp.zeros_like(prefix[..., :1]))


def _quantise(v: jax.Array) -> jax.Array:
  """[-1, 1]-scale values -> uint8 levels of the bins they fall in (clipped)."""
  return jnp.clip(jnp.round((v + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def sample(rng: jax.Array, out: jax.Array, channels: int, temperature=1.0) -> jax.Array:
  """Exact draws from the discretised mixture, uint8 ``(..., C)``.

  The temperature divides the K mixture logits only (component choice ~
  ``softmax(logits / T)``); means, scales and RGB coefficients are untouched. One
  component per pixel, then the channels in order: a continuous logistic draw
  ``mu + s * logit(u)`` is put in its bin (the edge bins take the tails), and the
  *quantised* value of R (and G) conditions the next channel's mean, exactly as in
  :func:`log_prob`.
  """
  p = unpack(out, channels)
  r_comp, r_noise = jax.random.split(rng)
  j = jax.random.categorical(r_comp, p.logits / temperature, axis=-1)
  onehot = jax.nn.one_hot(j, p.logits.shape[-1], dtype=out.dtype)[..., None, :]
  pick = lambda a: jnp.sum(a * onehot, axis=-1)          # (..., C', K) -> (..., C')
  means, scales = pick(p.means), jnp.exp(pick(p.log_scales))
  u = jax.random.uniform(r_noise, means.shape, out.dtype)   # [0, 1): logit(0) = -inf -> level 0
  noise = jnp.log(u) - jnp.log1p(-u)
  levels = [_quantise(means[..., 0] + scales[..., 0] * noise[..., 0])]
  if channels == 3:
    coeffs = pick(p.coeffs)
    xr = scale_levels(levels[0])
    levels.append(_quantise(means[..., 1] + coeffs[..., 0] * xr + scales[..., 1] * noise[..., 1]))
    xg = scale_levels(levels[1])
    mu_b = means[..., 2] + coeffs[..., 1] * xr + coeffs[..., 2] * xg
    levels.append(_quantise(mu_b + scales[..., 2] * noise[..., 2]))
  return jnp.stack(levels, axis=-1)
