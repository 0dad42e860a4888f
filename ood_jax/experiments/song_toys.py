"""Song et al. §3 (Fig. 1 right) and §4.2.1 / App. D (Fig. 2): the two toy examples.

    python -m ood_jax.experiments.song_toys                     # cpu preset (2^20 draws, seconds)
    python -m ood_jax.experiments.song_toys --preset smoke --out runs/song_toys_smoke

(i) **Mis-specification, 1-D (§3).** ``p = 1/2 N(-1, 0.01) + 1/2 N(1, 0.01)`` (0.01 a
variance: the paper writes its model ``N(mu, sigma^2)``), the model ``N(mu, sigma^2)`` fitted
by maximum likelihood: "(mu*, sigma*) ~ (0.0, 1.0)"; x = 0 gets the model's highest density,
where ``p`` has almost none. Reported: the closed-form fit (``mu* = 0``, ``sigma* =
sqrt(1.01)``), the fit on ``--n-samples`` seeded draws, the model's expected log-likelihood
of ``p`` and of ``q``, the log densities at 0 and ``KL(p || p_theta)`` (quadrature) beside
``KL(q || p_theta)``. Figure ``fig1_right.png``: p, q and the fitted model.

(ii) **BatchNorm coupling, 2-D (App. D, Eqs. 12-19).** The flow ``z1 = x1``, ``z2 = x2 +
(x1 - E(x1)) / sqrt(V(x1)) * gamma + beta`` with the paper's ``gamma = 1, beta = 0``, prior
``N(0, I)``, unit Jacobian; ``p(x1)`` the two-point limit at -1, 1 (sigma -> 0), ``p(x2) =
delta_0``; ``q(x1) = U(-0.5, 0.5)``. ``E_p log p_f`` (paper -2.84), ``E_q log p_f`` in eval
mode (statistics of p: mean 0, variance 1; paper -1.92) and in train mode (statistics of
the batch; paper -2.38), exactly (infinite batches) and by Monte Carlo (``--n-samples``
points, train-mode batches of ``--batch``). Figure ``fig2.png``: x1 under p and q, and z2
under both BatchNorm modes.

Where the paper is silent or inconsistent (our choices):

* ``q`` of the 1-D example: the text names none; ours is ``N(0, --q-var)`` (default 0.01),
  mass at the model's mode. Its model likelihood is higher than ``p``'s although ``p(0) ~
  e^-49``; its KL to the model is *not* lower than ``p``'s (that needs a broader q).
* ``gamma``: App. D's coupling has a unit Jacobian, so its maximum-likelihood ``(gamma,
  beta)`` is ``(0, 0)`` (z2 = x2, BatchNorm has no effect: q's eval and train values
  coincide at -1.88); the paper's ``gamma = 1`` comes from footnote 4's ``argmax_s -s^2/2 +
  log s``, whose ``log s`` term the model as written has no source for. We reproduce the
  paper's numbers with ``gamma = 1`` and print the ``gamma = 0`` values beside them.
* BatchNorm without epsilon, biased batch variance (BatchNorm's); eval-mode statistics are
  ``p``'s exact moments (App. D), not a running average.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli
from ood_jax.experiments import song_toy_math as tm
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

# The paper's printed values (§3, §4.2.1 and App. D).
PAPER_1D = {"mu": 0.0, "sigma": 1.0}
PAPER_2D = {"p_eval": -2.84, "q_eval": -1.92, "q_train": -2.38}
PAPER_GAMMA, PAPER_BETA = 1.0, 0.0


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One preset: Monte-Carlo draws per distribution and the train-mode batch size."""
  n_samples: int
  batch: int


RECIPES = {"smoke": Recipe(2 ** 14, 1024), "cpu": Recipe(2 ** 20, 1024),
           "paper": Recipe(2 ** 22, 4096)}      # paper: "batch sizes are infinite"


def resolved(r: Run) -> dict:
  """``{'n_samples', 'batch', 'q_var'}``: the preset's with the options applied; raises
  ``InvalidInputError`` for bad values."""
  rec, o = RECIPES[r.preset], r.options
  n = rec.n_samples if o["n_samples"] is None else o["n_samples"]
  b = rec.batch if o["batch"] is None else o["batch"]
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise InvalidInputError(f"--n-samples must be an integer >= 2, got {n!r}.")
  if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= n:
    raise InvalidInputError(f"--batch must be an integer in [2, --n-samples = {n}], got {b!r}.")
  q_var = o["q_var"]
  if not (math.isfinite(q_var) and q_var > 0):
    raise InvalidInputError(f"--q-var must be a finite number > 0, got {q_var!r}.")
  return {"n_samples": n, "batch": b, "q_var": float(q_var)}


def check(r: Run) -> None:
  resolved(r)


# ----------------------------------------------------------------------------- numbers


