"""Gated PixelCNN: causality (no blind spot, R -> G -> B), the categorical likelihood,
sampling, presets and recipes, training.

Speed notes (XLA:CPU): weights are drawn with numpy through ``jax.eval_shape`` (random
kernels N(0, 1/fan_in) and biases, so no weight is special), models are tiny and images
5 x 5 or smaller.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError
from ood_jax.models import make_model, spec_of
from ood_jax.models import registry
from ood_jax.models.gated_pixelcnn import GatedPixelCNN
from ood_jax.models.logistic_mixture import scale_levels

NAME = "gated_pixelcnn"


def _images(n, shape, seed=0, lo=0, hi=256):
  return np.random.default_rng(seed).integers(lo, hi, size=(n,) + tuple(shape), dtype=np.uint8)


def _init(model, x, seed=0):
  """Random variables: kernels N(0, 1/fan_in), biases N(0, 0.1^2)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if path[-1].key == "kernel":
      std = 1.0 / math.sqrt(int(np.prod(s.shape[:-1])))
      return jnp.asarray(rng.normal(0, std, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _tiny(shape, **kw):
  """3 gated layers (5x5 first, then 3x3): on 5 x 5 images the last row sees every pixel."""
  settings = dict(layers=3, features=9, skip=24, first_kernel=5, kernel=3)
  return GatedPixelCNN(image_shape=shape, **{**settings, **kw})


# ------------------------------------------------------------------------ causality
@pytest.mark.parametrize("c", [1, 3])
def test_causality_by_gradient(c):
  """d logits[sub-pixel i] / d x[sub-pixel j] is zero for every j at or after i (raster
  order, R -> G -> B within a pixel), non-zero for earlier sub-pixels within reach: the
  up-right neighbour of every pixel (no blind spot), every earlier sub-pixel for the last
  row, the same pixel's earlier channels (G <- R, B <- R, G)."""
  h = w = 5
  model = _tiny((h, w, c))
  x = _images(1, (h, w, c), seed=c, lo=64, hi=192)
  v = _init(model, x, seed=c)
  jac = jax.jit(jax.jacfwd(lambda xs: model.apply(v, xs, method="logits")))(scale_levels(jnp.asarray(x)))
  d = h * w * c
  dep = np.asarray(jnp.any(jac.reshape(d, 256, d) != 0, axis=1))     # (out sub-pixel, in sub-pixel)
  out_idx, in_idx = np.indices((d, d))                             # flat = (row W + col) C + ch
  assert not np.any(dep[in_idx >= out_idx]), "depends on itself or a later sub-pixel"
  assert np.all(np.any(dep, axis=1)[1:])                           # everything but the first sees some
  pix = dep.reshape(h, w, c, h, w, c).any(axis=(2, 5))               # (out pixel, in pixel)
  for r in range(1, h):
    for col in range(w - 1):
      assert pix[r, col, r - 1, col + 1], f"blind spot: ({r},{col}) does not see ({r - 1},{col + 1})"
  last_row = dep.reshape(h, w * c, d)[-1]                           # (W C, D)
  before = in_idx.reshape(h, w * c, d)[-1] < out_idx.reshape(h, w * c, d)[-1]
  assert np.all(last_row[before]), "the last row misses an earlier sub-pixel"
  if c == 3:
    same = dep.reshape(h * w, 3, h * w, 3)[np.arange(h * w), :, np.arange(h * w), :]  # (pixel, out, in)
    assert np.all(same[:, 1, 0]) and np.all(same[:, 2, :2])        # G <- R; B <- R, G


# ------------------------------------------------------------------------ likelihood
@pytest.mark.parametrize("c", [1, 3])
def test_log_probs_normalised_and_summed(c):
  """Every conditional sums to 1 over the 256 levels of its sub-pixel (the others fixed);
  ``log_prob`` is the float64 sum of log-softmax at the data and ``-__call__``."""
  model = _tiny((4, 4, c), layers=2)
  x = _images(3, (4, 4, c), seed=c)
  v = _init(model, x, seed=c + 10)
  d = 16 * c
  picks = sorted({0, 1, d // 2, d - 2, d - 1})                     # colour: R, G, B among them
  flat = np.repeat(x[:1].reshape(1, d), 256 * len(picks), axis=0).reshape(len(picks), 256, d)
  for p, t in enumerate(picks):
    flat[p, :, t] = np.arange(256)
  batch = jnp.asarray(flat.reshape(-1, 4, 4, c))
  sub = jax.jit(lambda xx: model.apply(v, xx, method="sub_pixel_log_probs"))(batch)
  sub = np.asarray(sub).reshape(len(picks), 256, d)
  for p, t in enumerate(picks):
    lse = jax.nn.logsumexp(jnp.asarray(sub[p, :, t], jnp.float32))
    assert abs(float(lse)) < 1e-5, (t, float(lse))

  logits = np.asarray(jax.jit(lambda xs: model.apply(v, xs, method="logits"))(scale_levels(jnp.asarray(x))),
                      np.float64)
  m = logits.max(-1, keepdims=True)
  ls = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  ref = np.take_along_axis(ls, x[..., None].astype(int), -1).sum(axis=(1, 2, 3, 4))
  lp = jax.jit(lambda xx: model.apply(v, xx, method="log_prob"))(jnp.asarray(x))
  nll = jax.jit(lambda xx: model.apply(v, xx, train=True))(jnp.asarray(x))
  assert lp.shape == (3,) and lp.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(lp), ref, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(lp), -np.asarray(nll))


def test_joint_sums_to_one_brute_force():
  """A 2 x 1 grey image (the second pixel sees the first through the vertical stack):
  exp(log_prob) over all 256^2 images sums to 1."""
  model = GatedPixelCNN(image_shape=(2, 1, 1), layers=2, features=4, skip=8, first_kernel=3)
  xs = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1)
  xs = xs.reshape(-1, 2, 1, 1).astype(np.uint8)
  v = _init(model, xs[:2], seed=3)
  total = jax.jit(lambda xx: jax.nn.logsumexp(model.apply(v, xx, method="log_prob")))(jnp.asarray(xs))
  assert abs(float(total)) < 1e-4
  grads = jax.jit(jax.grad(lambda vv: jnp.sum(model.apply(vv, jnp.asarray(xs[:64])))))(v)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_invalid_inputs():
  model = _tiny((4, 4, 1), layers=1)
  x = _images(2, (4, 4, 1))
  v = _init(model, x)
  for bad, what in ((np.zeros((2, 4, 4, 1), np.float32), "uint8"),
                    (np.zeros((2, 4, 4, 3), np.uint8), "4 x 4 x 1"),
                    (np.zeros((4, 4, 1), np.uint8), "4 x 4 x 1")):
    with pytest.raises(InvalidInputError, match=what):
      model.apply(v, bad, method="log_prob")
  with pytest.raises(InvalidInputError, match="temperature"):
    model.apply(v, jax.random.key(0), 2, 0.0, method="sample")
  with pytest.raises(InvalidInputError, match="n must be"):
    model.apply(v, jax.random.key(0), 0, method="sample")
  with pytest.raises(InvalidInputError, match="features, skip >= 3"):
    GatedPixelCNN(image_shape=(4, 4, 3), features=2)
  with pytest.raises(InvalidInputError, match="odd"):
    GatedPixelCNN(image_shape=(4, 4, 1), first_kernel=4)
  with pytest.raises(InvalidInputError, match="image_shape"):
    GatedPixelCNN(image_shape=(4, 4, 2))


# ------------------------------------------------------------------------ sampling
def test_sampling_deterministic_and_consistent():
  """Samples are uint8 n x H x W x C, a function of the key; every sub-pixel t of a sample
  is the draw (key ``fold_in(rng, t)``) from the logits the model gives the *finished*
  sample (so no sub-pixel's distribution changed after it was drawn: causal sampling);
  a near-zero temperature draws the argmax."""
  shape = (3, 3, 3)
  model = _tiny(shape, layers=2)
  v = _init(model, _images(2, shape), seed=5)
  draw = jax.jit(lambda key, t: model.apply(v, key, 4, t, method="sample"))
  key = jax.random.key(7)
  s = draw(key, 1.0)
  assert s.dtype == jnp.uint8 and s.shape == (4,) + shape
  np.testing.assert_array_equal(np.asarray(s), np.asarray(draw(key, 1.0)))
  assert np.any(np.asarray(s) != np.asarray(draw(jax.random.key(8), 1.0)))

  logits_of = jax.jit(lambda xx: model.apply(v, scale_levels(xx), method="logits"))
  d = int(np.prod(shape))
  lg = logits_of(s).reshape(4, d, 256)
  redraw = jnp.stack([jax.random.categorical(jax.random.fold_in(key, t), lg[:, t], axis=-1)
                      for t in range(d)], axis=1)
  mismatch = int(jnp.sum(redraw.astype(jnp.uint8) != s.reshape(4, d)))
  assert mismatch <= 1, f"{mismatch} of {4 * d} sub-pixels not redrawn from the final sample"

  cold = draw(key, 1e-4)
  argmax = jnp.argmax(logits_of(cold), axis=-1).astype(jnp.uint8)
  assert float(jnp.mean(argmax == cold)) > 0.97


# ------------------------------------------------------------------------ registry
def test_presets_and_recipes():
  from ood_jax.experiments import configs
  from ood_jax.experiments.run import resolve_train_config
  from ood_jax.train.config import TrainConfig

  s = registry.spec(NAME)
  assert list(s.presets) == ["smoke", "cpu", "paper", "nalisnick", "nalisnick_cpu"]
  sizes = {}
  for preset in s.presets:
    for shape in ((28, 28, 1), (32, 32, 3)):
      m = make_model(NAME, preset, shape)
      assert type(m) is GatedPixelCNN and tuple(m.image_shape) == shape and spec_of(m) is s
      sizes[preset, shape[2]] = (m.layers, m.features, m.skip)
  assert sizes["nalisnick", 1] == sizes["paper", 1] == (5, 32, 256)        # App. A.2
  assert sizes["nalisnick", 3] == sizes["paper", 3] == (15, 128, 1024)
  assert sizes["nalisnick_cpu", 1] == sizes["cpu", 1] and sizes["nalisnick_cpu", 3] == sizes["cpu", 3]
  assert not s.uses_batchnorm()
  # The App. A.2 colour model, traced only: 15 layers, skip 1024, 3 x 256 logits.
  big = make_model(NAME, "nalisnick", (32, 32, 3))
  p = jax.eval_shape(lambda: big.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8)))["params"]
  assert p["layer14_h"]["kernel"].shape == (1, 2, 128, 256) and "layer14_res" not in p
  assert p["layer0_v"]["kernel"].shape == (3, 7, 4, 256)
  assert p["out_hidden"]["kernel"].shape == (1, 1, 1024, 1024)
  assert p["out_logits"]["kernel"].shape == (1, 1, 1024, 768)

  grey = dict(optimizer="adam", learning_rate=1e-4, batch_size=32, num_steps=100_000,
              decay_steps=(80_000, 90_000), decay_factor=0.5, halve_every_epochs=None)
  colour = dict(optimizer="rmsprop", learning_rate=1e-4, batch_size=32, num_steps=200_000,
                decay_steps=(120_000, 180_000, 195_000), decay_factor=1 / 3,
                halve_every_epochs=None)
  for ch, want in ((1, grey), (3, colour)):
    cfg = resolve_train_config(configs.get_preset("paper"), NAME, 0, None, {}, "nalisnick", ch)
    got = {k: getattr(cfg, k) for k in want}
    assert got == want, (ch, got)
    assert cfg.warmup_steps == 0 and cfg.clip_grad_norm is None
  # At the cpu experiment preset: the cpu budget (1 epoch), not the paper's steps.
  cpu = resolve_train_config(configs.get_preset("cpu"), NAME, 0, None, {}, "nalisnick_cpu", 1)
  assert (cpu.epochs, cpu.num_steps, cpu.optimizer, cpu.batch_size) == (1, None, "adam", 32)
  assert registry.recipe(NAME, "nalisnick_cpu", 3, "cpu")["optimizer"] == "rmsprop"
  assert registry.budget(NAME, "cpu") == {"epochs": 1}
  TrainConfig(**registry.recipe(NAME, "nalisnick", 3, "paper"))


