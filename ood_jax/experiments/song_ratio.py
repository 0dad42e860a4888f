"""Song et al. Fig. 3: average bits/dim of test samples against the ratio r of test samples in
the BatchNorm batch.

    python -m ood_jax.experiments.song_ratio                        # cpu preset, VAE, FashionMNIST
    python -m ood_jax.experiments.song_ratio --models vae,realnvp --ratios 0.1,0.5,1.0

For each BatchNorm model of ``--models`` trained on the ID split (checkpoints shared with
``table2`` / ``table5``), and for the ID test set and every OOD set, the mean over the set of
``-S_{b,r}(x) / (D ln 2)`` (``S_{b,r}``: ``bn_mixed``'s mixed-batch train-mode log-likelihood,
nats per image: ``m = round(r b)`` test images of the set beside ``b - m`` ID training images,
averaged over ``K`` rounds) for every ``r`` of ``--ratios`` (default the paper's x-axis 0.1,
0.2, 0.4, 0.6, 0.8, 1.0), plus the eval-mode bits/dim (``nll``, running statistics: the
``r -> 0`` limit) for reference. ``b`` = ``--b`` (64), ``K`` = ``--rounds``, ``k`` =
``--bn-k`` as ``table1`` / ``table5`` (``bn_settings``). Expected (paper): "the BPD of
in-distribution samples do not increase as the ratio increase, yet that of OoD samples
increase significantly".

Writes ``report.md`` (one table per model: rows = sets, columns = r), ``results.json`` (one
row per model x set x r), ``meta.json`` and ``fig3_<model>.png`` (one line per set).

Choices where the paper is silent: every ratio uses the same rng stream (stream 0) of the
batch compositions (common random numbers across r), so at ``r = 1`` (batches of the set
alone) the values are exactly ``bn_train_bpd``'s with the same ``b``, ``K``, ``k`` and seed;
the standard error in the JSON is over images (not over compositions); the OOD sets are the
run's (the figure's legend is not in our copy of the text).
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.data.pixels import num_dims
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import bn_settings, cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list
from ood_jax.scores.compositions import check_mixing, num_test_slots

DEFAULT_RATIOS = "0.1,0.2,0.4,0.6,0.8,1.0"
STREAM = 0            # one composition stream for every r (common random numbers)


def ratios(arg: str) -> list[float]:
  """``'0.1,0.5,1'`` -> ``[0.1, 0.5, 1.0]``: distinct numbers in [0, 1], in the order given."""
  try:
    rs = [float(v) for v in split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--ratios: expected comma-separated numbers in [0, 1], got {arg!r}.") from None
  if not rs:
    raise InvalidInputError("--ratios: no ratios given.")
  bad = [v for v in rs if not 0.0 <= v <= 1.0]
  if bad:
    raise InvalidInputError(f"--ratios: every r must be in [0, 1], got {bad}.")
  if len(set(rs)) != len(rs):
    raise InvalidInputError(f"--ratios: a ratio is given twice in {arg!r}.")
  return rs


def _scorer(r: Run):
  return r.scorer("bn_mixed", base=bn_settings.bn_settings(r, r1=0.1, r2=0.9))


def check(r: Run) -> None:
  sc = _scorer(r)                        # bad b / K / k: now
  for v in ratios(r.options["ratios"]):
    check_mixing(sc.b, v, sc.K, "--ratios")


def ratio_bpd(scorer, state, x: np.ndarray, rs: list[float], hwc) -> dict[float, np.ndarray]:
  """``{r: -S_{b,r}(x) / (D ln 2)}``: each image's mixed-batch train-mode bits/dim
  (``scorer.mixed_log_prob``, nats per image, on stream ``STREAM`` for every r)."""
  d = num_dims(tuple(hwc))
  return {v: (-scorer.mixed_log_prob(state, x, v, stream=STREAM) / (d * math.log(2.0))
              ).astype(np.float32) for v in rs}


def model_rows(r: Run, trained: pipeline.Trained, sets: pipeline.Sets, rs: list[float]) -> list[dict]:
  """One row per set x r (and per set for eval mode, ``r = None``): mean bits/dim, its
  standard error over images, ``m`` test slots per batch."""
  scorer = _scorer(r)
  state = scorer.fit(trained.model, trained.variables, sets.train.x)
  nll = r.scorer("nll")
  nll_state = nll.fit(trained.model, trained.variables, None)
  named = {f"{r.id} (ID test)": sets.test.x, **{n: v.x for n, v in sets.ood.items()}}
  rows = []
  for set_name, x in named.items():
    ev = pipeline.bits_per_dim(nll.score(nll_state, x), sets.hwc)
    vals = {None: ev, **ratio_bpd(scorer, state, x, rs, sets.hwc)}
    for v, bpd in vals.items():
      bpd = np.asarray(bpd, np.float64)
      rows.append({"model": trained.name, "set": set_name, "is_id": set_name == f"{r.id} (ID test)",
                   "r": v, "mode": "eval" if v is None else "mixed",
                   "m": None if v is None else num_test_slots(v, scorer.b), "b": scorer.b,
                   "n": int(len(x)), "mean_bpd": float(np.mean(bpd)),
                   "sem_bpd": float(np.std(bpd) / math.sqrt(len(bpd)))})
  return rows


def markdown(rows: list[dict], rs: list[float], models: list[str], notes: list[str]) -> str:
  lines = ["## Average bits/dim against the ratio r of test samples in the batch (Fig. 3)", "",
           "Mean over the set of -S_{b,r}(x) / (D ln 2): train-mode BatchNorm over a batch of "
           "b holding m = round(r b) images of the set and b - m ID training images; `eval` = "
           "running statistics (r -> 0). Paper (Fig. 3, figure only): ID flat in r, OOD rising "
           "steeply with r.", ""]
  for name in models:
    mine = [x for x in rows if x["model"] == name]
    if not mine:
      continue
    b = mine[0]["b"]
    lines += [f"### {name} (b = {b})", "",
              "| set | eval | " + " | ".join(f"r={v:g} (m={num_test_slots(v, b)})" for v in rs)
              + f" | r={max(rs):g} - eval |",
              "|---|---:|" + "---:|" * len(rs) + "---:|"]
    for set_name in dict.fromkeys(x["set"] for x in mine):
      by_r = {x["r"]: x["mean_bpd"] for x in mine if x["set"] == set_name}
      lines.append(f"| {set_name} | {by_r[None]:.3f} | "
                   + " | ".join(f"{by_r[v]:.3f}" for v in rs)
                   + f" | {by_r[max(rs)] - by_r[None]:+.3f} |")
    lines.append("")
  if notes:
    lines += ["Notes:", ""] + [f"- {n}" for n in notes]
  return "\n".join(lines)


def draw_fig3(path: str, rows: list[dict], model: str, rs: list[float]) -> None:
  """One line per set: mean bits/dim against r (dotted: eval mode at r = 0)."""
  fig = Figure(figsize=(6.0, 4.2))
  ax = fig.add_subplot()
  mine = [x for x in rows if x["model"] == model]
  for i, set_name in enumerate(dict.fromkeys(x["set"] for x in mine)):
    pts = sorted((x["r"], x["mean_bpd"]) for x in mine if x["set"] == set_name and x["r"] is not None)
    ev = next(x["mean_bpd"] for x in mine if x["set"] == set_name and x["r"] is None)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i % 10}",
            lw=2.0 if mine and set_name.endswith("(ID test)") else 1.3, label=set_name)
    ax.plot([0.0, pts[0][0]], [ev, pts[0][1]], ":", color=f"C{i % 10}")
    ax.plot([0.0], [ev], "s", color=f"C{i % 10}", ms=4)
  ax.set_xlabel("ratio r of test samples in batch (r = 0: eval mode)")
  ax.set_ylabel("average bits/dim (-log p(x_j | x_-j))")
  ax.set_xticks([0.0] + list(rs))
  ax.set_title(f"Song et al. Fig. 3: {model}")
  ax.legend(fontsize="x-small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)


def run(r: Run) -> Result:
  rs = ratios(r.options["ratios"])
  by_model = pipeline.sets_for(r)
  rows, info, notes, figures = [], {}, [], {}
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    if not bn_settings.has_batchnorm(trained.variables):
      notes.append(f"{name}: no BatchNorm (no train mode): skipped.")
      continue
    with pipeline.Timer() as ts:
      rows += model_rows(r, trained, sets, rs)
    info[name] = {**trained.meta(), "input_shape": list(sets.hwc),
                  "score_seconds": round(ts.seconds, 1)}
    figures[f"fig3_{name}.png"] = functools.partial(draw_fig3, rows=list(rows), model=name, rs=rs)
  if not rows:
    raise InvalidInputError(f"no model could be scored: {notes}.")
  meta = {**r.settings_meta(), "ratios": rs, "stream": STREAM, "models": info, "notes": notes,
          "units": "bits per dimension",
          "scorers": {"bn_mixed": r.scorer_meta("bn_mixed", base=bn_settings.bn_settings(
              r, r1=0.1, r2=0.9)), "nll": r.scorer_meta("nll")}}
  return Result(title=f"Fig. 3 (Song et al.): bits/dim vs test ratio r, {r.id} ({r.preset} preset)",
                meta=meta, results=rows, sections=[markdown(rows, rs, list(r.models), notes)],
                figures=figures)


EXPERIMENT = cli.Experiment(
    "song_ratio", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "vae", "scores": "bn_mixed,nll"}, omit=("--scores",),
    options=bn_settings.OPTIONS + (
        cli.option("--ratios", default=DEFAULT_RATIOS,
                   help=f"comma-separated test ratios r in [0, 1] (default {DEFAULT_RATIOS})"),),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
