"""`python -m ood_jax.experiments.song_tempered` (Song et al. App. B, Table 4): temperature
reaches the samplers, the ROC / AUROC wiring (OOD positive) end to end on a tiny BatchNorm
model, and the report's paper columns."""

import json
import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ood_jax.data.pixels import LOG_256
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import score_file, song_tempered as st
from ood_jax.models import make_model
from ood_jax.models.flows.flow_model import quantize

from conftest import slow_only


def _init(model, x, seed=0):
  """Variables drawn with numpy (no compiled init): kernels N(0, 1/fan_in), scales and
  variances 1, everything else 0 (as tests/test_pixelcnnpp.py)."""
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "sample": jax.random.key(1), "dequant": jax.random.key(2)},
      x, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      std = 1.0 / math.sqrt(int(np.prod(s.shape[:-1])))
      return jnp.asarray(rng.normal(0, std, s.shape), s.dtype)
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# ------------------------------------------------------------------------ temperature
def test_realnvp_temperature_changes_samples():
  """T = 0 puts every latent at 0: all samples are one image; T = 1 spreads them, T = 0.3
  less; the same (seed, T) gives the same samples, and chunking does not change n."""
  model = make_model("realnvp", "smoke", (4, 4, 1))
  v = _init(model, np.zeros((2, 4, 4, 1), np.uint8))
  cold = st.draw_samples(model, v, 10, 0.0, seed=0, chunk=5)
  assert cold.dtype == np.uint8 and cold.shape == (10, 4, 4, 1)
  assert np.all(cold == cold[:1])
  warm = st.draw_samples(model, v, 10, 0.3, seed=0, chunk=5)
  hot = st.draw_samples(model, v, 10, 1.0, seed=0, chunk=5)
  assert len({s.tobytes() for s in hot}) == 10
  spread = lambda s: float(np.mean(np.std(s.astype(float), axis=0)))
  assert 0.0 < spread(warm) < 0.7 * spread(hot)
  np.testing.assert_array_equal(hot, st.draw_samples(model, v, 10, 1.0, seed=0, chunk=5))
  assert not np.array_equal(hot, st.draw_samples(model, v, 10, 1.0, seed=1, chunk=5))
  with pytest.raises(InvalidInputError, match="temperature"):
    st.draw_samples(model, v, 4, -1.0, seed=0)


def test_pixelcnnpp_temperature_changes_samples():
  """Every pixel's mixture fixed (zero output kernel: components at -0.6 / +0.6 with weights
  0.62 / 0.38): at T = 1 about 62 % of the R values fall in component 0's half, at T = 0.05
  the component choice collapses onto it (> 98 %) -- through ``draw_samples``."""
  model = make_model("pixelcnnpp", "smoke", (8, 8, 3))
  v = _init(model, np.zeros((2, 8, 8, 3), np.uint8))
  a = math.atanh(0.5)
  per_channel = np.array([[-0.6, 0.6, -4, -4, a, a], [-0.6, 0.6, -4, -4, 0, 0],
                          [-0.6, 0.6, -4, -4, 0, 0]])
  bias = np.concatenate([[0.5, 0.0], per_channel.reshape(-1)]).astype(np.float32)
  params = dict(v["params"])
  params["output"] = {"kernel": jnp.zeros_like(params["output"]["kernel"]),
                      "bias": jnp.asarray(bias)}
  v = dict(v, params=params)
  hot = st.draw_samples(model, v, 16, 1.0, seed=3).reshape(-1, 3).astype(float)
  cold = st.draw_samples(model, v, 16, 0.05, seed=3).reshape(-1, 3).astype(float)
  assert abs(np.mean(hot[:, 0] < 128) - 1 / (1 + math.exp(-0.5))) < 0.1     # 1024 draws
  assert np.mean(cold[:, 0] < 128) > 0.98


