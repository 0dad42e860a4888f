"""Generative models (pure linen modules) and their building blocks."""

from ood_jax.models.conv_transpose import ConvTranspose, conv_transpose, conv_transpose_reference
from ood_jax.models.likelihoods import LIKELIHOODS, Likelihood, get_likelihood
from ood_jax.models.pixelcnnpp import PixelCNNPP
from ood_jax.models.registry import known_models, make_model, register_model, spec_of
from ood_jax.models.spec import GenerativeModel, ModelSpec
from ood_jax.models.torch_weights import load_reference_vae, vae_from_torch_arrays
from ood_jax.models.torch_pth import load_torch_checkpoint, load_weights
from ood_jax.models.uniform import UniformModel
from ood_jax.models.vae import ConvDecoder, ConvEncoder, ConvVAE, gaussian_kl

__all__ = [
    "ConvDecoder", "ConvEncoder", "ConvTranspose", "ConvVAE", "GenerativeModel", "LIKELIHOODS",
    "Likelihood", "ModelSpec", "PixelCNNPP", "UniformModel", "conv_transpose",
    "conv_transpose_reference", "gaussian_kl", "get_likelihood", "known_models",
    "load_reference_vae", "load_torch_checkpoint", "load_weights", "make_model", "register_model",
    "spec_of", "vae_from_torch_arrays",
]
