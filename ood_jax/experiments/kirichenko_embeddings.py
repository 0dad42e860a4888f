"""Kirichenko et al. App. N-O (Table 2(a), Fig. 17): a RealNVP on image embeddings detects OOD.

    python -m ood_jax.experiments.kirichenko_embeddings                 # cpu preset
    python -m ood_jax.experiments.kirichenko_embeddings --preset smoke --out runs/k_emb_smoke
    python -m ood_jax.experiments.kirichenko_embeddings --features my_feats --pairs cifar10:svhn

For every (train set -> OOD sets) pair of ``--pairs`` whose data exists here: trains a small
CNN classifier (``models/classifier.py``) on the labelled ID training split, takes its
penultimate features of the ID train, ID test and OOD images (OOD images conformed to the ID
shape: grey sets become RGB 32 x 32 for CIFAR-10), standardises every feature with the ID
training set's mean and std, trains ``VectorRealNVP`` (8 couplings, st-nets of 3 hidden
layers x 512 units; AdamW, lr 1e-3, weight decay 1e-3, batch 1024, 120 epochs at ``paper``)
on the standardised ID training features, and reports the NLL AUROC (%, OOD positive,
score ``-log p`` of the feature vector) beside the paper's Table 2(a), and log-likelihood
histograms of ID train, ID test and every OOD set (Fig. 17(b)).

Deviation from the paper: its embeddings are ImageNet-pretrained EfficientNet features
(1792-D), which cannot be obtained here; ours are the penultimate features of a classifier
ood-jax trains on the ID training set (so the ID set needs class labels). ``--features DIR``
uses the user's own feature files instead (``DIR/<name>_<split>.npz``, key ``x``: float N x D;
see ``data.features``) and trains no classifier.

Conventions: log-likelihoods are nats per vector of the **standardised** features
(``(f - mean) / std`` with the ID-train statistics; dimensions constant on the ID training set
are dropped), a continuous density (no dequantisation). The flow is trained on the
standardised features (the reference code trains on raw EfficientNet features; ours have no
common scale, and standardising conditions the training). The map is one affine transform for
every vector, so the density of the raw features is ours plus the constant ``-sum log std``
(``standardization_log_det`` in ``meta.json``): the ranking, and the AUROC, are the same in
either coordinates. Pairs whose data is absent here are listed with the reason: SVHN is not
available; CelebA -> * needs a labelled CelebA training split (absent) unless ``--features``
supplies CelebA features.
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

from ood_jax import data
from ood_jax.data import batches, features as feature_files
from ood_jax.data.registry import canonical_name, subset_indices
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, pipeline, settings
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug
from ood_jax.models.classifier import Classifier
from ood_jax.models.flows.vector_realnvp import VectorRealNVP
from ood_jax.registry import check_settings
from ood_jax.train import TrainConfig, train

# Table 2(a): AUROC (%) of RealNVP on EfficientNet embeddings, (train, OOD) -> value.
PAPER = {("celeb_a", "cifar10"): 99.99, ("celeb_a", "svhn"): 99.99,
         ("cifar10", "celeb_a"): 99.99, ("cifar10", "svhn"): 73.31,
         ("svhn", "celeb_a"): 100.0, ("svhn", "cifar10"): 99.98}
DEFAULT_PAIRS = ("cifar10:celeb_a+svhn+mnist+fashion_mnist,celeb_a:cifar10+svhn,"
                 "svhn:celeb_a+cifar10,fashion_mnist:mnist")
FLOW = "vector_realnvp"
CHUNK = 500          # vectors / images per compiled evaluation call
_FLOW_ADAMW = dict(optimizer="adamw", learning_rate=1e-3, weight_decay=1e-3,
                   halve_every_epochs=None, clip_grad_norm=100.0)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One preset's models and training: ``Classifier`` / ``VectorRealNVP`` settings and their
  ``TrainConfig``s (the seed is the run's)."""
  classifier: dict
  classifier_train: TrainConfig
  flow: dict
  flow_train: TrainConfig