def one_d(n: int, q_var: float, seed: int) -> tuple[list[dict], dict]:
  """Rows of the 1-D example (closed form, Monte Carlo on ``n`` draws) and the fit."""
  cf = tm.one_d_closed_form(tm.VAR_1D, q_var)
  x = tm.sample_mixture(n, tm.VAR_1D, seed)
  mu, sigma = tm.ml_gaussian(x)
  xq = math.sqrt(q_var) * np.random.default_rng([seed, 3]).standard_normal(n)
  mc_lp = lambda v: float(np.mean(tm.gauss_log_pdf(v, mu, sigma ** 2)))
  rows = [
      ("mu*", PAPER_1D["mu"], cf["mu"], mu),
      ("sigma*", PAPER_1D["sigma"], cf["sigma"], sigma),
      ("E_p log p_theta(x)", None, cf["E_p_log_model"], mc_lp(x)),
      (f"E_q log p_theta(x), q = N(0, {q_var:g})", None, cf["E_q_log_model"], mc_lp(xq)),
      ("log p_theta(0) (the model's mode)", None, cf["log_model_at_0"], None),
      ("log p_theta(1) (a mode of p)", None, cf["log_model_at_mode"], None),
      ("log p(0)", None, cf["log_p_at_0"], None),
      ("KL(p ‖ p_theta)", None, tm.kl_mixture_model(tm.VAR_1D), None),
      (f"KL(q ‖ p_theta), q = N(0, {q_var:g})", None, cf["kl_q_model"], None),
  ]
  return [_row("1d mis-specification", *t, decimals=1) for t in rows], {"mu": mu, "sigma": sigma}


def two_d(n: int, batch: int, seed: int) -> list[dict]:
  """Rows of App. D: the paper's gamma = 1 (closed form and Monte Carlo) and gamma = 0."""
  cf = tm.two_d_closed_form(PAPER_GAMMA, PAPER_BETA)
  mc = tm.two_d_monte_carlo(n, batch, PAPER_GAMMA, PAPER_BETA, 0.0, seed)
  ml = tm.two_d_closed_form(0.0, 0.0)
  names = {"p_eval": "E_p log p_f, eval mode", "p_train": "E_p log p_f, train mode",
           "q_eval": "E_q log p_f, eval mode", "q_train": "E_q log p_f, train mode"}
  rows = [_row("2d BatchNorm coupling, gamma = 1 (paper)", names[k], PAPER_2D.get(k), cf[k],
               mc[k], decimals=2) for k in names]
  rows += [_row("2d BatchNorm coupling, gamma = 0 (ML of App. D's model)", names[k], None,
                ml[k], None, decimals=2) for k in names]
  return rows


def _row(example, quantity, paper, closed, mc, decimals) -> dict:
  """One result row; ``matches_paper``: the closed form rounded as the paper prints it."""
  match = None if paper is None else round(closed, decimals) == round(paper, decimals)
  return {"example": example, "quantity": quantity, "paper": paper, "closed_form": closed,
          "monte_carlo": mc, "matches_paper": match, "paper_decimals": decimals}


# ----------------------------------------------------------------------------- figures


def draw_fig1(path: str, mu: float, sigma: float, q_var: float) -> None:
  """Fig. 1 (right): p, q and the fitted model, densities and log densities."""
  x = np.linspace(-3.0, 3.0, 2001)
  curves = {"p (mixture, ID)": tm.mixture_log_pdf(x, tm.VAR_1D),
            f"q = N(0, {q_var:g}) (OOD)": tm.gauss_log_pdf(x, 0.0, q_var),
            f"p_theta = N({mu:.2f}, {sigma:.3f}^2) (ML fit)": tm.gauss_log_pdf(x, mu, sigma ** 2)}
  fig = Figure(figsize=(10, 3.8))
  for j, (log, ylabel) in enumerate(((False, "density"), (True, "log density"))):
    ax = fig.add_subplot(1, 2, j + 1)
    for i, (label, lp) in enumerate(curves.items()):
      ax.plot(x, lp if log else np.exp(lp), color=f"C{i}", label=label)
    ax.axvline(0.0, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("x")
    ax.set_ylabel(ylabel)
    if log:
      ax.set_ylim(-12, 2)
    ax.legend(fontsize="x-small")
  fig.suptitle("Song et al. Fig. 1 (right): the mis-specified ML fit puts its mode at x = 0")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)


