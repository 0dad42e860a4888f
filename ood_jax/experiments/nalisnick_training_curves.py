"""Nalisnick et al. Fig. 4d: bits/dim of the ID train, ID test and OOD sets over a training run.

    python -m ood_jax.experiments.nalisnick_training_curves                 # cpu preset
    python -m ood_jax.experiments.nalisnick_training_curves --preset smoke --out runs/n_curves_smoke
    python -m ood_jax.experiments.nalisnick_training_curves --models glow,cv_glow --points 20

Trains each model (default Glow; ``--models glow,cv_glow`` adds CV-Glow; model preset
``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at ``paper``, ``smoke`` at ``smoke``) on the ID
training split of every ``--pairs`` entry whose data is here (default FashionMNIST -> MNIST and
CIFAR-10 -> SVHN, CelebA; the paper's Fig. 4d is CIFAR-10 vs SVHN) and records, at every
checkpoint of that one run (a training callback, ``ood_jax.train.loop.EvalCurve``: one compiled
function for the whole run, not a re-run per checkpoint), the mean bits/dim of a same-sized
random subset of the ID training split, the ID test split and every OOD set (``--n-eval``
images each; eval mode, one dequantisation draw per image, the same draw at every checkpoint).
The run checkpoints ``--points`` times (default 12, evenly; ``--checkpoint-every`` sets the
period instead) plus the initial model (step 0).

The curve is saved as ``eval_curve.json`` in the run's checkpoint directory, so a killed run
resumes its curve and a finished run's curve is read back without training. That directory is
the shared cache's (``Run.checkpoint_dir``) with a label of its own (``curve-e<period>-<hash of
the eval sets>``): a model the other experiments trained has no curve (orbax keeps only the
last checkpoints, so it cannot be re-scored), and a curve at another period or on other eval
sets needs its own run.

Reports the curve (a table per pair and model, ``fig4d_<model>_<id>.png`` like Fig. 4d), for
every OOD set whether its curve crosses the ID test (and ID train) curve after step 0 and at
which checkpoints, and the NLL AUROC rows and histograms of the final model. Expected (paper):
"no cross-over point in the curves": the OOD set keeps its lower bits/dim through training, so
early stopping would not help.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, pipeline
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug
from ood_jax.train import train
from ood_jax.train.loop import CURVE_FILE, EvalCurve, fingerprint

DEFAULT_PAIRS = "fashion_mnist:mnist,cifar10:svhn+celeb_a"
DEFAULT_POINTS = 12
NLL_BASE = {"k": 1}            # final-model NLL: one dequantisation draw, as the curve
ID_TRAIN, ID_TEST = "id_train", "id_test"
SUBSET_SEED_OFFSET = 5         # the ID-train subset: rng(seed + 5), fixed per --seed


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()
  points, every = r.options.get("points"), r.options.get("checkpoint_every")
  if points is not None and int(points) < 1:
    raise InvalidInputError(f"--points must be >= 1, got {points}.")
  if every is not None and int(every) < 1:
    raise InvalidInputError(f"--checkpoint-every must be >= 1, got {every}.")


def checkpoint_every(r: Run, total: int) -> int:
  """``--checkpoint-every``, else ``ceil(total / --points)``."""
  every = r.options.get("checkpoint_every")
  if every is not None:
    return int(every)
  points = r.options.get("points") or DEFAULT_POINTS
  return max(1, math.ceil(total / int(points)))


def expected_steps(total: int, every: int) -> list[int]:
  """The checkpoints a run of ``total`` steps calls back at: 0, every, 2 every, ..., total."""
  return [0] + [s for s in range(every, total, every)] + [total]


def train_subset(x: np.ndarray, n: int, seed: int) -> np.ndarray:
  """``n`` random images of the training split (sorted indices, ``rng(seed + 5)``)."""
  n = min(n, len(x))
  idx = np.sort(np.random.default_rng(seed + SUBSET_SEED_OFFSET).choice(len(x), n, replace=False))
  return x[idx]


def crossings(steps: list[int], ood: list[float], ref: list[float]) -> list[list[int]]:
  """``[[s_a, s_b], ...]``: consecutive checkpoints between which the sign of ``ood - ref``
  changes (zero is a sign of its own: touching counts); None values are skipped."""
  pts = [(s, o - f) for s, o, f in zip(steps, ood, ref) if o is not None and f is not None]
  out = []
  for (s0, d0), (s1, d1) in zip(pts, pts[1:]):
    if np.sign(d0) != np.sign(d1):
      out.append([s0, s1])
  return out


def curve_summary(points: list[dict], labels: dict[str, str], oods: list[str]) -> dict:
  """Crossings (after step 0) of every OOD curve with the ID test and ID train curves."""
  trained = [p for p in points if p["step"] > 0]
  steps = [p["step"] for p in trained]
  bpd = {k: [p["bits_per_dim"].get(k) for p in trained] for k in labels}
  out = {}
  for o in oods:
    below = [a is not None and b is not None and a < b for a, b in zip(bpd[o], bpd[ID_TEST])]
    since = None                          # the first checkpoint from which OOD stays below
    for s, b in zip(reversed(steps), reversed(below)):
      if not b:
        break
      since = s
    out[o] = {"ood_below_id_test_from_step": since,
              "crossings_vs_id_test": crossings(steps, bpd[o], bpd[ID_TEST]),
              "crossings_vs_id_train": crossings(steps, bpd[o], bpd[ID_TRAIN]),
              "ood_below_id_test": int(sum(below)), "checkpoints": len(steps)}
  return out


def fig4d(path: str, title: str, points: list[dict], labels: dict[str, str]) -> None:
  """Fig. 4d style: bits/dim against training step, one line per set."""
  fig = Figure(figsize=(6.5, 4.4))
  ax = fig.add_subplot(1, 1, 1)
  steps = [p["step"] for p in points]
  colours = {ID_TRAIN: "black", ID_TEST: "tab:blue"}
  others = iter(["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown"])
  for key, label in labels.items():
    ys = [np.nan if p["bits_per_dim"].get(key) is None else p["bits_per_dim"][key] for p in points]
    ax.plot(steps, ys, marker="o", ms=3, lw=1.5, label=label,
            color=colours.get(key) or next(others, None), ls="--" if key == ID_TRAIN else "-")
  ax.set_xlabel("training step")
  ax.set_ylabel("bits/dim")
  ax.set_title(title)
  ax.legend(fontsize="small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def _cell(v) -> str:
  return "–" if v is None else f"{v:.3f}"


def curve_table(points: list[dict], labels: dict[str, str]) -> list[str]:
  lines = ["| step | " + " | ".join(labels.values()) + " |",
           "|---:|" + "---:|" * len(labels)]
  for p in points:
    lines.append(f"| {p['step']} | " + " | ".join(_cell(p["bits_per_dim"].get(k)) for k in labels)
                 + " |")
  return lines


def _crossing_text(c: list[list[int]]) -> str:
  return "none" if not c else ", ".join(f"between steps {a} and {b}" for a, b in c)


def curve_label(every: int, eval_sets: dict) -> str:
  """The cache label of a curve run: its checkpoint period and a hash of its eval sets."""
  key = json.dumps({k: fingerprint(v)["sha256"] for k, v in eval_sets.items()}, sort_keys=True)
  return slug("curve", f"e{every}", hashlib.sha256(key.encode()).hexdigest()[:8])


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  runs = [r.for_id(i, o) for i, o in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}       # every model built and checked first
  rows, samples, figs, model_meta, curves, sections = [], {}, {}, {}, {}, []
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      config = ri.train_configs[name]
      total = config.total_steps(len(sets.train.x) // config.batch_size)
      every = checkpoint_every(ri, total)
      config = dataclasses.replace(config, checkpoint_every=every)
      eval_sets = {ID_TRAIN: train_subset(sets.train.x, len(sets.test.x), ri.seed),
                   ID_TEST: sets.test.x, **{o: s.x for o, s in sets.ood.items()}}
      labels = {ID_TRAIN: f"{ri.id} train (subset)", ID_TEST: f"{ri.id} test",
                **{o: f"{o} (OOD)" for o in sets.ood}}
      model = ri.make_model(name, sets.hwc)
      ckpt = ri.checkpoint_dir(name, model, sets.train, config, label=curve_label(every, eval_sets))
      curve = EvalCurve(model, eval_sets, os.path.join(ckpt, CURVE_FILE), seed=ri.seed)
      with pipeline.Timer() as tt:
        result = train(model, sets.train.x, config, ckpt, progress=ri.progress,
                       desc=f"train {name} on {sets.train.name} (curve)", on_checkpoint=curve)
      trained = pipeline.Trained(name=name, model=model, result=result, config=config,
                                 ckpt_dir=ckpt)
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(ri, trained, sets, scores=["nll"], base=NLL_BASE)
      label = f"{name}_{ri.id}"
      rows += pipeline.metric_rows(ri.id, name, vals)
      samples.update(pipeline.samples_for(ri.id, label, vals, sets.hwc))
      points = curve.points
      if curve.traces > 1:       # one compiled evaluation for every checkpoint (Fig. 4d's cost)
        raise RuntimeError(f"nalisnick_training_curves: the evaluation of {name} was traced "
                           f"{curve.traces} times; it must compile once for every checkpoint.")
      want = expected_steps(total, every)
      missing = [s for s in want if s not in curve.steps]
      summary = curve_summary(points, labels, list(sets.ood))
      curves[label] = {"model": name, "id": ri.id, "checkpoint_every": every, "total_steps": total,
                       "labels": labels, "points": points, "missing_steps": missing,
                       "crossings": summary}
      model_meta[label] = {**trained.meta(), "checkpoint_every": every,
                           "curve_points": len(points), "curve_missing_steps": missing,
                           "eval_traces": curve.traces,
                           "train_and_curve_seconds": round(tt.seconds, 1),
                           "score_seconds": round(ts.seconds, 1)}
      fname = f"fig4d_{slug(name)}_{slug(ri.id)}.png"
      figs[fname] = (lambda path, t=f"{name} trained on {ri.id}", p=points, lb=labels:
                     fig4d(path, t, p, lb))
      lines = [f"## {name} trained on {ri.id}: bits/dim at every checkpoint "
               f"(every {every} of {total} steps)", "", *curve_table(points, labels), ""]
      for o, s in summary.items():
        lines.append(f"* {o}: below the ID test curve at {s['ood_below_id_test']} of "
                     f"{s['checkpoints']} checkpoints after step 0"
                     + ("" if s["ood_below_id_test_from_step"] is None else
                        f" (and at every one from step {s['ood_below_id_test_from_step']} on)")
                     + "; crossings with ID test: "
                     f"{_crossing_text(s['crossings_vs_id_test'])}; with ID train: "
                     f"{_crossing_text(s['crossings_vs_id_train'])}.")
      if missing:
        lines.append(f"* The curve lacks steps {missing} (a finished checkpoint from before its "
                     "curve was recorded); delete the checkpoint directory to record it whole.")
      lines += ["", f"![{fname}]({fname})"]
      sections.append("\n".join(lines))
  sections.append(
      "Paper (Fig. 4d, NVP-Glow, CIFAR-10 vs SVHN): \"there is no cross-over point in the "
      "curves\": SVHN keeps a lower bits/dim than CIFAR-10 train and test throughout training, "
      "so early stopping would not prevent the phenomenon. Step 0 is the initial model; "
      "crossings are counted between consecutive checkpoints after it.")
  if skipped:
    sections.append("\n".join(availability.skipped_lines(skipped)[1:]))
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models": model_meta,
          "data_sources": {ri.id: pipeline.data_sources(by_id[ri.id][ri.models[0]]) for ri in runs}}
  return Result(title=f"Nalisnick et al. Fig. 4d: bits/dim over training ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, sections=sections,
                json_files={"curves.json": curves}, figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_training_curves", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "glow", "scores": "nll"}, omit=("--id", "--ood", "--scores"),
    model_presets={"smoke": "smoke", "cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--points", type=int, default=DEFAULT_POINTS,
                        help=f"checkpoints over the run, evenly spaced (default {DEFAULT_POINTS})"),
             cli.option("--checkpoint-every", type=int, default=None,
                        help="checkpoint period in steps (replaces --points)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
