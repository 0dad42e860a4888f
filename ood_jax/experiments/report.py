"""Writes an experiment's report: markdown tables, JSON results and PNG figures.

``write_report(out_dir, ...)`` writes into ``out_dir``:

* ``report.md``: title, the exact command, the run's metadata, paper-style tables (one
  per (ID set, model): rows = OOD sets, columns = scores; cells ``AUROC / AUPRC-out``,
  then a second table with ``FPR80 / AUPRC-in``) and links to the figures.
* ``results.json``: a JSON list of the row dicts, each with exactly the keys ``ROW_KEYS``.
* ``meta.json``: the free-form metadata dict.
* ``hist_<model>_<score>.png``: density-normalised histograms of the ID test set and
  every OOD set on shared bins.
* ``roc_<model>_<score>.png``: one ROC curve per OOD set (OOD positive), AUROC in legend.
* ``scores.npz``: every per-image score and the image indices of each set (when given).

Writing is all-or-nothing and rendered before anything is replaced: every file is first
written into a fresh sibling directory ``.<out>.report-swap-*``, which then takes the place
of ``out_dir`` in one atomic exchange (Linux ``renameat2``; elsewhere file by file with
``report.md`` last); entries of ``out_dir`` that are not report files (``checkpoints``, a
user's files) are then moved back, and the previous report is deleted. So a reader never sees
a new ``results.json`` beside an old ``report.md``; ``.report-files.json`` lists the report's
files. Any error while validating or rendering leaves ``out_dir`` as it was; ``recover``
(run before every write and every run) cleans up after a write killed part-way.
``scores.npz`` (``Result.arrays``) holds the per-image scores behind every table.

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot), so no
global backend is switched and no figure outlives its function.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import tempfile

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ood_jax import metrics
from ood_jax.errors import InvalidInputError

ROW_KEYS = ("id", "model", "score", "ood", "auroc", "auprc_in", "auprc_out", "fpr80", "fpr95",
            "n_id", "n_ood")
_STR_KEYS = ("id", "model", "score", "ood")
_FLOAT_KEYS = ("auroc", "auprc_in", "auprc_out", "fpr80", "fpr95")
_INT_KEYS = ("n_id", "n_ood")
_SAMPLE_KEYS = {"id_name", "id", "ood", "xlabel"}
_MAX_BINS = 100


# ----------------------------------------------------------------------------- validation


def _check_rows(rows) -> list[dict]:
  """Returns the rows as plain-Python dicts in ``ROW_KEYS`` order; raises
  ``InvalidInputError`` on missing/extra keys, wrong types, NaN/inf or duplicates."""
  if not isinstance(rows, (list, tuple)) or not rows:
    raise InvalidInputError("rows: expected a non-empty list of result dicts.")
  out, seen = [], set()
  for i, row in enumerate(rows):
    if not isinstance(row, dict):
      raise InvalidInputError(f"rows[{i}]: expected a dict, got {type(row).__name__}.")
    missing, extra = set(ROW_KEYS) - set(row), set(row) - set(ROW_KEYS)
    if missing or extra:
      raise InvalidInputError(
          f"rows[{i}]: keys must be exactly {list(ROW_KEYS)}; missing {sorted(missing)}, "
          f"unexpected {sorted(map(str, extra))}.")
    clean = {}
    for k in _STR_KEYS:
      if not isinstance(row[k], str) or not row[k]:
        raise InvalidInputError(f"rows[{i}][{k!r}]: expected a non-empty string, got {row[k]!r}.")
      clean[k] = row[k]
    for k in _FLOAT_KEYS:
      v = row[k]
      if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"rows[{i}][{k!r}]: expected a number, got {v!r}.")
      if not math.isfinite(float(v)):
        raise InvalidInputError(
            f"rows[{i}][{k!r}] is {float(v)} for {_row_name(row)}; every metric must be finite.")
      clean[k] = float(v)
    for k in _INT_KEYS:
      v = row[k]
      if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
        raise InvalidInputError(f"rows[{i}][{k!r}]: expected a count (int >= 0), got {v!r}.")
      clean[k] = int(v)
    key = tuple(clean[k] for k in _STR_KEYS)
    if key in seen:
      raise InvalidInputError(f"rows[{i}]: duplicate row for {_row_name(clean)}.")
    seen.add(key)
    out.append({k: clean[k] for k in ROW_KEYS})
  return out


def _row_name(row: dict) -> str:
  return f"id={row['id']!r} model={row['model']!r} score={row['score']!r} ood={row['ood']!r}"


def _check_samples(score_samples) -> dict:
  """Validated ``{(model, score): {"id_name", "id", "ood", "xlabel"}}`` with float64 arrays."""
  if not isinstance(score_samples, dict):
    raise InvalidInputError("score_samples: expected a dict {(model, score): {...}}.")
  out = {}
  for key, s in score_samples.items():
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
      raise InvalidInputError(f"score_samples: keys must be (model, score) string pairs, got {key!r}.")
    where = f"score_samples[{key!r}]"
    if not isinstance(s, dict) or set(s) != _SAMPLE_KEYS:
      got = sorted(s) if isinstance(s, dict) else type(s).__name__
      raise InvalidInputError(f"{where}: expected a dict with keys {sorted(_SAMPLE_KEYS)}, got {got}.")
    if not isinstance(s["ood"], dict) or not s["ood"]:
      raise InvalidInputError(f"{where}['ood']: expected a non-empty dict {{ood_name: scores}}.")
    out[key] = {
        "id_name": str(s["id_name"]), "xlabel": str(s["xlabel"]),
        "id": metrics.check_scores(s["id"], f"{where}['id']"),
        "ood": {str(n): metrics.check_scores(v, f"{where}['ood'][{n!r}]")
                for n, v in s["ood"].items()},
    }
  return out


def _jsonable(x):
  """Plain JSON types: numpy -> Python, tuples -> lists, non-finite floats -> strings,
  anything else unknown -> ``str``."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, np.generic):
    return _jsonable(x.item())
  if isinstance(x, float):
    return x if math.isfinite(x) else str(x)
  if x is None or isinstance(x, (bool, int, str)):
    return x
  return str(x)


