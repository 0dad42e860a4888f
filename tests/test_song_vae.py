"""Song et al.'s VAE (App. C.1, Table 3) as model preset ``song`` of ``vae`` (``arch='song'``):
Table 3's layer shapes, the stride-2 deconvolution against a brute-force torch
``ConvTranspose2d(output_padding=1)``, both BatchNorm modes, 3 training steps, and the
DCGAN presets left exactly as they were.

Speed (XLA:CPU): shapes come from ``jax.eval_shape`` (nothing computed); the computing tests
use ngf 4 (widths 4c, 8c, 32) and numpy-drawn weights (no threefry compile).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flax.linen as nn
from conftest import slow_only
from ood_jax.errors import InvalidInputError
from ood_jax.models import ConvVAE, make_model, spec_of
from ood_jax.models.conv_transpose import ConvTranspose
from ood_jax.models.vae import SPEC, song_table
from ood_jax.scores.per_sample_grads import select_layers
from ood_jax.train import TrainConfig, train

# Song et al. Table 3, typed from the paper: (channels, kernel, stride, padding); c = image
# channels, "k" = image width / 4.
TABLE3_ENCODER = [("32c", 5, 1, 2), ("32c", 5, 2, 2), ("32c", 5, 1, 2), ("64c", 5, 2, 2),
                  ("64c", 5, 1, 2), ("256", "k", 1, 0)]
TABLE3_DECODER = [("64c", 5, 1, 2), ("64c", 5, 2, 2), ("64c", 5, 1, 2), ("32c", 5, 2, 2),
                  ("32c", 5, 1, 2), ("32c", 5, 1, 2), ("256", 5, 1, 2), ("256c", 1, 1, 0)]
SHAPES = [(28, 28, 1), (32, 32, 3)]


def _ch(text: str, c: int) -> int:
  return int(text[:-1]) * c if text.endswith("c") else int(text)


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _images(n, hwc, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *hwc), dtype=np.uint8)


def _init(model, x, seed=0):
  """Variables of the module's shapes drawn with numpy (kernels N(0, 0.02), scales 1)."""
  shapes = jax.eval_shape(lambda: model.init({"params": _key(0), "sample": _key(1)}, x,
                                             train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.02, s.shape), s.dtype)
    return jnp.ones(s.shape, s.dtype) if name in ("scale", "var") else jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------- Table 3
