"""Nalisnick et al. section 5 (Eqs. 4-6, App. G): CV-Glow's second-order likelihood gap.

    python -m ood_jax.experiments.nalisnick_second_order                  # cpu preset
    python -m ood_jax.experiments.nalisnick_second_order --preset smoke --out runs/n_so_smoke
    python -m ood_jax.experiments.nalisnick_second_order --pairs cifar10:celeb_a,fashion_mnist:mnist

For every ID set of ``--pairs`` (default CIFAR-10 -> CelebA and SVHN, FashionMNIST -> MNIST;
SVHN, the paper's pair, is not stored here and is listed as skipped) trains (or loads from the
checkpoint cache shared with the other experiments) CV-Glow at the run's model preset
(``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at ``paper``: additive couplings, highway
st-nets, no ActNorm, fixed ``N(0, I)`` prior; at ``smoke`` the smoke CV-Glow with its learned
prior turned off, ``learn_prior=False``, which the analysis needs) and compares, per OOD set
``q`` against the ID test split ``p`` (the same images for every number):

* **measured**: ``mean log p(x)`` of ``q`` minus that of ``p`` (nats per image, one uniform
  dequantisation draw per image, the ``nll`` score with k = 1);
* **Eq. 6 (diagonal)**: ``-1/2 sum alpha^2 (S_q - S_p)`` with ``alpha`` from the trained 1x1
  kernels (and ActNorm scales where present) of the linearised flow, one per input phase
  ``(h mod T, w mod T, c)``, ``T = 2^levels``, and ``S`` the per-pixel variances (pixels /
  256) summed over the pixels of each phase (``second_order.py`` derives this from the
  squeezes and splits; with one level and no squeeze it is the paper's per-channel formula);
* **linearised, full covariance**: ``-1/2 Tr{A^T A (Sigma_q - Sigma_p)}``, exact for the
  linearised flow (translations zeroed);
* **trained Hessian**: ``1/2 Tr{H(x0) (Sigma_q - Sigma_p)}`` of the *trained* CV-Glow (its
  couplings' curvature included) at ``x0`` = the ID mean image, by one Hessian-vector product
  per image on the first ``--n-hessian`` images of each set (exact for their sample
  covariances; ``+-`` one standard error as an estimate of the population value), beside
  the linearised flow's value on the same images (their difference is the couplings' share);
* **Eq. 4 in full** (beyond the paper): the trained Hessian term plus the first-order term
  ``grad log p(x0) . (mu_q - mu_p)`` and the mean-shift curvature ``1/2 d^T H d``,
  ``d = mu_q - mu_p``, which Eq. 5 drops by assuming equal means;
* **Eq. 12 as printed**: ``alpha_c = prod_k sum_j u_{k,c,j}`` on the first level's kernels
  (its ``4C`` squeezed channels; ActNorm and later levels ignored), for comparison;

with sign agreement and the ratio predicted / measured, the equal-means condition (the
fraction of ``q``'s per-dimension means inside the range of ``p``'s, the paper: "all of
SVHN's means fall within the empirical range of CIFAR-10's", and the largest per-dimension
difference, the paper: under 38 levels), whether every phase's variance sum of ``q`` is below
``p``'s (then Eq. 6 is positive for any parameters) and the smallest eigenvalue of
``G_p - G_q`` (>= 0: the full-covariance prediction is positive for any parameters). The
paper's SVHN / CIFAR-10 variance sums (49.6 / 61.9, 52.7 / 59.2, 53.6 / 68.1) stand beside
ours. Figure ``second_order_<id>.png``: the per-channel variance sums and the gaps.

Cost at ``cpu`` (2 cores): training as the other CV-Glow experiments (0.3 epoch of the ID
training split; nothing once cached); the analysis about two Hessian-vector products per
image of ``--n-hessian`` (1000 per set) on top of scoring.
"""

from __future__ import annotations

import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, pipeline
from ood_jax.experiments.kirichenko_couplings import run_slug, skipped_lines
from ood_jax.experiments.kirichenko_table1 import NLL_BASE, plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run
from ood_jax.models.flows import second_order as so

