"""Shared base of the flow models (RealNVP, Glow, CV-Glow): dequantisation, likelihoods, samples.

A subclass maps pixels ``y`` in ``[0, 1)^D`` to standard-normal latents and back:

* ``encode_unit(y, train) -> (eps, log_pz, logdet)``: ``eps`` a list of float32 arrays (the
  latents of every scale, standardised by the prior: ``z = mean + std * eps``), ``log_pz``
  float32 ``[N]`` the prior log-density of the latents ``z`` (nats), ``logdet`` float32 ``[N]``
  ``log|det dz/dy|`` (nats). The continuous density is ``log p(y) = log_pz + logdet``.
* ``decode_unit(eps, temperature) -> y``: the inverse in eval mode, with every latent drawn as
  ``mean + temperature * std * eps``; ``temperature = 1`` inverts ``encode_unit`` exactly.
* ``latent_shapes() -> [(H, W, C), ...]``: the shapes of the ``eps`` list (per image).
* ``constant_volume`` (property): whether ``logdet`` is input-independent (CV-Glow).

The layers are bijectors (``forward_and_log_det`` / ``inverse_and_log_det`` /
``constant_log_det``, composed with ``chain.Chain``); coupling layers ``sow`` their input,
``s``, ``t`` and output into ``'intermediates'`` (pass ``mutable=['intermediates']``).

Discrete likelihood (nats per image of the 8-bit data). Uniform dequantisation
``y = (x + u) / 256``, ``u ~ U[0, 1)^D``, gives the usual lower bound
``log P(x) >= E_u[log p(y)] - D log 256``: the continuous density of ``x + u`` on
``[0, 256)^D`` is ``p(y) / 256^D``. ``log_prob_parts`` counts that ``-D log 256`` in the
log-determinant (the map ``x + u -> z`` includes the scaling by 1/256), so
``log_prob = log p(z) + log|det|`` exactly for ``k = 1``. ``log_prob`` with ``k`` draws is the
importance-weighted dequantisation bound ``log mean_k exp(log p(y_k) - D log 256)`` (the
uniform dequantiser is the proposal; tighter as k grows, k = 1 is the usual bound).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import LOG_256
from ood_jax.errors import InvalidInputError
from ood_jax.models.inputs import check_images

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_density(z: jax.Array, mean=0.0, logs=0.0) -> jax.Array:
  """``sum log N(z; mean, exp(logs)^2)`` over all but the first axis; nats, float32 ``[N]``."""
  eps = (z - mean) * jnp.exp(-logs)
  per = -0.5 * jnp.square(eps) - logs - HALF_LOG_2PI
  per = jnp.broadcast_to(per, z.shape)
  return jnp.sum(per.reshape(z.shape[0], -1), axis=-1)


def quantize(y: jax.Array) -> jax.Array:
  """Pixels in ``[0, 1)`` -> uint8 levels ``floor(256 y)`` clipped to ``0..255``."""
  return jnp.clip(jnp.floor(256.0 * y), 0, 255).astype(jnp.uint8)


def check_image_shape(image_shape, levels: int, model: str) -> tuple[int, int, int]:
  """``(H, W, C)`` with C in {1, 3} and H, W divisible by ``2 ** levels`` (the squeezes)."""
  shape = tuple(int(s) for s in image_shape)
  if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
    raise InvalidInputError(
        f"{model}: image_shape must be (H, W, C) with C in {{1, 3}}, got {image_shape}.")
  f = 2 ** levels
  if shape[0] % f or shape[1] % f:
    raise InvalidInputError(
        f"{model}: {levels} squeeze(s) need height and width divisible by {f}, got"
        f" {shape[0]} x {shape[1]}; use fewer scales/levels or resize the data.")
  return shape


class FlowModel(nn.Module):
  """Base class: the model protocol of ``docs/DESIGN.md`` on top of ``encode_unit`` /
  ``decode_unit`` (see the module docstring). Subclasses set ``image_shape``."""

  @property
  def constant_volume(self) -> bool:
    """Whether ``log|det dz/dy|`` is the same for every input (subclasses decide from their
    layers' ``constant_log_det``; False here: not known to be constant)."""
    return False

  @property
  def num_dims(self) -> int:
    h, w, c = self.image_shape
    return h * w * c

  def _check(self, x) -> jax.Array:
    return check_images(x, self.image_shape, type(self).__name__)

  def _noise(self, stream: str, k: int, n: int) -> jax.Array:
    """``k x n x H x W x C`` uniform dequantisation noise in ``[0, 1)`` from rng ``stream``."""
    return jax.random.uniform(self.make_rng(stream), (k, n, *self.image_shape), jnp.float32)

  def _parts(self, x: jax.Array, u: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """``(log p(z), log|det d z / d(x + u)|)``, nats ``[N]`` each, for noise ``u``."""
    y = (x.astype(jnp.float32) + u) / 256.0
    _, log_pz, logdet = self.encode_unit(y, train)
    return log_pz, logdet - self.num_dims * LOG_256

  def __call__(self, x_uint8, train: bool) -> jax.Array:
    """Training objective: dequantised NLL in nats per image, float32 ``[N]``.

    ``-(log p(y) - D log 256)``, ``y = (x + u) / 256`` with ``u`` from rng stream ``'dequant'``.
    """
    x = self._check(x_uint8)
    log_pz, logdet = self._parts(x, self._noise("dequant", 1, x.shape[0])[0], train)
    return -(log_pz + logdet)

  def log_prob_parts(self, x_uint8, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(log p(z), log|det J|)``, float32 ``[N]`` each, nats (Nalisnick et al.'s split).

    One dequantisation draw from rng stream ``'sample'`` (the same as ``log_prob`` with
    ``k=1`` and the same key); ``log|det J|`` includes ``-D log 256`` (module docstring).
    """
    x = self._check(x_uint8)
    return self._parts(x, self._noise("sample", 1, x.shape[0])[0], train)

  def log_prob(self, x_uint8, train: bool = False, k: int = 1) -> jax.Array:
    """Importance-weighted dequantisation bound on log P(x), nats per image, float32 ``[N]``.

    ``log mean_k exp(log p((x + u_k) / 256) - D log 256)`` with ``k`` uniform draws ``u_k``
    from rng stream ``'sample'``. Eval mode runs the ``k * N`` images as one batch; train
    mode (BatchNorm with batch statistics) runs the k draws one after the other, each
    normalised with the statistics of its own N images.
    """
    x = self._check(x_uint8)
    k = int(k)
    if k < 1:
      raise InvalidInputError(f"log_prob: k must be >= 1, got {k}.")
    n = x.shape[0]
    u = self._noise("sample", k, n)
    if train:
      lps = []
      for i in range(k):
        log_pz, logdet = self._parts(x, u[i], True)
        lps.append(log_pz + logdet)
      lp = jnp.stack(lps)
    else:
      xk = jnp.broadcast_to(x[None], u.shape).reshape(k * n, *self.image_shape)
      log_pz, logdet = self._parts(xk, u.reshape(k * n, *self.image_shape), False)
      lp = (log_pz + logdet).reshape(k, n)
    return jax.nn.logsumexp(lp, axis=0) - math.log(k)

  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images ``n x H x W x C`` (eval mode), latents drawn at ``temperature``."""
    n = int(n)
    keys = jax.random.split(rng, len(self.latent_shapes()))
    eps = [jax.random.normal(key, (n, *shape), jnp.float32)
           for key, shape in zip(keys, self.latent_shapes())]
    return quantize(self.decode_unit(eps, temperature))
