"""Model options for Kirichenko et al. ("Why normalizing flows fail to detect OOD data"):
single-scale RealNVPs with ``num_couplings`` couplings (inverse, log-det vs jacfwd), the
cycle mask's one-quadrant-per-coupling updates, sown ``s`` / ``t`` against a direct
recomputation, ``shift_first`` couplings, st-nets without skip convs and with a linear / ReLU
bottleneck, the highway st-net, Glow with a highway st-net and a fixed ``N(0, I)`` prior,
and the ``kirichenko`` / ``kirichenko_cpu`` presets and recipes.

Speed (XLA:CPU): 4 x 4 / 8 x 8 images, 1 residual block, 4-8 channels; variables drawn with
numpy around ``init``'s shapes (no compile); the big presets only through ``jax.eval_shape``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import make_model
from ood_jax.models import registry
from ood_jax.models.flows.coupling import Coupling, SimpleSTNet
from ood_jax.models.flows.glow import Glow
from ood_jax.models.flows.masks import mask_pair
from ood_jax.models.flows.realnvp import RealNVP
from ood_jax.models.flows.stnets import HighwayLayer, HighwaySTNet, ResidualBlock, ResNetSTNet


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _images(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _unit(x, seed=3):
  u = np.random.default_rng(seed).uniform(size=x.shape).astype(np.float32)
  return jnp.asarray((x.astype(np.float32) + u) / 256.0)


def _init(model, x, seed=0, scale=0.2):
  """Variables drawn with numpy: every parameter ``N(0, scale^2)`` around its neutral value
  (0; 1 for scales; identity for plain 1x1 kernels), running stats 0 / 1, LU constants:
  identity permutation, alternating signs."""
  shapes = jax.eval_shape(lambda: model.init(
      {"params": _key(seed), "dequant": _key(seed + 1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if path[0].key == "batch_stats":
      return jnp.full(s.shape, 1.0 if name == "var" else 0.0, s.dtype)
    if name == "perm":
      return jnp.eye(s.shape[0], dtype=s.dtype)
    if name == "sign_s":
      return jnp.asarray(np.resize([1.0, -1.0], s.shape), s.dtype)
    base = 1.0 if name == "scale" else 0.0
    if name == "kernel" and "invconv" in str(path):
      base = np.eye(s.shape[0])
    return jnp.asarray(base + scale * rng.normal(size=s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _random_params(params, seed=0, scale=0.3):
  """``params`` with every leaf replaced by ``N(0, scale^2)`` noise (zero-init layers too)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(scale * rng.normal(size=p.shape), p.dtype), params)


def _paths(tree):
  return ["/".join(str(k.key) for k in path) for path, _ in
          jax.tree_util.tree_flatten_with_path(tree)[0]]


def _check_inverse_and_jacobian(model, variables, y, atol_inv=5e-5):
  """decode(encode(y)) == y and log|det dz/dy| == slogdet of the jacfwd of y -> latents
  (``encode_unit``'s latents are the flow's output when every prior is ``N(0, I)``)."""
  encode = jax.jit(lambda v, y: model.apply(v, y, False, method="encode_unit"))
  decode = jax.jit(lambda v, eps: model.apply(v, eps, method="decode_unit"))

  def flat(v, f):
    eps = model.apply(v, f.reshape(1, *y.shape[1:]), False, method="encode_unit")[0]
    return jnp.concatenate([e.reshape(-1) for e in eps])
  jac = jax.jit(lambda v, f: jax.jacfwd(lambda g: flat(v, g))(f))
  eps, _, logdet = encode(variables, y)
  np.testing.assert_allclose(decode(variables, eps), y, atol=atol_inv)
  for i in range(y.shape[0]):
    sign, logabs = np.linalg.slogdet(np.asarray(jac(variables, y[i].reshape(-1)), np.float64))
    assert sign != 0
    np.testing.assert_allclose(logdet[i], logabs, rtol=1e-4, atol=1e-3)
  return eps, logdet


# ----------------------------------------------------------------------------- RealNVP


