"""The Flax FID Inception-v3 (``ood_jax.models.fid_inception``) and its ``load_feature_net``.

No parity check with pytorch-fid: neither torch nor pytorch-fid's weights
(``pt_inception-2015-12-05-6726825d.pth``) are available here, so the numbers of a loaded
network are NOT compared with pytorch-fid's. What is checked: shapes and finiteness of the
2048-d features; the torch-name -> Flax mapping by a round trip (random Flax variables
written as a torch-named ``.npz`` with an inverse mapping written here, independently of
the module: HWIO -> OIHW, ``scale/bias/mean/var`` -> ``bn.weight/bias/running_mean/
running_var``) giving identical variables and identical features; the key / shape errors;
the bilinear resize against a NumPy ``align_corners=False`` reference; grey -> RGB.

A user with torch and the weights should check parity: convert the ``.pth`` as the module
docstring says, run pytorch-fid's ``InceptionV3([3]).eval()`` on a few images (loaded as
pytorch-fid loads them, values / 255, ``N x 3 x H x W``) and ``fid_inception.features`` on
the same uint8 arrays; the features should agree to about 1e-4 relative.

The network always resizes to 299 x 299, so a CPU forward takes seconds: the module-scoped
fixture does one forward, the round trip a second (the compilation is shared).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ood_jax.models import fid_inception as FI
from ood_jax.errors import InvalidInputError

_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


def _random_flax_variables(module, seed=0):
  """Random values in the Flax layout (from ``eval_shape``: no slow ``init`` compile): He
  normal kernels, BN scale / bias / mean / var all distinct so a swapped mapping shows."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 299, 299, 3), jnp.uint8))
  rng = np.random.default_rng(seed)
  out = {}
  for coll in ("params", "batch_stats"):
    flat = {}
    for path, s in traverse_util.flatten_dict(dict(shapes[coll])).items():
      leaf = path[-1]
      if leaf == "kernel":
        fan_in = int(np.prod(s.shape[:-1]))
        v = rng.normal(0, np.sqrt(2.0 / fan_in), s.shape)
      elif leaf == "scale":
        v = rng.uniform(0.5, 1.5, s.shape)
      elif leaf == "var":
        v = rng.uniform(0.5, 1.5, s.shape)
      else:  # bias, mean
        v = rng.normal(0, 0.1, s.shape)
      flat[path] = v.astype(np.float32)
    out[coll] = traverse_util.unflatten_dict(flat)
  return out


def _to_torch_names(variables):
  """Inverse mapping, written here independently of the module: torch names, OIHW."""
  state = {}
  for coll in ("params", "batch_stats"):
    for path, v in traverse_util.flatten_dict(variables[coll]).items():
      name = ".".join(path[:-1]) + "." + _TORCH_LEAF[path[-1]]
      v = np.asarray(v)
      state[name] = v.transpose(3, 2, 0, 1) if path[-1] == "kernel" else v
  return state


@pytest.fixture(scope="module")
def net():
  module = FI.FIDInceptionV3()
  variables = _random_flax_variables(module)
  x = np.random.default_rng(1).integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
  return module, variables, x, FI.features(module, variables, x)


def test_state_dict_layout():
  s = FI.expected_state_dict_shapes()
  assert len(s) == 94 * 5 and sum(k.endswith(".conv.weight") for k in s) == 94
  assert s["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert s["Conv2d_4a_3x3.bn.running_mean"] == (192,)
  assert s["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
  assert s["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  assert s["Mixed_6e.branch7x7dbl_2.conv.weight"] == (192, 192, 7, 1)
  assert s["Mixed_7a.branch3x3_2.conv.weight"] == (320, 192, 3, 3)
  assert s["Mixed_7b.branch3x3dbl_1.conv.weight"] == (448, 1280, 1, 1)
  assert s["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert not any(k.startswith(("fc.", "AuxLogits.")) for k in s)
  assert sum(int(np.prod(v)) for v in s.values()) == 21_820_000  # trunk, no fc


def test_features_shape_and_finite(net):
  _, _, x, f = net
  assert f.shape == (2, FI.FEATURE_DIM) and f.dtype == np.float32
  assert np.all(np.isfinite(f)) and np.all(f >= 0)  # mean of ReLU outputs
  assert np.std(f) > 0 and not np.array_equal(f[0], f[1])


def test_round_trip_torch_named_npz(net, tmp_path):
  module, variables, x, f = net
  state = _to_torch_names(variables)
  # what a real state_dict also holds: ignored
  state["fc.weight"] = np.zeros((1008, 2048), np.float32)
  state["fc.bias"] = np.zeros(1008, np.float32)
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0, np.int64)
  path = tmp_path / "pt_inception.npz"
  np.savez(path, **state)
  m2, v2 = FI.load_fid_inception(path)
  assert m2 == module
  a = traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, variables))
  b = traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, v2))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
  loaded = FI.load_feature_net(str(path))
  assert isinstance(loaded, FI.FIDFeatureNet)
  np.testing.assert_array_equal(loaded(x), f)  # second forward; same compilation


