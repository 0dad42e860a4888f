"""Kirichenko et al. App. D (Fig. 5): negative training, a flow trained to tell two sets apart.

    python -m ood_jax.experiments.kirichenko_negative                  # cpu: FashionMNIST vs MNIST
    python -m ood_jax.experiments.kirichenko_negative --preset smoke --out runs/k_neg_smoke
    python -m ood_jax.experiments.kirichenko_negative --id cifar10     # minimise CelebA, c = -1e5
    python -m ood_jax.experiments.kirichenko_negative --minimise mnist --third noise --c -30000

Trains each model (default RealNVP; model preset ``kirichenko_cpu`` at ``cpu``, ``kirichenko``
at ``paper``, ``smoke`` at ``smoke``) twice with the same architecture and budget (the run's
training config: same steps, optimiser and batch size): by plain maximum likelihood on the ID
training split (the baseline, from the checkpoint cache shared with the other experiments), and
with Eq. 6 (``ood_jax.train.negative``): maximise the likelihood of the ID set, minimise it on
the ``--minimise`` set above the threshold ``--c`` (nats per image; default the paper's: -30000
for MNIST / FashionMNIST / notMNIST, -100000 for CIFAR-10 / SVHN / CelebA, and for other sets
-30000 if grey, -100000 if colour), with ``--weighting`` ``reference`` (default: the reference
code's ``0.5 * (...)``) or ``paper`` (Eq. 6 as printed). Each step takes a batch (the
config's batch size) of each set, run through the model as one batch (joint BatchNorm
statistics, like the reference code; the running averages used in eval mode then track the
joint batches too), so a negative-training step costs two or more plain ones: at ``cpu``
(``kirichenko_cpu``, batch 32, one FashionMNIST epoch = 1875 steps; measured on 2 shared,
busy cores: 0.3 s a plain step of 32, 1.1 s a joint step of 64) about 9 + 34 min of training
(the baseline is loaded instead when the shared cache has it) plus a few minutes of scoring.

The minimised set is split into two disjoint halves: the first trains, the second is held out
for evaluation. The split is a fixed permutation (``np.random.default_rng(0)``, independent of
``--seed``) of its ``test`` split, the only split MNIST (10k images) and CelebA (5k) have
here; the training half is capped at the preset's ``n_train`` (smoke: 2048), the held-out half
at ``--n-eval``. Every set is conformed to the model's input (``data.conform``: grey/RGB, resize). Defaults by
ID set (``--minimise`` / ``--third``): fashion_mnist: mnist / cifar10 (grey, 28 x 28);
mnist: fashion_mnist / cifar10; cifar10: celeb_a / mnist (RGB, 32 x 32); celeb_a: cifar10 /
mnist; svhn: cifar10 / mnist. The third set(s) (comma-separated; any set or transform, e.g.
``noise``) take no part in training: they show whether the minimised likelihood carries over.

Reports, for the baseline (``<model>``) and the negatively trained model
(``<model>+negative``): NLL AUROC rows of the minimised set's held-out half and the third sets
against the ID test split (OOD positive), the log-likelihood histograms in nats per image like
Fig. 5 (``fig5_<model>.png``: baseline left, negative training right), mean log-likelihood
and bits/dim per set, and the share of held-out minimised images above ``c``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax import data
from ood_jax.data import ImageSet
from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug, split_list
from ood_jax.train import train
from ood_jax.train.loop import fingerprint
from ood_jax.train.negative import DEFAULT_WEIGHTING, WEIGHTINGS, negative_objective, paper_c

# ID set -> (minimised set, third set): the paper's Fig. 5 pairs whose data exist here.
PAIRS = {"fashion_mnist": ("mnist", "cifar10"), "mnist": ("fashion_mnist", "cifar10"),
         "cifar10": ("celeb_a", "mnist"), "celeb_a": ("cifar10", "mnist"),
         "svhn": ("cifar10", "mnist")}
SPLIT_SEED = 0          # the minimised set's train / held-out halves: fixed across --seed
HELD_OUT = "{} (held-out half)"
NEGATIVE = "{}+negative"


def _base(name: str) -> str:
  return canonical_name(name.split("+")[0])


def minimised_name(r: Run) -> str:
  """``--minimise``, or the ID set's default pair (``PAIRS``)."""
  name = r.options.get("minimise") or PAIRS.get(_base(r.id), (None,))[0]
  if not name:
    raise InvalidInputError(
        f"--minimise: no default minimised set for ID set {r.id!r} (defaults: "
        + ", ".join(f"{i} -> {m}" for i, (m, _) in PAIRS.items()) + "); give one.")
  return name


