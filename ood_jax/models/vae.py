"""DCGAN-style convolutional VAE of the Likelihood Regret (Xiao et al.) / ROSE references.

The layer table is the one of ``shared/fixtures/lr_vae_fmnist/README.md`` (there with
ngf 32, latent 100, 1 channel, 256-way categorical), generalised to ``ngf``,
``latent_dim``, C channels and other likelihoods. Images must be 32 x 32.

Encoder (params under ``encoder``; torch ``netE`` names in brackets):
  ``input_conv``   Conv k4 s2 p1, C -> ngf, no bias          [main.input-conv]     -> 16x16
  ``input_bn``     BatchNorm, ReLU                            [main.input-BN]
  ``pyramid_conv1`` Conv k4 s2 p1, ngf -> 2ngf, no bias       [main.pyramid:ngf-2ngf:conv] -> 8x8
  ``pyramid_bn1``  BatchNorm, ReLU                            [main.pyramid:2ngf:batchnorm]
  ``pyramid_conv2`` Conv k4 s2 p1, 2ngf -> 4ngf, no bias      [main.pyramid:2ngf-4ngf:conv] -> 4x4
  ``pyramid_bn2``  BatchNorm, ReLU                            [main.pyramid:4ngf:batchnorm]
  ``mu_conv``      Conv k4 s1 p0, 4ngf -> latent, bias        [conv1]                -> 1x1
  ``logvar_conv``  Conv k4 s1 p0, 4ngf -> latent, bias        [conv2]                -> 1x1
Decoder (params under ``decoder``; torch ``netG`` names in brackets), no biases:
  ``initial_convt``  ConvT k4 s1 p0, latent -> 4ngf           [main.initial:nz-4ngf:convt] -> 4x4
  ``initial_bn``     BatchNorm, ReLU                          [main.initial:4ngf:batchnorm]
  ``pyramid_convt1`` ConvT k4 s2 p1, 4ngf -> 2ngf             [main.pyramid:4ngf-2ngf:convt] -> 8x8
  ``pyramid_bn1``    BatchNorm, ReLU                          [main.pyramid:2ngf:batchnorm]
  ``pyramid_convt2`` ConvT k4 s2 p1, 2ngf -> ngf              [main.pyramid:2ngf-ngf:convt] -> 16x16
  ``pyramid_bn2``    BatchNorm, ReLU                          [main.pyramid:ngf:batchnorm]
  ``final_convt``    ConvT k4 s2 p1, ngf -> C*P               [main.final:ngf-C:convt] -> 32x32
The decoder output is channel-major: image channel c owns output channels c*P .. c*P+P-1,
returned as ``N x 32 x 32 x C x P``. BatchNorm: eps 1e-5, torch momentum 0.1 (flax 0.9);
its mode is always the ``train`` argument (train mode normalises with batch statistics,
biased variance, and needs ``mutable=['batch_stats']``): one bool for the whole model or
``{'encoder': bool, 'decoder': bool}`` (e.g. encoder BatchNorm adaptation with the decoder
in eval mode; a part left out is in eval mode). Initialisation is DCGAN's
(kernels N(0, 0.02), BN scale N(1, 0.02), biases 0).

``arch='song'`` (model preset ``song``) swaps both networks for Song et al.'s VAE (App. C.1,
Table 3; :class:`SongEncoder` / :class:`SongDecoder`, any H, W divisible by 4); every
method below is shared. ``arch`` at its default ``'dcgan'`` is left out of ``repr`` so the
checkpoint keys of the DCGAN VAEs (``Run.checkpoint_dir`` hashes ``repr(model)``) are the
ones from before the field existed.

Units: every returned log-probability is in nats per image of the discrete 8-bit data (for
the continuous ``gaussian`` likelihood: its density of the dequantised data minus ``D log
256``, the flows' convention; see ``likelihoods.py``).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import to_unit
from ood_jax.errors import InvalidInputError
from ood_jax.models.conv_transpose import ConvTranspose
from ood_jax.models.inputs import check_images
from ood_jax.models.likelihoods import Likelihood, get_likelihood, image_sum
from ood_jax.models.spec import Mode, ModelSpec, Objective, part_mode

_KERNEL_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5, scale_init=_bn_scale_init, name=name)


def _conv(features: int, stride: int, padding: int, use_bias: bool, name: str) -> nn.Conv:
  return nn.Conv(features, (4, 4), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 kernel_init=_KERNEL_INIT, name=name)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over the last axis."""
  return -0.5 * jnp.sum(1.0 + logvar - mu ** 2 - jnp.exp(logvar), axis=-1)