# ----------------------------------------------------------------------------- markdown


def _cell(text) -> str:
  return str(text).replace("|", r"\|").replace("\n", " ")


def _code(text: str) -> str:
  """Inline code span that survives backticks inside ``text``."""
  ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
  pad = " " if "`" in text else ""
  return f"{ticks}{pad}{text}{pad}{ticks}"


def _fence(text: str, lang: str = "") -> list[str]:
  ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
  return [f"{ticks}{lang}", text, ticks]


def _unique(xs) -> list:
  return list(dict.fromkeys(xs))


def _tables(rows: list[dict], first: tuple[str, str], second: tuple[str, str]) -> list[str]:
  """One markdown table per (id, model): rows = OOD sets, columns = scores,
  cells ``first / second`` metrics to 3 decimals ('–' where a combination is missing)."""
  lines = []
  for id_name, model in _unique((r["id"], r["model"]) for r in rows):
    sub = [r for r in rows if (r["id"], r["model"]) == (id_name, model)]
    scores, oods = _unique(r["score"] for r in sub), _unique(r["ood"] for r in sub)
    by = {(r["ood"], r["score"]): r for r in sub}
    n_id = _unique(r["n_id"] for r in sub)
    lines += [f"### ID {_cell(id_name)}, model {_cell(model)} "
              f"(n_id = {', '.join(map(str, n_id))})", "",
              "| OOD set | n_ood | " + " | ".join(_cell(s) for s in scores) + " |",
              "|---|---:|" + "---:|" * len(scores)]
    for ood in oods:
      n_ood = _unique(by[(ood, s)]["n_ood"] for s in scores if (ood, s) in by)
      cells = [f"{by[(ood, s)][first[0]]:.3f} / {by[(ood, s)][second[0]]:.3f}"
               if (ood, s) in by else "–" for s in scores]
      lines.append(f"| {_cell(ood)} | {', '.join(map(str, n_ood))} | " + " | ".join(cells) + " |")
    lines.append("")
  return lines