def third_names(r: Run) -> list[str]:
  """``--third`` (comma-separated), or the ID set's default third set (else ``noise``)."""
  text = r.options.get("third")
  names = split_list(text if text is not None else PAIRS.get(_base(r.id), (None, "noise"))[1])
  if not names:
    raise InvalidInputError("--third: give at least one evaluation set, e.g. noise.")
  return names


def objective_for(r: Run, channels: int):
  """The run's ``NegativeObjective`` (``--c``, default the paper's for the ID set)."""
  c = r.options.get("c")
  c = paper_c(r.id, channels) if c is None else c
  return negative_objective(c, r.options.get("weighting") or DEFAULT_WEIGHTING)


def check(r: Run) -> None:
  minimised = minimised_name(r)
  if _base(minimised) == _base(r.id) and "+" not in minimised:
    raise InvalidInputError(f"--minimise {minimised!r} is the ID set itself; choose another set.")
  for t in third_names(r):
    if _base(t) == _base(minimised) and t.strip() == minimised.strip():
      raise InvalidInputError(f"--third {t!r} is the minimised set (its held-out half is "
                              "reported already, and its other half is trained on).")
  objective_for(r, 1)           # checks --c and --weighting


def split_halves(x: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
  """Indices of two disjoint halves of ``len(x)`` examples (first: training, second:
  held out), from a fixed permutation; a set of odd size gives the extra one to the second."""
  n = len(x)
  if n < 2:
    raise InvalidInputError(f"the minimised set has {n} images; it needs two halves.")
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:n // 2]), np.sort(perm[n // 2:])


def load_minimised(r: Run, name: str, hwc, like) -> tuple[ImageSet, ImageSet]:
  """``(training half, held-out half)`` of the minimised set's test split, conformed to
  ``hwc``; the training half capped at the preset's ``n_train``, the held-out at ``n_eval``."""
  s = data.load(pipeline.ood_spec(name, r.id), "test", data_dir=r.data_dir, seed=r.seed + 4,
                like=like)
  x = data.conform(s.x, hwc)
  tr, ev = split_halves(x)
  tr, ev = tr[:r.n_train] if r.n_train else tr, ev[:r.n_eval] if r.n_eval else ev
  source = f"{s.source}: fixed half split (rng {SPLIT_SEED}) of its {len(x)} test images"
  return (ImageSet(name=name, split="test[train half]", x=x[tr], source=source),
          ImageSet(name=HELD_OUT.format(name), split="test[held-out half]", x=x[ev], source=source))


def negative_checkpoint_dir(r: Run, name: str, model, sets, config, minimised: ImageSet,
                            objective) -> str:
  """The cache of the negatively trained model: the baseline's key (model, config, ID images)
  with a label naming the minimised images' hash and the objective, so it never meets the
  baseline's checkpoint (the training loop's meta checks both again)."""
  key = json.dumps({"minimised": minimised.name, "images": fingerprint(minimised.x)["sha256"],
                    "objective": objective.describe()}, sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:8]
  return r.checkpoint_dir(name, model, sets.train, config,
                          label=slug("neg", digest, _base(minimised.name)))


def train_negative(r: Run, name: str, sets, minimised: ImageSet, objective) -> pipeline.Trained:
  model = r.make_model(name, sets.hwc)
  config = r.train_configs[name]
  ckpt = negative_checkpoint_dir(r, name, model, sets, config, minimised, objective)
  result = train(model, sets.train.x, config, ckpt, ood=minimised.x, objective=objective,
                 progress=r.progress,
                 desc=f"train {name} on {sets.train.name}, minimise {minimised.name}")
  return pipeline.Trained(name=name, model=model, result=result, config=config, ckpt_dir=ckpt)


# ----------------------------------------------------------------------------- figures


def _hist_panel(ax, title: str, log_p: dict[str, np.ndarray], c: float | None) -> None:
  allv = np.concatenate(list(log_p.values()))
  edges = np.histogram_bin_edges(allv, bins=60)
  for i, (label, v) in enumerate(log_p.items()):
    color = f"C{i % 10}"
    ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.3, color=color)
    ax.hist(v, bins=edges, density=True, histtype="step", lw=1.4, color=color,
            label=f"{label}, mean {v.mean():.4g}")
  lo, hi = float(allv.min()), float(allv.max())
  if c is not None and lo - 0.1 * (hi - lo) <= c <= hi:
    ax.axvline(c, ls="--", color="0.4", lw=1, label=f"c = {c:g}")
  ax.set_xlabel("log-likelihood, nats per image")
  ax.set_ylabel("density")
  ax.set_title(title)
  ax.legend(fontsize="small")


