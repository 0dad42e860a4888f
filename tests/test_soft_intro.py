"""Soft-IntroVAE (``ood_jax.train.soft_intro``) and the ``gan_vae`` model: the two losses
against a direct NumPy computation, training through ``train(..., update=)`` (losses fall,
NaN guard, exact resume, checkpoint meta, the plain-VAE warm-up), the decoder BatchNorm
re-estimation, the registry settings.

Speed (2-core XLA:CPU): each ``train`` call compiles its step afresh (~12 s for this tiny
model on a loaded machine) and the first ConvVAE init of a shape ~20 s (one threefry per
parameter). The train tests share one model shape and one module-scoped run, and a
compilation cache local to this module (``_compile_cache``) makes the repeated compiles of
one step program (the resume test's two runs) cache hits. The loss tests draw their
variables with numpy (no init) and jit the few forwards they need.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import CheckpointError, InvalidInputError, TrainingDivergedError
from ood_jax.models import ConvVAE, make_model, spec_of
from ood_jax.models import registry
from ood_jax.models.gan_vae import reestimate_decoder_bn
from ood_jax.models.likelihoods import image_sum
from ood_jax.train import SoftIntro, TrainConfig, mean_id_loss, train, update_for
from ood_jax.train import soft_intro as si

MODEL = ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4, likelihood="gaussian:0.5")
D = 32 * 32
# Weights that make every term of the losses visible (the defaults' beta_neg = 256 drives the
# exponential terms to ~0 on a random model) and tell swapped coefficients apart.
HP = SoftIntro(beta_rec=0.7, beta_kl=1.3, beta_neg=20.0, gamma_r=0.5)
CFG = TrainConfig(batch_size=16, num_steps=24, learning_rate=3e-3, halve_every_epochs=None,
                  warmup_steps=4, clip_grad_norm=10.0, log_every=4, checkpoint_every=8)


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
  """A persistent compilation cache for this module only (restored afterwards)."""
  try:
    from jax._src import compilation_cache as cc
  except ImportError:          # another jax: the tests only run slower
    yield
    return
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {k: getattr(jax.config, k) for k in keys}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  cc.reset_cache()
  yield
  for k, v in old.items():
    jax.config.update(k, v)
  cc.reset_cache()


def _blobs(n=48, seed=0):
  """Grey 32 x 32 images of one bright Gaussian blob each."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:32, :32]
  cy, cx = rng.integers(8, 24, n), rng.integers(8, 24, n)
  img = 255 * np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 40.0)
  return img.astype(np.uint8)[..., None]


