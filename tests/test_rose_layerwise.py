"""ROSE App. D classifiers (``models/rose_classifiers.py``) and the layer-wise experiment
(``experiments/rose_layerwise.py``): shapes, the predicted-label objective's gradients, the
DIAG layer scores against a hand computation, and the smoke run's rows."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import needs_fmnist, needs_shared_data, slow_only, tiny_images
from ood_jax.errors import InvalidInputError
from ood_jax.models import rose_classifiers as rc
from ood_jax.models.registry import make_model, spec_of
from ood_jax.scores import per_sample_grads as psg
from ood_jax.scores.rose import Rose, split_id

N_LAYERS = {"basic_cnn": 5, "vgg11": 9, "vgg13": 11, "vgg16": 14, "vgg19": 17, "resnet18": 21}


@pytest.fixture
def registered():
  rc.register()
  yield
  rc.unregister()


def _init(model, x, seed=1):
  """Variables of ``model`` without ``model.init``'s cost (its initialisers compile for
  seconds per parameter shape on CPU): shapes from ``eval_shape``, kernels
  ``N(0, 1 / fan_in)``, biases 0, BatchNorm scale 1 / bias 0, running mean 0 / var 1."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, method=model.logits))
  rng = np.random.default_rng(seed)

  def one(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("'kernel']"):
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, fan_in ** -0.5, s.shape), jnp.float32)
    fill = 1.0 if name.endswith(("'scale']", "'var']")) else 0.0
    return jnp.full(s.shape, fill, jnp.float32)
  return jax.tree_util.tree_map_with_path(one, shapes)


def _perturb_stats(v, seed=3):
  """Non-trivial BatchNorm running statistics (init has mean 0 / var 1): means N(0, 0.05^2),
  variances in [0.5, 1.5]."""
  rng = np.random.default_rng(seed)

  def one(path, a):
    if jax.tree_util.keystr(path).endswith("'mean']"):
      return jnp.asarray(rng.normal(0.0, 0.05, a.shape), jnp.float32)
    return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32)
  return {**v, "batch_stats": jax.tree_util.tree_map_with_path(one, v["batch_stats"])}


def _ce_at(model, v, xi, y):
  """One image's cross-entropy at the fixed label ``y``, from its logits."""
  logits = model.apply(v, xi[None], method=model.logits)[0]
  return -jax.nn.log_softmax(logits)[y]


@pytest.mark.parametrize("arch", sorted(N_LAYERS))
def test_forward_shapes_layers_and_spec(arch, registered):
  model = make_model(arch, "smoke", (8, 8, 1))
  x = tiny_images(3, (8, 8, 1))
  y = np.array([0, 3, 9])
  v = _init(model, x)

  def outputs(v, x, y):
    logits = model.apply(v, x, method=model.logits)
    loss, upd = model.apply(v, {"x": x, "y": y}, train=True, mutable=["batch_stats"])
    return logits, model.apply(v, {"x": x, "y": y}, train=False), loss, upd
  logits, ce, loss, upd = outputs(v, x, y)
  assert logits.shape == (3, 10) and ce.shape == (3,) and loss.shape == (3,)
  want = jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(3), y]
  np.testing.assert_allclose(ce, want, rtol=1e-5, atol=1e-6)
  assert jax.tree.structure(upd["batch_stats"]) == jax.tree.structure(v["batch_stats"])
  paths = rc.layer_paths(model)
  assert len(paths) == N_LAYERS[arch] and paths[-1] == "fc"
  assert spec_of(model) is rc.SPECS[arch]
  layers = Rose(fisher="diag", layers=tuple(paths)).chosen_layers(model, v, x)
  assert sorted(l.path for l in layers) == sorted(paths)
  assert all(l.fast for l in layers)              # every layer on ROSE's fast path


def test_bad_settings_and_batches():
  with pytest.raises(InvalidInputError, match="depth"):
    rc.VGG(depth=12)
  with pytest.raises(InvalidInputError, match="widths"):
    rc.BasicCNN(widths=(4, 8))
  m = rc.BasicCNN(image_shape=(8, 8, 1), widths=(2, 2, 2, 2))
  v = _init(m, tiny_images(1, (8, 8, 1)))
  with pytest.raises(InvalidInputError, match="register"):
    m.apply(v, tiny_images(2, (8, 8, 1)))        # __call__ needs {'x', 'y'}


