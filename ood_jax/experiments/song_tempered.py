"""Song et al. App. B (Figs 4-5) and C.3 (Table 4): fooling T_perm with tempered samples.

    python -m ood_jax.experiments.song_tempered                    # cpu preset, both pairs
    python -m ood_jax.experiments.song_tempered --preset smoke --out runs/song_t4_smoke
    python -m ood_jax.experiments.song_tempered --pairs cifar10:celeb_a:realnvp:1.1+0.7+1+1.3

The paper scores samples of a model q_phi "trained on another dataset", drawn at a
temperature T, with a model p_theta trained on the in-distribution set (same family for
both): RealNVP on CIFAR-10 fooled by a RealNVP trained on SVHN (T = 1.10, Table 4 also 0.7,
1.0, 1.3) and PixelCNN++ on FashionMNIST fooled by a PixelCNN++ trained on MNIST (T = 1.17).
Temperature (App. C.2): flows scale every latent by T (``N(0, T^2 I)``), PixelCNN++ divides
its mixture logits by T (``models.flows.realnvp.decode_unit``, ``logistic_mixture.sample``).

``--pairs`` is ``ID:Q:MODEL:T+T+...`` (comma-separated): p_theta = MODEL trained on the ID
training split (``pipeline.train_or_load``: the checkpoint cache is shared with ``table2``
and ``table1`` for the same preset and seed), q_phi = MODEL trained on one half of Q's test
split (``kirichenko_negative.split_halves``, a permutation from ``np.random.default_rng(0)``
independent of ``--seed``, the same halves ``nalisnick_asymmetry`` uses; capped at the
preset's ``n_train``); the other half of Q (capped at ``n_eval``) is the real-Q OOD
reference. Only these pairs exist here: SVHN is not stored, so CelebA (32 x 32) stands in for
it beside CIFAR-10, and MNIST has only its test split, hence the halves (the report says so).

For each pair, p_theta scores its ID test split (negatives) and, as OOD (positive), the real
held-out half of Q and ``--n-samples`` samples of q_phi at every T (``--n-samples-pixelcnn``
for the autoregressive models, whose sampling is one network pass per pixel): ``nll`` (eval
bits/dim), ``t_perm`` (Song's Eq. 2 on ``n_ref`` training likelihoods), ``bn_train_bpd``
(Table 4's "training" mode: batches of the scored set alone) and ``bn_mixed`` (Delta =
|S_{b,r1} - S_{b,r2}|, the paper's test). Written: Table 4's layout (eval / train bits/dim and
their gap, the paper's numbers beside ours), the AUROC tables (Fig. 4 has curves only),
``roc_<pair>.png`` (T_perm beside the BatchNorm tests, Fig. 4), ``samples_<pair>.png`` (the
images with their bits/dim under p_theta, Fig. 5), bits/dim histograms, ``results.json``
(Table 4 rows), ``auroc.json`` (metric rows) and ``scores.npz``.

Where the paper is silent (our choices): the number of samples (smoke 64, cpu 256 / 128 for
PixelCNN++, paper 1000; at least the 58 test images of a ``bn_mixed`` batch at r2 = 0.9);
q_phi's training length: as many optimiser steps as p_theta's (the
preset's epochs, and the epoch-based lr halving, scaled by ``len(ID train) / len(Q half)``;
budgets given as steps, e.g. smoke or ``--train-steps``, are kept); q_phi's architecture is
p_theta's; the BatchNorm settings are table1's (``--b``, ``--rounds``, ``--bn-k``, r1 = 0.1,
r2 = 0.9). Samples draw from ``fold_in(PRNGKey(seed), round(1000 T))`` chunk by chunk, so a
temperature's samples do not depend on the others asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ood_jax import data, metrics
from ood_jax.data import ImageSet
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, bn_settings, cli, pipeline, score_file
from ood_jax.experiments.kirichenko_negative import SPLIT_SEED, split_halves
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug
from ood_jax.scores import train_mode
from ood_jax.scores.compositions import num_test_slots

DEFAULT_PAIRS = "cifar10:celeb_a:realnvp:1.1+0.7+1+1.3,fashion_mnist:mnist:pixelcnnpp:1.17"
SCORES = ("nll", "t_perm", "bn_train_bpd", "bn_mixed")
BN_SCORES = ("bn_train_bpd", "bn_mixed")
ROC_SCORES = ("t_perm", "bn_mixed", "bn_train_bpd")
# Table 4's "evaluation" bits/dim: ``bn_train_bpd`` with ``parts='none'`` (eval mode on the
# very batches, noise and importance samples of the train-mode value: a paired gap, as
# table1) where the scores layer has it; else the ``nll`` score's.
EVAL_KEY = "bn_eval_bpd"
PAIRED_EVAL = "none" in getattr(train_mode, "PARTS", ())
SLOW_SAMPLERS = ("pixelcnnpp", "gated_pixelcnn")     # one network pass per pixel
# At least the m = round(0.9 b) = 58 test images of a bn_mixed r2 batch (b = 64).
N_SAMPLES = {"smoke": 64, "cpu": 256, "paper": 1000}
N_SAMPLES_PIXELCNN = {"smoke": 64, "cpu": 128, "paper": 1000}
SAMPLE_CHUNK = 64         # samples per compiled sampling call
GRID_COLS = 8             # images per row of the sample grids (Fig. 5 shows 8)
REAL = "{} (held-out half)"
PAPER_SAMPLER = {("cifar10", "realnvp"): "RealNVP trained on SVHN",
                 ("fashion_mnist", "pixelcnnpp"): "PixelCNN++ trained on MNIST"}

# Table 4 (RealNVP trained on CIFAR-10; samples of a RealNVP trained on SVHN): bits/dim in
# (evaluation, training) mode and Delta as printed (SVHN: 11.10 - 2.44 = 8.66, printed 8.56).
PAPER_TABLE4 = {("cifar10", "realnvp"): {
    "id": (3.48, 3.51, 0.03), "real": (2.44, 11.10, 8.56),
    1.0: (2.88, 328.0, 325.0), 0.7: (1.51, 317.0, 315.0), 1.3: (5.43, 16.0, 10.57)}}
# Fig. 5: bits/dim under p_theta of the 8 images shown per row (ID test row, samples row).
PAPER_FIG5 = {
    ("cifar10", "realnvp", 1.1): ((3.932, 3.962, 3.028, 3.245, 3.500, 3.969, 3.968, 3.274),
                                  (3.525, 3.712, 3.464, 3.293, 3.253, 3.159, 3.632, 4.063)),
    ("fashion_mnist", "pixelcnnpp", 1.17): (
        (2.930, 3.460, 1.167, 1.676, 1.668, 3.141, 2.640, 2.845),
        (2.905, 2.154, 2.324, 3.277, 2.669, 2.768, 2.228, 2.134))}


@dataclasses.dataclass(frozen=True)
class Pair:
  """One fooling experiment: ``model`` trained on ``id`` scores samples at ``temperatures``
  of ``model`` trained on half of ``q``'s test split."""
  id: str
  q: str
  model: str
  temperatures: tuple[float, ...]

  @property
  def label(self) -> str:
    return f"{self.model} on {self.id}"

  def sample_name(self, t: float) -> str:
    return f"{self.model}({self.q} half) T={t:g}"