class ConvEncoder(nn.Module):
  """x in [0, 1] (N x 32 x 32 x C) -> (mu, logvar), each N x latent_dim.

  ``with_logvar=False`` (the deterministic autoencoder) has no ``logvar_conv`` head and
  returns ``(mu, None)``; the other parameter names are the same.
  """
  latent_dim: int = 100
  ngf: int = 32
  with_logvar: bool = True

  def setup(self):
    ngf = self.ngf
    self.input_conv = _conv(ngf, 2, 1, False, "input_conv")
    self.input_bn = _batch_norm("input_bn")
    self.pyramid_conv1 = _conv(2 * ngf, 2, 1, False, "pyramid_conv1")
    self.pyramid_bn1 = _batch_norm("pyramid_bn1")
    self.pyramid_conv2 = _conv(4 * ngf, 2, 1, False, "pyramid_conv2")
    self.pyramid_bn2 = _batch_norm("pyramid_bn2")
    self.mu_conv = _conv(self.latent_dim, 1, 0, True, "mu_conv")
    if self.with_logvar:
      self.logvar_conv = _conv(self.latent_dim, 1, 0, True, "logvar_conv")

  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array | None]:
    ura = not train
    h = nn.relu(self.input_bn(self.input_conv(x), use_running_average=ura))
    h = nn.relu(self.pyramid_bn1(self.pyramid_conv1(h), use_running_average=ura))
    h = nn.relu(self.pyramid_bn2(self.pyramid_conv2(h), use_running_average=ura))
    n = x.shape[0]
    mu = self.mu_conv(h).reshape(n, -1)
    return mu, (self.logvar_conv(h).reshape(n, -1) if self.with_logvar else None)


class ConvDecoder(nn.Module):
  """z (N x latent_dim) -> raw output N x 32 x 32 x (C*P) (no output activation)."""
  out_features: int
  ngf: int = 32
  fast_convt_grad: bool = True

  def setup(self):
    ngf, fast = self.ngf, self.fast_convt_grad
    self.initial_convt = ConvTranspose(4 * ngf, 4, 1, 0, fast_grad=fast, name="initial_convt")
    self.initial_bn = _batch_norm("initial_bn")
    self.pyramid_convt1 = ConvTranspose(2 * ngf, 4, 2, 1, fast_grad=fast, name="pyramid_convt1")
    self.pyramid_bn1 = _batch_norm("pyramid_bn1")
    self.pyramid_convt2 = ConvTranspose(ngf, 4, 2, 1, fast_grad=fast, name="pyramid_convt2")
    self.pyramid_bn2 = _batch_norm("pyramid_bn2")
    # The wide output layer (32 -> 256 levels) runs as phase matmuls: faster on XLA:CPU
    # than the convolution for small C_in / large C_out (benchmarks/conv_transpose.py).
    self.final_convt = ConvTranspose(self.out_features, 4, 2, 1, fast_grad=fast,
                                     matmul=fast and self.out_features >= 128,
                                     name="final_convt")

  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    ura = not train
    h = z.reshape(z.shape[0], 1, 1, z.shape[-1])
    h = nn.relu(self.initial_bn(self.initial_convt(h), use_running_average=ura))
    h = nn.relu(self.pyramid_bn1(self.pyramid_convt1(h), use_running_average=ura))
    h = nn.relu(self.pyramid_bn2(self.pyramid_convt2(h), use_running_average=ura))
    return self.final_convt(h)