MODEL = "cv_glow"
FIXED_PRIOR = {"learn_prior": False}
DEFAULT_PAIRS = "cifar10:celeb_a+svhn,fashion_mnist:mnist"
SIGMA2 = 1.0          # the N(0, I) prior's variance, sigma_psi^2
# Eq. 6: per-channel variance sums (pixels / 256) of SVHN (q) and CIFAR-10 (p).
PAPER_SUMS = {"svhn": (49.6, 52.7, 53.6), "cifar10": (61.9, 59.2, 68.1)}
PAPER_EQ6 = ("E_SVHN[log p] - E_CIFAR-10[log p] ~ 1/(2 sigma^2) [alpha_1^2 12.3 + "
             "alpha_2^2 6.5 + alpha_3^2 14.5] >= 0 (Eq. 6); measured: SVHN higher (Fig. 4c)")
PREDICTIONS = (("diag", "Eq. 6 diagonal"), ("linear_full", "linearised, full cov."),
               ("hessian", "trained Hessian"), ("eq4_full", "Eq. 4 in full"),
               ("paper_literal", "Eq. 12 as printed"))


def _overrides(r: Run) -> dict:
  """``learn_prior=False`` unless ``--model-args`` sets it (then that value, and the check)."""
  return {} if "learn_prior" in r.model_args.get(MODEL, {}) else dict(FIXED_PRIOR)


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()
  if int(r.options["n_hessian"]) < 0 or int(r.options["n_hessian"]) == 1:
    raise InvalidInputError(f"--n-hessian must be 0 (skip) or >= 2 (a sample covariance), got "
                            f"{r.options['n_hessian']}.")
  if int(r.options["hessian_batch"]) < 1:
    raise InvalidInputError(f"--hessian-batch must be >= 1, got {r.options['hessian_batch']}.")
  for hwc in ((32, 32, 3), (32, 32, 1)):          # the colour and grey settings of the preset
    so.check_linearisable(r.make_model(MODEL, hwc, **_overrides(r)))


# ----------------------------------------------------------------------------- numbers


def _ratio(pred, measured):
  return None if pred is None or measured == 0 else pred / measured


def _sign(pred, measured):
  return None if pred is None else bool(np.sign(pred) == np.sign(measured))


def _pixels_mean(x: np.ndarray) -> np.ndarray:
  """The mean image at the bin centres, ``(x + 0.5) / 256`` (the dequantised pixels' mean)."""
  return (x.astype(np.float64).mean(axis=0) + 0.5) / so.PIXEL_SCALE


def _deviations(x: np.ndarray) -> np.ndarray:
  y = x.astype(np.float64) / so.PIXEL_SCALE
  return y - y.mean(axis=0, keepdims=True)


def paper_literal(flow_maps, s_p2: np.ndarray, s_q2: np.ndarray) -> tuple[np.ndarray, float]:
  """Eq. 12 as printed on the first level's kernels (``4C`` squeezed channels, channel
  ``(2 di + dj) C + c`` = phase ``(di, dj, c)`` of ``variance_sums(x, 2)``) and its Eq. 6."""
  a = so.paper_alphas([w for _, w in flow_maps[0]])
  return a, so.predicted_gap(a, s_q2.reshape(-1), s_p2.reshape(-1), SIGMA2)


