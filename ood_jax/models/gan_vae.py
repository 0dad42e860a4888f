"""The GAN-VAE of Chen's thesis (Chapter 3, §3.3.3-3.3.5): the DCGAN ConvVAE trained as
Soft-IntroVAE (Daniel & Tamar 2021), and its decoder BatchNorm re-estimation for sampling.

The model is :class:`ood_jax.models.vae.ConvVAE` itself (the thesis: "the same architecture
but different training"), with the continuous ``gaussian:0.5`` likelihood, whose negative
log-density is Soft-IntroVAE's sum of squared errors up to a constant; its likelihood is
estimated exactly as the VAE's (IWAE, ``ConvVAE.log_prob``). ``ModelSpec.trainer =
'soft_intro'`` tells the train layer to train it with ``ood_jax.train.soft_intro.SoftIntro``
(``ood_jax.train.update_for``), whose docstring states the losses, the hyper-parameters taken
from the reference code and the BatchNorm threading.

:func:`reestimate_decoder_bn` is the thesis's "step of preliminary domain adaptation" (§3.3.5):
the decoder's BatchNorm running statistics, trained on a mix of posterior and prior latents,
are replaced by population statistics of decoded prior samples ``z ~ N(0, I)``. Use it
before sampling only (``ConvVAE.sample`` with the returned variables); likelihoods and scores
use the trained statistics.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.models.spec import ModelSpec
from ood_jax.models.vae import PRESETS as VAE_PRESETS
from ood_jax.models.vae import ConvVAE, vae_objective

# ------------------------------------------------------------------------------ spec

# The VAE's sizes: ngf 8 / latent 16 (smoke), ngf 32 / latent 100 grey and ngf 64 / latent 200
# colour (cpu, paper).
PRESETS = {k: VAE_PRESETS[k] for k in ("smoke", "cpu", "paper")}

# The Soft-IntroVAE recipe (reference soft_intro_vae/main.py L26 and README.md L46 / L66, the
# CIFAR-10 values): Adam lr 2e-4 for both networks, batch 32, a constant lr (the reference's
# milestone at epoch 350 lies past its 250 epochs). Ours for stability (the reference has
# neither): a linear lr warm-up over the first 500 steps (both networks; no plain-VAE phase,
# SoftIntro.vae_steps = 0 as the reference's CIFAR-10 run) and global-norm clipping at 10 per
# network: the gradient norms of healthy steps were 0.08-0.3 (the first 400 steps on
# FashionMNIST, the cpu sizes), so it only stops spikes and never rescales a normal step.
TRAIN_DEFAULTS = dict(learning_rate=2e-4, batch_size=32, halve_every_epochs=None,
                      warmup_steps=500, clip_grad_norm=10.0)

# cpu: the largest budget that trains in about an hour on the 2-core machine. Measured step
# (batch 32, niced, while another job kept the load at ~3.5 on the 2 cores: an upper
# estimate; 2026-12-02): colour (ngf 64, latent 200) 0.87 s, grey (ngf 32, latent 100)
# 0.25 s. 4000 steps x 0.87 s = 58 min colour, x 0.25 s = 17 min grey; one budget serves
# both, so the colour one sets it. In steps, not epochs, so that it holds for any ID set
# (2.6 epochs of CIFAR-10, 2.1 of FashionMNIST, 1.7 of SVHN). Compiling takes ~20 s more.
# paper: the reference's CIFAR-10 250 epochs (main.py L24, README L46). Both keep the lr
# constant (the cpu / paper presets would halve it).
BUDGETS = {"cpu": {"num_steps": 4000, "halve_every_epochs": None},
           "paper": {"epochs": 250.0, "halve_every_epochs": None}}

SPEC = ModelSpec(
    name="gan_vae", module=ConvVAE, presets=PRESETS, defaults={"likelihood": "gaussian:0.5"},
    input_size=32, train_defaults=TRAIN_DEFAULTS, budgets=BUDGETS,
    rose_layers=("encoder/*conv*",), batchnorm_parts=("encoder", "decoder"),
    objective=vae_objective, trainer="soft_intro",
    about="GAN-VAE: the DCGAN conv VAE trained as Soft-IntroVAE (Chen's thesis; gaussian:0.5)")


# ------------------------------------------------------------------------------ BN re-estimation


def _bn_inputs(model: ConvVAE, variables: dict, z: jax.Array) -> list:
  """``[(path, x)]``: the input of every BatchNorm call of the eval-mode decoder on ``z``,
  in call order (``path`` the module's name path, e.g. ``('decoder', 'initial_bn')``)."""
  found = []

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      found.append((tuple(context.module.path), args[0]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model.apply(variables, z, False, method=ConvVAE.decode)
  return found


def _chunk_moments(model: ConvVAE):
  """A jitted ``(variables, z) -> [(count, mean, M2)]`` per decoder BatchNorm, in call order
  (per channel, over all axes but the channel's: ``count`` values each, ``M2`` the sum of
  squared deviations from the chunk's mean)."""

  def moments(variables, z):
    out = []
    for _, x in _bn_inputs(model, variables, z):
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      count = jnp.asarray(int(np.prod(x.shape[:-1])), jnp.int32)
      out.append((count, mean, jnp.sum(jnp.square(x - mean), axis=axes)))
    return out

  return jax.jit(moments)


def _bn_paths(model: ConvVAE, variables: dict, z: jax.Array) -> list[tuple]:
  """The paths of the decoder's BatchNorm calls, in call order (traced, not run)."""
  paths = []

  def trace(v, zz):
    paths.extend(p for p, _ in _bn_inputs(model, v, zz))
    return jnp.zeros(())

  jax.eval_shape(trace, variables, z)
  return paths


def _set(tree: dict, path: tuple, leaf: dict) -> dict:
  """A copy of the nested dict ``tree`` with ``tree[path[0]]...[path[-1]] = leaf``."""
  if len(path) == 1:
    return {**tree, path[0]: leaf}
  return {**tree, path[0]: _set(tree[path[0]], path[1:], leaf)}


def _get(tree: dict, path: tuple):
  for p in path:
    tree = tree[p]
  return tree


def reestimate_decoder_bn(model: ConvVAE, variables: dict, rng: jax.Array,
                          num_samples: int = 10_000, batch_size: int = 500) -> dict:
  """``variables`` with the decoder's BatchNorm statistics re-estimated on prior samples.

  ``num_samples`` latents ``z ~ N(0, I)`` (from ``rng``) go through the eval-mode decoder in
  chunks of ``batch_size``; each BatchNorm's running ``mean`` / ``var`` become the exact mean
  and *biased* variance (flax's convention: the batch variance that train mode normalises with
  and its running average tracks, no Bessel correction) of its input over all samples and
  positions, layer by layer in call order, each layer's input computed with the layers before
  it already re-estimated. So the result is a fixed point: in eval mode, on these samples,
  every decoder BatchNorm sees inputs of exactly its stored mean and variance (torch's
  ``momentum=None`` cumulative average of train-mode batch statistics approximates this; it
  averages per-batch variances instead). Moments are combined over chunks in float64 (Chan
  et al.'s pairwise update), so the result does not depend on ``batch_size`` beyond float32
  rounding. The encoder's statistics and all parameters are unchanged. For sampling only
  (module docstring).
  """
  for name, v in (("num_samples", num_samples), ("batch_size", batch_size)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise InvalidInputError(f"reestimate_decoder_bn: {name} must be an integer >= 1, got {v!r}.")
  if "decoder" not in variables.get("batch_stats", {}):
    raise InvalidInputError("reestimate_decoder_bn: the variables have no decoder batch_stats.")
  n, b = int(num_samples), int(batch_size)
  z = jax.random.normal(rng, (n, model.latent_dim), jnp.float32)
  chunks = [z[i:i + b] for i in range(0, n, b)]
  moments = _chunk_moments(model)
  stats = variables["batch_stats"]
  for k, path in enumerate(_bn_paths(model, variables, chunks[0])):
    count, mean, m2 = 0, 0.0, 0.0
    for c in chunks:    # layer k's input depends only on the layers before it (re-estimated)
      cn, cm, cm2 = jax.device_get(moments({**variables, "batch_stats": stats}, c)[k])
      cn, cm, cm2 = int(cn), np.asarray(cm, np.float64), np.asarray(cm2, np.float64)
      total = count + cn
      delta = cm - mean
      mean = mean + delta * (cn / total)
      m2 = m2 + cm2 + delta ** 2 * (count * cn / total)
      count = total
    old = _get(stats, path)
    stats = _set(stats, path, {"mean": jnp.asarray(mean, old["mean"].dtype),
                               "var": jnp.asarray(m2 / count, old["var"].dtype)})
  return {**variables, "batch_stats": stats}
