"""Load the Likelihood-Regret PyTorch checkpoint (as ``weights.npz``) into :class:`ConvVAE`.

The npz holds both state_dicts with keys prefixed ``netE/`` and ``netG/`` (see
``shared/fixtures/lr_vae_fmnist/README.md``). Layout conversions:

* Conv2d ``(out, in, kh, kw)`` -> flax HWIO: ``w.transpose(2, 3, 1, 0)``.
* ConvTranspose2d ``(in, out, kh, kw)`` -> our correlation layout (see
  ``conv_transpose.py``): ``w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)``, i.e.
  ``w_hwio[h, w, i, o] = w_torch[i, o, k-1-h, k-1-w]``.
* BatchNorm ``weight``/``bias`` -> params ``scale``/``bias``; ``running_mean``/``running_var``
  -> ``batch_stats`` ``mean``/``var``. ``num_batches_tracked`` is ignored.

``latent_dim``, ``ngf``, the channel count and the likelihood size P are read from the
weight shapes; P = 256 per channel means the reference's categorical likelihood.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import CheckpointError
from ood_jax.models.likelihoods import LIKELIHOODS
from ood_jax.models.vae import ConvVAE


def _conv(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _convt(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def torch_key_map(latent_dim: int, ngf: int, channels: int) -> dict[tuple, tuple[str, str]]:
  """Flax path -> (torch key without the .weight/... suffix, kind) for the reference VAE."""
  e, g = "netE/", "netG/"
  return {
      ("encoder", "input_conv"): (e + "main.input-conv", "conv"),
      ("encoder", "input_bn"): (e + "main.input-BN", "bn"),
      ("encoder", "pyramid_conv1"): (e + f"main.pyramid:{ngf}-{2 * ngf}:conv", "conv"),
      ("encoder", "pyramid_bn1"): (e + f"main.pyramid:{2 * ngf}:batchnorm", "bn"),
      ("encoder", "pyramid_conv2"): (e + f"main.pyramid:{2 * ngf}-{4 * ngf}:conv", "conv"),
      ("encoder", "pyramid_bn2"): (e + f"main.pyramid:{4 * ngf}:batchnorm", "bn"),
      ("encoder", "mu_conv"): (e + "conv1", "conv_bias"),
      ("encoder", "logvar_conv"): (e + "conv2", "conv_bias"),
      ("decoder", "initial_convt"): (g + f"main.initial:{latent_dim}-{4 * ngf}:convt", "convt"),
      ("decoder", "initial_bn"): (g + f"main.initial:{4 * ngf}:batchnorm", "bn"),
      ("decoder", "pyramid_convt1"): (g + f"main.pyramid:{4 * ngf}-{2 * ngf}:convt", "convt"),
      ("decoder", "pyramid_bn1"): (g + f"main.pyramid:{2 * ngf}:batchnorm", "bn"),
      ("decoder", "pyramid_convt2"): (g + f"main.pyramid:{2 * ngf}-{ngf}:convt", "convt"),
      ("decoder", "pyramid_bn2"): (g + f"main.pyramid:{ngf}:batchnorm", "bn"),
      ("decoder", "final_convt"): (g + f"main.final:{ngf}-{channels}:convt", "convt"),
  }


def _get(arrays: Mapping[str, np.ndarray], key: str, where: str) -> np.ndarray:
  if key not in arrays:
    near = sorted(k for k in arrays if k.split("/")[0] == key.split("/")[0])
    raise CheckpointError(
        f"{where}: missing key {key!r}; the file has {len(arrays)} keys"
        f" ({', '.join(near[:12])}{', ...' if len(near) > 12 else ''}). Expected the"
        " Likelihood-Regret DCGAN VAE state_dicts with 'netE/' and 'netG/' prefixes.")
  return np.asarray(arrays[key])


def vae_from_torch_arrays(arrays: Mapping[str, np.ndarray], where: str = "weights",
                          fast_convt_grad: bool = True) -> tuple[ConvVAE, dict]:
  """Builds ``(ConvVAE, variables)`` from a mapping of prefixed torch state_dict arrays."""
  w_in = _get(arrays, "netE/main.input-conv.weight", where)
  w_mu = _get(arrays, "netE/conv1.weight", where)
  if w_in.ndim != 4 or w_mu.ndim != 4:
    raise CheckpointError(f"{where}: conv weights must be 4-D, got {w_in.shape} and {w_mu.shape}.")
  ngf, channels = int(w_in.shape[0]), int(w_in.shape[1])
  latent_dim = int(w_mu.shape[0])
  final_key = f"netG/main.final:{ngf}-{channels}:convt.weight"
  w_out = _get(arrays, final_key, where)
  out_ch = int(w_out.shape[1]) if w_out.ndim == 4 else -1
  per_channel = out_ch // channels if out_ch % channels == 0 else -1
  likelihood = {lik.num_params: name for name, lik in LIKELIHOODS.items()}.get(per_channel)
  if likelihood is None:
    raise CheckpointError(
        f"{where}: {final_key} has shape {w_out.shape}; expected {channels} x P output channels"
        f" with P in {sorted(l.num_params for l in LIKELIHOODS.values())}.")
  model = ConvVAE(image_shape=(32, 32, channels), latent_dim=latent_dim, ngf=ngf,
                  likelihood=likelihood, fast_convt_grad=fast_convt_grad)

  params: dict = {"encoder": {}, "decoder": {}}
  stats: dict = {"encoder": {}, "decoder": {}}
  for (part, name), (key, kind) in torch_key_map(latent_dim, ngf, channels).items():
    if kind in ("conv", "conv_bias"):
      p = {"kernel": _conv(_get(arrays, key + ".weight", where))}
      if kind == "conv_bias":
        p["bias"] = _get(arrays, key + ".bias", where)
      params[part][name] = p
    elif kind == "convt":
      params[part][name] = {"kernel": _convt(_get(arrays, key + ".weight", where))}
    else:
      params[part][name] = {"scale": _get(arrays, key + ".weight", where),
                            "bias": _get(arrays, key + ".bias", where)}
      stats[part][name] = {"mean": _get(arrays, key + ".running_mean", where),
                           "var": _get(arrays, key + ".running_var", where)}
  variables = {"params": params, "batch_stats": stats}

  expected = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(0)},
                         jnp.zeros((1, 32, 32, channels), jnp.uint8), train=False))
  exp_flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
              for path, v in jax.tree_util.tree_leaves_with_path(expected)}
  got_flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
              for path, v in jax.tree_util.tree_leaves_with_path(variables)}
  bad = [f"{k}: expected {tuple(v.shape)}, got {tuple(got_flat[k].shape)}"
         for k, v in exp_flat.items() if k in got_flat and tuple(got_flat[k].shape) != tuple(v.shape)]
  missing = sorted(set(exp_flat) - set(got_flat))
  if bad or missing:
    raise CheckpointError(
        f"{where}: weights do not fit ConvVAE(latent_dim={latent_dim}, ngf={ngf},"
        f" channels={channels}): " + "; ".join(bad + [f"{m}: missing" for m in missing]))
  variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
  return model, variables


def load_reference_vae(path_npz: str | os.PathLike, fast_convt_grad: bool = True
                       ) -> tuple[ConvVAE, dict]:
  """Loads the fixture's ``weights.npz`` -> ``(ConvVAE, {'params', 'batch_stats'})``.

  Raises ``CheckpointError`` when the file is missing/unreadable, a key is missing or a
  shape does not match the architecture inferred from the weights.
  """
  path = os.fspath(path_npz)
  try:
    with np.load(path) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read torch weights {path!r}: {e}") from e
  return vae_from_torch_arrays(arrays, where=path, fast_convt_grad=fast_convt_grad)
