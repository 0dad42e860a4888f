"""Nalisnick et al. §5, Fig. 5b and App. I, Fig. 12: graying the images raises their likelihood.

    python -m ood_jax.experiments.nalisnick_graying                   # cpu: CIFAR-10 vs CelebA
    python -m ood_jax.experiments.nalisnick_graying --preset smoke --out runs/n_gray_smoke
    python -m ood_jax.experiments.nalisnick_graying --alphas 1,0.5,0.25 --models glow

"For RGB images, shrinking the variance is equivalent to 'graying' the images, i.e. making
the pixel values closer to 128. We show in Figure 5 (b) that doing exactly this improves the
likelihood of both CIFAR-10 and SVHN. Reducing the variance of the latent representations
has the same effect, which is shown by Figure 12." The paper does not say how it grays; we
use the transform ``gray:a`` (``ood_jax.data.transforms``), ``x' = round(128 + a (x - 128))``
(half to even, so symmetric about 128), which scales every pixel's deviation from 128, hence
every per-pixel variance by ``a^2``, and sweep ``--alphas`` ``a`` = 1.0, 0.9, ..., 0.1 (1.0:
the images as they are).

Trains (or loads from the checkpoint cache shared with the other Nalisnick experiments) the
models of ``--models`` (default ``glow``, the paper's NVP-Glow, and ``cv_glow``; model preset
``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at ``paper``, ``smoke`` at ``smoke``) on ``--id``
(default CIFAR-10) and evaluates the ID test split and each ``--ood`` set (default SVHN, the
paper's, and CelebA; SVHN is not in this checkout and is listed as skipped) grayed at every
``a``: mean bits/dim (``-log2 p(x + u) / D`` with one dequantisation draw ``u``, the same
draws at every ``a``; ``--score-args nll.k=K`` for the K-draw bound), a curve of the means
against ``a`` (``graying_curve.png``), the bits/dim histograms per set (``graying_hist_<model>.png``)
and examples of the grayed images. For the models of ``--code-models`` (default ``cv_glow``,
as App. H-I) the code statistics of ``code_stats`` (per-dimension means and standard
deviations of the standardised latents, per-image ``|z| / sqrt(D)``) of the grayed sets,
their histograms per ``a`` (``graying_codes_<model>.png``, Fig. 12) and a table. Expected
(paper): the bits/dim of ID and OOD fall as ``a`` shrinks, and the codes' spread with them.

Cost at ``cpu``: the training of ``glow`` and ``cv_glow`` on CIFAR-10 (shared through the
cache) plus 10 x 2 x 1000 likelihoods per model and as many encodings for ``cv_glow``
(minutes).
"""

from __future__ import annotations

import functools
import sys

import jax
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.data import transforms
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, code_stats, figures, pipeline
from ood_jax.experiments.kirichenko_couplings import check_flows
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug, split_list

DEFAULT_ALPHAS = "1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1"
NLL_BASE = {"k": 1}       # one dequantisation draw (--score-args nll.k=K for more)
N_SHOW = 4                # example images per set


def parse_alphas(text: str) -> list[float]:
  """``'1,0.5'`` -> ``[1.0, 0.5]``: each a ``gray:<a>`` factor in [0, 1], no repeats."""
  out = []
  for a in split_list(text):
    _, value = transforms.parse_transform(f"gray:{a}")
    if value in out:
      raise InvalidInputError(f"--alphas: {a!r} is given twice.")
    out.append(value)
  if not out:
    raise InvalidInputError("--alphas: give at least one factor in [0, 1], e.g. 1,0.5.")
  return out


def check(r: Run) -> None:
  parse_alphas(r.options["alphas"])
  codes = split_list(r.options["code_models"])
  missing = [m for m in codes if m not in r.models]
  if missing:
    raise InvalidInputError(f"--code-models {', '.join(missing)} not in --models "
                            f"{','.join(r.models)}; add them there (they are trained there).")
  check_flows(codes)
  if not r.oods:
    raise InvalidInputError("--ood: give at least one OOD set, e.g. celeb_a.")


# ----------------------------------------------------------------------------- figures


def _colour(i: int, n: int):
  return matplotlib.colormaps["viridis"](i / max(1, n - 1))


