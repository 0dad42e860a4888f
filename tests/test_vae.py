"""ConvVAE: shapes, IWAE properties, BatchNorm modes, training, likelihoods, uniform model.

Speed notes (XLA:CPU): compiling a threefry ``jax.random.normal`` takes ~2 s, so the
tests draw initial weights with numpy, use ``rbg`` keys for the ``'sample'`` stream, jit
every function they call repeatedly and share one short training run.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ood_jax.data.pixels import bits_per_dim
from ood_jax.errors import InvalidInputError, UnknownNameError
from ood_jax.models import ConvVAE, UniformModel, get_likelihood, make_model
from ood_jax.models.likelihoods import LIKELIHOODS

D_GREY = 32 * 32


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _images(n, c=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, c), dtype=np.uint8)


def _init(model, x, seed=0):
  """Variables with the DCGAN statistics, drawn with numpy (``test_flax_init`` checks the
  module's own initialiser)."""
  shapes = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.02, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _train(model, variables, x, steps, lr=3e-3):
  tx = optax.adam(lr)
  params, stats = variables["params"], variables["batch_stats"]
  opt = tx.init(params)

  @jax.jit
  def step(params, stats, opt, key):
    def loss_fn(p):
      loss, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                              mutable=["batch_stats"], rngs={"sample": key})
      return loss.mean(), upd["batch_stats"]
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), stats, opt, loss

  losses = []
  for i in range(steps):
    params, stats, opt, loss = step(params, stats, opt, _key(100 + i))
    losses.append(float(loss))
  return {"params": params, "batch_stats": stats}, losses


@pytest.fixture(scope="module")
def tiny():
  """ngf 8, latent 8 grey VAE on random blob images: initial and 30-Adam-step variables.

  Binomial likelihood (1 decoder output per pixel instead of 256) keeps the IWAE tests
  (up to 16 x 64 decoder passes) fast; the categorical path is covered by the parity tests.
  """
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=8, ngf=8, likelihood="bernoulli")
  yy, xx = np.mgrid[:32, :32]
  rng = np.random.default_rng(0)
  c = rng.uniform(8, 24, size=(16, 2))
  x = 255 * np.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 40.0)
  x = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).round().astype(np.uint8)[..., None]
  v0 = _init(model, x)
  v1, losses = _train(model, v0, x, 30)
  return model, x, v0, v1, losses


@pytest.mark.parametrize("c,latent,ngf,lik", [(1, 100, 32, "categorical256"),
                                              (3, 200, 8, "categorical256"),
                                              (3, 16, 8, "dgaussian"), (1, 16, 8, "bernoulli")])
def test_shapes(c, latent, ngf, lik):
  model = ConvVAE(image_shape=(32, 32, c), latent_dim=latent, ngf=ngf, likelihood=lik)
  x = _images(2, c)
  v = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, x, train=False))
  p = v["params"]
  assert p["encoder"]["input_conv"]["kernel"].shape == (4, 4, c, ngf)
  assert p["encoder"]["mu_conv"]["kernel"].shape == (4, 4, 4 * ngf, latent)
  assert p["decoder"]["initial_convt"]["kernel"].shape == (4, 4, latent, 4 * ngf)
  n_par = LIKELIHOODS[lik].num_params
  assert p["decoder"]["final_convt"]["kernel"].shape == (4, 4, ngf, c * n_par)
  rngs = {"sample": jax.random.key(0)}
  mu, logvar = jax.eval_shape(lambda vv: model.apply(vv, x, method="encode"), v)
  assert mu.shape == logvar.shape == (2, latent)
  out = jax.eval_shape(lambda vv: model.apply(vv, jnp.zeros((2, latent)), method="decoder_logits"), v)
  assert out.shape == (2, 32, 32, c, n_par)
  for method in ("__call__", "log_prob", "elbo"):
    r = jax.eval_shape(lambda vv, m=method: model.apply(
        vv, x, rngs=rngs, method=m, **({"train": False} if m == "__call__" else {})), v)
    assert r.shape == (2,) and r.dtype == jnp.float32
  lw = jax.eval_shape(lambda vv: model.apply(vv, x, jnp.zeros((2, 5, latent)), method="log_weights"), v)
  assert lw.shape == (2, 5)
  s = jax.eval_shape(lambda vv: model.apply(vv, jax.random.key(0), 3, method="sample"), v)
  assert s.shape == (3, 32, 32, c) and s.dtype == jnp.uint8