_RUN_COLUMNS = (("parameters", "parameters"), ("train_steps", "training steps"),
                ("train_seconds_this_run", "train s"), ("score_seconds", "score s"),
                ("final_train_loss_nats", "final loss (nats)"))
_SHORT = 80


def _fmt(v) -> str:
  if isinstance(v, bool) or v is None:
    return str(v)
  if isinstance(v, int):
    return f"{v:,}"
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
  return str(v)


def _models_table(models: dict) -> list[str]:
  """One row per model: size, training, timing, final loss, mean bits/dim of each set."""
  sets = _unique(n for info in models.values() if isinstance(info, dict)
                 for n in (info.get("bits_per_dim_mean") or {}))
  head = ["model", *(h for _, h in _RUN_COLUMNS), *(f"bits/dim {n}" for n in sets)]
  lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  for name, info in models.items():
    info = info if isinstance(info, dict) else {}
    bpd = info.get("bits_per_dim_mean") or {}
    cells = [_fmt(info[k]) if info.get(k) is not None else "–" for k, _ in _RUN_COLUMNS]
    cells += [_fmt(bpd[n]) if n in bpd else "–" for n in sets]
    lines.append(f"| {_cell(name)} | " + " | ".join(_cell(c) for c in cells) + " |")
  return lines + [""]


MODEL_KEYS = ("models", "models_trained")    # meta keys holding {model: {its run facts}}


def _run_section(meta: dict) -> list[str]:
  """The report's "Run" section: a table of the models (``meta['models']`` or
  ``meta['models_trained']``: one dict per model) and the short scalar settings; everything
  else is left to ``meta.json``."""
  lines, table_key = [], None
  for key in MODEL_KEYS:
    models = meta.get(key)
    if isinstance(models, dict) and models and all(isinstance(v, dict) for v in models.values()):
      lines += _models_table(models)
      table_key = key
      break
  short = [(k, v) for k, v in meta.items() if k != table_key and
           (v is None or isinstance(v, (bool, int, float)) or
            (isinstance(v, str) and len(v) <= _SHORT and "\n" not in v))]
  lines += [f"- **{_cell(k)}**: {_code(_fmt(v))}" for k, v in short]
  rest = [k for k, v in meta.items() if k != table_key and (k, v) not in short]
  if rest or table_key:
    lines.append("- the full settings" + (f" ({', '.join(_cell(k) for k in rest)})" if rest else "")
                 + " are in [meta.json](meta.json)")
  return lines + [""]


def _markdown(title: str, command: str, meta: dict, rows: list[dict],
              figures: list[tuple[tuple[str, str], str, str]], sections=(),
              extra_figures=()) -> str:
  lines = [f"# {title}", "", "Command:", "", *_fence(command, "bash"), "", "## Run", "",
           *_run_section(meta)]
  if rows:
    lines += [
        "## AUROC / AUPRC-out", "",
        "OOD is the positive class; a higher score means more OOD. Each cell is "
        "`AUROC / AUPRC-out` (higher is better; chance AUROC is 0.5).", "",
        *_tables(rows, ("auroc", "AUROC"), ("auprc_out", "AUPRC-out")),
        "## FPR80 / AUPRC-in", "",
        "Each cell is `FPR80 / AUPRC-in`: the fraction of ID test samples flagged OOD at the "
        "first threshold that flags at least 80% of the OOD set (lower is better; ties count "
        "in full), and the average precision with ID as the positive class (higher is better).",
        "", *_tables(rows, ("fpr80", "FPR80"), ("auprc_in", "AUPRC-in")),
    ]
  for section in sections:
    lines += [section.rstrip(), ""]
  if figures or extra_figures:
    lines += ["## Figures", ""]
    for name in extra_figures:
      lines += [f"![{name}]({name})", ""]
    for (model, score), hist, roc in figures:
      lines += [f"### {_cell(model)}, {_cell(score)}", "",
                f"![{model} {score} histogram]({hist}) ![{model} {score} ROC]({roc})", ""]
  return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- figures


def _save(fig: Figure, path: str) -> None:
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=120)


