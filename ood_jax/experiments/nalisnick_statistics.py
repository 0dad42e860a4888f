"""Nalisnick et al. §5, Fig. 5a and App. H, Fig. 10: per-dimension means and variances of the data sets.

    python -m ood_jax.experiments.nalisnick_statistics                 # cpu: every image
    python -m ood_jax.experiments.nalisnick_statistics --preset smoke --out runs/n_stats_smoke
    python -m ood_jax.experiments.nalisnick_statistics --sets cifar10@train,celeb_a --shapes 32x32x3

Model-free. For every set of ``--sets`` (``name`` or ``name@split``, default split ``test``;
a name may carry transforms, ``cifar10+gray:0.5@test``) whose data are here, and for every
shape of ``--shapes`` (default ``32x32x3`` as Fig. 5a and ``28x28x1`` as Fig. 10), the
images conformed to the shape (``data.conform``: ITU-R 601 luma for colour -> grey, channel
repetition for grey -> colour, then PIL bilinear up / bicubic down to the side, as every
experiment conforms its OOD sets; ``noise`` and ``constant`` are generated at the shape
instead, so noise is not smoothed), pixels divided by 256 as the paper:

* ``mu_d = 1/N sum_n x_nd`` and ``sigma_d^2 = 1/(N-1) sum_n (x_nd - mu_d)^2`` for each of
  the ``D = H W C`` dimensions (Fig. 10's caption);
* overlaid histograms of ``mu_d`` and of ``sigma_d^2`` over the sets, one figure per shape
  and statistic (``stats_<H>x<W>x<C>_{mean,var}.png``);
* a table: mean, min and max of ``mu_d``, mean of ``sigma_d^2``, the per-channel sums
  ``sum_{h,w} sigma_{h,w,c}^2`` that Eq. 6 plugs in (the paper's CIFAR-10: 61.9, 59.2, 68.1;
  SVHN: 49.6, 52.7, 53.6) and ``max_d |mu_d - mu_d(reference)|`` in pixel levels (0..255
  scale; the paper: SVHN vs CIFAR-10 < 38), the reference being ``cifar10@train`` for colour
  shapes and ``fashion_mnist@train`` for grey ones (else the first set);
* ``statistics.json``: the table and every histogram (edges and counts).

Sets that are not here (SVHN, CIFAR-100, ImageNet32, notMNIST, KMNIST, Omniglot in this
checkout) are listed with the reason, never replaced. The CIFAR-10 copy here is decoded from
JPEG q75 (slightly lower variance than the real pixels); ``cifar10@lossless4k`` (the first
4,000 training images, exact pixels) shows by how much. ``--n-images`` caps the images per
set (a seeded random subset; default: all at ``cpu`` / ``paper``, 500 at ``smoke``); the
synthetic sets get that many, or 10,000. Cost at ``cpu``: about a minute (loading and
resizing the 50k / 60k training splits dominates).
"""

from __future__ import annotations

import sys

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax import data
from ood_jax.data import synthetic
from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug, split_list

DEFAULT_SETS = ("fashion_mnist@train,fashion_mnist@test,mnist,not_mnist,kmnist,omniglot,"
                "cifar10@train,cifar10@test,cifar10@lossless4k,cifar100,svhn,celeb_a,imagenet32,"
                "noise,constant")
DEFAULT_SHAPES = "32x32x3,28x28x1"
SMOKE_IMAGES = 500
SCALE = 256.0                       # "pixels are converted from 0-255 scale to 0-1 scale by dividing by 256"
REFERENCE = {3: "cifar10@train", 1: "fashion_mnist@train"}
# Eq. 6: per-channel sums over (h, w) of sigma^2 (pixels / 256, 32 x 32 x 3), channels 1-3.
PAPER_VAR_SUMS = {"cifar10": (61.9, 59.2, 68.1), "svhn": (49.6, 52.7, 53.6)}
PAPER_MAX_MEAN_DIFF = 38            # "less than 38 pixel values", SVHN vs CIFAR-10
BINS = 80


# ----------------------------------------------------------------------------- parsing


