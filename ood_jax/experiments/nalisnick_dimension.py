"""Nalisnick et al. App. C-D (Eqs. 7-9, Fig. 7): the change-of-variables terms against dimension.

    python -m ood_jax.experiments.nalisnick_dimension                 # cpu preset
    python -m ood_jax.experiments.nalisnick_dimension --preset smoke --out runs/n_dim_smoke
    python -m ood_jax.experiments.nalisnick_dimension --dims 2,10,20,50,100 --scale-fns exp,sigmoid

Two moons (``sklearn.datasets.make_moons``, fixed seeds) "replicated [in] the original two
dimensions to create data sets of dimensionality of up to 100": ``x = (x1, x2, x1, x2, ...)``
(``replicate``; the first ``D`` columns of the tiled pair, so odd ``D`` ends with an ``x1``).
For every scale parametrisation of ``--scale-fns`` and every ``D`` of ``--dims`` a RealNVP on
vectors (``VectorRealNVP``: affine couplings on alternating half masks, standard-normal
prior) is trained by maximum likelihood (``train.loop``: checkpointed, resumable). Reported
on the training points and on held-out moons (another seed): the mean of the two terms of
``log p(x) = log p(z) + log|det dz/dx|`` (nats per vector), against the bounds of Eqs. 7-9:
``log p(z) <= -D/2 log 2 pi`` (the mode of N(0, I)), ``log|det| <= D log L`` (Eq. 7/8, ``L``
the Lipschitz constant, estimated as the largest spectral norm of the Jacobian over the
held-out points; ``exp`` scales) and ``log|det| <= 0`` (Eq. 9, ``sigmoid`` scales).

Scales: ``exp`` is ``scale = exp(w tanh(raw))`` (RealNVP's), ``sigmoid`` is ``scale =
sigmoid(raw)`` (Glow's code; every coupling's log-det is <= 0). Expected (paper, Fig. 7,
figures only): with ``exp`` the two terms diverge as ``D`` grows (``log p(z)`` down, the
log-det up); with ``sigmoid`` "both change-of-variable terms are oriented downward".

Where the paper is silent (our choices): the moons' noise (0.05), the number of points, the
flow's size (couplings, st-net width), the optimiser and the training length (see
``RECIPES``), the exact set of ``D`` between 2 and 100, and the estimate of ``L``.
The data are exact copies, so in ``D > 2`` they lie on a 2-D manifold: the density is
singular and the likelihood (with ``exp`` scales, the log-det) keeps growing with training;
the values are those after the preset's training budget, as the paper's are after its own.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.datasets import make_moons

from ood_jax.data import batches
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import cli, pipeline, settings
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug, split_list
from ood_jax.models.flows.vector_realnvp import SCALE_FNS, VectorRealNVP
from ood_jax.registry import check_settings
from ood_jax.train import TrainConfig, train
from ood_jax.train.config import NOT_WEIGHT_FIELDS

DATA_NAME = "two_moons"
CHUNK = 1000            # vectors per compiled evaluation call
JAC_CHUNK = 128         # vectors per compiled Jacobian call
LOG_2PI = math.log(2 * math.pi)
EXPECTED = {
    "exp": "the two terms diverge as D grows: log p(z) falls, the log-det rises (Fig. 7(b))",
    "sigmoid": "both change-of-variable terms are oriented downward as D grows (Fig. 7(c))",
}
_ADAM = dict(optimizer="adam", learning_rate=1e-3, halve_every_epochs=None, clip_grad_norm=100.0)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One preset: the ``D``s, the data sizes, the moons' noise, ``VectorRealNVP`` settings
  (``dim`` and ``scale_fn`` are the sweep's) and the flow's ``TrainConfig`` (seed: the run's)."""
  dims: tuple[int, ...]
  n_train: int
  n_test: int
  noise: float
  flow: dict
  train: TrainConfig
  jacobian_points: int


