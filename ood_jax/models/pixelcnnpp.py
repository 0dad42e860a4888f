"""PixelCNN++ (Salimans et al. 2017) with BatchNorm (Song et al. 2019) or weight norm.

The network is the one of ``openai/pixel-cnn`` ``model_spec``: the input ``x/127.5 - 1``
with a channel of ones appended (so zero padding differs from image content) feeds two
streams, ``u`` (pixels above: down-shifted convolutions, kernels 2x3) and ``ul`` (pixels
above and to the left: down-right-shifted convolutions, kernels 2x2). Three stages at
full, 1/2 and 1/4 resolution (28 -> 14 -> 7, 32 -> 16 -> 8) with ``num_resnet`` gated
ResNet blocks per stream each; stride-2 shifted convolutions go down, stride-2 shifted
transposed convolutions come back up (``num_resnet``, then twice ``num_resnet + 1``
blocks), and every block of the way back takes the matching block of the way down as a
skip input (``u``: the ``u`` skip; ``ul``: ``[u, ul skip]``). A gated block is
``x + a * sigmoid(b)``, ``[a, b] = conv(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip))))``
(dropout between the two convolutions). The output is ``nin(elu(ul))`` with the
parameters of a discretised logistic mixture (``logistic_mixture.py``).

Normalisation (``norm``):
* ``'batch'`` (Song et al.'s variant, the default): every convolution, including the
  1x1 ``nin`` of the skip inputs and the strided / transposed ones, is followed by
  BatchNorm (eps 1e-5, flax momentum 0.9) and has no bias; the output layer is a plain
  1x1 convolution with bias (normalising the likelihood parameters over the batch would
  make even the parameters' scale batch-dependent). The gate convolution's BatchNorm
  scale starts at 0.1 (the original's ``init_scale=0.1``). Train mode normalises with
  batch statistics, so the network is **not** autoregressive across the batch in train
  mode (a sample's log-likelihood depends on the whole batch, which the BatchNorm scores
  rely on); eval mode uses the running averages and is exactly causal.
* ``'weight'`` (the original): weight-normalised kernels ``g v / ||v||`` with bias
  (``v`` ~ N(0, 0.05), ``g`` = 1, 0.1 for the gate convolution; no data-dependent init),
  with the original's dropout 0.5 unless ``dropout`` is given.
* ``'none'``: plain convolutions with bias.

Shifts: a down-shifted convolution pads ``kh - 1`` rows on top and ``(kw - 1)/2`` columns
each side; a down-right-shifted one pads ``kh - 1`` on top and ``kw - 1`` on the left;
the first layer shifts once more (``down_shift``/``right_shift``) so no output sees its
own pixel. Transposed convolutions (TF ``conv2d_transpose``, 'VALID', stride 2, cropped
as the original) are computed as one ordinary convolution producing the four output
phases, then depth-to-space (no zero-dilated input).

Units: ``log_prob`` is nats per image of the discrete 8-bit data (sum over all
sub-pixels); ``__call__`` is its negative (the training objective).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ood_jax.errors import InvalidInputError
from ood_jax.models import logistic_mixture as lm
from ood_jax.models.inputs import check_images
from ood_jax.models.likelihoods import image_sum
from ood_jax.models.spec import ModelSpec
from ood_jax.registry import choose

NORMS = ("batch", "weight", "none")
_DN = ("NHWC", "HWIO", "NHWC")


def concat_elu(x: jax.Array) -> jax.Array:
  """``elu([x, -x])`` on the channel axis (doubles the channels)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


