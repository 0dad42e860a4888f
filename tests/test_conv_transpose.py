"""Transposed convolution: torch semantics, custom-VJP gradients, linen wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ood_jax.errors import InvalidInputError
from ood_jax.models.conv_transpose import (ConvTranspose, conv_transpose,
                                           conv_transpose_phase_matmul,
                                           conv_transpose_reference, conv_transpose_subpixel,
                                           output_size)

# (kernel, stride, padding, N, H, W, C_in, C_out)
CASES = [
    (4, 1, 0, 2, 1, 1, 5, 3),     # the decoder's first layer (1x1 -> 4x4)
    (4, 2, 1, 3, 4, 5, 3, 7),     # the pyramid layers, non-square image and channels
    (4, 2, 1, 2, 8, 8, 6, 16),
    (3, 2, 0, 2, 3, 4, 2, 4),     # odd kernel
    (5, 3, 2, 2, 4, 3, 3, 2),     # stride 3
    (3, 1, 1, 1, 5, 5, 4, 4),     # "same" transposed conv
]


def _torch_to_ours(w_torch: np.ndarray) -> np.ndarray:
  """ConvTranspose2d (in, out, kh, kw) -> our HWIO correlation layout (spatially flipped)."""
  return np.ascontiguousarray(w_torch[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def _scatter_numpy(x: np.ndarray, w_torch: np.ndarray, s: int, p: int) -> np.ndarray:
  """Direct torch ConvTranspose2d definition: x[i] scatters into y[i*s - p + t] via w[t]."""
  n, h, w, _ = x.shape
  k = w_torch.shape[2]
  full = np.zeros((n, (h - 1) * s + k, (w - 1) * s + k, w_torch.shape[1]), np.float64)
  for i in range(h):
    for j in range(w):
      full[:, i * s:i * s + k, j * s:j * s + k, :] += np.einsum(
          "nc,cokl->nklo", x[:, i, j, :].astype(np.float64), w_torch.astype(np.float64))
  return full[:, p:full.shape[1] - p, p:full.shape[2] - p, :]


def _data(case, seed=0):
  k, s, p, n, h, w, ci, co = case
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, h, w, ci)).astype(np.float32)
  w_torch = rng.normal(size=(ci, co, k, k)).astype(np.float32)
  return x, w_torch


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_torch_definition_and_lax(case):
  k, s, p, n, h, w, ci, co = case
  x, w_torch = _data(case)
  ours = np.asarray(conv_transpose(jnp.asarray(x), jnp.asarray(_torch_to_ours(w_torch)), s, p))
  assert ours.shape == (n, output_size(h, k, s, p), output_size(w, k, s, p), co)
  np.testing.assert_allclose(ours, _scatter_numpy(x, w_torch, s, p), rtol=1e-5, atol=1e-4)
  via_lax = lax.conv_transpose(jnp.asarray(x), jnp.asarray(_torch_to_ours(w_torch)), (s, s),
                               [(k - 1 - p, k - 1 - p)] * 2,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=False)
  np.testing.assert_allclose(ours, np.asarray(via_lax), rtol=1e-6, atol=1e-5)


# (kernel, stride, padding, N, H, W, C_in, C_out): stride 2 with k in {2, 4}, p in {0, 1}
# (k=2, p=1 gives H' = 2H - 2), odd and even sizes; then odd kernels, stride 3, p >= s.
SUBPIXEL_CASES = [
    (4, 2, 1, 3, 5, 4, 3, 7),
    (4, 2, 1, 2, 1, 1, 8, 2),     # 1 x 1 input
    (4, 2, 0, 2, 3, 6, 1, 5),
    (2, 2, 0, 3, 4, 5, 6, 4),
    (2, 2, 1, 2, 3, 2, 4, 9),
    (3, 2, 0, 2, 3, 4, 2, 4),     # k not a multiple of s: a zero tap in front
    (3, 2, 1, 2, 4, 3, 5, 3),
    (4, 2, 3, 2, 5, 6, 2, 3),     # p > s: phases padded negatively in front
    (5, 3, 2, 2, 4, 3, 3, 2),
    (6, 3, 1, 2, 2, 3, 2, 4),
]


@pytest.mark.parametrize("case", SUBPIXEL_CASES)
def test_subpixel_forward_matches_reference(case):
  k, s, p, n, h, w, ci, co = case
  x, w_torch = _data(case, seed=4)
  x, wk = jnp.asarray(x), jnp.asarray(_torch_to_ours(w_torch))
  ref = np.asarray(conv_transpose_reference(x, wk, s, p))
  sub = np.asarray(conv_transpose_subpixel(x, wk, s, p))
  assert sub.shape == ref.shape == (n, output_size(h, k, s, p), output_size(w, k, s, p), co)
  np.testing.assert_allclose(sub, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
  # conv_transpose(fast_grad=True) runs it, also under jit.
  fast = np.asarray(jax.jit(lambda a, b: conv_transpose(a, b, s, p))(x, wk))
  np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def _check_against_reference(case, impl: dict, seed: int):
  """``conv_transpose(..., **impl)`` vs the ``lhs_dilation`` reference under autodiff: same
  output and the same input and kernel gradients (float rounding)."""
  k, s, p = case[:3]
  x, w_torch = _data(case, seed=seed)
  x, w = jnp.asarray(x), jnp.asarray(_torch_to_ours(w_torch))
  out_shape = (x.shape[0], output_size(x.shape[1], k, s, p), output_size(x.shape[2], k, s, p), w.shape[3])
  g = jnp.asarray(np.random.default_rng(seed + 1).normal(size=out_shape).astype(np.float32))

  @jax.jit
  def both(x, w, g):
    y_ours, vjp_ours = jax.vjp(lambda a, b: conv_transpose(a, b, s, p, **impl), x, w)
    y_ref, vjp_ref = jax.vjp(lambda a, b: conv_transpose_reference(a, b, s, p), x, w)
    return y_ours, y_ref, vjp_ours(g), vjp_ref(g)

  y_ours, y_ref, grads_ours, grads_ref = both(x, w, g)
  assert y_ours.shape == out_shape
  np.testing.assert_allclose(np.asarray(y_ours), np.asarray(y_ref), rtol=1e-5,
                             atol=1e-5 * float(jnp.abs(y_ref).max()))
  for a, b in zip(grads_ours, grads_ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(b).max()))
  return x, w, y_ours, y_ref


@pytest.mark.parametrize("case", SUBPIXEL_CASES)
def test_phase_matmul_matches_reference_values_and_grads(case):
  """The im2col-matmul phases (``matmul=True``): same outputs and, through plain autodiff,
  the same input and kernel gradients as the ``lhs_dilation`` reference."""
  x, w, y_mm, _ = _check_against_reference(case, {"matmul": True}, seed=5)
  np.testing.assert_array_equal(
      np.asarray(jax.jit(conv_transpose_phase_matmul, static_argnums=(2, 3))(x, w, *case[1:3])),
      np.asarray(y_mm))


@pytest.mark.parametrize("case", CASES)
def test_custom_vjp_matches_autodiff(case):
  _, _, y_fast, y_ref = _check_against_reference(case, {"fast_grad": True}, seed=1)
  if case[1] == 1:   # same convolution; stride >= 2 uses the sub-pixel forward (other sum order)
    np.testing.assert_array_equal(np.asarray(y_fast), np.asarray(y_ref))


def test_module_grad_fast_vs_autodiff_jit_and_vmap():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5, 6, 3)).astype(np.float32))
  fast = ConvTranspose(8, kernel_size=4, stride=2, padding=1, use_bias=True, fast_grad=True)
  slow = fast.clone(fast_grad=False)
  params = fast.init(jax.random.key(0, impl="rbg"), x)   # rbg: compiles much faster on CPU
  assert params["params"]["kernel"].shape == (4, 4, 3, 8)
  assert params["params"]["bias"].shape == (8,)

  def loss(m):
    return lambda prm, xx: jnp.sum(jnp.sin(m.apply(prm, xx)) ** 2)

  g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(params, x)
  g_slow = jax.jit(jax.grad(loss(slow), argnums=(0, 1)))(params, x)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)

  # vmap over an extra leading axis (and over kernels), forward and gradient.
  xs = jnp.stack([x, 2.0 * x])
  w = params["params"]["kernel"]
  ys = jax.vmap(lambda xx: conv_transpose(xx, w, 2, 1))(xs)
  np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(conv_transpose(2.0 * x, w, 2, 1)),
                             rtol=1e-6, atol=1e-5)
  ws = jnp.stack([w, -w])
  gv = jax.jit(jax.vmap(jax.grad(lambda ww, xx: jnp.sum(conv_transpose(xx, ww, 2, 1) ** 2))))(ws, xs)
  g1 = jax.jit(jax.grad(lambda ww: jnp.sum(conv_transpose_reference(2.0 * x, ww, 2, 1) ** 2)))(-w)
  np.testing.assert_allclose(np.asarray(gv[1]), np.asarray(g1), rtol=1e-4, atol=1e-3)


def test_bad_arguments_raise():
  x = jnp.zeros((1, 2, 2, 3))
  with pytest.raises(InvalidInputError):
    conv_transpose(x, jnp.zeros((4, 4, 3, 2)), 2, 4)      # padding > k - 1
  with pytest.raises(InvalidInputError):
    conv_transpose(x, jnp.zeros((4, 4, 5, 2)), 2, 1)      # channel mismatch
  with pytest.raises(InvalidInputError):
    conv_transpose(x[0], jnp.zeros((4, 4, 3, 2)), 2, 1)   # not NHWC