def test_channel_major_output_layout():
  """Image channel c owns decoder channels c*P .. c*P+P-1."""
  model = ConvVAE(image_shape=(32, 32, 3), latent_dim=4, ngf=4, likelihood="dgaussian")
  v = _init(model, _images(1, 3))
  z = jnp.ones((1, 4))
  out, raw = jax.jit(lambda vv: (model.apply(vv, z, method="decode"),
                                 model.apply(vv, z, method=lambda m, zz: m.decoder(zz, False))))(v)
  np.testing.assert_array_equal(np.asarray(out[0, :, :, 1, 0]), np.asarray(raw[0, :, :, 2]))
  np.testing.assert_array_equal(np.asarray(out[0, :, :, 2, 1]), np.asarray(raw[0, :, :, 5]))


def test_iwae_bounds_and_log_weights(tiny):
  model, x, v0, v1, _ = tiny
  log_prob = jax.jit(lambda vv, key, k: model.apply(vv, x, rngs={"sample": key}, method="log_prob", k=k),
                     static_argnums=2)
  elbo_fn = jax.jit(lambda vv, key: model.apply(vv, x, rngs={"sample": key}, method="elbo"))
  for v in (v0, v1):
    means = {k: np.mean([float(log_prob(v, _key(s), k).mean()) for s in range(4)])
             for k in (1, 8, 64)}
    elbo = np.mean([float(elbo_fn(v, _key(s)).mean()) for s in range(4)])
    # E[IWAE_k] is non-decreasing in k and IWAE_1 has the ELBO's expectation. Slack: the
    # seed-to-seed std of these means is < 0.03 nats at init and ~300 nats after training,
    # where the gaps are > 700 nats.
    tol = 0.5 if v is v0 else 150.0
    assert means[64] >= means[8] - tol, means
    assert means[8] >= means[1] - tol, means
    assert means[8] >= elbo - tol, (means, elbo)
  assert means[64] > means[8] + 300 > means[1] + 600, means   # trained: IWAE clearly tighter

  # log_prob == logsumexp(log_weights) - log K with the same noise (drawn the same way).
  k = 8
  rngs = {"sample": _key(3)}
  eps = model.apply(v1, rngs=rngs,
                    method=lambda m: jax.random.normal(m.make_rng("sample"), (x.shape[0], k, 8)))
  log_weights = jax.jit(lambda e: model.apply(v1, x, e, method="log_weights"))
  lw = log_weights(eps)
  np.testing.assert_allclose(np.asarray(log_prob(v1, rngs["sample"], k)),
                             np.asarray(jax.nn.logsumexp(lw, axis=1) - math.log(k)), rtol=1e-6)
  # K = 1 is the single importance weight at the same z.
  lw1 = log_weights(eps[:, :1])[:, 0]
  np.testing.assert_allclose(np.asarray(lw1), np.asarray(lw[:, 0]), rtol=1e-5)


def test_batchnorm_modes(tiny):
  model, x, _, v, _ = tiny               # trained: running stats away from their init
  rngs = {"sample": _key(0)}
  other = x.copy()
  other[1:] = 255 - other[1:]
  # Eval mode: a sample's value does not depend on the other batch members.
  f_eval = jax.jit(lambda xx: model.apply(v, xx, rngs=rngs, train=False))
  a, b = f_eval(x), f_eval(other)
  np.testing.assert_allclose(float(a[0]), float(b[0]), rtol=1e-6)
  # Train mode: batch statistics are used, so it does; stats only change when mutable.
  f_train = jax.jit(lambda xx: model.apply(v, xx, rngs=rngs, train=True, mutable=["batch_stats"]))
  ta, upd = f_train(x)
  tb, _ = f_train(other)
  assert abs(float(ta[0]) - float(tb[0])) > 1e-3
  changed = jax.tree.map(lambda p, q: bool(jnp.any(p != q)), upd["batch_stats"], v["batch_stats"])
  assert all(jax.tree.leaves(changed))
  with pytest.raises(Exception):     # flax refuses to update immutable batch_stats
    jax.eval_shape(lambda: model.apply(v, x, rngs=rngs, train=True))