def _check_gradients(arch):
  model = make_model(arch, "smoke", (8, 8, 1))
  x = tiny_images(4, (8, 8, 1), seed=5)
  v = _perturb_stats(_init(model, x))
  obj = psg.objective_for(model)
  paths = rc.layer_paths(model)
  layers = Rose(fisher="diag", layers=tuple(paths)).chosen_layers(model, v, x)

  @jax.jit
  def fast(v, x):   # the objective, ROSE's fast-path per-sample gradients, the logits
    noise = obj.noise(jax.random.PRNGKey(0), x.shape[0])
    pd = psg.patches_and_deltas(obj, layers, v, x, noise)
    grads = {l.path: psg.grad_matrix_to_params(psg.grads_from_patches(*pd[l.path]), l)
             for l in layers}
    return obj.batched(v, x, noise), grads, model.apply(v, x, method=model.logits)
  vals, got, logits = fast(v, jnp.asarray(x))
  logits = np.asarray(logits, np.float64)
  y = logits.argmax(1)
  # Brute force: jax.grad of each image's own CE at its argmax label (fixed before grad).
  ce_grad = jax.jit(jax.value_and_grad(lambda p, xi, yi: _ce_at(model, {**v, "params": p}, xi, yi)))
  lse = np.log(np.sum(np.exp(logits), axis=1))
  for i in range(4):
    ce, g = ce_grad(v["params"], x[i], int(y[i]))
    np.testing.assert_allclose(vals[i], ce, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vals[i], lse[i] - logits[i, y[i]], rtol=1e-4, atol=1e-6)
    other = lse[i] - logits[i, (y[i] + 1) % 10]
    assert other > float(vals[i])                         # not the CE at another label
    for layer in layers:
      want = psg.subtree(g, layer.path)
      for k in want:
        np.testing.assert_allclose(got[layer.path][k][i], want[k], rtol=2e-4, atol=1e-6,
                                   err_msg=f"{arch} {layer.path} {k} image {i}")


def test_predicted_label_objective_gradient_is_brute_force(registered):
  _check_gradients("basic_cnn")


@slow_only
@pytest.mark.parametrize("arch", ["vgg11", "resnet18"])
def test_predicted_label_gradient_deep_archs(arch, registered):
  _check_gradients(arch)      # strided and 1x1 shortcut convs (ResNet) on the fast path


def test_layer_scores_are_the_diag_formula(registered):
  from ood_jax.experiments.rose_layerwise import layer_scores
  model = rc.BasicCNN(image_shape=(8, 8, 1), widths=(2, 3, 3, 4))
  x = tiny_images(5, (8, 8, 1), seed=7)
  v = _perturb_stats(_init(model, x))
  paths = rc.layer_paths(model)
  scorer = Rose(fisher="diag", layers=tuple(paths), n_fisher=3, n_norm=2, chunk_size=8)
  state = scorer.fit(model, v, x)
  cols = [l.path for l in scorer.chosen_layers(model, v, x)]
  x_new = tiny_images(6, (8, 8, 1), seed=8)
  got = layer_scores(scorer, state, x_new)
  assert got.shape == (6, len(paths))

  def grads(imgs):   # vmap(grad) of the one-image CE at the predicted label
    def one(p, xi):
      logits = model.apply({**v, "params": p}, xi[None], method=model.logits)[0]
      y = jnp.argmax(jax.lax.stop_gradient(logits))
      return -jax.nn.log_softmax(logits)[y]
    return jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0)))(v["params"], jnp.asarray(imgs))

  def block(g, path):   # N x (kernel entries + bias entries), the layer's one DIAG block
    sub = psg.subtree(g, path)
    return np.concatenate([np.asarray(sub[k]).reshape(len(np.asarray(sub[k])), -1)
                           for k in sorted(sub)], axis=1).astype(np.float64)

  idx_f, _ = split_id(5, 3, 2, 0)
  g = grads(np.concatenate([x[idx_f], x_new]))    # one compiled call
  g_fit, g_new = jax.tree.map(lambda a: a[:3], g), jax.tree.map(lambda a: a[3:], g)
  for j, path in enumerate(cols):
    f = np.mean(block(g_fit, path) ** 2, axis=0)
    lam = 1e-3 * f.mean()
    want = np.sum(block(g_new, path) ** 2 / (f + lam), axis=1)
    np.testing.assert_allclose(got[:, j], want, rtol=2e-4, err_msg=path)
  assert np.all(got > 0)


def _write_set(d, name, split, n, seed, labels=True):
  x = tiny_images(n, (8, 8, 1), seed=seed)
  arrays = {"x": x}
  if labels:
    arrays["y"] = np.arange(n) % 10
  np.savez(d / f"{name}_{split}.npz", **arrays)