def parse_sets(text: str) -> list[tuple[str, str]]:
  """``'mnist,cifar10@train'`` -> ``[('mnist', 'test'), ('cifar10', 'train')]``; the specs
  are checked (transforms, ``constant:<v>``) without reading data."""
  out = []
  for entry in split_list(text):
    name, sep, split = entry.rpartition("@")
    name, split = (name.strip(), split.strip()) if sep else (entry.strip(), "test")
    if not name or not split:
      raise InvalidInputError(f"--sets: expected 'name' or 'name@split', got {entry!r}.")
    base, _ = data.parse_spec(name)
    canon = canonical_name(base)
    if synthetic.is_synthetic(canon):
      synthetic.parse_name(canon)
    if (name, split) in out:
      raise InvalidInputError(f"--sets: {entry!r} is given twice.")
    out.append((name, split))
  if not out:
    raise InvalidInputError("--sets: give at least one set, e.g. cifar10@train,celeb_a.")
  return out


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
  """``'32x32x3,28x28x1'`` -> ``[(32, 32, 3), (28, 28, 1)]`` (square, C in {1, 3})."""
  out = []
  for entry in split_list(text):
    parts = entry.lower().split("x")
    try:
      h, w, c = (int(p) for p in parts)
    except ValueError:
      raise InvalidInputError(f"--shapes: expected HxWxC like 32x32x3, got {entry!r}.") from None
    if h != w or h < 1 or c not in (1, 3):
      raise InvalidInputError(f"--shapes: {entry!r} must be square (H = W >= 1) with C 1 or 3.")
    if (h, w, c) not in out:
      out.append((h, w, c))
  if not out:
    raise InvalidInputError("--shapes: give at least one shape, e.g. 32x32x3.")
  return out


def label(name: str, split: str) -> str:
  return name if synthetic.is_synthetic(canonical_name(name.split("+")[0])) else f"{name} ({split})"


def shape_name(hwc) -> str:
  return "x".join(str(int(v)) for v in hwc)


# ----------------------------------------------------------------------------- statistics


def pixel_statistics(x_uint8, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """``(mu_d, sigma_d^2)`` over the ``D = H W C`` dimensions of uint8 ``N x H x W x C``
  images, pixels divided by 256, variance with ``1/(N-1)`` (float64, two passes in chunks of
  ``chunk`` images)."""
  x = np.asarray(x_uint8)
  if x.dtype != np.uint8 or x.ndim != 4:
    raise InvalidInputError(f"pixel_statistics: expected uint8 N x H x W x C, got {x.dtype} {x.shape}.")
  n = x.shape[0]
  if n < 2:
    raise InvalidInputError(f"pixel_statistics: the variance needs N >= 2 images, got {n}.")
  flat = x.reshape(n, -1)
  total = np.zeros(flat.shape[1], np.float64)
  for i in range(0, n, chunk):
    total += flat[i:i + chunk].sum(axis=0, dtype=np.float64)
  mu = total / n
  ss = np.zeros_like(mu)
  for i in range(0, n, chunk):
    d = flat[i:i + chunk].astype(np.float64) - mu
    ss += np.einsum("nd,nd->d", d, d)
  return mu / SCALE, ss / (n - 1) / (SCALE * SCALE)


def summarise(mu: np.ndarray, var: np.ndarray, hwc, ref_mu: np.ndarray | None) -> dict:
  """The table's numbers of one set at shape ``hwc``."""
  c = int(hwc[-1])
  per_channel = var.reshape(-1, c).sum(axis=0)          # dims are (h, w, c) in C order
  return {"D": int(mu.size), "mean_mu": float(mu.mean()), "min_mu": float(mu.min()),
          "max_mu": float(mu.max()), "mean_var": float(var.mean()),
          "min_var": float(var.min()), "max_var": float(var.max()),
          "var_sum_per_channel": [round(float(v), 3) for v in per_channel],
          "max_abs_mean_diff_vs_reference_levels":
              None if ref_mu is None else float(np.abs(mu - ref_mu).max() * SCALE)}


def histograms(values: dict[str, np.ndarray], lo: float, hi: float, bins: int = BINS) -> dict:
  """``{'edges': [...], 'counts': {label: [...]}}`` on shared bins over ``[lo, hi]``."""
  edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
  return {"edges": edges.tolist(),
          "counts": {k: np.histogram(v, bins=edges)[0].tolist() for k, v in values.items()}}


def draw(path: str, hist: dict, title: str, xlabel: str) -> str:
  """Overlaid density histograms (step lines) from ``histograms`` output."""
  edges = np.asarray(hist["edges"])
  width = np.diff(edges)
  fig = Figure(figsize=(8.0, 4.8))
  ax = fig.add_subplot()
  for i, (name, counts) in enumerate(hist["counts"].items()):
    counts = np.asarray(counts, np.float64)
    dens = counts / max(1.0, counts.sum()) / width
    ax.stairs(dens, edges, lw=1.4, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize="x-small", ncol=2)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)
  return path