RECIPES = {
    # Tiny models, a few steps: the pipeline end to end in seconds.
    "smoke": Recipe(
        dict(widths=(8, 16), feature_dim=16),
        TrainConfig(batch_size=32, num_steps=30, learning_rate=2e-3, halve_every_epochs=None,
                    log_every=10, checkpoint_every=100),
        dict(num_couplings=4, hidden=32, hidden_layers=1),
        TrainConfig(batch_size=256, num_steps=30, log_every=10, checkpoint_every=100,
                    **_FLOW_ADAMW)),
    # 2-core CPU, about 35 min for the default pairs (CIFAR-10, FashionMNIST). The classifier
    # dominates: ~0.95 s per batch-128 CIFAR-10 step on 2 idle cores, 700 steps (1.8 CIFAR-10
    # epochs; 390 steps gave 60% test accuracy); the flow has the paper's architecture (~1.4 s
    # per batch-1024 step of 128-D vectors), 4 epochs.
    "cpu": Recipe(
        dict(widths=(32, 64, 128), feature_dim=128),
        TrainConfig(batch_size=128, num_steps=700, learning_rate=2e-3, halve_every_epochs=1,
                    log_every=50, checkpoint_every=250),
        dict(num_couplings=8, hidden=512, hidden_layers=3),
        TrainConfig(batch_size=1024, epochs=4, log_every=10, checkpoint_every=100,
                    **_FLOW_ADAMW)),
    # The paper's flow recipe (App. O.1); a wider classifier trained longer, with flips and
    # shifts (there is no paper recipe for it: the paper's features come pretrained).
    "paper": Recipe(
        dict(widths=(64, 128, 256), feature_dim=256, augment=True),
        TrainConfig(batch_size=128, epochs=30, learning_rate=1e-3, halve_every_epochs=10,
                    log_every=100, checkpoint_every=2000),
        dict(num_couplings=8, hidden=512, hidden_layers=3),
        TrainConfig(batch_size=1024, epochs=120, log_every=50, checkpoint_every=1000,
                    **_FLOW_ADAMW)),
}

_CLASSIFIER_FIXED = ("parent", "name", "image_shape", "num_classes")
_FLOW_FIXED = ("parent", "name", "dim")


# ----------------------------------------------------------------------------- settings


def _train_args(text: str | None, flag: str) -> dict:
  out = {}
  for key, value in settings.parse_pairs(text, flag).items():
    full = settings.TRAIN_ALIASES.get(key, key)
    if full in out:
      raise InvalidInputError(f"{flag}: {full!r} is given twice ({key!r}).")
    out[full] = value
  return check_settings(flag, TrainConfig, out)


def resolved(r: Run) -> dict:
  """``{'classifier', 'classifier_train', 'flow', 'flow_train'}``: the preset's recipe with the
  run's seed and the ``--*-args`` overrides; raises ``InvalidInputError`` for bad ones."""
  recipe = RECIPES[r.preset]
  o = r.options
  clf = check_settings("--classifier-args", Classifier,
                       settings.parse_pairs(o["classifier_args"], "--classifier-args"),
                       exclude=_CLASSIFIER_FIXED)
  flow = check_settings("--flow-args", VectorRealNVP,
                        settings.parse_pairs(o["flow_args"], "--flow-args"), exclude=_FLOW_FIXED)
  out = {"classifier": {**recipe.classifier, **clf}, "flow": {**recipe.flow, **flow}}
  for key, flag in (("classifier_train", "--classifier-train-args"),
                    ("flow_train", "--flow-train-args")):
    over = _train_args(o[key + "_args"], flag)
    base = dataclasses.replace(getattr(recipe, key), seed=r.seed)
    if "epochs" in over and "num_steps" not in over:
      over["num_steps"] = None
    out[key] = dataclasses.replace(base, **over)
  Classifier(image_shape=(32, 32, 3), **out["classifier"])   # settings checked now: raises
  VectorRealNVP(dim=2, **out["flow"])
  return out


# ----------------------------------------------------------------------------- plan


def _feature_missing(name: str, split: str, features_dir: str) -> str | None:
  paths = feature_files.feature_paths(name, split, features_dir)
  if any(os.path.isfile(p) for p in paths):
    return None
  return f"no feature file {paths[0]}"


def _label_missing(name: str, data_dir) -> str | None:
  if data.load(name, "train", data_dir=data_dir, n=1).y is None:
    return (f"{name} (train split) has no class labels here, and the classifier that gives the"
            " features needs them")
  return None


