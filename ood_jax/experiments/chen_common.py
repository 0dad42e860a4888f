"""Steps shared by the Chen (thesis, ch. 3) experiments: the backbones, their pairs, and the
per-model pieces every figure needs (reconstructions, samples, encodings, likelihoods).

Backbones (registry names): ``ae`` (the deterministic DCGAN autoencoder, Fig. 3.3),
``vae`` (the categorical-256 DCGAN VAE of Likelihood Regret / ROSE), ``vae_gaussian`` (the
same with the continuous Gaussian decoder, variance 0.1: Fig. 3.4) and ``gan_vae``
(Soft-IntroVAE on the same architecture, Gaussian decoder of variance 1/2: Fig. 3.6). All
share the checkpoint cache of the run, so the four Chen experiments train each backbone once.

Pairs: the thesis' are CelebA -> SVHN / LSUN and CIFAR-10 -> SVHN, of which only the ID
CIFAR-10 exists here (CelebA has no training split here, SVHN and LSUN are absent); they are
listed with the reason and the local pairs FashionMNIST -> MNIST and CIFAR-10 -> CelebA run.
"""

from __future__ import annotations

import jax
import numpy as np

from ood_jax.experiments import availability, pipeline
from ood_jax.experiments.kirichenko_table1 import plan

DEFAULT_PAIRS = "fashion_mnist:mnist,cifar10:celeb_a+svhn,celeb_a:svhn+lsun"
LIKELIHOOD_MODELS = ("vae", "vae_gaussian", "gan_vae")
BACKBONES = ("ae",) + LIKELIHOOD_MODELS
CHUNK = 256


def colour_models(r) -> list[str]:
  """The models run on colour ID sets (``--colour-models``: names, or 'all'; default every
  model of ``--models`` except, at ``cpu``, the categorical ``vae``, whose 3 x 256-way output
  layer makes it the one slow backbone there: 2.8 s per batch-64 colour step measured beside
  another job on 2 cores (2026-12-02), so the cpu budget's 2 epochs of CIFAR-10, 1562 steps, would
  take most of an hour)."""
  from ood_jax.errors import InvalidInputError
  text = r.options.get("colour_models")
  if text is None:
    return [m for m in r.models if not (r.preset == "cpu" and m == "vae")]
  if text.strip() == "all":
    return list(r.models)
  names = [n.strip() for n in text.split(",") if n.strip()]
  bad = [m for m in names if m not in r.models]
  if bad:
    raise InvalidInputError(f"--colour-models: {', '.join(bad)} not in --models {','.join(r.models)}.")
  return names


def models_for(r, ri, sets_by_model) -> list[str]:
  """The run's models that run on ``ri``'s ID set (colour sets: :func:`colour_models`)."""
  colour = colour_models(r)
  return [m for m in ri.models if sets_by_model[m].hwc[-1] != 3 or m in colour]


def colour_note(r, by_id) -> list[str]:
  """The report's line on models left out of colour ID sets (only if a colour set ran);
  ``by_id``: ``{id: {model: Sets}}`` as loaded by the experiment."""
  left = [m for m in r.models if m not in colour_models(r)]
  colour = any(st.hwc[-1] == 3 for sets in by_id.values() for st in sets.values())
  if not left or not colour:
    return []
  why = (" (at cpu the categorical VAE's 3 x 256-way output layer is the one slow backbone: "
         "2.8 s per batch-64 colour step measured beside another job, most of an hour for 2 "
         "epochs of CIFAR-10; `--colour-models all` runs it)" if r.preset == "cpu" and "vae" in left else "")
  return ["", f"Not run on colour ID sets (`--colour-models`): {', '.join(left)}{why}."]


def check_b(r) -> None:
  """``--b`` (a train-mode batch size) is None or an integer >= 2: checked before any work."""
  from ood_jax.errors import InvalidInputError
  b = r.options.get("b")
  if b is not None and int(b) < 2:
    raise InvalidInputError(f"--b must be at least 2 (a train-mode BatchNorm batch), got {b}.")


def batch_size(r) -> int:
  """``--b``, default 64 (Song et al.'s and the thesis' BatchNorm batch)."""
  b = r.options.get("b")
  return 64 if b is None else int(b)


GAUSSIAN_FLOOR_NOTE = (
    "Bits/dim of the Gaussian decoders are densities of the dequantised data (minus log 256 per "
    "sub-pixel), with a floor even at a perfect reconstruction: 1/2 log(2 pi sigma^2) + log 256 "
    "per dimension, 7.67 bits/dim for `vae_gaussian` (sigma^2 = 0.1) and 8.83 for `gan_vae` "
    "(1/2); compare them within a model (ID against OOD, AUROC), not with the categorical VAE's.")


COLOUR_OPTION_HELP = ("models run on colour ID sets: names, or 'all' (default: all, except the "
                      "categorical vae at cpu)")