# ------------------------------------------------------------------------ training
def test_training_lowers_the_loss():
  """30 Adam steps through ``train`` on random two-level 6 x 6 images: bits/dim fall from
  about 8 (random init) towards the data's ~1 bit."""
  from ood_jax.train.config import TrainConfig
  from ood_jax.train.loop import init_variables, train

  rng = np.random.default_rng(0)
  x = (rng.integers(0, 2, size=(64, 6, 6, 1)) * 255).astype(np.uint8)
  model = make_model(NAME, "smoke", (6, 6, 1))
  cfg = TrainConfig(batch_size=16, num_steps=30, learning_rate=1e-2, halve_every_epochs=None,
                    log_every=5, checkpoint_every=1000)
  res = train(model, x, cfg, progress=False)
  bpd = [h["bits_per_dim"] for h in res.history]
  assert res.step == 30 and all(np.isfinite(bpd))
  assert bpd[-1] < 0.5 * bpd[0], bpd
  # The likelihood itself rose (the objective is the NLL, not some other loss going down).
  to_bpd = jax.jit(lambda vv: -jnp.mean(model.apply(vv, jnp.asarray(x), method="log_prob"))
                   / (36 * math.log(2)))
  before, after = to_bpd(init_variables(model, x[:16], cfg.seed)), to_bpd(res.variables)
  assert 0 < float(after) < 0.5 * float(before), (float(before), float(after))
