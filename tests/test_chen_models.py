"""Chen's thesis, Ch. 3 (issue 13): the DCGAN autoencoder, reconstructions, the VAE's ELBO
components (Eqs. 3.1-3.4) and the ``recon_error`` score.

Tiny models (ngf 4, latent 8) with weights drawn by numpy (as ``test_vae.py``), and one
jit-compiled function per test for all the methods it compares, keep every test to a few
seconds on XLA:CPU (``model.init`` with threefry keys alone compiles for ~20 s there).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import ConvVAE, UniformModel, make_model, spec_of
from ood_jax.models.autoencoder import ConvAE
from ood_jax.models.registry import spec
from ood_jax.scores import NLL, get_scorer, known_scores, scorer_class
from ood_jax.scores.reconstruction import ReconError
from ood_jax.train import TrainConfig, loop, train

LOG_2PI = math.log(2.0 * math.pi)


def _images(n, c=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, c), dtype=np.uint8)


def _blobs(n, seed=0):
  """Smooth grey images (a bright disc on a dark ground): easy to reconstruct."""
  yy, xx = np.mgrid[:32, :32]
  rng = np.random.default_rng(seed)
  out = np.empty((n, 32, 32, 1), np.uint8)
  for i in range(n):
    cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(4, 9)
    out[i, ..., 0] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 220, 30)
  return out


def _init(model, x, seed=0):
  """Variables with the DCGAN statistics (kernels N(0, 0.02)), drawn with numpy; biases
  N(0, 0.1) so that mu and logvar are not all zero."""
  keys = {"params": jax.random.key(0), "sample": jax.random.key(1)}
  shapes = jax.eval_shape(lambda: model.init(keys, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype)
    if name == "bias":
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _jit(model, fn):
  """``jit(lambda v, *a: fn(call, *a))`` with ``call(method, *args) = model.apply(v, *args,
  method=method)``: one compilation for every method a test compares; numpy outputs."""
  def run(v, *a):
    return fn(lambda method, *args: model.apply(v, *args, method=method), *a)
  f = jax.jit(run)
  return lambda v, *a: jax.tree.map(np.asarray, f(v, *a))


# --------------------------------------------------------------------------- autoencoder
def _ae_outputs(call, x):
  z = call("encode", x)
  return {"z": z, "decode": call("decode", z), "reconstruct": call("reconstruct", x),
          "recon_error": call("recon_error", x), "loss": call(ConvAE.__call__, x, False)}


@pytest.fixture(scope="module")
def ae():
  """A tiny grey AE, its numpy-drawn variables, 8 blob images and every method's output."""
  model = ConvAE(image_shape=(32, 32, 1), latent_dim=8, ngf=4)
  x = _blobs(8)
  v = _init(model, x)
  return model, v, x, _jit(model, _ae_outputs)(v, x)


def test_ae_shapes_and_parameters(ae):
  model, v, x, out = ae
  assert out["z"].shape == (8, 8) and out["z"].dtype == np.float32
  assert out["decode"].shape == (8, 32, 32, 1, 1)
  rec = out["reconstruct"]
  assert rec.shape == (8, 32, 32, 1) and rec.min() >= 0 and rec.max() <= 1
  assert out["recon_error"].shape == (8,) and out["loss"].shape == (8,)
  assert not hasattr(model, "log_prob") and not hasattr(model, "sample")
  # The VAE's parameter tree without the logvar head (same names: the same architecture).
  vae = ConvVAE(image_shape=(32, 32, 1), latent_dim=8, ngf=4, likelihood="gaussian")
  vv = jax.eval_shape(lambda: vae.init({"params": jax.random.key(0),
                                        "sample": jax.random.key(1)}, x, train=False))
  shapes = lambda t: jax.tree.map(lambda a: a.shape, t)
  assert set(v["params"]) == {"encoder", "decoder"}
  assert "logvar_conv" in vv["params"]["encoder"]
  vae_enc = {k: a for k, a in vv["params"]["encoder"].items() if k != "logvar_conv"}
  assert shapes(v["params"]["encoder"]) == shapes(vae_enc)
  assert shapes(v["params"]["decoder"]) == shapes(vv["params"]["decoder"])
  assert shapes(v["batch_stats"]) == shapes(vv["batch_stats"])
  # Colour (shapes only), and the VAE's checks.
  c3 = ConvAE(image_shape=(32, 32, 3), latent_dim=8, ngf=4)
  x3 = _images(2, 3)
  v3 = jax.eval_shape(lambda: c3.init({"params": jax.random.key(0)}, x3, train=False))
  rec3 = jax.eval_shape(lambda v: c3.apply(v, x3, method="reconstruct"), v3)
  assert rec3.shape == (2, 32, 32, 3)
  with pytest.raises(InvalidInputError, match="ConvAE needs 32 x 32.*resize:32"):
    ConvAE(image_shape=(28, 28, 1))
  with pytest.raises(UnknownNameError):
    ConvAE(likelihood="gausian")
  with pytest.raises(InvalidInputError, match="uint8"):
    model.apply(v, x.astype(np.float32), method="recon_error")