def _variables(seed=0):
  """Random variables of MODEL drawn with numpy: weights large enough for non-trivial
  outputs, and BatchNorm running statistics far from (0, 1) so that threading shows."""
  x = np.zeros((2, 32, 32, 1), np.uint8)
  shapes = jax.eval_shape(lambda: MODEL.init({"params": jax.random.key(0),
                                              "sample": jax.random.key(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      v = rng.normal(0, 0.15, s.shape)
    elif name == "scale":
      v = 1 + rng.normal(0, 0.1, s.shape)
    elif name == "var":
      v = rng.uniform(0.5, 2.0, s.shape)
    else:                                   # biases, running means
      v = rng.normal(0, 0.1, s.shape)
    return jnp.asarray(v, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- the losses

@jax.jit
def _enc(v, x):
  """Train-mode encoder on uint8 images: ((mu, logvar), batch_stats)."""
  out, upd = MODEL.apply(v, x, True, method=ConvVAE.encode, mutable=["batch_stats"])
  return out, upd["batch_stats"]


@jax.jit
def _enc_unit(v, x):
  out, upd = MODEL.apply(v, x, True, method=ConvVAE.encode_unit, mutable=["batch_stats"])
  return out, upd["batch_stats"]


@jax.jit
def _dec(v, z):
  out, upd = MODEL.apply(v, z, True, method=ConvVAE.decode, mutable=["batch_stats"])
  return out, upd["batch_stats"]


class _Chain:
  """The forwards of one step, one model.apply each, running statistics threaded in order."""

  def __init__(self, variables):
    self.params, self.stats = variables["params"], variables["batch_stats"]

  def _v(self):
    return {"params": self.params, "batch_stats": self.stats}

  def enc(self, x, unit):
    (mu, lv), self.stats = (_enc_unit if unit else _enc)(self._v(), x)
    return np.asarray(mu, np.float64), np.asarray(lv, np.float64)

  def dec(self, z):
    out, self.stats = _dec(self._v(), jnp.asarray(z, jnp.float32))
    return 1.0 / (1.0 + np.exp(-np.asarray(out, np.float64)[..., 0]))   # the Gaussian's mean


def _np_sse(a, b):
  return np.sum((a - b) ** 2, axis=(1, 2, 3))


def _np_kl(mu, lv):
  return -0.5 * np.sum(1 + lv - mu ** 2 - np.exp(lv), axis=-1)


def _noise(seed, n=8, count=6):
  return [np.random.default_rng(seed + i).normal(size=(n, 4)).astype(np.float32)
          for i in range(count)]


def test_encoder_loss_equals_numpy():
  v, x = _variables(), _blobs(8)
  z_p, e_real, e_rr, e_ff = _noise(10, count=4)
  fn = jax.jit(lambda v, x, *e: si.encoder_loss(
      MODEL, HP, v["params"]["encoder"], v["params"]["decoder"], v["batch_stats"], x, e[0], e[1:]))
  loss, (stats, terms) = fn(v, x, z_p, e_real, e_rr, e_ff)
  c = _Chain(v)                                     # the reference's order of forwards
  fake = c.dec(z_p)
  mu, lv = c.enc(x, unit=False)
  rec = c.dec(mu + np.exp(0.5 * lv) * e_real)
  mu_r, lv_r = c.enc(rec.astype(np.float32), unit=True)
  rec_rec = c.dec(mu_r + np.exp(0.5 * lv_r) * e_rr)
  mu_f, lv_f = c.enc(fake.astype(np.float32), unit=True)
  rec_fake = c.dec(mu_f + np.exp(0.5 * lv_f) * e_ff)
  s = 1.0 / D
  y = (x.astype(np.float64) + 0.5) / 256        # the likelihood's bin centres
  rec_err, kl = _np_sse(y, rec), _np_kl(mu, lv)
  exp_r = np.mean(np.exp(-2 * s * (0.7 * _np_sse(rec, rec_rec)
                                   + 20.0 * _np_kl(mu_r, lv_r))))
  exp_f = np.mean(np.exp(-2 * s * (0.7 * _np_sse(fake, rec_fake)
                                   + 20.0 * _np_kl(mu_f, lv_f))))
  want = s * (0.7 * rec_err.mean() + 1.3 * kl.mean()) + 0.25 * (exp_r + exp_f)
  assert 0.05 < exp_r < 0.95 and 0.05 < exp_f < 0.95     # every term matters here
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(terms["rec"]), rec_err.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(terms["kl"]), kl.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(terms["exp_elbo_rec"]), exp_r, rtol=1e-5)
  np.testing.assert_allclose(float(terms["exp_elbo_fake"]), exp_f, rtol=1e-5)
  # the negative ELBO in nats: SSE + D (1/2 log pi + log 256) + KL (gaussian:0.5)
  nelbo = rec_err + D * (0.5 * math.log(math.pi) + math.log(256)) + kl
  np.testing.assert_allclose(float(terms["neg_elbo"]), nelbo.mean(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(terms["z"]), mu + np.exp(0.5 * lv) * e_real, rtol=1e-5,
                             atol=1e-6)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(c.stats)):   # threaded in order
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_decoder_loss_equals_numpy():
  v, x = _variables(), _blobs(8)
  enc_after = jax.tree.map(lambda a: a * 1.1, v["params"]["encoder"])  # "after the E-step"
  z_p, z_real, e_r, e_f = _noise(20, count=4)
  fn = jax.jit(lambda v, e, x, *n: si.decoder_loss(
      MODEL, HP, v["params"]["decoder"], e, v["batch_stats"], x, n[0], n[1], n[2:]))
  loss, (stats, terms) = fn(v, enc_after, x, z_p, z_real, e_r, e_f)
  c = _Chain({"params": {**v["params"], "encoder": enc_after}, "batch_stats": v["batch_stats"]})
  fake = c.dec(z_p)
  rec = c.dec(z_real)
  mu_r, lv_r = c.enc(rec.astype(np.float32), unit=True)
  mu_f, lv_f = c.enc(fake.astype(np.float32), unit=True)
  rec_rec = c.dec(mu_r + np.exp(0.5 * lv_r) * e_r)
  rec_fake = c.dec(mu_f + np.exp(0.5 * lv_f) * e_f)
  s = 1.0 / D
  y = (x.astype(np.float64) + 0.5) / 256
  rec_err = _np_sse(y, rec).mean()
  kl_r, kl_f = _np_kl(mu_r, lv_r).mean(), _np_kl(mu_f, lv_f).mean()
  rr = _np_sse(rec, rec_rec).mean()
  rf = _np_sse(fake, rec_fake).mean()
  want = s * (0.7 * rec_err + 0.5 * 1.3 * (kl_r + kl_f) + 0.5 * 0.5 * 0.7 * (rr + rf))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  for k, w in (("rec", rec_err), ("kl_rec", kl_r), ("kl_fake", kl_f), ("rec_rec", rr),
               ("rec_fake", rf)):
    np.testing.assert_allclose(float(terms[k]), w, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(c.stats)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_reconstruction_error_is_the_gaussian_log_density_up_to_a_constant():
  """With gaussian:0.5, SSE(bin centres, lik.mean(out)) = -log p(x|z) - D (1/2 log pi + log 256)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
  out = jnp.asarray(rng.normal(0, 2, (3, 32, 32, 1, 1)), jnp.float32)
  err = si.sse(si.real_target(x), MODEL.lik.mean(out))
  nll = -image_sum(MODEL.lik.log_prob(out, jnp.asarray(x)))
  np.testing.assert_allclose(np.asarray(nll - err), D * (0.5 * math.log(math.pi) + math.log(256)),
                             rtol=1e-5)


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  ck = str(tmp_path_factory.mktemp("soft_intro") / "full")
  return train(MODEL, _blobs(), CFG, ck, update=SoftIntro(), progress=False), ck


def test_training_lowers_the_losses(full_run):
  result, _ = full_run
  first, last = result.history[0], result.history[-1]
  assert result.step == 24 and [h["step"] for h in result.history] == [4, 8, 12, 16, 20, 24]
  for k in ("loss", "loss_e", "loss_d", "id_loss", "rec"):
    assert last[k] < first[k], (k, first[k], last[k])
  for h in result.history:
    assert h["loss"] == pytest.approx(h["loss_e"] + h["loss_d"], rel=1e-5)
    assert h["bits_per_dim"] == pytest.approx(h["id_loss"] / (D * math.log(2)))
    assert all(math.isfinite(h[k]) for k in ("kl", "kl_rec", "kl_fake", "exp_elbo_rec",
                                             "exp_elbo_fake", "grad_norm"))
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(result.variables))


def test_killed_and_resumed_run_ends_with_identical_state(full_run, tmp_path):
  full, _ = full_run
  ck = str(tmp_path / "killed")
  part = train(MODEL, _blobs(), CFG, ck, update=SoftIntro(), progress=False, stop_after=13)
  assert part.step == 13
  resumed = train(MODEL, _blobs(), CFG, ck, update=SoftIntro(), progress=False)
  assert resumed.resumed_from == 8 and resumed.step == 24
  _leaves_equal(full.variables, resumed.variables)


def test_checkpoint_of_another_update_rule_is_never_loaded(full_run):
  full, ck = full_run
  with pytest.raises(CheckpointError, match="update: checkpoint has"):
    train(MODEL, _blobs(), CFG, ck, progress=False)                    # plain training
  with pytest.raises(CheckpointError, match="vae_steps"):
    train(MODEL, _blobs(), CFG, ck, update=SoftIntro(vae_steps=4), progress=False)
  with pytest.raises(CheckpointError, match="beta_neg"):
    train(MODEL, _blobs(), CFG, ck, update=SoftIntro(beta_neg=128.0), progress=False)
  again = train(MODEL, _blobs(), CFG, ck, update=SoftIntro(), progress=False)    # finished: loads
  assert again.resumed_from == 24 and again.history == []
  _leaves_equal(full.variables, again.variables)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  """lr 0 at step 0 (warm-up), 5e29 at step 1: step 1's encoder update overflows the decoder
  step's loss, so step 1 is refused and the checkpoint after step 0 is the last good one."""
  cfg = TrainConfig(batch_size=16, num_steps=6, learning_rate=1e30, halve_every_epochs=None,
                    warmup_steps=2, log_every=1, checkpoint_every=1)
  ck = str(tmp_path / "ck")
  with pytest.raises(TrainingDivergedError, match=r"step 1\b.*last good checkpoint \(step 1\)"):
    train(MODEL, _blobs(), cfg, ck, update=SoftIntro(), progress=False)
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.abspath(ck))
  assert mngr.latest_step() == 1
  mngr.close()


def test_plain_vae_warm_up_steps():
  cfg = TrainConfig(batch_size=16, num_steps=4, learning_rate=1e-3, halve_every_epochs=None,
                    log_every=1, checkpoint_every=100)
  h = train(MODEL, _blobs(), cfg, update=SoftIntro(vae_steps=2), progress=False).history
  for e in h[:2]:                # beta_rec E[SSE] + beta_kl E[KL], unscaled (the reference's)
    assert e["loss"] == pytest.approx(e["rec"] + e["kl"], rel=1e-5)
    assert e["loss_e"] == e["loss_d"] == e["exp_elbo_fake"] == e["kl_fake"] == 0.0
  for e in h[2:]:
    assert e["loss"] == pytest.approx(e["loss_e"] + e["loss_d"], rel=1e-5)
    assert e["loss_e"] > 0 and e["loss_d"] > 0 and e["kl_fake"] > 0


def test_bad_settings_fail_clearly():
  for bad in (dict(beta_neg=0.0), dict(beta_kl=float("nan")), dict(gamma_r=-1.0),
              dict(vae_steps=-1), dict(vae_steps=1.5)):
    with pytest.raises(InvalidInputError, match="SoftIntro"):
      SoftIntro(**bad)
  with pytest.raises(InvalidInputError, match="gaussian"):
    si.check_model(ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4))
  with pytest.raises(InvalidInputError, match="no OOD stream or objective"):
    train(MODEL, _blobs(), CFG, update=SoftIntro(), objective=mean_id_loss, progress=False)
  with pytest.raises(InvalidInputError, match="update rule"):
    train(MODEL, _blobs(), CFG, update=object(), progress=False)


# ----------------------------------------------------------------------------- BN re-estimation

def test_reestimate_decoder_bn_gives_the_population_statistics_of_prior_samples():
  v = _variables(seed=3)
  key = jax.random.PRNGKey(7)
  new = reestimate_decoder_bn(MODEL, v, key, num_samples=50, batch_size=16)   # chunks 16,16,16,2
  _leaves_equal(new["params"], v["params"])
  _leaves_equal(new["batch_stats"]["encoder"], v["batch_stats"]["encoder"])
  # The same prior samples, decoded in eval mode with the new statistics: every decoder
  # BatchNorm's input (the output of the layer before it) has the stored mean / biased var.
  z = jax.random.normal(key, (50, MODEL.latent_dim), jnp.float32)
  _, inter = MODEL.apply(new, z, False, method=ConvVAE.decode, capture_intermediates=True,
                         mutable=["intermediates"])
  pre = {"initial_bn": "initial_convt", "pyramid_bn1": "pyramid_convt1",
         "pyramid_bn2": "pyramid_convt2"}
  assert set(new["batch_stats"]["decoder"]) == set(pre)
  for bn, conv in pre.items():
    h = np.asarray(inter["intermediates"]["decoder"][conv]["__call__"][0], np.float64)
    got = new["batch_stats"]["decoder"][bn]
    np.testing.assert_allclose(np.asarray(got["mean"]), h.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["var"]), h.var(axis=(0, 1, 2)), rtol=1e-4)
    old = v["batch_stats"]["decoder"][bn]["var"]
    assert not np.allclose(np.asarray(got["var"]), np.asarray(old))


# ----------------------------------------------------------------------------- the model

def test_gan_vae_model_and_recipe():
  from ood_jax.experiments import configs
  from ood_jax.experiments.run import resolve_train_config
  colour = make_model("gan_vae", "cpu", (32, 32, 3))
  grey = make_model("gan_vae", "cpu", (32, 32, 1))
  assert type(colour) is ConvVAE
  assert (colour.ngf, colour.latent_dim, colour.likelihood) == (64, 200, "gaussian:0.5")
  assert (grey.ngf, grey.latent_dim, grey.likelihood) == (32, 100, "gaussian:0.5")
  s = registry.spec("gan_vae")
  assert spec_of(colour) is s and s.trainer == "soft_intro" and s.input_size == 32
  assert spec_of(make_model("vae", "cpu", (32, 32, 3))).name == "vae"
  assert update_for("gan_vae") == SoftIntro(beta_rec=1.0, beta_kl=1.0, beta_neg=256.0,
                                            gamma_r=1e-8, vae_steps=0)
  assert update_for(s) == SoftIntro() and update_for("vae") is None
  assert SoftIntro().describe() == {"name": "soft_intro", "beta_rec": 1.0, "beta_kl": 1.0,
                                    "beta_neg": 256.0, "gamma_r": 1e-8, "vae_steps": 0}
  cpu = resolve_train_config(configs.get_preset("cpu"), "gan_vae", 0, None, {})
  assert (cpu.batch_size, cpu.learning_rate, cpu.halve_every_epochs, cpu.warmup_steps,
          cpu.clip_grad_norm, cpu.optimizer) == (32, 2e-4, None, 500, 10.0, "adam")
  assert cpu.num_steps == registry.budget("gan_vae", "cpu")["num_steps"]
  paper = resolve_train_config(configs.get_preset("paper"), "gan_vae", 0, None, {})
  assert (paper.epochs, paper.halve_every_epochs, paper.batch_size) == (250.0, None, 32)