def parse_pairs(text: str, flag: str = "--pairs") -> list[Pair]:
  """``'cifar10:celeb_a:realnvp:1.1+0.7,...'`` -> ``[Pair, ...]``; temperatures > 0, each
  once per pair; a pair (ID, Q, MODEL) at most once."""
  out = []
  for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
    fields = [f.strip() for f in part.split(":")]
    if len(fields) != 4 or not all(fields):
      raise InvalidInputError(f"{flag}: expected 'ID:Q:MODEL:T+T', e.g. "
                              f"'fashion_mnist:mnist:pixelcnnpp:1.17', got {part!r}.")
    try:
      temps = tuple(float(t) for t in fields[3].split("+") if t.strip())
    except ValueError:
      raise InvalidInputError(
          f"{flag} {part!r}: temperatures must be numbers joined by '+'.") from None
    if not temps or not all(math.isfinite(t) and t > 0 for t in temps):
      raise InvalidInputError(f"{flag} {part!r}: temperatures must be finite and > 0, got {temps}.")
    if len(set(temps)) != len(temps):
      raise InvalidInputError(f"{flag} {part!r}: a temperature is given twice.")
    pair = Pair(fields[0], fields[1], fields[2], temps)
    if any((p.id, p.q, p.model) == (pair.id, pair.q, pair.model) for p in out):
      raise InvalidInputError(f"{flag}: {pair.id}:{pair.q}:{pair.model} is given twice.")
    out.append(pair)
  if not out:
    raise InvalidInputError(f"{flag}: no pairs given.")
  return out