def analyse(model, variables, x_p: np.ndarray, oods: dict, ll_p: np.ndarray, ll_q: dict,
            n_hessian: int, batch: int) -> tuple[dict, list[dict]]:
  """``(per ID set, [per OOD set])`` numbers of the module docstring; ``ll_*`` the
  per-image log-likelihoods (nats) of ``x_p`` and of each OOD set."""
  flow = so.linear_flow(model, variables)
  t, c = flow.period, x_p.shape[-1]
  alpha = so.flow_alphas(flow)
  maps = so.step_maps(model, variables)
  s_p1, s_pt, s_p2 = (so.variance_sums(x_p, k) for k in (1, t, 2))
  g_p = so.phase_covariance(x_p, t)
  log_p = so.log_density_fn(model, variables)
  x0 = _pixels_mean(x_p)
  grad = so.gradient(log_p, x0)
  dev_p = _deviations(x_p[:n_hessian]) if n_hessian else None
  batch = max(1, min(batch, n_hessian + 1))              # one compiled batch shape
  if dev_p is not None:
    forms_p = so.hessian_quadratic_forms(log_p, x0, dev_p, batch)
    lin_p = so.linear_quadratic_forms(flow, dev_p, SIGMA2)
  a2 = (alpha ** 2).reshape(t * t, c)
  per_id = {"period": t, "alpha": alpha.tolist(), "alpha2_mean": a2.mean(0).tolist(),
            "alpha2_min": a2.min(0).tolist(), "alpha2_max": a2.max(0).tolist(),
            "var_sums": s_p1.reshape(-1).tolist(), "var_sums_phase": s_pt.tolist(),
            "x0": "ID test mean image (bin centres)", "n_hessian": len(dev_p) if n_hessian else 0,
            "mean_loglik": float(ll_p.mean())}
  rows = []
  for name, x_q in oods.items():
    s_q1, s_qt, s_q2 = (so.variance_sums(x_q, k) for k in (1, t, 2))
    g_q = so.phase_covariance(x_q, t)
    measured = float(ll_q[name].mean() - ll_p.mean())
    pred = {"diag": so.predicted_gap(alpha, s_qt, s_pt, SIGMA2),
            "linear_full": so.linear_trace_gap(so.block_jacobian(flow), g_q, g_p, SIGMA2)}
    lit_alpha, pred["paper_literal"] = paper_literal(maps, s_p2, s_q2)
    row = {"id": None, "ood": name, "n_id": int(len(x_p)), "n_ood": int(len(x_q)),
           "measured": measured, "var_sums_id": s_p1.reshape(-1).tolist(),
           "var_sums_ood": s_q1.reshape(-1).tolist(),
           "var_sums_phase_ood": s_qt.tolist(),
           "contrib_diag_per_channel": (-0.5 / SIGMA2 * (a2 * (s_qt - s_pt).reshape(t * t, c))
                                        .sum(0)).tolist(),
           "paper_literal_alpha_level1": lit_alpha.tolist(),
           "all_phases_smaller": bool(np.all(s_qt <= s_pt)),
           "min_eig_gp_minus_gq": float(np.linalg.eigvalsh(g_p - g_q).min()),
           **{f"means_{k}": v for k, v in so.means_condition(x_q, x_p).items()}}
    mu_d = _pixels_mean(x_q) - x0
    row["first_order"] = float(np.sum(grad * mu_d))
    pred["hessian"] = pred["eq4_full"] = None
    if n_hessian:
      dev_q = _deviations(x_q[:max(2, min(n_hessian, len(x_q)))])
      forms = so.hessian_quadratic_forms(log_p, x0, np.concatenate([dev_q, mu_d[None]]), batch)
      forms_q, shift = forms[:-1], forms[-1]          # the mean shift rides in the same batch
      lin_q = so.linear_quadratic_forms(flow, dev_q, SIGMA2)
      se = np.sqrt(forms_q.var(ddof=1) / len(forms_q) + forms_p.var(ddof=1) / len(forms_p))
      pred["hessian"] = 0.5 * float(forms_q.mean() - forms_p.mean())
      row["hessian_se"] = 0.5 * float(se)
      row["linear_same_images"] = 0.5 * float(lin_q.mean() - lin_p.mean())
      row["n_hessian_id"], row["n_hessian_ood"] = len(forms_p), len(forms_q)
      row["mean_shift_curvature"] = 0.5 * float(shift)
      pred["eq4_full"] = pred["hessian"] + row["first_order"] + row["mean_shift_curvature"]
    for key, _ in PREDICTIONS:
      row[f"pred_{key}"] = pred[key]
      row[f"sign_{key}"] = _sign(pred[key], measured)
      row[f"ratio_{key}"] = _ratio(pred[key], measured)
    rows.append(row)
  return per_id, rows


# ----------------------------------------------------------------------------- report


def _f(v, fmt=".2f") -> str:
  return "–" if v is None else format(v, fmt)


def _yes(v) -> str:
  return "–" if v is None else ("yes" if v else "no")