def test_rows_one_per_layer_and_ood_and_the_curve_shape():
  from ood_jax.experiments.rose_layerwise import layer_metric_rows, shape_summary
  rng = np.random.default_rng(0)
  layers = [{"index": j + 1, "layer": f"conv{j + 1}", "kind": "conv", "params": 1,
             "score": f"L{j + 1:02d}:conv{j + 1}"} for j in range(4)]
  shift = np.array([0.0, 0.5, 1.0, 3.0])              # OOD separation grows with depth
  scores = {"__id__": rng.normal(size=(200, 4)), "mnist": rng.normal(size=(150, 4)) + shift,
            "noise": rng.normal(size=(150, 4)) - shift}
  rows, layer_rows, by_ood = layer_metric_rows("fashion_mnist", "basic_cnn", layers, scores)
  assert len(rows) == len(layer_rows) == 8
  assert {(r["score"], r["ood"]) for r in rows} == {(l["score"], o) for l in layers
                                                    for o in ("mnist", "noise")}
  assert all(r["n_id"] == 200 and r["n_ood"] == 150 for r in rows)
  a = by_ood["mnist"]
  assert a == sorted(a) and a[-1] > 0.95 and abs(a[0] - 0.5) < 0.1
  assert by_ood["noise"][-1] < 0.05                  # OOD lower than ID: AUROC below chance
  up = shape_summary(a)
  assert up["best_layer"] == 4 and up["spearman_rho"] == pytest.approx(1.0)
  peak = shape_summary([0.6, 0.8, 0.9, 0.7])
  assert peak["best_layer"] == 3 and peak["drop_best_to_last"] == pytest.approx(0.2)
  with pytest.raises(InvalidInputError, match="columns"):
    layer_metric_rows("fashion_mnist", "basic_cnn", layers[:3], scores)


@slow_only
def test_smoke_run_writes_one_row_per_arch_layer_ood(tmp_path, monkeypatch):
  from ood_jax.experiments import rose_layerwise
  monkeypatch.delenv("OOD_JAX_DATA_DIR", raising=False)
  d = tmp_path / "data"
  d.mkdir()
  _write_set(d, "fashion_mnist", "train", 64, 0)
  _write_set(d, "fashion_mnist", "test", 24, 1)
  _write_set(d, "mnist", "test", 24, 2, labels=False)
  out = tmp_path / "out"
  try:
    code = rose_layerwise.main(["--preset", "smoke", "--archs", "basic_cnn", "--ood",
                                "mnist,not_mnist,noise", "--data-dir", str(d), "--out", str(out),
                                "--no-progress"])
  finally:
    rc.unregister()
  assert code == 0
  rows = json.loads((out / "results.json").read_text())
  keys = {(r["model"], r["score"], r["ood"]) for r in rows}
  paths = rc.layer_paths(rc.BasicCNN(image_shape=(8, 8, 1), widths=(4, 8, 8, 8)))
  want = {("basic_cnn", f"L{j + 1:02d}:{p}", o) for j, p in enumerate(paths)
          for o in ("mnist", "noise")}
  assert keys == want and len(rows) == len(want)
  assert all(0.0 <= r["auroc"] <= 1.0 and r["n_id"] == 24 for r in rows)
  layers = json.loads((out / "layers.json").read_text())
  assert [l["index"] for l in layers if l["ood"] == "mnist"] == list(range(1, len(paths) + 1))
  assert (out / rose_layerwise.FIGURE).stat().st_size > 0
  report = (out / "report.md").read_text()
  assert "not_mnist" in report and "not available" in report
  meta = json.loads((out / "meta.json").read_text())
  assert meta["models"]["basic_cnn"]["train_steps"] == 20
  assert meta["models"]["basic_cnn"]["fast_path_layers"] == len(paths)


def test_check_refuses_bad_input(tmp_path, monkeypatch):
  from ood_jax.experiments import rose_layerwise
  monkeypatch.delenv("OOD_JAX_DATA_DIR", raising=False)
  d = tmp_path / "data"
  d.mkdir()
  _write_set(d, "fashion_mnist", "train", 16, 0)
  _write_set(d, "fashion_mnist", "test", 8, 1)
  base = ["--preset", "smoke", "--data-dir", str(d), "--out", str(tmp_path / "o")]
  with pytest.raises(Exception, match="vgg12"):
    rose_layerwise.EXPERIMENT.make_run(base + ["--archs", "vgg12", "--ood", "noise"])
  with pytest.raises(InvalidInputError, match="none of these sets"):
    rose_layerwise.EXPERIMENT.make_run(base + ["--ood", "not_mnist"])
  with pytest.raises(InvalidInputError, match="rose"):
    rose_layerwise.EXPERIMENT.make_run(base + ["--ood", "noise", "--rose-args", "n_fisher=0"])


@slow_only
@needs_fmnist
@needs_shared_data
def test_smoke_preset_all_archs_on_fashion_mnist(tmp_path, monkeypatch):
  from conftest import SHARED_DATA
  from ood_jax.experiments import rose_layerwise
  monkeypatch.setenv("OOD_JAX_DATA_DIR", str(SHARED_DATA))
  out = tmp_path / "out"
  try:
    code = rose_layerwise.main(["--preset", "smoke", "--ood", "mnist", "--out", str(out),
                                "--no-progress"])
  finally:
    rc.unregister()
  assert code == 0
  rows = json.loads((out / "results.json").read_text())
  assert len(rows) == sum(N_LAYERS.values())
  assert {r["model"] for r in rows} == set(N_LAYERS)
