"""The deterministic DCGAN autoencoder of Chen's thesis (Sec. 3.3.4, Fig. 3.3 / 3.5 (e)).

The same architecture as the DCGAN VAE (``vae.py``): the encoder without its ``logvar``
head (``z = mu(x)``, params under ``encoder``) and the same decoder (params under
``decoder``), 32 x 32 images. It is the "degenerate VAE" Chen compares with: trained on
reconstruction alone, it reconstructs in- and out-of-distribution images alike.

Training loss (``__call__``): ``-log p(x | dec(enc(x)))`` under ``likelihood`` in nats per
image of the 8-bit data; the default ``gaussian`` (variance 0.1, ``likelihoods.py``) is per
sub-pixel ``(y - sigmoid(out))^2 / (2 * 0.1) + 1/2 log(2 pi 0.1) + log 256`` with the bin
centre ``y = (x + 1/2) / 256``: the squared error up to a scale and a constant. It is not a
likelihood model (no ``log_prob``, no ``sample``): score it with ``recon_error``.

BatchNorm mode: the ``train`` argument, one bool or ``{'encoder': bool, 'decoder': bool}``
as for the VAE (train mode needs ``mutable=['batch_stats']``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ood_jax.data.pixels import to_unit
from ood_jax.models.inputs import check_images
from ood_jax.models.likelihoods import Likelihood, get_likelihood, image_sum
from ood_jax.models.spec import Mode, ModelSpec, part_mode
from ood_jax.models.vae import (PRESETS, ConvDecoder, ConvEncoder, check_dcgan_config,
                                squared_error)

# The VAE's sizes (ngf 32 / latent 100 grey, ngf 64 / latent 200 colour; 'smoke' tiny).
AE_PRESETS = {name: PRESETS[name] for name in ("smoke", "cpu", "paper")}


class ConvAE(nn.Module):
  """DCGAN autoencoder: uint8 ``N x H x W x C`` -> latent ``N x latent_dim`` -> decoder output.

  Attributes:
    image_shape: (H, W, C); H = W = 32 is required.
    latent_dim: d, the bottleneck width.
    ngf: base channel width (widths ngf, 2ngf, 4ngf).
    likelihood: the reconstruction likelihood of the loss (``likelihoods.py``; default
      ``gaussian``: variance 0.1 on [0, 1]).
    fast_convt_grad: custom-VJP gradients for the transposed convolutions.
  """
  image_shape: tuple[int, int, int] = (32, 32, 1)
  latent_dim: int = 100
  ngf: int = 32
  likelihood: str = "gaussian"
  fast_convt_grad: bool = True

  def __post_init__(self):
    check_dcgan_config("ConvAE", self.image_shape, self.likelihood)
    super().__post_init__()

  @property
  def lik(self) -> Likelihood:
    return get_likelihood(self.likelihood)

  def setup(self):
    self.encoder = ConvEncoder(self.latent_dim, self.ngf, with_logvar=False, name="encoder")
    self.decoder = ConvDecoder(self.image_shape[2] * self.lik.num_params, self.ngf,
                               self.fast_convt_grad, name="decoder")

  def _check(self, x) -> jax.Array:
    resize = jnp.ndim(x) == 4 and tuple(jnp.shape(x)[1:3]) != (32, 32)
    return check_images(x, self.image_shape, "ConvAE",
                        "Resize with the 'resize:32' transform." if resize else "")

  def encode(self, x_uint8, train: Mode = False) -> jax.Array:
    """The code ``z = enc(x/255)``, float32 ``N x latent_dim``."""
    z, _ = self.encoder(to_unit(self._check(x_uint8)), part_mode(train, "encoder"))
    return z

  def decode(self, z: jax.Array, train: Mode = False) -> jax.Array:
    """Raw decoder output ``N x H x W x C x P`` (gaussian: the pre-sigmoid mean)."""
    out = self.decoder(z, part_mode(train, "decoder"))
    h, w, c = self.image_shape
    return out.reshape(z.shape[0], h, w, c, self.lik.num_params)

  def reconstruct(self, x_uint8, train: Mode = False) -> jax.Array:
    """``lik.mean(decode(encode(x)))``, float32 ``N x H x W x C`` on the [0, 1] scale."""
    return self.lik.mean(self.decode(self.encode(x_uint8, train), train))

  def recon_error(self, x_uint8, train: Mode = False) -> jax.Array:
    """``sum_{h,w,c} (x/255 - reconstruct(x))^2``, float32 ``N`` (squared [0, 1] values)."""
    x = self._check(x_uint8)
    return squared_error(x, self.reconstruct(x, train))

  def __call__(self, x_uint8, train: Mode) -> jax.Array:
    """Training loss ``-log p(x | dec(enc(x)))``, nats per image, float32 ``N``."""
    x = self._check(x_uint8)
    out = self.decode(self.encode(x, train), train)
    return -image_sum(self.lik.log_prob(out, x))


SPEC = ModelSpec(
    name="ae", module=ConvAE, presets=AE_PRESETS, defaults={"likelihood": "gaussian"},
    input_size=32, rose_layers=None, batchnorm_parts=("encoder", "decoder"),
    about="DCGAN conv autoencoder of Chen's thesis (32 x 32, Gaussian variance 0.1; "
          "score with recon_error)")
