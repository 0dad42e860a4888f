"""Bits/dim in eval mode and BatchNorm train mode, and the mean Delta (Song et al. Table 1).

    python -m ood_jax.experiments.table1                        # cpu preset, FashionMNIST
    python -m ood_jax.experiments.table1 --preset smoke --models vae --out runs/t1_smoke

For each model (default ``realnvp,vae,pixelcnnpp``) trained on the ID training split (the
checkpoint cache is shared with the other experiments run with the same ``--ckpt-dir``),
and for the ID test set and every OOD set:

* ``eval bpd``: mean bits/dim in eval mode (running BatchNorm statistics) computed exactly
  as the train-mode value — the same batches, importance samples (``--bn-k``) and
  dequantisation noise (``bn_train_bpd`` with ``parts='none'``) — so ``train - eval`` is a
  paired difference with no estimator bias between its two terms;
* ``eval bpd (nll)``: mean bits/dim of ``nll`` with the preset's ``k`` (a tighter IWAE bound
  for latent models; the value to compare across models), for every model;
* ``train bpd``: mean bits/dim in train mode, batches of ``--b`` images of that set alone
  (``bn_train_bpd``); the gap ``train - eval`` is large for OOD sets, small for ID data;
* ``mean Delta``: mean of ``|S_{b,r1} - S_{b,r2}|`` (``bn_mixed``), nats per image.

Train-mode statistics use ``--bn-k`` importance samples and ``--rounds`` Monte-Carlo rounds
(default: the preset's, 1 and 1 on smoke and cpu to stay affordable on a CPU; the scorers'
own, 16 and 4, on paper); ``nll`` uses the preset's k; ``--score-args bn_mixed.K=4`` and the
like override them. The scores are fixed (no ``--scores``). A model without BatchNorm (Glow)
gets its eval bpd and a note instead of the others. Writes ``report.md``, ``results.json``
(one row per model x set) and ``meta.json``.
"""

from __future__ import annotations

import sys

import numpy as np

from ood_jax.experiments import bn_settings, cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

PAPER = "Song et al. (2019) Table 1 reports bits/dim for models trained on their full budgets; " \
        "compare the gap `train - eval`, not the absolute values."


def _scorers(r: Run):
  return (r.scorer("nll"), r.scorer("bn_train_bpd", base=bn_settings.bn_settings(r)),
          r.scorer("bn_mixed", base=bn_settings.bn_settings(r, r1=r.options["r1"], r2=r.options["r2"])),
          r.scorer("bn_train_bpd", base=bn_settings.bn_settings(r, parts="none")))


def check(r: Run) -> None:
  _scorers(r)            # bad b / r / K: now, before any work


def set_rows(r: Run, trained: pipeline.Trained, sets: pipeline.Sets) -> list[dict]:
  """One row per set (ID test first): eval bpd (paired with train mode, and by ``nll``),
  train bpd, their paired gap and the mean Delta."""
  named = {f"{r.id} (ID test)": sets.test.x, **{n: v.x for n, v in sets.ood.items()}}
  bn = bn_settings.has_batchnorm(trained.variables)
  nll, bpd, delta, ev_bpd = _scorers(r)
  nll_state = nll.fit(trained.model, trained.variables, None)
  if bn:
    bpd_state = bpd.fit(trained.model, trained.variables, None)
    ev_state = ev_bpd.fit(trained.model, trained.variables, None)
    delta_state = delta.fit(trained.model, trained.variables, sets.train.x)
  rows = []
  for set_name, x in named.items():
    ev_nll = float(np.mean(pipeline.bits_per_dim(nll.score(nll_state, x), sets.hwc)))
    tr = float(np.mean(bpd.score(bpd_state, x))) if bn else None
    ev = float(np.mean(ev_bpd.score(ev_state, x))) if bn else ev_nll
    dm = float(np.mean(delta.score(delta_state, x))) if bn else None
    rows.append({"model": trained.name, "set": set_name, "n": int(len(x)), "eval_bpd": ev,
                 "eval_bpd_nll": ev_nll, "train_bpd": tr,
                 "train_minus_eval": None if tr is None else tr - ev, "delta_mean": dm})
  return rows


def markdown(rows: list[dict], notes: list[str], k_nll: int, k_bn) -> str:
  lines = ["## Bits/dim, eval vs train mode", "",
           "Bits/dim of the discrete 8-bit data (lower = more likely); train mode = BatchNorm "
           "with the statistics of a batch of the same set; `eval bpd` uses the same batches, "
           f"importance samples (k = {k_bn}) and noise as `train bpd`, so `train - eval` is "
           f"paired; `eval bpd (nll)` is the `nll` score with k = {k_nll}. Delta = mean "
           "|S_{b,r1} - S_{b,r2}| in nats per image. " + PAPER, "",
           "| model | set | n | eval bpd | eval bpd (nll) | train bpd | train - eval | mean Delta |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
  fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
  for x in rows:
    lines.append(f"| {x['model']} | {x['set']} | {x['n']} | {fmt(x['eval_bpd'])} | "
                 f"{fmt(x['eval_bpd_nll'])} | {fmt(x['train_bpd'])} | "
                 f"{fmt(x['train_minus_eval'])} | {fmt(x['delta_mean'], 2)} |")
  if notes:
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
  return "\n".join(lines)


def run(r: Run) -> Result:
  by_model = pipeline.sets_for(r)
  rows, info, notes = [], {}, []
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    if not bn_settings.has_batchnorm(trained.variables):
      notes.append(f"{name}: no BatchNorm (no train mode), eval bpd only.")
    rows += set_rows(r, trained, sets)
    info[name] = {**trained.meta(), "input_shape": list(sets.hwc)}
  nll, bpd = _scorers(r)[:2]
  meta = {**r.settings_meta(), "models": info,
          "scorers": {n: r.scorer_meta(n, base=b) for n, b in (
              ("nll", None), ("bn_train_bpd", bn_settings.bn_settings(r)),
              ("bn_mixed", bn_settings.bn_settings(r, r1=r.options["r1"], r2=r.options["r2"])))},
          "eval_bpd": "bn_train_bpd with parts='none' (same batches, samples and noise)"}
  return Result(title=f"Table 1 (Song et al.): bits/dim, eval vs train mode, {r.id} ({r.preset} preset)",
                meta=meta, results=rows, sections=[markdown(rows, notes, nll.k, bpd.k)])


EXPERIMENT = cli.Experiment(
    "table1", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp,vae,pixelcnnpp", "scores": "nll,bn_train_bpd,bn_mixed"},
    omit=("--scores",),
    options=bn_settings.OPTIONS + (
        cli.option("--r1", type=float, default=0.1, help="Delta's first test ratio (default 0.1)"),
        cli.option("--r2", type=float, default=0.9, help="Delta's second test ratio (default 0.9)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