RECIPES = {
    # Tiny flows, a few steps: the pipeline end to end in seconds.
    "smoke": Recipe(
        (2, 4), 256, 128, 0.05, dict(num_couplings=2, hidden=16, hidden_layers=0),
        TrainConfig(batch_size=64, num_steps=30, log_every=10, checkpoint_every=100, **_ADAM),
        jacobian_points=32),
    # 2-core CPU, about 10-15 min: 5 D x 2 scale functions = 10 flows of 8 couplings, st-nets
    # of 1 hidden layer x 64 units, 3000 Adam steps of batch 256 each (D = 100: ~22 ms per
    # step on 2 shared cores, ~5 s to compile).
    "cpu": Recipe(
        (2, 10, 20, 50, 100), 4000, 1000, 0.05, dict(num_couplings=8, hidden=64, hidden_layers=1),
        TrainConfig(batch_size=256, num_steps=3000, log_every=100, checkpoint_every=500, **_ADAM),
        jacobian_points=256),
    # The paper states only "D up to 100" and an RNVP transformation: D = 2, 10, 20, ..., 100;
    # the flow is VectorRealNVP's default size (8 couplings, 3 hidden layers x 512 units);
    # 10k moons, 20k Adam steps of batch 512 (our choices).
    "paper": Recipe(
        (2,) + tuple(range(10, 101, 10)), 10000, 2000, 0.05,
        dict(num_couplings=8, hidden=512, hidden_layers=3),
        TrainConfig(batch_size=512, num_steps=20000, log_every=200, checkpoint_every=2000,
                    **_ADAM),
        jacobian_points=500),
}

_FLOW_FIXED = ("parent", "name", "dim", "scale_fn")


# ----------------------------------------------------------------------------- data


