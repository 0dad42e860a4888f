"""Glow's invertible 1x1 convolution, plain and LU-parametrised.

Every pixel's channel vector is multiplied by a ``C x C`` matrix: ``y[n, i, j] = W @ x[n, i, j]``.
logdet (nats, per sample) ``= H * W_img * log|det W|``, the same for every input; the
inverse's is the negative.

* ``InvConv1x1``: ``W`` is a parameter ``kernel`` initialised as a random orthogonal matrix;
  ``log|det W|`` via ``slogdet``.
* ``InvConv1x1LU``: ``W = P @ L @ (U + diag(sign * exp(log_s)))`` with ``P`` a fixed
  permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular, so
  ``log|det W| = sum(log_s)``. ``P`` and ``sign`` are not trained: they live in the
  ``'flow_constants'`` collection (made by ``init``; pass it back with the other variables).
  Initialised from the LU decomposition of a random orthogonal matrix.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.models.flows.bijector import Bijector


def random_orthogonal(key: jax.Array, c: int) -> jax.Array:
  """A random ``c x c`` orthogonal matrix (QR of a Gaussian matrix, sign-corrected)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (c, c), jnp.float32))
  return q * jnp.sign(jnp.diag(r))[None, :]


def _apply(w: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.einsum("dc,nhwc->nhwd", w, x)


def _log_det(x: jax.Array, log_abs_det_w: jax.Array) -> jax.Array:
  """``H * W * log|det W|`` for each of the N samples of ``x``, float32 ``[N]``."""
  return jnp.full((x.shape[0],), x.shape[1] * x.shape[2] * log_abs_det_w, jnp.float32)


class _InvConv(Bijector):
  """Shared bijector methods; subclasses define ``_weight(c) -> (W, log|det W|)``."""
  constant = True

  def _weight(self, c: int) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def forward_and_log_det(self, x: jax.Array, train: bool = False):
    del train
    w, log_abs_det = self._weight(x.shape[-1])
    return _apply(w, x), _log_det(x, log_abs_det)

  def inverse_and_log_det(self, y: jax.Array):
    w, log_abs_det = self._weight(y.shape[-1])
    return _apply(jnp.linalg.inv(w), y), -_log_det(y, log_abs_det)


class InvConv1x1(_InvConv):
  """Plain invertible 1x1 conv with a free ``C x C`` kernel."""

  @nn.compact
  def _weight(self, c: int) -> tuple[jax.Array, jax.Array]:
    w = self.param("kernel", lambda key: random_orthogonal(key, c))
    return w, jnp.linalg.slogdet(w)[1]


def lu_weight(perm, sign, lower, upper, log_s) -> tuple[jax.Array, jax.Array]:
  """``(W, log_s)``, ``W = perm @ (tril(lower, -1) + I) @ (triu(upper, 1) + diag(sign e^log_s))``.
  """
  eye = jnp.eye(perm.shape[0], dtype=jnp.float32)
  l_mat = jnp.tril(lower, -1) + eye
  u_mat = jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))
  return perm @ l_mat @ u_mat, log_s


class InvConv1x1LU(_InvConv):
  """LU-parametrised invertible 1x1 conv (Glow, section 3.2)."""

  @nn.compact
  def _weight(self, c: int) -> tuple[jax.Array, jax.Array]:
    """Creates (during ``init``) or reads ``perm, sign_s, lower, upper, log_s``; ``(W, sum log_s)``."""
    eye = jnp.eye(c, dtype=jnp.float32)
    decomposition = (eye, eye, eye, jnp.ones((c,), jnp.float32))  # shapes only (flax checks)
    if self.is_initializing() and not self.has_variable("flow_constants", "perm"):
      w0 = random_orthogonal(self.make_rng("params"), c)
      p, l, u = jax.scipy.linalg.lu(w0)
      decomposition = (p, l, u, jnp.diag(u))
    perm = self.variable("flow_constants", "perm", lambda: decomposition[0]).value
    sign = self.variable("flow_constants", "sign_s", lambda: jnp.sign(decomposition[3])).value
    lower = self.param("lower", lambda _: jnp.tril(decomposition[1], -1))
    upper = self.param("upper", lambda _: jnp.triu(decomposition[2], 1))
    log_s = self.param("log_s", lambda _: jnp.log(jnp.abs(decomposition[3])))
    w, log_s = lu_weight(perm, sign, lower, upper, log_s)
    return w, jnp.sum(log_s)

  def weight(self) -> tuple[jax.Array, jax.Array]:
    """``(W, log_s)`` of bound variables (``layer.apply(variables, method='weight')``)."""
    return lu_weight(self.get_variable("flow_constants", "perm"),
                     self.get_variable("flow_constants", "sign_s"),
                     self.get_variable("params", "lower"), self.get_variable("params", "upper"),
                     self.get_variable("params", "log_s"))