def fig5(path: str, model: str, baseline: dict, negative: dict, c: float) -> None:
  """Fig. 5 style: log-likelihood histograms (nats per image) of every evaluated set, for
  the maximum-likelihood baseline (left) and the negatively trained model (right)."""
  fig = Figure(figsize=(12.0, 4.5))
  _hist_panel(fig.add_subplot(1, 2, 1), f"{model}: maximum likelihood", baseline, None)
  _hist_panel(fig.add_subplot(1, 2, 2), f"{model}: negative training", negative, c)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def _log_p(vals: dict, id_name: str) -> dict[str, np.ndarray]:
  """``{label: log p}`` (nats per image) from one model's ``{'nll': {...}}``."""
  return {(f"{id_name} test (ID)" if k == "__id__" else k): -np.asarray(v, np.float64)
          for k, v in vals["nll"].items()}


def summary_lines(summary: list[dict], c: float, held_out: str) -> list[str]:
  lines = [f"## Mean log-likelihood per set (nats per image; c = {c:g})", "",
           "| model | training | set | n | mean log p | mean bits/dim | share above c | NLL AUROC |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
  for s in summary:
    auroc = "–" if s["auroc"] is None else f"{s['auroc']:.3f}"
    lines.append(f"| {s['model']} | {s['training']} | {s['set']} | {s['n']} | "
                 f"{s['mean_log_p']:.1f} | {s['mean_bits_per_dim']:.3f} | "
                 f"{s['share_above_c']:.3f} | {auroc} |")
  lines += ["", f"The {held_out} was not trained on; AUROC: NLL score, the set against the ID "
            "test split, OOD positive (higher = better separated)."]
  return lines


# ----------------------------------------------------------------------------- run


def _summary(name: str, training: str, id_name: str, vals: dict, rows: list[dict], hwc,
             c: float) -> list[dict]:
  """Per evaluated set: mean log p (nats), mean bits/dim, share above ``c``, NLL AUROC."""
  auroc = {row["ood"]: row["auroc"] for row in rows}
  out = []
  for key, nll in vals["nll"].items():
    lp = -np.asarray(nll, np.float64)
    out.append({"model": name, "training": training,
                "set": f"{id_name} test (ID)" if key == "__id__" else key, "n": int(lp.size),
                "mean_log_p": float(lp.mean()),
                "mean_bits_per_dim": float(np.mean(pipeline.bits_per_dim(-lp, hwc))),
                "share_above_c": float(np.mean(lp > c)), "auroc": auroc.get(key)})
  return out


def run(r: Run) -> Result:
  minimise, thirds = minimised_name(r), third_names(r)
  by_model = pipeline.sets_for(r, oods=thirds)
  first = by_model[r.models[0]]
  objective = objective_for(r, first.hwc[-1])
  halves = {}                       # every set loaded and checked before anything trains
  for name in r.models:
    sets = by_model[name]
    halves[name] = load_minimised(r, minimise, sets.hwc, tuple(sets.test.x.shape[1:]))
    need = r.train_configs[name].batch_size
    if len(halves[name][0].x) < need:
      raise InvalidInputError(
          f"--minimise {minimise}: its training half has {len(halves[name][0].x)} images, fewer "
          f"than one batch of {need}.")
  rows, samples, figs, model_meta, summary, minimised_info = [], {}, {}, {}, [], {}
  for name in r.models:
    sets, (train_half, held_out) = by_model[name], halves[name]
    minimised_info[name] = {"train_half": len(train_half.x), "held_out": len(held_out.x),
                            "source": train_half.source}
    eval_sets = dataclasses.replace(sets, ood={held_out.name: held_out, **sets.ood})
    baseline = pipeline.train_or_load(r, name, sets)
    negative = train_negative(r, name, sets, train_half, objective)
    log_ps = {}
    for label, trained, training in ((name, baseline, "maximum likelihood"),
                                     (NEGATIVE.format(name), negative, "negative")):
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(r, trained, eval_sets, scores=["nll"], base={"k": 1})  # one draw
      model_rows = pipeline.metric_rows(r.id, label, vals)
      rows += model_rows
      samples.update(pipeline.samples_for(r.id, label, vals, sets.hwc))
      log_ps[training] = _log_p(vals, r.id)
      summary += _summary(name, training, r.id, vals, model_rows, sets.hwc, objective.c)
      info = {**trained.meta(), "training": training, "score_seconds": round(ts.seconds, 1)}
      if trained is negative:
        last = trained.result.history[-1] if trained.result.history else {}
        info.update(objective=objective.describe(), final_id_loss_nats=last.get("id_loss"),
                    final_ood_loss_nats=last.get("ood_loss"))
      model_meta[label] = info
    figs[f"fig5_{slug(name)}.png"] = (
        lambda path, n=name, lp=log_ps: fig5(path, n, lp["maximum likelihood"], lp["negative"],
                                             objective.c))
  meta = {**r.settings_meta(), **pipeline.shapes_meta(by_model), "minimise": minimise,
          "third": thirds, "objective": objective.describe(), "split_seed": SPLIT_SEED,
          "minimised_sets": minimised_info, "n_train": len(first.train.x),
          "n_id_test": len(first.test.x), "models": model_meta,
          "data_sources": pipeline.data_sources(first), "summary": summary}
  return Result(title=f"Negative training, maximise {r.id}, minimise {minimise} "
                      f"({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, figures=figs,
                sections=["\n".join(summary_lines(summary, objective.c, HELD_OUT.format(minimise)))],
                json_files={"summary.json": summary})


EXPERIMENT = cli.Experiment(
    "kirichenko_negative", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp", "scores": "nll"}, omit=("--ood", "--scores"),
    model_presets={"smoke": "smoke", "cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(
        cli.option("--minimise", default=None,
                   help="the set whose likelihood is minimised (default by ID set: "
                        + ", ".join(f"{i} -> {m}" for i, (m, _) in PAIRS.items()) + ")"),
        cli.option("--third", default=None,
                   help="comma-separated sets evaluated only (default by ID set: "
                        + ", ".join(f"{i} -> {t}" for i, (_, t) in PAIRS.items()) + "; else noise)"),
        cli.option("--c", type=float, default=None,
                   help="log-likelihood threshold, nats per image (default the paper's: -30000 "
                        "grey, -100000 colour)"),
        cli.option("--weighting", default=DEFAULT_WEIGHTING,
                   help=f"{' or '.join(WEIGHTINGS)}: the reference code's 0.5 * (...) or Eq. 6 "
                        f"as printed (default {DEFAULT_WEIGHTING})")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
