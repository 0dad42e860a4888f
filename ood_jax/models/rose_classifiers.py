"""The classifiers of ROSE App. D (Fig. 6): a basic 4-conv CNN, VGG-11/13/16/19, ResNet-18.

ROSE (Choi et al.) App. D trains six classifiers on FashionMNIST with cross-entropy and scores
each layer's per-sample gradient of the cross-entropy at the *predicted* label (DIAG Fisher),
to see which depth separates ID from OOD best. The paper states only: "Basic CNN consists of
four convolutional layers", "for all networks, we use one fully connected layer". Everything
else here is ours (stated per class below):

* Input: uint8 images ``N x H x W x C`` of ``image_shape``, scaled to ``[0, 1]`` by ``x / 255``
  (``data.to_unit``; the first BatchNorm normalises). Labels: integers ``0 .. num_classes-1``.
* Every convolution is ``nn.Conv`` without bias followed by the repo's ``BatchNorm``
  (``flows/stnets.BatchNorm``; mode = the ``train`` argument, running averages in
  ``batch_stats``) and ReLU; max-pools are 2 x 2, stride 2, ``SAME`` padding (ceil: 7 -> 4, so
  the five VGG pools fit 28 x 28 images: 28 -> 14 -> 7 -> 4 -> 2 -> 1); the head is a global
  average pool then the one ``nn.Dense(num_classes)`` (``fc``, with bias) = the logits.
  Kernels start ``U(+-1/sqrt(fan_in))`` (:func:`fan_in_uniform`), biases 0.
* ``BasicCNN`` (AlexNet-like): ``conv1`` 5x5 -> pool, ``conv2`` 5x5 -> pool, ``conv3`` 3x3,
  ``conv4`` 3x3 -> pool; ``widths`` channels (default 32, 64, 128, 128).
* ``VGG`` (Simonyan & Zisserman configurations A/B/D/E with BatchNorm, the CIFAR-style variant
  with one classifier layer): ``depth`` in {11, 13, 16, 19}; stage widths ``width x (1, 2, 4,
  8, 8)`` (``width=64``: the paper VGG's 64 ... 512); convs ``conv01 .. conv16``.
* ``ResNet18`` (He et al., CIFAR-style: a 3x3 stride-1 stem, no stem pool): ``stem`` then four
  stages of two basic blocks (``layer{s}_{b}/conv1``, ``conv2``; a 1x1 ``shortcut`` conv + BN
  where the shape changes) of widths ``width x (1, 2, 4, 8)``, strides 1, 2, 2, 2.

Methods (all through ``model.apply``): ``__call__({'x', 'y'}, train) -> per-sample
cross-entropy, nats [N]`` (the training objective; in train mode pass
``mutable=['batch_stats']``), ``logits(x, train=False) -> N x num_classes``,
``predicted_ce(x) -> [N]``: the cross-entropy at the predicted label ``argmax logits`` in eval
mode, nats (ROSE's per-sample objective; the argmax carries no gradient). Attribute
``image_shape``.

ROSE needs the objective from the model spec: :func:`register` adds the specs (``basic_cnn``,
``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``, ``resnet18``; their ``objective`` is
``predicted_ce``) to the model registry. It is not done at import: these are not generative
models (no ``log_prob`` / ``sample``), so they stay out of the registry's model list unless a
caller asks for them (``unregister`` removes them again). :func:`layer_paths` lists the
``nn.Conv`` / ``nn.Dense`` parameter paths in the order the forward pass calls them (the layer
index of Fig. 6); every one is a plain module called once, so ROSE's per-sample-gradient fast
path handles them all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ood_jax.data.pixels import to_unit
from ood_jax.errors import InvalidInputError
from ood_jax.models.classifier import check_labels
from ood_jax.models.flows.stnets import BatchNorm
from ood_jax.models.inputs import check_images
from ood_jax.models.spec import ModelSpec, Objective

VGG_CONFIGS = {   # channels as multiples of ``width``; "M" = 2x2 max-pool
    11: (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    13: (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    16: (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),
    19: (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"),
}


_BLOCK = 1 << 16   # uniforms per random draw in ``fan_in_uniform``


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _scaled(u: jax.Array, shape: tuple, dtype) -> jax.Array:
  n, fan_in = math.prod(shape), math.prod(shape[:-1])
  return ((2.0 * u[:n] - 1.0) * (fan_in ** -0.5)).reshape(shape).astype(dtype)


def fan_in_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Kernel initialiser ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (torch's default scale for
  conv / linear kernels; ``fan_in`` = all axes but the last). Drawn in blocks of a fixed
  size, so an eager ``model.init`` compiles one random draw for the whole network instead of
  one per parameter shape (seconds each on a CPU)."""
  n = math.prod(shape)
  parts = [jax.random.uniform(jax.random.fold_in(key, i), (_BLOCK,)) for i in range(-(-n // _BLOCK))]
  u = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
  return _scaled(u, tuple(int(s) for s in shape), jnp.dtype(dtype))


def _pool(h: jax.Array) -> jax.Array:
  return nn.max_pool(h, (2, 2), (2, 2), padding="SAME")


def _positive_int(what: str, field: str, v, low: int = 1) -> None:
  if isinstance(v, bool) or not isinstance(v, int) or v < low:
    raise InvalidInputError(f"{what}: {field} must be an integer >= {low}, got {v!r}.")


def _check_common(m) -> None:
  """The shared field checks (a function, not a method: flax wraps methods, and method
  interceptors cannot see an unbound module's path during ``__post_init__``)."""
  what = type(m).__name__
  shape = tuple(m.image_shape)
  if (len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape)
      or min(shape) < 1 or shape[2] not in (1, 3)):
    raise InvalidInputError(
        f"{what}: image_shape must be (H, W, C) with C in {{1, 3}}, got {m.image_shape}.")
  _positive_int(what, "num_classes", m.num_classes, 2)
  if not 0.0 <= float(m.bn_momentum) < 1.0:
    raise InvalidInputError(f"{what}: bn_momentum must be in [0, 1), got {m.bn_momentum!r}.")


class _Classifier(nn.Module):
  """Shared input checks, head and methods; subclasses define ``_features(h, train)``
  (images in ``[0, 1]`` -> pooled features ``N x F``)."""
  image_shape: tuple[int, int, int] = (28, 28, 1)
  num_classes: int = 10
  bn_momentum: float = 0.9

  def _conv_bn(self, h, features: int, kernel: int, name: str, train: bool, stride: int = 1,
               bn_name: str | None = None):
    h = nn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=False,
                kernel_init=fan_in_uniform, name=name)(h)
    return BatchNorm(momentum=self.bn_momentum, name=bn_name or name.replace("conv", "bn"))(h, train)

  def _features(self, h: jax.Array, train: bool) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def _logits_unit(self, h: jax.Array, train: bool) -> jax.Array:
    f = jnp.mean(self._features(h, train), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=fan_in_uniform, name="fc")(f)

  def logits(self, x, train: bool = False) -> jax.Array:
    """Class logits ``N x num_classes`` of uint8 images."""
    x = check_images(x, self.image_shape, type(self).__name__)
    return self._logits_unit(to_unit(x), train)

  def predicted_ce(self, x) -> jax.Array:
    """Cross-entropy (nats, ``[N]``) at the predicted label ``argmax logits``, eval mode."""
    logits = self.logits(x, train=False)
    y = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)

  def __call__(self, batch, train: bool = False) -> jax.Array:
    """Per-sample cross-entropy (nats, ``[N]``) of ``{'x': uint8 images, 'y': labels}``."""
    what = type(self).__name__
    if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
      got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
      raise InvalidInputError(
          f"{what}: expected a batch {{'x': uint8 images, 'y': integer labels}}, got {got}"
          " (ROSE's objective is predicted_ce: call rose_classifiers.register() first).")
    x = check_images(batch["x"], self.image_shape, what)
    y = check_labels(batch["y"], x.shape[0], what)
    return optax.softmax_cross_entropy_with_integer_labels(self._logits_unit(to_unit(x), train), y)