def _bin_edges(values: list[np.ndarray]) -> np.ndarray:
  """Shared histogram bins over every set (numpy 'auto' rule, 10..100 bins)."""
  allv = np.concatenate(values)
  edges = np.histogram_bin_edges(allv, bins="auto")
  if not 11 <= len(edges) <= _MAX_BINS + 1:
    edges = np.histogram_bin_edges(allv, bins=int(np.clip(len(edges) - 1, 10, _MAX_BINS)))
  return edges


def _plot_hist(path: str, model: str, score: str, sample: dict) -> None:
  """Density-normalised histograms of the ID set and each OOD set on shared bins."""
  sets = [(f"{sample['id_name']} (ID)", sample["id"])] + list(sample["ood"].items())
  edges = _bin_edges([v for _, v in sets])
  fig = Figure(figsize=(7.0, 4.5))
  ax = fig.add_subplot()
  for i, (name, v) in enumerate(sets):
    color = f"C{i % 10}"
    ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.3, color=color)
    ax.hist(v, bins=edges, density=True, histtype="step", lw=1.4, color=color,
            label=f"{name}, n={v.size}, mean {v.mean():.3g}")
  ax.set_xlabel(sample["xlabel"])
  ax.set_ylabel("density")
  ax.set_title(f"{model}, {score}: ID test vs OOD sets")
  ax.legend(fontsize="small")
  fig.tight_layout()
  _save(fig, path)