# ------------------------------------------------------------------ Song et al.'s VAE
# Song, Song & Ermon, "Unsupervised OOD detection with batch normalization", App. C.1 and its
# Table 3. What the paper says: an inference network of 6 convolutions followed by a fully
# connected layer, a generator of 8 deconvolutions, BatchNorm on every (de)convolution but
# the generator's last two, Table 3's (channels, kernel, stride, padding) per layer (c = image
# channels, k = image width / 4), and (§4.1) BatchNorm "before each convolutional layer".
# Where it is silent, ours (the architecture is van den Berg et al.'s Sylvester-flow VAE,
# whose public code differs from Table 3 in places; Table 3 wins here):
# * widths: ``ngf`` is Table 3's 32: layers of ngf*c, 2*ngf*c and 8*ngf channels (the
#   table's 32c, 64c, 256); the last layer has c * P channels (P = 256 for the 256-way
#   categorical likelihood: the table's 256c; channel-major as the DCGAN decoder's).
# * order Conv -> BatchNorm -> ReLU (the DCGAN VAE's), so a BatchNorm comes before every
#   convolution except the first of each network; ReLU (the public code: gated convolutions
#   h * sigmoid(g)); no bias where a BatchNorm follows, biases elsewhere.
# * the FC layer maps the 256 features to 2d outputs, (mu, logvar) (the public code: mu and
#   a softplus variance clipped to [0.01, 7]); latent size d = 64 (the public code's default).
# * generator input: Table 3's first layer (kernel 5, stride 1, padding 2) keeps the size,
#   so a linear fully connected layer ``fc`` maps z to a k x k x 2*ngf*c map first (the
#   public code instead starts with a k x k deconvolution of the 1 x 1 latent).
# * stride-2 deconvolutions (kernel 5, padding 2) double the size: torch ``output_padding=1``
#   (as the public code), computed as padding 1 with the first row and column cropped.
# * no activation between the last two layers (linear 5x5 then 1x1, as the public code).
# * DCGAN initialisation (kernels N(0, 0.02), BN scale N(1, 0.02), biases 0) as the ConvVAE.
ARCHS = ("dcgan", "song")


