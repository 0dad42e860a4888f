"""Delta's AUROC as the second test ratio r2 varies, r1 -> 0 (Song et al. Table 5).

    python -m ood_jax.experiments.table5                         # cpu preset, VAE, FashionMNIST
    python -m ood_jax.experiments.table5 --r2 0.15,0.3,0.5,0.9 --models vae,realnvp

``Delta_{b,r1,r2}(x) = |S_{b,r1}(x) - S_{b,r2}(x)|`` with ``r1 = --r1`` (default 0: every
test sample alone among b - 1 training samples, m = 1) and each ``r2`` of ``--r2``;
S_{b,r1} is computed once per set and shared by every r2. For each model trained on the
ID split (checkpoints shared with ``table2``), AUROC / AUPRC of Delta between the ID test
set and each OOD set (OOD positive). Writes ``report.md`` (columns = ``delta_r2=<r2>``),
``results.json`` and ``meta.json`` (no figures). Train-mode statistics use ``--bn-k``
importance samples and ``--rounds`` rounds (``--score-args bn_mixed.K=...`` overrides).
"""

from __future__ import annotations

import sys

import numpy as np

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import bn_settings, cli, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list

DEFAULT_R2 = "0.15,0.3,0.5,0.9"


def ratios(arg: str) -> list[float]:
  try:
    r2s = [float(v) for v in split_list(arg)]
  except ValueError:
    raise InvalidInputError(f"--r2: expected comma-separated numbers in [0, 1], got {arg!r}.") from None
  if not r2s:
    raise InvalidInputError("--r2: no ratios given.")
  return r2s


def _scorer(r: Run, r2: float):
  return r.scorer("bn_mixed", base=bn_settings.bn_settings(r, r1=r.options["r1"], r2=r2))


def check(r: Run) -> None:
  for r2 in ratios(r.options["r2"]):
    _scorer(r, r2)                   # bad b / r / K: now


def deltas(scorer, state, x: np.ndarray, r1: float, r2s: list[float]) -> dict[float, np.ndarray]:
  """``{r2: Delta_{b,r1,r2}(x)}``, nats; S_{b,r1} once (stream 0), r2 number i on stream i+1."""
  s1 = scorer.mixed_log_prob(state, x, r1, stream=0)
  return {r2: np.abs(s1 - scorer.mixed_log_prob(state, x, r2, stream=i + 1))
          for i, r2 in enumerate(r2s)}


def run(r: Run) -> Result:
  r2s, r1 = ratios(r.options["r2"]), r.options["r1"]
  by_model = pipeline.sets_for(r)
  rows, info, notes = [], {}, {}
  for name in r.models:
    sets = by_model[name]
    trained = pipeline.train_or_load(r, name, sets)
    if not bn_settings.has_batchnorm(trained.variables):
      notes[name] = "no BatchNorm (no train mode): skipped"
      continue
    scorer = _scorer(r, max(r2s))
    state = scorer.fit(trained.model, trained.variables, sets.train.x)
    d_id = deltas(scorer, state, sets.test.x, r1, r2s)
    for ood_name, ood in sets.ood.items():
      d_ood = deltas(scorer, state, ood.x, r1, r2s)
      for r2 in r2s:
        rows.append({"id": r.id, "model": name, "score": f"delta_r2={r2:g}",
                     "ood": ood_name, **metrics.ood_metrics(d_id[r2], d_ood[r2])})
    info[name] = {**trained.meta(), "input_shape": list(sets.hwc),
                  "mean_delta_id_test": {f"{r2:g}": float(np.mean(d_id[r2])) for r2 in r2s}}
  if not rows:
    raise InvalidInputError(f"no model could be scored: {notes}.")
  meta = {**r.settings_meta(), "r1": r1, "r2": r2s, "models": info, "notes": notes,
          "scorers": {"bn_mixed": r.scorer_meta("bn_mixed", base=bn_settings.bn_settings(
              r, r1=r1, r2=max(r2s)))}}
  return Result(title=f"Table 5 (Song et al.): Delta AUROC vs r2, r1 = {r1:g}, {r.id} "
                      f"({r.preset} preset)", meta=meta, rows=rows)


EXPERIMENT = cli.Experiment(
    "table5", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "vae", "scores": "bn_mixed"}, omit=("--scores",),
    options=bn_settings.OPTIONS + (
        cli.option("--r1", type=float, default=0.0,
                   help="first test ratio (default 0: one test sample per batch)"),
        cli.option("--r2", default=DEFAULT_R2,
                   help=f"comma-separated second ratios (default {DEFAULT_R2})")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
