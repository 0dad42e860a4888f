"""Transposed 2-D convolution with torch ``ConvTranspose2d`` semantics and a fast VJP.

Semantics (per spatial axis, kernel size ``k``, stride ``s``, padding ``p``): input pixel
``i`` scatters into output pixel ``o = i*s - p + t`` through torch kernel tap ``t``; the
output has ``(H - 1)*s - 2p + k`` pixels. It is computed as the README of the
Likelihood-Regret fixture says: an ordinary correlation of the input dilated by ``s``
(``lhs_dilation``), padded by ``P = k - 1 - p`` on both sides.

**Kernel layout.** The stored kernel ``w`` is HWIO ``(k, k, C_in, C_out)`` in the
*correlation* layout, i.e. already spatially flipped with respect to torch:
``w[h, w, i, o] = w_torch[i, o, k-1-h, k-1-w]``. The forward pass therefore needs no flip,
and the layout is the one of ``flax.linen.ConvTranspose`` / ``lax.conv_transpose`` with
``transpose_kernel=False`` (same kernel, padding ``k-1-p``). ``torch_weights.py`` does the
flip once when loading torch weights.

**Why a custom VJP.** Autodiff of the ``lhs_dilation`` convolution gives a kernel gradient
that is itself a convolution with ``lhs_dilation`` and a huge (output-sized) window, which
XLA:CPU runs ~15-20x slower than the forward pass. With ``y`` the output, ``g = dL/dy``
and ``P = k-1-p`` (one spatial axis shown; the other is the same):

  y[o] = sum_{i,t : o = i*s + P - t} x[i] w[t]

* input gradient: ``dx[i] = sum_t g[i*s + P - t] w[t] = sum_u g[i*s - p + u] w[k-1-u]``:
  a **strided** (stride ``s``) correlation of ``g`` padded by ``p`` with the flipped kernel,
  in/out channels swapped;
* kernel gradient: ``dw[t] = sum_{n,i} x[n,i] g[n, i*s + P - t]``. With ``m = k-1-t``,
  ``dw[k-1-m] = sum_{n,i} g_pad[n, m + i*s] x[n, i]`` where ``g_pad`` is ``g`` padded by
  ``p``: a correlation of ``g_pad`` with ``x`` as the window, dilated by ``s``
  (``rhs_dilation``), contracting over the batch axis (batch plays the feature role,
  output channels play the batch role), ``k`` output positions; then flip. This is the
  same computation as the kernel gradient of an ordinary strided convolution, which XLA
  handles efficiently.

The input gradient already does only useful multiply-adds (``k*k`` per input pixel and
channel pair, as many as the sub-pixel forward below); autodiff of the phase-decomposed
forward measured about as fast (within noise on CPU), so it stays one strided convolution.

**Sub-pixel forward.** For ``s >= 2`` the ``lhs_dilation`` forward spends all but
``1/s**2`` of its multiply-adds on the inserted zeros (on XLA:CPU it really does them), so
the custom-VJP path computes each of the ``s*s`` output phases as an ordinary stride-1
correlation and interleaves them (:func:`conv_transpose_subpixel`). Per axis: pad the
kernel in front with ``z = M*s - k`` zero taps, ``M = ceil(k/s)`` (a torch kernel extended
by zeros at its end: same outputs, ``z`` extra ones at the end, cropped), so ``k' = M*s``.
Write the output index ``o = s*q + r`` and ``r + p = s*a_r + c_r`` (``0 <= c_r < s``).
From ``o = i*s - p + t`` the torch taps reaching phase ``r`` are ``t = s*m + c_r``,
``m = 0..M-1``, from input ``i = q + a_r - m``; with ``j = M-1-m`` and
``w_torch'[t] = w'[k'-1-t]``:

  y[s*q + r] = sum_{j<M} x[q + j - (M-1-a_r)] w'[s*j + (s-1-c_r)],

a stride-1 correlation of ``x`` (padded by ``M-1-a_r`` in front) with the sub-kernel
``w'[s-1-c_r::s]`` (``M`` taps). All phases are computed for ``Q = ceil(H'/s)``
positions (the back padding, possibly negative, makes the lengths match), stacked and
transposed to ``(N, Q, s, Q, s, C)``, reshaped to ``(N, Q*s, Q*s, C)`` and cropped to
``H'``. For the VAE's ``k=4, s=2, p=1``: ``M=2``; phase 0 uses taps ``w[0::2]`` with
padding 1 in front, phase 1 taps ``w[1::2]`` with none. Summation order differs from the
``lhs_dilation`` convolution, so values agree to float rounding, not bitwise. One
convolution producing all ``s*s*C`` channels (an ``M x M`` kernel with per-phase output
offsets, or an ``(M+1) x (M+1)`` kernel with zero taps) was measured slower on XLA:CPU
(~1.1x and ~1.8x the time of ``s*s`` separate convolutions), so the phases stay separate.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ood_jax.errors import InvalidInputError

_DN = ("NHWC", "HWIO", "NHWC")


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
  """Output pixels of a torch ``ConvTranspose2d`` along one axis: ``(H-1)s - 2p + k``."""
  return (size - 1) * stride - 2 * padding + kernel


def _check(x: jax.Array, w: jax.Array, stride: int, padding: int) -> None:
  if x.ndim != 4 or w.ndim != 4:
    raise InvalidInputError(
        f"conv_transpose: expected x NHWC and w HWIO (4-D each), got shapes {x.shape}, {w.shape}.")
  k = w.shape[0]
  if w.shape[1] != k:
    raise InvalidInputError(f"conv_transpose: only square kernels are supported, got {w.shape[:2]}.")
  if x.shape[-1] != w.shape[2]:
    raise InvalidInputError(
        f"conv_transpose: input has {x.shape[-1]} channels but the kernel expects {w.shape[2]}.")
  if stride < 1 or not 0 <= padding <= k - 1:
    raise InvalidInputError(
        f"conv_transpose: need stride >= 1 and 0 <= padding <= kernel-1, got stride {stride},"
        f" padding {padding}, kernel {k}.")


def conv_transpose_reference(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
  """Plain ``lhs_dilation`` implementation (autodiff gives the slow kernel gradient).

  Args:
    x: ``N x H x W x C_in`` input.
    w: ``k x k x C_in x C_out`` kernel in the correlation (flipped) layout, see module doc.
    stride: torch ``stride``.
    padding: torch ``padding``.

  Returns:
    ``N x H' x W' x C_out`` with ``H' = (H-1)*stride - 2*padding + k``.
  """
  _check(x, w, stride, padding)
  pad = w.shape[0] - 1 - padding
  return lax.conv_general_dilated(
      x, w, window_strides=(1, 1), padding=[(pad, pad), (pad, pad)],
      lhs_dilation=(stride, stride), dimension_numbers=_DN)


def _input_grad(g: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
  """dL/dx: stride-``s`` correlation of ``g`` with the flipped kernel, channels swapped."""
  w_flip = w[::-1, ::-1]  # (k, k, C_in, C_out), read as H W O I below
  return lax.conv_general_dilated(
      g, w_flip, window_strides=(stride, stride),
      padding=[(padding, padding), (padding, padding)],
      dimension_numbers=("NHWC", "HWOI", "NHWC"))


def _kernel_grad(x: jax.Array, g: jax.Array, stride: int, padding: int, k: int) -> jax.Array:
  """dL/dw: ``x`` (dilated by ``s``) as the window over padded ``g``; batch contracted."""
  # g: (N, H', W', C_out) read as C H W N (feature = batch axis, batch = channels);
  # x: (N, H, W, C_in) read as I H W O; result (k, k, C_in, C_out) read as H W C N.
  h = lax.conv_general_dilated(
      g, x, window_strides=(1, 1), padding=[(padding, padding), (padding, padding)],
      rhs_dilation=(stride, stride), dimension_numbers=("CHWN", "IHWO", "HWCN"))
  assert h.shape[:2] == (k, k), (h.shape, k)
  return h[::-1, ::-1]


def _phase_conv(x: jax.Array, w: jax.Array, pad_h, pad_w) -> jax.Array:
  """One phase as a stride-1 correlation (``lax.conv_general_dilated``)."""
  return lax.conv_general_dilated(x, w, window_strides=(1, 1), padding=[pad_h, pad_w],
                                  dimension_numbers=_DN)


def _phase_matmul(x: jax.Array, w: jax.Array, pad_h, pad_w) -> jax.Array:
  """One phase as an im2col matmul: the ``M*M`` shifted input slices concatenated along
  channels times the sub-kernel reshaped to ``M*M*C_in x C_out``; same values as
  :func:`_phase_conv` up to float rounding."""
  m_h, m_w, c, _ = w.shape
  xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pad_h, 0), (*pad_w, 0), (0, 0, 0)])
  q_h, q_w = xp.shape[1] - m_h + 1, xp.shape[2] - m_w + 1
  patches = jnp.concatenate([xp[:, i:i + q_h, j:j + q_w] for i in range(m_h) for j in range(m_w)],
                            axis=-1)                          # (N, q_h, q_w, m*m*C_in)
  return patches @ w.reshape(m_h * m_w * c, -1)


def _subpixel(x: jax.Array, w: jax.Array, stride: int, padding: int, one_phase) -> jax.Array:
  """The phase decomposition (module docstring), each phase computed by ``one_phase(x,
  sub_kernel, (front, back) rows, (front, back) cols) -> N x q_h x q_w x C_out``."""
  _check(x, w, stride, padding)
  s, k = stride, w.shape[0]
  n, h, wd, _ = x.shape
  out_h, out_w = output_size(h, k, s, padding), output_size(wd, k, s, padding)
  if s == 1 or out_h <= 0 or out_w <= 0:
    return conv_transpose_reference(x, w, stride, padding)
  m = -(-k // s)                       # taps per phase
  z = m * s - k                        # zero taps in front: k' = m*s
  if z:
    w = jnp.pad(w, ((z, 0), (z, 0), (0, 0), (0, 0)))
  q_h, q_w = -(-out_h // s), -(-out_w // s)   # positions per phase

  def phase(r: int, size: int, q: int) -> tuple[int, tuple[int, int]]:
    a, c = divmod(r + padding, s)
    lo = m - 1 - a
    return s - 1 - c, (lo, q + m - 1 - size - lo)   # first tap, (front, back) padding

  rows = []
  for r_h in range(s):
    tap_h, pad_h = phase(r_h, h, q_h)
    cols = []
    for r_w in range(s):
      tap_w, pad_w = phase(r_w, wd, q_w)
      cols.append(one_phase(x, w[tap_h::s, tap_w::s], pad_h, pad_w))   # (N, q_h, q_w, C_out)
    rows.append(jnp.stack(cols, axis=3))            # (N, q_h, q_w, s, C_out)
  # Stacking phases last and then transposing measured faster on XLA:CPU than stacking
  # straight into the interleaved order (when a reduction over channels, e.g. a softmax,
  # consumes the output).
  y = jnp.stack(rows, axis=3).transpose(0, 1, 3, 2, 4, 5)   # (N, q_h, s, q_w, s, C_out)
  return y.reshape(n, q_h * s, q_w * s, y.shape[-1])[:, :out_h, :out_w]


def conv_transpose_subpixel(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
  """Sub-pixel (phase-decomposition) forward: ``stride**2`` stride-1 convolutions, interleaved.

  Same values as :func:`conv_transpose_reference` up to float rounding (see the module
  docstring for the derivation); any kernel size, stride and padding. Stride 1, and
  degenerate shapes with an empty output, use the reference convolution.

  Args:
    x: ``N x H x W x C_in`` input.
    w: ``k x k x C_in x C_out`` kernel in the correlation (flipped) layout.
    stride: torch ``stride``.
    padding: torch ``padding``.

  Returns:
    ``N x H' x W' x C_out`` with ``H' = (H-1)*stride - 2*padding + k``.
  """
  return _subpixel(x, w, stride, padding, _phase_conv)


def conv_transpose_phase_matmul(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
  """Sub-pixel forward with each phase as one im2col matmul; differentiated by autodiff.

  The phases of :func:`conv_transpose_subpixel`, each computed by :func:`_phase_matmul`.
  Autodiff of slices, concatenation and a dot gives matmul gradients (input: ``g @ Wᵀ``
  then overlap-add; kernel: ``patchesᵀ g``). Faster on XLA:CPU than the convolution when
  ``C_in`` is small and ``C_out`` large (the VAE's 32 -> 256-way output layer:
  ``benchmarks/conv_transpose.py``), slower for the narrow middle layers, so it is opt-in
  per layer. Same values up to float rounding.
  """
  return _subpixel(x, w, stride, padding, _phase_matmul)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose_fast(x, w, stride, padding):
  return conv_transpose_subpixel(x, w, stride, padding)


def _fast_fwd(x, w, stride, padding):
  return conv_transpose_subpixel(x, w, stride, padding), (x, w)


def _fast_bwd(stride, padding, res, g):
  x, w = res
  dx = _input_grad(g, w, stride, padding).astype(x.dtype)
  dw = _kernel_grad(x, g, stride, padding, w.shape[0]).astype(w.dtype)
  return dx, dw


_conv_transpose_fast.defvjp(_fast_fwd, _fast_bwd)


def conv_transpose(x: jax.Array, w: jax.Array, stride: int = 1, padding: int = 0, *,
                   fast_grad: bool = True, matmul: bool = False) -> jax.Array:
  """Torch-semantics transposed convolution, NHWC in and out.

  Args:
    x: ``N x H x W x C_in`` input (float).
    w: ``k x k x C_in x C_out`` kernel in the correlation (flipped) layout:
      ``w[h, w, i, o] = w_torch[i, o, k-1-h, k-1-w]``.
    stride: torch ``stride`` (static int).
    padding: torch ``padding`` (static int, ``0 <= padding <= k-1``).
    fast_grad: use the sub-pixel forward (:func:`conv_transpose_subpixel`) with the custom
      VJP (strided-convolution gradients). ``False`` runs and differentiates the
      ``lhs_dilation`` convolution with plain autodiff (same values up to float rounding,
      slower on CPU).
    matmul: use :func:`conv_transpose_phase_matmul` (phases as im2col matmuls, plain
      autodiff) instead; takes precedence over ``fast_grad``.

  Returns:
    ``N x H' x W' x C_out``, ``H' = (H-1)*stride - 2*padding + k``.
  """
  _check(x, w, int(stride), int(padding))
  if matmul:
    return conv_transpose_phase_matmul(x, w, int(stride), int(padding))
  if fast_grad:
    return _conv_transpose_fast(x, w, int(stride), int(padding))
  return conv_transpose_reference(x, w, int(stride), int(padding))


class ConvTranspose(nn.Module):
  """Linen wrapper of :func:`conv_transpose` (torch ``ConvTranspose2d`` semantics).

  Parameters: ``kernel`` ``(k, k, C_in, features)`` in the correlation layout (see module
  docstring) and, if ``use_bias``, ``bias`` ``(features,)``.
  """
  features: int
  kernel_size: int = 4
  stride: int = 1
  padding: int = 0
  use_bias: bool = False
  fast_grad: bool = True
  matmul: bool = False
  kernel_init: Callable[..., Any] = nn.initializers.normal(0.02)
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    y = conv_transpose(x, kernel.astype(x.dtype), self.stride, self.padding, fast_grad=self.fast_grad,
                       matmul=self.matmul)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(y.dtype)
    return y
