"""ood_jax.models.flows.views: image-space latents, coupling intermediates, latent masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_images

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows import views
from ood_jax.models.flows.glow import make_glow
from ood_jax.models.flows.realnvp import make_realnvp

SHAPE = (8, 8, 1)


def _init(model, shape=SHAPE, n=4):
  """``(variables, images)`` with the variables' structure from an abstract ``init`` (no
  compile) and small random parameters (``_fill``)."""
  x = tiny_images(n, shape)
  rngs = {"params": jax.random.PRNGKey(0), "dequant": jax.random.PRNGKey(1)}
  abstract = jax.eval_shape(lambda: model.init(rngs, x, True))
  return _fill(abstract, 0.3), x


def _fill(abstract, scale, seed=3):
  """Concrete variables for ``abstract``: parameters ``scale * N(0, 1)`` around the
  identity (ActNorm scales and plain 1x1-conv kernels around 1 / I; ``scale = 0``: every
  coupling, ActNorm and 1x1 conv is the identity), running means 0 and variances 1."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(k, "key", "") for k in path]
    noise = scale * rng.standard_normal(leaf.shape).astype(np.float32)
    if names[0] == "batch_stats":
      return jnp.ones(leaf.shape) if names[-1] == "var" else jnp.zeros(leaf.shape)
    if "invconv" in names and names[-1] == "kernel":
      return jnp.eye(leaf.shape[0]) + noise
    if "actnorm" in names and names[-1] == "scale":
      return 1.0 + noise
    return jnp.asarray(noise)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def _identity(variables):
  return _fill(jax.eval_shape(lambda: variables), 0.0)


def _logit(y, alpha=0.05):
  p = alpha + (1 - 2 * alpha) * y
  return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def flows():
  """``{kind: (model, random variables, images)}``: a 2-scale RealNVP
  without BatchNorm layers, a 1-scale 2-coupling ``shift_first`` RealNVP and a Glow with
  plain 1x1 convs (every later apply reuses the compiled ops of these shapes)."""
  models = {"realnvp": make_realnvp("smoke", SHAPE, flow_batchnorm=False),
            "realnvp1": make_realnvp("smoke", SHAPE, num_scales=1, num_couplings=2,
                                     shift_first=True, flow_batchnorm=False),
            "glow": make_glow("smoke", SHAPE, lu=False)}
  return {k: (m, *_init(m)) for k, m in models.items()}


@pytest.mark.parametrize("kind", ["realnvp", "realnvp1", "glow"])
def test_identity_flow_joined_latents_are_the_pre_transformed_input(flows, kind):
  model, variables, x = flows[kind]
  variables = _identity(variables)
  y = np.asarray(views.dequantize(x, jax.random.PRNGKey(5)))
  z = views.latent_image(model, variables, y=y)
  want = y - 0.5 if kind == "glow" else _logit(y)
  np.testing.assert_allclose(z, want, atol=1e-5)
  assert not np.allclose(want, want[:, ::-1])          # an orientation error would show
  raw = views.raw_latents(model, variables, y=y)
  assert [r.shape[1:] for r in raw] == model.latent_shapes()
  # latent_mask picks the latent entries that hold the masked pixels (the flow's own split)
  m = np.random.default_rng(2).random(SHAPE) < 0.3
  picked = np.concatenate([r[:, lm] for r, lm in zip(raw, views.latent_mask(model, m))], axis=1)
  np.testing.assert_allclose(np.sort(picked, axis=1), np.sort(want[:, m], axis=1), atol=1e-5)


def test_intermediates_are_continuous_across_squeezes_and_splits(flows):
  """With no layer between couplings, layer i's output is layer i+1's input in image space,
  also across the squeeze and the split (joined with the factored-out latent)."""
  model, variables, x = flows["realnvp"]
  cv = views.coupling_intermediates(model, variables, x)
  assert [c.position for c in cv] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
  assert cv[0].name == "scales_0/coupling0" and cv[3].name == "scales_0/channel_coupling0"
  np.testing.assert_allclose(cv[0].x_in, _logit(np.asarray(views.dequantize(x))), atol=1e-5)
  for a, b in zip(cv[:-1], cv[1:]):
    np.testing.assert_allclose(a.y_out, b.x_in, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.x_in, a.y_out)            # the layers do something
  z = views.latent_image(model, variables, x)
  np.testing.assert_allclose(cv[-1].y_out, z, rtol=1e-5, atol=1e-5)
  # the default coupling y = x exp(s) + t maps -t exp(-s) to zero
  for c in cv:
    np.testing.assert_allclose(c.x_zero, np.where(c.out_mask, -c.t * np.exp(-c.s), 0.0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["realnvp", "realnvp1", "glow"])
def test_sown_s_and_t_are_zero_outside_the_out_mask(flows, kind):
  model, variables, x = flows[kind]
  cv = views.coupling_intermediates(model, variables, x)
  assert len(cv) == {"realnvp": 10, "realnvp1": 2, "glow": 4}[kind]
  for c in cv:
    assert c.out_mask.shape == SHAPE and c.out_mask.dtype == bool
    assert 0 < c.out_mask.sum() < c.out_mask.size
    for a in (c.s, c.t, c.x_zero):
      assert a.shape == (4, *SHAPE)
      assert np.all(a[:, ~c.out_mask] == 0.0)
      assert np.any(a[:, c.out_mask] != 0.0)
    same = np.isclose(c.x_in, c.y_out, atol=1e-6)     # untouched entries pass through
    assert np.all(same[:, ~c.out_mask])
    if kind == "realnvp1":                             # y = (x + t) exp(s): -t maps to zero
      np.testing.assert_allclose(c.x_zero, -c.t, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind, shape", [("realnvp", (8, 8, 3)), ("glow", (8, 8, 1)),
                                         ("realnvp1", (8, 8, 1))])
