"""Glow and CV-Glow: whole-model inverse, density vs jacfwd, CV-Glow's constant volume
(property and numbers), ActNorm data-dependent init, 1x1-conv parameter paths, coupling
intermediates, likelihood parts, samples, presets, the model specs and a short FashionMNIST run.

Speed (XLA:CPU): tiny 8 x 8 models with ``rbg`` keys, variables drawn with numpy, and a few
jitted functions that take the variables as an argument.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.data.pixels import LOG_256
from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import make_model
from ood_jax.models import registry as model_registry
from ood_jax.models.flows.flow_model import gaussian_log_density
from ood_jax.models.flows.glow import CV_GLOW_SPEC, GLOW_SPEC, Glow, make_cv_glow, make_glow

SHAPE = (8, 8, 1)
FMNIST = "/usr/share/datasets/fashion-mnist/"


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _images(n, shape=SHAPE, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _unit(x, seed=3):
  u = np.random.default_rng(seed).uniform(size=x.shape).astype(np.float32)
  return jnp.asarray((x.astype(np.float32) + u) / 256.0)


def _init(model, x, seed=0, scale=0.05):
  """Variables drawn with numpy (no compile): every parameter ``N(0, scale^2)`` around its
  neutral value (0; 1 for scales; identity for plain 1x1 kernels); LU constants: identity permutation, signs alternating."""
  shapes = jax.eval_shape(lambda: model.init(
      {"params": _key(seed), "dequant": _key(seed + 1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "perm":
      return jnp.eye(s.shape[0], dtype=s.dtype)
    if name == "sign_s":
      return jnp.asarray(np.resize([1.0, -1.0], s.shape), s.dtype)
    base = 1.0 if name == "scale" else 0.0
    if name == "kernel" and "invconv" in str(path):  # plain 1x1 conv: identity + noise
      base = np.eye(s.shape[0])
    return jnp.asarray(base + scale * rng.normal(size=s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def _fns(model):
  """Jitted ``encode(v, y)``, ``decode(v, eps)`` and ``jac(v, y)`` (Jacobian of
  y -> concatenated standardised latents, ``N x D x N x D``)."""
  encode = lambda v, y: model.apply(v, y, False, method="encode_unit")
  decode = lambda v, eps: model.apply(v, eps, method="decode_unit")

  def jac(v, y):
    def flat(f):
      eps = encode(v, f.reshape(y.shape))[0]
      return jnp.concatenate([e.reshape(y.shape[0], -1) for e in eps], axis=1).reshape(-1)
    n, d = y.shape[0], y[0].size
    return jax.jacfwd(flat)(y.reshape(-1)).reshape(n, d, n, d)
  return jax.jit(encode), jax.jit(decode), jax.jit(jac)


@pytest.mark.parametrize("make", [make_glow, make_cv_glow], ids=["glow", "cv_glow"])
def test_inverse_and_density_vs_jacfwd(make):
  """decode(encode(y)) == y, and log p(z) + logdet == log N(eps; 0, I) + log|det d eps/dy|
  (the change of variables to the standardised latents, learned priors included)."""
  model = make("smoke", SHAPE)
  x = _images(2)
  variables = _init(model, x)
  encode, decode, jac = _fns(model)
  y = _unit(x)
  eps, log_pz, logdet = encode(variables, y)
  assert [e.shape[1:] for e in eps] == model.latent_shapes() == [(4, 4, 2), (2, 2, 8)]
  np.testing.assert_allclose(decode(variables, eps), y, atol=2e-5)
  j = np.asarray(jac(variables, y), np.float64)
  log_n = sum(gaussian_log_density(e) for e in eps)
  for i in range(2):
    sign, logabs = np.linalg.slogdet(j[i, :, i, :])
    assert sign != 0
    np.testing.assert_allclose(log_pz[i] + logdet[i], log_n[i] + logabs, rtol=1e-4, atol=2e-2)
    np.testing.assert_array_equal(j[i, :, 1 - i, :], 0.0)  # samples do not interact
  if model.additive:  # constant volume: the same log-det for every input
    np.testing.assert_allclose(logdet[0], logdet[1], rtol=1e-6)
  else:
    assert abs(float(logdet[0] - logdet[1])) > 1e-3


def test_cv_glow_logdet_ignores_coupling_nets():
  model = make_cv_glow("smoke", SHAPE)
  x = _images(2)
  variables = _init(model, x)
  encode = _fns(model)[0]
  y = _unit(x)
  _, log_pz, logdet = encode(variables, y)
  rng = np.random.default_rng(5)
  other = jax.tree_util.tree_map_with_path(
      lambda path, p: p + (0.3 * rng.normal(size=p.shape) if "st_net" in str(path) else 0.0),
      variables["params"])
  _, log_pz2, logdet2 = encode({**variables, "params": other}, y)
  np.testing.assert_allclose(logdet2, logdet, rtol=1e-6)   # volume: actnorm and 1x1 convs only
  assert float(jnp.max(jnp.abs(log_pz2 - log_pz))) > 1e-2  # the st-nets do matter for z
  # ... and equals the sum of the ActNorm and 1x1-conv terms: H*W*(sum log|scale| + sum log_s).
  want = 0.0
  for lvl, size in (("level_0", 16), ("level_1", 4)):
    for step in variables["params"][lvl].values():
      if isinstance(step, dict) and "actnorm" in step:
        want += size * (np.sum(np.log(np.abs(step["actnorm"]["scale"])))
                        + np.sum(step["invconv"]["log_s"]))
  np.testing.assert_allclose(logdet, want, rtol=1e-5)


@pytest.mark.parametrize("make", [make_glow, make_cv_glow], ids=["glow", "cv_glow"])
def test_constant_volume_property_and_numbers(make):
  """``constant_volume`` (from the layers' declarations) is True iff additive, and the
  log|det| of ``log_prob_parts`` is then identical for different inputs and dequantisations."""
  model = make("smoke", SHAPE)
  assert model.constant_volume is model.additive
  variables = _init(model, _images(2))
  f = jax.jit(lambda v, x, key: model.apply(v, x, method="log_prob_parts", rngs={"sample": key}))
  _, ld_a = f(variables, _images(2, seed=1), _key(1))
  _, ld_b = f(variables, _images(2, seed=2), _key(2))
  lds = np.concatenate([ld_a, ld_b])
  if model.constant_volume:
    np.testing.assert_allclose(lds, lds[0], rtol=1e-6)
  else:
    assert np.max(np.abs(lds - lds[0])) > 1e-3


def test_coupling_intermediates():
  model = make_glow("smoke", SHAPE)
  x = _images(2)
  variables = _init(model, x)
  key = _key(8)
  f = jax.jit(lambda v, x: model.apply(v, x, train=False, method="log_prob_parts",
                                       mutable=["intermediates"], rngs={"sample": key}))
  (_, logdet), state = f(variables, x)
  sown = state["intermediates"]
  # level 0: 4 x 4 x 4 after the squeeze; level 1: 2 x 2 x 8 (2 of level 0's 4 kept, squeezed)
  for level, shape in (("level_0", (2, 4, 4, 4)), ("level_1", (2, 2, 2, 8))):
    assert set(sown[level]) == {"step0", "step1"}
    for step in sown[level].values():
      got = step["coupling"]
      half = (*shape[:3], shape[3] // 2)
      assert [got[k][0].shape for k in ("x_in", "s", "t", "y_out")] == [shape, half, half, shape]
  lp = jax.jit(lambda v, x: model.apply(v, x, method="log_prob_parts", rngs={"sample": key}))
  np.testing.assert_array_equal(lp(variables, x)[1], logdet)


def test_specs():
  for spec, additive in ((GLOW_SPEC, False), (CV_GLOW_SPEC, True)):
    assert spec.module is Glow and dict(spec.defaults) == {"additive": additive}
    assert spec.rose_layers == ("*invconv*",) and not spec.has_batchnorm
    assert dict(spec.train_defaults) == dict(warmup_steps=200, clip_grad_norm=100.0)
    assert spec.budgets == {"cpu": {"epochs": 1}} and spec.about
    assert set(spec.presets) == {"smoke", "cpu", "paper", "kirichenko", "kirichenko_cpu",
                                 "nalisnick", "nalisnick_cpu"}
    make = make_cv_glow if additive else make_glow
    for preset in spec.presets:
      for shape in ((28, 28, 1), (32, 32, 3)):
        generic = spec.module(image_shape=shape, **{**spec.defaults,
                                                    **spec.presets[preset][shape[-1]]})
        assert generic == make(preset, shape)
  assert (GLOW_SPEC.name, CV_GLOW_SPEC.name) == ("glow", "cv_glow")


def test_actnorm_data_dependent_init_and_train_flag():
  """``init`` sets the first ActNorm from its batch: its output has zero mean and unit
  variance per channel on that batch; ``train`` changes nothing (no BatchNorm)."""
  model = make_glow("smoke", SHAPE)
  x = _images(16)
  y = _unit(x)
  variables = jax.jit(lambda y: model.init({"params": _key(0)}, y, False,
                                           method="encode_unit"))(y)
  h = np.asarray(y - 0.5).reshape(16, 4, 2, 4, 2, 1).transpose(0, 1, 3, 2, 4, 5)
  h = h.reshape(16, 4, 4, 4)  # the squeeze before the first step
  act = variables["params"]["level_0"]["step0"]["actnorm"]
  out = (h + np.asarray(act["bias"])) * np.asarray(act["scale"])
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
  key = _key(1)
  both = jax.jit(lambda v: [model.apply(v, x, train=t, rngs={"dequant": key}) for t in (1, 0)])
  np.testing.assert_array_equal(*both(variables))


def test_invconv_parameter_paths():
  for lu, names in ((True, {"lower", "upper", "log_s"}), (False, {"kernel"})):
    model = make_glow("smoke", SHAPE, lu=lu, steps=3)
    shapes = jax.eval_shape(lambda: model.init(
        {"params": _key(0), "dequant": _key(1)}, _images(2), train=False))
    paths = ["/".join(p.key for p in path)
             for path, _ in jax.tree_util.tree_leaves_with_path(shapes["params"])]
    conv = sorted({p.rsplit("/", 1)[0] for p in paths if "invconv" in p})
    assert conv == [f"level_{l}/step{k}/invconv" for l in range(2) for k in range(3)]
    assert {p.rsplit("/", 1)[1] for p in paths if "invconv" in p} == names


def test_parts_samples_and_temperature():
  model = make_glow("smoke", SHAPE)
  x = _images(2)
  variables = _init(model, x)
  key = _key(8)
  f = jax.jit(lambda v, x: (
      model.apply(v, x, method="log_prob_parts", rngs={"sample": key}),
      model.apply(v, x, method="log_prob", rngs={"sample": key}),
      model.apply(v, x, train=True, rngs={"dequant": key})))
  (log_pz, logdet), lp, loss = f(variables, x)
  np.testing.assert_allclose(log_pz + logdet, lp, rtol=1e-6)
  np.testing.assert_allclose(-loss, lp, rtol=1e-6)
  _, _, flow_ld = _fns(model)[0](variables, _unit(x))
  assert float(jnp.mean(logdet)) < float(jnp.mean(flow_ld)) - 0.9 * 64 * LOG_256
  s = jax.jit(lambda v, t: model.apply(v, _key(3), 64, t, method="sample"))
  cold, hot = np.asarray(s(variables, 0.1)), np.asarray(s(variables, 1.0))
  assert cold.shape == hot.shape == (64, *SHAPE) and cold.dtype == np.uint8
  assert cold.astype(float).std() < 0.5 * hot.astype(float).std()


@pytest.mark.parametrize("shape,kw", [((28, 28, 1), {}), ((8, 12, 3), dict(lu=False))])
def test_inverse_other_shapes(shape, kw):
  model = make_cv_glow("smoke", shape, **kw) if kw else make_glow("smoke", shape)
  x = _images(2, shape)
  variables = _init(model, x)
  y = _unit(x)
  f = jax.jit(lambda v, y: model.apply(v, model.apply(v, y, False, method="encode_unit")[0],
                                       method="decode_unit"))
  np.testing.assert_allclose(f(variables, y), y, atol=5e-5)


def test_no_actnorm_option_and_nalisnick_preset():
  """``actnorm=False`` drops the steps' ActNorm (no parameters, still invertible with the
  Jacobian's log-det); the ``nalisnick`` preset is App. A.1's Glow and recipe."""
  model = make_cv_glow("smoke", SHAPE, actnorm=False, learn_prior=False, st_net="highway")
  x = _images(2)
  variables = _init(model, x)
  assert not any("actnorm" in str(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(variables["params"])[0])
  encode, decode, jac = _fns(model)
  y = _unit(x)
  eps, log_pz, logdet = encode(variables, y)
  np.testing.assert_allclose(decode(variables, eps), y, atol=2e-5)
  j = np.asarray(jac(variables, y), np.float64)
  for i in range(2):
    np.testing.assert_allclose(logdet[i], np.linalg.slogdet(j[i, :, i, :])[1], rtol=1e-4,
                               atol=2e-2)
  # The volume is the 1x1 convs' alone: H * W * sum(log_s) per step.
  want = sum(size * np.sum(step["invconv"]["log_s"])
             for lvl, size in (("level_0", 16), ("level_1", 4))
             for step in variables["params"][lvl].values() if "invconv" in step)
  np.testing.assert_allclose(logdet, want, rtol=1e-5)
  m = make_model("glow", "nalisnick", (28, 28, 1))
  assert (m.levels, m.steps, m.hidden, m.st_net, m.highway_layers, m.learn_prior,
          m.actnorm) == (2, 16, 200, "highway", 3, False, False)
  m = make_model("cv_glow", "nalisnick", (32, 32, 3))
  assert (m.levels, m.steps, m.hidden, m.additive, m.actnorm) == (3, 8, 400, True, False)
  grey = model_registry.recipe("cv_glow", "nalisnick", 1, "paper")
  assert grey == dict(optimizer="rmsprop", learning_rate=1e-5, batch_size=32, num_steps=100_000,
                      decay_steps=(80_000, 90_000), decay_factor=0.5, halve_every_epochs=None,
                      warmup_steps=0, clip_grad_norm=None)
  assert model_registry.recipe("glow", "nalisnick", 3, "paper") == dict(grey, weight_decay=5e-2)
  assert "num_steps" not in model_registry.recipe("glow", "nalisnick", 1, "cpu")
  # nalisnick_cpu: a budget of its own at cpu (0.3 epoch, resolved below), none at paper.
  assert model_registry.recipe("glow", "nalisnick_cpu", 1, "cpu")["epochs"] == 0.3
  assert "epochs" not in model_registry.recipe("glow", "nalisnick_cpu", 1, "paper")
  from ood_jax.experiments import configs, run as run_mod
  cfg = run_mod.resolve_train_config(configs.get_preset("cpu"), "cv_glow", 0, None, {},
                                     "nalisnick_cpu", 3)
  assert (cfg.epochs, cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps) == (0.3, 1e-3, 5e-2, 200)


def test_presets_and_errors():
  m = make_model("glow", "paper", (28, 28, 1))
  assert (m.levels, m.steps, m.hidden, m.additive) == (2, 16, 200, False)
  m = make_model("cv_glow", "paper", (32, 32, 3))
  assert (m.levels, m.steps, m.hidden, m.additive) == (3, 8, 400, True)
  with pytest.raises(InvalidInputError, match="divisible"):
    make_glow("paper", (28, 28, 3), levels=3)  # 28 -> 14 -> 7 -> cannot squeeze
  with pytest.raises(UnknownNameError):
    make_cv_glow("huge", SHAPE)
  model = make_glow("smoke", SHAPE)
  with pytest.raises(InvalidInputError, match="uint8"):
    model.init({"params": _key(0), "dequant": _key(1)}, np.zeros((2, *SHAPE), np.float32),
               train=False)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("OOD_JAX_SLOW_TESTS") != "1",
                    reason="compiles a training step (~30 s); set OOD_JAX_SLOW_TESTS=1 to run it")
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason=f"FashionMNIST not installed at {FMNIST}"
                    " (apt-get install dataset-fashion-mnist)")
@pytest.mark.parametrize("name", ["glow", "cv_glow"])
def test_training_decreases_loss_on_fashion_mnist(name):
  from ood_jax.data import load
  from ood_jax.train import TrainConfig, train
  x = load("fashion_mnist", "train", n=256).x
  model = make_model(name, "smoke", x.shape[1:])
  config = TrainConfig(batch_size=32, num_steps=12, learning_rate=3e-3, halve_every_epochs=None,
                       warmup_steps=2, clip_grad_norm=100.0, log_every=4)
  result = train(model, x, config, progress=False)
  losses = [h["loss"] for h in result.history]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 50.0, losses