def test_key_errors(net, tmp_path):
  _, variables, _, _ = net
  good = _to_torch_names(variables)
  bad = dict(good)
  del bad["Mixed_5b.branch1x1.conv.weight"], bad["Mixed_7c.branch1x1.bn.running_var"]
  bad["Mixed_5b.extra.conv.weight"] = np.zeros((1,), np.float32)
  bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  with pytest.raises(InvalidInputError) as e:
    FI.variables_from_state_dict(bad)
  msg = str(e.value)
  for s in ("2 missing", "Mixed_5b.branch1x1.conv.weight", "Mixed_7c.branch1x1.bn.running_var",
            "1 unexpected", "Mixed_5b.extra.conv.weight", "1 wrongly shaped",
            "Conv2d_1a_3x3.conv.weight (32, 3, 5, 5) (expected (32, 3, 3, 3))"):
    assert s in msg, s
  # torchvision's ImageNet Inception: 1000 classes, AuxLogits
  tv = dict(good, **{"fc.weight": np.zeros((1000, 2048), np.float32),
                     "AuxLogits.conv0.conv.weight": np.zeros((128, 768, 1, 1), np.float32)})
  with pytest.raises(InvalidInputError, match=r"not the FID weights.*AuxLogits"):
    FI.variables_from_state_dict(tv)
  with pytest.raises(InvalidInputError, match="not finite float"):
    FI.variables_from_state_dict(dict(good, **{"Mixed_6a.branch3x3.bn.bias":
                                               np.full(384, np.nan, np.float32)}))
  # through files: wrong npz, not an npz, absent
  p = tmp_path / "other.npz"
  np.savez(p, w=np.zeros(3))
  with pytest.raises(InvalidInputError, match=r"none of the 470 expected.*np.savez"):
    FI.load_fid_inception(p)
  pth = tmp_path / "pt_inception.pth"
  pth.write_bytes(b"\x80\x02not a zip")
  with pytest.raises(InvalidInputError, match="not a readable .npz"):
    FI.load_feature_net(str(pth))
  for missing in (None, str(tmp_path / "absent.npz")):
    with pytest.raises(InvalidInputError, match=r"not bundled.*npz"):
      FI.load_feature_net(missing)


def _torch_bilinear_ref(x, out_h, out_w):
  """NumPy ``F.interpolate(mode='bilinear', align_corners=False)`` on ``H x W``: source
  ``max((i + 0.5) * in / out - 0.5, 0)``, neighbours ``floor`` and ``min(floor + 1, in - 1)``."""
  def axis(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0
  h0, h1, lh = axis(x.shape[0], out_h)
  w0, w1, lw = axis(x.shape[1], out_w)
  rows = (1 - lh)[:, None] * x[h0] + lh[:, None] * x[h1]
  return (1 - lw)[None, :] * rows[:, w0] + lw[None, :] * rows[:, w1]


def test_resize_matches_align_corners_false():
  rng = np.random.default_rng(2)
  for (h, w), size in (((5, 7), 11), ((3, 3), 299), ((13, 17), 5), ((31, 8), 9)):
    x = rng.uniform(0, 1, (2, h, w, 3))
    got = np.asarray(FI.resize_bilinear(jnp.asarray(x, jnp.float32), size))
    assert got.shape == (2, size, size, 3)
    for n in range(2):
      for c in range(3):
        np.testing.assert_allclose(got[n, :, :, c], _torch_bilinear_ref(x[n, :, :, c], size, size),
                                   atol=2e-6, err_msg=f"{h}x{w}->{size}")
  x = rng.uniform(0, 1, (1, 299, 299, 1)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(FI.resize_bilinear(jnp.asarray(x))), x, atol=1e-6)
  # JAX's default (antialias=True) is not torch's when downsampling: why antialias=False
  x = rng.uniform(0, 1, (1, 13, 17, 1)).astype(np.float32)
  aa = np.asarray(jax.image.resize(jnp.asarray(x), (1, 5, 5, 1), "linear"))
  assert np.abs(aa[0, :, :, 0] - _torch_bilinear_ref(x[0, :, :, 0], 5, 5)).max() > 1e-2


def test_avg_pool_excludes_padding():
  x = jnp.ones((1, 4, 4, 1))
  np.testing.assert_allclose(np.asarray(FI._avg_pool_3x3_excl_pad(x)), 1.0)  # corners too


def test_grey_repeats_to_rgb_and_input_errors():
  g = np.random.default_rng(3).integers(0, 256, (2, 5, 6), dtype=np.uint8)
  for a in (g, g[..., None]):
    rgb = FI.as_rgb_uint8(a)
    assert rgb.shape == (2, 5, 6, 3) and rgb.dtype == np.uint8
    for c in range(3):
      np.testing.assert_array_equal(rgb[..., c], g)
  x = np.zeros((1, 4, 4, 3), np.uint8)
  np.testing.assert_array_equal(FI.as_rgb_uint8(x), x)  # RGB passes through
  with pytest.raises(InvalidInputError, match="uint8"):
    FI.as_rgb_uint8(x.astype(np.float32))
  with pytest.raises(InvalidInputError, match="N x H x W x 3"):
    FI.as_rgb_uint8(np.zeros((1, 4, 4, 2), np.uint8))
  with pytest.raises(InvalidInputError, match="N x H x W x 3"):
    FI.as_rgb_uint8(np.zeros((0, 4, 4, 3), np.uint8))
  with pytest.raises(InvalidInputError, match="batch_size"):
    FI.features(FI.FIDInceptionV3(), {}, x, batch_size=0)
