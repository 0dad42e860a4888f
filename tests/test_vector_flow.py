"""VectorRealNVP: exact inverse, log-det against the Jacobian, masks, sigmoid scales, errors.

Two tiny flows (D = 5 with ``exp`` scales, D = 6 with ``sigmoid`` scales) are built and
evaluated once each in one compiled call (``_results``); the tests check its outputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models.flows.vector_realnvp import VectorRealNVP, half_slices

CONFIGS = [(5, "exp"), (6, "sigmoid")]     # odd and even D, both scale functions
COUPLINGS = 2


@functools.lru_cache(maxsize=None)
def _results(dim: int, scale_fn: str) -> dict:
  m = VectorRealNVP(dim=dim, num_couplings=COUPLINGS, hidden=8, hidden_layers=1,
                    scale_fn=scale_fn)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, dim)), jnp.float32)

  @jax.jit
  def run(key):
    v0 = m.init(key, x)
    # every parameter perturbed: the zero-initialised last layers make couplings identities
    leaves, tree = jax.tree.flatten(v0)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    v = jax.tree.unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape)
                                  for a, k in zip(leaves, keys)])
    z, logdet = m.apply(v, x, method=m.encode_and_log_det)
    jac = jax.vmap(jax.jacfwd(lambda xi: m.apply(v, xi[None], method=m.encode)[0]))(x)
    _, inter = m.apply(v, x, method=m.encode, mutable=["intermediates"])
    return {
        "v": v, "z": z, "logdet": logdet, "x_back": m.apply(v, z, method=m.decode),
        "slogdet": jnp.linalg.slogdet(jac)[1], "parts": m.apply(v, x, method=m.log_prob_parts),
        "log_prob": m.apply(v, x, method=m.log_prob), "loss": m.apply(v, x, train=True),
        "inter": inter["intermediates"],
        "logdet_far": m.apply(v, 5.0 * x, method=m.log_prob_parts)[1],
        "init_z_logdet": m.apply(v0, x, method=m.encode_and_log_det),
        "sample": m.apply(v, jax.random.PRNGKey(2), 10, method=m.sample)}

  return {"model": m, "x": x, **run(jax.random.PRNGKey(0))}


@pytest.mark.parametrize("dim, scale_fn", CONFIGS)
def test_inverse_and_log_det_match_the_jacobian(dim, scale_fn):
  r = _results(dim, scale_fn)
  x, z = r["x"], r["z"]
  np.testing.assert_allclose(r["x_back"], x, atol=1e-4)
  assert float(jnp.max(jnp.abs(z - x))) > 1e-2          # not the identity
  np.testing.assert_allclose(r["logdet"], r["slogdet"], rtol=1e-4, atol=1e-4)
  log_pz, ld = r["parts"]
  np.testing.assert_allclose(ld, r["logdet"], rtol=1e-6)
  expected_pz = -0.5 * jnp.sum(z ** 2, axis=1) - 0.5 * dim * np.log(2 * np.pi)
  np.testing.assert_allclose(log_pz, expected_pz, rtol=1e-5)
  np.testing.assert_allclose(r["log_prob"], log_pz + ld, rtol=1e-6)
  np.testing.assert_allclose(r["loss"], -r["log_prob"], rtol=1e-6)


@pytest.mark.parametrize("dim, scale_fn", CONFIGS)
def test_alternating_masks_change_exactly_one_half(dim, scale_fn):
  r = _results(dim, scale_fn)
  h = dim // 2
  for i in range(COUPLINGS):
    layer = r["inter"][f"coupling{i}"]
    x_in, y_out = layer["x_in"][0], layer["y_out"][0]
    cond, out = half_slices(dim, i)
    assert (cond, out) == ((slice(0, h), slice(h, dim)) if i % 2 == 0
                           else (slice(h, dim), slice(0, h)))
    np.testing.assert_array_equal(y_out[:, cond], x_in[:, cond])
    assert bool(jnp.all(jnp.abs(y_out[:, out] - x_in[:, out]) > 1e-6))
    assert layer["s"][0].shape == (x_in.shape[0], out.stop - out.start)


def test_sigmoid_scales_only_shrink_volume():
  r = _results(6, "sigmoid")
  assert float(jnp.max(r["logdet"])) <= 0.0 and float(jnp.max(r["logdet_far"])) <= 0.0
  # at initialisation (raw = 0) each coupling halves its 3 transformed entries
  _, ld0 = r["init_z_logdet"]
  np.testing.assert_allclose(ld0, COUPLINGS * 3 * np.log(0.5), rtol=1e-5)
  # the default exp(w tanh) scales start as the identity (zero-initialised last layers)
  e = _results(5, "exp")
  z0, ld0 = e["init_z_logdet"]
  np.testing.assert_allclose(z0, e["x"], atol=1e-6)
  np.testing.assert_allclose(ld0, 0.0, atol=1e-6)
  assert float(jnp.max(e["logdet_far"])) > 0.0        # exp scales may expand volume


def test_sample_shapes_and_defaults():
  m = VectorRealNVP(dim=3)
  assert (m.num_couplings, m.hidden_layers, m.hidden, m.scale_fn) == (8, 3, 512, "exp")
  r = _results(5, "exp")
  s = r["sample"]
  assert s.shape == (10, 5) and s.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s)))
  assert set(r["v"]) == {"params"}                     # no batch statistics
  assert r["v"]["params"]["coupling0"]["dense_in"]["kernel"].shape == (2, 8)   # cond: D // 2
  assert r["v"]["params"]["coupling1"]["dense_in"]["kernel"].shape == (3, 8)   # cond: D - D // 2


def test_bad_input_is_one_clear_error():
  r = _results(5, "exp")
  m, v, x = r["model"], r["v"], r["x"]
  with pytest.raises(InvalidInputError, match="N x 5"):
    m.apply(v, x[:, :3])
  with pytest.raises(InvalidInputError, match="float"):
    m.apply(v, jnp.zeros((2, 5), jnp.uint8))
  with pytest.raises(InvalidInputError, match="N x 5"):
    m.apply(v, jnp.zeros((2, 5, 1), jnp.float32), method=m.log_prob)
  with pytest.raises(InvalidInputError, match="dim must be an integer >= 2"):
    VectorRealNVP(dim=1)
  with pytest.raises(InvalidInputError, match="num_couplings"):
    VectorRealNVP(dim=4, num_couplings=0)
  with pytest.raises(UnknownNameError, match="softplus"):
    VectorRealNVP(dim=4, scale_fn="softplus")
  with pytest.raises(InvalidInputError, match="n must be"):
    m.apply(v, jax.random.PRNGKey(0), 0, method=m.sample)
