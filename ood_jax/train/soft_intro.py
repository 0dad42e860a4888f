"""Soft-IntroVAE (Daniel & Tamar, CVPR 2021): the GAN-VAE of Chen's thesis (§3.3.3-3.3.5).

The encoder is also the discriminator: it maximises the ELBO of real images and pushes down,
through the soft exponential term ``exp(2 s ELBO)``, the ELBO of reconstructions and of images
decoded from prior samples ("reconstruction together with random samples as part of fake
samples", thesis §3.3.5); the decoder maximises the ELBO of real images and makes the encoder
see its reconstructions and samples as real (low KL). :class:`SoftIntro` is an update rule of
``ood_jax.train.loop.train`` (``train(..., update=SoftIntro())``): per batch, the encoder step
then the decoder step, in one jit-compiled step, as the reference's training loop.

Reference: ``taldatech/soft-intro-vae-pytorch``, ``soft_intro_vae/train_soft_intro_vae.py``
(commit b6dbf16; "ref L<n>" below are its lines), read and rewritten here, not copied.
With ``s = 1 / (C H W)`` (ref L456), per-image sums of squared errors ``SSE`` and analytic
``KL(q(z|x) || N(0, I))`` summed over the latent (``calc_kl``, ref L231-251), batch means
``E[.]``:

* encoder step (ref L551-589; decoder frozen, its outputs for the fakes detached)::

    fake = D(z_p),  z_p ~ N(0, I)                      (train-mode decoder, no gradient)
    z = mu(x) + sigma(x) eps,  rec = D(z)
    L_E = s (beta_rec E[SSE(x, rec)] + beta_kl E[KL(x)])
          + 1/4 (E[exp(-2 s (beta_rec SSE(rec, D(z_rr)) + beta_neg KL(sg(rec))))]
                 + E[exp(-2 s (beta_rec SSE(fake, D(z_ff)) + beta_neg KL(fake)))])

  where ``z_rr`` / ``z_ff`` are fresh reparameterised latents of the encoder on ``sg(rec)`` /
  ``fake`` (``sg`` = stop-gradient). As in the reference (ref L573), the *target* of the
  reconstruction-of-reconstruction error is ``rec`` itself, not detached: that term's gradient
  also reaches the encoder through the real image's latent ``z``.
* decoder step (ref L591-624; encoder frozen, at its parameters after the encoder step)::

    fake = D(z_p),  rec = D(sg(z))                    (the same z_p and z as above)
    z_r ~ q(z | rec),  z_f ~ q(z | fake)               (fresh noise; gradients reach D through q)
    L_D = s (beta_rec E[SSE(x, rec)] + beta_kl / 2 (E[KL(rec)] + E[KL(fake)])
             + gamma_r beta_rec / 2 (E[SSE(sg(rec), D(sg(z_r)))] + E[SSE(sg(fake), D(sg(z_f)))]))

* plain-VAE warm-up (``vae_steps``, the reference's ``num_vae`` epochs counted in steps, ref
  L512-533): ``beta_rec E[SSE(x, rec)] + beta_kl E[KL(x)]`` (unscaled, as there), one gradient
  for both networks, both optimisers stepping.

Images and reconstruction error: decoded images are ``lik.mean(decode(z))`` on [0, 1] (the
sigmoid of the decoder's output for the ``gaussian`` likelihood; **a deviation**: the
reference decoder's last layer is a plain convolution with no output nonlinearity, whose
outputs the loss compares with [0, 1] images directly) and go back into the encoder
as floats (``ConvVAE.encode_unit``); real images enter the encoder as ``x / 255``. The loss is
the reference's ``'mse'`` type: ``F.mse_loss(reduction='none')`` summed per image, then
averaged over the batch (ref L268-294). The model must use a ``gaussian`` likelihood; with
``gaussian:0.5`` (the ``gan_vae`` default) ``SSE(x, rec) = -log p(x|z) - D (1/2 log pi + log
256)``: the real-image reconstruction term is the decoder's own log-density up to a constant,
so the trained model's IWAE likelihood (``ConvVAE.log_prob``) is the one its ELBO bounds. For
that the real images' target is the likelihood's dequantised pixel, the bin centre ``(x + 1/2)
/ 256`` (``likelihoods.py``), not the reference's ``x / 255`` (at most ``0.5 / 255`` apart).

Hyper-parameters (:class:`SoftIntro` defaults): the reference's CIFAR-10 values, the thesis
gives none: ``beta_kl = beta_rec = 1``, ``beta_neg = 256`` (``soft_intro_vae/README.md`` L66,
``main.py`` L13 and the README's example command L46); ``gamma_r = 1e-8`` (``main.py`` L36, the
default of ``--gamma_r``, not passed by that command); ``num_vae = 0`` (``main.py`` L28, not
passed): no plain-VAE warm-up. The ``gan_vae`` model's training recipe
(``ood_jax/models/gan_vae.py``) takes lr 2e-4 for both Adams (``main.py`` L26 / L50, README
L46; torch's Adam defaults b1 0.9, b2 0.999, eps 1e-8, ref L450-451), batch 32 (README L66),
z_dim 128 is not taken (our DCGAN VAE's latent sizes are the presets').

Optimisers: two, built from the ``TrainConfig`` as the default step's one
(``optim.optimizer_parts``: Adam at ``learning_rate`` with its warm-up / decay schedule; the
global-norm clipping of ``clip_grad_norm`` applies to each network's gradient separately); the
reference has no clipping and its lr milestone (epoch 350, ref L453-454) lies past its 250
epochs (a constant lr).

BatchNorm: every forward in train mode (batch statistics), as the reference's ``model.train()``.
The running averages are threaded through the forwards of one step in the reference's order
(torch updates them at every train-mode forward): encoder step ``D(z_p)``, ``E(x)``, ``D(z)``,
``E(rec)``, ``D(z_rr)``, ``E(fake)``, ``D(z_ff)``; decoder step ``D(z_p)``, ``D(z)``, ``E(rec)``,
``E(fake)``, ``D(z_r)``, ``D(z_f)`` (warm-up: ``E(x)``, ``D(z)``). So, as in the reference, the
encoder's running statistics average real, reconstructed and generated inputs and the
decoder's posterior and prior latents (thesis §3.3.5); the eval-mode likelihood uses them as
trained, and ``reestimate_decoder_bn`` (``ood_jax.models.gan_vae``, a model-level operation
that needs no training code; re-exported here) re-estimates the decoder's on prior samples
before sampling. The threading changes only the running averages: train-mode
outputs (and so the losses and gradients) do not depend on them.

Randomness: one ``N(0, I)`` draw from ``fold_in(PRNGKey(seed), step)``: the prior latent and
the five reparameterisation noises (one of the real batch, shared by both steps as the reference's
``z``; fresh ones for each encoding of a reconstruction or fake), so a resumed run is exact.

Statistics of a step (the training history keeps their log-period means): ``loss`` = ``L_E +
L_D`` (the warm-up's loss there), ``loss_e``, ``loss_d``, ``id_loss`` = the negative ELBO of the
real batch in nats per image under the model's likelihood (``-log p(x|z) + KL``, one sample, for
bits/dim), ``rec`` (mean SSE of the real batch), ``kl`` (its mean KL), ``kl_rec`` / ``kl_fake``
(the decoder step's, as the reference logs), ``exp_elbo_rec`` / ``exp_elbo_fake`` and
``grad_norm`` (the global norm of both gradients, before clipping; the NaN guard's). In warm-up
steps the Soft-IntroVAE-only ones are 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ood_jax.errors import InvalidInputError
from ood_jax.models.gan_vae import reestimate_decoder_bn  # noqa: F401  (re-exported, see below)
from ood_jax.models.likelihoods import NUM_LEVELS, image_sum
from ood_jax.models.vae import gaussian_kl
from ood_jax.train.config import TrainConfig
from ood_jax.train.optim import learning_rate_schedule, optimizer_parts
from ood_jax.train.state import TrainState

TRAINER = "soft_intro"        # ModelSpec.trainer of models trained with SoftIntro


@dataclasses.dataclass(frozen=True)
class SoftIntro:
  """Soft-IntroVAE's weights (module docstring; defaults: the reference's CIFAR-10 values).

  Attributes:
    beta_rec: weight of the reconstruction error (real and, in the exponent, fake).
    beta_kl: weight of the real images' KL (encoder) and of the fakes' KL (decoder).
    beta_neg: weight of the fakes' KL in the encoder's exponential term.
    gamma_r: weight of the decoder's reconstruction error of its own fakes.
    vae_steps: steps of plain-VAE training first (the reference's ``num_vae``, in steps;
      0 = none, the reference's CIFAR-10 run).
  """
  beta_rec: float = 1.0
  beta_kl: float = 1.0
  beta_neg: float = 256.0
  gamma_r: float = 1e-8
  vae_steps: int = 0

  def __post_init__(self):
    for name in ("beta_rec", "beta_kl", "beta_neg"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise InvalidInputError(f"SoftIntro: {name} must be a finite number > 0, got {v!r}.")
    if not (isinstance(self.gamma_r, (int, float)) and math.isfinite(self.gamma_r)
            and self.gamma_r >= 0):
      raise InvalidInputError(
          f"SoftIntro: gamma_r must be a finite number >= 0, got {self.gamma_r!r}.")
    steps = self.vae_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
      raise InvalidInputError(f"SoftIntro: vae_steps must be an integer >= 0, got {steps!r}.")

  # ------------------------------------------------------------------ UpdateRule
  def describe(self) -> dict:
    return {"name": TRAINER, **dataclasses.asdict(self)}

  def optimizers(self, config: TrainConfig, steps_per_epoch: int):
    """``(tx_encoder, tx_decoder)``: two independent optimisers of ``config``'s kind."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    return (optax.chain(*optimizer_parts(config, lr)), optax.chain(*optimizer_parts(config, lr)))

  def init(self, params: Any, config: TrainConfig, steps_per_epoch: int) -> tuple:
    tx_e, tx_d = self.optimizers(config, steps_per_epoch)
    return (tx_e.init(params["encoder"]), tx_d.init(params["decoder"]))

  def make_step(self, model: nn.Module, config: TrainConfig, seed: int, steps_per_epoch: int):
    """``step(state, batch) -> (state, stats)`` (module docstring), for ``loop.train``."""
    check_model(model)
    tx_e, tx_d = self.optimizers(config, steps_per_epoch)
    base = jax.random.PRNGKey(seed)
    hp = self

    def noises(state, n):
      # z_p, eps_real, eps_rr, eps_ff (encoder step), eps_r, eps_f (decoder step): one draw.
      e = jax.random.normal(jax.random.fold_in(base, state.step), (6, n, model.latent_dim))
      return list(e)

    def intro(state: TrainState, x):
      z_p, e_real, e_rr, e_ff, e_r, e_f = noises(state, x.shape[0])
      enc, dec = state.params["encoder"], state.params["decoder"]
      stats = state.model_state["batch_stats"]
      (loss_e, (stats, te)), g_e = jax.value_and_grad(
          lambda p: encoder_loss(model, hp, p, dec, stats, x, z_p, (e_real, e_rr, e_ff)),
          has_aux=True)(enc)
      upd, opt_e = tx_e.update(g_e, state.opt_state[0], enc)
      enc = optax.apply_updates(enc, upd)
      (loss_d, (stats, td)), g_d = jax.value_and_grad(
          lambda p: decoder_loss(model, hp, p, enc, stats, x, z_p, te["z"], (e_r, e_f)),
          has_aux=True)(dec)
      upd, opt_d = tx_d.update(g_d, state.opt_state[1], dec)
      dec = optax.apply_updates(dec, upd)
      out = {"loss": loss_e + loss_d, "loss_e": loss_e, "loss_d": loss_d,
             "id_loss": te["neg_elbo"], "rec": te["rec"], "kl": te["kl"],
             "kl_rec": td["kl_rec"], "kl_fake": td["kl_fake"],
             "exp_elbo_rec": te["exp_elbo_rec"], "exp_elbo_fake": te["exp_elbo_fake"],
             "grad_norm": optax.global_norm((g_e, g_d))}
      return _updated(state, enc, dec, stats, (opt_e, opt_d)), out

    def vae(state: TrainState, x):
      _, e_real, *_ = noises(state, x.shape[0])
      stats = state.model_state["batch_stats"]
      (loss, (stats, t)), g = jax.value_and_grad(
          lambda p: vae_loss(model, hp, p, stats, x, e_real), has_aux=True)(state.params)
      upd, opt_e = tx_e.update(g["encoder"], state.opt_state[0], state.params["encoder"])
      enc = optax.apply_updates(state.params["encoder"], upd)
      upd, opt_d = tx_d.update(g["decoder"], state.opt_state[1], state.params["decoder"])
      dec = optax.apply_updates(state.params["decoder"], upd)
      zero = jnp.zeros((), jnp.float32)
      out = {"loss": loss, "loss_e": zero, "loss_d": zero, "id_loss": t["neg_elbo"],
             "rec": t["rec"], "kl": t["kl"], "kl_rec": zero, "kl_fake": zero,
             "exp_elbo_rec": zero, "exp_elbo_fake": zero,
             "grad_norm": optax.global_norm(g)}
      return _updated(state, enc, dec, stats, (opt_e, opt_d)), out

    if self.vae_steps == 0:
      return intro
    return lambda state, x: jax.lax.cond(state.step < self.vae_steps, vae, intro, state, x)


def _updated(state: TrainState, enc, dec, batch_stats, opt_state) -> TrainState:
  return state.replace(params={**state.params, "encoder": enc, "decoder": dec},
                       model_state={**state.model_state, "batch_stats": batch_stats},
                       opt_state=opt_state)


def check_model(model: nn.Module) -> None:
  """``InvalidInputError`` unless ``model`` is a ConvVAE-like module (``encode``,
  ``encode_unit``, ``decode``, ``latent_dim``, ``lik``) with a ``gaussian`` likelihood."""
  need = ("encode", "encode_unit", "decode", "latent_dim", "lik", "image_shape")
  missing = [a for a in need if not hasattr(model, a)]
  if missing:
    raise InvalidInputError(f"SoftIntro trains a VAE with {', '.join(need)} (ConvVAE); "
                            f"{type(model).__name__} has no {', '.join(missing)}.")
  name = model.lik.name
  if not name.startswith("gaussian"):
    raise InvalidInputError(
        f"SoftIntro's reconstruction error is a sum of squared errors: the model needs a "
        f"'gaussian' likelihood ('gaussian:0.5': the SSE is its log-density), got {name!r}.")


# ----------------------------------------------------------------------------- forwards


def real_target(x_uint8: jax.Array) -> jax.Array:
  """The [0, 1] image real reconstructions are compared with: the ``gaussian`` likelihood's
  dequantised pixel ``(x + 1/2) / 256`` (module docstring)."""
  return (jnp.asarray(x_uint8).astype(jnp.float32) + 0.5) / NUM_LEVELS


def sse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image sum of squared errors of ``N x H x W x C`` images, float32 ``N``."""
  return jnp.sum(jnp.square(a - b), axis=tuple(range(1, a.ndim)))


def _vars(enc, dec, stats) -> dict:
  return {"params": {"encoder": enc, "decoder": dec}, "batch_stats": stats}


def _encode(model, enc, dec, stats, x, unit: bool):
  """Train-mode encoder on uint8 ``x`` (``unit=False``) or [0, 1] floats: (mu, logvar, stats)."""
  method = type(model).encode_unit if unit else type(model).encode
  (mu, logvar), upd = model.apply(_vars(enc, dec, stats), x, True, method=method,
                                  mutable=["batch_stats"])
  return mu, logvar, upd["batch_stats"]


def _decode(model, enc, dec, stats, z):
  """Train-mode decoder: (raw output N x H x W x C x P, mean image on [0, 1], stats)."""
  out, upd = model.apply(_vars(enc, dec, stats), z, True, method=type(model).decode,
                         mutable=["batch_stats"])
  return out, model.lik.mean(out), upd["batch_stats"]


def _reparam(mu, logvar, eps):
  return mu + jnp.exp(0.5 * logvar) * eps


def _exp_elbo(hp: SoftIntro, scale: float, rec_err, kl):
  """``E[exp(-2 s (beta_rec rec_err + beta_neg kl))]`` (ref L580-581)."""
  return jnp.mean(jnp.exp(-2.0 * scale * (hp.beta_rec * rec_err + hp.beta_neg * kl)))


def image_scale(model: nn.Module) -> float:
  """``s = 1 / (C H W)`` (ref L456)."""
  return 1.0 / math.prod(model.image_shape)


# ----------------------------------------------------------------------------- losses


def encoder_loss(model: nn.Module, hp: SoftIntro, enc_params, dec_params, batch_stats,
                 x_uint8, z_prior, eps) -> tuple[jax.Array, tuple[Any, dict]]:
  """The encoder step's loss ``L_E`` (module docstring), a function of ``enc_params``.

  ``z_prior``: the prior latents of the fakes, ``N x d``; ``eps = (eps_real, eps_rec,
  eps_fake)``: the reparameterisation noises of the real batch and of the encodings of its
  reconstructions and of the fakes, each ``N x d``. Returns ``(L_E, (batch_stats, terms))``:
  the running statistics after the seven forwards (in the reference's order) and ``terms``:
  ``rec``, ``kl``, ``exp_elbo_rec``, ``exp_elbo_fake``, ``neg_elbo`` (nats per image) and
  ``z`` (the real latents, for the decoder step).
  """
  eps_real, eps_rec, eps_fake = eps
  s = image_scale(model)
  dec_params = jax.lax.stop_gradient(dec_params)
  # The fakes: decoder frozen, no gradient (ref L557).
  _, fake, st = _decode(model, enc_params, dec_params, batch_stats, z_prior)
  fake = jax.lax.stop_gradient(fake)
  mu, logvar, st = _encode(model, enc_params, dec_params, st, x_uint8, unit=False)
  z = _reparam(mu, logvar, eps_real)
  out, rec, st = _decode(model, enc_params, dec_params, st, z)
  rec_err = sse(real_target(x_uint8), rec)
  kl = gaussian_kl(mu, logvar)
  # Reconstructions and fakes through the whole VAE again (ref L567-568).
  mu_r, logvar_r, st = _encode(model, enc_params, dec_params, st,
                               jax.lax.stop_gradient(rec), unit=True)
  _, rec_rec, st = _decode(model, enc_params, dec_params, st, _reparam(mu_r, logvar_r, eps_rec))
  mu_f, logvar_f, st = _encode(model, enc_params, dec_params, st, fake, unit=True)
  _, rec_fake, st = _decode(model, enc_params, dec_params, st, _reparam(mu_f, logvar_f, eps_fake))
  # The target of the reconstruction's reconstruction error is rec itself (ref L573).
  exp_rec = _exp_elbo(hp, s, sse(rec, rec_rec), gaussian_kl(mu_r, logvar_r))
  exp_fake = _exp_elbo(hp, s, sse(fake, rec_fake), gaussian_kl(mu_f, logvar_f))
  loss = (s * (hp.beta_rec * jnp.mean(rec_err) + hp.beta_kl * jnp.mean(kl))
          + 0.25 * (exp_rec + exp_fake))
  neg_elbo = jnp.mean(kl - image_sum(model.lik.log_prob(out, jnp.asarray(x_uint8))))
  terms = {"rec": jnp.mean(rec_err), "kl": jnp.mean(kl), "exp_elbo_rec": exp_rec,
           "exp_elbo_fake": exp_fake, "neg_elbo": jax.lax.stop_gradient(neg_elbo),
           "z": jax.lax.stop_gradient(z)}
  return loss, (st, terms)


def decoder_loss(model: nn.Module, hp: SoftIntro, dec_params, enc_params, batch_stats,
                 x_uint8, z_prior, z_real, eps) -> tuple[jax.Array, tuple[Any, dict]]:
  """The decoder step's loss ``L_D`` (module docstring), a function of ``dec_params``.

  ``enc_params``: the encoder after its step (frozen here); ``z_prior``: the same prior
  latents as the encoder step's; ``z_real``: the encoder step's real latents (``terms['z']``);
  ``eps = (eps_rec, eps_fake)``: fresh noises of the encodings of the reconstructions and
  fakes. Returns ``(L_D, (batch_stats, terms))`` after the six forwards (the reference's
  order); ``terms``: ``rec``, ``kl_rec``, ``kl_fake``, ``rec_rec``, ``rec_fake`` (batch means).
  """
  eps_rec, eps_fake = eps
  s = image_scale(model)
  enc_params = jax.lax.stop_gradient(enc_params)
  _, fake, st = _decode(model, enc_params, dec_params, batch_stats, z_prior)
  _, rec, st = _decode(model, enc_params, dec_params, st, jax.lax.stop_gradient(z_real))
  rec_err = jnp.mean(sse(real_target(x_uint8), rec))
  mu_r, logvar_r, st = _encode(model, enc_params, dec_params, st, rec, unit=True)
  mu_f, logvar_f, st = _encode(model, enc_params, dec_params, st, fake, unit=True)
  z_r = jax.lax.stop_gradient(_reparam(mu_r, logvar_r, eps_rec))
  z_f = jax.lax.stop_gradient(_reparam(mu_f, logvar_f, eps_fake))
  _, rec_rec, st = _decode(model, enc_params, dec_params, st, z_r)
  _, rec_fake, st = _decode(model, enc_params, dec_params, st, z_f)
  rr = jnp.mean(sse(jax.lax.stop_gradient(rec), rec_rec))
  rf = jnp.mean(sse(jax.lax.stop_gradient(fake), rec_fake))
  kl_rec = jnp.mean(gaussian_kl(mu_r, logvar_r))
  kl_fake = jnp.mean(gaussian_kl(mu_f, logvar_f))
  loss = s * (hp.beta_rec * rec_err + 0.5 * hp.beta_kl * (kl_rec + kl_fake)
              + 0.5 * hp.gamma_r * hp.beta_rec * (rr + rf))
  terms = {"rec": rec_err, "kl_rec": kl_rec, "kl_fake": kl_fake, "rec_rec": rr, "rec_fake": rf}
  return loss, (st, terms)


def vae_loss(model: nn.Module, hp: SoftIntro, params, batch_stats, x_uint8,
             eps_real) -> tuple[jax.Array, tuple[Any, dict]]:
  """The plain-VAE warm-up loss ``beta_rec E[SSE] + beta_kl E[KL]`` (ref L522-527, unscaled),
  a function of all ``params``; returns ``(loss, (batch_stats, terms))``, ``terms``: ``rec``,
  ``kl``, ``neg_elbo``."""
  enc, dec = params["encoder"], params["decoder"]
  mu, logvar, st = _encode(model, enc, dec, batch_stats, x_uint8, unit=False)
  out, rec, st = _decode(model, enc, dec, st, _reparam(mu, logvar, eps_real))
  rec_err = jnp.mean(sse(real_target(x_uint8), rec))
  kl = gaussian_kl(mu, logvar)
  neg_elbo = jnp.mean(kl - image_sum(model.lik.log_prob(out, jnp.asarray(x_uint8))))
  loss = hp.beta_rec * rec_err + hp.beta_kl * jnp.mean(kl)
  return loss, (st, {"rec": rec_err, "kl": jnp.mean(kl),
                     "neg_elbo": jax.lax.stop_gradient(neg_elbo)})