# ------------------------------------------------------------------------ tiny model
class ToyTempered(nn.Module):
  """Per-pixel affine Gaussian flow after a one-statistic BatchNorm of the dequantised pixels
  ``y = (x + u) / 256``: ``z = exp(a) (y - mean) / sqrt(var + eps) + b ~ N(0, I)``; train mode
  uses the batch's mean / variance (and updates the running ones), eval mode the running
  ones. ``log_prob`` uses bin centres (u = 1/2); ``sample`` draws ``z ~ N(0, T^2 I)``."""
  image_shape: tuple = (8, 8, 1)
  eps: float = 1e-5

  def setup(self):
    self.a = self.param("a", nn.initializers.zeros, self.image_shape)
    self.b = self.param("b", nn.initializers.zeros, self.image_shape)
    self.mean = self.variable("batch_stats", "mean", lambda: jnp.float32(0.5))
    self.var = self.variable("batch_stats", "var", lambda: jnp.float32(1 / 12))

  def _log_p(self, x, u, train):
    y = (x.astype(jnp.float32) + u) / 256.0
    if train:
      m, s2 = jnp.mean(y), jnp.var(y)
      if not self.is_initializing():
        self.mean.value = 0.9 * self.mean.value + 0.1 * m
        self.var.value = 0.9 * self.var.value + 0.1 * s2
    else:
      m, s2 = self.mean.value, self.var.value
    z = jnp.exp(self.a) * (y - m) / jnp.sqrt(s2 + self.eps) + self.b
    d = int(np.prod(self.image_shape))
    ll = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi) + self.a
    return jnp.sum(ll.reshape(x.shape[0], -1), -1) - 0.5 * d * jnp.log(s2 + self.eps) - d * LOG_256

  def __call__(self, x, train: bool = False):
    return -self._log_p(x, jax.random.uniform(self.make_rng("dequant"), x.shape), train)

  def log_prob(self, x, train: bool = False, k: int = 1):
    return self._log_p(x, 0.5, train)

  def sample(self, rng, n, temperature=1.0):
    z = temperature * jax.random.normal(rng, (int(n), *self.image_shape))
    y = (z - self.b) * jnp.exp(-self.a) * jnp.sqrt(self.var.value + self.eps) + self.mean.value
    return quantize(y)


@pytest.fixture
def toy_model():
  from ood_jax.models import registry
  from ood_jax.models.spec import ModelSpec
  registry.register_model("toy_tempered", ModelSpec(
      name="toy_tempered", module=ToyTempered, presets={"smoke": {1: {}, 3: {}}}))
  yield "toy_tempered"
  registry._MODELS.unregister("toy_tempered")


def _toy_data(tmp_path):
  d = tmp_path / "data"
  d.mkdir()
  rng = np.random.default_rng(0)
  dark = lambda n: rng.integers(0, 90, (n, 8, 8, 1), dtype=np.uint8)
  np.savez(d / "toyid_train.npz", x=dark(96))
  np.savez(d / "toyid_test.npz", x=dark(24))
  np.savez(d / "toyq_test.npz", x=rng.integers(150, 256, (40, 8, 8, 1), dtype=np.uint8))
  return str(d)


def _brute_auroc(s_id, s_ood):
  """P(OOD scores higher than ID) over all pairs, ties 1/2: OOD is the positive class."""
  s_id, s_ood = np.asarray(s_id, float)[None, :], np.asarray(s_ood, float)[:, None]
  return float(np.mean((s_ood > s_id) + 0.5 * (s_ood == s_id)))


