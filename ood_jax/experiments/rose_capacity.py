"""ROSE's robustness to the VAE's capacity (ROSE §5.2, Table 3): AUROC per OOD set as the
width (the number of channels) of the VAE is scaled by 0.5, 1, 2 and 4.

    python -m ood_jax.experiments.rose_capacity                     # cpu preset, FashionMNIST
    python -m ood_jax.experiments.rose_capacity --preset smoke --out runs/rose_capacity_smoke
                                                            # smoke: widths 0.5, 1 only
    python -m ood_jax.experiments.rose_capacity --id cifar10 --width-steps 4:2000

For each width w of ``--widths`` the DCGAN VAE (``vae``) is trained with ``ngf = w * ngf_1``,
``ngf_1`` the ngf of the model preset for the ID set's channels (cpu / paper: 32 grey, 64
colour, the reference VAE of Likelihood Regret / ROSE, ROSE's "1"; so 16/32/64/128 grey and
32/64/128/256 colour; ``--model-args ngf=...`` sets ``ngf_1``), through
``pipeline.train_or_load`` with ``ngf`` as a variant override: each width has its own
checkpoint (the directory's hash covers the built module; the label names the ngf), and
width 1 shares the checkpoint of ``table2`` / ``rose_ablations`` trained with the same
config. Each model is scored with ``--scores`` (default ``rose,nll``; NLL for reference) on
the ID test split and every OOD set. Writes ``report.md`` (the usual per-model tables, one
"model" ``vae_x<w>`` per width, then per score a table of OOD sets x widths beside ROSE's
Table 3 numbers), ``results.json`` (one row per width x score x OOD set), ``capacity.json``,
``meta.json`` and ``auroc_vs_width.png`` (ours solid, the paper's dashed).

Where the paper is silent (ours):
* "width" scales ngf only: every layer's channels (ngf, 2ngf, 4ngf); the latent size stays
  the preset's (100 grey, 200 colour); ROSE's settings are the same for every width.
* OOD sets: the default is Table 3's list (mnist, kmnist, not_mnist, svhn, celeb_a, lsun,
  noise, constant), run where the data is here; the missing ones are listed in the report
  with the reason (never a stand-in). Sets given with ``--ood`` must load.
* Training budget: the paper trains every width alike (100 epochs); ``paper`` does that.
  ``cpu`` trains every width for the same ``500`` steps (batch 64, ~0.53 epoch of
  FashionMNIST, lr 1e-3 not halved), not the cpu preset's 2 epochs: measured in FLOPs per
  batch-64 step (XLA cost analysis) the grey widths cost 0.46 / 1 / 2.3 / 6.0 times ngf 32
  (~0.33 s), so 2 epochs of all four would take ~2.7 h; 500 steps each take ~30 min, the
  scoring ~20 min more (NLL with k = 10 and ROSE on 1000 images per set grow as the
  training step). Equal steps for every width keep the comparison about capacity, at the
  price of under-trained wide models. The colour widths (CIFAR-10) cost 2.6 / 5.6 / 12.5 /
  30 times grey ngf 32: ~2.5 h at cpu; give fewer steps with ``--width-steps``.
  ``--width-steps`` (``STEPS`` for every width or ``W:STEPS,...``, ``none`` = the preset's
  config) replaces that; ``--train-steps`` or ``--train-args num_steps/epochs`` turn the
  cpu default off.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax import data
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, pipeline, settings
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list
from ood_jax.models import registry as model_registry

MODEL = "vae"
DEFAULT_WIDTHS = "0.5,1,2,4"
DEFAULT_SCORES = "rose,nll"
TABLE3_OODS = ("mnist", "kmnist", "not_mnist", "svhn", "celeb_a", "lsun", "noise", "constant")
DEFAULT_OOD = ",".join(TABLE3_OODS)
# Steps per width where --width-steps is not given (module docstring); other presets: theirs.
PRESET_STEPS = {"cpu": 500}
# Widths where --widths is not given: smoke runs two (each width compiles its own model).
PRESET_WIDTHS = {"smoke": "0.5,1"}
PAPER_WIDTHS = (0.5, 1.0, 2.0, 4.0)
# ROSE Table 3: ROSE's AUROC per OOD set at widths 0.5, 1, 2, 4 (ID FashionMNIST / CIFAR-10).
PAPER = {
    "fashion_mnist": {
        "mnist": (0.997, 0.995, 0.991, 0.988), "kmnist": (0.998, 0.997, 0.994, 0.993),
        "not_mnist": (1.000, 1.000, 1.000, 1.000), "svhn": (1.000, 1.000, 1.000, 1.000),
        "celeb_a": (0.999, 0.999, 1.000, 0.998), "lsun": (0.999, 0.999, 1.000, 0.999),
        "noise": (0.999, 0.996, 0.993, 0.992), "constant": (1.000, 1.000, 1.000, 1.000)},
    "cifar10": {
        "mnist": (1.000, 0.999, 0.998, 0.999), "kmnist": (0.999, 0.999, 0.998, 0.999),
        "not_mnist": (0.998, 0.998, 0.995, 0.994), "svhn": (0.809, 0.907, 0.851, 0.822),
        "celeb_a": (0.716, 0.778, 0.792, 0.786), "lsun": (0.536, 0.526, 0.516, 0.529),
        "noise": (1.000, 1.000, 0.993, 0.940), "constant": (0.990, 0.973, 0.923, 0.919)},
}
PAPER_SCORE = "rose"


# ----------------------------------------------------------------------------- settings


def widths(text: str) -> list[float]:
  """``'0.5,1,2,4'`` -> ``[0.5, 1.0, 2.0, 4.0]`` (positive, distinct)."""
  try:
    out = [float(w) for w in split_list(text)]
  except ValueError:
    raise InvalidInputError(f"--widths: expected comma-separated numbers, got {text!r}.") from None
  if not out or min(out) <= 0 or not all(math.isfinite(w) for w in out):
    raise InvalidInputError(f"--widths: expected positive numbers, got {text!r}.")
  if len(set(out)) != len(out):
    raise InvalidInputError(f"--widths: a width is given twice in {text!r}.")
  return out


def run_widths(r: Run) -> list[float]:
  """``--widths``, or the preset's default (smoke: 0.5, 1; else 0.5, 1, 2, 4)."""
  text = r.options.get("widths")
  return widths(text if text is not None else PRESET_WIDTHS.get(r.preset, DEFAULT_WIDTHS))