def down_shift(x: jax.Array) -> jax.Array:
  """Moves every row down by one (zero first row, last row dropped)."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: jax.Array) -> jax.Array:
  """Moves every column right by one (zero first column, last column dropped)."""
  return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


def _depth_to_space(z: jax.Array, features: int) -> jax.Array:
  """``(N, H, W, 2*2*F)`` phases ``(a, b)`` -> ``(N, 2H, 2W, F)``, ``y[2i+a, 2j+b] = z[i, j, a, b]``."""
  n, h, w, _ = z.shape
  z = z.reshape(n, h, w, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(n, 2 * h, 2 * w, features)


def deconv_down(x: jax.Array, w: jax.Array) -> jax.Array:
  """Down-shifted transposed convolution, kernel ``w (2, 3, C_in, F)``, stride 2.

  TF ``conv2d_transpose`` semantics (input ``(i, j)`` adds ``x[i, j] w[t, u]`` to output
  ``(2i + t, 2j + u)``) on a ``2H+1 x 2W+2`` canvas, cropped to rows ``[0, 2H)`` and
  columns ``[1, 2W+1)``. Output column ``2m`` gets tap 1 of input column ``m``; column
  ``2m+1`` taps 2 of ``m`` and 0 of ``m+1``: one 1x2 convolution (input padded by one
  column on the right) makes the four phases.
  """
  zero = jnp.zeros_like(w[:, 0])
  even = jnp.stack([w[:, 1], zero], axis=0)           # (2 taps, a, C_in, F)
  odd = jnp.stack([w[:, 2], w[:, 0]], axis=0)
  k = jnp.stack([even, odd], axis=2)                  # (tap, a, b, C_in, F)
  k = k.transpose(0, 3, 1, 2, 4).reshape(1, 2, w.shape[2], 4 * w.shape[3])
  xp = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))
  z = lax.conv_general_dilated(xp, k, (1, 1), "VALID", dimension_numbers=_DN)
  return _depth_to_space(z, w.shape[3])


def deconv_down_right(x: jax.Array, w: jax.Array) -> jax.Array:
  """Down-right-shifted transposed convolution, kernel ``w (2, 2, C_in, F)``, stride 2:
  ``y[2i + a, 2j + b] = x[i, j] w[a, b]`` (the original's crop of the 'VALID' output)."""
  k = w.transpose(2, 0, 1, 3).reshape(1, 1, w.shape[2], 4 * w.shape[3])
  z = lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=_DN)
  return _depth_to_space(z, w.shape[3])


def _shift_padding(shift: str, kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
  if shift == "down":
    return (kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2)
  if shift == "down_right":
    return (kh - 1, 0), (kw - 1, 0)
  return (0, 0), (0, 0)


class ShiftedConv(nn.Module):
  """Shifted (or 1x1) convolution, optionally strided / transposed, then the norm.

  Attributes:
    features: output channels F.
    kernel_size: (kh, kw).
    shift: 'down', 'down_right' or 'none' (1x1 ``nin``).
    stride: 1 or 2.
    transpose: stride-2 transposed convolution (doubles H and W).
    norm: 'batch', 'weight' or 'none' (see the module docstring).
    init_scale: initial BatchNorm scale / weight-norm gain.
  """
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  shift: str = "none"
  stride: int = 1
  transpose: bool = False
  norm: str = "batch"
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kh, kw = self.kernel_size
    shape = (kh, kw, x.shape[-1], self.features)
    if self.norm == "weight":
      v = self.param("kernel", nn.initializers.normal(0.05), shape)
      g = self.param("scale", nn.initializers.constant(self.init_scale), (self.features,))
      w = v * (g / jnp.sqrt(jnp.sum(v ** 2, axis=(0, 1, 2))))
    else:
      w = self.param("kernel", nn.initializers.lecun_normal(), shape)
    if self.transpose:
      y = deconv_down(x, w) if self.shift == "down" else deconv_down_right(x, w)
    else:
      ph, pw = _shift_padding(self.shift, kh, kw)
      x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
      y = lax.conv_general_dilated(x, w, (self.stride, self.stride), "VALID",
                                   dimension_numbers=_DN)
    if self.norm == "batch":
      bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5,
                        scale_init=nn.initializers.constant(self.init_scale), name="bn")
      return bn(y, use_running_average=not train)
    return y + self.param("bias", nn.initializers.zeros, (self.features,))


class GatedResnet(nn.Module):
  """``x + a * sigmoid(b)`` with ``[a, b]`` from two shifted convolutions (and a skip)."""
  shift: str
  norm: str = "batch"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array | None, train: bool) -> jax.Array:
    f = x.shape[-1]
    ks = (2, 3) if self.shift == "down" else (2, 2)
    h = ShiftedConv(f, ks, self.shift, norm=self.norm, name="conv_in")(concat_elu(x), train)
    if skip is not None:
      h = h + ShiftedConv(f, norm=self.norm, name="nin_skip")(concat_elu(skip), train)
    h = concat_elu(h)
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = ShiftedConv(2 * f, ks, self.shift, norm=self.norm, init_scale=0.1,
                    name="conv_gate")(h, train)
    a, b = jnp.split(h, 2, axis=-1)
    return x + a * nn.sigmoid(b)


