"""RealNVP: whole-model inverse, log-det vs jacfwd (both BatchNorm modes), BatchNorm
semantics, likelihood parts, coupling intermediates, samples, masks, presets, the model spec
and a short FashionMNIST run.

Speed (XLA:CPU): one tiny 8 x 8 x 1 model with ``rbg`` keys; every repeated call is one of a
few jitted functions that take the variables as an argument (compiled once each).
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
from ood_jax.models.flows.flow_model import gaussian_log_density
from ood_jax.models.flows.realnvp import SPEC, RealNVP, make_realnvp

SHAPE = (8, 8, 1)
FMNIST = "/usr/share/datasets/fashion-mnist/"


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _images(n, shape=SHAPE, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _init(model, x, seed=0, scale=0.05):
  """Variables drawn with numpy (no compile): every parameter ``N(0, scale^2)`` around its
  neutral value (kernels and biases 0, scales 1, log-scales 0), running stats 0 / 1."""
  shapes = jax.eval_shape(lambda: model.init(
      {"params": _key(seed), "dequant": _key(seed + 1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if path[0].key == "batch_stats":
      return jnp.full(s.shape, 1.0 if name == "var" else 0.0, s.dtype)
    base = 1.0 if name == "scale" else 0.0
    return jnp.asarray(base + scale * rng.normal(size=s.shape), s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def _setup():
  """A smoke RealNVP with st-net BatchNorm, momentum 0 (the running stats a train-mode
  apply returns are that batch's statistics), perturbed params and non-trivial stats."""
  model = make_realnvp("smoke", SHAPE, st_batchnorm=True, bn_momentum=0.0)
  x = _images(2)
  variables = _init(model, x)
  _, state = _train_apply(model)(variables, _images(4, seed=9))
  return model, {**variables, **state}, x


@functools.lru_cache(maxsize=None)
def _train_apply(model):
  """Jitted training objective in train mode with ``mutable=['batch_stats']``."""
  return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                          rngs={"dequant": _key(5)}))


def _unit(x, seed=3):
  u = np.random.default_rng(seed).uniform(size=x.shape).astype(np.float32)
  return jnp.asarray((x.astype(np.float32) + u) / 256.0)


@functools.lru_cache(maxsize=None)
def _encode_fns(model):
  """Jitted ``encode(v, y, train)``, ``decode(v, eps)`` and ``jac(v, y)`` (eval-mode Jacobian of
  y -> concatenated latents, ``N x D x N x D``)."""
  def encode(v, y, train):
    return model.apply(v, y, train, method="encode_unit")

  def flat(v, y):
    eps = model.apply(v, y, False, method="encode_unit")[0]
    return jnp.concatenate([e.reshape(y.shape[0], -1) for e in eps], axis=1)

  def jac(v, y):
    n, d = y.shape[0], y[0].size
    j = jax.jacfwd(lambda f: flat(v, f.reshape(y.shape)).reshape(-1))(y.reshape(-1))
    return j.reshape(n, d, n, d)

  decode = lambda v, eps: model.apply(v, eps, method="decode_unit")
  return (jax.jit(encode, static_argnums=2), jax.jit(decode), jax.jit(jac))


def _check_logdet(model, variables, y, logdet):
  """Per-sample ``log|det jacfwd|`` of the eval-mode map equals ``logdet``; no cross-talk."""
  jac = np.asarray(_encode_fns(model)[2](variables, y), np.float64)
  for i in range(y.shape[0]):
    sign, logabs = np.linalg.slogdet(jac[i, :, i, :])
    assert sign != 0
    np.testing.assert_allclose(logdet[i], logabs, rtol=1e-4, atol=2e-2)
    for j in range(y.shape[0]):
      if j != i:
        np.testing.assert_array_equal(jac[i, :, j, :], 0.0)


def test_inverse_and_logdet_eval_mode():
  model, variables, x = _setup()
  encode, decode, _ = _encode_fns(model)
  y = _unit(x)
  eps, log_pz, logdet = encode(variables, y, False)
  assert [e.shape[1:] for e in eps] == model.latent_shapes() == [(4, 4, 2), (4, 4, 2)]
  np.testing.assert_allclose(decode(variables, eps), y, atol=2e-5)
  np.testing.assert_allclose(log_pz, sum(gaussian_log_density(e) for e in eps), rtol=1e-6)
  assert float(jnp.std(logdet)) > 1e-3  # affine couplings: the volume depends on the input
  _check_logdet(model, variables, y, logdet)


