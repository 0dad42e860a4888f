"""ROSE App. D, Fig. 6: layer-wise ROSE (DIAG) of classifiers trained on FashionMNIST.

    python -m ood_jax.experiments.rose_layerwise                   # cpu preset
    python -m ood_jax.experiments.rose_layerwise --preset smoke --out /tmp/rose_fig6_smoke
    python -m ood_jax.experiments.rose_layerwise --archs basic_cnn,vgg11 --ood mnist

For each architecture of ``--archs`` (``models/rose_classifiers.py``: a basic 4-conv CNN,
VGG-11/13/16/19, ResNet-18) this trains a classifier with cross-entropy on the labelled ID
training split (``--id``, default FashionMNIST; checkpointed under ``--ckpt-dir``, resumed if
killed, reused when finished), reports its ID test accuracy, then fits ONE ``rose`` scorer
(``fisher='diag'``, the paper's "diagonal preconditioner", on every ``nn.Conv`` / ``nn.Dense``
layer) on the ID training images: ``n_fisher`` of them fit the Fisher diagonals, ``n_norm``
others the z-score statistics. The per-sample objective is the cross-entropy at the predicted
label (``argmax`` of the logits; App. D: "the arguments of the maxima ... are used as a
label"), eval-mode BatchNorm. The un-aggregated layer scores ``s_l(x) = g_lᵀ F_l⁻¹ g_l``
(``state.chunk_fn.layer_scores``) of the ID test set and of every OOD set give one AUROC per
(architecture, layer, OOD set), OOD positive (a z-score is a per-layer affine map, so the
AUROC of the raw and the z-scored layer score are the same). Layers are indexed in the order
the forward pass calls them (1 = the first conv, the last = the fc layer; ResNet-18's three
1x1 shortcut convs are counted where they are called, after their block's second conv).

OOD sets (``--ood``): the paper's MNIST, KMNIST and NotMNIST; sets whose data is not here are
listed with the reason and skipped (here: MNIST only), other grey sets, synthetic sets and
transforms of the ID test set may be added. Writes ``report.md`` (per-architecture layer
tables, a summary of the curve's shape against the paper's claims), ``results.json`` (one row
per architecture x layer x OOD set; ``score`` = ``L<index>:<layer path>``), ``layers.json``,
``meta.json``, ``scores.npz`` (every per-image layer score) and ``fig6_auroc_by_layer.png``
(AUROC vs layer index, one panel per architecture, one line per OOD set).

The paper gives no numbers (Fig. 6 is a plot) and states only: six classifiers, the basic CNN
has four conv layers, every network has one fully connected layer, argmax labels, cross-entropy
for training and scoring, DIAG, AUROC. Our choices where it is silent:

* Architectures (``rose_classifiers``): conv -> BatchNorm -> ReLU (convs without bias), 2x2
  ``SAME`` max-pools, global average pool, one fc; VGG widths ``width x (1, 2, 4, 8, 8)``,
  ResNet-18 CIFAR-style, widths ``width x (1, 2, 4, 8)``; BasicCNN widths ``widths``. Inputs
  28 x 28 (no resizing), ``x / 255``.
* Training: Adam (torch's), batch 128, lr 1e-3, no augmentation. ``paper``: 20 epochs, lr
  halved every 5, standard widths (VGG / ResNet ``width=64``; BasicCNN 64-128-256-256).
  ``cpu``: all six architectures, a quarter of the VGG / ResNet widths (``width=16``; BasicCNN
  32-64-128-128), 800 steps (1.7 epochs, lr halved at step 550); ``smoke``: tiny widths, 20
  steps, 512 images.
* ROSE: DIAG with the scorer's default relative damping (``1e-3 x`` the mean Fisher diagonal of
  the layer), kernel and bias of a layer in one block; ``n_fisher = n_norm = 1000`` ID training
  images (``cpu`` / ``paper``); the layer scores of ``n_eval`` images per test set (``cpu``:
  1000; ``paper``: all).

Expected (App. D): AUROC rises with depth in the basic CNN; VGG and ResNet-18 rise, then drop at
the deepest layers. The summary gives, per architecture, the best layer, the first / best / last
AUROC and Spearman's rank correlation of AUROC with the layer index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from ood_jax import data, metrics
from ood_jax.data import batches
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, pipeline, score_file, settings
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug, split_list
from ood_jax.models import rose_classifiers as rc
from ood_jax.models.registry import make_model
from ood_jax.registry import check_settings, choose
from ood_jax.scores.rose import Rose
from ood_jax.train import TrainConfig, train

DEFAULT_OOD = "mnist,kmnist,not_mnist"      # App. D's OOD sets
CHUNK = 500                                  # images per compiled logits call
FIGURE = "fig6_auroc_by_layer.png"
# Rose fields the experiment fixes (the layer-wise DIAG score of every layer).
_ROSE_FIXED = ("name", "fisher", "layers", "aggregation", "seed", "progress", "fast_path")

EXPECTED = {"basic_cnn": "AUROC rises as the layer deepens",
            **{a: "rises, then drops at the deep layers" for a in rc.ARCHS if a != "basic_cnn"}}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One preset: the architectures, their model preset, training, ROSE fit sizes, image counts."""
  archs: tuple[str, ...]
  model_preset: str
  train: TrainConfig
  rose: dict
  n_train: int | None
  n_eval: int | None


