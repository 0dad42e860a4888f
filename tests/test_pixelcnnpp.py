"""PixelCNN++: causality, the discretised logistic mixture, BatchNorm modes, sampling, training.

Speed notes (XLA:CPU): initial weights are drawn with numpy through ``jax.eval_shape``
(a jitted threefry ``model.init`` takes about a minute to compile), every repeated call is
jitted once and shared, and the models are the ``smoke`` preset on 8 x 8 images.
"""

import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ood_jax.data import idx
from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import logistic_mixture as lm
from ood_jax.models import make_model
from ood_jax.models.pixelcnnpp import PixelCNNPP, deconv_down, deconv_down_right

DEBIAN = pathlib.Path(idx.DEBIAN_FASHION_MNIST_DIR)
_DN = ("NHWC", "HWIO", "NHWC")


def _images(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n,) + shape, dtype=np.uint8)


def _init(model, x, seed=0):
  """Variables drawn with numpy: kernels N(0, 1/fan_in), scales 1, biases and means 0."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      std = 1.0 / math.sqrt(int(np.prod(s.shape[:-1])))
      return jnp.asarray(rng.normal(0, std, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def grey8():
  model = make_model("pixelcnnpp", "smoke", (8, 8, 1))
  x = _images(4, (8, 8, 1))
  return model, _init(model, x), x


# ------------------------------------------------------------------------ network
def test_transposed_convs_match_dilated_reference():
  """The phase (depth-to-space) transposed convolutions equal TF's 'VALID' conv2d_transpose
  (zero-dilated input, flipped kernel) cropped as the original."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
  for fn, (kh, kw), col0 in ((deconv_down, (2, 3), 1), (deconv_down_right, (2, 2), 0)):
    w = jnp.asarray(rng.normal(size=(kh, kw, 5, 6)), jnp.float32)
    ref = lax.conv_general_dilated(x, w[::-1, ::-1], (1, 1), ((kh - 1, kh - 1), (kw - 1, kw - 1)),
                                   lhs_dilation=(2, 2), dimension_numbers=_DN)
    np.testing.assert_allclose(np.asarray(fn(x, w)), np.asarray(ref[:, :6, col0:col0 + 8]),
                               atol=1e-5)


@pytest.mark.parametrize("c, num_resnet", [(1, 0), (3, 1)])     # smoke preset: 0
def test_causality_by_gradient(c, num_resnet):
  """d log p(x_{i,c} | x_<(i,c)) / d x_{j,c'} (eval mode) is zero unless (j, c') comes
  before (i, c) in raster / sub-pixel order, and nonzero for earlier sub-pixels.

  Grey runs the smoke preset (no gated blocks in the first stage); the RGB model adds one
  block per stage, so it has every kind of layer. Mid-range levels keep the bin masses from saturating.
  """
  model = make_model("pixelcnnpp", "smoke", (8, 8, c), num_resnet=num_resnet)
  x = np.random.default_rng(c).integers(64, 192, size=(1, 8, 8, c), dtype=np.uint8)
  v = _init(model, x, seed=c)
  xs = lm.scale_levels(jnp.asarray(x))

  def sub_pixel_lp(xs):
    out = model.apply(v, xs, False, method="network")
    return lm.sub_pixel_log_probs(out, jnp.asarray(x), xs).reshape(-1)

  d = 64 * c
  jac = np.asarray(jax.jit(jax.jacrev(sub_pixel_lp))(xs)).reshape(d, d)
  out_idx, in_idx = np.indices((d, d))                # flat index = pixel * c + channel
  assert not np.any(jac[in_idx >= out_idx]), "depends on itself or a later sub-pixel"
  earlier_pixel = in_idx // c < out_idx // c
  assert np.mean(jac[earlier_pixel] != 0) > 0.9         # receptive field: nearly all
  assert np.all(np.any(jac != 0, axis=1)[c:])         # every pixel after the first sees some
  if c == 3:
    same = jac.reshape(64, 3, 64, 3)[np.arange(64), :, np.arange(64), :]   # (pixel, out c, in c)
    assert np.mean(same[:, 1, 0] != 0) > 0.9 and np.mean(same[:, 2, :2] != 0) > 0.9   # G <- R; B <- R, G