def test_logdet_train_mode_with_batch_stats_held():
  model, variables, x = _setup()
  encode = _encode_fns(model)[0]
  y = _unit(x)
  eps_train, _, logdet_train = encode(variables, y, True)
  # momentum 0: the running statistics a train-mode pass returns are its batch's own.
  stats = jax.jit(lambda v, y: model.apply(v, y, True, mutable=["batch_stats"],
                                           method="encode_unit")[1])(variables, y)
  held = {**variables, **stats}
  eps_held, _, logdet_held = encode(held, y, False)
  for a, b in zip(eps_train, eps_held):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet_train, logdet_held, rtol=1e-5, atol=1e-3)
  assert float(jnp.max(jnp.abs(logdet_train - encode(variables, y, False)[2]))) > 1e-2
  _check_logdet(model, held, y, logdet_train)


@functools.lru_cache(maxsize=None)
def _log_prob_fn(model):
  """Jitted ``log_prob(v, x, key, train)``, no ``mutable``: as a scorer calls it."""
  return jax.jit(lambda v, x, key, train: model.apply(v, x, train=train, method="log_prob",
                                                      rngs={"sample": key}), static_argnums=3)


def test_batchnorm_semantics():
  model, variables, x = _setup()
  lp = _log_prob_fn(model)
  key = _key(7)
  a, b = _images(4, seed=11), _images(4, seed=12)
  b[0] = a[0]  # same first image, different batch mates
  np.testing.assert_allclose(lp(variables, a, key, False)[0], lp(variables, b, key, False)[0],
                             rtol=1e-6)                    # eval: batch mates do not matter
  assert abs(float(lp(variables, a, key, True)[0] - lp(variables, b, key, True)[0])) > 1e-2
  # Train-mode scoring without `mutable` returns log-likelihoods and no state; a train pass
  # with mutable=['batch_stats'] returns updated running statistics.
  assert lp(variables, a, key, True).shape == (4,)
  _, state = _train_apply(model)(variables, a)
  changed = jax.tree.map(lambda s, t: float(jnp.max(jnp.abs(s - t))),
                         state["batch_stats"], variables["batch_stats"])
  assert max(jax.tree.leaves(changed)) > 1e-2


def test_parts_sum_to_log_prob_and_objective():
  model, variables, x = _setup()
  key = _key(8)
  f = jax.jit(lambda v, x: (
      model.apply(v, x, method="log_prob_parts", rngs={"sample": key}),
      model.apply(v, x, method="log_prob", rngs={"sample": key}),
      model.apply(v, x, train=False, rngs={"dequant": key}),
      model.apply(v, x, method="log_prob", k=3, rngs={"sample": key})))
  (log_pz, logdet), lp, loss, lp3 = f(variables, x)
  np.testing.assert_allclose(log_pz + logdet, lp, rtol=1e-6)
  np.testing.assert_allclose(-loss, lp, rtol=1e-6)
  # logdet counts the 1/256 scaling: the flow's own log-det minus D log 256.
  _, _, flow_ld = _encode_fns(model)[0](variables, _unit(x), False)
  assert float(jnp.mean(logdet)) < float(jnp.mean(flow_ld)) - 0.9 * 64 * LOG_256
  assert lp3.shape == (2,) and np.all(np.isfinite(lp3))
  assert float(jnp.max(jnp.abs(lp3 - lp))) < 5.0  # same bound, other draws


def test_samples_and_temperature():
  model, variables, _ = _setup()
  f = jax.jit(lambda v, t: model.apply(v, _key(3), 64, t, method="sample"))
  cold, hot = np.asarray(f(variables, 0.1)), np.asarray(f(variables, 1.0))
  assert cold.shape == hot.shape == (64, *SHAPE) and cold.dtype == np.uint8
  assert cold.astype(float).std() < 0.5 * hot.astype(float).std()


@pytest.mark.parametrize("shape,kw", [((28, 28, 1), dict(mask="cycle")),
                                      ((6, 10, 3), dict(mask="horizontal", st_batchnorm=True))])
def test_inverse_other_shapes_and_masks(shape, kw):
  model = make_realnvp("smoke", shape, **kw)
  x = _images(2, shape)
  variables = _init(model, x)
  y = _unit(x)
  f = jax.jit(lambda v, y: model.apply(v, model.apply(v, y, False, method="encode_unit")[0],
                                       method="decode_unit"))
  np.testing.assert_allclose(f(variables, y), y, atol=5e-5)


def test_bottleneck_and_presets():
  shapes = lambda m: jax.eval_shape(lambda: m.init(
      {"params": _key(0), "dequant": _key(1)}, np.zeros((2, 28, 28, 1), np.uint8), train=False))
  p = shapes(make_realnvp("smoke", (28, 28, 1), bottleneck=10))["params"]
  net = p["scales_0"]["coupling0"]["st_net"]
  assert net["bottleneck_in"]["kernel"].shape == (28 * 28 * 8, 10)
  count = lambda m: sum(a.size for a in jax.tree.leaves(shapes(m)["params"]))
  assert 14.5e6 < count(make_realnvp("kirichenko", (28, 28, 1))) < 14.9e6  # paper: 14.7 M
  m = make_model("realnvp", "paper", (28, 28, 1))
  assert (m.num_scales, m.num_blocks, m.channels) == (2, 4, 32)
  m = make_model("realnvp", "paper", (32, 32, 3))
  assert (m.num_scales, m.num_blocks, m.channels) == (2, 8, 64)