def test_ae_loss_is_the_gaussian_nll_of_the_reconstruction(ae):
  _, _, x, out = ae
  rec = out["reconstruct"].astype(np.float64)
  # likelihoods.py's gaussian: N(y; sigmoid(out), 0.1) at the bin centre y = (x + 1/2)/256,
  # minus log 256 per sub-pixel (density x bin width).
  y = (x.astype(np.float64) + 0.5) / 256.0
  const = 32 * 32 * (0.5 * math.log(2 * math.pi * 0.1) + math.log(256))
  want = ((y - rec) ** 2).sum(axis=(1, 2, 3)) / (2 * 0.1) + const
  np.testing.assert_allclose(out["loss"], want, rtol=2e-6)
  # The target is not x/255: that would be off by far more than the tolerance.
  off = ((x / 255.0 - rec) ** 2).sum(axis=(1, 2, 3)) / (2 * 0.1) + const
  assert np.max(np.abs(off - want)) > 100 * 2e-6 * np.max(np.abs(want))
  # recon_error is on the x/255 scale.
  np.testing.assert_allclose(out["recon_error"], ((x / 255.0 - rec) ** 2).sum(axis=(1, 2, 3)),
                             rtol=1e-5)


def test_adam_steps_lower_the_ae_loss(monkeypatch):
  model = ConvAE(image_shape=(32, 32, 1), latent_dim=8, ngf=4)
  x = _blobs(32)
  # The loop's own model.init compiles threefry for ~20 s on this CPU; numpy-drawn
  # variables of the same tree stand in (the loop, optimiser and BatchNorm updates run).
  monkeypatch.setattr(loop, "init_variables", lambda m, first, seed: _init(m, first, seed))
  cfg = TrainConfig(batch_size=16, num_steps=20, learning_rate=3e-3, halve_every_epochs=None,
                    log_every=5, checkpoint_every=1000)
  res = train(model, x, cfg, progress=False)
  losses = [h["loss"] for h in res.history]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 20.0, losses
  assert set(res.variables) == {"params", "batch_stats"}


# --------------------------------------------------------------------------- VAE
def _vae_outputs(call, x, eps):
  mu, logvar = call("encode", x)
  zeros = jnp.zeros_like(eps)
  return {"comp": call("elbo_components", x, eps), "comp0": call("elbo_components", x, zeros),
          "lw": call("log_weights", x, eps[:, None])[:, 0], "neg_elbo": call("neg_elbo", x, eps),
          "mu": mu, "logvar": logvar, "reconstruct": call("reconstruct", x),
          "recon_error": call("recon_error", x)}


@pytest.fixture(scope="module")
def vae():
  """A tiny grey Gaussian-decoder VAE, 6 blob images, eps and every method's output."""
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=8, ngf=4, likelihood="gaussian")
  x = _blobs(6, seed=1)
  v = _init(model, x, seed=1)
  eps = np.random.default_rng(3).normal(size=(len(x), model.latent_dim)).astype(np.float32)
  return model, v, x, eps, _jit(model, _vae_outputs)(v, x, eps)