def test_roc_wiring_on_a_tiny_model(toy_model, tmp_path):
  """``score_sets`` on an untrained tiny BatchNorm model (no training compile): every score
  of ``SCORES`` for the ID test set and each OOD set (real images, samples at T), and the
  metric rows' AUROC equal to the brute-force pairwise AUROC with OOD positive."""
  from ood_jax.data import ImageSet
  from ood_jax.experiments import pipeline
  from ood_jax.train import TrainResult
  r = st.EXPERIMENT.make_run([
      "--preset", "smoke", "--models", toy_model, "--out", str(tmp_path / "o"), "--k", "1",
      "--b", "8", "--pairs", f"toyid:toyq:{toy_model}:1", "--no-progress",
      "--score-args", "t_perm.n_ref=40"])
  model = r.make_model(toy_model, (8, 8, 1))
  rng = np.random.default_rng(0)
  train = rng.integers(0, 90, (48, 8, 8, 1), dtype=np.uint8)
  v = model.init({"params": jax.random.key(0), "dequant": jax.random.key(1)}, train[:8],
                 train=True)
  v = {"params": v["params"], "batch_stats": {"mean": jnp.float32(np.mean(train) / 256),
                                              "var": jnp.float32(np.var(train / 256.0))}}
  trained = pipeline.Trained(toy_model, model, TrainResult(v, 0, None, [], 0.0),
                             r.train_configs[toy_model], str(tmp_path / "ck"))
  mk = lambda name, x: ImageSet(name=name, split="test", x=x, source="test")
  oods = {"bright": mk("bright", rng.integers(150, 256, (16, 8, 8, 1), dtype=np.uint8)),
          "T=2": mk("T=2", st.draw_samples(model, v, 16, 2.0, seed=0))}
  vals, notes = st.score_sets(r, trained, mk("toyid", train), mk("toyid", train[:16]), oods)
  assert notes == [] and list(vals) == list(st.SCORES) + [st.EVAL_KEY] * st.PAIRED_EVAL
  if st.PAIRED_EVAL:        # deterministic eval-mode log_prob: the paired eval bpd is nll's
    for k, v in vals[st.EVAL_KEY].items():
      np.testing.assert_allclose(v, vals["nll"][k] / (64 * math.log(2.0)), rtol=1e-5)
  rows = pipeline.metric_rows("toyid", toy_model, {s: vals[s] for s in st.SCORES})
  assert {(x["score"], x["ood"]) for x in rows} == {(s, o) for s in st.SCORES for o in oods}
  for x in rows:
    s_id, s_ood = vals[x["score"]]["__id__"], vals[x["score"]][x["ood"]]
    assert len(s_id) == 16 and len(s_ood) == 16
    assert x["auroc"] == pytest.approx(_brute_auroc(s_id, s_ood), abs=1e-9)
  by = {(x["score"], x["ood"]): x["auroc"] for x in rows}
  assert by[("nll", "bright")] > 0.95 and by[("t_perm", "bright")] > 0.95   # OOD ranked high
  t_perm = vals["t_perm"]["bright"]                  # a rank count in [0, N/2], N = 40
  assert np.all(t_perm >= 0) and np.all(t_perm <= 20)
  path = st.roc_figure(str(tmp_path / "roc.png"), {s: {"id": vals[s]["__id__"], "ood": {
      o: vals[s][o] for o in oods}} for s in st.ROC_SCORES}, "t")
  assert os.path.getsize(path) > 1000


@slow_only
def test_end_to_end_roc_wiring_on_a_tiny_model(toy_model, tmp_path):
  """Both models trained, samples drawn at two temperatures, every score's AUROC equal to
  the brute-force pairwise AUROC (OOD positive) of the stored per-image scores, Table 4 rows
  consistent, figures written; the held-out half of Q is disjoint from q_phi's training half."""
  out = str(tmp_path / "out")
  argv = ["--preset", "smoke", "--data-dir", _toy_data(tmp_path), "--out", out,
          "--ckpt-dir", str(tmp_path / "ckpt"), "--models", toy_model,
          "--pairs", f"toyid:toyq:{toy_model}:0.5+1.5", "--train-steps", "3", "--n-eval", "16",
          "--n-samples", "16", "--k", "1", "--b", "8", "--train-args", "batch_size=8",
          "--no-progress"]
  assert st.main(argv) == 0
  t4 = json.load(open(os.path.join(out, "results.json")))
  assert [(r["kind"], r["temperature"], r["n"]) for r in t4] == [
      ("id", None, 16), ("real", None, 16), ("samples", 0.5, 16), ("samples", 1.5, 16)]
  for r in t4:
    assert r["train_minus_eval"] == pytest.approx(r["train_bpd"] - r["eval_bpd"])
    assert r["paper_eval_bpd"] is None and r["delta_mean_nats"] >= 0
  rows = json.load(open(os.path.join(out, "auroc.json")))
  _, scores, _ = score_file.read(os.path.join(out, "scores.npz"))
  model = f"{toy_model}@toyid"
  assert {r["score"] for r in rows} == set(st.SCORES)
  assert {r["ood"] for r in rows} == {"toyq (held-out half)", f"{toy_model}(toyq half) T=0.5",
                                      f"{toy_model}(toyq half) T=1.5"}
  for r in rows:
    s_id = scores[(model, r["score"], score_file.ID_SET)]
    s_ood = scores[(model, r["score"], r["ood"])]
    assert r["auroc"] == pytest.approx(_brute_auroc(s_id, s_ood), abs=1e-9)
    assert (r["n_id"], r["n_ood"]) == (len(s_id), len(s_ood))
  # bright real Q against dark ID: eval NLL ranks it OOD (a reversed sign would give ~0)
  real_nll = next(r for r in rows if r["score"] == "nll" and r["ood"] == "toyq (held-out half)")
  assert real_nll["auroc"] > 0.9
  t_perm = scores[(model, "t_perm", score_file.ID_SET)]
  assert np.all(t_perm >= 0) and np.all(t_perm <= 96 / 2)
  names = set(os.listdir(out))
  stem = f"{toy_model}_toyid_toyq"
  assert {f"roc_{stem}.png", f"samples_{stem}.png"} <= names
  meta = json.load(open(os.path.join(out, "meta.json")))
  pair = meta["pairs"][f"toyid:toyq:{toy_model}"]
  assert pair["q_phi"]["n_train"] == 20 and pair["n_real_q"] == 16
  assert pair["q_phi"]["checkpoint"] != pair["p_theta"]["checkpoint"]