def plan(pairs, data_dir, features_dir=None) -> tuple[list[tuple[str, list[str]]], list[dict]]:
  """``(runnable [(id, [ood, ...])], skipped [{'id', 'ood', 'reason'}])``. Images: a pair runs
  when the ID train (labelled) and test splits and the OOD test split load; with
  ``features_dir``, when their feature files exist."""
  if features_dir:
    return availability.plan(pairs, lambda n, split: _feature_missing(n, split, features_dir))
  return availability.plan(pairs, lambda n, split: availability.missing(n, split, data_dir),
                           ood_name=pipeline.ood_spec,
                           id_extra=lambda n: _label_missing(n, data_dir))


def check(r: Run) -> None:
  resolved(r)
  if r.options["features"] and not os.path.isdir(r.options["features"]):
    raise InvalidInputError(f"--features {r.options['features']!r}: no such directory.")
  pairs = availability.parse_pairs(r.options["pairs"])
  for id_name, oods in pairs:
    for name in [id_name, *(pipeline.ood_spec(o, id_name) for o in oods)]:
      data.parse_spec(name)                      # a bad transform fails now
  runnable, _ = plan(pairs, r.data_dir, r.options["features"])
  if not runnable:
    raise InvalidInputError(f"--pairs {r.options['pairs']!r}: no pair has its data here.")


# ----------------------------------------------------------------------------- steps