def variance_table(id_name: str, per_id: dict, rows: list[dict]) -> list[str]:
  """Per-channel variance sums (ID, each OOD; CIFAR-10: the paper's CIFAR-10 and SVHN)."""
  c = len(per_id["var_sums"])
  paper = canonical_name(id_name) == "cifar10" and c == 3
  head = ["channel", f"{id_name} (ID)"] + [r["ood"] for r in rows]
  head += ["paper CIFAR-10", "paper SVHN"] if paper else []
  head += ["mean alpha^2", "alpha^2 range"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
  for ch in range(c):
    cells = [str(ch), _f(per_id["var_sums"][ch])] + [_f(r["var_sums_ood"][ch]) for r in rows]
    if paper:
      cells += [_f(PAPER_SUMS["cifar10"][ch], ".1f"), _f(PAPER_SUMS["svhn"][ch], ".1f")]
    cells += [_f(per_id["alpha2_mean"][ch], ".3g"),
              f"{per_id['alpha2_min'][ch]:.3g} – {per_id['alpha2_max'][ch]:.3g}"]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def gap_table(rows: list[dict]) -> list[str]:
  lines = ["| ID -> OOD | measured | " + " | ".join(label for _, label in PREDICTIONS) + " |",
           "|---|---:|" + "---:|" * len(PREDICTIONS)]
  for r in rows:
    cells = []
    for key, _ in PREDICTIONS:
      v = r[f"pred_{key}"]
      if v is None:
        cells.append("–")
        continue
      pm = f" ± {r['hessian_se']:.2f}" if key == "hessian" else ""
      cells.append(f"{v:.2f}{pm} ({_yes(r[f'sign_{key}'])}, {_f(r[f'ratio_{key}'], '.3g')})")
    lines.append(f"| {r['id']} -> {r['ood']} | {r['measured']:.2f} | " + " | ".join(cells) + " |")
  return lines


def condition_table(rows: list[dict]) -> list[str]:
  lines = ["| ID -> OOD | OOD means in ID range | max abs mean diff (levels) | all phases "
           "S_q <= S_p | min eig(G_p - G_q) | first-order term | mean-shift curvature | "
           "linearised, Hessian images | Hessian images (ID / OOD) |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['id']} -> {r['ood']} | {100 * r['means_frac_within']:.1f} % | "
        f"{r['means_max_abs_diff_levels']:.1f} | {_yes(r['all_phases_smaller'])} | "
        f"{r['min_eig_gp_minus_gq']:.3g} | {r['first_order']:.2f} | "
        f"{_f(r.get('mean_shift_curvature'))} | {_f(r.get('linear_same_images'))} | "
        f"{r.get('n_hessian_id', 0)} / {r.get('n_hessian_ood', 0)} |")
  return lines


def draw(path: str, id_name: str, per_id: dict, rows: list[dict]) -> None:
  """Left: per-channel variance sums (ID, OOD; paper's for CIFAR-10). Right: the gaps."""
  fig = Figure(figsize=(11.0, 4.2))
  ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  c = len(per_id["var_sums"])
  series = {f"{id_name} (ID)": per_id["var_sums"], **{r["ood"]: r["var_sums_ood"] for r in rows}}
  if canonical_name(id_name) == "cifar10" and c == 3:
    series.update({"paper CIFAR-10": PAPER_SUMS["cifar10"], "paper SVHN": PAPER_SUMS["svhn"]})
  width = 0.8 / len(series)
  for i, (label, v) in enumerate(series.items()):
    ax.bar(np.arange(c) + i * width, v, width, label=label)
  ax.set_xticks(np.arange(c) + 0.4 - width / 2, [f"channel {k}" for k in range(c)])
  ax.set_ylabel("sum over pixels of Var[x / 256]")
  ax.set_title("per-channel variance sums")
  ax.legend(fontsize="small")
  keys = [("measured", "measured")] + [(f"pred_{k}", label) for k, label in PREDICTIONS[:4]]
  width = 0.8 / len(keys)
  for i, (key, label) in enumerate(keys):
    vals = [np.nan if r.get(key) is None else r[key] for r in rows]
    bx.bar(np.arange(len(rows)) + i * width, vals, width, label=label)
  bx.axhline(0.0, color="k", lw=0.8)
  bx.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, [r["ood"] for r in rows])
  bx.set_ylabel("E_q[log p] - E_p[log p] (nats per image)")
  bx.set_title(f"likelihood gap, OOD minus {id_name}")
  bx.legend(fontsize="small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=110)


def _drawer(id_name, per_id, rows):
  return lambda path: draw(path, id_name, per_id, rows)


# ----------------------------------------------------------------------------- experiment


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  n_hessian, batch = int(r.options["n_hessian"]), int(r.options["hessian_batch"])
  runs = [r.for_id(i, o) for i, o in runnable]
  plans = [(ri, pipeline.sets_for(ri)[MODEL]) for ri in runs]     # every model built first
  results, per_ids, figs, info, sections = [], {}, {}, {}, []
  for ri, sets in plans:
    trained = pipeline.train_or_load(ri, MODEL, sets, overrides=_overrides(r))
    with pipeline.Timer() as t:
      nll = pipeline.score_all(ri, trained, sets, scores=["nll"], base=NLL_BASE)["nll"]
      per_id, rows = analyse(trained.model, trained.variables, sets.test.x,
                             {n: s.x for n, s in sets.ood.items()}, -nll["__id__"],
                             {n: -nll[n] for n in sets.ood}, min(n_hessian, len(sets.test.x)),
                             batch)
    for row in rows:
      row["id"] = ri.id
    results += rows
    per_ids[ri.id] = per_id
    figs[f"second_order_{run_slug(ri.id)}.png"] = _drawer(ri.id, per_id, rows)
    info[ri.id] = {**trained.meta(), "analysis_seconds": round(t.seconds, 1),
                   "levels": int(trained.model.levels), "steps": int(trained.model.steps),
                   "actnorm": bool(getattr(trained.model, "actnorm", True)),
                   "lu": bool(trained.model.lu), "st_net": trained.model.st_net}
    sections.append("\n".join(
        [f"## {ri.id}: per-channel variance sums and alpha", "",
         f"Sum over pixels of Var[x / 256] per channel (n = {len(sets.test.x)} ID test images "
         f"and each OOD set's); alpha^2 over the {per_id['period'] ** 2} phases (h mod "
         f"{per_id['period']}, w mod {per_id['period']}) of each channel (linearised flow: "
         "squared column norms of the kernel product).", ""]
        + variance_table(ri.id, per_id, rows)))
  lines = ["## Predicted and measured likelihood gaps", "",
           "E_q[log p] - E_p[log p] in nats per image (OOD q minus ID test p; > 0: the OOD "
           "set is more likely). Each prediction: value (sign agrees with the measured gap?, "
           "ratio predicted / measured). The trained Hessian's ± is one standard error.", ""]
  lines += gap_table(results)
  lines += ["", "## Conditions", "",
            "Eq. 5's equal means (paper: all of SVHN's per-dimension means inside CIFAR-10's "
            "range, largest difference under 38 levels); whether the prediction is positive "
            "for any parameters (every phase's OOD variance sum below the ID's: Eq. 6; "
            "G_p - G_q positive semi-definite: full covariance); Eq. 4's terms Eq. 5 drops "
            "(first order at x0 = ID mean, and 1/2 d^T H d for the mean shift d); the "
            "linearised flow on the Hessian's images (its difference from the trained Hessian "
            "column above is the couplings' share).", ""]
  lines += condition_table(results)
  lines += ["", "Paper (SVHN vs CIFAR-10, CV-Glow): variance sums " + ", ".join(
      f"{q} / {p}" for q, p in zip(PAPER_SUMS["svhn"], PAPER_SUMS["cifar10"]))
      + " (SVHN / CIFAR-10, per channel); " + PAPER_EQ6 + "."]
  lines += skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "n_hessian": n_hessian, "sigma_psi2": SIGMA2,
          "model_overrides": _overrides(r), "nll_k": NLL_BASE["k"]}
  return Result(title=f"Nalisnick et al. section 5: second-order analysis of CV-Glow "
                      f"({r.preset} preset)", meta=meta, results=results,
                sections=["\n".join(lines)] + sections,
                json_files={"second_order.json": per_ids}, figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_second_order", run, description=__doc__.split("\n\n")[0],
    defaults={"models": MODEL, "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--models", "--k"),
    model_presets={"smoke": "smoke", "cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--n-hessian", type=int, default=1000,
                        help="images per set for the trained model's Hessian trace (one "
                             "Hessian-vector product each; 0: skip; default 1000)"),
             cli.option("--hessian-batch", type=int, default=32,
                        help="Hessian-vector products per batch (default 32)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