def draw_fig2(path: str, n: int, batch: int, seed: int) -> None:
  """Fig. 2: x1 under p and q; z2 of q in eval and train mode (and of p) against the prior."""
  import jax.numpy as jnp
  n = min(n, 2 ** 16)
  b = min(batch, n)
  xp, xq = tm.sample_p2(n, 0.0, seed), tm.sample_q2(n, seed)
  run = tm.P_MOMENTS(0.0)
  z2 = lambda x, train: np.concatenate([
      np.asarray(tm.coupling_batch(jnp.asarray(x[i:i + b]), PAPER_GAMMA, PAPER_BETA, train,
                                   run))[:, 1] for i in range(0, len(x) - b + 1, b)])
  fig = Figure(figsize=(10, 3.8))
  ax = fig.add_subplot(1, 2, 1)
  edges = np.linspace(-1.5, 1.5, 121)
  ax.hist(xp[:, 0], bins=edges, density=True, alpha=0.5, label="p(x1): points -1, 1 (clipped)")
  ax.hist(xq[:, 0], bins=edges, density=True, alpha=0.5, label="q(x1) = U(-0.5, 0.5)")
  ax.set_ylim(0.0, 1.6)
  ax.set_xlabel("x1")
  ax.set_ylabel("density")
  ax.legend(fontsize="x-small")
  ax = fig.add_subplot(1, 2, 2)
  edges = np.linspace(-2.5, 2.5, 101)
  for label, v in (("p, eval (= train; clipped)", z2(xp, False)), ("q, eval mode", z2(xq, False)),
                   ("q, train mode", z2(xq, True))):
    ax.hist(v, bins=edges, density=True, histtype="step", lw=1.3, label=label)
  t = np.linspace(-2.5, 2.5, 501)
  ax.plot(t, np.exp(-0.5 * t ** 2) / math.sqrt(2 * math.pi), "k:", label="prior N(0, 1)")
  ax.set_ylim(0.0, 1.6)
  ax.set_xlabel("z2")
  ax.set_ylabel("density")
  ax.legend(fontsize="x-small")
  fig.suptitle("Song et al. Fig. 2 / App. D: train-mode BatchNorm spreads q's z2 (gamma = 1)")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)


# ----------------------------------------------------------------------------- report


def _f(v, d: int = 4) -> str:
  if v is None:
    return "–"
  if isinstance(v, bool):
    return "yes" if v else "NO"
  return f"{v:.{d}f}"


def markdown(rows: list[dict], cfg: dict) -> str:
  lines = ["## The toy examples, ours beside the paper's", "",
           f"Nats. Monte Carlo: {cfg['n_samples']} seeded draws per distribution; train mode "
           f"in batches of {cfg['batch']} (closed form: infinite batches). `matches`: our "
           "closed form rounded as the paper prints it equals the paper's value.", ""]
  example = None
  for x in rows:
    if x["example"] != example:
      example = x["example"]
      lines += ["", f"### {example}", "", "| quantity | paper | closed form | Monte Carlo | matches |",
                "|---|---:|---:|---:|---|"]
    paper = "–" if x["paper"] is None else f"{x['paper']:.{x['paper_decimals']}f}"
    lines.append(f"| {x['quantity']} | {paper} | {_f(x['closed_form'])} | "
                 f"{_f(x['monte_carlo'])} | {_f(x['matches_paper'])} |")
  lines += ["", "Figures: `fig1_right.png` (p, q and the fitted model), `fig2.png` (x1 and z2 "
            "under both BatchNorm modes).", "",
            "Note: App. D's coupling has a unit Jacobian, so maximum likelihood would set "
            "gamma = beta = 0 (z2 = x2: BatchNorm then changes nothing, last table); the "
            "paper's gamma = 1 is its footnote 4's argmax of -s^2/2 + log s, whose log s the "
            "model as written lacks. Train mode leaves p unchanged (-2.84) and lowers q's "
            "log-likelihood from -1.92 to -2.38 only with gamma = 1."]
  return "\n".join(lines)


def run(r: Run) -> Result:
  cfg = resolved(r)
  rows1, fit = one_d(cfg["n_samples"], cfg["q_var"], r.seed)
  rows = rows1 + two_d(cfg["n_samples"], cfg["batch"], r.seed)
  bad = [x for x in rows if x["matches_paper"] is False]
  figures = {"fig1_right.png": functools.partial(draw_fig1, mu=fit["mu"], sigma=fit["sigma"],
                                                 q_var=cfg["q_var"]),
             "fig2.png": functools.partial(draw_fig2, n=cfg["n_samples"], batch=cfg["batch"],
                                           seed=r.seed)}
  meta = {"experiment": r.experiment, "preset": r.preset, "seed": r.seed, **cfg,
          "var_1d": tm.VAR_1D, "gamma": PAPER_GAMMA, "beta": PAPER_BETA, "units": "nats",
          "paper": {"1d": PAPER_1D, "2d": PAPER_2D},
          "all_match_paper": not bad}
  return Result(title=f"Song et al. §3 and App. D: the toy examples ({r.preset} preset)",
                meta=meta, results=rows, sections=[markdown(rows, cfg)], figures=figures)


EXPERIMENT = cli.Experiment(
    "song_toys", run, description=__doc__.split("\n\n")[0],
    defaults={"id": "toys", "models": "", "scores": ""},
    omit=("--id", "--ood", "--models", "--scores", "--model-preset", "--model-args",
          "--score-args", "--train-args", "--train-steps", "--k", "--n-eval", "--weights",
          "--download"),
    options=(
        cli.option("--n-samples", type=int, default=None,
                   help="Monte-Carlo draws per distribution (default: smoke 2^14, cpu 2^20, "
                        "paper 2^22)"),
        cli.option("--batch", type=int, default=None,
                   help="train-mode batch size of the 2-D example (default 1024; paper 4096)"),
        cli.option("--q-var", type=float, default=tm.VAR_1D,
                   help="variance of the 1-D OOD distribution q = N(0, v) (default 0.01)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