def test_q_halves_are_disjoint_and_fixed(tmp_path):
  """The halves of Q's test split: disjoint, fixed across --seed, capped at n_train / n_eval."""
  from types import SimpleNamespace
  d = _toy_data(tmp_path)
  r = SimpleNamespace(data_dir=d, seed=0, n_train=None, n_eval=None)
  a, b = st.q_halves(r, "toyq", (8, 8, 1))
  assert len(a.x) == 20 and len(b.x) == 20
  assert not set(a.indices) & set(b.indices)
  a2, b2 = st.q_halves(SimpleNamespace(data_dir=d, seed=5, n_train=7, n_eval=3), "toyq", (8, 8, 1))
  np.testing.assert_array_equal(a2.x, a.x[:7])
  np.testing.assert_array_equal(b2.x, b.x[:3])


# ------------------------------------------------------------------------ report / parsing
def test_table4_report_has_the_paper_columns():
  """The CIFAR-10 RealNVP pair carries Table 4's numbers beside ours (ID, real set, T = 1.0,
  0.7, 1.3; none at T = 1.1), two lines per set; Fig. 5's shown means are quoted."""
  pair = st.Pair("cifar10", "celeb_a", "realnvp", (1.1, 0.7, 1.0, 1.3))
  n = 4
  vals = {"nll": {}, "bn_train_bpd": {}, "bn_mixed": {}}
  names = {"__id__": ("id", "cifar10 test", None), "real": ("real", "celeb_a (real)", None),
           **{pair.sample_name(t): ("samples", f"T = {t:g}", t) for t in pair.temperatures}}
  d = 32 * 32 * 3 * math.log(2.0)
  for i, key in enumerate(names):
    vals["nll"][key] = np.full(n, (3.0 + i) * d, np.float32)       # eval bpd 3, 4, ...
    vals["bn_train_bpd"][key] = np.full(n, 10.0 + i, np.float32)
    vals["bn_mixed"][key] = np.full(n, 0.5, np.float32)
  rows = st.table4_rows(pair, vals, (32, 32, 3), names)
  by_t = {r["temperature"]: r for r in rows if r["kind"] == "samples"}
  assert rows[0]["eval_bpd"] == pytest.approx(3.0)
  assert rows[0]["train_minus_eval"] == pytest.approx(7.0)
  assert (rows[0]["paper_eval_bpd"], rows[0]["paper_train_bpd"], rows[0]["paper_delta"]) == (3.48, 3.51, 0.03)
  assert rows[1]["paper_train_bpd"] == 11.10
  assert by_t[1.0]["paper_train_bpd"] == 328.0 and by_t[0.7]["paper_delta"] == 315.0
  assert by_t[1.3]["paper_eval_bpd"] == 5.43 and by_t[1.1]["paper_eval_bpd"] is None
  md = st.table4_markdown(pair, rows)
  assert "| set | mode | BPD | Δ (train − eval) | paper BPD | paper Δ |" in md
  assert "| cifar10 test | evaluation | 3.000 | 7.000 | 3.48 | 0.03 | 3.000 | 0.50 |" in md
  assert "|  | training | 10.000 |  | 3.51 |" in md and "the `nll` score;" in md
  assert "|  | training | 14.000 |  | 328.00 |" in md        # T = 1.0 is the 4th set
  fig5 = st.fig5_markdown(pair, {"__id__": np.full(8, 3.0), pair.sample_name(1.1): np.full(8, 4.0)})
  assert "3.610" in fig5 and "3.513" in fig5 and "ours 3.000 and 4.000" in fig5
  vals[st.EVAL_KEY] = {k: np.full(n, 2.0 + 0.5 * i, np.float32) for i, k in enumerate(names)}
  paired = st.table4_rows(pair, vals, (32, 32, 3), names)   # eval mode on the same batches
  assert paired[0]["eval_bpd"] == pytest.approx(2.0) and paired[0]["eval_bpd_nll"] == pytest.approx(3.0)
  assert paired[1]["train_minus_eval"] == pytest.approx(11.0 - 2.5) and paired[1]["paired"]
  assert "same batches, noise and importance samples" in st.table4_markdown(pair, paired)
  del vals[st.EVAL_KEY]
  grey = st.Pair("fashion_mnist", "mnist", "pixelcnnpp", (1.17,))
  grey_rows = st.table4_rows(grey, vals, (32, 32, 3), {"__id__": ("id", "fmnist test", None)})
  assert all(r["paper_eval_bpd"] is None for r in grey_rows)
  assert "Table 4 has only RealNVP on CIFAR-10" in st.table4_markdown(grey, grey_rows)
  assert "| fmnist test | evaluation | 3.000 | 7.000 | – | – |" in st.table4_markdown(grey, grey_rows)


