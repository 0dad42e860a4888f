"""Likelihood Regret: the vectorised re-fit equals a loop of single-image re-fits, the
re-fit raises the image's ELBO, LR >= 0 up to Monte-Carlo noise; im2col conv = lax conv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ood_jax.errors import InvalidInputError
from ood_jax.models import ConvVAE
from ood_jax.scores import get_scorer
from ood_jax.scores import likelihood_regret as lr
from ood_jax.train import init_variables
from toy_models import ToyBN

STEPS, K, LR = 10, 8, 2e-3


@pytest.fixture(scope="module")
def tiny():
  model = ConvVAE(image_shape=(32, 32, 1), latent_dim=4, ngf=4, likelihood="bernoulli")
  x = np.zeros((3, 32, 32, 1), np.uint8)
  x[:, 8:24, 8:24] = np.random.default_rng(0).integers(200, 256, (3, 16, 16, 1))
  v = init_variables(model, x, seed=0)
  # a decoder twice its initial scale depends on z enough for the re-fit to matter
  v = {**v, "params": {**v["params"], "decoder": jax.tree.map(lambda a: 2 * a, v["params"]["decoder"])}}
  tx = lr.refit_optimizer(learning_rate=LR)
  regret = lr.make_regret(model, tx, STEPS, K, K)
  key = jax.random.fold_in(jax.random.PRNGKey(3), 0)    # the scorer's key for chunk 0, seed 3
  # One compiled call re-fits all three images (vmap over images, scan over steps, im2col).
  out = jax.jit(lr.chunk_regret(regret, full=True))(v, x, key)
  return dict(model=model, v=v, x=x, tx=tx, key=key, out=out)


def test_im2col_conv_equals_lax_conv():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 4, 3, 5)), jnp.float32)
  for strides, pad in [((2, 2), [(1, 1), (1, 1)]), ((1, 1), [(0, 0), (0, 0)]), ((2, 1), [(2, 0), (1, 2)])]:
    want = lax.conv_general_dilated(x, w, strides, pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(lr.im2col_conv(x, w, strides, pad), want, rtol=1e-5, atol=1e-5)


def test_vectorised_equals_loop_of_single_image_refits(tiny):
  model, v, x, tx, out = tiny["model"], tiny["v"], tiny["x"], tiny["tx"], tiny["out"]
  # The loop: Python loops over images and steps, a jitted optimiser step on the model's
  # own (lax) convolutions, each image's noise drawn as the vectorised call draws it.
  step = jax.jit(lr.make_step(model, tx))
  log_w = jax.jit(lambda vv, xx, e: model.apply(vv, xx, e[None], method="log_weights")[0])
  moved = []
  for i in range(len(x)):
    eps_steps, eps_iwae = lr.noise(jax.random.fold_in(tiny["key"], i), STEPS, K, model.latent_dim)
    enc = v["params"]["encoder"]
    opt, losses = tx.init(enc), []
    for s in range(STEPS):
      enc, opt, loss = step(v, enc, opt, x[i:i + 1], eps_steps[s])
      losses.append(float(loss))
    got_enc = jax.tree.map(lambda a: a[i], out["encoder"])
    for a, b, c in zip(jax.tree.leaves(got_enc), jax.tree.leaves(enc),
                       jax.tree.leaves(v["params"]["encoder"])):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=LR * 1e-2)
      moved.append(float(np.max(np.abs(b - c))))
    np.testing.assert_allclose(out["losses"][i], losses, rtol=1e-5)
    nll = lambda vv: -(jax.nn.logsumexp(log_w(vv, x[i:i + 1], eps_iwae)) - np.log(K))
    np.testing.assert_allclose(out["nll_before"][i], nll(v), rtol=1e-6)
    np.testing.assert_allclose(out["nll_after"][i], nll(lr.with_encoder(v, enc)), rtol=1e-6)
  assert max(moved) > 0.5 * STEPS * LR           # Adam moves parameters by ~lr per step


def test_refit_raises_elbo_and_regret_is_nonnegative(tiny):
  model, v, x, out = tiny["model"], tiny["v"], tiny["x"], tiny["out"]
  eps_eval = jax.random.normal(jax.random.PRNGKey(9), (64, 1, model.latent_dim))
  elbo = jax.jit(lambda enc, x1: -jnp.mean(
      jax.vmap(lambda e: lr.neg_elbo(model, v, enc, x1, e)[0])(eps_eval)))
  for i in range(len(x)):
    before = elbo(v["params"]["encoder"], x[i:i + 1])
    after = elbo(jax.tree.map(lambda a: a[i], out["encoder"]), x[i:i + 1])
    assert after > before + 1.0, (i, before, after)       # the re-fit raises the ELBO
  # same noise before and after: LR >= 0 up to Monte-Carlo (and float32) noise
  assert np.all(out["regret"] > -0.5), out["regret"]


def test_scorer_returns_the_vectorised_regret(tiny):
  scorer = get_scorer("likelihood_regret", k=K, steps=STEPS, learning_rate=LR, seed=3,
                      chunk_size=4)
  got = scorer.score(scorer.fit(tiny["model"], tiny["v"], None), tiny["x"])
  np.testing.assert_allclose(got, tiny["out"]["regret"], rtol=1e-5, atol=1e-3)


def test_rejects_models_without_an_encoder():
  model = ToyBN()
  v = init_variables(model, np.zeros((4, 4, 4, 1), np.uint8), seed=0)
  with pytest.raises(InvalidInputError, match="encoder"):
    get_scorer("likelihood_regret").fit(model, v, None)
  with pytest.raises(InvalidInputError, match="steps"):
    lr.LikelihoodRegret(steps=-1)