RECIPES = {
    "smoke": Recipe(
        rc.ARCHS, "smoke",
        TrainConfig(batch_size=32, num_steps=20, learning_rate=2e-3, halve_every_epochs=None,
                    log_every=10, checkpoint_every=100),
        dict(n_fisher=32, n_norm=32, chunk_size=32), n_train=512, n_eval=48),
    # 2-core CPU, ~40 min on an idle machine: training ~27 min (s per batch-128 step: basic CNN
    # 0.32, VGG-11/13/16/19 0.19/0.25/0.32/0.38, ResNet-18 0.57; measured beside the reference
    # VAE's step and scaled to its 0.33 s), ROSE ~1-2 min per architecture (fit on 2000
    # images, 2000 scored: 4-18 s per 1000 images plus compilation).
    "cpu": Recipe(
        rc.ARCHS, "cpu",
        TrainConfig(batch_size=128, num_steps=800, learning_rate=1e-3, halve_every_epochs=None,
                    decay_steps=(550,), decay_factor=0.5, log_every=50, checkpoint_every=200),
        dict(n_fisher=1000, n_norm=1000, chunk_size=100), n_train=None, n_eval=1000),
    "paper": Recipe(
        rc.ARCHS, "paper",
        TrainConfig(batch_size=128, epochs=20, learning_rate=1e-3, halve_every_epochs=5,
                    log_every=100, checkpoint_every=2000),
        dict(n_fisher=1000, n_norm=1000, chunk_size=50), n_train=None, n_eval=None),
}


# ----------------------------------------------------------------------------- settings


def _given(r: Run, flag: str) -> bool:
  return any(a == flag or a.startswith(flag + "=") for a in r.argv)


def resolved(r: Run) -> dict:
  """``{'archs', 'model_preset', 'train', 'rose', 'n_train', 'n_eval'}``: the preset's recipe
  with the run's seed and overrides (``--archs``, ``--model-preset``, ``--train-args``,
  ``--train-steps``, ``--rose-args``, ``--n-eval``); raises ``InvalidInputError`` for bad ones."""
  recipe = RECIPES[r.preset]
  archs = tuple(split_list(r.options["archs"])) if r.options["archs"] else recipe.archs
  if not archs:
    raise InvalidInputError("--archs: no architectures given.")
  for a in archs:
    choose("architecture (--archs)", a, rc.SPECS)
  if len(set(archs)) != len(archs):
    raise InvalidInputError(f"--archs: an architecture is named twice in {r.options['archs']!r}.")
  model_preset = r.model_preset if _given(r, "--model-preset") else recipe.model_preset
  choose("model preset (--model-preset)", model_preset, rc.SPECS[archs[0]].presets)
  over = dict(r.train_args)
  if "epochs" in over and "num_steps" not in over:
    over["num_steps"] = None
  if r.train_steps is not None:
    over["num_steps"] = int(r.train_steps)
  config = dataclasses.replace(recipe.train, seed=r.seed, **over)
  rose = check_settings("--rose-args", Rose, settings.parse_pairs(r.options["rose_args"], "--rose-args"),
                        exclude=_ROSE_FIXED)
  rose = {**recipe.rose, **rose}
  Rose(fisher="diag", **rose)                           # ranges checked now
  n_eval = r.n_eval if _given(r, "--n-eval") else recipe.n_eval
  return {"archs": archs, "model_preset": model_preset, "train": config, "rose": rose,
          "n_train": recipe.n_train, "n_eval": n_eval}