def base_ngf(model_preset: str, channels: int, model_args=None) -> int:
  """``ngf`` of width 1: the model preset's for ``channels`` (1 grey, else colour), or
  ``--model-args ngf=...``."""
  return int(model_registry.model_settings(MODEL, model_preset, channels,
                                           **dict(model_args or {}))["ngf"])


def width_ngfs(ws: list[float], base: int) -> dict[float, int]:
  """``{width: round(width * base)}``; ``InvalidInputError`` if one is below 1 or two widths
  round to the same ngf."""
  out = {w: int(round(w * base)) for w in ws}
  if min(out.values()) < 1:
    raise InvalidInputError(f"--widths: width {min(ws):g} x ngf {base} is below one channel.")
  if len(set(out.values())) != len(out):
    raise InvalidInputError(f"--widths: {ws} give the same ngf twice at ngf_1 = {base}: {out}.")
  return out


def width_steps(r: Run, ws: list[float]) -> dict[float, int]:
  """``{width: num_steps}`` replacing the run's training length (empty: the run's config).

  ``--width-steps``: ``STEPS`` (every width), ``W:STEPS,...`` (those widths) or ``none``;
  not given: ``PRESET_STEPS`` of the preset for every width, unless ``--train-steps`` or
  ``--train-args`` set the length."""
  text = r.options.get("width_steps")
  if text is None:
    if r.train_steps is not None or {"num_steps", "epochs"} & set(r.train_args):
      return {}
    n = PRESET_STEPS.get(r.preset)
    return {w: n for w in ws} if n else {}
  if text.strip().lower() == "none":
    return {}
  out = {}
  for part in split_list(text):
    w, sep, steps = part.rpartition(":")
    try:
      n = int(steps)
      keys = [float(w)] if sep else list(ws)
    except ValueError:
      raise InvalidInputError(f"--width-steps: expected STEPS or W:STEPS,..., got {text!r}.") from None
    if n < 1:
      raise InvalidInputError(f"--width-steps: at least one step, got {part!r}.")
    for k in keys:
      if k not in ws:
        raise InvalidInputError(f"--width-steps: width {k:g} is not one of --widths {ws}.")
      out[k] = n
  return out


def _channels(r: Run) -> int:
  return int(data.load(r.id, "train", data_dir=r.data_dir, n=1, seed=r.seed).x.shape[-1])


def check(r: Run) -> None:
  ws = run_widths(r)
  width_steps(r, ws)
  width_ngfs(ws, base_ngf(r.model_preset, _channels(r), r.model_args.get(MODEL)))


