"""Image-grid figures (sample grids, latents, coupling activations) for the experiments.

Conventions:

* ``rows`` is an ordered mapping ``{label: images}``; every value an array ``N x H x W x C``
  (``C`` in {1, 3}) or ``N x H x W`` (grey), uint8 or float. Row ``i`` of the figure shows
  the images of the ``i``-th entry left to right with its label on the left; rows may hold
  different numbers (and sizes) of images; empty cells are blank.
* Grey images are drawn with ``cmap``; colour images are drawn as RGB.
* Normalisation (``norm``): ``'fixed'`` uses ``vmin`` / ``vmax`` (default: 0 / 255 for
  uint8, the figure-wide min / max for float), ``'row'`` the min / max of each row, so a
  row of ``s`` maps next to a row of images keeps its contrast; ``'image'`` per image.
  Colour images are clipped to the range after scaling to ``[0, 1]``.
* Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot: no
  global backend is switched, no figure outlives its call) and saved as PNG.

``image_grid(path, rows, ...)`` and ``samples_grid(path, images, title)`` write the file and
return ``path``; bad input raises ``InvalidInputError`` before anything is drawn.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ood_jax.errors import InvalidInputError

NORMS = ("fixed", "row", "image")


def _as_images(label: str, images) -> np.ndarray:
  """``images`` as ``N x H x W x C`` (C in {1, 3}); a 3-D array is ``N x H x W`` grey."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] < 1 or min(x.shape[1:3]) < 1:
    raise InvalidInputError(
        f"image_grid: row {label!r} must be N x H x W x C with N >= 1 and C in {{1, 3}}, got"
        f" shape {x.shape}.")
  if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)
          or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
    raise InvalidInputError(
        f"image_grid: row {label!r} has dtype {x.dtype}; expected uint8 or float.")
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    raise InvalidInputError(f"image_grid: row {label!r} has NaN or inf values.")
  return x


def _range(x: np.ndarray, vmin, vmax) -> tuple[float, float]:
  """``(lo, hi)`` with ``hi > lo``; uint8 defaults to 0..255, other dtypes to min..max."""
  lo = (0.0 if x.dtype == np.uint8 else float(np.min(x))) if vmin is None else float(vmin)
  hi = (255.0 if x.dtype == np.uint8 else float(np.max(x))) if vmax is None else float(vmax)
  return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def image_grid(path: str, rows: Mapping[str, np.ndarray], *, title: Optional[str] = None,
               cmap: str = "gray", norm: str = "fixed", vmin: Optional[float] = None,
               vmax: Optional[float] = None, cell: float = 1.0, max_cols: Optional[int] = None,
               col_titles: Optional[list[str]] = None) -> str:
  """Writes a labelled grid of images to the PNG ``path`` and returns ``path``.

  Args:
    path: output file (PNG).
    rows: ordered ``{label: images}``, images ``N x H x W x C`` or ``N x H x W`` (module
      docstring).
    title: figure title.
    cmap: colormap of the grey images.
    norm: ``'fixed'`` (``vmin`` / ``vmax``, defaults from the dtype / data), ``'row'``
      (each row its own min..max) or ``'image'`` (each image its own).
    vmin, vmax: the range with ``norm='fixed'`` (ignored otherwise).
    cell: inches per image.
    max_cols: show at most this many images per row.
    col_titles: titles of the columns (over the first row).
  """
  if not isinstance(rows, Mapping) or not rows:
    raise InvalidInputError("image_grid: rows must be a non-empty mapping {label: images}.")
  if norm not in NORMS:
    raise InvalidInputError(f"image_grid: norm must be one of {', '.join(NORMS)}, got {norm!r}.")
  if norm != "fixed" and (vmin is not None or vmax is not None):
    raise InvalidInputError("image_grid: vmin / vmax apply only with norm='fixed'.")
  if max_cols is not None and int(max_cols) < 1:
    raise InvalidInputError(f"image_grid: max_cols must be >= 1, got {max_cols}.")
  data = {str(k): _as_images(str(k), v) for k, v in rows.items()}
  if max_cols is not None:
    data = {k: v[:int(max_cols)] for k, v in data.items()}
  ncols = max(v.shape[0] for v in data.values())
  if col_titles is not None and len(col_titles) > ncols:
    raise InvalidInputError(
        f"image_grid: {len(col_titles)} column titles for {ncols} columns.")
  if norm == "fixed":
    if all(v.dtype == np.uint8 for v in data.values()) or (vmin is not None and vmax is not None):
      lo_hi = _range(next(iter(data.values())), vmin, vmax)
    else:
      allv = np.concatenate([v.astype(np.float64).ravel() for v in data.values()])
      lo_hi = _range(allv, vmin, vmax)
  label_w = 0.2 + 0.065 * max(len(k) for k in data) if any(k.strip() for k in data) else 0.1
  top_h = (0.4 if title else 0.05) + (0.2 if col_titles else 0.0)
  width, height = cell * ncols + label_w + 0.1, cell * len(data) + top_h + 0.05
  width = max(width, 0.075 * len(title or "") + 0.4)     # room for the title
  fig = Figure(figsize=(width, height))
  axes = fig.subplots(len(data), ncols, squeeze=False,
                      gridspec_kw=dict(left=label_w / width, right=1 - 0.1 / width,
                                       bottom=0.05 / height, top=1 - top_h / height,
                                       wspace=0.05, hspace=0.25 if col_titles else 0.05))
  for r, (label, x) in enumerate(data.items()):
    row_range = _range(x, None, None) if norm == "row" else None
    for c in range(ncols):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      for side in ax.spines.values():
        side.set_visible(False)
      if c == 0:
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
      if r == 0 and col_titles is not None and c < len(col_titles):
        ax.set_title(str(col_titles[c]), fontsize=7)
      if c >= x.shape[0]:
        continue
      img = x[c].astype(np.float64)
      lo, hi = lo_hi if norm == "fixed" else row_range if norm == "row" else _range(img, None, None)
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
      else:
        ax.imshow(np.clip((img - lo) / (hi - lo), 0.0, 1.0), interpolation="nearest")
  if title:
    fig.suptitle(title, fontsize=9, y=1 - 0.05 / height, va="top")
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)
  return path


