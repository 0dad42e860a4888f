"""Code statistics of a flow (Nalisnick et al. App. H-I, Figs 11-12), shared by
``nalisnick_codes`` and ``nalisnick_graying``.

A flow's *codes* are its standardised latents, the ``eps`` of ``model.encode_unit`` (for a
fixed ``N(0, I)`` prior, as the Nalisnick presets use, the latents themselves; with a learned
prior, ``(z - mean) / std``, the quantity that prior says is ``N(0, I)``). Every level's
latent is joined in image space (``views.join_latents``: squeezes undone, factored-out
latents concatenated) and flattened, so code ``d`` is the entry of one pixel and channel and
``D = H * W * C``. Images enter as uint8, dequantised ``(x + u) / 256`` with ``u ~ U[0, 1)``
from ``rng`` (one draw, as the likelihoods; ``rng=None``: the bin centres), eval mode.

Statistics (Fig. 11's caption) of ``N x D`` codes ``z``:

* ``mean``: ``mu_d = 1/N sum_n z_nd`` (``D`` values);
* ``std``: ``sigma_d = sqrt(1/(N-1) sum_n (z_nd - mu_d)^2)`` (``D`` values; ``ddof=1``);
* ``norm``: ``|z_n| / sqrt(D) = sqrt(1/D sum_d z_nd^2)`` (``N`` values).

Under the prior every ``mu_d`` is about 0, every ``sigma_d`` and every norm about 1.
"""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.errors import InvalidInputError
from ood_jax.models.flows import views

STATS = ("mean", "std", "norm")
LABELS = {"mean": "per-dimension code mean $\\mu_d$",
          "std": "per-dimension code std $\\sigma_d$",
          "norm": "$|z_n| / \\sqrt{D}$ per image"}


def codes(model, variables, x_uint8, *, rng=None, batch: int = 256) -> np.ndarray:
  """``N x D`` float32 codes of ``x_uint8`` (module docstring), ``batch`` images per call
  (the last chunk padded with copies of the first image: one compile per batch shape)."""
  x = np.asarray(x_uint8)
  if x.dtype != np.uint8 or x.ndim != 4 or len(x) < 1:
    raise InvalidInputError(f"codes: expected uint8 images N x H x W x C, N >= 1, got"
                            f" {x.dtype} {x.shape}.")
  if int(batch) < 1:
    raise InvalidInputError(f"codes: batch must be >= 1, got {batch}.")
  size = min(len(x), int(batch))
  out = []
  for i in range(0, len(x), size):
    chunk = x[i:i + size]
    real = len(chunk)
    if real < size:
      chunk = np.concatenate([chunk, np.repeat(x[:1], size - real, axis=0)])
    key = None if rng is None else jax.random.fold_in(rng, i)
    eps, _ = views.encode(model, variables, chunk, rng=key)
    z = views.join_latents(model, eps)
    out.append(z.reshape(len(z), -1)[:real])
  return np.concatenate(out).astype(np.float32)


def code_statistics(z) -> dict[str, np.ndarray]:
  """``{'mean': mu_d [D], 'std': sigma_d [D] (ddof 1), 'norm': |z_n|/sqrt(D) [N]}``
  (float64) of ``N x D`` codes ``z``, ``N >= 2``."""
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
    raise InvalidInputError(f"code_statistics: expected N x D codes with N >= 2, got {z.shape}.")
  if not np.all(np.isfinite(z)):
    raise InvalidInputError("code_statistics: the codes have NaN or inf entries.")
  return {"mean": z.mean(axis=0), "std": z.std(axis=0, ddof=1),
          "norm": np.sqrt(np.mean(z * z, axis=1))}


def summary(stats: dict[str, np.ndarray]) -> dict:
  """Scalar summaries of ``code_statistics``: the mean of each statistic, the spread of the
  means, and ``D`` / ``N``."""
  return {"D": int(stats["mean"].size), "N": int(stats["norm"].size),
          "mean_of_mu": float(stats["mean"].mean()), "std_of_mu": float(stats["mean"].std()),
          "mean_abs_mu": float(np.abs(stats["mean"]).mean()),
          "mean_of_sigma": float(stats["std"].mean()),
          "mean_of_norm": float(stats["norm"].mean()), "std_of_norm": float(stats["norm"].std())}


def stats_of(model, variables, x_uint8, *, rng=None, batch: int = 256) -> dict[str, np.ndarray]:
  """``code_statistics(codes(...))``."""
  return code_statistics(codes(model, variables, x_uint8, rng=rng, batch=batch))


def figure(path: str, by_label: dict[str, dict[str, np.ndarray]], title: str,
           rows: dict[str, dict[str, dict[str, np.ndarray]]] | None = None, bins: int = 60,
           cmap: str | None = None) -> str:
  """Histograms of the three statistics (columns: mean, std, norm), one overlaid step
  histogram per label on shared bins; ``rows`` (``{row title: by_label}``) draws several
  rows (e.g. ID and OOD, Fig. 12), ``by_label`` alone one. ``cmap`` colours the labels along
  a colormap (a sweep, e.g. the graying factor) instead of the default cycle."""
  rows = rows if rows is not None else {"": by_label}
  fig = Figure(figsize=(13.0, 3.6 * len(rows) + 0.4))
  for r, (row_title, labels) in enumerate(rows.items()):
    for c, stat in enumerate(STATS):
      ax = fig.add_subplot(len(rows), len(STATS), r * len(STATS) + c + 1)
      allv = np.concatenate([v[stat] for v in labels.values()])
      lo, hi = float(allv.min()), float(allv.max())
      edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
      for i, (label, v) in enumerate(labels.items()):
        if cmap:
          color = matplotlib.colormaps[cmap](i / max(1, len(labels) - 1))
        else:
          color = f"C{i % 10}"
        ax.hist(v[stat], bins=edges, density=True, histtype="step", lw=1.3, color=color,
                label=f"{label} ({v[stat].mean():.3g})")
      ax.set_xlabel(LABELS[stat])
      ax.set_ylabel("density")
      ax.set_title(f"{row_title}: {stat}" if row_title else stat, fontsize=9)
      ax.legend(fontsize="x-small")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=110)
  return path