def test_coupling_intermediates_and_volume():
  """``log_prob_parts`` with ``mutable=['intermediates']`` returns every coupling's input,
  s, t and output; without it nothing changes. RealNVP's volume is not constant."""
  model, variables, x = _setup()
  key = _key(8)
  f = jax.jit(lambda v, x: (
      model.apply(v, x, train=False, method="log_prob_parts", mutable=["intermediates"],
                  rngs={"sample": key}),
      model.apply(v, x, train=False, method="log_prob_parts", rngs={"sample": key})))
  ((log_pz, logdet), state), (log_pz0, logdet0) = f(variables, x)
  np.testing.assert_array_equal(log_pz, log_pz0)
  np.testing.assert_array_equal(logdet, logdet0)
  sown = state["intermediates"]
  assert set(sown) == {"scales_0", "scales_1"}
  want = {("scales_0", "coupling0"): ((2, 8, 8, 1), (2, 8, 8, 1)),       # checkerboard
          ("scales_0", "channel_coupling2"): ((2, 4, 4, 4), (2, 4, 4, 2)),  # channel halves
          ("scales_1", "coupling3"): ((2, 4, 4, 2), (2, 4, 4, 2))}
  for (scale, coupling), (shape, st_shape) in want.items():
    got = sown[scale][coupling]
    assert set(got) == {"x_in", "s", "t", "y_out"}
    assert [got[k][0].shape for k in ("x_in", "s", "t", "y_out")] == [
        shape, st_shape, st_shape, shape]
    assert float(jnp.max(jnp.abs(got["s"][0]))) > 0.0
  assert len(sown["scales_0"]) == 6 and len(sown["scales_1"]) == 4  # couplings only
  assert model.constant_volume is False
  assert abs(float(logdet[0] - logdet[1])) > 1e-3


def test_spec():
  assert SPEC.name == "realnvp" and SPEC.module is RealNVP
  assert set(SPEC.presets) == {"smoke", "cpu", "paper", "kirichenko", "kirichenko_cpu"}
  assert dict(SPEC.train_defaults) == dict(warmup_steps=200, clip_grad_norm=100.0)
  assert SPEC.budgets == {"cpu": {"epochs": 1}}
  assert SPEC.rose_layers is None and SPEC.has_batchnorm and SPEC.about
  for preset in SPEC.presets:
    for shape in ((28, 28, 1), (32, 32, 3)):
      generic = SPEC.module(image_shape=shape, **{**SPEC.defaults,
                                                  **SPEC.presets[preset][shape[-1]]})
      assert generic == make_realnvp(preset, shape)


def test_errors():
  model, variables, x = _setup()
  with pytest.raises(InvalidInputError, match="uint8"):
    model.apply(variables, x.astype(np.float32), train=False, rngs={"dequant": _key(0)})
  with pytest.raises(InvalidInputError, match="8 x 8 x 1"):
    model.apply(variables, _images(2, (8, 8, 3)), train=False, rngs={"dequant": _key(0)})
  with pytest.raises(InvalidInputError, match="channel"):
    make_realnvp("smoke", (8, 8, 1), mask="channel")  # one channel cannot be halved
  with pytest.raises(InvalidInputError, match="divisible"):
    make_realnvp("smoke", (7, 8, 1))
  with pytest.raises(UnknownNameError):
    make_realnvp("huge", (8, 8, 1))
  with pytest.raises(UnknownNameError):
    make_realnvp("smoke", (8, 8, 1), mask="diagonal")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("OOD_JAX_SLOW_TESTS") != "1",
                    reason="compiles a training step (~30 s); set OOD_JAX_SLOW_TESTS=1 to run it")
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason=f"FashionMNIST not installed at {FMNIST}"
                    " (apt-get install dataset-fashion-mnist)")
def test_training_decreases_loss_on_fashion_mnist():
  from ood_jax.data import load
  from ood_jax.train import TrainConfig, train
  x = load("fashion_mnist", "train", n=256).x
  model = make_model("realnvp", "smoke", x.shape[1:])
  config = TrainConfig(batch_size=32, num_steps=12, learning_rate=3e-3, halve_every_epochs=None,
                       warmup_steps=2, clip_grad_norm=100.0, log_every=4)
  result = train(model, x, config, progress=False)
  losses = [h["loss"] for h in result.history]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 50.0, losses