def n_samples_for(r: Run, model: str) -> int:
  """Samples per temperature: ``--n-samples`` (``--n-samples-pixelcnn`` for the
  autoregressive models), else the preset's."""
  slow = model in SLOW_SAMPLERS
  given = r.options["n_samples_pixelcnn" if slow else "n_samples"]
  return int(given) if given is not None else (N_SAMPLES_PIXELCNN if slow else N_SAMPLES)[r.preset]


def _bn(r: Run, score: str) -> dict:
  return bn_settings.bn_settings(r, **({"r1": 0.1, "r2": 0.9} if score == "bn_mixed" else {}))


def min_samples(r: Run) -> int:
  """The fewest samples per temperature the BatchNorm scores take: the m test images of a
  ``bn_mixed`` batch at its larger ratio (no image twice in a batch), and at least 2."""
  sc = r.scorer("bn_mixed", base=_bn(r, "bn_mixed"))
  return max(2, *(num_test_slots(x, sc.b) for x in (sc.r1, sc.r2)))


def check(r: Run) -> None:
  for s in BN_SCORES:
    r.scorer(s, base=_bn(r, s))       # bad b / K: now
  need = min_samples(r)
  for p in parse_pairs(r.options["pairs"]):
    if p.model not in r.models:
      raise InvalidInputError(f"--pairs: model {p.model!r} of {p.id}:{p.q} is not in --models "
                              f"{list(r.models)}; add it there.")
    if n_samples_for(r, p.model) < need:
      flag = "--n-samples-pixelcnn" if p.model in SLOW_SAMPLERS else "--n-samples"
      raise InvalidInputError(f"{flag} {n_samples_for(r, p.model)}: {p.model}'s samples are "
                              f"scored in BatchNorm batches holding {need} of them; give at least "
                              f"{need} (or a smaller --b).")


def plan(pairs: list[Pair], data_dir) -> tuple[list[Pair], list[dict]]:
  """Pairs whose ID train and test splits and Q's test split load here, and the others with
  the reason."""
  runnable, skipped = [], []
  for p in pairs:
    why = (availability.missing(p.id, "train", data_dir)
           or availability.missing(p.id, "test", data_dir)
           or availability.missing(p.q, "test", data_dir))
    if why:
      skipped.append({"id": p.id, "ood": f"{p.q} ({p.model})", "reason": why})
    else:
      runnable.append(p)
  return runnable, skipped


# ----------------------------------------------------------------------------- steps


def q_halves(r: Run, q: str, hwc) -> tuple[ImageSet, ImageSet]:
  """``(training half, held-out half)`` of ``q``'s test split conformed to ``hwc``: the fixed
  halves of ``split_halves`` (rng ``SPLIT_SEED``), capped at ``n_train`` / ``n_eval``."""
  s = data.load(q, "test", data_dir=r.data_dir, seed=r.seed + 1)
  x = data.conform(s.x, tuple(hwc))
  a, b = split_halves(x, SPLIT_SEED)
  a = a[:r.n_train] if r.n_train else a
  b = b[:r.n_eval] if r.n_eval else b
  source = f"{s.source}: fixed half split (rng {SPLIT_SEED}) of its {len(x)} test images"
  return (ImageSet(name=q, split="test[train half]", x=x[a], source=source, indices=a),
          ImageSet(name=REAL.format(q), split="test[held-out half]", x=x[b], source=source,
                   indices=b))