def test_batchnorm_modes_per_part(tiny):
  """``train={'encoder': True, 'decoder': False}``: encoder BatchNorm on batch statistics,
  decoder on running ones (Chen et al.'s encoder adaptation) = the hand composition."""
  model, x, _, v, _ = tiny
  key = _key(5)
  mixed = {"encoder": True, "decoder": False}

  @jax.jit
  def lp(vv):
    return {name: model.apply(vv, x, train=t, k=1, method="log_prob", rngs={"sample": key},
                              mutable=["batch_stats"])[0]
            for name, t in (("mixed", mixed), ("train", True), ("eval", False))}

  def hand(m, xx):        # log_prob with k = 1: encoder in train mode, decoder in eval mode
    eps = jax.random.normal(m.make_rng("sample"), (xx.shape[0], 1, m.latent_dim))[:, 0]
    mu, logvar = m.encode(xx, True)
    z = mu + jnp.exp(0.5 * logvar) * eps
    log_ratio = jnp.sum(0.5 * eps ** 2 - 0.5 * z ** 2 + 0.5 * logvar, axis=-1)
    return m.decoder_log_prob(z, xx, False) + log_ratio

  out = lp(v)
  ref, _ = jax.jit(lambda vv: model.apply(vv, x, method=hand, rngs={"sample": key},
                                          mutable=["batch_stats"]))(v)
  np.testing.assert_allclose(np.asarray(out["mixed"]), np.asarray(ref), rtol=1e-5)
  for other in ("train", "eval"):
    assert float(jnp.max(jnp.abs(out["mixed"] - out[other]))) > 1e-2, other
  # The same per-part mode reaches every method (here the training objective).
  neg, _ = jax.jit(lambda vv: model.apply(vv, x, train=mixed, rngs={"sample": key},
                                          mutable=["batch_stats"]))(v)
  assert neg.shape == (x.shape[0],) and bool(jnp.all(jnp.isfinite(neg)))


def test_sample_temperature(tiny):
  """T scales the prior latent: T = 0 decodes z = 0 (pixels still drawn from p(x|z))."""
  model, _, _, v, _ = tiny
  rng = _key(7)
  s0 = jax.jit(lambda vv, t: model.apply(vv, rng, 4, t, method="sample"))
  ref = jax.jit(lambda vv: model.apply(
      vv, method=lambda m: m.lik.sample(jax.random.split(rng)[1],
                                        m.decode(jnp.zeros((4, m.latent_dim)), False))))(v)
  np.testing.assert_array_equal(np.asarray(s0(v, 0.0)), np.asarray(ref))
  a, b = np.asarray(s0(v, 1.0)), np.asarray(s0(v, 0.0))
  assert a.shape == (4, 32, 32, 1) and a.dtype == np.uint8 and np.any(a != b)


def test_training_decreases_loss_and_jit(tiny):
  model, x, _, v, losses = tiny
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
  rngs = {"sample": _key(1)}
  loss = jax.jit(lambda vv, xx: model.apply(vv, xx, train=False, rngs=rngs))(v, x)
  elbo = jax.jit(lambda vv, xx: model.apply(vv, xx, rngs=rngs, method="elbo"))(v, x)
  assert loss.shape == (x.shape[0],) and bool(jnp.all(jnp.isfinite(loss)))
  np.testing.assert_array_equal(np.asarray(loss), -np.asarray(elbo))


def test_flax_init():
  """The module's own initialiser: DCGAN statistics, zero biases, BN stats 0/1."""
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=8, ngf=8)
  v = jax.jit(lambda: model.init({"params": _key(0), "sample": _key(1)},
                                 jnp.zeros((1, 32, 32, 1), jnp.uint8), train=False))()
  k = np.asarray(v["params"]["decoder"]["pyramid_convt1"]["kernel"])
  assert abs(k.std() - 0.02) < 0.002 and abs(k.mean()) < 0.002
  s = np.asarray(v["params"]["encoder"]["input_bn"]["scale"])
  assert abs(s.mean() - 1.0) < 0.02 and 0 < s.std() < 0.05
  assert not np.any(np.asarray(v["params"]["encoder"]["mu_conv"]["bias"]))
  assert np.all(np.asarray(v["batch_stats"]["decoder"]["initial_bn"]["var"]) == 1.0)