class PixelCNNPP(nn.Module):
  """PixelCNN++ over uint8 images ``N x H x W x C`` (H, W multiples of 4; C = 1 or 3).

  Attributes:
    image_shape: (H, W, C).
    num_filters: channels of every ResNet block (Song et al.: 80; Salimans: 160).
    num_resnet: gated blocks per stage and stream (paper: 5).
    num_mix: logistic mixture components (paper: 10).
    norm: 'batch' (Song et al.), 'weight' (Salimans et al.) or 'none'.
    dropout: dropout rate inside the gated blocks (train mode only, rng stream 'dropout');
      None: the variant's own (0.5 with ``norm='weight'`` as the original, else 0), see
      ``dropout_rate``.

  ``train`` selects BatchNorm batch statistics (then pass ``mutable=['batch_stats']``).
  """
  image_shape: tuple[int, int, int] = (28, 28, 1)
  num_filters: int = 80
  num_resnet: int = 5
  num_mix: int = 10
  norm: str = "batch"
  dropout: float | None = None

  def __post_init__(self):
    shape = tuple(self.image_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
      raise InvalidInputError(
          f"PixelCNNPP: image_shape must be (H, W, C) with C in {{1, 3}}, got {self.image_shape}.")
    if shape[0] % 4 or shape[1] % 4:
      raise InvalidInputError(
          f"PixelCNNPP needs H and W divisible by 4 (two stride-2 stages), got {shape}.")
    choose("PixelCNN++ norm", self.norm, NORMS)
    if self.num_filters < 1 or self.num_resnet < 0 or self.num_mix < 1:
      raise InvalidInputError(
          f"PixelCNNPP: num_filters, num_mix >= 1 and num_resnet >= 0 required, got"
          f" {self.num_filters}, {self.num_mix}, {self.num_resnet}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise InvalidInputError(f"PixelCNNPP: dropout must be in [0, 1), got {self.dropout}.")
    super().__post_init__()

  @property
  def dropout_rate(self) -> float:
    """``dropout``, or where None the variant's own: 0.5 for weight norm, else 0."""
    if self.dropout is None:
      return 0.5 if self.norm == "weight" else 0.0
    return float(self.dropout)

  @property
  def num_params(self) -> int:
    """Mixture parameters per pixel (10 K for RGB, 3 K for grey)."""
    return lm.num_params(self.image_shape[2], self.num_mix)

  # ------------------------------------------------------------------ network
  @nn.compact
  def network(self, x_scaled: jax.Array, train: bool = False) -> jax.Array:
    """Mixture parameters ``N x H x W x P`` from inputs on the [-1, 1] scale (float32).

    In eval mode the output at pixel ``(i, j)`` depends only on pixels before it in
    raster order.
    """
    f, r, norm = self.num_filters, self.num_resnet, self.norm

    def conv(features, ks, shift, name, stride=1, transpose=False):
      return ShiftedConv(features, ks, shift, stride, transpose, norm, name=name)

    def block(shift, name):
      return GatedResnet(shift, norm, self.dropout_rate, name=name)

    ones = jnp.ones(x_scaled.shape[:-1] + (1,), x_scaled.dtype)
    x = jnp.concatenate([x_scaled, ones], axis=-1)
    us = [down_shift(conv(f, (2, 3), "down", "u_in")(x, train))]
    uls = [down_shift(conv(f, (1, 3), "down", "ul_in_above")(x, train))
           + right_shift(conv(f, (2, 1), "down_right", "ul_in_left")(x, train))]
    for stage in range(3):
      if stage:
        us.append(conv(f, (2, 3), "down", f"u_down{stage}", stride=2)(us[-1], train))
        uls.append(conv(f, (2, 2), "down_right", f"ul_down{stage}", stride=2)(uls[-1], train))
      for i in range(r):
        us.append(block("down", f"up{stage}_u{i}")(us[-1], None, train))
        uls.append(block("down_right", f"up{stage}_ul{i}")(uls[-1], us[-1], train))

    u, ul = us.pop(), uls.pop()
    for stage in range(3):
      if stage:
        u = conv(f, (2, 3), "down", f"u_up{stage}", transpose=True)(u, train)
        ul = conv(f, (2, 2), "down_right", f"ul_up{stage}", transpose=True)(ul, train)
      for i in range(r + (stage > 0)):
        u = block("down", f"down{stage}_u{i}")(u, us.pop(), train)
        ul = block("down_right", f"down{stage}_ul{i}")(ul, jnp.concatenate([u, uls.pop()], -1),
                                                       train)
    out_norm = "weight" if norm == "weight" else "none"
    return ShiftedConv(self.num_params, norm=out_norm, name="output")(nn.elu(ul), train)

  # ------------------------------------------------------------------ objectives
  def pixel_log_probs(self, x_uint8, train: bool = False) -> jax.Array:
    """Joint log-probability of each pixel's C levels given the previous pixels,
    nats, float32 ``N x H x W``."""
    x = check_images(x_uint8, self.image_shape, "PixelCNNPP")
    out = self.network(lm.scale_levels(x), train)
    return lm.log_prob(out, x)

  def log_prob(self, x_uint8, train: bool = False, k: int = 1) -> jax.Array:
    """Exact log p(x), nats per image (sum over all sub-pixels), float32 ``N``.

    ``k`` is accepted for the protocol and ignored.
    """
    return image_sum(self.pixel_log_probs(x_uint8, train)[..., None])

  def __call__(self, x_uint8, train: bool = False) -> jax.Array:
    """Training objective: negative log-likelihood, nats per image, float32 ``N``."""
    return -self.log_prob(x_uint8, train)

  # ------------------------------------------------------------------ sampling
  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images ``n x H x W x C`` (eval-mode BatchNorm), raster order.

    One full forward pass per pixel inside a ``lax.fori_loop``; the pixel's C channels
    are drawn in order from the mixture with its logits divided by ``temperature``
    (:func:`logistic_mixture.sample`). Call as
    ``model.apply(variables, rng, n, temperature, method='sample')``.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
      raise InvalidInputError(f"PixelCNNPP.sample: temperature must be > 0, got {temperature}.")
    if int(n) < 1:
      raise InvalidInputError(f"PixelCNNPP.sample: n must be >= 1, got {n}.")
    h, w, c = self.image_shape
    n, p = int(n), self.num_params
    variables = self.variables
    net = self.clone(parent=None)

    def body(i, x):
      out = net.apply(variables, lm.scale_levels(x), False, method=PixelCNNPP.network)
      row, col = i // w, i % w
      o = lax.dynamic_slice(out, (0, row, col, 0), (n, 1, 1, p))
      v = lm.sample(jax.random.fold_in(rng, i), o, c, temperature)
      return lax.dynamic_update_slice(x, v, (0, row, col, 0))

    return lax.fori_loop(0, h * w, body, jnp.zeros((n, h, w, c), jnp.uint8))


# ---------------------------------------------------------------------------- presets
# num_filters, num_resnet, num_mix per preset (grey and colour alike); BatchNorm and the
# variant's dropout by default (Song et al.: none).
PRESETS: dict[str, dict] = {
    "smoke": dict(num_filters=8, num_resnet=0, num_mix=2),
    "cpu": dict(num_filters=16, num_resnet=1, num_mix=5),
    "paper": dict(num_filters=80, num_resnet=5, num_mix=10),
    # Nalisnick et al. (Figs 2-3) use a Gated PixelCNN (App. A.2; ``gated_pixelcnn.py``); these
    # presets run Salimans et al.'s PixelCNN++ (weight norm) beside it at the paper / cpu sizes.
    "nalisnick": dict(num_filters=80, num_resnet=5, num_mix=10, norm="weight"),
    "nalisnick_cpu": dict(num_filters=16, num_resnet=1, num_mix=5, norm="weight"),
}


def _uses_batchnorm(model: PixelCNNPP) -> bool:
  return model.norm == "batch"


SPEC = ModelSpec(
    name="pixelcnnpp", module=PixelCNNPP,
    presets={name: {1: settings, 3: settings} for name, settings in PRESETS.items()},
    defaults={"norm": "batch"},
    # On the 2-core CPU a PixelCNN++ step costs about two VAE steps.
    budgets={"cpu": {"epochs": 0.5}},
    has_batchnorm=_uses_batchnorm,
    about="PixelCNN++ (Salimans et al.) with BatchNorm (Song et al.) or weight norm")
