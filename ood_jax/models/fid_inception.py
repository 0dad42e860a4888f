"""pytorch-fid's FID Inception-v3 in Flax, up to the 2048-d pool features (eval mode only).

What this is: the architecture of pytorch-fid's ``fid_inception_v3()`` (torchvision's
``Inception3`` with ``num_classes=1008``, ``aux_logits=False`` and the FID patches), written
afresh in Flax linen, NHWC, with parameters named so that the torch ``state_dict`` of
``pt_inception-2015-12-05-6726825d.pth`` maps onto them one to one. **No weights are
bundled**: the network is pytorch-fid's FID Inception only when :func:`load_fid_inception`
is given those weights; with any other variables (e.g. a random ``init``) it is merely an
Inception-shaped network, and features from it do not give FIDs comparable with published
ones.

Forward (``FIDInceptionV3.__call__``, pytorch-fid's ``InceptionV3([3])`` with its defaults
``resize_input=True``, ``normalize_input=True``):

* input ``N x H x W x 3`` with values in ``[0, 255]`` (uint8 through :func:`features`),
  divided by 255 (torchvision's ``ToTensor``);
* resized to ``299 x 299`` bilinearly exactly as ``F.interpolate(..., mode='bilinear',
  align_corners=False)`` (no antialiasing): source coordinate ``(i + 0.5) * in / out - 0.5``,
  clamped to the image, linear between the two neighbours. This is ``jax.image.resize(...,
  'linear', antialias=False)``; the ``antialias=False`` matters when *downsampling* (inputs
  larger than 299), where JAX's default ``antialias=True`` widens the triangle kernel and no
  longer matches torch (when upsampling both agree). Weights are applied at ``HIGHEST``
  precision;
* scaled to ``[-1, 1]`` by ``2 x - 1``;
* ``BasicConv2d`` = conv without bias, BatchNorm with the running statistics (eps 1e-3),
  ReLU; the stem ``Conv2d_1a_3x3 .. Conv2d_4a_3x3`` with two 3x3/2 max pools; ``Mixed_5b-d``
  (FID InceptionA), ``Mixed_6a`` (InceptionB), ``Mixed_6b-e`` (FID InceptionC), ``Mixed_7a``
  (InceptionD), ``Mixed_7b`` (FID InceptionE_1), ``Mixed_7c`` (FID InceptionE_2); the FID
  patches: every 3x3/1 average pool in A, C and E_1 excludes the zero padding from its count
  (``count_include_pad=False``, as TensorFlow), and E_2's pool branch is a 3x3/1 *max* pool;
* global average pool -> ``N x 2048`` (pytorch-fid's pool3 features). ``fc`` is not built.

Grey images (``N x H x W`` or ``N x H x W x 1``) are repeated to three equal channels, which
is what pytorch-fid's ``Image.open(p).convert('RGB')`` does with an ``L``-mode image.

Weights: pytorch-fid's ``.pth`` is a torch pickle, which ood-jax does not read; convert it
once with torch::

    python -c "import numpy as np, torch; np.savez('pt_inception.npz', **{k: v.numpy() \
for k, v in torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu').items()})"

and pass the ``.npz`` to :func:`load_fid_inception` (conv weights ``OIHW`` are transposed to
Flax's ``HWIO``; ``bn.weight/bias/running_mean/running_var`` become ``scale/bias`` params and
``mean/var`` batch statistics; ``fc.*`` and ``*.num_batches_tracked`` are ignored). An
``fc.weight`` with other than 1008 rows (torchvision's ImageNet Inception has 1000) or any
``AuxLogits.*`` key is refused: those are not the FID weights. The ``.npz`` carries no
checksum of the original ``.pth``; that the file really holds those weights is the user's
responsibility.

Verified here (tests/test_fid_inception.py): output shape and finiteness, the torch-name ->
Flax mapping by a round trip through a torch-named ``.npz`` (inverse mapping written
independently in the test), the key / shape errors, the resize against a NumPy
``align_corners=False`` reference, the grey-to-RGB repeat. **Not verified: numerical parity
with pytorch-fid**, since neither torch nor the weights are available here. A user with both
should run pytorch-fid's ``InceptionV3([3])`` (eval mode) on a few images loaded as
pytorch-fid does and compare with :func:`features` on the same uint8 arrays; float32
agreement to about 1e-4 relative is expected (summation order differs), and the FIDs of two
image sets computed both ways should agree to the quoted precision.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ood_jax.errors import InvalidInputError

RESIZE_TO = 299
FEATURE_DIM = 2048
FC_CLASSES = 1008  # pytorch-fid's FID Inception has 1008 logits; torchvision's has 1000
CONVERT_HINT = (
    "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth once with torch: "
    "np.savez(path, **{k: v.numpy() for k, v in torch.load(pth, map_location='cpu').items()})")

_HIGHEST = jax.lax.Precision.HIGHEST


def resize_bilinear(x: jax.Array, size: int = RESIZE_TO) -> jax.Array:
  """``N x H x W x C`` float -> ``N x size x size x C`` as torch's ``F.interpolate(...,
  mode='bilinear', align_corners=False)`` (no antialias), up- or downsampling."""
  n, _, _, c = x.shape
  return jax.image.resize(x, (n, size, size, c), method="linear", antialias=False,
                          precision=_HIGHEST)


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_excl_pad(x):
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


class _Block(nn.Module):
  precision: Any = _HIGHEST

  def conv(self, name, features, kernel=(1, 1), stride=1, padding=(0, 0)):
    return BasicConv2d(features, kernel, stride, padding, self.precision, name=name)


class FIDInceptionA(_Block):
  """Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool (pad excluded)-1x1."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 64)(x)
    b5 = self.conv("branch5x5_1", 48)(x)
    b5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(b5)
    b3 = self.conv("branch3x3dbl_1", 64)(x)
    b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3)
    b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(b3)
    bp = self.conv("branch_pool", self.pool_features)(_avg_pool_3x3_excl_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a: 3x3/2 | 1x1-3x3-3x3/2 | max pool 3x3/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3", 384, (3, 3), stride=2)(x)
    bd = self.conv("branch3x3dbl_1", 64)(x)
    bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(bd)
    bd = self.conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, bd, bp], axis=-1)