# ----------------------------------------------------------------------------- experiment


def n_images(r: Run) -> int | None:
  n = r.options.get("n_images")
  if n is not None:
    return int(n)
  return SMOKE_IMAGES if r.preset == "smoke" else None


def check(r: Run) -> None:
  parse_sets(r.options["sets"])
  parse_shapes(r.options["shapes"])
  n = r.options.get("n_images")
  if n is not None and int(n) < 2:
    raise InvalidInputError(f"--n-images must be >= 2 (the variance needs two images), got {n}.")


def _fmt(v, spec=".4f") -> str:
  return "–" if v is None else format(v, spec)


def table_lines(rows: list[dict], skipped: list[dict]) -> list[str]:
  lines = ["## Per-dimension statistics (pixels / 256)", "",
           "Means over the D dimensions of mu_d and sigma_d^2; `sum sigma^2 per channel` is "
           "Eq. 6's sum over (h, w) for each channel; `max |d mu|` is max_d |mu_d - "
           "mu_d(reference)| in pixel levels. Paper (Eq. 6, 32x32x3): CIFAR-10 61.9 / 59.2 / "
           "68.1, SVHN 49.6 / 52.7 / 53.6; SVHN's means within 38 levels of CIFAR-10's.", ""]
  for hwc in dict.fromkeys(r["shape"] for r in rows):
    sub = [r for r in rows if r["shape"] == hwc]
    ref = sub[0]["reference"]
    lines += [f"### {hwc} (reference {ref})", "",
              "| set | n | mean mu_d | min mu_d | max mu_d | mean sigma_d^2 | sum sigma^2 per "
              "channel | paper | max \\|d mu\\| (levels) |",
              "|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in sub:
      paper = r.get("paper_var_sum_per_channel")
      lines.append(
          f"| {r['set']} | {r['n']} | {r['mean_mu']:.4f} | {r['min_mu']:.4f} | {r['max_mu']:.4f} | "
          f"{r['mean_var']:.4f} | {' / '.join(f'{v:.1f}' for v in r['var_sum_per_channel'])} | "
          f"{' / '.join(f'{v:.1f}' for v in paper) if paper else '–'} | "
          f"{_fmt(r['max_abs_mean_diff_vs_reference_levels'], '.1f')} |")
    lines.append("")
  if skipped:
    lines += ["Not here (not replaced by another set):", ""]
    lines += [f"* {s['set']}: {s['reason']}." for s in skipped]
    if any(s["set"].startswith("svhn") for s in skipped):
      lines += ["", "SVHN being absent, Eq. 6's SVHN - CIFAR-10 difference and the 38-level "
                "mean gap cannot be checked; the CIFAR-10 sums can."]
  return lines


def run(r: Run) -> Result:
  sets, shapes = parse_sets(r.options["sets"]), parse_shapes(r.options["shapes"])
  n = n_images(r)
  present, skipped = [], []
  for name, split in sets:
    why = availability.missing(name, split, r.data_dir)
    if why:
      skipped.append({"set": label(name, split), "reason": why})
    else:
      present.append((name, split))
  if not present:
    raise InvalidInputError(f"--sets {r.options['sets']!r}: none of the sets is here.")
  per_shape: dict[tuple, dict[str, tuple[np.ndarray, np.ndarray]]] = {s: {} for s in shapes}
  sources, counts = {}, {}
  for j, (name, split) in enumerate(present):
    key = label(name, split)
    if synthetic.is_synthetic(canonical_name(name.split("+")[0])):
      for hwc in shapes:
        s = data.load(name, split, data_dir=r.data_dir, n=n, seed=r.seed + j, like=hwc)
        per_shape[hwc][key] = pixel_statistics(s.x)
      sources[key], counts[key] = s.source + " (generated at each shape)", len(s.x)
      continue
    s = data.load(name, split, data_dir=r.data_dir, n=n, seed=r.seed + j)
    if len(s.x) < 2:
      skipped.append({"set": key, "reason": f"only {len(s.x)} image here (the variance needs 2)"})
      continue
    sources[key], counts[key] = f"{s.source}, native {shape_name(s.x.shape[1:])}", len(s.x)
    for hwc in shapes:
      per_shape[hwc][key] = pixel_statistics(data.conform(s.x, hwc))
    del s
  rows, hists, figs = [], {}, {}
  for hwc in shapes:
    stats = per_shape[hwc]
    if not stats:
      continue
    want = REFERENCE[hwc[-1]]
    ref = next((label(nm, sp) for nm, sp in present
                if f"{nm}@{sp}" == want and label(nm, sp) in stats), next(iter(stats)))
    for key, (mu, var) in stats.items():
      row = {"shape": shape_name(hwc), "set": key, "n": counts[key], "reference": ref,
             **summarise(mu, var, hwc, stats[ref][0])}
      base = canonical_name(key.split(" (")[0].split("+")[0])
      if hwc == (32, 32, 3) and base in PAPER_VAR_SUMS and "+" not in key:
        row["paper_var_sum_per_channel"] = list(PAPER_VAR_SUMS[base])
      rows.append(row)
    tag = shape_name(hwc)
    mus = {k: v[0] for k, v in stats.items()}
    vars_ = {k: v[1] for k, v in stats.items()}
    hists[tag] = {"mean": histograms(mus, 0.0, 1.0),
                  "var": histograms(vars_, 0.0, max(float(v.max()) for v in vars_.values()))}
    for stat, xlabel in (("mean", "per-dimension mean $\\mu_d$ (pixels / 256)"),
                         ("var", "per-dimension variance $\\sigma_d^2$ (pixels / 256)")):
      figs[f"stats_{slug(tag)}_{stat}.png"] = (
          lambda path, h=hists[tag][stat], t=tag, s=stat, xl=xlabel: draw(
              path, h, f"Per-dimension {'means' if s == 'mean' else 'variances'}, {t}", xl))
  meta = {**{k: v for k, v in r.settings_meta().items()
             if k not in ("id", "ood", "models", "scores", "model_preset", "model_args",
                          "score_settings", "scorers", "train_args", "train_configs",
                          "k_importance", "ckpt_root", "n_train", "n_eval")},
          "sets": [label(nm, sp) for nm, sp in present], "skipped": skipped,
          "shapes": [shape_name(s) for s in shapes], "n_images": n, "scale": SCALE,
          "data_sources": sources}
  return Result(title=f"Nalisnick et al. Fig. 5a / Fig. 10: data statistics ({r.preset} preset)",
                meta=meta, results=rows, sections=["\n".join(table_lines(rows, skipped))],
                json_files={"statistics.json": {"summary": rows, "histograms": hists}},
                figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_statistics", run, description=__doc__.split("\n\n")[0],
    defaults={"id": "all", "models": "", "scores": ""},
    omit=("--id", "--ood", "--models", "--scores", "--model-preset", "--model-args",
          "--score-args", "--train-args", "--ckpt-dir", "--n-eval", "--train-steps", "--k"),
    options=(cli.option("--sets", default=DEFAULT_SETS,
                        help="comma-separated name or name@split (default split test; default: "
                             "every set of Figs 5a and 10 and the synthetic ones)"),
             cli.option("--shapes", default=DEFAULT_SHAPES,
                        help=f"comma-separated HxWxC shapes (default {DEFAULT_SHAPES})"),
             cli.option("--n-images", type=int, default=None,
                        help=f"images per set (default: all; {SMOKE_IMAGES} at smoke)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