def in_chunks(fn, x: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
  """``fn`` (jit-compiled, one shape) over fixed-size chunks of ``x``, concatenated."""
  out = [np.asarray(fn(part))[:n] for part, n in batches.padded_chunks(x, chunk)]
  return np.concatenate(out)


def feature_fn(model: Classifier, variables):
  """``x -> features N x F`` in eval mode, jit-compiled (reuse it: one compile per shape)."""
  return jax.jit(lambda xb: model.apply(variables, xb, method=model.features))


def head_logits(model: Classifier, variables, feats: np.ndarray) -> np.ndarray:
  """The classifier's logits ``N x K`` of its features."""
  return np.asarray(model.apply(variables, feats, method=lambda m, f: m.fc(f)))


def standardizer(train_feats: np.ndarray) -> dict:
  """ID-train ``mean``, ``std`` and the ``keep`` mask of non-constant dimensions."""
  mean = train_feats.mean(axis=0, dtype=np.float64)
  std = train_feats.std(axis=0, dtype=np.float64)
  keep = std > 1e-6 * max(float(std.max()), 1e-30)
  if int(keep.sum()) < 2:
    raise InvalidInputError(
        f"the ID training features vary in only {int(keep.sum())} of {len(std)} dimensions; the"
        " flow needs at least 2.")
  return {"mean": mean[keep].astype(np.float32), "std": std[keep].astype(np.float32),
          "keep": keep}


def standardize(feats: np.ndarray, st: dict) -> np.ndarray:
  return ((feats[:, st["keep"]] - st["mean"]) / st["std"]).astype(np.float32)


def log_prob_fn(model: VectorRealNVP, variables):
  """``z -> log p(z)`` (nats per vector), jit-compiled."""
  return jax.jit(lambda zb: model.apply(variables, zb, method=model.log_prob))


def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def checkpoint_dir(r: Run, id_name: str, what: str, model, config: TrainConfig, *arrays) -> str:
  """The cache of model ``what`` trained on ``arrays``: a readable slug and a hash of the
  module, the weight-changing config fields and the training arrays' bytes."""
  cfg = {k: v for k, v in dataclasses.asdict(config).items()
         if k not in ("log_every", "checkpoint_every", "keep_checkpoints")}
  if cfg["num_steps"] is not None:
    cfg.pop("epochs")
  key = json.dumps({"model": repr(model), "train": cfg, "data": _digest(*arrays)},
                   sort_keys=True, default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:8]
  return os.path.join(r.ckpt_root, slug(id_name, "embeddings", what, r.preset,
                                        f"seed{config.seed}") + f"-{digest}")


def _train_meta(result, ckpt: str) -> dict:
  return {"train_steps": result.step, "resumed_from": result.resumed_from,
          "train_seconds_this_run": round(result.seconds, 1), "checkpoint": ckpt,
          "final_train_loss_nats": result.history[-1]["loss"] if result.history else None}


@dataclasses.dataclass
class Features:
  """Raw features of one pair: ID train / ID-train eval subset / ID test / OOD sets."""
  train: np.ndarray
  train_eval: np.ndarray
  test: np.ndarray
  ood: dict
  meta: dict


def _eval_subset(n: int, n_eval: int | None, seed: int) -> np.ndarray:
  return np.sort(subset_indices(n, n_eval, seed + 3))


def image_features(r: Run, id_name: str, oods: list[str], cfg: dict) -> Features:
  """Trains (or loads) the classifier on the labelled ID training set; its features."""
  tr = data.load(id_name, "train", data_dir=r.data_dir, n=r.n_train, seed=r.seed)
  te = data.load(id_name, "test", data_dir=r.data_dir, n=r.n_eval, seed=r.seed + 1)
  y = tr.require_labels()
  hwc = tuple(tr.x.shape[1:])
  if tuple(te.x.shape[1:]) != hwc:
    raise InvalidInputError(f"{id_name}: train images {hwc} and test images "
                            f"{tuple(te.x.shape[1:])} differ in shape.")
  if y.min() < 0:
    raise InvalidInputError(f"{id_name} (train): class labels must be >= 0, got {int(y.min())}.")
  k = max(int(y.max()) + 1, 2)
  ood, sources = {}, {"id_train": tr.source, "id_test": te.source}
  for o in oods:
    s = data.load(pipeline.ood_spec(o, id_name), "test", data_dir=r.data_dir, n=r.n_eval,
                  seed=r.seed + 2, like=hwc)
    ood[o], sources[o] = data.conform(s.x, hwc), s.source
  model = Classifier(image_shape=hwc, num_classes=k, **cfg["classifier"])
  config = cfg["classifier_train"]
  ckpt = checkpoint_dir(r, id_name, "classifier", model, config, tr.x, y)
  result = train(model, {"x": tr.x, "y": y}, config, ckpt, progress=r.progress,
                 desc=f"train classifier on {id_name}")
  v = result.variables
  fn, chunk = feature_fn(model, v), min(CHUNK, len(tr.x))
  f_train, f_test = in_chunks(fn, tr.x, chunk), in_chunks(fn, te.x, chunk)
  accuracy = None
  if te.y is not None:
    logits = head_logits(model, v, f_test)
    accuracy = round(float(np.mean(np.argmax(logits, axis=1) == te.y)), 4)
  meta = {"source": "classifier", "classifier": {
      **_train_meta(result, ckpt), "settings": cfg["classifier"], "num_classes": k,
      "input_shape": list(hwc), "train_config": dataclasses.asdict(config),
      "id_test_accuracy": accuracy, "n_test_for_accuracy": len(te.x) if accuracy is not None else 0},
      "data_sources": sources}
  keep = _eval_subset(len(f_train), r.n_eval, r.seed)
  ood_feats = {o: in_chunks(fn, x, chunk) for o, x in ood.items()}
  return Features(f_train, f_train[keep], f_test, ood_feats, meta)


def file_features(r: Run, id_name: str, oods: list[str]) -> Features:
  """The user's feature files (``--features``)."""
  fdir = r.options["features"]
  tr = data.load_features(id_name, "train", fdir, n=r.n_train, seed=r.seed)
  te = data.load_features(id_name, "test", fdir, n=r.n_eval, seed=r.seed + 1, dim=tr.dim)
  ood = {o: data.load_features(o, "test", fdir, n=r.n_eval, seed=r.seed + 2, dim=tr.dim)
         for o in oods}
  keep = _eval_subset(len(tr), r.n_eval, r.seed)
  meta = {"source": "feature files", "data_sources": {
      "id_train": tr.source, "id_test": te.source, **{o: s.source for o, s in ood.items()}}}
  return Features(tr.x, tr.x[keep], te.x, {o: s.x for o, s in ood.items()}, meta)


# ----------------------------------------------------------------------------- report


def _plot_loglik(path: str, title: str, values: dict) -> None:
  """Fig. 17(b): density histograms of log p (nats per standardised feature vector)."""
  allv = np.concatenate(list(values.values()))
  lo, hi = np.percentile(allv, [0.5, 99.5])
  if not hi > lo:
    lo, hi = lo - 0.5, hi + 0.5
  edges = np.linspace(lo, hi, 61)
  fig = Figure(figsize=(7.0, 4.5))
  ax = fig.add_subplot()
  for i, (name, v) in enumerate(values.items()):
    c = f"C{i % 10}"
    clipped = np.clip(v, lo, hi)
    ax.hist(clipped, bins=edges, density=True, histtype="stepfilled", alpha=0.25, color=c)
    ax.hist(clipped, bins=edges, density=True, histtype="step", lw=1.4, color=c,
            label=f"{name}, n={v.size}, mean {v.mean():.4g}")
  ax.set_xlabel("log-likelihood (nats per standardised feature vector; clipped to 0.5-99.5%)")
  ax.set_ylabel("density")
  ax.set_title(title)
  ax.legend(fontsize="small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def _fmt(v) -> str:
  return "–" if v is None else f"{v:.2f}"


def _table_lines(table: list[dict], skipped: list[dict], source: str) -> list[str]:
  lines = ["## Table 2(a): NLL AUROC (%) on embeddings, ours beside the paper's", "",
           f"Our embeddings: {source}. The paper's: ImageNet-pretrained EfficientNet features.",
           "",
           "| train | OOD | AUROC ours | AUROC paper | mean log p ID train | ID test | OOD |",
           "|---|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['train']} | {t['ood']} | {t['auroc_percent']:.2f} | "
                 f"{_fmt(t['paper_auroc_percent'])} | {t['loglik_id_train']:.2f} | "
                 f"{t['loglik_id_test']:.2f} | {t['loglik_ood']:.2f} |")
  if skipped:
    lines += ["", "Pairs not run here:", ""]
    for s in skipped:
      lines.append(f"* {s['id']} -> {s['ood']} (paper {_fmt(PAPER.get((canonical_name(s['id']), canonical_name(s['ood']))))}):"
                   f" {s['reason']}.")
  return lines


DEVIATION = (
    "## Deviation from the paper\n\n"
    "The paper trains the flow on 1792-D features of an EfficientNet pretrained on ImageNet. "
    "Those weights are not available here, so, unless `--features` gives feature files, the "
    "features are the penultimate (global-average-pooled) features of a small CNN that "
    "ood-jax trains on the labelled ID training set itself. Such features are fitted to the "
    "ID classes only, unlike ImageNet features, so the numbers are not directly comparable; "
    "and the classifier and the flow see the same ID training images, so ID-train features "
    "are fitted more tightly than ID-test ones (compare the ID train and ID test mean log p "
    "columns): this lowers the ID-test likelihood and so the AUROC, a bias ImageNet features "
    "do not have. "
    "The flow is trained on, and log-likelihoods are of, the features standardised with the "
    "ID-train mean and std (the reference trains on raw features); in raw coordinates every "
    "log-likelihood moves by the same constant, so the AUROC is the same.")


def run(r: Run) -> Result:
  cfg = resolved(r)
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir,
                           r.options["features"])
  rows, samples, table, pair_meta, figures = [], {}, [], {}, {}
  for id_name, oods in runnable:
    feats = (file_features(r, id_name, oods) if r.options["features"]
             else image_features(r, id_name, oods, cfg))
    st = standardizer(feats.train)
    z_train = standardize(feats.train, st)
    model = VectorRealNVP(dim=int(z_train.shape[1]), **cfg["flow"])
    config = cfg["flow_train"]
    ckpt = checkpoint_dir(r, id_name, "flow", model, config, z_train)
    with pipeline.Timer() as tt:
      result = train(model, z_train, config, ckpt, progress=r.progress,
                     desc=f"train {FLOW} on {id_name} features")
    v = result.variables
    with pipeline.Timer() as ts:
      fn, chunk = log_prob_fn(model, v), min(CHUNK, len(z_train))
      loglik = lambda f: in_chunks(fn, standardize(f, st), chunk).astype(np.float64)
      ll = {"__train__": loglik(feats.train_eval), "__id__": loglik(feats.test),
            **{o: loglik(x) for o, x in feats.ood.items()}}
    for name, vals in ll.items():
      if not np.all(np.isfinite(vals)):
        raise InvalidInputError(f"{id_name}: the flow gave non-finite log-likelihoods for {name};"
                                " train longer or with a lower learning rate.")
    label = f"{FLOW}_{id_name}"
    nll = {k: -v_ for k, v_ in ll.items() if k != "__train__"}
    pair_rows = pipeline.metric_rows(id_name, label, {"nll": nll})
    rows += pair_rows
    samples[(label, "nll")] = {
        "id_name": f"{id_name} test", "id": nll["__id__"],
        "ood": {o: nll[o] for o in oods}, "xlabel": "NLL (nats per standardised feature vector)"}
    mean = {k: float(np.mean(x)) for k, x in ll.items()}
    for row in pair_rows:
      table.append({"train": id_name, "ood": row["ood"],
                    "auroc_percent": round(100 * row["auroc"], 2),
                    "paper_auroc_percent": PAPER.get((canonical_name(id_name), canonical_name(row["ood"]))),
                    "loglik_id_train": round(mean["__train__"], 3),
                    "loglik_id_test": round(mean["__id__"], 3),
                    "loglik_ood": round(mean[row["ood"]], 3)})
    hist = {f"{id_name} train": ll["__train__"], f"{id_name} test": ll["__id__"],
            **{f"{o} (OOD)": ll[o] for o in oods}}
    kind = "feature files" if r.options["features"] else "classifier features"
    figures[f"loglik_{slug(id_name)}.png"] = (
        lambda path, t=f"RealNVP on {id_name} {kind}", h=hist: _plot_loglik(path, t, h))
    pair_meta[id_name] = {
        **feats.meta, "feature_dim": int(feats.train.shape[1]),
        "flow_dim": int(z_train.shape[1]),
        "dropped_constant_dims": int((~st["keep"]).sum()),
        "standardization_log_det": round(float(-np.sum(np.log(st["std"].astype(np.float64)))), 4),
        "n_train_features": int(len(feats.train)), "n_train_eval": int(len(feats.train_eval)),
        "flow": {**_train_meta(result, ckpt), "settings": cfg["flow"],
                 "train_config": dataclasses.asdict(config), "train_seconds": round(tt.seconds, 1),
                 "score_seconds": round(ts.seconds, 1)},
        "loglik_mean_nats": {("id_train" if k == "__train__" else "id_test" if k == "__id__" else k):
                             round(x, 4) for k, x in mean.items()}}
  meta = {k: v for k, v in r.settings_meta().items()
          if k not in ("id", "ood", "models", "scores", "score_settings", "scorers",
                       "model_preset", "model_args", "train_args", "train_configs", "k_importance")}
  meta.update({"pairs": [[i, o] for i, o in runnable], "skipped": skipped,
               "features": r.options["features"] or "classifier trained here",
               "loglik_units": "nats per standardised feature vector", "per_pair": pair_meta})
  source = ("the user's feature files in " + r.options["features"] if r.options["features"]
            else "penultimate features of a CNN classifier trained here on the ID training set")
  return Result(title=f"Kirichenko et al. Table 2(a): OOD detection on embeddings ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples,
                sections=["\n".join(_table_lines(table, skipped, source)), DEVIATION],
                json_files={"table2a.json": table}, figures=figures)


EXPERIMENT = cli.Experiment(
    "kirichenko_embeddings", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "", "scores": ""},
    omit=("--id", "--ood", "--models", "--scores", "--model-preset", "--model-args",
          "--score-args", "--train-args", "--train-steps", "--k"),
    options=(
        cli.option("--pairs", default=DEFAULT_PAIRS,
                   help="train:ood+ood pairs, comma-separated (default: the paper's Table 2(a)"
                        " rows, plus MNIST / FashionMNIST as OOD for CIFAR-10 and FashionMNIST"
                        " -> MNIST)"),
        cli.option("--features", default=None,
                   help="directory of feature files <name>_<split>.npz (key 'x': float N x D);"
                        " no classifier is trained"),
        cli.option("--classifier-args", default=None,
                   help="Classifier settings, e.g. widths=(32,64),feature_dim=64,augment=True"),
        cli.option("--flow-args", default=None,
                   help="VectorRealNVP settings, e.g. num_couplings=4,hidden=256,scale_fn=sigmoid"),
        cli.option("--classifier-train-args", default=None,
                   help="classifier TrainConfig settings, e.g. steps=100,lr=1e-3,batch_size=64"),
        cli.option("--flow-train-args", default=None,
                   help="flow TrainConfig settings, e.g. epochs=20,batch_size=512")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