def replicate(x2, dim: int) -> np.ndarray:
  """``N x dim`` float32: the columns of ``x2`` (``N x 2``) repeated in turn, ``(x1, x2, x1, x2,
  ...)``, cut at ``dim`` columns (odd ``dim`` ends with ``x1``); ``dim = 2`` gives ``x2``."""
  x2 = np.asarray(x2)
  if x2.ndim != 2 or x2.shape[1] != 2 or x2.shape[0] < 1:
    raise InvalidInputError(f"replicate: expected points N x 2, got shape {tuple(x2.shape)}.")
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
    raise InvalidInputError(f"replicate: dim must be an integer >= 2, got {dim!r}.")
  reps = -(-int(dim) // 2)
  return np.ascontiguousarray(np.tile(x2, (1, reps))[:, :dim], dtype=np.float32)


def moons(n: int, noise: float, seed: int) -> np.ndarray:
  """``n`` two-moons points ``n x 2`` float32 (``make_moons``, shuffled, ``random_state=seed``)."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise InvalidInputError(f"moons: n must be an integer >= 1, got {n!r}.")
  if not (math.isfinite(noise) and noise >= 0):
    raise InvalidInputError(f"moons: noise must be finite and >= 0, got {noise!r}.")
  x, _ = make_moons(n_samples=int(n), noise=float(noise), shuffle=True, random_state=int(seed))
  return x.astype(np.float32)


# ----------------------------------------------------------------------------- settings


def parse_dims(text: str) -> tuple[int, ...]:
  """``'2,10,20'`` -> ``(2, 10, 20)``: distinct integers >= 2, in the order given."""
  items = split_list(text)
  if not items:
    raise InvalidInputError(f"--dims: expected comma-separated integers >= 2, got {text!r}.")
  out = []
  for item in items:
    try:
      d = int(item)
    except ValueError:
      raise InvalidInputError(f"--dims: {item!r} is not an integer.") from None
    if d < 2:
      raise InvalidInputError(f"--dims: every D must be >= 2 (a coupling needs two halves), got {d}.")
    if d in out:
      raise InvalidInputError(f"--dims: D = {d} is given twice.")
    out.append(d)
  return tuple(out)


def parse_scale_fns(text: str) -> tuple[str, ...]:
  items = split_list(text)
  if not items:
    raise InvalidInputError(f"--scale-fns: expected some of {', '.join(SCALE_FNS)}, got {text!r}.")
  for s in items:
    if s not in SCALE_FNS:
      raise InvalidInputError(f"--scale-fns: unknown scale function {s!r}; known: {', '.join(SCALE_FNS)}.")
  if len(set(items)) != len(items):
    raise InvalidInputError(f"--scale-fns: a scale function is given twice in {text!r}.")
  return tuple(items)


def _train_args(text: str | None) -> dict:
  out = {}
  for key, value in settings.parse_pairs(text, "--flow-train-args").items():
    full = settings.TRAIN_ALIASES.get(key, key)
    if full in out:
      raise InvalidInputError(f"--flow-train-args: {full!r} is given twice ({key!r}).")
    out[full] = value
  return check_settings("--flow-train-args", TrainConfig, out)


def _positive_int(value, flag: str, low: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise InvalidInputError(f"{flag} must be an integer >= {low}, got {value!r}.")
  return value


def resolved(r: Run) -> dict:
  """The run's settings: the preset's recipe with every option and override applied;
  ``{'dims', 'scale_fns', 'n_train', 'n_test', 'noise', 'jacobian_points', 'flow', 'train'}``.
  Raises ``InvalidInputError`` for bad ones."""
  recipe, o = RECIPES[r.preset], r.options
  dims = recipe.dims if o["dims"] is None else parse_dims(o["dims"])
  scale_fns = parse_scale_fns(o["scale_fns"])
  n_train = recipe.n_train if o["n_train"] is None else _positive_int(o["n_train"], "--n-train")
  n_test = recipe.n_test if o["n_test"] is None else _positive_int(o["n_test"], "--n-test")
  noise = recipe.noise if o["noise"] is None else float(o["noise"])
  if not (math.isfinite(noise) and noise >= 0):
    raise InvalidInputError(f"--noise must be finite and >= 0, got {o['noise']!r}.")
  jac = (recipe.jacobian_points if o["jacobian_points"] is None
         else _positive_int(o["jacobian_points"], "--jacobian-points", 0))
  flow = check_settings("--flow-args", VectorRealNVP,
                        settings.parse_pairs(o["flow_args"], "--flow-args"), exclude=_FLOW_FIXED)
  flow = {**recipe.flow, **flow}
  over = _train_args(o["flow_train_args"])
  if "epochs" in over and "num_steps" not in over:
    over["num_steps"] = None
  config = dataclasses.replace(recipe.train, seed=r.seed, **over)
  for s in scale_fns:
    VectorRealNVP(dim=2, scale_fn=s, **flow)        # settings checked now: raises
  batches.check_divisible(config.batch_size)
  if n_train < config.batch_size:
    raise InvalidInputError(
        f"--n-train {n_train} is smaller than one batch of {config.batch_size}; lower the batch"
        " size (--flow-train-args batch_size=...) or draw more points.")
  return {"dims": dims, "scale_fns": scale_fns, "n_train": n_train, "n_test": n_test,
          "noise": noise, "jacobian_points": min(jac, n_test), "flow": flow, "train": config}


def check(r: Run) -> None:
  resolved(r)


# ----------------------------------------------------------------------------- numbers


def parts_fn(model: VectorRealNVP, variables):
  """``x -> (log p(z), log|det dz/dx|)`` (nats per vector, ``[N]`` each), jit-compiled."""
  return jax.jit(lambda xb: model.apply(variables, xb, method=model.log_prob_parts))


def log_prob_parts(model: VectorRealNVP, variables, x: np.ndarray, chunk: int = CHUNK, fn=None):
  """``(log p(z), log|det|)`` of ``x`` as float64 ``[N]`` arrays, in chunks of ``chunk``
  vectors (the last one padded: one compile per chunk size); ``fn``: a ``parts_fn`` to reuse."""
  fn = parts_fn(model, variables) if fn is None else fn
  pz, ld = [], []
  for part, n in batches.padded_chunks(x, chunk):
    a, b = fn(part)
    pz.append(np.asarray(a)[:n])
    ld.append(np.asarray(b)[:n])
  return np.concatenate(pz).astype(np.float64), np.concatenate(ld).astype(np.float64)


def jacobians(model: VectorRealNVP, variables, x: np.ndarray, chunk: int = JAC_CHUNK) -> np.ndarray:
  """``N x D x D`` float64: ``dz/dx`` of ``z = f(x)`` at every row of ``x`` (forward mode)."""
  def f(v):
    return model.apply(variables, v[None], method=model.encode)[0]
  fn, chunk = jax.jit(jax.vmap(jax.jacfwd(f))), min(chunk, len(x))
  return np.concatenate([np.asarray(fn(part))[:n] for part, n in batches.padded_chunks(x, chunk)]
                        ).astype(np.float64)


def jacobian_stats(jac: np.ndarray, log_det: np.ndarray) -> dict:
  """Hadamard's bounds (App. C) at every point, from the Jacobians ``jac`` (``N x D x D``)
  and the model's log-dets there: ``log|det J| <= sum_j log |J e_j| <= D log ||J||_2 <= D log
  L``. ``lipschitz_estimate`` is ``max_x ||J(x)||_2`` over the points (a lower estimate of
  the flow's ``L``); ``slogdet_max_abs_error``: ``max |log|det J| - log_det|`` (a check)."""
  d = jac.shape[-1]
  col = np.sum(np.log(np.linalg.norm(jac, axis=1)), axis=-1)        # sum_j log |J e_j|
  spec = np.linalg.norm(jac, ord=2, axis=(1, 2))                      # ||J||_2 per point
  _, logabs = np.linalg.slogdet(jac)
  with np.errstate(divide="ignore", invalid="ignore"):
    out = {"n_points": int(len(jac)), "hadamard_columns_mean": np.mean(col),
           "d_log_spectral_mean": np.mean(d * np.log(spec)), "lipschitz_estimate": np.max(spec),
           "d_log_lipschitz_estimate": d * np.log(np.max(spec)),
           "slogdet_max_abs_error": np.max(np.abs(logabs - log_det))}
  return {k: v if isinstance(v, int) else _finite(v) for k, v in out.items()}


def _finite(v) -> float | None:
  """``float(v)``, or None where it is NaN or infinite (a vanishing Jacobian column)."""
  v = float(v)
  return v if math.isfinite(v) else None


def slope(xs, ys) -> float | None:
  """Least-squares slope of ``ys`` on ``xs``; None with fewer than two distinct ``xs``."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  if len(np.unique(xs)) < 2:
    return None
  return float(np.polyfit(xs, ys, 1)[0])


def verdict(scale_fn: str, slope_pz: float | None, slope_ld: float | None) -> str:
  """Whether the trends match the paper's expectation for ``scale_fn``."""
  if slope_pz is None or slope_ld is None:
    return "needs at least two D"
  if scale_fn == "exp":
    ok = slope_pz < -FLAT and slope_ld > FLAT
  else:
    if slope_pz < -FLAT and abs(slope_ld) <= FLAT:
      return "in part: log p(z) falls, the log-det stays flat (at its bound 0 if max is 0)"
    ok = slope_pz < -FLAT and slope_ld < -FLAT
  return "matches" if ok else "does not match"


# Slopes within this many nats per dimension of 0 count as flat, not as a trend.
FLAT = 1e-3


def _means(log_pz: np.ndarray, log_det: np.ndarray, dim: int) -> dict:
  m_pz, m_ld = float(np.mean(log_pz)), float(np.mean(log_det))
  return {"log_pz": m_pz, "log_det": m_ld, "log_px": m_pz + m_ld,
          "log_pz_per_dim": m_pz / dim, "log_det_per_dim": m_ld / dim,
          "log_det_max": float(np.max(log_det))}


# ----------------------------------------------------------------------------- training


def checkpoint_dir(r: Run, model: VectorRealNVP, config: TrainConfig, x: np.ndarray) -> str:
  """The cache of ``model`` trained on ``x``: a readable slug plus a hash of the module, the
  weight-changing config fields and the training vectors' bytes."""
  cfg = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_WEIGHT_FIELDS}
  if cfg["num_steps"] is not None:
    cfg.pop("epochs")
  h = hashlib.sha256(f"{x.dtype}|{x.shape}|".encode())
  h.update(np.ascontiguousarray(x).tobytes())
  key = json.dumps({"model": repr(model), "train": cfg, "data": h.hexdigest()},
                   sort_keys=True, default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:8]
  return os.path.join(r.ckpt_root, slug(DATA_NAME, f"D{x.shape[1]}", "vector_realnvp",
                                        model.scale_fn, r.preset, f"seed{config.seed}")
                      + f"-{digest}")


def one_setting(r: Run, cfg: dict, scale_fn: str, dim: int, x2_train: np.ndarray,
                x2_test: np.ndarray) -> dict:
  """Trains (or loads) the flow with ``scale_fn`` scales on the moons replicated to ``dim``;
  its terms on the training and held-out points, the bounds and the training record."""
  x_train, x_test = replicate(x2_train, dim), replicate(x2_test, dim)
  model = VectorRealNVP(dim=dim, scale_fn=scale_fn, **cfg["flow"])
  config = cfg["train"]
  ckpt = checkpoint_dir(r, model, config, x_train)
  with pipeline.Timer() as tt:
    result = train(model, x_train, config, ckpt, progress=r.progress,
                   desc=f"train vector_realnvp ({scale_fn} scales) on two moons, D = {dim}")
  v = result.variables
  with pipeline.Timer() as ts:
    fn, chunk = parts_fn(model, v), min(CHUNK, max(len(x_train), len(x_test)))
    parts = {split: log_prob_parts(model, v, x, chunk, fn)
             for split, x in (("train", x_train), ("test", x_test))}
    for split, (pz, ld) in parts.items():
      if not (np.all(np.isfinite(pz)) and np.all(np.isfinite(ld))):
        raise InvalidInputError(
            f"D = {dim}, {scale_fn} scales: the flow gave non-finite terms on the {split} points;"
            " train shorter or with a lower learning rate.")
    jac = None
    if cfg["jacobian_points"]:
      n = cfg["jacobian_points"]
      jac = jacobian_stats(jacobians(model, v, x_test[:n]), parts["test"][1][:n])
  out = {"scale_fn": scale_fn, "dim": dim,
         **{f"{split}_{k}": val for split, (pz, ld) in parts.items()
            for k, val in _means(pz, ld, dim).items()},
         "bound_log_pz": -0.5 * dim * LOG_2PI,
         "bound_log_det": 0.0 if scale_fn == "sigmoid" else (
             None if jac is None else jac["d_log_lipschitz_estimate"]),
         "jacobian": jac,
         "train_steps": result.step, "resumed_from": result.resumed_from,
         "final_train_loss_nats": result.history[-1]["loss"] if result.history else None,
         "train_seconds": round(tt.seconds, 1), "eval_seconds": round(ts.seconds, 1),
         "checkpoint": ckpt}
  return out


# ----------------------------------------------------------------------------- report


def draw_terms(path: str, results: list[dict], scale_fns) -> None:
  """Fig. 7(b, c): mean log p(z) and mean log|det| against D, one panel per scale function;
  solid = training points, dashed = held-out points, dotted = the bounds of Eqs. 7-9."""
  fig = Figure(figsize=(5.2 * len(scale_fns), 4.2))
  for i, s in enumerate(scale_fns):
    ax = fig.add_subplot(1, len(scale_fns), i + 1)
    rs = sorted((x for x in results if x["scale_fn"] == s), key=lambda x: x["dim"])
    d = [x["dim"] for x in rs]
    for key, label, c in (("log_pz", "log p(z)", "C0"), ("log_det", "log |det dz/dx|", "C3")):
      ax.plot(d, [x[f"train_{key}"] for x in rs], "o-", color=c, label=f"{label}, train")
      ax.plot(d, [x[f"test_{key}"] for x in rs], "x--", color=c, alpha=0.7,
              label=f"{label}, held-out")
    ax.plot(d, [x["bound_log_pz"] for x in rs], ":", color="C0", label="bound -D/2 log 2π")
    bd = [(x["dim"], x["bound_log_det"]) for x in rs if x["bound_log_det"] is not None]
    if bd:
      ax.plot(*zip(*bd), ":", color="C3",
              label="bound 0 (Eq. 9)" if s == "sigmoid" else "bound D log L̂ (Eq. 7)")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("dimension D")
    ax.set_ylabel("nats per vector (mean)")
    ax.set_title(f"{s} scales")
    ax.legend(fontsize="x-small")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def draw_moons(path: str, x2: np.ndarray) -> None:
  """Fig. 7(a): the two-moons training points (D = 2)."""
  fig = Figure(figsize=(4.5, 3.5))
  ax = fig.add_subplot()
  ax.scatter(x2[:, 0], x2[:, 1], s=2, alpha=0.5)
  ax.set_title(f"two moons, n = {len(x2)}")
  ax.set_aspect("equal")
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def _f(v, fmt: str = ".2f") -> str:
  return "–" if v is None else format(v, fmt)


def _tables(results: list[dict], scale_fns) -> list[str]:
  lines = ["## Mean change-of-variables terms against D (nats per vector)", "",
           "train / held-out: the mean over the training points / the held-out moons. Bounds: "
           "`-D/2 log 2π` (Eq. 8, the mode of N(0, I)); the log-det's: `0` (Eq. 9) with sigmoid "
           "scales, `D log L̂` with exp scales (Eq. 7; L̂ = the largest spectral norm of the "
           "Jacobian over the held-out points, a lower estimate of L).", ""]
  for s in scale_fns:
    rs = sorted((x for x in results if x["scale_fn"] == s), key=lambda x: x["dim"])
    lines += [f"### {s} scales", "",
              "| D | log p(z) train | held-out | bound | log-det train | held-out | max | bound "
              "| log p(x) held-out | log p(z) / D held-out | log-det / D held-out | steps |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in rs:
      lines.append(
          f"| {x['dim']} | {x['train_log_pz']:.2f} | {x['test_log_pz']:.2f} | "
          f"{x['bound_log_pz']:.2f} | {x['train_log_det']:.2f} | {x['test_log_det']:.2f} | "
          f"{x['test_log_det_max']:.2f} | {_f(x['bound_log_det'])} | {x['test_log_px']:.2f} | "
          f"{x['test_log_pz_per_dim']:.3f} | {x['test_log_det_per_dim']:.3f} | {x['train_steps']} |")
    lines.append("")
  return lines


def trends(results: list[dict], scale_fns) -> list[dict]:
  """Per scale function: least-squares slopes (nats per unit D, training points) of the two
  terms against D and whether they match the paper's expectation."""
  out = []
  for s in scale_fns:
    rs = [x for x in results if x["scale_fn"] == s]
    d = [x["dim"] for x in rs]
    sp, sl = slope(d, [x["train_log_pz"] for x in rs]), slope(d, [x["train_log_det"] for x in rs])
    out.append({"scale_fn": s, "slope_log_pz": sp, "slope_log_det": sl,
                "max_log_det": max(x["train_log_det_max"] for x in rs),
                "expected": EXPECTED[s], "verdict": verdict(s, sp, sl)})
  return out


def _trend_lines(tr: list[dict]) -> list[str]:
  lines = ["## Paper's expectation beside ours", "",
           "The paper gives no numbers (Fig. 7 only): its expectation is qualitative. Ours: the "
           "least-squares slope of the mean term on the training points against D (nats per "
           "dimension added).", "",
           "| scale | paper (App. C-D) | slope log p(z) | slope log-det | max log-det | ours |",
           "|---|---|---:|---:|---:|---|"]
  for t in tr:
    lines.append(f"| {t['scale_fn']} | {t['expected']} | {_f(t['slope_log_pz'], '.3f')} | "
                 f"{_f(t['slope_log_det'], '.3f')} | {t['max_log_det']:.2f} | {t['verdict']} |")
  return lines


def _choices(cfg: dict) -> str:
  c = cfg["train"]
  length = f"{c.num_steps} steps" if c.num_steps is not None else f"{c.epochs:g} epochs"
  return (
      "## Choices where the paper is silent\n\n"
      "* Replication: `x = (x1, x2, x1, x2, ...)`, the first D columns (odd D ends with x1); "
      "exact copies, no noise between them.\n"
      f"* Moons: `make_moons(noise={cfg['noise']:g})`, {cfg['n_train']} training points "
      f"(random_state = seed), {cfg['n_test']} held-out points (random_state = seed + 1); not "
      "standardised.\n"
      f"* Flow: VectorRealNVP, {cfg['flow']}; half masks alternating, standard-normal prior; "
      "sigmoid scales without Glow's `+ 2` offset.\n"
      f"* Training: {c.optimizer}, lr {c.learning_rate:g}, batch {c.batch_size}, {length}, "
      f"gradient clipping {c.clip_grad_norm}.\n"
      "* L of Eq. 7: the largest spectral norm of the Jacobian over the held-out points "
      f"(the first {cfg['jacobian_points']}); `meta`/`results.json` also give the tighter "
      "pointwise Hadamard bounds (column norms; D log of the spectral norm).\n"
      "* For D > 2 the replicated data lie on a 2-D manifold: the likelihood is unbounded, and "
      "the numbers are those at the end of the training budget.")


def run(r: Run) -> Result:
  cfg = resolved(r)
  x2_train = moons(cfg["n_train"], cfg["noise"], r.seed)
  x2_test = moons(cfg["n_test"], cfg["noise"], r.seed + 1)
  results = [one_setting(r, cfg, s, d, x2_train, x2_test)
             for s in cfg["scale_fns"] for d in cfg["dims"]]
  tr = trends(results, cfg["scale_fns"])
  figures = {"terms_vs_dimension.png": functools.partial(draw_terms, results=results,
                                                         scale_fns=cfg["scale_fns"]),
             "moons.png": functools.partial(draw_moons, x2=x2_train)}
  meta = {k: v for k, v in r.settings_meta().items()
          if k not in ("id", "ood", "models", "scores", "score_settings", "scorers", "n_eval",
                       "n_train", "model_preset", "model_args", "train_args", "train_configs",
                       "k_importance")}
  meta.update({"data": DATA_NAME, "dims": list(cfg["dims"]), "scale_fns": list(cfg["scale_fns"]),
               "n_train": cfg["n_train"], "n_test": cfg["n_test"], "noise": cfg["noise"],
               "jacobian_points": cfg["jacobian_points"], "flow": cfg["flow"],
               "train_config": dataclasses.asdict(cfg["train"]), "units": "nats per vector",
               "trends": tr})
  sections = ["\n".join(_tables(results, cfg["scale_fns"])), "\n".join(_trend_lines(tr)),
              _choices(cfg)]
  return Result(title=f"Nalisnick et al. App. C-D, Fig. 7: log p(z) and log-det against D "
                      f"({r.preset} preset)",
                meta=meta, results=results, sections=sections,
                json_files={"trends.json": tr}, figures=figures)


EXPERIMENT = cli.Experiment(
    "nalisnick_dimension", run, description=__doc__.split("\n\n")[0],
    defaults={"id": DATA_NAME, "models": "", "scores": ""},
    omit=("--id", "--ood", "--models", "--scores", "--model-preset", "--model-args",
          "--score-args", "--train-args", "--train-steps", "--k", "--n-eval", "--data-dir"),
    options=(
        cli.option("--dims", default=None,
                   help="comma-separated dimensions D >= 2 (default: the preset's; cpu: "
                        "2,10,20,50,100, paper: 2,10,20,...,100)"),
        cli.option("--scale-fns", default=",".join(SCALE_FNS),
                   help="coupling scale functions to compare: exp, sigmoid (default both)"),
        cli.option("--n-train", type=int, default=None,
                   help="two-moons training points (default: the preset's; cpu 4000)"),
        cli.option("--n-test", type=int, default=None,
                   help="held-out two-moons points (default: the preset's; cpu 1000)"),
        cli.option("--noise", type=float, default=None,
                   help="make_moons noise (default 0.05)"),
        cli.option("--jacobian-points", type=int, default=None,
                   help="held-out points whose Jacobian estimates L (0: none; default: the "
                        "preset's, cpu 256)"),
        cli.option("--flow-args", default=None,
                   help="VectorRealNVP settings, e.g. num_couplings=4,hidden=128,hidden_layers=2"),
        cli.option("--flow-train-args", default=None,
                   help="flow TrainConfig settings, e.g. steps=500,lr=1e-3,batch_size=128")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