class BasicCNN(_Classifier):
  """Four conv layers (5x5, 5x5, 3x3, 3x3; pools after the 1st, 2nd and 4th) and one fc."""
  widths: tuple[int, int, int, int] = (32, 64, 128, 128)

  def __post_init__(self):
    _check_common(self)
    w = tuple(self.widths)
    if len(w) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in w):
      raise InvalidInputError(f"BasicCNN: widths must be 4 positive integers, got {self.widths!r}.")
    super().__post_init__()

  def _features(self, h, train):
    for i, (width, kernel) in enumerate(zip(self.widths, (5, 5, 3, 3)), start=1):
      h = nn.relu(self._conv_bn(h, width, kernel, f"conv{i}", train))
      if i != 3:
        h = _pool(h)
    return h


class VGG(_Classifier):
  """VGG-``depth`` with BatchNorm, ``depth - 3`` 3x3 convs in five stages, one fc."""
  depth: int = 11
  width: int = 64

  def __post_init__(self):
    _check_common(self)
    if self.depth not in VGG_CONFIGS or isinstance(self.depth, bool):
      raise InvalidInputError(f"VGG: depth must be one of {sorted(VGG_CONFIGS)}, got {self.depth!r}.")
    _positive_int("VGG", "width", self.width)
    super().__post_init__()

  def _features(self, h, train):
    i = 0
    for item in VGG_CONFIGS[self.depth]:
      if item == "M":
        h = _pool(h)
      else:
        i += 1
        h = nn.relu(self._conv_bn(h, item * self.width, 3, f"conv{i:02d}", train))
    return h


