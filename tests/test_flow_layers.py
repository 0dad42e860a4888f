"""Bijector layers of ood_jax.models.flows: one bijection check over every layer class
(invertibility, log-dets vs jacfwd, constancy), masks, layer formulas, intermediates, jit."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import flows
from ood_jax.models.flows import masks
from ood_jax.models.flows.glow import GlowStep

KEY = jax.random.PRNGKey(0)
SHAPE = (2, 4, 4, 2)  # one shape everywhere: eager ops compile once


def _x(shape, seed=1, low=None):
  key = jax.random.PRNGKey(seed)
  if low is not None:  # uniform in [low, 1 - low)
    return jax.random.uniform(key, shape, jnp.float32, low, 1.0 - low)
  return jax.random.normal(key, shape, jnp.float32)


def _perturb(variables, seed=2, scale=0.3):
  """Adds Gaussian noise to every parameter (so zero-initialised layers are non-trivial)."""
  leaves, treedef = jax.tree.flatten(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  return {**variables, "params": jax.tree.unflatten(treedef, noisy)}


def _held(layer, variables, x):
  """``variables`` with the running statistics set to ``x``'s batch statistics (layers built
  with momentum 0: the train-mode update returns exactly those), so the eval-mode map is the
  train-mode map with the statistics held fixed."""
  if "batch_stats" not in variables:
    return variables
  _, state = layer.apply(variables, x, train=True, mutable=["batch_stats"])
  return {**variables, **state}


def _check_bijection(layer, variables, x, *, train=False, nontrivial=True):
  """inverse(forward(x)) == x, inverse logdet == -forward logdet, forward logdet ==
  log|det jacfwd| of each sample's block, and no cross-sample Jacobian terms.

  ``train=True``: the forward (batch statistics) is checked against the eval-mode map with
  those statistics held fixed (``_held``); the inverse and the Jacobian are those of that map
  (the train-mode batch map itself is not a bijection, see the BatchNorm tests).
  """
  y, logdet = layer.apply(variables, x, train=train, method="forward_and_log_det")
  assert logdet.shape == (x.shape[0],) and logdet.dtype == jnp.float32
  assert y.dtype == jnp.float32 and y.size == x.size
  if train:
    variables = _held(layer, variables, x)
    y_held, logdet_held = layer.apply(variables, x, train=False, method="forward_and_log_det")
    np.testing.assert_allclose(y_held, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logdet_held, logdet, rtol=1e-5, atol=1e-4)
  x_back, logdet_back = layer.apply(variables, y, method="inverse_and_log_det")
  assert x_back.shape == x.shape and logdet_back.shape == logdet.shape
  assert logdet_back.dtype == jnp.float32
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(logdet_back, -logdet, rtol=1e-5, atol=1e-4)
  n, d = x.shape[0], x[0].size
  batch_map = lambda flat: layer.apply(variables, flat.reshape(x.shape), train=False)[0].reshape(-1)
  jac = np.asarray(jax.jit(jax.jacfwd(batch_map))(x.reshape(-1))).reshape(n, d, n, d)
  for i in range(n):
    sign, logabsdet = np.linalg.slogdet(jac[i, :, i, :].astype(np.float64))
    assert sign != 0
    np.testing.assert_allclose(logdet[i], logabsdet, rtol=1e-4, atol=2e-3)
    for j in range(n):  # samples do not interact
      if j != i:
        np.testing.assert_array_equal(jac[i, :, j, :], 0.0)
  if nontrivial:
    assert float(jnp.max(jnp.abs(logdet))) > 0.05
    assert float(jnp.max(jnp.abs(y.reshape(-1) - x.reshape(-1)))) > 0.05
  return y, logdet


# ------------------------------------------------------------------ every layer: one check


def _resnet_coupling(**kw):
  net = flows.ResNetSTNet(features=4, width=4, num_blocks=1, momentum=0.0)
  return flows.AffineCoupling(mask="checkerboard", st_net=net, **kw)


def _chain():
  """A chain owned by a tiny wrapper (layers are the owner's modules, as in the models)."""
  return _ChainOwner()


class _ChainOwner(nn.Module):
  """ActNorm -> affine coupling -> squeeze -> 1x1 conv as one ``Chain``."""

  @nn.compact
  def _chain(self):
    return flows.Chain([flows.ActNorm(name="actnorm"),
                        flows.AffineCoupling(mask="checkerboard", hidden=4, name="coupling"),
                        flows.Squeeze(name="squeeze"), flows.InvConv1x1LU(name="invconv")])

  def forward_and_log_det(self, x, train=False):
    return self._chain().forward_and_log_det(x, train)

  def inverse_and_log_det(self, y):
    return self._chain().inverse_and_log_det(y)

  @nn.nowrap
  def constant_log_det(self, train):
    return False  # the affine coupling

  def __call__(self, x, train=False):
    return self.forward_and_log_det(x, train)


class _VectorOwner(nn.Module):
  """``VectorCoupling`` on the flattened ``N x H x W x C`` input (the cases' one shape)."""
  index: int = 0

  @nn.compact
  def _layer(self, d: int):
    return flows.VectorCoupling(dim=d, index=self.index, hidden=8, hidden_layers=1, name="coupling")

  def forward_and_log_det(self, x, train=False):
    y, ld = self._layer(x[0].size).forward_and_log_det(x.reshape(x.shape[0], -1), train)
    return y.reshape(x.shape), ld

  def inverse_and_log_det(self, y):
    x, ld = self._layer(y[0].size).inverse_and_log_det(y.reshape(y.shape[0], -1))
    return x.reshape(y.shape), ld

  @nn.nowrap
  def constant_log_det(self, train):
    return False

  def __call__(self, x, train=False):
    return self.forward_and_log_det(x, train)


# (id, class covered, factory, input lower bound or None (normal), train modes)
LAYER_CASES = [
    ("actnorm", flows.ActNorm, flows.ActNorm, None, (False,)),
    ("batchnorm", flows.BatchNormFlow, lambda: flows.BatchNormFlow(momentum=0.0), None,
     (False, True)),
    ("affine_checkerboard", flows.Coupling,
     lambda: flows.AffineCoupling(mask="checkerboard", index=1, hidden=4), None, (False,)),
    ("affine_channel", flows.Coupling,
     lambda: flows.AffineCoupling(mask="channel", index=1, hidden=4), None, (False,)),
    ("affine_resnet_bn", flows.Coupling, _resnet_coupling, None, (False, True)),
    ("additive_cycle", flows.Coupling,
     lambda: flows.AdditiveCoupling(mask="cycle", index=2, hidden=4), None, (False,)),
    ("additive_channel", flows.Coupling,
     lambda: flows.AdditiveCoupling(mask="channel", index=0, hidden=4), None, (False,)),
    ("invconv", flows.InvConv1x1, flows.InvConv1x1, None, (False,)),
    ("invconv_lu", flows.InvConv1x1LU, flows.InvConv1x1LU, None, (False,)),
    ("squeeze", flows.Squeeze, flows.Squeeze, None, (False,)),
    ("logit", flows.LogitTransform, flows.LogitTransform, 0.0, (False,)),
    ("chain", flows.Chain, _chain, None, (False,)),
    ("glow_step", GlowStep, lambda: GlowStep(hidden=4), None, (False,)),
    ("glow_step_additive", GlowStep, lambda: GlowStep(hidden=4, additive=True, lu=False), None,
     (False,)),
    ("vector_coupling", flows.VectorCoupling, lambda: _VectorOwner(index=1), None, (False,)),
]
CASES = [pytest.param(make, low, train, id=f"{name}-{'train' if train else 'eval'}")
         for name, _, make, low, modes in LAYER_CASES for train in modes]


def _layer_setup(make, low, seed=3):
  layer = make()
  x = _x(SHAPE, low=low)
  variables = layer.init(KEY, x, train=False)
  if "params" in variables:
    variables = _perturb(variables)
  if "batch_stats" in variables:  # non-trivial running statistics
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
    variables = {**variables, "batch_stats": jax.tree.map(
        lambda s: jnp.exp(0.3 * jax.random.normal(next(keys), s.shape)) if s.ndim else s,
        variables["batch_stats"])}
  return layer, variables, x


@pytest.mark.parametrize("make,low,train", CASES)
def test_every_layer_is_a_bijection(make, low, train):
  layer, variables, x = _layer_setup(make, low)
  nontrivial = not isinstance(layer, flows.Squeeze) and not (
      isinstance(layer, flows.Coupling) and layer.additive)
  _check_bijection(layer, variables, x, train=train, nontrivial=nontrivial)


@pytest.mark.parametrize("make,low,train", CASES)
def test_constant_log_det_matches_numbers(make, low, train):
  """Declared constant iff the log-det is the same for two different inputs (and samples)."""
  layer, variables, x = _layer_setup(make, low)
  x2 = _x(SHAPE, seed=7, low=low)
  if low is None:
    x2 = 1.7 * x2 + 0.3
  fwd = lambda h: layer.apply(variables, h, train=train, method="forward_and_log_det")[1]
  ld1, ld2 = np.asarray(fwd(x)), np.asarray(fwd(x2))
  lds = np.concatenate([ld1, ld2])
  if layer.constant_log_det(train):
    np.testing.assert_allclose(lds, lds[0], rtol=1e-6, atol=1e-6)
  else:
    assert np.max(np.abs(lds - lds[0])) > 1e-3


def _exported_layer_classes():
  return {obj for obj in vars(flows).values()
          if inspect.isclass(obj) and issubclass(obj, nn.Module)
          and hasattr(obj, "forward_and_log_det") and obj is not flows.Bijector}


def test_cases_cover_every_exported_layer():
  """A new bijector layer cannot be added untested: the classes the cases cover are the
  exported ones (plus GlowStep), and every public flow class with the methods is covered."""
  covered = {cls for _, cls, *_ in LAYER_CASES}
  assert covered - {GlowStep} == _exported_layer_classes()
  public = {cls for cls in _flow_module_classes()
            if hasattr(cls, "forward_and_log_det") and not cls.__name__.startswith("_")
            and cls is not flows.Bijector}
  assert public <= covered, public - covered
  assert all(issubclass(cls, flows.Bijector) for cls in covered)     # one contract, one base
  assert {flows.ActNorm, flows.BatchNormFlow, flows.Chain, flows.Coupling, flows.InvConv1x1,
          flows.InvConv1x1LU, flows.LogitTransform, flows.Squeeze} <= _exported_layer_classes()


def _flow_module_classes():
  """Every linen class defined in a module of ``ood_jax.models.flows``."""
  found = set()
  for info in pkgutil.iter_modules(flows.__path__):
    mod = importlib.import_module(f"{flows.__name__}.{info.name}")
    found |= {obj for obj in vars(mod).values()
              if inspect.isclass(obj) and issubclass(obj, nn.Module)
              and obj.__module__ == mod.__name__}
  return found


def test_no_reverse_parameter_anywhere():
  classes = _flow_module_classes()
  assert {flows.Glow, flows.RealNVP, GlowStep, flows.Chain} <= classes
  for cls in classes:
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
      if name.startswith("__") and name != "__call__":
        continue
      params = inspect.signature(fn).parameters
      assert "reverse" not in params, f"{cls.__name__}.{name}"
      if name == "inverse_and_log_det":
        assert "train" not in params, f"{cls.__name__}.{name} runs in eval mode"


def test_chain_composes_and_reports_constancy():
  layer, variables, x = _layer_setup(_chain, None)
  y, logdet = layer.apply(variables, x)
  p = variables["params"]
  h, want = x, 0.0
  for name, sub in (("actnorm", flows.ActNorm()), ("coupling", flows.AffineCoupling(
      mask="checkerboard", hidden=4)), ("squeeze", flows.Squeeze()),
                    ("invconv", flows.InvConv1x1LU())):
    v = {"params": p[name]} if name in p else {}
    if name == "invconv":
      v["flow_constants"] = variables["flow_constants"]["invconv"]
    h, ld = sub.apply(v, h, train=False)
    want = want + ld
  np.testing.assert_allclose(y, h, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(logdet, want, rtol=1e-6)
  assert set(variables["params"]) == {"actnorm", "coupling", "invconv"}  # no "chain" level
  const = flows.Chain([flows.ActNorm(parent=None), flows.Squeeze(parent=None)], parent=None)
  assert const.constant_log_det(True)
  bn = flows.Chain([flows.ActNorm(parent=None), flows.BatchNormFlow(parent=None)], parent=None)
  assert bn.constant_log_det(False) and not bn.constant_log_det(True)
  affine = flows.Chain([flows.ActNorm(parent=None), flows.AffineCoupling(parent=None)],
                       parent=None)
  assert not affine.constant_log_det(False)


def test_coupling_sows_intermediates():
  x = _x(SHAPE)
  for layer, s_shape in ((flows.AffineCoupling(mask="checkerboard", hidden=4), SHAPE),
                         (flows.AdditiveCoupling(mask="channel", hidden=4), (2, 4, 4, 1))):
    variables = _perturb(layer.init(KEY, x, train=False))
    assert "intermediates" not in variables
    (y, logdet), state = layer.apply(variables, x, mutable=["intermediates"])
    sown = state["intermediates"]
    assert set(sown) == {"x_in", "s", "t", "y_out"}
    assert [sown[k][0].shape for k in ("x_in", "s", "t", "y_out")] == [
        SHAPE, s_shape, s_shape, SHAPE]
    np.testing.assert_array_equal(sown["x_in"][0], x)
    np.testing.assert_array_equal(sown["y_out"][0], y)
    np.testing.assert_allclose(jnp.sum(sown["s"][0], axis=(1, 2, 3)), logdet, rtol=1e-6)
    y2, logdet2 = layer.apply(variables, x)  # not mutable: sow is a no-op
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(logdet2, logdet)


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("kind", masks.MASK_KINDS)
@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_mask_pairs_are_disjoint_binary(kind, index):
  cond, out = masks.mask_pair(kind, (4, 4, 2), index)
  assert cond.shape == out.shape == (4, 4, 2)
  assert set(np.unique(np.asarray(cond))) <= {0.0, 1.0}
  assert float(jnp.sum(cond * out)) == 0.0
  assert float(jnp.sum(out)) > 0 and float(jnp.sum(cond)) > 0
  if kind != "cycle":
    np.testing.assert_array_equal(cond + out, np.ones((4, 4, 2)))
  else:
    assert float(jnp.sum(cond + out)) == 16.0  # two quadrants of 4 x 4 x 2 / 4 each


def test_binary_mask_layouts():
  cb0 = masks.checkerboard((2, 2, 1), 0)[..., 0]
  np.testing.assert_array_equal(cb0, [[1, 0], [0, 1]])
  np.testing.assert_array_equal(masks.checkerboard((2, 2, 1), 1)[..., 0], 1 - cb0)
  ch = masks.channel_wise((1, 1, 4), True)[0, 0]
  np.testing.assert_array_equal(ch, [1, 1, 0, 0])
  np.testing.assert_array_equal(masks.channel_wise((1, 1, 4), False)[0, 0], [0, 0, 1, 1])
  np.testing.assert_array_equal(masks.horizontal((2, 2, 1), True)[..., 0], [[1, 1], [0, 0]])
  np.testing.assert_array_equal(masks.vertical((2, 2, 1), True)[..., 0], [[1, 0], [1, 0]])
  np.testing.assert_array_equal(masks.quadrant((2, 2, 1), 0)[..., 0], [[1, 0], [0, 0]])
  np.testing.assert_array_equal(masks.quadrant((2, 2, 1), 1)[..., 0], [[0, 1], [0, 0]])
  np.testing.assert_array_equal(masks.quadrant((2, 2, 1), 2)[..., 0], [[0, 0], [0, 1]])
  np.testing.assert_array_equal(masks.quadrant((2, 2, 1), 3)[..., 0], [[0, 0], [1, 0]])


def test_unknown_mask_and_bad_shapes():
  with pytest.raises(UnknownNameError, match="checkerboard"):
    masks.mask_pair("diagonal", (4, 4, 2), 0)
  with pytest.raises(InvalidInputError):
    masks.mask_pair("channel", (4, 4, 1), 0)
  with pytest.raises(InvalidInputError):
    masks.mask_pair("cycle", (3, 4, 1), 0)


# ------------------------------------------------------------------ coupling


def test_coupling_starts_as_identity():
  x = _x(SHAPE)
  layer = flows.AffineCoupling(mask="checkerboard", index=0)
  variables = layer.init(KEY, x, train=False)
  y, logdet = layer.apply(variables, x, train=False)
  np.testing.assert_allclose(y, x, atol=1e-6)
  np.testing.assert_allclose(logdet, 0.0, atol=1e-6)


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("kind,index", [("checkerboard", 0), ("checkerboard", 1), ("channel", 0),
                                        ("channel", 1), ("horizontal", 0), ("vertical", 1),
                                        ("cycle", 0), ("cycle", 3)])
def test_coupling_bijection_and_logdet(kind, index, additive):
  x = _x(SHAPE)
  layer = flows.Coupling(mask=kind, index=index, additive=additive, hidden=4)
  variables = _perturb(layer.init(KEY, x, train=False))
  y, logdet = _check_bijection(layer, variables, x, nontrivial=not additive)
  if additive:
    np.testing.assert_array_equal(logdet, 0.0)
    assert float(jnp.max(jnp.abs(y - x))) > 0.05
  cond, out = masks.mask_pair(kind, (4, 4, 2), index)
  np.testing.assert_array_equal((y - x) * (1 - out), 0.0)  # only `out` entries change


def _sample0_jacobian(fn, x):
  """d fn(x)[0] / d x[0] (D x D) from the Jacobian of the whole flattened batch map."""
  n, d = x.shape[0], x[0].size
  jac = jax.jit(jax.jacfwd(lambda f: fn(f.reshape(x.shape)).reshape(-1)))(x.reshape(-1))
  return np.asarray(jac).reshape(n, d, n, d)[0, :, 0, :]


@pytest.mark.parametrize("i", [0, 1, 2, 3])
def test_cycle_coupling_dependencies(i):
  x = _x(SHAPE)
  d = x[0].size
  layer = flows.AffineCoupling(mask="cycle", index=i, hidden=4)
  variables = _perturb(layer.init(KEY, x, train=False))
  y, _ = layer.apply(variables, x, train=False)
  q_in = masks.quadrant(SHAPE[1:], i).reshape(-1)
  q_out = masks.quadrant(SHAPE[1:], i + 1).reshape(-1)
  changed = np.asarray(jnp.abs(y - x).reshape(x.shape[0], -1) > 1e-6)
  np.testing.assert_array_equal(changed, np.broadcast_to(q_out.astype(bool), changed.shape))
  jac = _sample0_jacobian(lambda h: layer.apply(variables, h, train=False)[0], x)
  rows_out = jac[q_out == 1]
  allowed = (q_in + q_out) == 1
  np.testing.assert_array_equal(rows_out[:, ~allowed], 0.0)  # nothing from other quadrants
  assert np.abs(rows_out[:, q_in == 1]).max() > 1e-3          # really conditioned on quadrant i
  np.testing.assert_array_equal(jac[q_out == 0], np.eye(d)[q_out == 0])  # rest pass through


def test_cycle_needs_four_couplings_to_return():
  x = _x(SHAPE)
  d = x[0].size
  layers = [flows.AffineCoupling(mask="cycle", index=i, hidden=4) for i in range(4)]
  params = [_perturb(l.init(KEY, x, train=False), seed=10 + i) for i, l in enumerate(layers)]

  def chain(h, k):
    for layer, v in zip(layers[:k], params[:k]):
      h, _ = layer.apply(v, h, train=False)
    return h

  q0 = masks.quadrant(SHAPE[1:], 0).reshape(-1) == 1
  jac3 = _sample0_jacobian(lambda h: chain(h, 3), x)
  np.testing.assert_array_equal(jac3[q0], np.eye(d)[q0])  # quadrant 0 untouched by 3
  jac4 = _sample0_jacobian(lambda h: chain(h, 4), x)
  assert (np.abs(jac4[q0]).max(axis=0) > 1e-6).all()  # after 4 it depends on every quadrant


def test_coupling_with_given_st_net():
  x = _x(SHAPE)
  net = flows.SimpleSTNet(features=4, hidden=4)
  layer = flows.AffineCoupling(mask="vertical", index=0, st_net=net)
  variables = _perturb(layer.init(KEY, x, train=False))
  assert "st_net" in variables["params"]
  _check_bijection(layer, variables, x)


# ------------------------------------------------------------------ actnorm


def test_actnorm_data_dependent_init():
  x = 3.0 + 2.5 * _x(SHAPE)
  layer = flows.ActNorm()
  variables = layer.init(KEY, x, train=True)
  y, logdet = layer.apply(variables, x, train=True)
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, atol=1e-4)
  scale = variables["params"]["scale"]
  np.testing.assert_allclose(logdet, 16 * jnp.sum(jnp.log(jnp.abs(scale))), rtol=1e-5)
  # Later batches do not re-initialise.
  y2, _ = layer.apply(variables, x + 1.0, train=True)
  assert float(jnp.abs(jnp.mean(y2))) > 0.1


def test_actnorm_bijection_and_logdet():
  x = _x(SHAPE)
  layer = flows.ActNorm()
  variables = _perturb(layer.init(KEY, 2.0 * x + 1.0, train=False))
  _check_bijection(layer, variables, x)


# ------------------------------------------------------------------ invertible 1x1 conv


def test_invconv_plain():
  x = _x(SHAPE)
  layer = flows.InvConv1x1()
  variables = layer.init(KEY, x, train=False)
  w0 = variables["params"]["kernel"]
  np.testing.assert_allclose(w0 @ w0.T, np.eye(2), atol=1e-5)  # orthogonal init
  variables = _perturb(variables)
  _, logdet = _check_bijection(layer, variables, x)
  w = variables["params"]["kernel"]
  np.testing.assert_allclose(logdet, 16 * jnp.linalg.slogdet(w)[1], rtol=1e-5)


def test_invconv_lu():
  x = _x(SHAPE)
  layer = flows.InvConv1x1LU()
  variables = layer.init(KEY, x, train=False)
  assert set(variables["params"]) == {"lower", "upper", "log_s"}
  perm = np.asarray(variables["flow_constants"]["perm"])
  np.testing.assert_array_equal(np.sort(perm.sum(0)), np.ones(2))  # a permutation matrix
  w0, _ = layer.apply(variables, method="weight")
  np.testing.assert_allclose(w0 @ w0.T, np.eye(2), atol=1e-5)  # orthogonal init
  variables = _perturb(variables)
  _, logdet = _check_bijection(layer, variables, x)
  w, log_s = layer.apply(variables, method="weight")
  np.testing.assert_allclose(logdet, 16 * jnp.linalg.slogdet(w)[1], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet, 16 * jnp.sum(log_s), rtol=1e-6)


# ------------------------------------------------------------------ squeeze


def test_squeeze():
  x = _x(SHAPE)
  layer = flows.Squeeze()
  variables = layer.init(KEY, x, train=False)
  y, logdet = _check_bijection(layer, variables, x, nontrivial=False)
  assert y.shape == (2, 2, 2, 8)
  np.testing.assert_array_equal(logdet, 0.0)
  # Output channel (2 di + dj) C + c of pixel (i, j) is input (2i + di, 2j + dj, c).
  np.testing.assert_array_equal(y[0, 1, 0, (2 * 1 + 0) * 2 + 1], x[0, 3, 0, 1])
  np.testing.assert_array_equal(y[1, 0, 1, (2 * 0 + 1) * 2 + 0], x[1, 0, 3, 0])
  with pytest.raises(InvalidInputError):
    flows.squeeze2x2(jnp.zeros((1, 3, 4, 1)))


# ------------------------------------------------------------------ batchnorm flow


def _bn_variables(layer, x, seed=3):
  variables = _perturb(layer.init(KEY, x, train=False))
  c = x.shape[-1]
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  stats = {"mean": jax.random.normal(k1, (c,)), "var": jnp.exp(jax.random.normal(k2, (c,)))}
  return {**variables, "batch_stats": stats}


def test_batchnorm_eval_bijection_and_logdet():
  x = _x(SHAPE)
  layer = flows.BatchNormFlow()
  variables = _bn_variables(layer, x)
  _, logdet = _check_bijection(layer, variables, x, train=False)
  p, s = variables["params"], variables["batch_stats"]
  want = 16 * jnp.sum(p["log_gamma"] - 0.5 * jnp.log(s["var"] + 1e-5))
  np.testing.assert_allclose(logdet, want, rtol=1e-5)


def test_batchnorm_train_logdet_and_batch_dependence():
  x = 2.0 * _x(SHAPE) + 1.0
  layer = flows.BatchNormFlow()
  variables = _bn_variables(layer, x)
  y, logdet = layer.apply(variables, x, train=True)
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.var(x, axis=(0, 1, 2))
  want = 16 * jnp.sum(variables["params"]["log_gamma"] - 0.5 * jnp.log(var + 1e-5))
  np.testing.assert_allclose(logdet, want, rtol=1e-5)
  # Same as the eval-mode map with the batch statistics held fixed (exact per-sample Jacobian).
  held = {**variables, "batch_stats": {"mean": mean, "var": var}}
  y_held, logdet_held = _check_bijection(layer, held, x, train=False)
  np.testing.assert_allclose(y, y_held, atol=1e-5)
  np.testing.assert_allclose(logdet, logdet_held, rtol=1e-5)
  # Changing another batch member changes sample 0's output and log-det.
  x2 = x.at[1].multiply(3.0)
  y2, logdet2 = layer.apply(variables, x2, train=True)
  assert float(jnp.max(jnp.abs(y2[0] - y[0]))) > 1e-2
  assert float(jnp.abs(logdet2[0] - logdet[0])) > 1e-2


def test_batchnorm_train_batch_map_is_singular():
  x = _x(SHAPE)
  layer = flows.BatchNormFlow()
  variables = _bn_variables(layer, x)
  jac = jax.jacfwd(lambda f: layer.apply(variables, f.reshape(x.shape), train=True)[0].reshape(-1))(
      x.reshape(-1))
  svals = np.linalg.svd(np.asarray(jac), compute_uv=False)
  assert svals.min() < 1e-4 * svals.max()  # output mean is always beta: not a bijection


def test_batchnorm_running_stats_only_when_mutable():
  x = 2.0 * _x(SHAPE) + 1.0
  layer = flows.BatchNormFlow(momentum=0.9)
  variables = layer.init(KEY, x, train=True)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)  # init does not update
  out = layer.apply(variables, x, train=True)
  assert len(out) == 2 and out[1].shape == (2,)  # (y, logdet), no state without mutable
  (_, _), state = layer.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * jnp.mean(x, axis=(0, 1, 2)),
                             rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"],
                             0.9 + 0.1 * jnp.var(x, axis=(0, 1, 2)), rtol=1e-5)
  (_, _), state_eval = layer.apply(variables, x, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(state_eval["batch_stats"]["mean"], 0.0)
  # The inverse always uses the running statistics (and never updates them).
  (x_back, _), state_inv = layer.apply(variables, x, method="inverse_and_log_det",
                                       mutable=["batch_stats"])
  np.testing.assert_allclose(x_back, x * jnp.exp(-variables["params"]["log_gamma"]) *
                             jnp.sqrt(1.0 + 1e-5), rtol=1e-5)
  np.testing.assert_array_equal(state_inv["batch_stats"]["mean"], 0.0)


# ------------------------------------------------------------------ logit


def test_logit_pre_transform():
  x = _x(SHAPE, low=0.0)
  layer = flows.LogitTransform()
  variables = layer.init(KEY, x, train=False)
  y, logdet = _check_bijection(layer, variables, x)
  np.testing.assert_allclose(y, jax.scipy.special.logit(0.05 + 0.9 * x), rtol=1e-5, atol=1e-5)
  p = 0.05 + 0.9 * x
  want = jnp.sum(jnp.log(0.9) - jnp.log(p) - jnp.log(1 - p), axis=(1, 2, 3))
  np.testing.assert_allclose(logdet, want, rtol=1e-5)


# ------------------------------------------------------------------ jit


@pytest.mark.parametrize("make", [
    lambda: flows.AffineCoupling(mask="checkerboard", hidden=4),
    lambda: flows.AdditiveCoupling(mask="cycle", index=2, hidden=4),
    flows.ActNorm, flows.InvConv1x1, flows.InvConv1x1LU, flows.Squeeze,
    flows.BatchNormFlow, flows.LogitTransform,
], ids=["affine", "additive", "actnorm", "invconv", "invconv_lu", "squeeze", "batchnorm",
        "logit"])
def test_jit_matches_eager(make):
  layer = make()
  x = _x(SHAPE, low=0.0)
  variables = _perturb(layer.init(KEY, x, train=False)) if "params" in layer.init(
      KEY, x, train=False) else layer.init(KEY, x, train=False)
  fwd = jax.jit(lambda v, x: layer.apply(v, x, train=False))
  rev = jax.jit(lambda v, y: layer.apply(v, y, method="inverse_and_log_det"))
  y, logdet = fwd(variables, x)
  y_eager, logdet_eager = layer.apply(variables, x, train=False)
  np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logdet, logdet_eager, rtol=1e-5, atol=1e-4)
  x_back, _ = rev(variables, y)
  np.testing.assert_allclose(x_back, x, atol=1e-4)