class FIDInceptionC(_Block):
  """Mixed_6b-e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool (pad excluded)-1x1."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192)(x)
    b7 = self.conv("branch7x7_1", c7)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7)(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
    bp = self.conv("branch_pool", 192)(_avg_pool_3x3_excl_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool 3x3/2."""

  @nn.compact
  def __call__(self, x):
    b3 = self.conv("branch3x3_1", 192)(x)
    b3 = self.conv("branch3x3_2", 320, (3, 3), stride=2)(b3)
    b7 = self.conv("branch7x7x3_1", 192)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, b7, bp], axis=-1)


class FIDInceptionE(_Block):
  """Mixed_7b (``pool='avg'``, FID E_1: pad excluded) and Mixed_7c (``pool='max'``, FID E_2):
  1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool 3x3/1-1x1."""
  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    b1 = self.conv("branch1x1", 320)(x)
    b3 = self.conv("branch3x3_1", 384)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448)(x)
    bd = self.conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(bd)
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)],
                         axis=-1)
    if self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_excl_pad(x)
    bp = self.conv("branch_pool", 192)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's FID Inception-v3 up to the pool features: ``N x H x W x 3`` values in
  ``[0, 255]`` -> float32 ``N x 2048`` (see the module docstring). Eval mode only."""
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise InvalidInputError(f"FIDInceptionV3: expected N x H x W x 3 images, got shape "
                              f"{tuple(x.shape)}.")
    p = self.precision
    x = x.astype(jnp.float32) / 255.0
    x = resize_bilinear(x, RESIZE_TO)
    x = 2.0 * x - 1.0
    x = BasicConv2d(32, (3, 3), 2, precision=p, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = BasicConv2d(80, (1, 1), precision=p, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = FIDInceptionA(precision=p, pool_features=32, name="Mixed_5b")(x)
    x = FIDInceptionA(precision=p, pool_features=64, name="Mixed_5c")(x)
    x = FIDInceptionA(precision=p, pool_features=64, name="Mixed_5d")(x)
    x = InceptionB(precision=p, name="Mixed_6a")(x)
    x = FIDInceptionC(precision=p, channels_7x7=128, name="Mixed_6b")(x)
    x = FIDInceptionC(precision=p, channels_7x7=160, name="Mixed_6c")(x)
    x = FIDInceptionC(precision=p, channels_7x7=160, name="Mixed_6d")(x)
    x = FIDInceptionC(precision=p, channels_7x7=192, name="Mixed_6e")(x)
    x = InceptionD(precision=p, name="Mixed_7a")(x)
    x = FIDInceptionE(precision=p, pool="avg", name="Mixed_7b")(x)
    x = FIDInceptionE(precision=p, pool="max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


# ---------------------------------------------------------------- torch state_dict names

# Flax leaf (collection, leaf name) <-> torch suffix, under "<module path>.conv" / ".bn".
_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
           ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
  return ".".join(path[:-1] + (_LEAVES[(collection, path[-1])],))


def _flax_to_torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf == "kernel":  # HWIO -> OIHW
    h, w, i, o = shape
    return (o, i, h, w)
  return tuple(shape)


@functools.lru_cache(maxsize=4)
def _variable_layout(module: FIDInceptionV3):
  """``{torch name: (collection, flax path, torch shape)}`` for every variable of ``module``
  (shapes only: ``jax.eval_shape``, no compute)."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, RESIZE_TO, RESIZE_TO, 3), jnp.uint8))
  layout = {}
  for collection in ("params", "batch_stats"):
    for path, s in traverse_util.flatten_dict(dict(shapes[collection])).items():
      layout[_torch_name(collection, path)] = (collection, path,
                                               _flax_to_torch_shape(path[-1], s.shape))
  return layout