# ------------------------------------------------------------------------ likelihood
def _extreme_params(c, k=3, seed=0):
  """Mixture parameters (M, P) with moderate and extreme values of every kind."""
  rng = np.random.default_rng(seed)
  m = 24
  logits = rng.choice([-30.0, -2.0, 0.0, 1.5, 30.0], size=(m, k))
  per = 3 if c == 3 else 2
  rest = np.empty((m, c, per * k))
  rest[..., :k] = rng.choice([-3.0, -1.0, -0.99, 0.0, 0.37, 1.0, 5.0], size=(m, c, k))
  rest[..., k:2 * k] = rng.choice([-20.0, -7.0, -4.0, -1.0, 0.0, 3.0, 20.0], size=(m, c, k))
  if c == 3:
    rest[..., 2 * k:] = rng.choice([-10.0, -0.5, 0.0, 0.8, 10.0], size=(m, c, k))
  return np.concatenate([logits, rest.reshape(m, -1)], -1).astype(np.float32)


def test_logistic_bin_mass_against_float64():
  mean = np.array([-0.9, -0.2, 0.0, 0.45, 1.0])[:, None]
  log_scale = np.array([-6.0, -3.0, -1.0, 0.5, 2.0])[:, None]
  levels = np.arange(256)[None, :]
  lo = np.where(levels == 0, -np.inf, (2 * levels - 1) / 255 - 1)
  hi = np.where(levels == 255, np.inf, (2 * levels + 1) / 255 - 1)
  sig = lambda t: 1 / (1 + np.exp(-t))
  a, b = (lo - mean) / np.exp(log_scale), (hi - mean) / np.exp(log_scale)
  with np.errstate(divide="ignore", over="ignore"):   # tail differences beyond the mode
    ref = np.log(np.where(a + b > 0, sig(-a) - sig(-b), sig(b) - sig(a)))
  got = lm.logistic_bin_log_mass(jnp.asarray(levels), jnp.asarray(mean, jnp.float32),
                                 jnp.asarray(log_scale, jnp.float32))
  ok = ref > -60                          # float64 differences lose precision below
  np.testing.assert_allclose(np.asarray(got)[ok], ref[ok], rtol=2e-4, atol=2e-5)


def test_mixture_sums_to_one():
  """Grey: the mixture sums to 1 over the 256 levels. RGB: every component's conditional
  of every channel sums to 1 (edge and random values of the preceding channels), the
  chain-rule conditionals add up to the joint (the slow test below sums the joint over
  all 256^3 colours)."""
  levels = jnp.arange(256, dtype=jnp.uint8)
  out1 = jnp.asarray(_extreme_params(1))
  lp = jax.jit(lm.log_prob)(out1[:, None, :], levels[None, :, None])
  np.testing.assert_allclose(np.asarray(jnp.exp(jax.nn.logsumexp(lp, axis=1))), 1.0, atol=2e-5)

  out3 = jnp.asarray(_extreme_params(3))[:, None, None, :]              # (M, 1, 1, P)
  rng = np.random.default_rng(1)
  prev = np.concatenate([[[0, 0], [255, 255], [0, 255]], rng.integers(0, 256, (5, 2))])
  q = len(prev)
  x = np.zeros((3, q, 256, 3), np.uint8)                 # channel ch varies, earlier ones fixed
  for ch in range(3):
    x[ch, :, :, :ch] = prev[:, None, :ch]
    x[ch, :, :, ch] = np.arange(256)
  full = _images(q * 256, (3,)).reshape(q, 256, 3)

  @jax.jit
  def check(out):
    lse = [jax.nn.logsumexp(lm.component_log_probs(out, x[ch])[..., ch, :], axis=-2)
           for ch in range(3)]                           # each (M, q, K)
    joint = lm.log_prob(out, full)
    gap = jnp.sum(lm.sub_pixel_log_probs(out, full), -1) - joint
    return jnp.stack(lse), jnp.max(jnp.abs(gap) / (1.0 + jnp.abs(joint)))

  lse, gap = check(out3)
  np.testing.assert_allclose(np.asarray(jnp.exp(lse)), 1.0, atol=2e-5)
  assert float(gap) < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("OOD_JAX_SLOW_TESTS") != "1",
                    reason="brute force over 256^3 colours; set OOD_JAX_SLOW_TESTS=1 to run it")