def test_invalid_inputs():
  with pytest.raises(InvalidInputError, match="resize:32"):
    ConvVAE(image_shape=(28, 28, 1))
  with pytest.raises(InvalidInputError, match="resize:32"):
    make_model("vae", "smoke", (28, 28, 1))
  model = make_model("vae", "smoke", (32, 32, 1))
  v = _init(model, _images(1))
  with pytest.raises(InvalidInputError, match="resize:32"):
    model.apply(v, np.zeros((2, 28, 28, 1), np.uint8), method="encode")
  with pytest.raises(InvalidInputError, match="uint8"):
    model.apply(v, np.zeros((2, 32, 32, 1), np.float32), method="encode")
  with pytest.raises(UnknownNameError, match="vae"):
    make_model("flowz", "smoke", (32, 32, 1))
  with pytest.raises(UnknownNameError, match="paper"):
    make_model("vae", "huge", (32, 32, 1))
  with pytest.raises(UnknownNameError, match="categorical256"):
    ConvVAE(likelihood="poisson")


def test_registry_presets():
  grey, colour = make_model("vae", "paper", (32, 32, 1)), make_model("vae", "paper", (32, 32, 3))
  assert (grey.ngf, grey.latent_dim, grey.likelihood) == (32, 100, "categorical256")
  assert (colour.ngf, colour.latent_dim) == (64, 200)
  assert make_model("vae", "cpu", (32, 32, 1)).ngf == 32
  smoke = make_model("vae", "smoke", (32, 32, 3), likelihood="dgaussian")
  assert (smoke.ngf, smoke.latent_dim, smoke.likelihood) == (8, 16, "dgaussian")


# ------------------------------------------------------------------------ likelihoods
def _params_grid(name):
  if name == "categorical256":
    rng = np.random.default_rng(0)
    scales = np.array([0.0, 1.0, 30.0, 1e3, 3e3])[:, None, None]
    return (rng.normal(size=(5, 3, 256)) * scales).astype(np.float32)
  if name == "bernoulli":
    return np.array([-1e4, -80, -20, -3, -0.1, 0, 0.5, 4, 25, 90, 1e4], np.float32)[:, None]
  means = np.array([-3.0, -0.01, 0.0, 0.3, 0.5, 127.5 / 255, 0.77, 1.0, 1.2, 5.0])
  scales = np.array([-20, -10, -8, -6, -4.5, -3, -1, 0, 2, 6, 20.0])
  m, s = np.meshgrid(means, scales)
  return np.stack([m, s], -1).astype(np.float32)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_normalised(name):
  lik = get_likelihood(name)
  out = jnp.asarray(_params_grid(name))

  @jax.jit
  def check(out):
    table = lik.log_prob_all(out)
    levels = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8), table.shape)
    per_level = lik.log_prob(jnp.broadcast_to(out[..., None, :], table.shape + out.shape[-1:]), levels)
    grad = jax.grad(lambda o: jnp.sum(lik.log_prob(o, jnp.full(o.shape[:-1], 200, jnp.uint8))))(out)
    return table, jax.nn.logsumexp(table, axis=-1), per_level, grad

  table, total, per_level, grad = check(out)
  assert table.shape == out.shape[:-1] + (256,)
  assert bool(jnp.all(jnp.isfinite(table))) and bool(jnp.all(jnp.isfinite(grad)))
  np.testing.assert_allclose(np.asarray(total), 0.0, atol=2e-5)          # sums to 1
  # Same function, two code paths (float32 rounding differs where sigma is ~1e-5).
  np.testing.assert_allclose(np.asarray(per_level), np.asarray(table), rtol=1e-3, atol=1e-3)


def test_dgaussian_and_binomial_against_float64():
  from scipy.special import gammaln, log_ndtr
  lp = np.asarray(jax.jit(get_likelihood("dgaussian").log_prob_all)(jnp.array([0.3, -3.0])))
  e = (np.arange(257) - 0.5) / 255.0
  e[0], e[-1] = -np.inf, np.inf
  cdf = np.exp(log_ndtr((e - 0.3) / math.exp(-3.0)))
  np.testing.assert_allclose(np.exp(lp), np.diff(cdf), atol=1e-6)
  k = np.arange(256)
  p = 1 / (1 + math.exp(-0.7))
  ref = gammaln(256) - gammaln(k + 1) - gammaln(256 - k) + k * np.log(p) + (255 - k) * np.log1p(-p)
  lp = jax.jit(get_likelihood("bernoulli").log_prob_all)(jnp.array([0.7]))
  np.testing.assert_allclose(np.asarray(lp), ref, rtol=1e-5, atol=1e-4)