def expected_state_dict_shapes(module: FIDInceptionV3 | None = None) -> dict[str, tuple]:
  """The torch ``state_dict`` names and shapes :func:`load_fid_inception` requires
  (``fc.*`` and ``*.num_batches_tracked`` are optional and ignored)."""
  return {k: v[2] for k, v in _variable_layout(module or FIDInceptionV3()).items()}


def _ignored(name: str) -> bool:
  return name.startswith("fc.") or name.endswith(".num_batches_tracked")


def _listing(names, limit: int = 40) -> str:
  names = sorted(names)
  more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def variables_from_state_dict(state: dict, module: FIDInceptionV3 | None = None) -> dict:
  """Flax ``{'params', 'batch_stats'}`` from a torch-named ``{name: array}`` mapping (the
  ``state_dict`` of pytorch-fid's FID Inception as numpy arrays). Raises one
  ``InvalidInputError`` listing every missing, unexpected, wrongly shaped or non-float key."""
  module = module or FIDInceptionV3()
  layout = _variable_layout(module)
  present = set(state)
  missing = set(layout) - present
  unexpected = {k for k in present - set(layout) if not _ignored(k)}
  bad_shape, bad_value = [], []
  for k in sorted(present & set(layout)):
    a = np.asarray(state[k])
    if tuple(a.shape) != layout[k][2]:
      bad_shape.append(f"{k} {tuple(a.shape)} (expected {layout[k][2]})")
    elif not np.issubdtype(a.dtype, np.floating):
      bad_value.append(f"{k} (dtype {a.dtype})")
    elif not np.all(np.isfinite(a)):
      bad_value.append(f"{k} (NaN/inf)")
  problems = []
  if "fc.weight" in present and np.shape(state["fc.weight"])[:1] != (FC_CLASSES,):
    problems.append(f"fc.weight has shape {tuple(np.shape(state['fc.weight']))}, pytorch-fid's "
                    f"FID Inception has ({FC_CLASSES}, 2048): these are not the FID weights "
                    "(torchvision's ImageNet Inception-v3 has 1000 classes)")
  if missing == set(layout):
    problems.append(f"none of the {len(layout)} expected pytorch-fid state_dict names is "
                    f"present (keys found: {_listing(present, 10) or 'none'}); {CONVERT_HINT}")
  else:
    if missing:
      problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
      problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
  if bad_shape:
    problems.append(f"{len(bad_shape)} wrongly shaped: {_listing(bad_shape)}")
  if bad_value:
    problems.append(f"{len(bad_value)} not finite float: {_listing(bad_value)}")
  if problems:
    raise InvalidInputError("FID Inception weights do not match pytorch-fid's "
                            "fid_inception_v3() state_dict: " + "; ".join(problems) + ".")
  flat = {"params": {}, "batch_stats": {}}
  for k, (collection, path, _) in layout.items():
    a = np.asarray(state[k], np.float32)
    flat[collection][path] = a.transpose(2, 3, 1, 0) if path[-1] == "kernel" else a
  return {c: traverse_util.unflatten_dict(v) for c, v in flat.items()}