def ood_sets(r: Run) -> tuple[list[str], list[dict]]:
  """``(OOD sets to run, skipped)``: the default Table 3 list keeps the sets whose data is
  here (``skipped``: ``{'ood', 'reason'}``); sets given with ``--ood`` are all run."""
  if tuple(r.oods) != TABLE3_OODS:
    return list(r.oods), []
  run, skipped = [], []
  for name in r.oods:
    why = availability.missing(pipeline.ood_spec(name, r.id), "test", r.data_dir)
    (skipped.append({"ood": name, "reason": why}) if why else run.append(name))
  if not run:
    raise InvalidInputError("none of ROSE Table 3's OOD sets " + ", ".join(TABLE3_OODS)
                            + " is available here; give --ood.")
  return run, skipped


# ----------------------------------------------------------------------------- tables


def label(width: float) -> str:
  """The "model" of a width in ``results.json``: ``vae_x0.5``."""
  return f"{MODEL}_x{width:g}"


def paper_auroc(id_name: str, ood: str, width: float, score: str) -> float | None:
  """ROSE Table 3's AUROC (score ``rose``, with or without inline settings; widths 0.5 / 1 /
  2 / 4), else None."""
  row = PAPER.get(id_name, {}).get(ood)
  if settings.parse_entry(score)[0] != PAPER_SCORE or row is None or float(width) not in PAPER_WIDTHS:
    return None
  return row[PAPER_WIDTHS.index(float(width))]


def rows_for(id_name: str, vals_by_width: dict[float, dict]) -> list[dict]:
  """Metric rows (``report.ROW_KEYS``) of every width x score x OOD set; ``vals_by_width``
  maps width -> ``pipeline.score_all`` output."""
  rows = []
  for w, vals in vals_by_width.items():
    rows += pipeline.metric_rows(id_name, label(w), vals)
  return rows


def capacity_table(id_name: str, rows: list[dict], ngfs: dict[float, int]) -> list[dict]:
  """``capacity.json``: one entry per width x score x OOD set with the paper's AUROC."""
  by_label = {label(w): w for w in ngfs}
  return [{"width": by_label[r["model"]], "ngf": ngfs[by_label[r["model"]]], "score": r["score"],
           "ood": r["ood"], "auroc": r["auroc"],
           "paper_auroc": paper_auroc(id_name, r["ood"], by_label[r["model"]], r["score"])}
          for r in rows]


def _f(v) -> str:
  return "–" if v is None else f"{v:.3f}"


def markdown(id_name: str, table: list[dict], ngfs: dict[float, int], base: int,
             skipped: list[dict] = ()) -> str:
  """Per score: OOD sets x widths (ours), the spread max - min over the widths, then ROSE
  Table 3's AUROC at the same widths and its spread."""
  ws = list(ngfs)
  cols = " | ".join(f"x{w:g} (ngf {ngfs[w]})" for w in ws)
  paper_id = {"fashion_mnist": "FashionMNIST", "cifar10": "CIFAR-10"}.get(id_name)
  lines = ["## AUROC vs VAE width (ROSE Table 3)", "",
           f"Width w trains the VAE with ngf = w x {base} (1 = the standard VAE). Ours, then "
           + (f"ROSE Table 3's AUROC of ROSE (ID {paper_id})" if paper_id else
              f"no paper numbers (Table 3 has ID FashionMNIST and CIFAR-10, not {id_name})")
           + "; '–' where there is none. Spread = max - min over the widths.", ""]
  for score in dict.fromkeys(t["score"] for t in table):
    sub = [t for t in table if t["score"] == score]
    by = {(t["ood"], t["width"]): t for t in sub}
    lines += [f"### {score}", "",
              f"| OOD set | {cols} | spread | " + " | ".join(f"paper x{w:g}" for w in ws)
              + " | paper spread |", "|---|" + "---:|" * (2 * len(ws) + 2)]
    for ood in dict.fromkeys(t["ood"] for t in sub):
      ours = [by[(ood, w)]["auroc"] if (ood, w) in by else None for w in ws]
      paper = [paper_auroc(id_name, ood, w, score) for w in ws]
      spread = lambda v: (max(v) - min(v)) if v and None not in v else None
      lines.append(f"| {ood} | " + " | ".join(map(_f, ours)) + f" | {_f(spread(ours))} | "
                   + " | ".join(map(_f, paper)) + f" | {_f(spread(paper))} |")
    lines.append("")
  if skipped:
    lines += ["Not run here (no data):", ""] + [f"* {s['ood']}: {s['reason']}." for s in skipped]
  return "\n".join(lines).rstrip()