def test_single_scale_8_couplings_inverse_and_logdet_vs_jacfwd():
  """Kirichenko's "RealNVP with 8 coupling layers and no squeeze layers" (with their
  shift-first coupling): exact inverse and log-det == log|det jacfwd| on 4 x 4 x 1."""
  shape = (4, 4, 1)
  model = RealNVP(image_shape=shape, num_scales=1, num_couplings=8, num_blocks=1, channels=4,
                  flow_batchnorm=False, shift_first=True)
  x = _images(2, shape)
  variables = _init(model, x)
  assert sorted(k for k in variables["params"]["scales_0"]) == [f"coupling{i}" for i in range(8)]
  assert model.latent_shapes() == [shape]
  _, logdet = _check_inverse_and_jacobian(model, variables, _unit(x))
  assert abs(float(logdet[0] - logdet[1])) > 1e-3


@pytest.mark.parametrize("kw, count", [
    (dict(num_couplings=2), 2),                        # "small RealNVP with 2 coupling layers"
    (dict(num_couplings=3, mask="horizontal"), 3),     # "3-layer RealNVP with horizontal masks"
    (dict(), 4),                                       # default: 4 in the last scale
])
def test_num_couplings_counts_sown_couplings(kw, count):
  shape = (4, 4, 1)
  model = RealNVP(image_shape=shape, num_scales=1, num_blocks=1, channels=4, **kw)
  x = _images(2, shape)
  variables = _init(model, x)
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=False, method="log_prob_parts", mutable=["intermediates"],
      rngs={"sample": _key(1)}))(variables, x)
  assert sorted(state["intermediates"]["scales_0"]) == [f"coupling{i}" for i in range(count)]


def test_num_couplings_applies_to_every_scale_but_not_channel_groups():
  model = RealNVP(image_shape=(8, 8, 1), num_scales=2, num_blocks=1, channels=4,
                  num_couplings=2, flow_batchnorm=False)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": _key(0), "dequant": _key(1)}, _images(2, (8, 8, 1)), train=False))["params"]
  assert sorted(shapes["scales_0"]) == ["channel_coupling0", "channel_coupling1",
                                        "channel_coupling2", "coupling0", "coupling1"]
  assert sorted(shapes["scales_1"]) == ["coupling0", "coupling1"]


def test_num_couplings_validated():
  with pytest.raises(InvalidInputError, match="num_couplings"):
    RealNVP(image_shape=(4, 4, 1), num_scales=1, num_couplings=0)


def _sown(model, variables, x):
  (_, _), state = jax.jit(lambda v, x: model.apply(
      v, x, train=False, method="log_prob_parts", mutable=["intermediates"],
      rngs={"sample": _key(1)}))(variables, x)
  return state["intermediates"]["scales_0"]


def test_cycle_mask_couplings_each_change_exactly_one_quadrant():
  """Coupling i changes quadrant (i + 1) % 4 (every entry there) and leaves the three other
  quadrants bit-identical; two full cycles with ``num_couplings=8``."""
  shape = (8, 8, 1)
  model = RealNVP(image_shape=shape, num_scales=1, num_couplings=8, mask="cycle",
                  num_blocks=1, channels=4, flow_batchnorm=False, shift_first=True)
  x = _images(2, shape)
  sown = _sown(model, _init(model, x), x)
  assert len(sown) == 8
  for i in range(8):
    x_in, y_out = np.asarray(sown[f"coupling{i}"]["x_in"][0]), np.asarray(
        sown[f"coupling{i}"]["y_out"][0])
    _, out = mask_pair("cycle", shape, i)
    changed = np.asarray(out, bool)[None].repeat(2, axis=0)
    np.testing.assert_array_equal(y_out[~changed], x_in[~changed])
    assert np.all(y_out[changed] != x_in[changed]), i
    rows, cols = np.nonzero(changed[0, :, :, 0])
    q = (i + 1) % 4
    assert (rows.min() >= 4) == (q in (2, 3)) and (cols.min() >= 4) == (q in (1, 2))