def sampler_config(config, n_id_train: int, n_q_train: int):
  """q_phi's ``TrainConfig``: p_theta's with as many optimiser steps (epochs and the
  epoch-based lr halving scaled by ``n_id_train / n_q_train``); a step budget is kept."""
  if config.num_steps is not None:
    return config
  ratio = n_id_train / max(1, n_q_train)
  halve = config.halve_every_epochs
  return dataclasses.replace(config, epochs=config.epochs * ratio,
                             halve_every_epochs=halve * ratio if halve else halve)


def draw_samples(model, variables, n: int, temperature: float, seed: int,
                 chunk: int = SAMPLE_CHUNK) -> np.ndarray:
  """``n`` uint8 samples ``n x H x W x C`` of ``model`` at ``temperature`` (eval mode), in
  compiled calls of ``min(n, chunk)``; chunk i draws from ``fold_in(fold_in(PRNGKey(seed),
  round(1000 T)), i)``, so the samples of one temperature do not depend on the others."""
  n, chunk = int(n), max(1, min(int(n), int(chunk)))
  if n < 1:
    raise InvalidInputError(f"draw_samples: n must be >= 1, got {n}.")
  if not (math.isfinite(float(temperature)) and float(temperature) >= 0):
    raise InvalidInputError(
        f"draw_samples: temperature must be finite and >= 0, got {temperature}.")
  v = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
  fn = _sample_fn(model, chunk)
  key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), int(round(1000 * float(temperature))))
  parts = [np.asarray(fn(v, jax.random.fold_in(key, i), np.float32(temperature)))
           for i in range(-(-n // chunk))]
  return np.concatenate(parts)[:n]


_SAMPLE_FNS: dict = {}


def _sample_fn(model, chunk: int):
  """One compiled ``(variables, key, T) -> chunk samples`` per (module settings, chunk): the
  temperature is traced, so every temperature shares it."""
  key = (repr(model), int(chunk))
  if key not in _SAMPLE_FNS:
    _SAMPLE_FNS[key] = jax.jit(lambda v, rng, t: model.apply(v, rng, chunk, t, method="sample"))
  return _SAMPLE_FNS[key]


def score_sets(r: Run, trained: pipeline.Trained, train: ImageSet, test: ImageSet,
               oods: dict[str, ImageSet]) -> tuple[dict, list[str]]:
  """``({score: {'__id__': s_id, ood name: s_ood}}, notes)``: every score of ``SCORES`` fitted
  on ``train`` (BatchNorm scores with table1's settings; skipped, with a note, for a model
  without BatchNorm)."""
  sets = pipeline.Sets(hwc=tuple(trained.model.image_shape), train=train, test=test, ood=oods)
  bn = bn_settings.has_batchnorm(trained.variables)
  vals, notes = {}, []
  for s in SCORES:
    if s in BN_SCORES and not bn:
      notes.append(f"{trained.name}: no BatchNorm (no train mode), {s} skipped.")
      continue
    vals.update(pipeline.score_all(r, trained, sets, scores=[s],
                                   base=_bn(r, s) if s in BN_SCORES else None))
  if bn and PAIRED_EVAL:
    sc = r.scorer("bn_train_bpd", base={**_bn(r, "bn_train_bpd"), "parts": "none"})
    state = sc.fit(trained.model, trained.variables, None)
    vals[EVAL_KEY] = {"__id__": sc.score(state, test.x),
                      **{n: sc.score(state, o.x) for n, o in oods.items()}}
  return vals, notes


def table4_rows(pair: Pair, vals: dict, hwc, names: dict) -> list[dict]:
  """Table 4 rows of one pair: per set (``names``: key in ``vals`` -> (kind, label, T)) the
  mean eval bits/dim (``EVAL_KEY``'s, paired with train mode, where ``vals`` has it; else
  ``nll``'s) and train bits/dim, their gap, the mean Delta (nats), the ``nll`` bits/dim and
  the paper's numbers."""
  paper = PAPER_TABLE4.get((pair.id, pair.model), {})
  rows = []
  for key, (kind, label, t) in names.items():
    ev_nll = float(np.mean(pipeline.bits_per_dim(vals["nll"][key], hwc)))
    ev = float(np.mean(vals[EVAL_KEY][key])) if EVAL_KEY in vals else ev_nll
    tr = float(np.mean(vals["bn_train_bpd"][key])) if "bn_train_bpd" in vals else None
    dm = float(np.mean(vals["bn_mixed"][key])) if "bn_mixed" in vals else None
    p = paper.get(kind if kind != "samples" else t)
    rows.append({"pair": f"{pair.id}:{pair.q}:{pair.model}", "model": pair.model, "set": label,
                 "kind": kind, "temperature": t, "n": int(len(vals["nll"][key])),
                 "eval_bpd": ev, "eval_bpd_nll": ev_nll, "paired": EVAL_KEY in vals,
                 "train_bpd": tr, "train_minus_eval": None if tr is None else tr - ev,
                 "delta_mean_nats": dm, "paper_eval_bpd": p[0] if p else None,
                 "paper_train_bpd": p[1] if p else None, "paper_delta": p[2] if p else None})
  return rows


# ----------------------------------------------------------------------------- markdown


def _f(v, d=3) -> str:
  return "–" if v is None else f"{v:.{d}f}"


def table4_markdown(pair: Pair, rows: list[dict]) -> str:
  """Table 4's layout (one line per set and mode; Delta = train - eval bits/dim) with the
  paper's numbers beside ours."""
  if (pair.id, pair.model) in PAPER_TABLE4:
    paper = (f"Paper columns: Song et al. Table 4 (RealNVP on CIFAR-10, samples of a "
             f"{PAPER_SAMPLER[(pair.id, pair.model)]}, SVHN the real set where ours is "
             f"{pair.q}); '–' where the paper has no such row.")
  else:
    paper = ("Paper columns: '–', Table 4 has only RealNVP on CIFAR-10 (Fig. 5's shown images "
             "are quoted below where the paper has them).")
  lines = [f"### Table 4 layout: {pair.model} trained on {pair.id}, samples of {pair.model} "
           f"trained on half of {pair.q} test", "",
           f"{paper} Bits/dim of the 8-bit data; training = BatchNorm with the statistics of "
           "batches of that set alone; evaluation = running statistics, "
           + ("on the same batches, noise and importance samples (a paired gap); " if rows and
              rows[0]["paired"] else "the `nll` score; ")
           + "`nll bpd` = the `nll` score with the preset's k.", "",
           "| set | mode | BPD | Δ (train − eval) | paper BPD | paper Δ | nll bpd "
           "| mean Delta (nats) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
  for x in rows:
    lines.append(f"| {x['set']} | evaluation | {_f(x['eval_bpd'])} | {_f(x['train_minus_eval'])} | "
                 f"{_f(x['paper_eval_bpd'], 2)} | {_f(x['paper_delta'], 2)} | "
                 f"{_f(x['eval_bpd_nll'])} | {_f(x['delta_mean_nats'], 2)} |")
    lines.append(f"|  | training | {_f(x['train_bpd'])} |  | "
                 f"{_f(x['paper_train_bpd'], 2)} |  |  |  |")
  return "\n".join(lines)


def auroc_markdown(pair: Pair, metric_rows: list[dict]) -> str:
  """AUROC (OOD positive) of every score against each OOD set of one pair, T_perm first."""
  scores = [s for s in ("t_perm", "bn_mixed", "bn_train_bpd", "nll")
            if any(m["score"] == s for m in metric_rows)]
  oods = list(dict.fromkeys(m["ood"] for m in metric_rows))
  by = {(m["ood"], m["score"]): m["auroc"] for m in metric_rows}
  lines = [f"### Fig. 4: AUROC, {pair.model} on {pair.id} (OOD positive)", "",
           "| OOD set | " + " | ".join(scores) + " |", "|---|" + "---:|" * len(scores)]
  for o in oods:
    lines.append(f"| {o} | " + " | ".join(_f(by.get((o, s))) for s in scores) + " |")
  lines += ["", "Paper (Fig. 4, curves only): T_perm detects the real OOD sets but its AUC is low "
            "on the tempered samples; the BatchNorm test is not fooled."]
  return "\n".join(lines)


def fig5_markdown(pair: Pair, shown: dict[str, np.ndarray]) -> str:
  """Mean bits/dim of the images in the sample grid beside Fig. 5's (8 images per row)."""
  lines = []
  for t in pair.temperatures:
    paper = PAPER_FIG5.get((pair.id, pair.model, round(t, 2)))
    if paper is None:
      continue
    ours_id, ours_s = shown.get("__id__"), shown.get(pair.sample_name(t))
    lines += [f"Fig. 5 ({pair.model} on {pair.id}, T = {t:g}): mean bits/dim of the 8 images "
              f"shown, ID test {np.mean(paper[0]):.3f} and samples {np.mean(paper[1]):.3f} in "
              f"the paper; ours {_f(None if ours_id is None else float(np.mean(ours_id)))} and "
              f"{_f(None if ours_s is None else float(np.mean(ours_s)))}."]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def roc_figure(path: str, panels: dict[str, dict], title: str) -> str:
  """One panel per score (``{score: {'id': s_id, 'ood': {name: s_ood}}}``), one ROC curve
  per OOD set, OOD positive, AUROC in the legend; writes a PNG and returns ``path``."""
  fig = Figure(figsize=(4.6 * len(panels), 4.8))
  for j, (score, p) in enumerate(panels.items()):
    ax = fig.add_subplot(1, len(panels), j + 1)
    for i, (name, s_ood) in enumerate(p["ood"].items()):
      y = np.r_[np.zeros(len(p["id"])), np.ones(len(s_ood))]
      fpr, tpr, _ = roc_curve(y, np.r_[p["id"], s_ood])
      ax.plot(fpr, tpr, color=f"C{i % 10}", lw=1.5,
              label=f"{name} ({metrics.auroc(p['id'], s_ood):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("FPR (ID test flagged)")
    ax.set_ylabel("TPR (OOD flagged)")
    ax.set_title(score, fontsize="medium")
    ax.legend(loc="lower right", fontsize="x-small", title="AUROC", title_fontsize="x-small")
  fig.suptitle(title, fontsize="medium")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)
  return path


def annotated_grid(path: str, rows: dict[str, tuple[np.ndarray, np.ndarray]], title: str,
                   unit: str = "bpd") -> str:
  """Rows of uint8 images ``{label: (images N x H x W x C, values [N])}``, each image with its
  value under it (Fig. 5); writes a PNG and returns ``path``."""
  if not rows:
    raise InvalidInputError("annotated_grid: no rows.")
  ncols = max(len(x) for x, _ in rows.values())
  fig = Figure(figsize=(1.1 * ncols + 1.8, 1.35 * len(rows) + 0.5))
  axes = fig.subplots(len(rows), ncols, squeeze=False)
  for r_i, (label, (x, v)) in enumerate(rows.items()):
    if x.dtype != np.uint8 or x.ndim != 4 or len(v) != len(x):
      raise InvalidInputError(f"annotated_grid: row {label!r} needs uint8 N x H x W x C images "
                              "and one value per image.")
    for c in range(ncols):
      ax = axes[r_i, c]
      ax.set_xticks([])
      ax.set_yticks([])
      for side in ax.spines.values():
        side.set_visible(False)
      if c == 0:
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
      if c >= len(x):
        continue
      img = x[c]
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      else:
        ax.imshow(img, interpolation="nearest")
      ax.set_xlabel(f"{float(v[c]):.3f}", fontsize=7, labelpad=1)
  fig.suptitle(f"{title} (under each image: {unit} under p_theta)", fontsize=8)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)
  return path


# ----------------------------------------------------------------------------- run


def run_pair(r: Run, pair: Pair) -> dict:
  """Trains (or loads) p_theta and q_phi, draws the samples and scores everything."""
  ri = r.for_id(pair.id, [pair.q])
  sets = pipeline.sets_for(ri, models=[pair.model], oods=[pair.q])[pair.model]
  hwc = tuple(sets.hwc)
  scorer_model = pipeline.train_or_load(ri, pair.model, sets)
  q_train, q_real = q_halves(ri, pair.q, hwc)
  config = sampler_config(ri.train_configs[pair.model], len(sets.train.x), len(q_train.x))
  q_sets = pipeline.Sets(hwc=hwc, train=q_train, test=q_real, ood={})
  sampler = pipeline.train_or_load(ri, pair.model, q_sets, config=config, label="sampler-half")
  n = n_samples_for(r, pair.model)
  oods = {REAL.format(pair.q): q_real}
  with pipeline.Timer() as ts:
    for t in pair.temperatures:
      x = draw_samples(sampler.model, sampler.variables, n, t, r.seed)
      oods[pair.sample_name(t)] = ImageSet(name=pair.sample_name(t), split="samples", x=x,
                                           source=f"{pair.model} trained on half of {pair.q} "
                                                  f"test, T={t:g}")
  with pipeline.Timer() as tc:
    vals, notes = score_sets(ri, scorer_model, sets.train, sets.test, oods)
  names = {"__id__": ("id", f"{pair.id} test", None),
           REAL.format(pair.q): ("real", f"{pair.q} (real, held-out half)", None),
           **{pair.sample_name(t): ("samples", f"{pair.model}({pair.q} half, T = {t:g})", t)
              for t in pair.temperatures}}
  return {"pair": pair, "hwc": hwc, "vals": vals, "notes": notes, "images": {
              "__id__": sets.test.x, **{k: s.x for k, s in oods.items()}},
          "table4": table4_rows(pair, vals, hwc, names),
          "metrics": pipeline.metric_rows(pair.id, pair.model,
                                          {k: v for k, v in vals.items() if k != EVAL_KEY}),
          "meta": {"p_theta": {**scorer_model.meta(), "n_train": len(sets.train.x),
                               "data_sources": pipeline.data_sources(sets)},
                   "q_phi": {**sampler.meta(), "n_train": len(q_train.x), "source": q_train.source,
                             "train_config": dataclasses.asdict(config)},
                   "n_samples": n, "n_id_test": len(sets.test.x), "n_real_q": len(q_real.x),
                   "input_shape": list(hwc), "sample_seconds": round(ts.seconds, 1),
                   "score_seconds": round(tc.seconds, 1), "notes": notes}}


def pair_figures(res: dict) -> tuple[dict, dict]:
  """``({file: draw(path)}, {set: bits/dim of the images shown})`` of one pair."""
  pair, vals, hwc = res["pair"], res["vals"], res["hwc"]
  stem = slug(pair.model, pair.id, pair.q)
  bpd = {k: pipeline.bits_per_dim(v, hwc) for k, v in vals["nll"].items()}
  labels = {"__id__": f"{pair.id} test", REAL.format(pair.q): f"{pair.q} (real)",
            **{pair.sample_name(t): f"samples T={t:g}" for t in pair.temperatures}}
  shown = {k: bpd[k][:GRID_COLS] for k in labels}
  grid = {labels[k]: (res["images"][k][:GRID_COLS], shown[k]) for k in labels}
  figs = {f"samples_{stem}.png": functools.partial(
      annotated_grid, rows=grid, title=f"Fig. 5: {pair.model} on {pair.id}; samples of "
                                       f"{pair.model} trained on half of {pair.q}")}
  panels = {s: {"id": vals[s]["__id__"], "ood": {o: v for o, v in vals[s].items() if o != "__id__"}}
            for s in ROC_SCORES if s in vals}
  if panels:
    figs[f"roc_{stem}.png"] = functools.partial(
        roc_figure, panels=panels, title=f"Fig. 4: {pair.model} on {pair.id}, T_perm vs the "
                                         "BatchNorm tests (OOD positive)")
  return figs, shown


def run(r: Run) -> Result:
  runnable, skipped = plan(parse_pairs(r.options["pairs"]), r.data_dir)
  if not runnable:
    raise InvalidInputError(f"--pairs {r.options['pairs']!r}: no pair has its data here "
                            f"({'; '.join(s['reason'] for s in skipped)}).")
  table4, rows, sections, figs, samples, meta_pairs, arrays = [], [], [], {}, {}, {}, {}
  for pair in runnable:
    res = run_pair(r, pair)
    table4 += res["table4"]
    rows += res["metrics"]
    pf, shown = pair_figures(res)
    figs.update(pf)
    sections += [table4_markdown(pair, res["table4"]), auroc_markdown(pair, res["metrics"])]
    fig5 = fig5_markdown(pair, shown)
    sections += [fig5] if fig5 else []
    samples.update(pipeline.samples_for(f"{pair.id}", pair.label, {"nll": res["vals"]["nll"]},
                                        res["hwc"]))
    for s, by_set in res["vals"].items():
      for set_name, v in by_set.items():
        arrays[(f"{pair.model}@{pair.id}", s, set_name)] = v
    meta_pairs[f"{pair.id}:{pair.q}:{pair.model}"] = {
        "temperatures": list(pair.temperatures), **res["meta"]}
  notes = ["Pairs here: the paper's SVHN is not stored, so CelebA stands in as Q beside "
           "CIFAR-10; MNIST has only its test split, so q_phi trains on one fixed half of it and "
           "the other half is the real-Q reference (the same holds for any Q: always its test "
           "split's halves).",
           "q_phi has p_theta's architecture and as many optimiser steps (see meta.json); on the "
           "smoke and cpu presets both are far from the paper's models, PixelCNN++ samples are "
           "few (one network pass per pixel on a CPU), so the numbers are not the paper's."]
  notes += [n for p in meta_pairs.values() for n in p["notes"]]
  sections.append("\n".join(["## Notes", ""] + [f"- {n}" for n in notes]
                            + availability.skipped_lines(skipped)))
  ids = "+".join(dict.fromkeys(p.id for p in runnable))
  meta = {**{k: v for k, v in r.settings_meta().items() if k not in ("id", "ood")},
          "pairs": meta_pairs, "skipped": skipped, "split_seed": SPLIT_SEED,
          "scorers": {s: r.scorer_meta(s, base=_bn(r, s) if s in BN_SCORES else None)
                      for s in SCORES}}
  return Result(title=f"Song et al. App. B / Table 4: fooling T_perm with tempered samples "
                      f"({r.preset} preset)", meta=meta, results=table4,
                samples=samples, sections=sections, figures=figs,
                json_files={"auroc.json": rows},
                arrays=score_file.to_arrays(ids, arrays, {}))


EXPERIMENT = cli.Experiment(
    "song_tempered", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp,pixelcnnpp", "scores": ",".join(SCORES)},
    omit=("--id", "--ood", "--scores"),
    options=bn_settings.OPTIONS + (
        cli.option("--pairs", default=DEFAULT_PAIRS,
                   help=f"ID:Q:MODEL:T+T pairs, comma-separated (default {DEFAULT_PAIRS})"),
        cli.option("--n-samples", type=int, default=None,
                   help="samples per temperature (default: smoke 64, cpu 256, paper 1000)"),
        cli.option("--n-samples-pixelcnn", type=int, default=None,
                   help="samples per temperature of PixelCNN++ / Gated PixelCNN (one pass per "
                        "pixel; default: smoke 64, cpu 128, paper 1000)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
