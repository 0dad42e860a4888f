"""Fisher approximations of one gradient block and the quadratic form ``gᵀ F⁻¹ g``.

A *block* is one image-batch of per-image gradient matrices ``G_n`` (``k x out``), given
either as a pair ``(P, Δ)`` with ``G_n = P_nᵀ Δ_n`` (patches ``N x T x k``, output
gradients ``N x T x out``, see ``per_sample_grads.py``) or as ``G`` itself (``N x k x out``,
the generic fallback). ``G`` is never formed for ``(P, Δ)`` blocks with ``T = 1`` (the
VAE's 4x4 heads); otherwise it is formed by a batched matmul after rotating ``P`` and ``Δ``.

* DIAG: ``F = diag(E[G²]) + λ`` (elementwise), ``s = Σ G² / F``.
* EKFAC (George et al. 2018): Kronecker factors ``A`` (``k x k``) and ``S`` (``out x out``),
  eigenbases ``U_A``, ``U_S`` (``eigh``), eigenvalue correction ``Λ = E[(U_Aᵀ G U_S)²]`` and
  ``s = Σ (U_Aᵀ G U_S)² / (Λ + λ)``; ``U_Aᵀ G_n U_S = (P_n U_A)ᵀ (Δ_n U_S)``.
  For ``(P, Δ)`` blocks (KFAC for convolutions, Grosse & Martens 2016):
  ``A = E_n[(1/T) Σ_t a_t a_tᵀ]`` (mean over images and positions, bias entry 1 folded in)
  and ``S = E_n[Σ_t δ_t δ_tᵀ]`` (sum over positions, mean over images). For ``G`` blocks
  (no patches) ``A = E[G Gᵀ]``, ``S = E[Gᵀ G]``. Only the eigenvectors of ``A`` and ``S``
  enter the score (``Λ`` is re-estimated), so these scale conventions do not change it.

The damping is relative by default: ``λ = damping * mean(diag)``, with ``diag`` = ``E[G²]``
(DIAG) or ``Λ`` (EKFAC) of the block, so one setting suits layers whose gradients differ by
orders of magnitude; ``absolute``: ``λ = damping`` (the public ROSE code's ``1e-8``). Units: ``s`` is dimensionless (a squared Mahalanobis norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Block = tuple  # (P, Δ) or (G,)


def _rotate(block: Block, ua, us) -> Block:
  """The block in the eigenbases (identity where ``ua``/``us`` are ``None``)."""
  if len(block) == 2:
    p, d = block
    return (p if ua is None else p @ ua, d if us is None else d @ us)
  g = block[0]
  if ua is not None:
    g = jnp.einsum("nkc,ka->nac", g, ua)
  if us is not None:
    g = g @ us
  return (g,)


def _squares(block: Block):
  """Per-image squared gradient entries, as ``(a², b²)`` rank-1 factors when ``T = 1``
  (``G_n = a bᵀ``), else the ``N x k x out`` array ``G²``."""
  if len(block) == 2:
    p, d = block
    if p.shape[1] == 1:
      return (p[:, 0] ** 2, d[:, 0] ** 2)
    return jnp.einsum("ntk,nto->nko", p, d) ** 2
  return block[0] ** 2


def sum_sq(block: Block, ua=None, us=None) -> jax.Array:
  """``Σ_n (U_Aᵀ G_n U_S)²`` (``k x out``; plain ``Σ G²`` without bases)."""
  sq = _squares(_rotate(block, ua, us))
  if isinstance(sq, tuple):
    return sq[0].T @ sq[1]
  return jnp.sum(sq, axis=0)


def quad_form(block: Block, inv: jax.Array, ua=None, us=None) -> jax.Array:
  """``s_n = Σ (U_Aᵀ G_n U_S)² * inv``, float32 ``N`` (``inv = 1 / (diag + λ)``)."""
  sq = _squares(_rotate(block, ua, us))
  if isinstance(sq, tuple):
    return jnp.sum((sq[0] @ inv) * sq[1], axis=-1)
  return jnp.einsum("nko,ko->n", sq, inv)


def factor_sums(block: Block) -> tuple[jax.Array, jax.Array, int]:
  """Unnormalised Kronecker factors ``(Σ_n Σ_t a aᵀ, Σ_n Σ_t δ δᵀ, T)`` of a ``(P, Δ)`` block,
  or ``(Σ G Gᵀ, Σ Gᵀ G, 1)`` of a ``(G,)`` block; ``A = a_sum / (N T)``, ``S = s_sum / N``."""
  if len(block) == 2:
    p, d = block
    return jnp.einsum("ntk,ntl->kl", p, p), jnp.einsum("nto,ntq->oq", d, d), p.shape[1]
  g = block[0]
  return jnp.einsum("nkc,nlc->kl", g, g), jnp.einsum("nkc,nkd->cd", g, g), 1


def eigenbasis(m: jax.Array) -> jax.Array:
  """Orthonormal eigenvectors (columns) of a symmetric matrix, by ``eigh``."""
  return jnp.linalg.eigh(0.5 * (m + m.T))[1]


DAMPINGS = ("relative", "absolute")


def inverse_diag(diag: jax.Array, damping: float, kind: str = "relative") -> jax.Array:
  """``1 / (diag + λ)`` with ``λ = damping * mean(diag)`` (``kind='relative'``) or
  ``λ = damping`` (``'absolute'``), floored at the float32 tiny."""
  if kind not in DAMPINGS:
    raise ValueError(f"damping kind must be one of {DAMPINGS}, got {kind!r}.")
  lam = damping * jnp.mean(diag) if kind == "relative" else jnp.float32(damping)
  lam = jnp.maximum(lam, jnp.finfo(jnp.float32).tiny)
  return 1.0 / (diag + lam)