@pytest.mark.parametrize("mask", ["checkerboard", "cycle"])
def test_sown_s_and_t_equal_the_st_net_on_the_masked_input(mask):
  """``s`` / ``t`` sown by each coupling == ``scale * tanh(raw_s) * out`` / ``raw_t * out``
  with ``raw = st_net(x_in * cond)`` recomputed from the coupling's own parameters, and the
  output is ``(x_in + t) * exp(s)`` (``shift_first``)."""
  shape = (8, 8, 1)
  model = RealNVP(image_shape=shape, num_scales=1, num_couplings=4, mask=mask, num_blocks=1,
                  channels=4, flow_batchnorm=False, shift_first=True)
  x = _images(2, shape)
  variables = _init(model, x)
  sown = _sown(model, variables, x)
  net = ResNetSTNet(features=2, width=4, num_blocks=1)
  for i in range(4):
    name = f"coupling{i}"
    got = {k: np.asarray(v[0]) for k, v in sown[name].items()}
    cond, out = mask_pair(mask, shape, i)
    st_vars = {"params": variables["params"]["scales_0"][name]["st_net"],
               "batch_stats": variables["batch_stats"]["scales_0"][name]["st_net"]}
    raw = net.apply(st_vars, got["x_in"] * cond, False)
    scale = variables["params"]["scales_0"][name]["scale"]
    s = scale * jnp.tanh(raw[..., :1]) * out
    t = raw[..., 1:] * out
    np.testing.assert_allclose(got["s"], s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["t"], t, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(got["t"])) > 1e-2
    np.testing.assert_allclose(got["y_out"], (got["x_in"] + t) * jnp.exp(s), rtol=1e-5,
                               atol=1e-5)


# ----------------------------------------------------------------------------- couplings


@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_shift_first_coupling_inverse_and_logdet_vs_jacfwd(mask):
  shape = (4, 4, 2)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, *shape)), jnp.float32)
  layer = Coupling(mask=mask, index=1, hidden=8, shift_first=True)
  params = _random_params(layer.init(_key(0), x)["params"])
  params["scale"] = params["scale"] + 1.0
  variables = {"params": params}
  fwd = jax.jit(lambda v, x: layer.apply(v, x, method="forward_and_log_det"))
  inv = jax.jit(lambda v, y: layer.apply(v, y, method="inverse_and_log_det"))
  (y, ld), sown = jax.jit(lambda v, x: layer.apply(
      v, x, method="forward_and_log_det", mutable=["intermediates"]))(variables, x)
  x_back, ld_inv = inv(variables, y)
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(ld_inv, -ld, rtol=1e-6)
  for i in range(2):
    jac = jax.jacfwd(lambda f: fwd(variables, x.at[i].set(f.reshape(shape)))[0][i].reshape(-1))(
        x[i].reshape(-1))
    sign, logabs = np.linalg.slogdet(np.asarray(jac, np.float64))
    assert sign != 0
    np.testing.assert_allclose(ld[i], logabs, rtol=1e-4, atol=1e-4)
  # y = (x + t) * exp(s), not x * exp(s) + t: the plain coupling with the same parameters
  # gives another output but the same log-det.
  s, t = sown["intermediates"]["s"][0], sown["intermediates"]["t"][0]
  xb = x[..., :1] if mask == "channel" else x
  yb = y[..., :1] if mask == "channel" else y
  np.testing.assert_allclose(yb, (xb + t) * jnp.exp(s), rtol=1e-5, atol=1e-5)
  plain = Coupling(mask=mask, index=1, hidden=8)
  y_plain, ld_plain = plain.apply(variables, x, method="forward_and_log_det")
  np.testing.assert_allclose(ld_plain, ld, rtol=1e-6)
  assert float(jnp.max(jnp.abs(y_plain - y))) > 1e-2


# ----------------------------------------------------------------------------- st-nets