@pytest.mark.parametrize("hwc", SHAPES)
def test_song_preset_matches_table3(hwc):
  h, w, c = hwc
  model = make_model("vae", "song", hwc)
  assert (model.arch, model.ngf, model.latent_dim, model.likelihood) == ("song", 32, 64,
                                                                         "categorical256")
  assert spec_of(model) is SPEC
  x = _images(2, hwc)
  v = jax.eval_shape(lambda: model.init({"params": _key(0), "sample": _key(1)}, x, train=False))
  enc, dec = v["params"]["encoder"], v["params"]["decoder"]
  # Encoder: kernels (k, k, C_in, C_out), no biases, a BatchNorm on every convolution.
  c_in, k = c, h // 4
  for i, (ch, kern, _, _) in enumerate(TABLE3_ENCODER, 1):
    kern = k if kern == "k" else kern
    assert enc[f"conv{i}"]["kernel"].shape == (kern, kern, c_in, _ch(ch, c)), i
    assert set(enc[f"conv{i}"]) == {"kernel"} and enc[f"bn{i}"]["scale"].shape == (_ch(ch, c),)
    c_in = _ch(ch, c)
  assert enc["fc"]["kernel"].shape == (256, 2 * 64)        # "followed by a fully connected layer"
  assert sorted(enc) == sorted([f"conv{i}" for i in range(1, 7)] + [f"bn{i}" for i in range(1, 7)]
                               + ["fc"])
  # Generator: the projection to k x k x 64c, then Table 3's 8 layers; no BN on the last two.
  assert dec["fc"]["kernel"].shape == (64, k * k * 64 * c)
  c_in = 64 * c
  for i, (ch, kern, _, _) in enumerate(TABLE3_DECODER, 1):
    assert dec[f"convt{i}"]["kernel"].shape == (kern, kern, c_in, _ch(ch, c)), i
    assert ("bias" in dec[f"convt{i}"]) == (i > 6) and ((f"bn{i}" in dec) == (i <= 6)), i
    c_in = _ch(ch, c)
  # Spatial sizes after each layer follow the strides: H -> H/2 -> H/4 -> 1 and back.
  _, inter = jax.eval_shape(lambda vv: model.apply(vv, x, train=False, rngs={"sample": _key(2)},
                                                  capture_intermediates=True,
                                                  mutable=["intermediates"]), v)
  it = inter["intermediates"]
  sizes = [it["encoder"][f"conv{i}"]["__call__"][0].shape[1:3] for i in range(1, 7)]
  assert sizes == [(h, w), (h // 2, w // 2), (h // 2, w // 2), (k, k), (k, k), (1, 1)]
  # (convt2 / convt4 are cropped after the call: their BatchNorm sees the doubled size)
  sizes = [it["decoder"][f"bn{i}"]["__call__"][0].shape[1:3] for i in range(1, 7)]
  assert sizes == [(k, k), (2 * k, 2 * k), (2 * k, 2 * k), (h, w), (h, w), (h, w)]
  out = it["decoder"]["__call__"][0]
  assert out.shape == (2, h, w, 256 * c)
  assert it["__call__"][0].shape == (2,)
  # The table helper the module builds from says the same (ngf scales every width).
  rows = song_table(hwc, 32)
  assert [r[0] for r in rows["encoder"]] == [_ch(r[0], c) for r in TABLE3_ENCODER]
  assert [r[2:] for r in rows["decoder"]] == [r[2:] for r in TABLE3_DECODER]
  assert [r[0] for r in song_table(hwc, 16)["decoder"]] == [32 * c, 32 * c, 32 * c, 16 * c,
                                                           16 * c, 16 * c, 128, 256 * c]


def test_rose_layers_are_the_encoder_convolutions():
  model = make_model("vae", "song", (28, 28, 1), ngf=4)
  v = jax.eval_shape(lambda: model.init({"params": _key(0), "sample": _key(1)},
                                        _images(1, (28, 28, 1)), train=False))
  assert select_layers(v["params"], SPEC.rose_layers) == [f"encoder/conv{i}" for i in range(1, 7)]


def test_stride2_deconv_is_torch_output_padding_brute_force():
  """convt2 of the generator (what reaches bn2) = torch ConvTranspose2d(k 5, s 2, p 2,
  output_padding 1) computed by scattering every input pixel through every tap."""
  model = make_model("vae", "song", (28, 28, 1), ngf=4, latent_dim=3)
  x = _images(2, (28, 28, 1))
  v = _init(model, x, seed=3)
  seen = {}

  def grab(next_fun, args, kwargs, context):
    path = tuple(context.module.path)
    if path in (("decoder", "convt2"), ("decoder", "bn2")) and context.method_name == "__call__":
      seen[path[-1]] = np.asarray(args[0], np.float64)
    return next_fun(*args, **kwargs)

  z = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
  with nn.intercept_methods(grab):
    model.apply(v, z, False, method=ConvVAE.decode)
  xin, got = seen["convt2"], seen["bn2"]
  w = np.asarray(v["params"]["decoder"]["convt2"]["kernel"], np.float64)   # correlation layout
  n, hi, wi, _ = xin.shape
  k, s, p = 5, 2, 2
  ref = np.zeros((n, 2 * hi + k, 2 * wi + k, w.shape[-1]))     # room for o = i*s - p + t
  for i in range(hi):
    for j in range(wi):
      for th in range(k):
        for tw in range(k):      # torch tap (th, tw) = stored kernel (k-1-th, k-1-tw)
          ref[:, i * s + th, j * s + tw] += xin[:, i, j] @ w[k - 1 - th, k - 1 - tw]
  ref = ref[:, p:p + 2 * hi, p:p + 2 * wi]                   # torch output size (n-1)s-2p+k+1
  assert got.shape == ref.shape == (2, 14, 14, 8)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- methods
@pytest.fixture(scope="module")
def small():
  """ngf 4, latent 8 song VAEs at 28 x 28 x 1 and 32 x 32 x 3 with numpy-drawn weights."""
  out = {}
  for hwc in SHAPES:
    model = make_model("vae", "song", hwc, ngf=4, latent_dim=8)
    x = _images(6, hwc, seed=hwc[0])
    out[hwc] = (model, x, _init(model, x))
  return out


@pytest.mark.parametrize("hwc", SHAPES)
def test_log_prob_and_objective_in_both_batchnorm_modes(small, hwc):
  model, x, v = small[hwc]
  rngs = {"sample": _key(0)}
  other = x.copy()
  other[1:] = 255 - other[1:]

  @jax.jit
  def run(xx):
    out = {"nll_eval": model.apply(v, xx, False, rngs=rngs),
           "lp_eval": model.apply(v, xx, False, k=3, method="log_prob", rngs=rngs)}
    out["nll_train"], upd = model.apply(v, xx, True, rngs=rngs, mutable=["batch_stats"])
    out["lp_train"], _ = model.apply(v, xx, True, k=3, method="log_prob", rngs=rngs,
                                     mutable=["batch_stats"])
    out["lp_mixed"], _ = model.apply(v, xx, {"encoder": True, "decoder": False}, k=3,
                                     method="log_prob", rngs=rngs, mutable=["batch_stats"])
    return out, upd

  a, upd = run(x)
  b, _ = run(other)
  for name, val in a.items():
    assert val.shape == (6,) and bool(jnp.all(jnp.isfinite(val))), name
  # Untrained categorical decoder: about 8 bits/dim (-log 256 per sub-pixel).
  d = np.prod(hwc)
  assert abs(float(jnp.mean(a["lp_eval"])) / d + np.log(256)) < 0.05
  # Eval mode: image 0's value does not depend on the rest of the batch; train mode: it does.
  np.testing.assert_allclose(float(a["lp_eval"][0]), float(b["lp_eval"][0]), rtol=1e-6)
  np.testing.assert_allclose(float(a["nll_eval"][0]), float(b["nll_eval"][0]), rtol=1e-6)
  assert abs(float(a["lp_train"][0]) - float(b["lp_train"][0])) > 1e-3
  assert abs(float(a["nll_train"][0]) - float(b["nll_train"][0])) > 1e-3
  assert float(jnp.max(jnp.abs(a["lp_mixed"] - a["lp_eval"]))) > 1e-3
  # Train mode updates every BatchNorm's running statistics (12 BatchNorms).
  stats = upd["batch_stats"]
  assert len(stats["encoder"]) == 6 and len(stats["decoder"]) == 6
  changed = jax.tree.map(lambda p, q: bool(jnp.any(p != q)), stats, v["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # samples: uint8 images of the model's shape
  s = jax.jit(lambda: model.apply(v, _key(3), 2, method="sample"))()
  assert s.shape == (2, *hwc) and s.dtype == jnp.uint8


def test_module_initialiser():
  """The module's own initialiser: DCGAN statistics (kernels N(0, 0.02), BN scale ~1,
  biases 0), BN running stats 0 / 1."""
  model = make_model("vae", "song", (28, 28, 1), ngf=4, latent_dim=8)
  v = jax.jit(lambda: model.init({"params": _key(0), "sample": _key(1)},
                                 jnp.zeros((1, 28, 28, 1), jnp.uint8), train=False))()
  k = np.asarray(v["params"]["decoder"]["fc"]["kernel"])
  assert abs(k.std() - 0.02) < 0.002 and abs(k.mean()) < 0.002
  assert not np.any(np.asarray(v["params"]["encoder"]["fc"]["bias"]))
  s = np.asarray(v["params"]["encoder"]["bn6"]["scale"])
  assert abs(s.mean() - 1.0) < 0.02 and 0 < s.std() < 0.05
  assert np.all(np.asarray(v["batch_stats"]["decoder"]["bn1"]["var"]) == 1.0)


def test_song_preset_trains_3_steps():
  """3 Adam steps of the objective in train mode (hand loop: one compile; the trainer itself
  is the slow test below): finite, the loss falls, the running statistics move."""
  model = make_model("vae", "song", (28, 28, 1), ngf=4, latent_dim=8)
  x = _images(8, (28, 28, 1))
  v = _init(model, x)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, stats, opt, key):
    def loss_fn(p):
      loss, upd = model.apply({"params": p, "batch_stats": stats}, x, True,
                              mutable=["batch_stats"], rngs={"sample": key})
      return loss.mean(), upd["batch_stats"]
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), stats, opt, loss

  params, stats, opt = v["params"], v["batch_stats"], tx.init(v["params"])
  losses = []
  for i in range(3):
    params, stats, opt, loss = step(params, stats, opt, _key(10 + i))
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert losses[0] > 0.9 * np.prod(x.shape[1:]) * np.log(256)      # starts near 8 bits/dim
  assert float(jnp.max(jnp.abs(params["decoder"]["convt8"]["bias"]))) > 0
  assert bool(jnp.any(stats["encoder"]["bn1"]["mean"] != v["batch_stats"]["encoder"]["bn1"]["mean"]))


@slow_only
@pytest.mark.parametrize("hwc", SHAPES)
def test_full_size_song_preset_trains_3_steps(hwc):
  """The trainer (``ood_jax.train.train``) on the full-size song preset."""
  cfg = TrainConfig(batch_size=4, num_steps=3, learning_rate=1e-3, log_every=1,
                    halve_every_epochs=None)
  r = train(make_model("vae", "song", hwc), _images(8, hwc), cfg, None, progress=False)
  assert r.step == 3 and np.all(np.isfinite([h["loss"] for h in r.history]))


# ----------------------------------------------------------------------------- unchanged
# ConvVAE at the cpu / paper presets (grey), exactly as before the ``arch`` field.
DCGAN_GREY_TREE = {
    "decoder/final_convt/kernel": (4, 4, 32, 256),
    "decoder/initial_bn/bias": (128,), "decoder/initial_bn/scale": (128,),
    "decoder/initial_convt/kernel": (4, 4, 100, 128),
    "decoder/pyramid_bn1/bias": (64,), "decoder/pyramid_bn1/scale": (64,),
    "decoder/pyramid_bn2/bias": (32,), "decoder/pyramid_bn2/scale": (32,),
    "decoder/pyramid_convt1/kernel": (4, 4, 128, 64),
    "decoder/pyramid_convt2/kernel": (4, 4, 64, 32),
    "encoder/input_bn/bias": (32,), "encoder/input_bn/scale": (32,),
    "encoder/input_conv/kernel": (4, 4, 1, 32),
    "encoder/logvar_conv/bias": (100,), "encoder/logvar_conv/kernel": (4, 4, 128, 100),
    "encoder/mu_conv/bias": (100,), "encoder/mu_conv/kernel": (4, 4, 128, 100),
    "encoder/pyramid_bn1/bias": (64,), "encoder/pyramid_bn1/scale": (64,),
    "encoder/pyramid_bn2/bias": (128,), "encoder/pyramid_bn2/scale": (128,),
    "encoder/pyramid_conv1/kernel": (4, 4, 32, 64),
    "encoder/pyramid_conv2/kernel": (4, 4, 64, 128),
}
DCGAN_CPU_GREY_REPR = """ConvVAE(
    # attributes
    image_shape = (32, 32, 1)
    latent_dim = 100
    ngf = 32
    likelihood = 'categorical256'
    fast_convt_grad = True
)"""


def _tree(model, c):
  v = jax.eval_shape(lambda: model.init({"params": _key(0), "sample": _key(1)},
                                        _images(1, (32, 32, c)), train=False))
  return {"/".join(p.key for p in path): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(v["params"])[0]}


def test_dcgan_presets_unchanged():
  for preset in ("cpu", "paper"):
    grey = make_model("vae", preset, (32, 32, 1))
    assert grey.arch == "dcgan" and _tree(grey, 1) == DCGAN_GREY_TREE, preset
    # repr keys the checkpoint cache (Run.checkpoint_dir): the default arch is not in it
    assert repr(grey) == DCGAN_CPU_GREY_REPR, preset
  assert _tree(ConvVAE(), 1) == DCGAN_GREY_TREE
  colour = _tree(make_model("vae", "cpu", (32, 32, 3)), 3)
  assert colour["encoder/input_conv/kernel"] == (4, 4, 3, 64)
  assert colour["decoder/final_convt/kernel"] == (4, 4, 64, 768)
  assert colour.keys() == DCGAN_GREY_TREE.keys()
  # the same weights give the same outputs with arch given explicitly or not
  a, b = ConvVAE(latent_dim=4, ngf=4), ConvVAE(latent_dim=4, ngf=4, arch="dcgan")
  x = _images(3, (32, 32, 1))
  v = _init(a, x)
  eps = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  f = lambda m: jax.jit(lambda vv: m.apply(vv, x, eps, method="neg_elbo"))(v)
  np.testing.assert_array_equal(np.asarray(f(a)), np.asarray(f(b)))
  assert "arch = 'song'" in repr(make_model("vae", "song", (28, 28, 1)))


def test_invalid_settings():
  with pytest.raises(InvalidInputError, match="arch must be one of"):
    ConvVAE(arch="sylvester")
  with pytest.raises(InvalidInputError, match="divisible by 4"):
    make_model("vae", "song", (30, 30, 1))
  with pytest.raises(InvalidInputError, match="resize:32"):       # the DCGAN VAE: 32 only
    make_model("vae", "cpu", (28, 28, 1))
  model = make_model("vae", "song", (28, 28, 1), ngf=4)
  with pytest.raises(InvalidInputError):
    model.apply({}, _images(1, (32, 32, 1)), False, method="encode")