def test_rgb_joint_sums_to_one_brute_force():
  one = jnp.asarray(_extreme_params(3, seed=5)[7])
  gb = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 2)

  def per_red(r):
    xx = jnp.concatenate([jnp.full((gb.shape[0], 1), r, jnp.uint8), jnp.asarray(gb, jnp.uint8)], -1)
    return jax.nn.logsumexp(lm.log_prob(one, xx))
  total = jax.nn.logsumexp(jax.jit(lambda: lax.map(per_red, jnp.arange(256, dtype=jnp.uint8)))())
  assert abs(float(jnp.exp(total)) - 1.0) < 1e-4


def test_gradients_finite_for_extreme_params():
  out = jnp.asarray(_extreme_params(3))[:, None, :]
  x = jnp.asarray(_images(24 * 4, (3,)).reshape(24, 4, 3))
  g = jax.jit(jax.grad(lambda o: jnp.sum(lm.log_prob(o, x))))(
      jnp.broadcast_to(out, (24, 4, out.shape[-1])))
  assert bool(jnp.all(jnp.isfinite(g)))


# ------------------------------------------------------------------------ model protocol
def test_log_prob_objective_and_batchnorm_modes(grey8):
  model, v, x = grey8
  other = x.copy()
  other[1:] = 255 - other[1:]
  f_eval = jax.jit(lambda xx: model.apply(v, xx, method="log_prob"))
  a, b = f_eval(x), f_eval(other)
  obj = jax.jit(lambda xx: model.apply(v, xx, train=False))(x)
  np.testing.assert_array_equal(np.asarray(a), -np.asarray(obj))     # log_prob = -objective
  assert a.shape == (4,) and bool(jnp.all(a < 0))
  np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)     # eval: batch-independent
  f_train = jax.jit(lambda xx: model.apply(v, xx, True, method="log_prob", mutable=["batch_stats"]))
  (ta, upd), (tb, _) = f_train(x), f_train(other)
  assert abs(float(ta[0]) - float(tb[0])) > 1e-3                      # train: batch-dependent
  changed = jax.tree.map(lambda p, q: bool(jnp.any(p != q)), upd["batch_stats"], v["batch_stats"])
  assert all(jax.tree.leaves(changed))
  with pytest.raises(Exception):     # flax refuses to update immutable batch_stats
    jax.eval_shape(lambda: model.apply(v, x, True, method="log_prob"))


def test_eval_mode_never_updates_running_stats(grey8):
  model, v, x = grey8
  _, upd = jax.jit(lambda vv: model.apply(vv, x, False, method="log_prob",
                                          mutable=["batch_stats"]))(v)
  same = jax.tree.map(lambda p, q: bool(jnp.all(p == q)), upd["batch_stats"], v["batch_stats"])
  assert all(jax.tree.leaves(same))


def test_weight_norm_variant_and_dropout():
  model = make_model("pixelcnnpp", "smoke", (8, 8, 1), norm="weight")
  assert model.dropout is None and model.dropout_rate == 0.5    # the original's default
  assert make_model("pixelcnnpp", "smoke", (8, 8, 1), norm="weight", dropout=0.1).dropout_rate == 0.1
  x = _images(2, (8, 8, 1))
  v = _init(model, x)
  assert "batch_stats" not in v
  f = jax.jit(lambda key, train: model.apply(v, x, train, method="log_prob",
                                             rngs={"dropout": key}), static_argnums=1)
  k0, k1 = jax.random.key(0, impl="rbg"), jax.random.key(1, impl="rbg")
  np.testing.assert_array_equal(np.asarray(f(k0, False)), np.asarray(f(k1, False)))
  assert float(jnp.max(jnp.abs(f(k0, True) - f(k1, True)))) > 1e-3
  assert bool(jnp.all(jnp.isfinite(f(k0, True))))