def load_fid_inception(path) -> tuple[FIDInceptionV3, dict]:
  """``(module, variables)`` from a ``.npz`` of pytorch-fid's FID Inception ``state_dict``
  (keys = torch names such as ``Conv2d_1a_3x3.conv.weight``; see the module docstring for
  the one-line conversion). The result is pytorch-fid's FID network only if the file holds
  ``pt_inception-2015-12-05-6726825d.pth``'s weights; ood-jax cannot check that."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise InvalidInputError(f"load_fid_inception: no file {path!r}; the FID Inception "
                            f"weights are not bundled with ood-jax; {CONVERT_HINT}.")
  try:
    with np.load(path, allow_pickle=False) as z:
      state = {k: z[k] for k in z.files}
  except Exception as e:  # pylint: disable=broad-except
    raise InvalidInputError(f"load_fid_inception: {path!r} is not a readable .npz of numpy "
                            f"arrays ({type(e).__name__}: {e}); a torch .pth cannot be read "
                            f"directly: {CONVERT_HINT}.") from e
  module = FIDInceptionV3()
  try:
    variables = variables_from_state_dict(state, module)
  except InvalidInputError as e:
    raise InvalidInputError(f"load_fid_inception({path!r}): {e}") from None
  return module, variables


# ---------------------------------------------------------------- features

def as_rgb_uint8(x, what: str = "features") -> np.ndarray:
  """uint8 ``N x H x W x 3``; grey ``N x H x W`` / ``N x H x W x 1`` repeated to 3 channels."""
  a = np.asarray(x)
  if a.dtype != np.uint8:
    raise InvalidInputError(f"{what}: expected uint8 images (values 0..255), got dtype "
                            f"{a.dtype}.")
  if a.ndim == 3:
    a = a[..., None]
  if a.ndim != 4 or a.shape[-1] not in (1, 3) or 0 in a.shape:
    raise InvalidInputError(f"{what}: expected N x H x W x 3 (or grey N x H x W [x 1]) "
                            f"images, got shape {np.shape(x)}.")
  return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


@functools.partial(jax.jit, static_argnums=0)
def _forward(module, variables, x):
  return module.apply(variables, x)


def features(module: FIDInceptionV3, variables, x_uint8, batch_size: int = 50) -> np.ndarray:
  """float32 ``N x 2048`` pool features of uint8 images ``N x H x W x 3`` (grey repeated to
  RGB), ``batch_size`` images per forward (the last batch is padded, then cut, so one
  compilation serves all; every image is processed independently in eval mode)."""
  x = as_rgb_uint8(x_uint8)
  if int(batch_size) < 1:
    raise InvalidInputError(f"features: batch_size must be >= 1, got {batch_size}.")
  n = x.shape[0]
  bs = min(int(batch_size), n)
  out = []
  for i in range(0, n, bs):
    chunk = x[i:i + bs]
    m = chunk.shape[0]
    if m < bs:
      chunk = np.concatenate([chunk, np.zeros((bs - m, *chunk.shape[1:]), np.uint8)])
    out.append(np.asarray(_forward(module, variables, jnp.asarray(chunk)))[:m])
  return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FIDFeatureNet:
  """A loaded FID feature network: ``net(x_uint8) -> float32 N x 2048``. It is pytorch-fid's
  FID Inception only when ``path`` holds that network's converted weights."""
  module: FIDInceptionV3
  variables: Any
  path: str
  batch_size: int = 50

  @classmethod
  def load(cls, path, batch_size: int = 50) -> "FIDFeatureNet":
    module, variables = load_fid_inception(path)
    return cls(module, variables, os.fspath(path), batch_size)

  def __call__(self, x_uint8, batch_size: int | None = None) -> np.ndarray:
    return features(self.module, self.variables, x_uint8, batch_size or self.batch_size)


def load_feature_net(path: str | None = None, batch_size: int = 50):
  """The FID Inception-v3 feature network, loaded from a user-supplied weight file.

  Published FIDs use pytorch-fid's / TTUR's Inception-v3 (``pt_inception-2015-12-05``)
  pool3 features. ood-jax has that architecture (``FIDInceptionV3``)
  but not its weights, and does not substitute another network under the FID name.

  Args:
    path: a ``.npz`` of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` state_dict,
      converted once with torch: ``np.savez(path, **{k: v.numpy() for k, v in
      torch.load(pth, map_location='cpu').items()})``.
    batch_size: images per forward.

  Returns an ``FIDFeatureNet``: ``net(x_uint8) -> float32 N x 2048``
  (uint8 ``N x H x W x 3``, grey repeated to RGB, resized to 299 as pytorch-fid). It is
  pytorch-fid's FID Inception only when ``path`` holds those weights (the ``.npz`` carries
  no checksum of the original); its numerical parity with pytorch-fid is not verified in
  ood-jax (no torch, no weights here).

  Raises ``InvalidInputError`` when ``path`` is None or no such file (the weights are not
  bundled), when the file is not a readable ``.npz``, or when its keys / shapes do not match
  pytorch-fid's state_dict (one message listing them).
  """
  if path is None or not os.path.isfile(os.fspath(path)):
    raise InvalidInputError(
        "ood_jax.models.fid_inception.load_feature_net: the FID Inception-v3 weights are not bundled with "
        f"ood-jax (asked for {path!r}, no such file); pass the path of pytorch-fid's "
        "Inception weights converted to .npz: np.savez(path, **{k: v.numpy() for k, v in "
        "torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu').items()}); "
        "or compute the 2048-d pool features elsewhere and pass them to "
        "ood_jax.fid.fid(features_a, features_b).")
  return FIDFeatureNet.load(path, batch_size=batch_size)