def test_latent_mask_counts_and_joins_back_to_the_image_mask(kind, shape):
  model = {"realnvp": lambda: make_realnvp("smoke", shape),
           "realnvp1": lambda: make_realnvp("smoke", shape, num_scales=1),
           "glow": lambda: make_glow("smoke", shape)}[kind]()
  full = views.latent_mask(model, np.ones(shape[:2], bool))
  assert [m.shape for m in full] == model.latent_shapes() and all(m.all() for m in full)
  sq = views.square_mask(shape, 4)
  assert sq.sum() == 16 and sq[2:6, 2:6].all()
  masks = views.latent_mask(model, sq)
  assert sum(int(m.sum()) for m in masks) == 16 * shape[2]
  joined = views.join_latents(model, [m[None].astype(np.float32) for m in masks])[0]
  np.testing.assert_array_equal(joined > 0.5, np.broadcast_to(sq[:, :, None], shape))
  odd = np.random.default_rng(0).random(shape) < 0.5          # not aligned to the squeezes
  masks = views.latent_mask(model, odd)
  joined = views.join_latents(model, [m[None].astype(np.float32) for m in masks])[0]
  np.testing.assert_array_equal(joined > 0.5, odd)


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_resampling_keeps_the_latents_outside_the_mask(flows, kind):
  model, variables, x = flows[kind]
  variables = _fill(jax.eval_shape(lambda: variables), 0.05)
  sq = views.square_mask(SHAPE, 4)
  y = views.dequantize(x)
  y_new, eps_new, eps = views.resample_unit(model, variables, y, sq, jax.random.PRNGKey(7))
  masks = views.latent_mask(model, sq)
  again, _ = views.encode(model, variables, y=y_new)
  for e, e_new, e_again, m in zip(eps, eps_new, again, masks):
    np.testing.assert_array_equal(np.asarray(e_new)[:, ~m], np.asarray(e)[:, ~m])
    assert not np.allclose(np.asarray(e_new)[:, m], np.asarray(e)[:, m])
    np.testing.assert_allclose(np.asarray(e_again)[:, ~m], np.asarray(e)[:, ~m], atol=2e-3)
  images = views.resample_latents(model, variables, x, sq, jax.random.PRNGKey(7))
  assert images.dtype == np.uint8 and images.shape == x.shape
  assert np.any(images != x)


def test_averaged_latent_and_bad_input(flows):
  model, variables, x = flows["realnvp1"]
  avg = views.latent_image(model, variables, x, rng=jax.random.PRNGKey(0), k=2)
  one = views.latent_image(model, variables, x, rng=jax.random.PRNGKey(0))
  assert avg.shape == one.shape == x.shape and not np.allclose(avg, one)
  trained = views.latent_image(model, variables, x, rng=jax.random.PRNGKey(0), train=True, k=2)
  assert trained.shape == x.shape and np.all(np.isfinite(trained))
  with pytest.raises(InvalidInputError, match="bool"):
    views.latent_mask(model, np.ones((8, 8)))
  with pytest.raises(InvalidInputError, match="mask"):
    views.latent_mask(model, np.ones((4, 4), bool))
  with pytest.raises(InvalidInputError, match="exactly one"):
    views.latent_image(model, variables)
  with pytest.raises(InvalidInputError, match="uint8"):
    views.latent_image(model, variables, x.astype(np.float32))
  with pytest.raises(InvalidInputError, match="k > 1"):
    views.latent_image(model, variables, x, k=2)
  with pytest.raises(InvalidInputError, match="size"):
    views.square_mask(SHAPE, 9)