class BasicBlock(nn.Module):
  """ResNet basic block: ``ReLU(BN(conv2(ReLU(BN(conv1(x))))) + shortcut(x))``; the shortcut
  is ``BN(shortcut(x))`` (1x1 conv, stride ``stride``) where the shape changes, else ``x``."""
  width: int
  stride: int = 1
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    def conv_bn(h, features, kernel, stride, name, bn):
      h = nn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=False,
                  kernel_init=fan_in_uniform, name=name)(h)
      return BatchNorm(momentum=self.bn_momentum, name=bn)(h, train)
    h = nn.relu(conv_bn(x, self.width, 3, self.stride, "conv1", "bn1"))
    h = conv_bn(h, self.width, 3, 1, "conv2", "bn2")
    if self.stride != 1 or x.shape[-1] != self.width:
      x = conv_bn(x, self.width, 1, self.stride, "shortcut", "shortcut_bn")
    return nn.relu(h + x)


class ResNet18(_Classifier):
  """CIFAR-style ResNet-18: 3x3 stem, 4 stages x 2 basic blocks, one fc (21 layers with the
  three 1x1 shortcut convs)."""
  width: int = 64

  def __post_init__(self):
    _check_common(self)
    _positive_int("ResNet18", "width", self.width)
    super().__post_init__()

  def _features(self, h, train):
    h = nn.relu(self._conv_bn(h, self.width, 3, "stem", train, bn_name="stem_bn"))
    for s, (mult, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2)), start=1):
      for b in range(2):
        h = BasicBlock(mult * self.width, stride if b == 0 else 1, self.bn_momentum,
                       name=f"layer{s}_{b}")(h, train)
    return h


CLASSES = (BasicCNN, VGG, ResNet18)


def layer_paths(model: nn.Module) -> list[str]:
  """Parameter paths (``'conv1'``, ``'layer2_0/shortcut'``) of the ``nn.Conv`` / ``nn.Dense``
  modules of ``model``, in the order its forward pass calls them (shapes only, no compute)."""
  order: list[str] = []

  def icpt(next_fun, args, kwargs, ctx):
    if ctx.method_name == "__call__" and isinstance(ctx.module, (nn.Conv, nn.Dense)):
      p = "/".join(ctx.module.path)
      if p not in order:
        order.append(p)
    return next_fun(*args, **kwargs)

  def run():
    x = jnp.zeros((1, *model.image_shape), jnp.uint8)
    with nn.intercept_methods(icpt):
      return model.init(jax.random.key(0), x, method=model.logits)
  jax.eval_shape(run)
  return order


# ----------------------------------------------------------------------------- specs


def predicted_label_objective(model: nn.Module) -> Objective:
  """ROSE's per-sample objective: ``predicted_ce`` (no randomness; the key is unused)."""
  return Objective(noise=lambda rng, n: rng,
                   batched=lambda v, x, key: model.apply(v, x, method=model.predicted_ce),
                   per_image=False)


def _presets(**by_preset) -> dict:
  return {p: {1: dict(s), 3: dict(s)} for p, s in by_preset.items()}


# Model presets: ``cpu`` = the widths the 2-core cpu experiment preset trains (see
# ``experiments/rose_layerwise.py``); ``paper`` = the standard widths (VGG / ResNet: 64).
SPECS = {
    "basic_cnn": ModelSpec(
        "basic_cnn", BasicCNN, _presets(smoke={"widths": (4, 8, 8, 8)},
                                        cpu={"widths": (32, 64, 128, 128)},
                                        paper={"widths": (64, 128, 256, 256)}),
        objective=predicted_label_objective, rose_fisher="diag",
        about="ROSE App. D basic CNN classifier (4 convs + fc)"),
    **{f"vgg{d}": ModelSpec(
        f"vgg{d}", VGG, _presets(smoke={"width": 4}, cpu={"width": 16}, paper={"width": 64}),
        defaults={"depth": d}, objective=predicted_label_objective, rose_fisher="diag",
        about=f"ROSE App. D VGG-{d} classifier (BatchNorm, one fc)") for d in sorted(VGG_CONFIGS)},
    "resnet18": ModelSpec(
        "resnet18", ResNet18, _presets(smoke={"width": 4}, cpu={"width": 16}, paper={"width": 64}),
        objective=predicted_label_objective, rose_fisher="diag",
        about="ROSE App. D ResNet-18 classifier (CIFAR-style)"),
}
ARCHS = tuple(SPECS)


def register() -> None:
  """Adds ``SPECS`` to the model registry (idempotent), so ``spec_of`` gives ROSE their
  predicted-label objective and ``make_model('vgg16', 'cpu', (28, 28, 1))`` builds them."""
  from ood_jax.models.registry import register_model
  for name, s in SPECS.items():
    register_model(name, s)


def unregister() -> None:
  """Removes ``SPECS`` from the model registry again (tests)."""
  from ood_jax.models import registry
  for name in SPECS:
    if name in registry.known_models():
      registry._MODELS.unregister(name)