def draw(path: str, id_name: str, table: list[dict]) -> str:
  """AUROC against width (log2 axis), one panel per score, one colour per OOD set: ours
  solid with dots, the paper's dashed with crosses."""
  scores = list(dict.fromkeys(t["score"] for t in table))
  fig = Figure(figsize=(5.8 * len(scores), 4.4))
  for j, score in enumerate(scores):
    ax = fig.add_subplot(1, len(scores), j + 1)
    sub = [t for t in table if t["score"] == score]
    for i, ood in enumerate(dict.fromkeys(t["ood"] for t in sub)):
      pts = sorted((t["width"], t["auroc"], t["paper_auroc"]) for t in sub if t["ood"] == ood)
      ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=4, color=f"C{i % 10}", label=ood)
      paper = [(p[0], p[2]) for p in pts if p[2] is not None]
      if paper:
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "--x", ms=5, color=f"C{i % 10}",
                alpha=0.7, label=f"{ood} (paper)")
    ax.set_xscale("log", base=2)
    ws = sorted({t["width"] for t in sub})
    ax.set_xticks(ws, [f"{w:g}" for w in ws])
    ax.set_xlabel("VAE width (x the standard ngf)")
    ax.set_ylabel("AUROC (OOD positive)")
    ax.set_title(f"{score}, ID {id_name}", fontsize=10)
    ax.legend(fontsize="x-small", ncol=2)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=110)
  return path


# ----------------------------------------------------------------------------- run


def run(r: Run) -> Result:
  ws = run_widths(r)
  oods, skipped = ood_sets(r)
  sets = pipeline.sets_for(r, models=[MODEL], oods=oods)[MODEL]
  base = base_ngf(r.model_preset, sets.hwc[-1], r.model_args.get(MODEL))
  ngfs, steps = width_ngfs(ws, base), width_steps(r, ws)
  vals_by_width, info, samples = {}, {}, {}
  for w in ws:
    config = r.train_configs[MODEL]
    if w in steps:
      config = dataclasses.replace(config, num_steps=steps[w])
    ngf = ngfs[w]
    trained = pipeline.train_or_load(r, MODEL, sets, overrides={"ngf": ngf},
                                     label="" if ngf == base else f"ngf{ngf}", config=config)
    with pipeline.Timer() as ts:
      vals = pipeline.score_all(r, trained, sets)
    vals_by_width[w] = vals
    samples.update(pipeline.samples_for(r.id, label(w), vals, sets.hwc))
    info[label(w)] = {"width": w, "ngf": ngf, **trained.meta(),
                      "score_seconds": round(ts.seconds, 1)}
  rows = rows_for(r.id, vals_by_width)
  table = capacity_table(r.id, rows, ngfs)
  meta = {**r.settings_meta(), **pipeline.shapes_meta({MODEL: sets}), "widths": ws,
          "ngf_1": base, "ngf": {f"{w:g}": n for w, n in ngfs.items()},
          "width_steps": {f"{w:g}": n for w, n in steps.items()}, "ood_run": oods,
          "skipped": skipped, "n_train": len(sets.train.x), "n_id_test": len(sets.test.x),
          "models": info, "data_sources": pipeline.data_sources(sets)}
  return Result(
      title=f"ROSE Table 3: AUROC vs VAE width, {r.id} in-distribution ({r.preset} preset)",
      meta=meta, rows=rows, samples=samples,
      sections=[markdown(r.id, table, ngfs, base, skipped)],
      json_files={"capacity.json": {"command": r.command, "id": r.id, "rows": table}},
      arrays=pipeline.score_arrays(r.id, {label(w): v for w, v in vals_by_width.items()}, sets),
      figures={"auroc_vs_width.png": lambda path: draw(path, r.id, table)})


EXPERIMENT = cli.Experiment(
    "rose_capacity", run, description=__doc__.split("\n\n")[0],
    defaults={"scores": DEFAULT_SCORES, "ood": DEFAULT_OOD, "models": MODEL}, omit=("--models",),
    options=(cli.option("--widths", default=None,
                        help="VAE widths, multiples of the standard ngf (default "
                             f"{DEFAULT_WIDTHS}; smoke preset: {PRESET_WIDTHS['smoke']})"),
             cli.option("--width-steps", default=None,
                        help="training steps: STEPS for every width, or W:STEPS,...; 'none' = "
                             "the preset's config (default: cpu 500 per width, else the preset's)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