def plan_oods(r: Run) -> tuple[list[str], list[dict]]:
  """``(OOD names that load here, skipped [{'ood', 'reason'}])``."""
  runnable, skipped = [], []
  for o in r.oods:
    why = availability.missing(pipeline.ood_spec(o, r.id), "test", r.data_dir)
    if why:
      skipped.append({"ood": o, "reason": why})
    else:
      runnable.append(o)
  return runnable, skipped


def check(r: Run) -> None:
  resolved(r)
  if not r.oods:
    raise InvalidInputError("--ood: no OOD sets given.")
  for name in [r.id, *(pipeline.ood_spec(o, r.id) for o in r.oods)]:
    data.parse_spec(name)                      # a bad transform fails now
  for split in ("train", "test"):
    why = availability.missing(r.id, split, r.data_dir)
    if why:
      raise InvalidInputError(f"--id: {why}.")
  if data.load(r.id, "train", data_dir=r.data_dir, n=1).y is None:
    raise InvalidInputError(f"--id {r.id}: the training split has no class labels here; the"
                            " classifiers need them.")
  runnable, skipped = plan_oods(r)
  if not runnable:
    raise InvalidInputError(f"--ood {','.join(r.oods)}: none of these sets is available here ("
                            + "; ".join(s["reason"] for s in skipped) + ").")


# ----------------------------------------------------------------------------- steps


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def checkpoint_dir(r: Run, arch: str, model, config: TrainConfig, data_digest: str) -> str:
  """The trained-classifier cache: a readable slug and a hash of the module, the
  weight-changing config fields and the training arrays' bytes."""
  cfg = {k: v for k, v in dataclasses.asdict(config).items()
         if k not in ("log_every", "checkpoint_every", "keep_checkpoints")}
  if cfg["num_steps"] is not None:
    cfg.pop("epochs")
  key = json.dumps({"model": repr(model), "train": cfg, "data": data_digest}, sort_keys=True,
                   default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:8]
  return os.path.join(r.ckpt_root, slug(r.id, "rose_layerwise", arch, f"seed{config.seed}")
                      + f"-{digest}")


def accuracy(model, variables, x: np.ndarray, y: np.ndarray) -> float:
  """Fraction of ``x`` whose argmax logit is ``y`` (eval mode)."""
  fn = jax.jit(lambda xb: model.apply(variables, xb, method=model.logits))
  chunk = min(CHUNK, len(x))
  pred = np.concatenate([np.argmax(np.asarray(fn(p)), axis=1)[:n]
                         for p, n in batches.padded_chunks(x, chunk)])
  return float(np.mean(pred == y))