def samples_grid(path: str, images_uint8, title: str, *, cols: int = 8) -> str:
  """Writes uint8 samples ``N x H x W x C`` as a grid of ``cols`` per row (PNG) and returns
  ``path`` (e.g. a model's samples, Kirichenko et al. Fig. 15)."""
  x = _as_images("samples", images_uint8)
  if x.dtype != np.uint8:
    raise InvalidInputError(f"samples_grid: expected uint8 images, got {x.dtype}.")
  if int(cols) < 1:
    raise InvalidInputError(f"samples_grid: cols must be >= 1, got {cols}.")
  cols = min(int(cols), x.shape[0])
  rows = {" " * (i // cols): x[i:i + cols] for i in range(0, x.shape[0], cols)}  # blank labels
  return image_grid(path, rows, title=title)


def histograms(path: str, panels: Mapping[str, Mapping[str, np.ndarray]], *, xlabel,
               title: Optional[str] = None, bins: int = 60) -> str:
  """Overlaid density histograms, one panel per entry of ``panels`` (``{panel title: {set
  label: values}}``, left to right), each panel on bins shared by its sets; ``xlabel`` one
  string or one per panel. Writes a PNG and returns ``path`` (Nalisnick et al. Figs 2-4:
  train / test / OOD in one panel)."""
  if not panels:
    raise InvalidInputError("histograms: no panels.")
  labels = [xlabel] * len(panels) if isinstance(xlabel, str) else list(xlabel)
  if len(labels) != len(panels):
    raise InvalidInputError(f"histograms: {len(labels)} x labels for {len(panels)} panels.")
  data = {}
  for name, sets in panels.items():
    if not sets:
      raise InvalidInputError(f"histograms: panel {name!r} has no sets.")
    data[name] = {}
    for label, v in sets.items():
      v = np.asarray(v, np.float64).ravel()
      if v.size == 0 or not np.all(np.isfinite(v)):
        raise InvalidInputError(f"histograms: {name!r} / {label!r}: expected finite values.")
      data[name][label] = v
  fig = Figure(figsize=(5.5 * len(data), 4.2))
  for j, (name, sets) in enumerate(data.items()):
    ax = fig.add_subplot(1, len(data), j + 1)
    allv = np.concatenate(list(sets.values()))
    lo, hi = float(allv.min()), float(allv.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    for i, (label, v) in enumerate(sets.items()):
      ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.3, color=f"C{i % 10}")
      ax.hist(v, bins=edges, density=True, histtype="step", lw=1.3, color=f"C{i % 10}",
              label=f"{label} (mean {v.mean():.4g})")
    ax.set_xlabel(labels[j])
    ax.set_ylabel("density")
    ax.set_title(name, fontsize="medium")
    ax.legend(fontsize="x-small")
  return _save(fig, path, title)


def scatter(path: str, panels: Mapping[str, Mapping[str, tuple]], *, xlabel, ylabel,
            title: Optional[str] = None, size: float = 4.0) -> str:
  """Scatter plots, one panel per entry of ``panels`` (``{panel title: {group label: (x,
  y)}}``), each group its own colour; ``xlabel`` / ``ylabel`` one string or one per panel.
  Writes a PNG and returns ``path`` (e.g. Chen Fig. 3.9c's t-SNE of the codes)."""
  if not panels:
    raise InvalidInputError("scatter: no panels.")
  xl = [xlabel] * len(panels) if isinstance(xlabel, str) else list(xlabel)
  yl = [ylabel] * len(panels) if isinstance(ylabel, str) else list(ylabel)
  if len(xl) != len(panels) or len(yl) != len(panels):
    raise InvalidInputError(f"scatter: axis labels for {len(xl)}/{len(yl)} of {len(panels)} panels.")
  fig = Figure(figsize=(5.0 * len(panels), 4.4))
  for j, (name, groups) in enumerate(panels.items()):
    if not groups:
      raise InvalidInputError(f"scatter: panel {name!r} has no groups.")
    ax = fig.add_subplot(1, len(panels), j + 1)
    for i, (label, (x, y)) in enumerate(groups.items()):
      x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
      if x.shape != y.shape or x.size == 0 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidInputError(f"scatter: {name!r} / {label!r}: expected finite x, y of one length.")
      ax.scatter(x, y, s=size, alpha=0.5, color=f"C{i % 10}", label=f"{label} ({x.size})")
    ax.set_xlabel(xl[j])
    ax.set_ylabel(yl[j])
    ax.set_title(name, fontsize="medium")
    ax.legend(fontsize="x-small", markerscale=3)
  return _save(fig, path, title)


def _save(fig: Figure, path: str, title: Optional[str]) -> str:
  """Title, tight layout, PNG at 100 dpi; returns ``path``."""
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=100)
  return path