@pytest.mark.parametrize("text, message", [
    ("cifar10:celeb_a:realnvp", "expected 'ID:Q:MODEL:T+T'"),
    ("cifar10:celeb_a:realnvp:0+1", "finite and > 0"),
    ("cifar10:celeb_a:realnvp:x", "numbers joined by '+'"),
    ("cifar10:celeb_a:realnvp:1+1", "given twice"),
    ("a:b:realnvp:1,a:b:realnvp:2", "given twice"),
])
def test_bad_pairs_are_one_error(text, message):
  with pytest.raises(InvalidInputError, match=re.escape(message)):
    st.parse_pairs(text)


def test_default_pairs_and_sampler_budget():
  pairs = st.parse_pairs(st.DEFAULT_PAIRS)
  assert [(p.id, p.q, p.model, p.temperatures) for p in pairs] == [
      ("cifar10", "celeb_a", "realnvp", (1.1, 0.7, 1.0, 1.3)),
      ("fashion_mnist", "mnist", "pixelcnnpp", (1.17,))]
  from ood_jax.train import TrainConfig
  cfg = st.sampler_config(TrainConfig(epochs=0.5, halve_every_epochs=1.0), 60000, 5000)
  assert cfg.epochs == pytest.approx(6.0) and cfg.halve_every_epochs == pytest.approx(12.0)
  fixed = TrainConfig(num_steps=150)
  assert st.sampler_config(fixed, 60000, 5000) is fixed


def test_cli_checks_before_any_work(tmp_path, capsys):
  out = str(tmp_path / "o")
  assert st.main(["--preset", "smoke", "--models", "realnvp", "--out", out,
                  "--pairs", "fashion_mnist:mnist:pixelcnnpp:1.17"]) == 2
  assert "not in --models" in capsys.readouterr().err
  assert st.main(["--preset", "smoke", "--out", out, "--n-samples", "57"]) == 2
  assert "--n-samples 57: realnvp's samples are scored in BatchNorm batches holding 58" in \
      capsys.readouterr().err                                   # round(0.9 * 64)
  r = st.EXPERIMENT.make_run(["--preset", "smoke", "--out", out, "--n-samples", "8",
                              "--n-samples-pixelcnn", "8", "--b", "8"])   # b = 8: m = 7
  assert st.min_samples(r) == 7 and st.n_samples_for(r, "pixelcnnpp") == 8
  assert not os.path.exists(os.path.join(out, "report.md"))
