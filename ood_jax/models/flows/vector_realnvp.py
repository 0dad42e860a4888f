"""RealNVP on feature vectors (Kirichenko et al., App. N-O: image embeddings, tabular data).

Conventions:

* Input: float32 vectors ``N x D`` (``D = dim >= 2``), a continuous density on ``R^D``: no
  dequantisation and no ``- D log 256`` term. Every likelihood is in **nats per vector**
  (``log p(x)``, ``[N]``); ``__call__`` (the training objective) is ``-log p(x)``.
* Flow: ``num_couplings`` affine couplings with alternating half masks (the reference's
  ``MaskTabular``). With ``h = D // 2``: even couplings condition on ``x[:, :h]`` and
  transform ``x[:, h:]`` (``D - h`` entries), odd couplings the other way round, so odd
  ``D`` works (the halves have ``h`` and ``D - h`` entries). Standard-normal prior on ``z``.
* Coupling (the reference's ``CouplingLayerBase``): ``(raw, t) = st_net(x_a)``, then
  ``y_b = (x_b + t) * scale``, ``y_a = x_a``; ``log|det dy/dx| = sum log scale``.
  ``scale_fn='exp'`` (default, the reference): ``scale = exp(s)``, ``s = w * tanh(raw)`` with
  ``w`` a learned per-entry factor initialised to 1 (the reference's weight-normed
  ``RescaleTabular``). ``scale_fn='sigmoid'`` (Glow's code, Nalisnick et al. App. D):
  ``scale = sigmoid(raw)`` so every coupling's log-det is ``<= 0``; at initialisation
  (``raw = 0``) each coupling halves its half (no ``+ 2`` offset as in Glow's code).
* st-network (the reference's ``CouplingLayerTabular``): ``Dense(hidden) -> ReLU``, then
  ``hidden_layers`` x ``(Dense(hidden) -> ReLU)``, then ``Dense(2 * |b|)``, zero-initialised
  (every coupling starts as the identity with ``'exp'``). ``hidden_layers`` counts the
  ``hidden x hidden`` layers as the reference's ``num_layers`` / ``--num_hidden_layers`` flag
  does, so the paper's "3 hidden layers, 512 units" is ``hidden_layers=3, hidden=512`` (4
  ReLU layers). The st-net sees only the conditioning half (the reference multiplies the
  other half by 0 and discards the masked outputs: the same family of maps).
* No BatchNorm, ActNorm or dropout (the reference's tabular coupling has none; its optional
  dropout is off by default): ``train`` is accepted for the common model interface and
  has no effect; there are no ``batch_stats``.

Couplings ``sow`` ``x_in``, ``s`` (the log-scale applied, ``N x |b|``), ``t`` and ``y_out``
into ``'intermediates'`` (pass ``mutable=['intermediates']``). Not in the model registry: it
takes vectors, not images (``ModelSpec`` / ``make_model`` build models from an image shape).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.bijector import Bijector
from ood_jax.models.flows.flow_model import gaussian_log_density
from ood_jax.registry import choose

SCALE_FNS = ("exp", "sigmoid")
SOW_KEYS = ("x_in", "s", "t", "y_out")


def half_slices(dim: int, index: int) -> tuple[slice, slice]:
  """``(conditioning, transformed)`` index ranges of coupling ``index`` on ``dim`` entries:
  even: ``(:D//2, D//2:)``, odd: ``(D//2:, :D//2)``."""
  h = dim // 2
  first, second = slice(0, h), slice(h, dim)
  return (first, second) if index % 2 == 0 else (second, first)


def check_vectors(x, dim: int, what: str = "VectorRealNVP") -> jax.Array:
  """``x`` as a float32 jax array ``N x dim`` (N >= 1), else one ``InvalidInputError``.
  Runs at trace time: costs nothing inside ``jit``."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise InvalidInputError(
        f"{what}: expected float feature vectors N x {dim}, got dtype {x.dtype}"
        " (images are not feature vectors; extract features first).")
  if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 1:
    raise InvalidInputError(f"{what}: expected feature vectors N x {dim}, got shape {tuple(x.shape)}.")
  return x.astype(jnp.float32)


class VectorCoupling(Bijector):
  """One affine coupling on half masks (see the module docstring); a bijector:
  ``forward_and_log_det(x) -> (y, log|det dy/dx|)``, ``inverse_and_log_det(y) -> (x, log|det
  dx/dy|)``, both ``[N]`` nats."""
  dim: int
  index: int = 0
  hidden: int = 512
  hidden_layers: int = 3
  scale_fn: str = "exp"

  @nn.compact
  def _log_scale_and_shift(self, xa: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log scale, t)``, each ``N x |b|``, from the conditioning half ``xa``."""
    nb = self.dim - xa.shape[-1]
    h = nn.relu(nn.Dense(self.hidden, name="dense_in")(xa))
    for i in range(self.hidden_layers):
      h = nn.relu(nn.Dense(self.hidden, name=f"dense{i}")(h))
    out = nn.Dense(2 * nb, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                   name="dense_out")(h)
    raw, t = out[:, :nb], out[:, nb:]
    if self.scale_fn == "sigmoid":
      return jax.nn.log_sigmoid(raw), t
    w = self.param("scale", nn.initializers.ones, (nb,), jnp.float32)
    return w * jnp.tanh(raw), t

  def _merge(self, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.concatenate([a, b] if self.index % 2 == 0 else [b, a], axis=-1)

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    del train  # no batch statistics
    ca, cb = half_slices(self.dim, self.index)
    log_s, t = self._log_scale_and_shift(x[:, ca])
    yb = (x[:, cb] + t) * jnp.exp(log_s)
    y = self._merge(x[:, ca], yb)
    for key, value in zip(SOW_KEYS, (x, log_s, t, y)):
      self.sow("intermediates", key, value)
    return y, jnp.sum(log_s, axis=-1)

  def inverse_and_log_det(self, y: jax.Array):
    ca, cb = half_slices(self.dim, self.index)
    log_s, t = self._log_scale_and_shift(y[:, ca])
    xb = y[:, cb] * jnp.exp(-log_s) - t
    return self._merge(y[:, ca], xb), -jnp.sum(log_s, axis=-1)


class VectorRealNVP(nn.Module):
  """RealNVP on ``N x dim`` float vectors (see the module docstring). Defaults: the paper's
  image-embedding flow (8 couplings, 3 hidden layers, 512 units, ``exp(w tanh)`` scales)."""
  dim: int
  num_couplings: int = 8
  hidden: int = 512
  hidden_layers: int = 3
  scale_fn: str = "exp"

  def __post_init__(self):
    for field, low in (("dim", 2), ("num_couplings", 1), ("hidden", 1), ("hidden_layers", 0)):
      v = getattr(self, field)
      if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InvalidInputError(f"VectorRealNVP: {field} must be an integer >= {low}, got {v!r}.")
    choose("VectorRealNVP scale_fn", self.scale_fn, SCALE_FNS)
    super().__post_init__()

  def setup(self):
    self.couplings = [
        VectorCoupling(self.dim, i, self.hidden, self.hidden_layers, self.scale_fn,
                       name=f"coupling{i}")
        for i in range(self.num_couplings)]

  def encode_and_log_det(self, x) -> tuple[jax.Array, jax.Array]:
    """``(z, log|det dz/dx|)``: latents ``N x dim`` and nats ``[N]``."""
    h = check_vectors(x, self.dim)
    logdet = jnp.zeros((h.shape[0],), jnp.float32)
    for c in self.couplings:
      h, ld = c.forward_and_log_det(h)
      logdet = logdet + ld
    return h, logdet

  def log_prob_parts(self, x, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(log p(z), log|det dz/dx|)``, nats ``[N]`` each; their sum is ``log p(x)``."""
    del train  # No batch statistics.
    z, logdet = self.encode_and_log_det(x)
    return gaussian_log_density(z), logdet

  def log_prob(self, x, train: bool = False) -> jax.Array:
    """``log p(x)``, nats per vector ``[N]`` (a continuous density on ``R^dim``)."""
    log_pz, logdet = self.log_prob_parts(x, train)
    return log_pz + logdet

  def __call__(self, x, train: bool = False) -> jax.Array:
    """The training objective: ``-log p(x)``, nats per vector ``[N]``."""
    return -self.log_prob(x, train)

  def encode(self, x, train: bool = False) -> jax.Array:
    """``z = f(x)``, ``N x dim``."""
    del train
    return self.encode_and_log_det(x)[0]

  def decode(self, z) -> jax.Array:
    """``x = f^{-1}(z)``, ``N x dim`` (exact inverse of ``encode``)."""
    h = check_vectors(z, self.dim, "VectorRealNVP.decode")
    for c in reversed(self.couplings):
      h, _ = c.inverse_and_log_det(h)
    return h

  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` vectors ``decode(temperature * eps)``, ``eps ~ N(0, I)``; float32 ``n x dim``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise InvalidInputError(f"VectorRealNVP.sample: n must be an integer >= 1, got {n!r}.")
    eps = jax.random.normal(rng, (n, self.dim), jnp.float32)
    return self.decode(temperature * eps)
