"""Nalisnick et al. (2019) section 5 / App. G: the second-order analysis of CV-Glow.

The paper expands ``log p(x)`` to second order around an interior point ``x0`` (Eq. 4):

    E_q[log p] - E_p[log p] ~ grad log p(x0) . (mu_q - mu_p)
                              + 1/2 Tr{H(x0) (Sigma_q - Sigma_p)},   H = hessian of log p,

drops the first term (equal means, ``x0`` their common value; Eq. 5) and, for CV-Glow with a
fixed spherical prior ``N(0, sigma_psi^2 I)`` and diagonal covariances, gets (Eqs. 6, 12, 14)

    -1/(2 sigma_psi^2) sum_c alpha_c^2 sum_{h,w} (sigma^2_{q,h,w,c} - sigma^2_{p,h,w,c}),
    alpha_c = prod_k sum_j u_{k,c,j}                                   (the paper's Eq. 12)

(pixels divided by 256). Everything here is in the model's pixel units ``y = x / 256``
(``Glow.encode_unit`` takes ``y`` in [0, 1)), nats per image.

**The linearised flow.** With the coupling translations zeroed (an additive coupling is then
the identity: the paper's derivation keeps only the 1x1 kernels), CV-Glow is linear:
``z = A y + b``. Each step is ActNorm (``diag(scale)``, when present) then the 1x1 conv
``W`` (plain ``kernel`` or LU: ``invconv.lu_weight``), so level ``l`` applies at every
squeezed location one matrix ``M_l = W_K S_K ... W_1 S_1`` (``C_l x C_l``, ``C_l = 4 x`` the
channels entering the level), and log p(y) = -1/(2 sigma^2) ||A y + b||^2 + const, whose
Hessian is ``-A^T A / sigma^2`` everywhere. So for the linearised model, exactly,

    1/2 Tr{H (Sigma_q - Sigma_p)} = -1/(2 sigma^2) Tr{A^T A (Sigma_q - Sigma_p)}.

**Squeeze and multi-scale: what "per channel" becomes.** A squeeze sends pixel
``(2i + di, 2j + dj, c)`` to channel ``(2 di + dj) C + c`` of location ``(i, j)``; the level's
steps mix only channels; the split sends the second half of the channels out as latents
(no further mixing: their rows of ``A`` are final) and the first half, squeezed again, into
the next level. With ``L`` levels, ``T = 2^L``, the input pixel ``(h, w, c)`` therefore only
ever meets the pixels of its own ``T x T`` patch ``(h // T, w // T)``, and its column of
``A`` depends on its *phase* ``(h mod T, w mod T, c)`` only (the kernels are shared by every
location): ``A`` is, up to a permutation of its rows, block-diagonal with one ``P x P``
block ``B`` per patch, ``P = T^2 C`` (``block_jacobian``). Hence

    Tr{A^T A Delta} = Tr{B^T B G(Delta)},   G = sum over patches of Delta's patch block,

and with diagonal covariances (the paper's last step)

    -1/(2 sigma^2) sum_{a,b,c} alpha_{a,b,c}^2 sum_{h = a, w = b mod T} (s2_q - s2_p)_{h,w,c},
    alpha_phase^2 = (B^T B)_{phase, phase} = squared norm of B's column of that phase,

i.e. there is one "alpha" per input phase ``(a, b, c)`` (``T^2 C`` of them, not ``C``), and
the per-pixel variances are summed over the pixels of one phase (``variance_sums(x,
period=T)``). The paper's single-level formula is the special case of one level and no
squeeze (``LinearFlow(..., squeeze=False)``, ``T = 1``): ``B = M`` (the product of the
kernels), ``alpha_c^2 = ||M e_c||^2`` and Eq. 14 exactly. Eq. 12's ``prod_k sum_j u_{k,c,j}``
(``paper_alphas``) is that column norm only when the kernels are diagonal: the derivative of
a composition is the product of the kernels, whose diagonal is not the product of the
kernels' row sums, and ``(J^T J)_{cc}`` is a squared column norm, not a squared diagonal
entry. The sign argument is unchanged: every ``alpha^2 >= 0``, so the diagonal prediction is
``>= 0`` for *any* parameters whenever every phase's variance sum of ``q`` is at most
``p``'s; with full covariances, whenever ``G_p - G_q`` is positive semi-definite.

**The trained (nonlinear) model.** ``hessian_quadratic_forms`` computes ``v^T H(x0) v`` of
the trained flow's ``log p`` by forward-over-reverse Hessian-vector products (every layer,
couplings included); with ``v_i = x_i - mean`` over a set's images it gives
``Tr{H Sigma_hat}`` exactly for that set's sample covariance ``Sigma_hat = mean v v^T``
(``hessian_trace``).

Functions (numpy float64 unless noted): ``step_maps(model, variables)`` (per step the
ActNorm scale and effective 1x1 kernel); ``linear_flow(model, variables) -> LinearFlow``;
``linear_jacobian(flow)`` (``D x D``, rows in ``encode_unit``'s latent order);
``block_jacobian(flow)`` (``P x P``); ``alphas(model, variables)`` / ``flow_alphas(flow)``
(``T x T x C``); ``paper_alphas(kernels)``; ``variance_sums(x_uint8, period)``;
``phase_covariance(x_uint8, period)``; ``predicted_gap``; ``linear_trace_gap``;
``linear_quadratic_forms``; ``means_condition``; ``log_density_fn``;
``hessian_quadratic_forms``; ``gradient``; ``hessian_trace``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.glow import Glow
from ood_jax.models.flows.invconv import lu_weight

PIXEL_SCALE = 256.0      # the paper's (and the flows') pixels / 256


# ----------------------------------------------------------------------------- linear flow


@dataclasses.dataclass(frozen=True)
class LinearFlow:
  """A channel-mixing linear flow: per level (a squeeze unless ``squeeze=False``, then) the
  matrix ``matrices[l]`` at every location, then the channels ``kept[l]`` (the first ones)
  go on to the next level and the others are latents (``kept[-1]``: all of them)."""
  image_shape: tuple[int, int, int]
  matrices: tuple[np.ndarray, ...]
  kept: tuple[int, ...]
  squeeze: bool = True

  @property
  def period(self) -> int:
    """``T``: pixels with equal ``(h mod T, w mod T, c)`` have the same column norms."""
    return 2 ** len(self.matrices) if self.squeeze else 1


def check_linearisable(model) -> None:
  """One clear error unless ``model`` is a CV-Glow whose linearisation is exact here:
  ``Glow`` with ``additive`` couplings, no ``logit`` pre-transform and a fixed ``N(0, I)``
  prior (``learn_prior=False``; a learned split prior's scale depends on the kept half)."""
  if not isinstance(model, Glow):
    raise InvalidInputError(f"second-order analysis: needs a Glow / CV-Glow, got "
                            f"{type(model).__name__}.")
  bad = [f"{name}={getattr(model, name)!r} (needs {want!r})"
         for name, want in (("additive", True), ("logit", False), ("learn_prior", False))
         if bool(getattr(model, name)) != want]
  if bad:
    raise InvalidInputError("second-order analysis: the CV-Glow of Nalisnick et al. section 5 "
                            "needs additive couplings, no logit and a fixed N(0, I) prior; got "
                            + ", ".join(bad) + ".")


def _child(tree, name: str, where: str):
  """The shallowest entry ``name`` inside the nested mapping ``tree`` (flax may wrap a
  module's children in scopes such as ``chain``); an error naming ``where`` if absent."""
  frontier = [tree]
  while frontier:
    nxt = []
    for t in frontier:
      if name in t:
        return t[name]
      nxt += [v for v in t.values() if isinstance(v, Mapping)]
    frontier = nxt
  raise InvalidInputError(f"second-order analysis: no {name!r} under {where} in the variables.")


def step_maps(model, variables) -> list[list[tuple]]:
  """Per level, per step (forward order) ``(scale or None, W)``: the step's ActNorm scale
  (``[C_l]``; None without ActNorm) and its effective 1x1 kernel (``C_l x C_l``: ``kernel``,
  or ``invconv.lu_weight`` of the LU parameters), float64, from ``variables``."""
  check_linearisable(model)
  params = variables["params"]
  consts = variables.get("flow_constants", {})
  c = int(model.image_shape[-1])
  out = []
  for l in range(int(model.levels)):
    c = 4 * c
    lp = _child(params, f"level_{l}", "params")
    steps = []
    for k in range(int(model.steps)):
      step = _child(lp, f"step{k}", f"level_{l}")
      scale = None
      if "actnorm" in step:                      # a step's own ActNorm (not the st-net's)
        scale = np.asarray(step["actnorm"]["scale"], np.float64)
      conv = _child(step, "invconv", f"level_{l}/step{k}")
      if "kernel" in conv:
        w = conv["kernel"]
      else:
        cc = _child(_child(_child(consts, f"level_{l}", "flow_constants"), f"step{k}",
                           f"level_{l}"), "invconv", f"level_{l}/step{k}")
        w = lu_weight(cc["perm"], cc["sign_s"], conv["lower"], conv["upper"], conv["log_s"])[0]
      w = np.asarray(w, np.float64)
      if w.shape != (c, c) or (scale is not None and scale.shape != (c,)):
        raise InvalidInputError(f"second-order analysis: level_{l}/step{k} kernel {w.shape} "
                                f"does not fit {c} channels.")
      steps.append((scale, w))
    out.append(steps)
    c = c // 2 if l < int(model.levels) - 1 else c
  return out


def linear_flow(model, variables) -> LinearFlow:
  """The linearised CV-Glow (translations zeroed) of ``model`` with ``variables``: per level
  ``M_l = W_K S_K ... W_1 S_1`` (``S_k = diag(ActNorm scale)`` where the step has an ActNorm,
  ``W_k`` the effective 1x1 kernel, LU or plain); the split keeps ``C_l // 2`` channels."""
  matrices, kept = [], []
  maps = step_maps(model, variables)
  for l, steps in enumerate(maps):
    c = steps[0][1].shape[0]
    m = np.eye(c)
    for scale, w in steps:
      m = w @ (m if scale is None else scale[:, None] * m)
    matrices.append(m)
    kept.append(c // 2 if l < len(maps) - 1 else c)   # GlowLevel: h[..., :c // 2] goes on
  return LinearFlow(tuple(int(s) for s in model.image_shape), tuple(matrices), tuple(kept))


def _squeeze_rows(x: np.ndarray) -> np.ndarray:
  """``H x W x C x n -> H/2 x W/2 x 4C x n``: channel ``(2 di + dj) C + c`` of ``(i, j)`` is
  ``x[2i + di, 2j + dj, c]`` (written out, not ``squeeze.py``'s reshape)."""
  h, w, c, n = x.shape
  out = np.empty((h // 2, w // 2, 4 * c, n), x.dtype)
  for di in (0, 1):
    for dj in (0, 1):
      s = 2 * di + dj
      out[:, :, s * c:(s + 1) * c] = x[di::2, dj::2]
  return out


def _latent_rows(flow: LinearFlow, shape) -> list[np.ndarray]:
  """The latents of ``flow`` on an input of ``shape`` as linear maps of it: per latent (the
  split ones in level order, then the top) ``H_l x W_l x C_l x D`` (``D = prod(shape)``,
  columns in row-major ``(h, w, c)`` order)."""
  h, w, c = (int(s) for s in shape)
  x = np.eye(h * w * c).reshape(h, w, c, h * w * c)
  outs = []
  for m, k in zip(flow.matrices, flow.kept):
    if flow.squeeze:
      if x.shape[0] % 2 or x.shape[1] % 2:
        raise InvalidInputError(f"second-order analysis: {shape} cannot be squeezed "
                                f"{len(flow.matrices)} times.")
      x = _squeeze_rows(x)
    if m.shape != (x.shape[2],) * 2:
      raise InvalidInputError(f"second-order analysis: a level matrix of shape {m.shape} "
                              f"meets {x.shape[2]} channels.")
    x = np.einsum("dc,hwcn->hwdn", m, x)
    if k < x.shape[2]:
      outs.append(x[:, :, k:])
    x = x[:, :, :k]
  outs.append(x)
  return outs


def linear_jacobian(flow: LinearFlow) -> np.ndarray:
  """``dz/dy`` of the linearised flow on its image, ``D x D``: rows the latents in
  ``encode_unit``'s order (each flattened row-major), columns ``y`` flattened row-major."""
  rows = _latent_rows(flow, flow.image_shape)
  return np.concatenate([r.reshape(-1, r.shape[-1]) for r in rows], axis=0)


def block_jacobian(flow: LinearFlow) -> np.ndarray:
  """``B``, ``P x P`` (``P = T^2 C``): the linearised flow on one ``T x T`` patch; columns the
  phases ``(a, b, c)`` row-major. ``A^T A`` of the whole image is ``B^T B`` on every patch."""
  t, c = flow.period, flow.image_shape[-1]
  rows = _latent_rows(flow, (t, t, c))
  return np.concatenate([r.reshape(-1, r.shape[-1]) for r in rows], axis=0)


def flow_alphas(flow: LinearFlow) -> np.ndarray:
  """``alpha`` per phase, ``T x T x C``: the column norms of ``B`` (``alpha^2 = (B^T B)_pp``,
  the diagonal of ``A^T A`` at every pixel of that phase)."""
  b = block_jacobian(flow)
  t, c = flow.period, flow.image_shape[-1]
  return np.sqrt(np.sum(b * b, axis=0)).reshape(t, t, c)


def alphas(model, variables) -> np.ndarray:
  """``flow_alphas(linear_flow(model, variables))``: CV-Glow's alpha per phase ``(h mod T,
  w mod T, c)``, ``T = 2^levels``."""
  return flow_alphas(linear_flow(model, variables))


def paper_alphas(kernels: Sequence[np.ndarray]) -> np.ndarray:
  """Eq. 12 as printed: ``alpha_c = prod_k sum_j u_{k,c,j}`` (``u_{k,c,j}`` row ``c``,
  column ``j`` of kernel ``k``; ``y = U x`` as ``invconv``), ``[C]``. Equal to the exact
  single-level, no-squeeze column norm ``||U_K ... U_1 e_c||`` (up to sign) when every
  kernel is diagonal, not in general (module docstring)."""
  ks = [np.asarray(k, np.float64) for k in kernels]
  if not ks or any(k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != ks[0].shape
                   for k in ks):
    raise InvalidInputError("paper_alphas: expected one or more square kernels of one shape.")
  return np.prod(np.stack([k.sum(axis=1) for k in ks]), axis=0)


# ----------------------------------------------------------------------------- data moments


def _pixels(x_uint8, period: int, what: str) -> np.ndarray:
  """``x / 256`` as float64 ``N x H x W x C``, checked (uint8, N >= 2, H and W divisible
  by ``period``)."""
  x = np.asarray(x_uint8)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[0] < 2:
    raise InvalidInputError(f"{what}: expected uint8 images N x H x W x C with N >= 2, got "
                            f"{x.dtype} {x.shape}.")
  period = int(period)
  if period < 1 or x.shape[1] % period or x.shape[2] % period:
    raise InvalidInputError(f"{what}: height and width {x.shape[1:3]} must be divisible by "
                            f"the period {period}.")
  return x.astype(np.float64) / PIXEL_SCALE


def variance_sums(x_uint8, period: int = 1) -> np.ndarray:
  """``period x period x C``: ``sum_{h = a, w = b (mod period)} Var[x_{h,w,c} / 256]`` (over
  the images, ``1/N``). ``period=1``: the paper's per-channel sums (Eq. 6's 49.6, 61.9...)."""
  y = _pixels(x_uint8, period, "variance_sums")
  n, h, w, c = y.shape
  var = y.var(axis=0)
  t = int(period)
  return var.reshape(h // t, t, w // t, t, c).sum(axis=(0, 2))


def _patches(y: np.ndarray, t: int) -> np.ndarray:
  """``N x H x W x C -> N x (H/t)(W/t) x t^2 C``, each patch row-major ``(a, b, c)``."""
  n, h, w, c = y.shape
  y = y.reshape(n, h // t, t, w // t, t, c).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, (h // t) * (w // t), t * t * c)


def phase_covariance(x_uint8, period: int) -> np.ndarray:
  """``G = sum over the T x T patches of the patch's covariance`` (``1/N``, pixels / 256),
  ``P x P`` with ``P = T^2 C``; its diagonal is ``variance_sums(x, T)`` flattened, and
  ``Tr{A^T A Sigma} = Tr{B^T B G}`` for the linearised flow."""
  y = _pixels(x_uint8, period, "phase_covariance")
  p = _patches(y, int(period))
  p = p - p.mean(axis=0, keepdims=True)
  return np.einsum("nlp,nlq->pq", p, p) / p.shape[0]


def predicted_gap(alpha, var_q, var_p, sigma2: float = 1.0) -> float:
  """Eq. 6: ``E_q[log p] - E_p[log p] ~ -1/(2 sigma2) sum alpha^2 (var_q - var_p)`` (nats),
  ``alpha`` and the variance sums of one shape (per channel, or per phase)."""
  a, q, p = (np.asarray(v, np.float64) for v in (alpha, var_q, var_p))
  if not a.shape == q.shape == p.shape:
    raise InvalidInputError(f"predicted_gap: alpha {a.shape} and variance sums {q.shape}, "
                            f"{p.shape} must have one shape.")
  return float(-0.5 / sigma2 * np.sum(a * a * (q - p)))


def linear_trace_gap(block: np.ndarray, cov_q: np.ndarray, cov_p: np.ndarray,
                     sigma2: float = 1.0) -> float:
  """``1/2 Tr{H (Sigma_q - Sigma_p)}`` of the linearised flow with full covariances:
  ``-1/(2 sigma2) Tr{B^T B (G_q - G_p)}`` (``phase_covariance``s), nats."""
  b = np.asarray(block, np.float64)
  return float(-0.5 / sigma2 * np.sum((b.T @ b) * (np.asarray(cov_q) - np.asarray(cov_p))))


def linear_quadratic_forms(flow: LinearFlow, v: np.ndarray, sigma2: float = 1.0) -> np.ndarray:
  """``v_i^T H_lin v_i = -||A v_i||^2 / sigma2`` of the linearised flow for deviations
  ``v`` (``N x H x W x C``, pixels / 256), ``[N]``."""
  t = flow.period
  b = block_jacobian(flow)
  p = _patches(np.asarray(v, np.float64), t)
  return -np.sum(np.einsum("rp,nlp->nlr", b, p) ** 2, axis=(1, 2)) / sigma2


def means_condition(x_q, x_p) -> dict:
  """The paper's check of Eq. 5's equal-means assumption: the per-dimension means of ``q``
  against the range of ``p``'s (``frac_within``: the fraction of dimensions whose ``q`` mean
  lies in ``[min_d mean_p, max_d mean_p]``; the paper: all of SVHN's within CIFAR-10's) and
  the largest per-dimension difference in pixel levels (the paper: under 38)."""
  mq = _pixels(x_q, 1, "means_condition").mean(axis=0) * PIXEL_SCALE
  mp = _pixels(x_p, 1, "means_condition").mean(axis=0) * PIXEL_SCALE
  if mq.shape != mp.shape:
    raise InvalidInputError(f"means_condition: image shapes {mq.shape} and {mp.shape} differ.")
  within = (mq >= mp.min()) & (mq <= mp.max())
  return {"frac_within": float(within.mean()), "all_within": bool(within.all()),
          "max_abs_diff_levels": float(np.abs(mq - mp).max()),
          "mean_abs_diff_levels": float(np.abs(mq - mp).mean()),
          "p_mean_range_levels": [float(mp.min()), float(mp.max())]}


# ----------------------------------------------------------------------------- trained model


def log_density_fn(model, variables) -> Callable[[jax.Array], jax.Array]:
  """``y (H x W x C, in [0, 1)) -> log p(y)`` (nats, continuous density of the flow:
  ``log p(z) + log|det dz/dy|``), a scalar JAX function of one image."""
  def log_p(y):
    _, log_pz, logdet = model.apply(variables, y[None], method=model.encode_unit)
    return (log_pz + logdet)[0]
  return log_p


def _chunked(fn, v: np.ndarray, batch: int) -> np.ndarray:
  """``fn`` over ``v`` in chunks of exactly ``batch`` rows (the last one zero-padded: one
  compile), results concatenated and trimmed to ``len(v)``."""
  out = []
  for i in range(0, len(v), batch):
    chunk = v[i:i + batch]
    real = len(chunk)
    if real < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - real, *v.shape[1:]), v.dtype)])
    out.append(np.asarray(fn(jnp.asarray(chunk)))[:real])
  return np.concatenate(out) if out else np.zeros((0,))


@functools.lru_cache(maxsize=8)
def _forms_fn(log_density):
  """``(x0, V) -> [v_i^T H(x0) v_i]``, jitted once per ``log_density``."""
  grad = jax.grad(log_density)

  def quad(x0, u):
    return jnp.vdot(u, jax.jvp(grad, (x0,), (u,))[1])
  return jax.jit(jax.vmap(quad, in_axes=(None, 0)))


@functools.lru_cache(maxsize=8)
def _grad_fn(log_density):
  return jax.jit(jax.grad(log_density))


def hessian_quadratic_forms(log_density, x0, v, batch: int = 32) -> np.ndarray:
  """``v_i^T H(x0) v_i`` (``H`` the Hessian of ``log_density`` at ``x0``) for the rows of
  ``v`` (``N x shape(x0)``), by forward-over-reverse Hessian-vector products, ``batch``
  vectors per call (one compile per ``log_density`` and ``batch``); float64 ``[N]``
  (computed in float32)."""
  x0 = jnp.asarray(x0, jnp.float32)
  v = np.asarray(v, np.float32)
  if v.ndim != x0.ndim + 1 or v.shape[1:] != x0.shape:
    raise InvalidInputError(f"hessian_quadratic_forms: vectors {v.shape} do not match x0 "
                            f"{x0.shape}.")
  if int(batch) < 1:
    raise InvalidInputError(f"hessian_quadratic_forms: batch must be >= 1, got {batch}.")
  fn = _forms_fn(log_density)
  return _chunked(lambda chunk: fn(x0, chunk), v, int(batch)).astype(np.float64)


def gradient(log_density, x0) -> np.ndarray:
  """``grad log_density(x0)``, float64 array of ``x0``'s shape."""
  return np.asarray(_grad_fn(log_density)(jnp.asarray(x0, jnp.float32)), np.float64)


def hessian_trace(log_density, x0, dev_q, dev_p, batch: int = 32) -> dict:
  """``Tr{H(x0) (Sigma_q - Sigma_p)}`` for the sample covariances ``Sigma = mean_i v_i v_i^T``
  of the deviations ``dev_q`` and ``dev_p`` (``N x shape(x0)``, each set's images minus its
  mean): exact for those sample covariances (one Hessian-vector product per image).
  ``{'trace', 'trace_q', 'trace_p', 'se'}`` (``se``: the standard error of ``trace`` as an
  estimate of the population quantity, from the spread of the per-image forms)."""
  fq = hessian_quadratic_forms(log_density, x0, dev_q, batch)
  fp = hessian_quadratic_forms(log_density, x0, dev_p, batch)
  se = float("nan")
  if min(len(fq), len(fp)) > 1:
    se = np.sqrt(fq.var(ddof=1) / len(fq) + fp.var(ddof=1) / len(fp))
  return {"trace": float(fq.mean() - fp.mean()), "trace_q": float(fq.mean()),
          "trace_p": float(fp.mean()), "se": float(se), "forms_q": fq, "forms_p": fp}