def test_vae_reconstruct_is_the_decoder_mean_at_mu():
  # The categorical decoder: the mean is sum_k p_k k / 255, not a sigmoid.
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=8, ngf=4, likelihood="categorical256")
  x = _images(3)
  v = _init(model, x)
  out = _jit(model, lambda call, x: {
      "logits": call("decode", call("encode", x)[0]), "reconstruct": call("reconstruct", x),
      "recon_error": call("recon_error", x)})(v, x)
  logits = out["logits"].astype(np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  want = (p / p.sum(-1, keepdims=True) * np.arange(256)).sum(-1) / 255.0
  assert out["reconstruct"].shape == (3, 32, 32, 1)
  np.testing.assert_allclose(out["reconstruct"], want, atol=1e-5)
  np.testing.assert_allclose(out["recon_error"], ((x / 255.0 - want) ** 2).sum(axis=(1, 2, 3)),
                             rtol=1e-4)


def test_elbo_components_sum_to_the_single_sample_elbo(vae):
  model, _, _, eps, out = vae
  d = model.latent_dim
  comp = out["comp"]
  assert set(comp) == {"log_px_z", "log_pz", "neg_log_qz", "sq_error", "mu_sq", "sum_logvar"}
  assert all(a.shape == (len(eps),) and a.dtype == np.float32 for a in comp.values())
  total = comp["log_px_z"] + comp["log_pz"] + comp["neg_log_qz"]
  lw = out["lw"]
  tol = 4 * float(np.spacing(np.max(np.abs(lw))))          # a few float32 ulps of the sum
  np.testing.assert_allclose(total, lw, rtol=0, atol=tol)
  # One term off by its 2pi constant would be caught at this tolerance.
  assert np.min(np.abs(total - 0.5 * d * LOG_2PI - lw)) > 100 * tol
  # Against the analytic-KL ELBO: the reconstruction term is the same (neg_elbo = KL -
  # log p(x|z)); the sampled KL differs from the analytic one.
  mu, logvar = out["mu"].astype(np.float64), out["logvar"].astype(np.float64)
  kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=-1)
  np.testing.assert_allclose(comp["log_px_z"], kl - out["neg_elbo"], rtol=0, atol=tol)
  assert np.max(np.abs(total + out["neg_elbo"])) > 100 * tol
  # Each latent term on its own, from the posterior (float64).
  z = mu + np.exp(0.5 * logvar) * eps
  np.testing.assert_allclose(comp["log_pz"], -0.5 * (z ** 2).sum(-1) - 0.5 * d * LOG_2PI,
                             rtol=1e-5)
  np.testing.assert_allclose(comp["neg_log_qz"], 0.5 * (eps ** 2 + logvar).sum(-1)
                             + 0.5 * d * LOG_2PI, rtol=1e-5)
  np.testing.assert_allclose(comp["mu_sq"], (mu ** 2).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(comp["sum_logvar"], logvar.sum(-1), rtol=1e-5, atol=1e-6)


def test_reduced_forms_at_the_posterior_mean(vae):
  """At eps = 0 (z = mu) Eqs. 3.2-3.4 hold without their O(eps) terms."""
  _, _, x, _, out = vae
  comp = out["comp0"]
  np.testing.assert_allclose(comp["log_pz"] + comp["neg_log_qz"],
                             -0.5 * comp["mu_sq"] + 0.5 * comp["sum_logvar"], atol=1e-4)
  np.testing.assert_allclose(comp["sq_error"], out["recon_error"], rtol=1e-5)
  # The Gaussian decoder: log p(x|z) = -||y - dec(z)||^2 / (2 * 0.1) + const, y the bin centre.
  rec = out["reconstruct"].astype(np.float64)
  y = (x + 0.5) / 256.0
  want = -((y - rec) ** 2).sum(axis=(1, 2, 3)) / 0.2 - 1024 * (
      0.5 * math.log(2 * math.pi * 0.1) + math.log(256))
  np.testing.assert_allclose(comp["log_px_z"], want, rtol=2e-6)


# --------------------------------------------------------------------------- scores, registry
@pytest.mark.parametrize("which", ["ae", "vae"])
def test_recon_error_score_equals_the_direct_value(which, ae, vae):
  model, v, x, *_, out = ae if which == "ae" else vae
  want = ((x / 255.0 - out["reconstruct"].astype(np.float64)) ** 2).sum(axis=(1, 2, 3))
  scorer = get_scorer("recon_error", chunk_size=4)       # two chunks, the last padded
  state = scorer.fit(model, v, None)
  s = scorer.score(state, x)
  assert s.shape == (len(x),) and s.dtype == np.float32
  np.testing.assert_allclose(s, want, rtol=1e-5)


def test_scores_refuse_models_without_the_method(ae):
  model, v, *_ = ae
  with pytest.raises(InvalidInputError, match="no log_prob.*'recon_error'"):
    NLL().fit(model, v)
  with pytest.raises(InvalidInputError, match="no recon_error"):
    ReconError().fit(UniformModel(image_shape=(32, 32, 1)), {})


def test_registry_spec_and_presets(ae):
  m = make_model("ae", "cpu", (32, 32, 3))
  assert isinstance(m, ConvAE) and (m.ngf, m.latent_dim, m.likelihood) == (64, 200, "gaussian")
  g = make_model("ae", "paper", (32, 32, 1))
  assert (g.ngf, g.latent_dim) == (32, 100)
  half = make_model("ae", "smoke", (32, 32, 1), likelihood="gaussian:0.5")
  assert half.lik.name == "gaussian:0.5" and (half.ngf, half.latent_dim) == (8, 16)
  s = spec("ae")
  assert spec_of(m) is s and s.name == "ae" and list(s.presets) == ["smoke", "cpu", "paper"]
  assert s.input_size == 32 and s.batchnorm_parts == ("encoder", "decoder")
  assert s.rose_layers is None
  # The default objective (for per-sample-gradient scores) is the eval-mode loss.
  model, v, x, out = ae
  obj = s.objective(model)
  loss = jax.jit(obj.batched)(v, x, obj.noise(jax.random.key(0), 8))
  np.testing.assert_allclose(np.asarray(loss), out["loss"], rtol=1e-6)
  assert "recon_error" in known_scores()
  cls = scorer_class("recon_error")
  assert cls is ReconError and cls().name == "recon_error"
  import ood_jax.scores
  assert ood_jax.scores.ReconError is ReconError
  fields = [f.name for f in dataclasses.fields(cls)]
  assert fields[:4] == ["name", "seed", "progress", "chunk_size"]
  assert all(f"\n    {f}: " in cls.__doc__ for f in fields)