def draw_curve(path: str, rows: list[dict], alphas: list[float]) -> str:
  """Mean bits/dim against ``a`` (1 on the left, graying to the right), one line per model
  and set."""
  fig = Figure(figsize=(7.0, 4.5))
  ax = fig.add_subplot()
  lines = list(dict.fromkeys((r["model"], r["set"]) for r in rows))
  for i, (model, name) in enumerate(lines):
    pts = sorted(((r["alpha"], r["mean_bits_per_dim"]) for r in rows
                  if (r["model"], r["set"]) == (model, name)), reverse=True)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
            color=f"C{i % 10}", ls="-" if "(ID)" in name else "--", label=f"{model}: {name}")
  ax.set_xlim(max(alphas) + 0.03, min(alphas) - 0.03)
  ax.set_xlabel("graying factor a (x' = 128 + a (x - 128)); more gray to the right")
  ax.set_ylabel("mean bits/dim (lower = more likely)")
  ax.set_title("Graying the inputs (Nalisnick et al. Fig. 5b)", fontsize=10)
  ax.legend(fontsize="small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)
  return path


def draw_hist(path: str, bpd: dict[str, dict[float, np.ndarray]], model: str) -> str:
  """One panel per set: the bits/dim histogram at every ``a`` (colour: ``a``)."""
  fig = Figure(figsize=(6.0 * len(bpd), 4.2))
  for j, (name, by_a) in enumerate(bpd.items()):
    ax = fig.add_subplot(1, len(bpd), j + 1)
    allv = np.concatenate(list(by_a.values()))
    edges = np.histogram_bin_edges(allv, bins=60)
    for i, (a, v) in enumerate(by_a.items()):
      ax.hist(v, bins=edges, density=True, histtype="step", lw=1.3, color=_colour(i, len(by_a)),
              label=f"a = {a:g} (mean {v.mean():.3f})")
    ax.set_xlabel("bits/dim")
    ax.set_ylabel("density")
    ax.set_title(f"{model}: {name}", fontsize=10)
    ax.legend(fontsize="x-small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=110)
  return path


# ----------------------------------------------------------------------------- experiment


def _available_oods(r: Run) -> tuple[list[str], list[dict]]:
  keep, skipped = [], []
  for o in r.oods:
    why = availability.missing(pipeline.ood_spec(o, r.id), "test", r.data_dir)
    if why:
      skipped.append({"id": r.id, "ood": o, "reason": why})
    else:
      keep.append(o)
  return keep, skipped


def bpd_lines(rows: list[dict], alphas: list[float]) -> list[str]:
  keys = list(dict.fromkeys((r["model"], r["set"]) for r in rows))
  by = {(r["model"], r["set"], r["alpha"]): r["mean_bits_per_dim"] for r in rows}
  lines = ["## Mean bits/dim of the grayed sets", "",
           "x' = round(128 + a (x - 128)) on every pixel and channel (a = 1: unchanged). Paper "
           "(Fig. 5b, a curve only): graying 'improves the likelihood of both' (ID and OOD).", "",
           "| a | " + " | ".join(f"{m}: {s}" for m, s in keys) + " |",
           "|---:|" + "---:|" * len(keys)]
  for a in alphas:
    lines.append(f"| {a:g} | " + " | ".join(f"{by[(m, s, a)]:.3f}" for m, s in keys) + " |")
  return lines


def code_lines(rows: list[dict]) -> list[str]:
  if not rows:
    return []
  lines = ["## Codes of the grayed sets (Fig. 12)", "",
           "Standardised latents of encode_unit, D = H W C per image: mean over the D "
           "dimensions of mu_d and of sigma_d, mean over the images of |z_n| / sqrt(D). "
           "Paper (figures only): reducing the input variance shrinks the codes' spread.", "",
           "| model | set | a | N | mean mu_d | mean sigma_d | mean \\|z\\|/sqrt(D) |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['set']} | {r['alpha']:g} | {r['N']} | "
                 f"{r['mean_of_mu']:.4f} | {r['mean_of_sigma']:.4f} | {r['mean_of_norm']:.4f} |")
  return lines


def run(r: Run) -> Result:
  alphas = parse_alphas(r.options["alphas"])
  code_models = split_list(r.options["code_models"])
  oods, skipped = _available_oods(r)
  if not oods:
    raise InvalidInputError(f"--ood {','.join(r.oods)}: none of the OOD sets is here ("
                            + "; ".join(s["reason"] for s in skipped) + ").")
  by_model = pipeline.sets_for(r, oods=oods)                 # every model built and checked
  rows, code_rows, figs, info = [], [], {}, {}
  examples, titles = None, []
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    named = {f"{r.id} test (ID)": sets.test.x, **{o: s.x for o, s in sets.ood.items()}}
    if examples is None:            # rows: a; columns: the first images of each set
      shown = {label: x[:N_SHOW] for label, x in named.items()}
      examples = {f"a = {a:g}": np.concatenate([transforms.gray(x, a) for x in shown.values()])
                  for a in alphas}
      titles = [label for label, x in shown.items() for _ in range(len(x))]
    scorer = r.scorer("nll", name, trained.scores_ckpt_dir, base=NLL_BASE)
    state = scorer.fit(trained.model, trained.variables, sets.train.x)
    bpd = {label: {} for label in named}
    codes = {label: {} for label in named}
    with pipeline.Timer() as t:
      for a in alphas:
        for j, (label, x) in enumerate(named.items()):
          xg = transforms.gray(x, a)
          nll = np.asarray(scorer.score(state, xg), np.float64)
          b = pipeline.bits_per_dim(nll, sets.hwc)
          bpd[label][a] = b
          rows.append({"model": name, "set": label, "alpha": a, "n": int(b.size),
                       "mean_bits_per_dim": float(b.mean()), "std_bits_per_dim": float(b.std()),
                       "mean_log_p_nats": float(-nll.mean())})
          if name in code_models:
            key = jax.random.fold_in(jax.random.PRNGKey(r.seed), j)   # same draws at every a
            st = code_stats.stats_of(trained.model, trained.variables, xg, rng=key)
            codes[label][f"a = {a:g}"] = st
            code_rows.append({"model": name, "set": label, "alpha": a, **code_stats.summary(st)})
    figs[f"graying_hist_{slug(name)}.png"] = functools.partial(draw_hist, bpd=bpd, model=name)
    if name in code_models:
      figs[f"graying_codes_{slug(name)}.png"] = functools.partial(
          code_stats.figure, by_label={}, rows=codes, cmap="viridis",
          title=f"{name} trained on {r.id}: codes of grayed inputs (Fig. 12)")
    info[name] = {**trained.meta(), "analysis_seconds": round(t.seconds, 1),
                  "input_shape": list(sets.hwc)}
  figs["graying_curve.png"] = functools.partial(draw_curve, rows=rows, alphas=alphas)
  figs["graying_examples.png"] = functools.partial(
      figures.image_grid, rows=examples, col_titles=titles,
      title="grayed examples: x' = round(128 + a (x - 128))")
  lines = bpd_lines(rows, alphas)
  if skipped:
    lines += ["", "Not run here:", ""] + [f"* OOD {s['ood']}: {s['reason']}." for s in skipped]
  lines += [""] + code_lines(code_rows)
  first = by_model[r.models[0]]
  meta = {**r.settings_meta(), **pipeline.shapes_meta(by_model), "alphas": alphas,
          "code_models": code_models, "ood_run": oods, "skipped": skipped,
          "nll_base": NLL_BASE, "models_trained": info,
          "data_sources": pipeline.data_sources(first)}
  return Result(title=f"Nalisnick et al. Fig. 5b / Fig. 12: graying, {r.id} ({r.preset} preset)",
                meta=meta, results=rows, sections=["\n".join(lines)],
                json_files={"graying.json": {"bits_per_dim": rows, "codes": code_rows}},
                figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_graying", run, description=__doc__.split("\n\n")[0],
    defaults={"id": "cifar10", "ood": "svhn,celeb_a", "models": "glow,cv_glow", "scores": "nll"},
    omit=("--scores", "--k"),
    model_presets={"smoke": "smoke", "cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--alphas", default=DEFAULT_ALPHAS,
                        help=f"graying factors a in [0, 1] (default {DEFAULT_ALPHAS})"),
             cli.option("--code-models", default="cv_glow",
                        help="models of --models whose codes are analysed (default cv_glow; "
                             "'' for none)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
