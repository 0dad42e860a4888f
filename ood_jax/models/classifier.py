"""A small CNN classifier whose penultimate features stand in for pretrained embeddings.

Kirichenko et al. (App. N) train flows on ImageNet-pretrained EfficientNet features; those
weights cannot be had here, so ood-jax trains this classifier on the labelled ID training
set and uses its penultimate features instead.

Conventions:

* Input: uint8 images ``N x H x W x C`` of ``image_shape``, scaled to ``[0, 1]`` by
  ``x / 255`` (``data.to_unit``; no per-channel standardisation: the first BatchNorm
  normalises). Labels: integers in ``0 .. num_classes - 1`` (their range is not checked
  inside ``jit``; check them before training).
* Body: ``len(widths)`` stages of ``convs_per_stage`` x ``(conv3x3(width, no bias) ->
  BatchNorm -> SiLU)``, a 2x2 max-pool after every stage but the last; head: ``conv1x1
  (feature_dim) -> BatchNorm -> SiLU -> global average pool`` = the features ``N x
  feature_dim``; then ``Dense(num_classes)`` = the logits. The head mirrors EfficientNet's
  (1x1 conv, BN, swish, average pool before the classifier), whose pooled features the paper
  used: smooth activations averaged over positions give features without point masses at 0
  (ReLU features would have them, and a continuous density on them is degenerate).
* BatchNorm mode is the ``train`` argument (the repo's ``BatchNorm``: running averages in
  ``batch_stats``, updated only when the caller passes ``mutable=['batch_stats']``).
* ``augment=True``: in ``__call__`` with ``train=True`` only, each image is flipped
  left-right with probability 1/2 and shifted by up to ``shift`` pixels in each direction
  (zero padding), from the ``'dropout'`` rng stream (the training loop provides it).

Methods: ``__call__({'x', 'y'}, train) -> per-sample cross-entropy, nats [N]`` (the
training objective), ``logits(x, train=False) -> N x num_classes``, ``features(x,
train=False) -> N x feature_dim``. Not in the model registry: it is not a generative model
(no ``log_prob`` / ``sample``) and its objective takes labelled batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ood_jax.data.pixels import to_unit
from ood_jax.errors import InvalidInputError
from ood_jax.models.flows.stnets import BatchNorm
from ood_jax.models.inputs import check_images


def flip_and_shift(x: jax.Array, key: jax.Array, shift: int) -> jax.Array:
  """Random left-right flips (p = 1/2) and translations by up to ``shift`` pixels (zero
  padding) of float images ``N x H x W x C``; one draw per image."""
  n, h, w, _ = x.shape
  kf, ks = jax.random.split(key)
  flip = jax.random.bernoulli(kf, 0.5, (n,))
  x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
  if shift <= 0:
    return x
  padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  offsets = jax.random.randint(ks, (n, 2), 0, 2 * shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def check_labels(y, n: int, what: str = "Classifier") -> jax.Array:
  """``y`` as an int32 jax array ``[n]``, else one ``InvalidInputError`` (trace time)."""
  y = jnp.asarray(y)
  if not (jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == jnp.bool_):
    raise InvalidInputError(f"{what}: labels must be integers, got dtype {y.dtype}.")
  if y.shape != (n,):
    raise InvalidInputError(f"{what}: expected {n} labels (shape ({n},)), got shape {tuple(y.shape)}.")
  return y.astype(jnp.int32)


class Classifier(nn.Module):
  """Small CNN classifier (see the module docstring for every attribute)."""
  image_shape: tuple[int, int, int] = (32, 32, 3)
  num_classes: int = 10
  widths: tuple[int, ...] = (32, 64, 128)
  convs_per_stage: int = 2
  feature_dim: int = 128
  augment: bool = False
  shift: int = 2
  bn_momentum: float = 0.9

  def __post_init__(self):
    shape = tuple(self.image_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
      raise InvalidInputError(
          f"Classifier: image_shape must be (H, W, C) with C in {{1, 3}}, got {self.image_shape}.")
    widths = tuple(self.widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
      raise InvalidInputError(f"Classifier: widths must be positive integers, got {self.widths!r}.")
    for field, low in (("num_classes", 2), ("convs_per_stage", 1), ("feature_dim", 1), ("shift", 0)):
      v = getattr(self, field)
      if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InvalidInputError(f"Classifier: {field} must be an integer >= {low}, got {v!r}.")
    f = 2 ** (len(widths) - 1)
    if shape[0] < f or shape[1] < f:
      raise InvalidInputError(
          f"Classifier: {len(widths) - 1} pooling steps need images of at least {f} x {f},"
          f" got {shape[0]} x {shape[1]}.")
    super().__post_init__()

  def setup(self):
    convs, norms = [], []
    for s, width in enumerate(self.widths):
      for j in range(self.convs_per_stage):
        convs.append(nn.Conv(width, (3, 3), padding="SAME", use_bias=False, name=f"conv{s}_{j}"))
        norms.append(BatchNorm(momentum=self.bn_momentum, name=f"bn{s}_{j}"))
    self.convs, self.norms = convs, norms
    self.head_conv = nn.Conv(self.feature_dim, (1, 1), use_bias=False, name="head_conv")
    self.head_norm = BatchNorm(momentum=self.bn_momentum, name="head_bn")
    self.fc = nn.Dense(self.num_classes, name="fc")

  def _features_unit(self, h: jax.Array, train: bool) -> jax.Array:
    """Features of images already scaled to ``[0, 1]``."""
    i = 0
    for s in range(len(self.widths)):
      for _ in range(self.convs_per_stage):
        h = nn.silu(self.norms[i](self.convs[i](h), train))
        i += 1
      if s < len(self.widths) - 1:
        h = nn.max_pool(h, (2, 2), (2, 2))
    h = nn.silu(self.head_norm(self.head_conv(h), train))
    return jnp.mean(h, axis=(1, 2))

  def features(self, x, train: bool = False) -> jax.Array:
    """Penultimate features ``N x feature_dim`` of uint8 images."""
    x = check_images(x, self.image_shape, "Classifier")
    return self._features_unit(to_unit(x), train)

  def logits(self, x, train: bool = False) -> jax.Array:
    """Class logits ``N x num_classes`` of uint8 images."""
    return self.fc(self.features(x, train))

  def __call__(self, batch, train: bool = False) -> jax.Array:
    """Per-sample cross-entropy (nats, ``[N]``) of ``{'x': uint8 images, 'y': labels}``."""
    if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
      got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
      raise InvalidInputError(
          f"Classifier: expected a batch {{'x': uint8 images, 'y': integer labels}}, got {got}.")
    x = check_images(batch["x"], self.image_shape, "Classifier")
    y = check_labels(batch["y"], x.shape[0])
    h = to_unit(x)
    if train and self.augment:
      h = flip_and_shift(h, self.make_rng("dropout"), self.shift)
    logits = self.fc(self._features_unit(h, train))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)