def _plot_roc(path: str, model: str, score: str, sample: dict) -> None:
  """ROC curve per OOD set, OOD positive (flag OOD if value >= threshold)."""
  fig = Figure(figsize=(5.5, 5.5))
  ax = fig.add_subplot()
  s_id = sample["id"]
  for i, (name, s_ood) in enumerate(sample["ood"].items()):
    y = np.r_[np.zeros(s_id.size), np.ones(s_ood.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[s_id, s_ood])
    ax.plot(fpr, tpr, color=f"C{(i + 1) % 10}", lw=1.6,
            label=f"{name} (AUROC {metrics.auroc(s_id, s_ood):.3f})")
  ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
  ax.axhline(0.95, ls=":", color="0.6", lw=1, label="TPR 0.95")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_aspect("equal")
  ax.set_xlabel(f"FPR (fraction of {sample['id_name']} flagged OOD)")
  ax.set_ylabel("TPR (fraction of OOD set flagged)")
  ax.set_title(f"ROC, {model}, {score} (OOD positive)")
  ax.legend(loc="lower right", fontsize="small")
  fig.tight_layout()
  _save(fig, path)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# ----------------------------------------------------------------------------- entry point


def write_report(out_dir, *, title: str, rows: list[dict], meta: dict, score_samples: dict,
                 command: str, sections=(), results=None, json_files=None,
                 figures=None, arrays=None) -> dict[str, str]:
  """Writes ``report.md``, ``results.json``, ``meta.json`` and PNG figures into ``out_dir``.

  Args:
    out_dir: output directory (created if missing).
    title: report title (markdown heading).
    rows: one dict per (id, model, score, ood) with exactly the keys ``ROW_KEYS``: the
      names as strings, ``auroc``, ``auprc_in``, ``auprc_out``, ``fpr80``, ``fpr95`` as
      finite numbers and ``n_id``, ``n_ood`` as ints (e.g. ``metrics.ood_metrics`` output).
      May be empty when ``results`` is given (an experiment whose results are not metrics).
    meta: free-form run metadata (numpy values allowed), written to ``meta.json`` and
      listed in the report.
    score_samples: ``{(model, score): {"id_name": str, "id": 1-D array, "ood":
      {ood_name: 1-D array}, "xlabel": str}}``: the per-sample values to plot (e.g. bits/dim
      for the 'nll' score). They must increase with the score (higher = more OOD); the ROC
      curves and their legend AUROCs are computed from them.
    command: the exact command line that produced the run.
    sections: markdown blocks placed after the metric tables.
    results: what ``results.json`` holds instead of ``rows`` (JSON-able).
    json_files: ``{file name: JSON-able object}`` of further JSON files.
    figures: ``{file name: draw(path)}`` of further PNG figures (linked in the report).
    arrays: the flat contents of ``scores.npz`` (``score_file.to_arrays``: every per-image
      score and each set's image indices); none written when empty.

  Returns:
    ``{file name: path}`` for every file written.

  Raises:
    InvalidInputError: malformed rows (missing/extra keys, NaN or inf metrics, duplicates)
      or samples (NaN, empty, not 1-D); raised before anything is written.
  """
  rows = _check_rows(rows) if (rows or results is None) else []
  samples = _check_samples(score_samples)
  if not isinstance(meta, dict):
    raise InvalidInputError(f"meta: expected a dict, got {type(meta).__name__}.")
  meta = _jsonable(meta)
  json_files = {k: _jsonable(v) for k, v in (json_files or {}).items()}
  figures = dict(figures or {})
  reserved = {"report.md", "results.json", "meta.json"}
  for name in list(json_files) + list(figures):
    if name in reserved or "/" in name or not re.fullmatch(r"[A-Za-z0-9_.=-]+", name):
      raise InvalidInputError(f"report: extra file name {name!r} is reserved or not a plain name.")
  out_dir = os.path.abspath(os.fspath(out_dir))
  parent, base = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  recover(out_dir)                                 # leftovers of a killed earlier write
  tmp = tempfile.mkdtemp(prefix=f".{base}{SWAP_TAG}", dir=parent)
  try:
    open(os.path.join(tmp, BUILDING), "w").close()
    names = _render(tmp, title, command, meta, rows, samples, sections, results, json_files,
                    figures)
    if arrays:
      np.savez_compressed(os.path.join(tmp, SCORES_FILE), **arrays)
      names.insert(0, SCORES_FILE)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(names, f)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _swap_in(tmp, out_dir)
  return {name: os.path.join(out_dir, name) for name in names}


MANIFEST = ".report-files.json"
SCORES_FILE = "scores.npz"          # = score_file.FILE
SWAP_TAG = ".report-swap-"          # sibling directories of a write in progress
BUILDING = ".report-building"       # marks a new report being built (not yet swapped in)


def _render(tmp, title, command, meta, rows, samples, sections, results, json_files,
            figures) -> list[str]:
  """Writes every file of the report into ``tmp``; returns their names (report.md last)."""
  names, figs, used = [], [], set()
  for (model, score), sample in samples.items():
    stem_base = _slug(f"{model}_{score}")
    stem, i = stem_base, 2
    while stem in used:
      stem, i = f"{stem_base}-{i}", i + 1
    used.add(stem)
    hist, roc = f"hist_{stem}.png", f"roc_{stem}.png"
    _plot_hist(os.path.join(tmp, hist), model, score, sample)
    _plot_roc(os.path.join(tmp, roc), model, score, sample)
    names += [hist, roc]
    figs.append(((model, score), hist, roc))
  for name, draw in figures.items():
    draw(os.path.join(tmp, name))
    names.append(name)
  for name, obj in json_files.items():
    with open(os.path.join(tmp, name), "w") as f:
      json.dump(obj, f, indent=1, allow_nan=False)
    names.append(name)
  with open(os.path.join(tmp, "results.json"), "w") as f:
    json.dump(rows if results is None else _jsonable(results), f, indent=1, allow_nan=False)
  with open(os.path.join(tmp, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1, allow_nan=False)
  with open(os.path.join(tmp, "report.md"), "w") as f:
    f.write(_markdown(title, command, meta, rows, figs, sections, list(figures)))
  return names + ["results.json", "meta.json", "report.md"]


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps directories ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``);
  False where the system or file system cannot."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
    return False
  raise OSError(err, os.strerror(err), b)


def _swap_in(new: str, out_dir: str) -> None:
  """Puts the complete report in ``new`` at ``out_dir`` in one step, keeping every entry of
  ``out_dir`` that is not part of its previous report (``checkpoints``, a user's files)."""
  if not os.path.isdir(out_dir):
    if os.path.lexists(out_dir):
      shutil.rmtree(new, ignore_errors=True)
      raise InvalidInputError(f"report: {out_dir} exists and is not a directory.")
    os.remove(os.path.join(new, BUILDING))
    os.rename(new, out_dir)                    # atomic: the whole report appears at once
    return
  if not _exchange(new, out_dir):
    _move_files(new, out_dir)                  # no atomic exchange here: file by file
    return
  # out_dir now holds the new report; ``new`` holds the previous contents
  _remove(os.path.join(out_dir, BUILDING))
  _restore_kept(new, out_dir)


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _restore_kept(old: str, out_dir: str) -> None:
  """Moves the entries of a swapped-out directory that are not report files back into
  ``out_dir``, then deletes what is left (the previous report)."""
  report_files = set(_manifest(old)) | {MANIFEST, "report.md", "results.json", "meta.json"}
  present = set(os.listdir(out_dir))
  for name in os.listdir(old):
    if name in report_files or name == BUILDING or name in present:
      continue
    os.rename(os.path.join(old, name), os.path.join(out_dir, name))
  shutil.rmtree(old, ignore_errors=True)


def _move_files(tmp: str, out_dir: str) -> None:
  """Fallback without an atomic exchange: the old ``report.md`` goes first, the new files
  are moved in with ``report.md`` last, then files of the old report not in the new one go."""
  names = _manifest(tmp)
  old = _manifest(out_dir)
  _remove(os.path.join(out_dir, "report.md"))
  for name in names:
    os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
  for name in set(old) - set(names):
    if os.path.isfile(os.path.join(out_dir, name)):
      os.remove(os.path.join(out_dir, name))
  os.replace(os.path.join(tmp, MANIFEST), os.path.join(out_dir, MANIFEST))
  shutil.rmtree(tmp, ignore_errors=True)


def recover(out_dir: str) -> None:
  """Cleans up after a write killed part-way: a new report still being built is deleted; a
  previous directory already swapped out gives its kept entries (``checkpoints``) back."""
  out_dir = os.path.abspath(os.fspath(out_dir))
  parent, base = os.path.split(out_dir)
  try:
    siblings = os.listdir(parent)
  except OSError:
    return
  for name in siblings:
    path = os.path.join(parent, name)
    if not (name.startswith(f".{base}{SWAP_TAG}") and os.path.isdir(path)):
      continue
    if os.path.exists(os.path.join(path, BUILDING)) or not os.path.isdir(out_dir):
      shutil.rmtree(path, ignore_errors=True)
    else:
      _restore_kept(path, out_dir)
  if os.path.isdir(out_dir):
    _remove(os.path.join(out_dir, BUILDING))
    for stale in os.listdir(out_dir):             # temporary dirs of the older writer
      if stale.startswith(".tmp-report-"):
        shutil.rmtree(os.path.join(out_dir, stale), ignore_errors=True)


def _manifest(out_dir: str) -> list[str]:
  """The files of the report last written into ``out_dir`` (plain names only)."""
  try:
    with open(os.path.join(out_dir, MANIFEST)) as f:
      names = json.load(f)
  except (OSError, ValueError):
    return []
  return [n for n in names if isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_.=-]+", n)]


@dataclasses.dataclass
class Result:
  """What an experiment returns; ``write(run, result)`` writes it (the one writer).

  ``rows``: metric rows (``ROW_KEYS``) tabulated and saved as ``results.json``;
  ``results``: a JSON-able replacement for ``results.json`` (experiments whose results are
  not OOD metrics); ``samples``: per-sample scores to plot; ``sections``: markdown after the
  tables; ``json_files`` / ``figures``: further files (``{name: obj}`` / ``{name: draw(path)}``).
  """
  title: str
  meta: dict
  rows: list = dataclasses.field(default_factory=list)
  results: object = None
  samples: dict = dataclasses.field(default_factory=dict)
  sections: list = dataclasses.field(default_factory=list)
  json_files: dict = dataclasses.field(default_factory=dict)
  figures: dict = dataclasses.field(default_factory=dict)
  arrays: dict = dataclasses.field(default_factory=dict)


def write(out_dir, command: str, result: Result) -> dict[str, str]:
  """Writes ``result`` into ``out_dir`` atomically (see ``write_report``)."""
  return write_report(out_dir, title=result.title, rows=result.rows, meta=result.meta,
                      score_samples=result.samples, command=command, sections=result.sections,
                      results=result.results, json_files=result.json_files,
                      figures=result.figures, arrays=result.arrays)