def test_categorical_zero_logits_is_exactly_8_bits_per_dim():
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4)
  x = _images(3)
  v = _init(model, x)
  v["params"]["decoder"]["final_convt"]["kernel"] = jnp.zeros_like(
      v["params"]["decoder"]["final_convt"]["kernel"])       # all logits exactly 0
  lp = jax.jit(lambda vv: model.apply(vv, jnp.ones((3, 4)), x, method="decoder_log_prob"))(v)
  assert np.all(np.asarray(lp) == np.float32(-D_GREY * math.log(256)))
  np.testing.assert_allclose(np.asarray(bits_per_dim(lp, D_GREY)), 8.0, rtol=2e-7)


def test_uniform_model_is_8_bits_per_dim():
  model = make_model("uniform", "paper", (32, 32, 3))
  assert isinstance(model, UniformModel)
  x = _images(4, 3)
  v = model.init({"params": jax.random.key(0)}, x)
  assert not jax.tree.leaves(v)
  lp = model.apply(v, x, method="log_prob")
  assert lp.shape == (4,)
  np.testing.assert_allclose(np.asarray(bits_per_dim(lp, 32 * 32 * 3)), 8.0, rtol=2e-7)
  np.testing.assert_allclose(np.asarray(model.apply(v, x, train=True)), -np.asarray(lp))
  with pytest.raises(InvalidInputError):
    model.apply(v, _images(4, 1), method="log_prob")


# ------------------------------------------------------------------------ gaussian decoder
def test_gaussian_likelihood_against_scipy():
  from scipy.stats import norm
  lik = get_likelihood("gaussian")
  assert (lik.name, lik.num_params, lik.normalised) == ("gaussian", 1, False)
  out = jnp.array([[-2.0], [0.0], [0.7], [3.0]])
  x = jnp.array([0, 17, 128, 255], jnp.uint8)
  got = np.asarray(lik.log_prob(out, x))
  mean = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 0.7, 3.0])))
  y = (np.array([0, 17, 128, 255]) + 0.5) / 256
  want = norm.logpdf(y, loc=mean, scale=math.sqrt(0.1)) - math.log(256)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
  table = np.asarray(lik.log_prob_all(out))
  np.testing.assert_allclose(table[np.arange(4), [0, 17, 128, 255]], got, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(lik.mean(out)), mean, rtol=1e-6)
  # Density x bin width: the mass over the 256 bins is that of [0, 1], below 1.
  mass = np.exp(table).sum(-1)
  np.testing.assert_allclose(mass, norm.cdf(1, mean, math.sqrt(0.1)) - norm.cdf(0, mean, math.sqrt(0.1)),
                             rtol=1e-3)
  half = get_likelihood("gaussian:0.5")
  assert half.name == "gaussian:0.5"
  # Negative log-density = squared error + a constant (Soft-IntroVAE's loss at variance 1/2).
  d = np.asarray(-half.log_prob(out, x)) - ((y - mean) ** 2)
  np.testing.assert_allclose(d, d[0], rtol=1e-6)
  s = np.asarray(half.sample(_key(0), jnp.zeros((20000, 1))))
  assert s.dtype == np.uint8 and abs(s.mean() / 255 - 0.5) < 0.02 and (s == 255).mean() > 0.05
  with pytest.raises(InvalidInputError):
    get_likelihood("gaussian:-1")
  with pytest.raises(InvalidInputError):
    get_likelihood("gaussian:abc")


def test_likelihood_means():
  for name in sorted(LIKELIHOODS):
    out = jnp.asarray(_params_grid(name))
    lik = get_likelihood(name)
    m = np.asarray(lik.mean(out))
    p = np.exp(np.asarray(lik.log_prob_all(out), np.float64))
    np.testing.assert_allclose(m, (p * np.arange(256)).sum(-1) / 255, rtol=1e-4, atol=1e-5)
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4, likelihood="gaussian")
  v = _init(model, _images(2))
  lp = model.apply(v, _images(2), k=2, method="log_prob", rngs={"sample": _key(1)})
  assert lp.shape == (2,) and bool(jnp.all(jnp.isfinite(lp)))