def _resnet_by_hand(params, x, num_blocks, width, bottleneck=None, relu=False):
  """The skip-free ResNet st-net composed from its parts' parameters (no BatchNorm): in_conv,
  the blocks (bottleneck after the middle one), ReLU, out_conv: no other path."""
  h = nn.Conv(width, (3, 3), padding="SAME").apply(
      {"params": params["in_conv"]}, nn.relu(jnp.concatenate([x, -x], axis=-1)))
  for i in range(num_blocks):
    h = ResidualBlock(width, batchnorm=False).apply({"params": params[f"block{i}"]}, h, False)
    if bottleneck and i == (num_blocks - 1) // 2:
      n, hh, ww, c = h.shape
      flat = nn.Dense(bottleneck).apply({"params": params["bottleneck_in"]}, h.reshape(n, -1))
      flat = nn.relu(flat) if relu else flat
      h = nn.Dense(hh * ww * c).apply({"params": params["bottleneck_out"]}, flat).reshape(h.shape)
  return nn.Conv(params["out_conv"]["kernel"].shape[-1], (1, 1), padding="SAME").apply(
      {"params": params["out_conv"]}, nn.relu(h))


def test_resnet_without_skip_has_no_skip_path():
  """``skip=False``: no skip convs, and the output is exactly out_conv(ReLU(last block)) of
  the chain of blocks, so nothing reaches the head from an intermediate block except through
  the later blocks. The gradient w.r.t. the first block's residual branch then also only
  flows through the later blocks: zeroing their input dependence (block1's conv2 = 0 keeps
  block1 the identity) must leave the output of skip=False equal to the hand-made chain,
  while ``skip=True`` with the same shared parameters differs."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 1)), jnp.float32)
  net = ResNetSTNet(features=2, width=4, num_blocks=3, batchnorm=False, skip=False)
  params = _random_params(net.init(_key(0), x, False)["params"])
  assert not [p for p in _paths(params) if "skip" in p]
  np.testing.assert_allclose(net.apply({"params": params}, x, False),
                             _resnet_by_hand(params, x, 3, 4), rtol=1e-5, atol=1e-6)
  # Gradient check: d out / d (block0's residual branch) == that of the hand-made chain.
  grad = lambda f: jax.grad(lambda p: jnp.sum(f(p) ** 2))(params)["block0"]["conv2"]["kernel"]
  g_net = grad(lambda p: net.apply({"params": p}, x, False))
  g_hand = grad(lambda p: _resnet_by_hand(p, x, 3, 4))
  np.testing.assert_allclose(g_net, g_hand, rtol=1e-4, atol=1e-6)
  with_skip = ResNetSTNet(features=2, width=4, num_blocks=3, batchnorm=False)
  skip_params = _random_params(with_skip.init(_key(0), x, False)["params"], seed=1)
  skip_params = {**skip_params, **params}  # shared parameters equal, plus the skip convs
  assert {"in_skip", "skip0", "skip1", "skip2"} <= set(skip_params)
  out_skip = with_skip.apply({"params": skip_params}, x, False)
  assert float(jnp.max(jnp.abs(out_skip - _resnet_by_hand(params, x, 3, 4)))) > 1e-2


@pytest.mark.parametrize("relu", [False, True])
def test_bottleneck_is_linear_by_default_relu_with_the_option(relu):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 1)), jnp.float32)
  kw = dict(features=2, width=4, num_blocks=2, batchnorm=False, bottleneck=3, skip=False)
  net = ResNetSTNet(**kw, bottleneck_relu=relu)
  params = _random_params(net.init(_key(0), x, False)["params"])
  assert params["bottleneck_in"]["kernel"].shape == (4 * 4 * 4, 3)
  out = net.apply({"params": params}, x, False)
  np.testing.assert_allclose(out, _resnet_by_hand(params, x, 2, 4, 3, relu), rtol=1e-5,
                             atol=1e-6)
  other = _resnet_by_hand(params, x, 2, 4, 3, not relu)
  assert float(jnp.max(jnp.abs(out - other))) > 1e-3
  if not relu:  # the default is ResNetSTNet's: linear
    np.testing.assert_allclose(ResNetSTNet(**kw).apply({"params": params}, x, False), out)


def test_highway_st_net_zero_output_and_layer_formula():
  """Zero-initialised head: the net outputs 0 at init (so a coupling with it starts as the
  identity) although its hidden features are not 0; one highway layer is
  ``conv_h(x) * sigmoid(conv_t(x)) + x * (1 - sigmoid(conv_t(x)))``; kernels ~ N(0, 0.05^2)."""
  h = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 2)), jnp.float32)
  net = HighwaySTNet(features=4, hidden=8, layers=3)
  params = net.init(_key(0), h, False)["params"]
  assert sorted(params) == ["highway0", "highway1", "highway2", "in_conv", "out_conv"]
  np.testing.assert_array_equal(net.apply({"params": params}, h, False), 0.0)
  kernels = np.concatenate([params[f"highway{i}"][c]["kernel"].ravel()
                            for i in range(3) for c in ("conv_h", "conv_t")])
  assert 0.04 < np.std(kernels) < 0.06
  z = nn.Conv(8, (3, 3), padding="SAME").apply({"params": params["in_conv"]}, h)
  assert float(jnp.max(jnp.abs(z))) > 1e-2
  layer = _random_params(params["highway0"])
  conv = lambda p, v: nn.Conv(8, (3, 3), padding="SAME").apply({"params": p}, v)
  gate = jax.nn.sigmoid(conv(layer["conv_t"], z))
  np.testing.assert_allclose(HighwayLayer().apply({"params": layer}, z),
                             conv(layer["conv_h"], z) * gate + z * (1 - gate), rtol=1e-5,
                             atol=1e-6)
  coupling = Coupling(mask="channel", st_net=HighwaySTNet(features=2, hidden=8, parent=None),
                      shift_first=True)
  variables = coupling.init(_key(1), h)
  y, ld = coupling.apply(variables, h, method="forward_and_log_det")
  np.testing.assert_array_equal(y, h)
  np.testing.assert_array_equal(ld, 0.0)


# ----------------------------------------------------------------------------- Glow


@pytest.mark.parametrize("logit", [False, True])
def test_glow_highway_fixed_prior_inverse_and_logdet_vs_jacfwd(logit):
  """Glow with Kirichenko's options (highway st-net, N(0, I) prior, shift-first couplings;
  optionally the reference's logit pre-transform): exact inverse, log-det == log|det jacfwd|
  of y -> latents on 4 x 4 x 1."""
  shape = (4, 4, 1)
  model = Glow(image_shape=shape, levels=2, steps=1, hidden=4, st_net="highway",
               highway_layers=2, learn_prior=False, shift_first=True, logit=logit)
  x = _images(2, shape)
  variables = _init(model, x)
  paths = _paths(variables["params"])
  assert any("coupling/st_net/highway1/conv_t" in p for p in paths)
  assert any("/invconv/" in p for p in paths)
  _, logdet = _check_inverse_and_jacobian(model, variables, _unit(x))
  assert abs(float(logdet[0] - logdet[1])) > 1e-3


def test_glow_fixed_prior_has_no_prior_parameters_and_standard_normal_log_pz():
  shape = (4, 4, 1)
  x = _images(2, shape)
  fixed = Glow(image_shape=shape, levels=2, steps=1, hidden=4, learn_prior=False)
  learned = Glow(image_shape=shape, levels=2, steps=1, hidden=4)
  fixed_vars, learned_vars = _init(fixed, x), _init(learned, x)
  prior_paths = lambda v: [p for p in _paths(v["params"]) if "prior" in p or "top_" in p]
  assert prior_paths(fixed_vars) == []
  assert len(prior_paths(learned_vars)) == 4  # split prior kernel + bias, top mean + logs
  y = _unit(x)
  for model, variables, standard in ((fixed, fixed_vars, True), (learned, learned_vars, False)):
    eps, log_pz, _ = jax.jit(lambda v, y: model.apply(v, y, False, method="encode_unit"))(
        variables, y)
    want = sum(jnp.sum(norm.logpdf(e).reshape(2, -1), axis=1) for e in eps)
    if standard:
      np.testing.assert_allclose(log_pz, want, rtol=1e-5)
      decode = jax.jit(lambda v, eps: model.apply(v, eps, method="decode_unit"))
      np.testing.assert_allclose(decode(variables, eps), y, atol=2e-5)
    else:  # the learned (perturbed) prior is not N(0, I)
      assert float(jnp.max(jnp.abs(log_pz - want))) > 1e-2


def test_glow_logit_breaks_constant_volume():
  assert Glow(image_shape=(8, 8, 1), additive=True).constant_volume is True
  assert Glow(image_shape=(8, 8, 1), additive=True, logit=True).constant_volume is False


def test_glow_st_net_name_checked():
  with pytest.raises(UnknownNameError, match="highway"):
    Glow(image_shape=(8, 8, 1), st_net="resnet")


# ----------------------------------------------------------------------------- presets


def _param_count(model, shape):
  shapes = jax.eval_shape(lambda: model.init(
      {"params": _key(0), "dequant": _key(1)}, np.zeros((2, *shape), np.uint8), train=False))
  return shapes, sum(a.size for a in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name", ["realnvp", "glow", "cv_glow"])
@pytest.mark.parametrize("preset", ["kirichenko", "kirichenko_cpu"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)], ids=["grey", "colour"])
def test_presets_build(name, preset, shape):
  model = make_model(name, preset, shape)
  shapes, count = _param_count(model, shape)
  paths = _paths(shapes["params"])
  assert model.shift_first is True and count > 0
  if name == "realnvp":
    assert model.flow_batchnorm is False and not [p for p in paths if "/bn" in p]
    assert (model.num_scales, model.num_blocks, model.channels) == {
        ("kirichenko", 1): (2, 6, 64), ("kirichenko", 3): (3, 8, 64),
        ("kirichenko_cpu", 1): (2, 1, 16), ("kirichenko_cpu", 3): (2, 1, 16)}[
            (preset, shape[-1])]
    assert model.width_growth == (2 if preset == "kirichenko" else 1)
    if (preset, shape[-1]) == ("kirichenko", 1):
      assert 14.5e6 < count < 14.9e6  # Kirichenko's FashionMNIST RealNVP: 14.7 M
  else:
    assert model.st_net == "highway" and model.highway_layers == 3
    assert model.learn_prior is False and not [p for p in paths if "prior" in p or "top_" in p]
    assert model.additive is (name == "cv_glow")
    assert any("highway2/conv_h" in p for p in paths) and any("invconv" in p for p in paths)
    assert (model.levels, model.steps, model.hidden) == {
        ("kirichenko", 1): (2, 16, 200), ("kirichenko", 3): (3, 8, 400),
        ("kirichenko_cpu", 1): (2, 4, 64), ("kirichenko_cpu", 3): (2, 4, 64)}[
            (preset, shape[-1])]


@pytest.mark.parametrize("name", ["realnvp", "glow", "cv_glow"])
def test_recipes(name):
  for preset in ("kirichenko", "kirichenko_cpu"):
    assert registry.has_recipe(name, preset)
    for channels in (1, 3):
      got = registry.recipe(name, preset, channels, "paper")
      if name == "realnvp":
        want = (dict(optimizer="adam", learning_rate=5e-5, batch_size=32, epochs=80,
                     halve_every_epochs=None, weight_decay=0.0) if channels == 1 else
                dict(optimizer="adam", learning_rate=1e-4, batch_size=32, epochs=100,
                     halve_every_epochs=None, weight_decay=5e-5))
      else:
        want = dict(optimizer="rmsprop", learning_rate=5e-5, batch_size=32, epochs=80,
                    halve_every_epochs=None)
      assert got == want
      assert "epochs" not in registry.recipe(name, preset, channels, "cpu")
  assert not registry.has_recipe(name, "paper")