def song_table(image_shape, ngf: int = 32, out_params: int = 256) -> dict[str, list[tuple]]:
  """Song et al.'s Table 3 for ``image_shape`` ``(H, W, c)``: ``{'encoder': rows, 'decoder':
  rows}``, each row ``(out channels, (kernel h, kernel w), stride, padding)``; ``out_params``
  is the likelihood's parameters per sub-pixel P (the last row has ``c * P`` channels)."""
  h, w, c = (int(s) for s in image_shape)
  a, b, wide, k5 = ngf * c, 2 * ngf * c, 8 * ngf, (5, 5)
  encoder = [(a, k5, 1, 2), (a, k5, 2, 2), (a, k5, 1, 2), (b, k5, 2, 2), (b, k5, 1, 2),
             (wide, (h // 4, w // 4), 1, 0)]
  decoder = [(b, k5, 1, 2), (b, k5, 2, 2), (b, k5, 1, 2), (a, k5, 2, 2), (a, k5, 1, 2),
             (a, k5, 1, 2), (wide, k5, 1, 2), (c * out_params, (1, 1), 1, 0)]
  return {"encoder": encoder, "decoder": decoder}


class SongEncoder(nn.Module):
  """x in [0, 1] (N x H x W x C) -> (mu, logvar), each N x latent_dim (Song's Table 3).

  Parameters: ``conv1`` .. ``conv6`` (no bias) each followed by ``bn1`` .. ``bn6`` and ReLU
  (H -> H/2 at conv2, -> H/4 at conv4, -> 1 at conv6, an H/4 x W/4 kernel), then ``fc``
  (8*ngf -> 2*latent_dim, bias): the first half mu, the second logvar.
  """
  image_shape: tuple[int, int, int] = (28, 28, 1)
  latent_dim: int = 64
  ngf: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    ura, d = not train, self.latent_dim
    h = x
    for i, (f, k, s, p) in enumerate(song_table(self.image_shape, self.ngf)["encoder"], 1):
      h = nn.Conv(f, k, strides=(s, s), padding=((p, p), (p, p)), use_bias=False,
                  kernel_init=_KERNEL_INIT, name=f"conv{i}")(h)
      h = nn.relu(_batch_norm(f"bn{i}")(h, use_running_average=ura))
    out = nn.Dense(2 * d, kernel_init=_KERNEL_INIT, name="fc")(h.reshape(x.shape[0], -1))
    return out[:, :d], out[:, d:]


class SongDecoder(nn.Module):
  """z (N x latent_dim) -> raw output N x H x W x out_features (Song's Table 3 generator).

  Parameters: ``fc`` (latent -> H/4 * W/4 * 2*ngf*c, bias, linear), then ``convt1`` ..
  ``convt8`` (torch ``ConvTranspose2d`` semantics): 1-6 without bias, each followed by
  ``bn1`` .. ``bn6`` and ReLU (H/4 -> H/2 at convt2, -> H at convt4: stride 2 with
  ``output_padding=1``); 7 (5x5, 8*ngf) and 8 (1x1, ``out_features``) with biases, no
  BatchNorm, no activation.
  """
  image_shape: tuple[int, int, int]
  out_features: int
  ngf: int = 32
  fast_convt_grad: bool = True

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    ura, fast = not train, self.fast_convt_grad
    h, w, c = self.image_shape
    rows = song_table(self.image_shape, self.ngf, self.out_features // c)["decoder"]
    width = rows[0][0]
    x = nn.Dense((h // 4) * (w // 4) * width, kernel_init=_KERNEL_INIT, name="fc")(z)
    x = x.reshape(z.shape[0], h // 4, w // 4, width)
    for i, (f, (k, _), s, p) in enumerate(rows, 1):
      last_two = i > len(rows) - 2
      if s == 2:
        # torch ConvTranspose2d(k, 2, p, output_padding=1): its outputs are those of
        # padding p - 1 (size 2n + 1) without the first row and column (size 2n).
        x = ConvTranspose(f, k, 2, p - 1, fast_grad=fast, name=f"convt{i}")(x)[:, 1:, 1:]
      else:
        x = ConvTranspose(f, k, s, p, use_bias=last_two, fast_grad=fast, name=f"convt{i}")(x)
      if not last_two:
        x = nn.relu(_batch_norm(f"bn{i}")(x, use_running_average=ura))
    return x


def check_song_config(image_shape, likelihood: str) -> None:
  """``InvalidInputError`` unless ``image_shape`` is ``(H, W, C)`` with H, W positive
  multiples of 4 (two stride-2 layers each way); ``UnknownNameError`` for ``likelihood``."""
  shape = tuple(image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise InvalidInputError(f"ConvVAE(arch='song'): image_shape must be (H, W, C), got {image_shape}.")
  if shape[0] % 4 or shape[1] % 4:
    raise InvalidInputError(
        f"ConvVAE(arch='song') needs H and W divisible by 4 (two stride-2 layers, then an"
        f" H/4 x W/4 kernel), got image_shape {shape}; e.g. 28 x 28 or 32 x 32.")
  get_likelihood(likelihood)  # UnknownNameError early


def check_dcgan_config(model: str, image_shape, likelihood: str) -> None:
  """``InvalidInputError`` unless ``image_shape`` is ``(32, 32, C)``; ``UnknownNameError``
  for an unknown ``likelihood`` (shared by the DCGAN VAE and autoencoder)."""
  shape = tuple(image_shape)
  if len(shape) != 3 or shape[0] < 1 or shape[2] < 1:
    raise InvalidInputError(f"{model}: image_shape must be (H, W, C), got {image_shape}.")
  if shape[:2] != (32, 32):
    raise InvalidInputError(
        f"{model} needs 32 x 32 images (three stride-2 convolutions down to 4 x 4, then"
        f" 4 x 4 heads), got image_shape {shape}. Resize the data with the 'resize:32'"
        " transform, e.g. 'mnist+resize:32'.")
  get_likelihood(likelihood)  # UnknownNameError early


def squared_error(x_uint8: jax.Array, mean: jax.Array) -> jax.Array:
  """``sum_{h,w,c} (x/255 - mean)^2`` per image, float32 ``N`` (``mean`` on [0, 1])."""
  return image_sum((to_unit(x_uint8) - mean) ** 2)


class ConvVAE(nn.Module):
  """The reference DCGAN VAE with a likelihood over 8-bit levels (normalised, or the
  continuous `gaussian`: a density, see `likelihoods.py`).

  Attributes:
    image_shape: (H, W, C); H = W = 32 is required.
    latent_dim: d (paper: 100 grey, 200 colour).
    ngf: base channel width (widths ngf, 2ngf, 4ngf).
    likelihood: 'categorical256', 'bernoulli' or 'dgaussian' (see ``likelihoods.py``).
    fast_convt_grad: custom-VJP gradients for the transposed convolutions.
    arch: 'dcgan' (the layer table of the module docstring; 32 x 32 only) or 'song' (Song et
      al.'s Table 3, :class:`SongEncoder` / :class:`SongDecoder`; H, W multiples of 4; ngf is
      the table's 32: widths ngf*C, 2ngf*C, 8ngf).

  Methods take uint8 images ``N x H x W x C`` (numpy or jax); randomness comes from the
  ``'sample'`` rng stream; ``train`` selects BatchNorm batch statistics (then pass
  ``mutable=['batch_stats']``), for the whole model (a bool) or per part
  (``{'encoder': True, 'decoder': False}``).
  """
  image_shape: tuple[int, int, int] = (32, 32, 1)
  latent_dim: int = 100
  ngf: int = 32
  likelihood: str = "categorical256"
  fast_convt_grad: bool = True
  arch: str = "dcgan"

  def __post_init__(self):
    if self.arch not in ARCHS:
      raise InvalidInputError(f"ConvVAE: arch must be one of {ARCHS}, got {self.arch!r}.")
    if self.arch == "song":
      check_song_config(self.image_shape, self.likelihood)
    else:
      check_dcgan_config("ConvVAE", self.image_shape, self.likelihood)
    super().__post_init__()

  def __repr__(self) -> str:
    # ``arch`` at its default is left out: repr(model) keys the checkpoints (module docstring).
    text = super().__repr__()
    return text.replace("\n    arch = 'dcgan'", "") if self.arch == "dcgan" else text

  @property
  def lik(self) -> Likelihood:
    return get_likelihood(self.likelihood)

  def setup(self):
    out = self.image_shape[2] * self.lik.num_params
    if self.arch == "song":
      shape = tuple(self.image_shape)
      self.encoder = SongEncoder(shape, self.latent_dim, self.ngf, name="encoder")
      self.decoder = SongDecoder(shape, out, self.ngf, self.fast_convt_grad, name="decoder")
      return
    self.encoder = ConvEncoder(self.latent_dim, self.ngf, name="encoder")
    self.decoder = ConvDecoder(out, self.ngf, self.fast_convt_grad, name="decoder")

  # ------------------------------------------------------------------ helpers
  def _check(self, x) -> jax.Array:
    resize = (self.arch == "dcgan" and jnp.ndim(x) == 4
              and tuple(jnp.shape(x)[1:3]) != (32, 32))
    return check_images(x, self.image_shape, "ConvVAE",
                        "Resize with the 'resize:32' transform." if resize else "")

  def _posterior(self, x: jax.Array, train: Mode) -> tuple[jax.Array, jax.Array]:
    return self.encoder(to_unit(x), part_mode(train, "encoder"))

  def _sum_log_prob(self, out: jax.Array, x: jax.Array) -> jax.Array:
    """Sums the per-sub-pixel log-probability over H, W, C (last three axes of ``x``)."""
    return image_sum(self.lik.log_prob(out, jnp.broadcast_to(x, out.shape[:-1])))

  # ------------------------------------------------------------------ building blocks
  def encode(self, x_uint8, train: Mode = False) -> tuple[jax.Array, jax.Array]:
    """q(z|x) parameters ``(mu, logvar)``, each float32 ``N x latent_dim``; input ``x/255``."""
    return self._posterior(self._check(x_uint8), train)

  def encode_unit(self, x_unit: jax.Array, train: Mode = False) -> tuple[jax.Array, jax.Array]:
    """:meth:`encode` of float images already on the [0, 1] scale (``N x H x W x C``), e.g.
    decoded images fed back to the encoder (Soft-IntroVAE's fakes); no uint8 check."""
    x = jnp.asarray(x_unit, jnp.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
      raise InvalidInputError(f"ConvVAE.encode_unit: expected N x {self.image_shape} floats,"
                              f" got shape {tuple(x.shape)}.")
    return self.encoder(x, part_mode(train, "encoder"))

  def decode(self, z: jax.Array, train: Mode = False) -> jax.Array:
    """Raw decoder output ``N x H x W x C x P`` (categorical: unnormalised logits)."""
    out = self.decoder(z, part_mode(train, "decoder"))
    h, w, c = self.image_shape
    return out.reshape(z.shape[0], h, w, c, self.lik.num_params)

  def decoder_logits(self, z: jax.Array, train: Mode = False) -> jax.Array:
    """Alias of :meth:`decode` (the name used by the parity tests)."""
    return self.decode(z, train)

  def decoder_log_prob(self, z: jax.Array, x_uint8, train: Mode = False) -> jax.Array:
    """log p(x|z), float32 ``N``: nats, summed over the H*W*C sub-pixels."""
    x = self._check(x_uint8)
    return self._sum_log_prob(self.decode(z, train), x)

  def reconstruct(self, x_uint8, train: Mode = False) -> jax.Array:
    """The reconstruction ``lik.mean(decode(mu(x)))`` (decoder at the posterior mean),
    float32 ``N x H x W x C`` on the [0, 1] scale (Chen's Figs. 3.3-3.6)."""
    mu, _ = self.encode(x_uint8, train)
    return self.lik.mean(self.decode(mu, train))

  def recon_error(self, x_uint8, train: Mode = False) -> jax.Array:
    """Squared reconstruction error ``sum_{h,w,c} (x/255 - reconstruct(x))^2``, float32 ``N``
    (units: squared [0, 1] pixel values, summed over the H*W*C sub-pixels)."""
    x = self._check(x_uint8)
    return squared_error(x, self.reconstruct(x, train))

  # ------------------------------------------------------------------ objectives
  def __call__(self, x_uint8, train: Mode) -> jax.Array:
    """Training objective: negative ELBO in nats per image, float32 ``N``.

    One reparameterised z per image (rng stream ``'sample'``), analytic KL.
    """
    x = self._check(x_uint8)
    eps = jax.random.normal(self.make_rng("sample"), (x.shape[0], self.latent_dim), jnp.float32)
    return self.neg_elbo(x, eps, train)

  def neg_elbo(self, x_uint8, eps: jax.Array, train: Mode = False) -> jax.Array:
    """Negative ELBO at ``z = mu + sigma * eps`` (``eps`` ``N x latent_dim``), analytic KL,
    nats per image, float32 ``N``: :meth:`__call__` with its noise given."""
    x = self._check(x_uint8)
    mu, logvar = self._posterior(x, train)
    z = mu + jnp.exp(0.5 * logvar) * eps
    recon = self._sum_log_prob(self.decode(z, train), x)
    return gaussian_kl(mu, logvar) - recon

  def elbo(self, x_uint8, train: Mode = False) -> jax.Array:
    """Single-sample ELBO in nats per image (= ``-__call__``)."""
    return -self(x_uint8, train)

  def log_weights(self, x_uint8, eps: jax.Array, train: Mode = False) -> jax.Array:
    """Importance log-weights ``log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)``, ``N x K``.

    ``eps`` (``N x K x latent_dim``) is the standard-normal noise, ``z = mu + sigma*eps``;
    the K latents of all images go through the decoder as one batch of N*K. Nats.
    """
    x = self._check(x_uint8)
    mu, logvar = self._posterior(x, train)
    n, k, d = eps.shape
    z = mu[:, None, :] + jnp.exp(0.5 * logvar)[:, None, :] * eps
    out = self.decode(z.reshape(n * k, d), train)
    out = out.reshape(n, k, *out.shape[1:])
    recon = self._sum_log_prob(out, x[:, None])
    # log N(z;0,I) - log q(z|x); (z - mu)/sigma = eps exactly, the 1/2 log 2pi terms cancel.
    log_ratio = jnp.sum(0.5 * eps ** 2 - 0.5 * z ** 2 + 0.5 * logvar[:, None, :], axis=-1)
    return recon + log_ratio

  def elbo_components(self, x_uint8, eps: jax.Array, train: Mode = False) -> dict[str, jax.Array]:
    """Chen's component analysis (thesis Sec. 3.3.6) at ``z = mu + sigma * eps``.

    ``eps`` is ``N x latent_dim`` standard-normal noise (one latent per image). Returns a
    dict of float32 ``N`` arrays:

    * Eq. 3.1, nats per image, each with its constants, so that
      ``log_px_z + log_pz + neg_log_qz`` is the single-sample ELBO estimate at that z
      (= ``log_weights(x, eps[:, None])[:, 0]``; it differs from ``-neg_elbo(x, eps)``,
      whose KL is analytic, by the Monte-Carlo error of the KL):
      ``log_px_z`` = log p(x|z) (the decoder likelihood, as :meth:`decoder_log_prob`),
      ``log_pz`` = log N(z; 0, I) = ``-||z||^2 / 2 - d/2 log 2pi``,
      ``neg_log_qz`` = -log q(z|x) = ``||eps||^2 / 2 + sum_d logvar_d / 2 + d/2 log 2pi``.
    * The reduced forms Eqs. 3.2-3.4 (no constants, no nats):
      ``sq_error`` = ``||x/255 - mean(decode(z))||^2`` on the [0, 1] scale (Eq. 3.2: for the
      Gaussian decoder ``log_px_z = -sq_error / (2 sigma^2) + const``, exactly so only up to
      the likelihood's bin-centre target ``(x + 1/2)/256``), ``mu_sq`` = ``||mu(x)||^2``
      (Eq. 3.3: ``log_pz ~ -||z||^2/2``, ``||z||^2 = ||mu||^2 + O(eps)``) and
      ``sum_logvar`` = ``sum_d log sigma_d^2(x)`` (Eq. 3.4: ``neg_log_qz`` up to the
      ``||eps||^2`` term and constants, times 1/2).
    """
    x = self._check(x_uint8)
    mu, logvar = self._posterior(x, train)
    z = mu + jnp.exp(0.5 * logvar) * eps
    out = self.decode(z, train)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi) * self.latent_dim
    return {
        "log_px_z": self._sum_log_prob(out, x),
        "log_pz": -0.5 * jnp.sum(z ** 2, axis=-1) - half_log_2pi,
        "neg_log_qz": 0.5 * jnp.sum(eps ** 2 + logvar, axis=-1) + half_log_2pi,
        "sq_error": squared_error(x, self.lik.mean(out)),
        "mu_sq": jnp.sum(mu ** 2, axis=-1),
        "sum_logvar": jnp.sum(logvar, axis=-1),
    }

  def log_prob(self, x_uint8, train: Mode = False, k: int = 16) -> jax.Array:
    """IWAE estimate of log p(x) with ``k`` samples, nats per image, float32 ``N``.

    ``logmeanexp_k`` of :meth:`log_weights` (rng stream ``'sample'``); k = 1 is the
    single-sample importance estimate. Memory grows as N*k decoder outputs.
    """
    x = self._check(x_uint8)
    eps = jax.random.normal(self.make_rng("sample"), (x.shape[0], int(k), self.latent_dim))
    lw = self.log_weights(x, eps, train)
    return jax.nn.logsumexp(lw, axis=1) - math.log(int(k))

  def sample(self, rng: jax.Array, n: int, temperature: float = 1.0) -> jax.Array:
    """``n`` uint8 images from the model (eval-mode BatchNorm), ``n x H x W x C``.

    The prior latent is scaled by ``temperature`` (``z = T * eps``, ``eps ~ N(0, I)``; T = 0
    decodes ``z = 0``); the pixels are drawn from the decoder's likelihood as at T = 1.
    """
    rz, rx = jax.random.split(rng)
    z = temperature * jax.random.normal(rz, (int(n), self.latent_dim))
    return self.lik.sample(rx, self.decode(z, train=False))


def vae_objective(model: ConvVAE) -> Objective:
  """The VAE's per-image objective for ROSE: :meth:`ConvVAE.neg_elbo` in eval mode with
  explicit noise ``eps ~ N(0, I)`` (``N x latent_dim``, one row per image), nats."""
  d = model.latent_dim
  return Objective(
      noise=lambda rng, n: jax.random.normal(rng, (n, d), jnp.float32),
      batched=lambda v, x, eps: model.apply(v, x, eps, False, method=ConvVAE.neg_elbo),
      per_image=True)


# The reference architecture of Likelihood Regret / ROSE at 'cpu' and 'paper' (ngf 32,
# latent 100 grey; ngf 64, latent 200 colour); 'smoke' is a tiny one for tests.
PRESETS = {
    "smoke": {1: dict(ngf=8, latent_dim=16), 3: dict(ngf=8, latent_dim=16)},
    "cpu": {1: dict(ngf=32, latent_dim=100), 3: dict(ngf=64, latent_dim=200)},
    "paper": {1: dict(ngf=32, latent_dim=100), 3: dict(ngf=64, latent_dim=200)},
    # Song et al.'s VAE (App. C.1, Table 3; choices where it is silent: ``song_table``'s
    # comment block): widths 32c / 64c / 256, latent 64, grey and colour alike.
    "song": {1: dict(arch="song", ngf=32, latent_dim=64), 3: dict(arch="song", ngf=32, latent_dim=64)},
}
# Nalisnick et al. App. A.3 use Rosca et al.'s VAEs, which are not built here: their
# experiments run this VAE at the 'paper' / 'cpu' sizes under the names of their presets.
PRESETS["nalisnick"], PRESETS["nalisnick_cpu"] = PRESETS["paper"], PRESETS["cpu"]

SPEC = ModelSpec(
    name="vae", module=ConvVAE, presets=PRESETS, defaults={"likelihood": "categorical256"},
    input_size=32, rose_layers=("encoder/*conv*",), batchnorm_parts=("encoder", "decoder"),
    objective=vae_objective,
    about="DCGAN conv VAE of Likelihood Regret / ROSE (32 x 32, 256-way categorical)")

# Chen's thesis 3.3.4 (Fig. 3.4): the same VAE with the continuous Gaussian decoder of fixed
# variance 0.1 (``likelihoods.py``: a density of the dequantised data, not a normalised pmf).
GAUSSIAN_SPEC = dataclasses.replace(
    SPEC, name="vae_gaussian", defaults={"likelihood": "gaussian"},
    about="the DCGAN VAE with a Gaussian decoder N(x | dec(z), 0.1 I) (Chen, Fig. 3.4)")
