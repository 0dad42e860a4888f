"""Gated PixelCNN (van den Oord et al. 2016) with a 256-way categorical likelihood.

Nalisnick et al. 2019 ("Do Deep Generative Models Know What They Don't Know?") App. A.2:
"a GatedPixelCNN with a categorical distribution"; FashionMNIST: 5 gated layers with 32
features and a final skip connection layer of size 256; CIFAR: 15 gated layers with 128
features and skip size 1024; convolutions initialised with TF's variance scaling (uniform,
scale 1 = fan-in LeCun uniform, used here for every kernel; biases 0).

Network (input ``x/127.5 - 1`` with a channel of ones appended, so zero padding differs
from image content). Two stacks of ``layers`` gated layers, no blind spot:

* vertical stack ``v``: at every layer it sees only the rows *strictly above* the pixel.
  Layer 0: a ``(k0//2) x k0`` convolution over rows ``i - k0//2 .. i - 1`` (``k0`` =
  ``first_kernel``); later layers a ``(k//2 + 1) x k`` convolution over rows ``i - k//2 .. i``
  of the previous ``v`` (``k`` = ``kernel``). Its output ``[a, b]`` (2F channels) is gated,
  ``v = tanh(a) * sigmoid(b)``.
* horizontal stack ``h``: a ``1 x (k//2 + 1)`` convolution over columns ``j - k//2 .. j`` of
  the current row (``k0`` at layer 0), plus a 1x1 link from the same layer's vertical
  pre-activation ``[a, b]`` (rows above, all columns within reach: the up-right pixels too,
  hence no blind spot); gated ``g = tanh(a) * sigmoid(b)``; a 1x1 convolution of ``g`` is
  the residual update ``h + conv(g)`` (layer 0, whose input is the image: ``h = conv(g)``;
  the last layer needs none) and another 1x1 convolution of ``g`` (``skip`` channels) is
  its skip contribution.
* output: the skip contributions of all layers are summed, ``ReLU -> 1x1 (skip) -> ReLU ->
  1x1`` to ``C x 256`` logits per pixel (channel-major: ``logits[..., c, level]``).

Sub-pixel order (colour): raster order over pixels, and R -> G -> B within a pixel, by
van den Oord et al.'s channel-group masks on the taps that see the *current* pixel (the
last tap of the horizontal convolutions and every 1x1 convolution of the horizontal stack
and the output): every channel of ``h``, ``g``, the skip sum and the output has a colour
group (features split into three contiguous, near-equal groups: ``group(o) = 3 o // n``, so
128 features are 43 + 43 + 42 and 1024 skip channels 342 + 341 + 341; logits ``c x 256``:
group ``c``). Layer 0 uses mask A (group ``g`` sees the current pixel's image channels
``< g``; the ones channel is free), every later masked convolution mask B (groups ``<=``).
The vertical stack only ever sees rows above, so it and the link are unmasked. Grey images
have one group: mask A hides the current pixel, mask B is no mask. The paper is silent on
the kernel sizes: ``first_kernel = 7``, ``kernel = 3`` (PixelCNN's usual 7x7 input layer
and 3x3 gated layers).

Units: ``log_prob`` is exact, nats per image (the sum of the categorical log-probabilities
of all ``H W C`` sub-pixels); ``__call__`` is its negative (the training objective).
There is no normalisation layer: ``train`` is accepted for the protocol and ignored.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ood_jax.errors import InvalidInputError
from ood_jax.models.inputs import check_images
from ood_jax.models.likelihoods import NUM_LEVELS, categorical_log_prob, image_sum
from ood_jax.models.logistic_mixture import scale_levels
from ood_jax.models.spec import Mode, ModelSpec

_DN = ("NHWC", "HWIO", "NHWC")
# TF's variance_scaling_initializer(scale=1, mode='fan_in', distribution='uniform').
_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def channel_groups(n: int, colour: bool) -> tuple[int, ...]:
  """The colour group (0: R, 1: G, 2: B) of each of ``n`` feature channels: three
  contiguous, near-equal parts (``3 o // n``); all 0 for grey."""
  return tuple(3 * o // n for o in range(n)) if colour else (0,) * n


def group_mask(in_groups, out_groups, strict: bool) -> np.ndarray:
  """``(C_in, C_out)`` 0/1 mask of the tap at the current pixel: input group < output group
  (``strict``, mask A) or <= (mask B); an input group of -1 (the ones channel) is free."""
  gi = np.asarray(in_groups)[:, None]
  go = np.asarray(out_groups)[None, :]
  ok = (gi < go) if strict else (gi <= go)
  return (ok | (gi < 0)).astype(np.float32)


class CausalConv(nn.Module):
  """Convolution with explicit padding, cropped to the input's H x W, optionally masked.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    padding: ``((top, bottom), (left, right))`` zero padding before a 'VALID' convolution;
      the output is cropped to the first ``H`` rows and ``W`` columns.
    in_groups, out_groups: colour groups of the input / output channels; with them the
      kernel's last tap ``(kh - 1, kw - 1)`` (the current pixel, for the horizontal and 1x1
      convolutions) is multiplied by ``group_mask(in_groups, out_groups, strict)``.
    strict: mask A (True) or B.
  """
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  in_groups: tuple[int, ...] | None = None
  out_groups: tuple[int, ...] | None = None
  strict: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    w = self.param("kernel", _KERNEL_INIT, (kh, kw, x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.in_groups is not None:
      m = jnp.asarray(group_mask(self.in_groups, self.out_groups, self.strict))
      w = w.at[kh - 1, kw - 1].multiply(m)
    if (kh, kw) == (1, 1) and self.padding == ((0, 0), (0, 0)):
      return jnp.dot(x, w[0, 0]) + b
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
    y = lax.conv_general_dilated(xp, w, (1, 1), "VALID", dimension_numbers=_DN)
    return y[:, :h, :wd] + b


def gate(x: jax.Array) -> jax.Array:
  """``tanh(a) * sigmoid(b)`` of ``[a, b]`` (channel halves)."""
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * nn.sigmoid(b)


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN over uint8 images ``N x H x W x C`` (C = 1 or 3), 256-way softmax.

  Attributes:
    image_shape: (H, W, C).
    layers: gated layers (Nalisnick et al.: 5 grey, 15 colour); the first is the mask-A one.
    features: channels of both stacks (32 grey, 128 colour); colour needs >= 3.
    skip: channels of the summed skip connections and of the output's hidden 1x1 layer
      (256 grey, 1024 colour); colour needs >= 3.
    first_kernel: odd size (>= 3) of the first layer's kernels (vertical
      ``first_kernel//2 x first_kernel``, horizontal ``1 x (first_kernel//2 + 1)``).
    kernel: odd size (>= 1) of the later layers' kernels.

  ``train`` is accepted by every method and ignored (no BatchNorm, no dropout).
  """
  image_shape: tuple[int, int, int] = (28, 28, 1)
  layers: int = 5
  features: int = 32
  skip: int = 256
  first_kernel: int = 7
  kernel: int = 3

  def __post_init__(self):
    shape = tuple(self.image_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
      raise InvalidInputError(
          f"GatedPixelCNN: image_shape must be (H, W, C) with C in {{1, 3}}, got {self.image_shape}.")
    least = 3 if shape[2] == 3 else 1
    if self.layers < 1 or self.features < least or self.skip < least:
      raise InvalidInputError(
          f"GatedPixelCNN: layers >= 1 and features, skip >= {least} (one channel group per "
          f"colour) required, got layers={self.layers}, features={self.features}, skip={self.skip}.")
    if self.first_kernel < 3 or self.first_kernel % 2 == 0 or self.kernel < 1 or self.kernel % 2 == 0:
      raise InvalidInputError(
          f"GatedPixelCNN: first_kernel must be odd >= 3 and kernel odd >= 1, got "
          f"{self.first_kernel}, {self.kernel}.")
    super().__post_init__()

  # ------------------------------------------------------------------ network
  @nn.compact
  def logits(self, x_scaled: jax.Array, train: Mode = False) -> jax.Array:
    """Logits ``N x H x W x C x 256`` from inputs on the [-1, 1] scale (float32).

    ``logits[n, i, j, c]`` depends only on the sub-pixels before ``(i, j, c)``: the pixels
    before ``(i, j)`` in raster order and the channels before ``c`` of pixel ``(i, j)``.
    """
    del train
    c = self.image_shape[2]
    colour = c == 3
    f, s = self.features, self.skip
    gf, gs = channel_groups(f, colour), channel_groups(s, colour)
    g2f = gf + gf                                   # [a, b] halves share the groups
    gout = tuple(o // NUM_LEVELS for o in range(c * NUM_LEVELS)) if colour else (0,) * (c * NUM_LEVELS)

    ones = jnp.ones(x_scaled.shape[:-1] + (1,), x_scaled.dtype)
    x = jnp.concatenate([x_scaled, ones], axis=-1)
    gin = tuple(range(c)) if colour else (0,) * c
    gin = gin + (-1,)                               # the ones channel: free

    v = h = skip = None
    for layer in range(self.layers):
      if layer == 0:
        k = self.first_kernel
        hk = k // 2
        v_pre = CausalConv(2 * f, (hk, k), ((hk, 0), (hk, hk)), name="layer0_v")(x)
        h_in, h_groups, strict = x, gin, True
      else:
        k = self.kernel
        hk = k // 2
        v_pre = CausalConv(2 * f, (hk + 1, k), ((hk, 0), (hk, hk)), name=f"layer{layer}_v")(v)
        h_in, h_groups, strict = h, gf, False
      h_pre = CausalConv(2 * f, (1, hk + 1), ((0, 0), (hk, 0)), h_groups, g2f, strict,
                         name=f"layer{layer}_h")(h_in)
      h_pre = h_pre + CausalConv(2 * f, name=f"layer{layer}_link")(v_pre)
      v, g = gate(v_pre), gate(h_pre)
      sk = CausalConv(s, in_groups=gf, out_groups=gs, name=f"layer{layer}_skip")(g)
      skip = sk if skip is None else skip + sk
      if layer < self.layers - 1:
        res = CausalConv(f, in_groups=gf, out_groups=gf, name=f"layer{layer}_res")(g)
        h = res if layer == 0 else h + res
    out = nn.relu(skip)
    out = nn.relu(CausalConv(s, in_groups=gs, out_groups=gs, name="out_hidden")(out))
    out = CausalConv(c * NUM_LEVELS, in_groups=gs, out_groups=gout, name="out_logits")(out)
    return out.reshape(out.shape[:-1] + (c, NUM_LEVELS))

  # ------------------------------------------------------------------ objectives
  def sub_pixel_log_probs(self, x_uint8, train: Mode = False) -> jax.Array:
    """``log p(x_{i,j,c} | earlier sub-pixels)``, nats, float32 ``N x H x W x C``."""
    x = check_images(x_uint8, self.image_shape, "GatedPixelCNN")
    return categorical_log_prob(self.logits(scale_levels(x), train), x)

  def log_prob(self, x_uint8, train: Mode = False, k: int = 1) -> jax.Array:
    """Exact log p(x), nats per image (sum over all sub-pixels), float32 ``N``.

    ``k`` is accepted for the protocol and ignored.
    """
    return image_sum(self.sub_pixel_log_probs(x_uint8, train))

  def __call__(self, x_uint8, train: Mode = False) -> jax.Array:
    """Training objective: negative log-likelihood, nats per image, float32 ``N``."""
    return -self.log_prob(x_uint8, train)

  # ------------------------------------------------------------------ sampling
  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images ``n x H x W x C``, sub-pixels in raster order, R -> G -> B.

    One full forward pass per sub-pixel inside a ``lax.fori_loop``; sub-pixel ``t``
    (flat index ``(i W + j) C + c``) is drawn from ``softmax(logits / temperature)`` with
    the key ``fold_in(rng, t)``. Call as
    ``model.apply(variables, rng, n, temperature, method='sample')``.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
      raise InvalidInputError(f"GatedPixelCNN.sample: temperature must be > 0, got {temperature}.")
    if int(n) < 1:
      raise InvalidInputError(f"GatedPixelCNN.sample: n must be >= 1, got {n}.")
    h, w, c = self.image_shape
    n = int(n)
    variables = self.variables
    net = self.clone(parent=None)

    def body(t, x):
      out = net.apply(variables, scale_levels(x), method=GatedPixelCNN.logits)
      pix, ch = t // c, t % c
      row, col = pix // w, pix % w
      o = lax.dynamic_slice(out, (0, row, col, ch, 0), (n, 1, 1, 1, NUM_LEVELS))
      v = jax.random.categorical(jax.random.fold_in(rng, t), o / temperature, axis=-1)
      return lax.dynamic_update_slice(x, v.astype(jnp.uint8), (0, row, col, ch))

    return lax.fori_loop(0, h * w * c, body, jnp.zeros((n, h, w, c), jnp.uint8))


# ---------------------------------------------------------------------------- presets
_SMOKE = dict(layers=2, features=12, skip=24)
# cpu: about 0.1-0.3 s per batch-32 step on 28 x 28 grey images on 2 CPU cores.
_CPU = dict(layers=5, features=16, skip=64)
# Nalisnick et al. App. A.2.
_GREY = dict(layers=5, features=32, skip=256)
_COLOUR = dict(layers=15, features=128, skip=1024)

_PRESETS = {
    "smoke": {1: _SMOKE, 3: _SMOKE},
    "cpu": {1: _CPU, 3: _CPU},
    "paper": {1: _GREY, 3: _COLOUR},
    "nalisnick": {1: _GREY, 3: _COLOUR},
    "nalisnick_cpu": {1: _CPU, 3: _CPU},
}

# Nalisnick et al. App. A.2, batch 32. Grey: Adam, lr 1e-4, 100K steps "decaying at 80K and
# 90K steps" (no factor given: halved, as their Glow's App. A.1 schedule); colour: RMSProp
# (torch's rule and defaults here, alpha 0.99, eps 1e-8: the paper names neither), lr 1e-4,
# 200K steps, decaying by 1/3 at 120K, 180K and 195K. No warm-up, no clipping (not mentioned).
_NALISNICK_GREY = dict(optimizer="adam", learning_rate=1e-4, batch_size=32, num_steps=100_000,
                       decay_steps=(80_000, 90_000), decay_factor=0.5, halve_every_epochs=None,
                       warmup_steps=0, clip_grad_norm=None)
_NALISNICK_COLOUR = dict(optimizer="rmsprop", learning_rate=1e-4, batch_size=32,
                         num_steps=200_000, decay_steps=(120_000, 180_000, 195_000),
                         decay_factor=1 / 3, halve_every_epochs=None, warmup_steps=0,
                         clip_grad_norm=None)
# nalisnick_cpu: the recipe's optimisers and batch at 10x the lr (the cpu budget is about 1%
# of the paper's steps, as the nalisnick_cpu Glow), no decay, a 200-step warm-up and clipping
# at 100 for the raised lr; one epoch at the cpu experiment preset.
_NALISNICK_CPU = {ch: dict(optimizer=r["optimizer"], learning_rate=1e-3, batch_size=32,
                           halve_every_epochs=None, warmup_steps=200, clip_grad_norm=100.0)
                  for ch, r in ((1, _NALISNICK_GREY), (3, _NALISNICK_COLOUR))}
_RECIPES = {"nalisnick": {1: _NALISNICK_GREY, 3: _NALISNICK_COLOUR},
            "nalisnick_cpu": {**_NALISNICK_CPU, "budgets": {"cpu": {"epochs": 1}}}}

SPEC = ModelSpec(
    name="gated_pixelcnn", module=GatedPixelCNN, presets=_PRESETS,
    # The cpu experiment preset trains it one epoch instead of two (the cpu preset: ~0.2 s per
    # batch-32 step on FashionMNIST on 2 busy cores, so about 6 min an epoch).
    budgets={"cpu": {"epochs": 1}},
    recipes=_RECIPES,
    has_batchnorm=False,
    about="Gated PixelCNN (van den Oord et al. 2016), 256-way categorical (Nalisnick et al. A.2)")