def check_run(r, allowed, why: str) -> None:
  """The checks every Chen experiment makes before any work: ``--pairs`` parses,
  ``--colour-models`` names run models, and every model is one of ``allowed`` (``why``
  completes the error message)."""
  from ood_jax.errors import InvalidInputError
  availability.parse_pairs(r.options["pairs"])
  colour_models(r)
  bad = [m for m in r.models if m not in allowed]
  if bad:
    raise InvalidInputError(f"{r.experiment}: --models {','.join(bad)}: {why} "
                            f"({', '.join(allowed)}).")


def runs_for(r):
  """``(runs, runnable, skipped)``: one run per available pair of ``--pairs``."""
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  return [r.for_id(i, o) for i, o in runnable], runnable, skipped


def _chunked(fn, x: np.ndarray, chunk: int = CHUNK):
  """``fn`` over ``x`` in fixed chunks, outputs concatenated (pytrees); a short last chunk is
  filled with the first images of ``x`` (outputs discarded), so a train-mode batch holds
  images of the set only."""
  outs = []
  for s in range(0, len(x), chunk):
    xb = x[s:s + chunk]
    n = len(xb)
    if n < chunk and len(x) > chunk:
      xb = np.concatenate([xb, x[:chunk - n]])
    outs.append(jax.tree.map(lambda a: np.asarray(a)[:n], jax.device_get(fn(xb))))
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def reconstruct(trained: pipeline.Trained, x: np.ndarray) -> np.ndarray:
  """uint8 reconstructions (the decoder's mean at the posterior mean / the AE code)."""
  m, v = trained.model, trained.variables
  fn = jax.jit(lambda xb: m.apply(v, xb, False, method="reconstruct"))
  r = _chunked(fn, x)
  return np.clip(np.round(r * 255.0), 0, 255).astype(np.uint8)


def encode_mu(trained: pipeline.Trained, x: np.ndarray, train=False,
              chunk: int = CHUNK) -> np.ndarray:
  """float32 ``N x d``: the encoder's mean (the AE's code), BatchNorm per ``train`` (a bool
  or ``{'encoder': True}``; train mode normalises each ``chunk`` of consecutive images with
  its own statistics, a short last chunk filled with the set's first images)."""
  m, v = trained.model, trained.variables

  def f(xb):
    out = m.apply(v, xb, train, method="encode", mutable=["batch_stats"] if train else False)
    out = out[0] if train else out                 # drop the discarded batch statistics
    return out if trained.name == "ae" else out[0]  # the VAE's (mu, logvar): mu
  return _chunked(jax.jit(f), x, chunk).astype(np.float32)


def sampling_variables(trained: pipeline.Trained, seed: int):
  """The variables to decode prior latents with: the GAN-VAE's with its decoder BatchNorm
  statistics re-estimated on decoded prior samples (thesis 3.3.5), the others' as trained."""
  if trained.name != "gan_vae":
    return trained.variables
  from ood_jax.train.soft_intro import reestimate_decoder_bn
  return reestimate_decoder_bn(trained.model, trained.variables,
                               jax.random.fold_in(jax.random.PRNGKey(seed), 1))


def decode_images(trained: pipeline.Trained, z: np.ndarray, variables=None) -> np.ndarray:
  """uint8 images of the decoder's mean at latents ``z`` (``N x d``; eval-mode BatchNorm
  with ``variables``, default the trained ones)."""
  m = trained.model
  v = trained.variables if variables is None else variables
  fn = jax.jit(lambda zb: m.lik.mean(m.apply(v, zb, False, method="decode")))
  r = _chunked(fn, np.asarray(z, np.float32))
  return np.clip(np.round(r * 255.0), 0, 255).astype(np.uint8)


def samples(trained: pipeline.Trained, n: int, seed: int) -> np.ndarray:
  """``n`` uint8 images of the decoder's *mean* at prior latents ``z ~ N(0, I)`` (as the
  thesis' and Soft-IntroVAE's sample figures: no per-pixel likelihood noise, which for the
  Gaussian decoders is a standard deviation of 80-180 levels); for the GAN-VAE after
  re-estimating the decoder's BatchNorm statistics on decoded prior samples (thesis 3.3.5: "a
  step of preliminary domain adaptation"), for the others with their trained statistics."""
  v = sampling_variables(trained, seed)
  z = jax.random.normal(jax.random.PRNGKey(seed), (int(n), trained.model.latent_dim))
  return decode_images(trained, np.asarray(z), v)


def backbone_meta(trained: pipeline.Trained) -> dict:
  return {**trained.meta(), "train_config": dict(vars(trained.config)),
          "likelihood": getattr(trained.model, "likelihood", None)}


def data_sources(runs, by_id) -> dict:
  return {ri.id: pipeline.data_sources(next(iter(by_id[ri.id].values()))) for ri in runs}



def nats_to_bpd(nats: np.ndarray, hwc) -> np.ndarray:
  return pipeline.bits_per_dim(np.asarray(nats, np.float64), hwc)