def layer_scores(scorer: Rose, state, x: np.ndarray) -> np.ndarray:
  """The un-aggregated ROSE layer scores ``s_l(x)`` (``N x L``, float64, columns in the order
  of ``scorer.chosen_layers``) from ``state.chunk_fn.layer_scores``, in chunks of the fit's
  shape (``chunk_size`` rounded up to the devices; the last one padded), so the function the
  fit compiled for its normalisation pass is reused."""
  raw = state.chunk_fn.layer_scores
  p = {"v": state.params["v"], "stats": state.params["stats"]}
  d = jax.device_count()
  chunk = max(d, -(-scorer.chunk_size // d) * d)
  key = jax.random.PRNGKey(scorer.seed)
  out = []
  for i, (part, n) in enumerate(batches.padded_chunks(x, chunk)):
    s = raw(p, batches.to_devices(part), jax.random.fold_in(key, i))
    out.append(np.asarray(jax.device_get(s), np.float64)[:n])
  s = np.concatenate(out)
  if not np.all(np.isfinite(s)):
    raise InvalidInputError(f"rose layer scores: {int(np.sum(~np.isfinite(s)))} values are"
                            " NaN/inf; the classifier's weights are broken (diverged training?).")
  return s


def spearman(values) -> float | None:
  """Spearman's rank correlation of ``values`` with their index (None if constant)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2 or np.all(v == v[0]):
    return None
  return float(sps.spearmanr(np.arange(len(v)), v).statistic)


def shape_summary(aurocs: list[float]) -> dict:
  """The curve's shape: best layer (1-based), first / best / last AUROC, drop from the best
  to the last, Spearman's rho with the layer index."""
  a = np.asarray(aurocs, np.float64)
  best = int(np.argmax(a))
  return {"n_layers": len(a), "best_layer": best + 1, "auroc_first": float(a[0]),
          "auroc_best": float(a[best]), "auroc_last": float(a[-1]),
          "drop_best_to_last": float(a[best] - a[-1]), "spearman_rho": spearman(a)}


def run_arch(r: Run, cfg: dict, arch: str, sets: dict) -> dict:
  """Trains (or loads) ``arch``, fits ROSE on its layers and scores every set."""
  tr, te, oods = sets["train"], sets["test"], sets["ood"]
  hwc = tuple(tr.x.shape[1:])
  model = make_model(arch, cfg["model_preset"], hwc, num_classes=sets["num_classes"])
  config = cfg["train"]
  ckpt = checkpoint_dir(r, arch, model, config, sets["digest"])
  with pipeline.Timer() as tt:
    result = train(model, {"x": tr.x, "y": tr.y}, config, ckpt, progress=r.progress,
                   desc=f"train {arch} on {r.id}")
  v = result.variables
  acc = accuracy(model, v, te.x, te.y) if te.y is not None else None
  order = rc.layer_paths(model)
  scorer = Rose(fisher="diag", layers=tuple(order), seed=r.seed, progress=r.progress, **cfg["rose"])
  with pipeline.Timer() as ts:
    state = scorer.fit(model, v, tr.x)
    chosen = scorer.chosen_layers(model, v, tr.x[:1])
    cols = [l.path for l in chosen]
    if sorted(cols) != sorted(order):
      raise InvalidInputError(f"{arch}: ROSE chose layers {cols}, expected {order}.")
    perm = [cols.index(p) for p in order]                 # columns in forward order
    scores = {"__id__": layer_scores(scorer, state, te.x)[:, perm]}
    for o, x in oods.items():
      scores[o] = layer_scores(scorer, state, x)[:, perm]
  kinds = {l.path: l.kind for l in chosen}
  params = jax.device_get(v["params"])
  layers = []
  for j, path in enumerate(order):
    node = params
    for k in path.split("/"):
      node = node[k]
    layers.append({"index": j + 1, "layer": path, "kind": kinds[path],
                   "params": int(sum(np.size(a) for a in jax.tree.leaves(node))),
                   "score": f"L{j + 1:02d}:{path}"})
  info = {"parameters": int(sum(np.size(a) for a in jax.tree.leaves(params))),
          "train_steps": result.step, "resumed_from": result.resumed_from,
          "train_seconds_this_run": round(result.seconds, 1), "train_wall_seconds": round(tt.seconds, 1),
          "score_seconds": round(ts.seconds, 1),
          "final_train_loss_nats": result.history[-1]["loss"] if result.history else None,
          "test_accuracy": None if acc is None else round(acc, 4), "checkpoint": ckpt,
          "settings": rc.SPECS[arch].defaults | dict(
              (k, getattr(model, k)) for k in ("widths", "width") if hasattr(model, k)),
          "n_layers": len(order),
          "fast_path_layers": sum(k != "generic" for k in kinds.values())}
  return {"layers": layers, "scores": scores, "info": info}


def layer_metric_rows(id_name: str, arch: str, layers: list[dict], scores: dict):
  """``(rows, layer rows, {ood: [AUROC per layer]})`` of one architecture: one metric row
  (``report.ROW_KEYS``; ``score`` = the layer's ``L<index>:<path>``) and one ``layers.json``
  row per (layer, OOD set), from ``scores`` = ``{'__id__' | ood: N x L layer scores}``."""
  s_id = scores["__id__"]
  if s_id.shape[1] != len(layers):
    raise InvalidInputError(f"{arch}: {s_id.shape[1]} score columns for {len(layers)} layers.")
  rows, layer_rows, by_ood = [], [], {}
  for o, s_ood in scores.items():
    if o == "__id__":
      continue
    by_ood[o] = []
    for j, l in enumerate(layers):
      m = metrics.ood_metrics(s_id[:, j], s_ood[:, j])
      rows.append({"id": id_name, "model": arch, "score": l["score"], "ood": o, **m})
      layer_rows.append({"arch": arch, **l, "ood": o, "auroc": m["auroc"],
                         "id_mean_score": float(s_id[:, j].mean()),
                         "ood_mean_score": float(s_ood[:, j].mean())})
      by_ood[o].append(m["auroc"])
  return rows, layer_rows, by_ood


# ----------------------------------------------------------------------------- report


def plot_layers(path: str, curves: dict, oods: list[str], accs: dict) -> None:
  """Fig. 6: AUROC vs layer index, one panel per architecture, one line per OOD set (hollow
  markers: ResNet shortcut convs)."""
  n = len(curves)
  cols = min(3, n)
  rows = -(-n // cols)
  fig = Figure(figsize=(4.6 * cols, 3.6 * rows))
  for i, (arch, (layers, by_ood)) in enumerate(curves.items()):
    ax = fig.add_subplot(rows, cols, i + 1)
    idx = np.array([l["index"] for l in layers])
    short = np.array(["shortcut" in l["layer"] for l in layers])
    for c, o in enumerate(oods):
      a = np.asarray(by_ood[o])
      ax.plot(idx, a, "-", color=f"C{c}", lw=1.4, label=o)
      ax.plot(idx[~short], a[~short], "o", color=f"C{c}", ms=4)
      if short.any():
        ax.plot(idx[short], a[short], "o", mfc="none", color=f"C{c}", ms=5)
    ax.axhline(0.5, ls=":", color="0.6", lw=1)
    ax.set_xticks(idx)
    ax.tick_params(axis="x", labelsize="x-small")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("layer index (forward order; last = fc)")
    ax.set_ylabel("AUROC (OOD positive)")
    acc = accs.get(arch)
    ax.set_title(f"{arch}" + (f" (test acc {acc:.3f})" if acc is not None else ""), fontsize="medium")
    ax.legend(fontsize="x-small", loc="lower right")
  fig.suptitle("ROSE (DIAG) per layer, cross-entropy at the predicted label")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=110)


def _f(v, fmt=".3f") -> str:
  return "–" if v is None else format(v, fmt)


def layer_table(arch: str, layers: list[dict], auroc: dict, oods: list[str]) -> list[str]:
  lines = [f"### {arch}", "", "| index | layer | kind | params | " + " | ".join(f"AUROC {o}" for o in oods)
           + " |", "|---:|---|---|---:|" + "---:|" * len(oods)]
  for j, l in enumerate(layers):
    lines.append(f"| {l['index']} | {l['layer']} | {l['kind']} | {l['params']:,} | "
                 + " | ".join(f"{auroc[o][j]:.3f}" for o in oods) + " |")
  return lines + [""]


def summary_lines(summary: list[dict]) -> list[str]:
  lines = ["## The curve's shape against App. D", "",
           "Fig. 6 gives no numbers; its text: \"AUROCs increase in basic CNN as the layer goes"
           " deeper. Moreover, AUROCs of VGG series and ResNet-18 increase gradually and drop off"
           " at the deep layers.\" Best = the layer of the highest AUROC (1-based, of L layers);"
           " rho = Spearman's rank correlation of AUROC with the layer index.", "",
           "| arch | OOD | test acc | best layer / L | AUROC first | best | last | best - last |"
           " rho | paper (App. D) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for s in summary:
    lines.append(f"| {s['arch']} | {s['ood']} | {_f(s['test_accuracy'], '.4f')} | {s['best_layer']} /"
                 f" {s['n_layers']} | {s['auroc_first']:.3f} | {s['auroc_best']:.3f} |"
                 f" {s['auroc_last']:.3f} | {s['drop_best_to_last']:.3f} | {_f(s['spearman_rho'], '.2f')}"
                 f" | {EXPECTED[s['arch']]} |")
  return lines


def run(r: Run) -> Result:
  cfg = resolved(r)
  rc.register()                     # the specs give ROSE the predicted-label objective
  oods, skipped = plan_oods(r)
  tr = data.load(r.id, "train", data_dir=r.data_dir, n=cfg["n_train"], seed=r.seed)
  te = data.load(r.id, "test", data_dir=r.data_dir, n=cfg["n_eval"], seed=r.seed + 1)
  y = tr.require_labels()
  if y.min() < 0:
    raise InvalidInputError(f"{r.id} (train): class labels must be >= 0, got {int(y.min())}.")
  hwc = tuple(tr.x.shape[1:])
  if tuple(te.x.shape[1:]) != hwc:
    raise InvalidInputError(f"{r.id}: train images {hwc} and test images {tuple(te.x.shape[1:])}"
                            " differ in shape.")
  ood_sets, sources, indices = {}, {"id_train": tr.source, "id_test": te.source}, {}
  for o in oods:
    s = data.load(pipeline.ood_spec(o, r.id), "test", data_dir=r.data_dir, n=cfg["n_eval"],
                  seed=r.seed + 2, like=hwc)
    ood_sets[o], sources[o], indices[o] = data.conform(s.x, hwc), s.source, s.indices
  indices[score_file.ID_SET] = te.indices
  sets = {"train": dataclasses.replace(tr, y=y), "test": te, "ood": ood_sets,
          "num_classes": max(int(y.max()) + 1, 2), "digest": _digest(tr.x, y)}

  rows, layer_rows, summary, info, curves, accs, arrays_in = [], [], [], {}, {}, {}, {}
  for arch in cfg["archs"]:
    out = run_arch(r, cfg, arch, sets)
    info[arch] = out["info"]
    accs[arch] = out["info"]["test_accuracy"]
    arch_rows, arch_layers, by_ood = layer_metric_rows(r.id, arch, out["layers"], out["scores"])
    rows += arch_rows
    layer_rows += arch_layers
    for o in oods:
      summary.append({"arch": arch, "ood": o, "test_accuracy": accs[arch],
                      **shape_summary(by_ood[o]), "paper": EXPECTED[arch]})
    s_id = out["scores"]["__id__"]
    for j, l in enumerate(out["layers"]):
      arrays_in[(arch, l["score"], score_file.ID_SET)] = s_id[:, j].astype(np.float32)
      for o in oods:
        arrays_in[(arch, l["score"], o)] = out["scores"][o][:, j].astype(np.float32)
    curves[arch] = (out["layers"], by_ood)

  tables = ["## Per-layer AUROC (Fig. 6)", "",
            "ROSE layer score `s_l = g_lᵀ F_l⁻¹ g_l` (DIAG) of the cross-entropy at the predicted"
            " label, per layer; AUROC with OOD positive. Layers in forward order (the last is the"
            " fc layer); `kind` = how ROSE got the per-sample gradients (conv / dense: the fast"
            " path).", ""]
  for arch, (layers, by_ood) in curves.items():
    tables += layer_table(arch, layers, by_ood, oods)
  if skipped:
    tables += ["OOD sets not run here:", ""] + [f"* {s['ood']}: {s['reason']}." for s in skipped]
  meta = {k: v for k, v in r.settings_meta().items()
          if k not in ("models", "scores", "score_settings", "scorers", "model_preset", "model_args",
                       "train_args", "train_configs", "k_importance", "n_train", "n_eval")}
  meta.update({"archs": list(cfg["archs"]), "model_preset": cfg["model_preset"],
               "train_config": dataclasses.asdict(cfg["train"]),
               "rose": {"fisher": "diag", "objective": "cross-entropy at the predicted label",
                        "layers": "every nn.Conv / nn.Dense", **cfg["rose"]},
               "n_train": len(tr.x), "n_id_test": len(te.x),
               "n_ood": {o: len(x) for o, x in ood_sets.items()}, "oods_run": oods,
               "oods_skipped": skipped, "data_sources": sources, "models": info})
  return Result(
      title=f"ROSE App. D Fig. 6: layer-wise ROSE of classifiers on {r.id} ({r.preset} preset)",
      meta=meta, rows=rows, sections=["\n".join(summary_lines(summary)), "\n".join(tables)],
      json_files={"layers.json": layer_rows, "summary.json": summary},
      figures={FIGURE: lambda path: plot_layers(path, curves, oods, accs)},
      arrays=score_file.to_arrays(r.id, arrays_in, indices))


EXPERIMENT = cli.Experiment(
    "rose_layerwise", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "", "scores": "", "ood": DEFAULT_OOD},
    omit=("--models", "--scores", "--model-args", "--score-args", "--k", "--weights"),
    options=(
        cli.option("--archs", default=None,
                   help=f"comma-separated architectures (default: all: {', '.join(rc.ARCHS)})"),
        cli.option("--rose-args", default=None,
                   help="rose settings, e.g. n_fisher=500,n_norm=500,damping=1e-4,chunk_size=64"),
    ),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