def test_presets_and_invalid_inputs(grey8):
  model, v, _ = grey8
  paper = make_model("pixelcnnpp", "paper", (32, 32, 3))
  assert (paper.num_filters, paper.num_resnet, paper.num_mix, paper.norm,
          paper.dropout_rate) == (80, 5, 10, "batch", 0.0)
  assert paper.num_params == 100 and make_model("pixelcnnpp", "cpu", (28, 28, 1)).num_params == 15
  with pytest.raises(InvalidInputError, match="divisible by 4"):
    make_model("pixelcnnpp", "smoke", (30, 30, 1))
  with pytest.raises(UnknownNameError, match="paper"):
    make_model("pixelcnnpp", "huge", (28, 28, 1))
  with pytest.raises(UnknownNameError, match="batch"):
    PixelCNNPP(norm="layer")
  for bad, what in ((np.zeros((2, 8, 8, 1), np.float32), "uint8"),
                    (np.zeros((2, 8, 8, 3), np.uint8), "8 x 8 x 1"),
                    (np.zeros((8, 8, 1), np.uint8), "8 x 8 x 1")):
    with pytest.raises(InvalidInputError, match=what):
      model.apply(v, bad, method="log_prob")
  with pytest.raises(InvalidInputError, match="temperature"):
    model.apply(v, jax.random.key(0), 2, 0.0, method="sample")


# ------------------------------------------------------------------------ sampling
def test_samples_and_temperature():
  """With a zero output kernel every pixel has the same mixture (two components at -0.6 and
  +0.6, weights sigmoid(0.5) = 0.62 / 0.38, G's mean + 0.5 x_R): samples follow it, the
  channel conditioning uses the sampled R, and T = 0.05 collapses the component choice."""
  model = make_model("pixelcnnpp", "smoke", (8, 8, 3))
  x = _images(2, (8, 8, 3))
  v = _init(model, x)
  draw = jax.jit(lambda vv, key, t: model.apply(vv, key, 16, t, method="sample"))
  s = draw(v, jax.random.key(0, impl="rbg"), 1.0)          # the network as initialised
  assert s.dtype == jnp.uint8 and s.shape == (16, 8, 8, 3)
  assert len(np.unique(np.asarray(s))) > 10

  a = math.atanh(0.5)                         # coefficient a (G <- R) sits in channel 0's row
  per_channel = np.array([[-0.6, 0.6, -4, -4, a, a],     # per channel: means, log-scales, coeffs
                          [-0.6, 0.6, -4, -4, 0, 0],
                          [-0.6, 0.6, -4, -4, 0, 0]])
  bias = np.concatenate([[0.5, 0.0], per_channel.reshape(-1)]).astype(np.float32)
  params = dict(v["params"])
  params["output"] = {"kernel": jnp.zeros_like(params["output"]["kernel"]), "bias": jnp.asarray(bias)}
  fixed = dict(v, params=params)
  hot = np.asarray(draw(fixed, jax.random.key(1, impl="rbg"), 1.0)).reshape(-1, 3).astype(float)
  cold = np.asarray(draw(fixed, jax.random.key(1, impl="rbg"), 0.05)).reshape(-1, 3).astype(float)
  assert abs(np.mean(hot[:, 0] < 128) - 1 / (1 + math.exp(-0.5))) < 0.1   # 1024 draws
  assert np.mean(cold[:, 0] < 128) > 0.98
  assert np.std(cold[:, 0]) < 0.2 * np.std(hot[:, 0])
  first = hot[:, 0] < 128                                   # component 0 (shared by R, G, B)
  xr = hot[first, 0] / 127.5 - 1
  expected_g = (-0.6 + 0.5 * xr + 1) * 127.5
  assert np.median(np.abs(hot[first, 1] - expected_g)) < 5


# ------------------------------------------------------------------------ training
@pytest.mark.skipif(not DEBIAN.is_dir(),
                    reason=f"{DEBIAN} absent: apt-get install -y dataset-fashion-mnist to run this test")
def test_training_steps_decrease_loss_on_fashion_mnist():
  from ood_jax import data
  from ood_jax.train.config import TrainConfig
  from ood_jax.train.loop import make_train_step
  from ood_jax.train.optim import make_optimizer
  from ood_jax.train.state import create

  x = data.load("fashion_mnist", "train", n=16).x
  model = make_model("pixelcnnpp", "smoke", (28, 28, 1))
  tx = make_optimizer(TrainConfig(learning_rate=3e-3, halve_every_epochs=None), 1)
  state = create(_init(model, x[:8]), tx)
  step = jax.jit(make_train_step(model, tx, seed=0))
  losses = []
  for _ in range(10):
    state, loss = step(state, jnp.asarray(x))
    losses.append(float(loss))
  assert int(state.bad_step) < 0
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02 * abs(np.mean(losses[:3])), losses
