"""Sweeps over model variants (Kirichenko et al.'s masks and st-net bottlenecks): for every
ID set and every variant (module settings over the run's model preset), train (or load) the
model, score NLL on the ID test split and the OOD sets, and collect rows, histograms and
sample grids for the report.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from ood_jax.experiments import figures, pipeline
from ood_jax.experiments.run import Run


@dataclasses.dataclass
class Sweep:
  """What a sweep collected: metric rows, report histograms, figures, per-variant summaries
  and the trained models (``{(id, label): (Trained, Sets)}``)."""
  rows: list = dataclasses.field(default_factory=list)
  samples: dict = dataclasses.field(default_factory=dict)
  figures: dict = dataclasses.field(default_factory=dict)
  summary: list = dataclasses.field(default_factory=list)
  trained: dict = dataclasses.field(default_factory=dict)


def model_samples(trained: pipeline.Trained, n: int, seed: int, temperature: float = 1.0):
  """``n`` uint8 samples of a trained model (eval mode)."""
  m = trained.model
  return np.asarray(m.apply(trained.variables, jax.random.PRNGKey(seed), n, temperature,
                            method=type(m).sample))


def sweep(r: Run, model: str, runs: list[Run], variants_of, n_samples: int = 16) -> Sweep:
  """``variants_of(run_for_id, sets) -> {label: module settings}``; every variant of every
  ID is built (checked) before anything trains."""
  out = Sweep()
  plans = []
  for ri in runs:
    sets = pipeline.sets_for(ri, models=[model])[model]
    variants = variants_of(ri, sets)
    for over in variants.values():
      ri.make_model(model, sets.hwc, **over)
    plans.append((ri, sets, variants))
  for ri, sets, variants in plans:
    for label, over in variants.items():
      trained = pipeline.train_or_load(ri, model, sets, overrides=over, label=label)
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(ri, trained, sets, scores=["nll"], base={"k": 1})  # one draw
      name = f"{model}[{label}]"
      rows = pipeline.metric_rows(ri.id, name, vals)
      out.rows += rows
      out.samples.update(pipeline.samples_for(ri.id, f"{label}_{ri.id}", vals, sets.hwc))
      bpd = {("id_test" if k == "__id__" else k): float(np.mean(pipeline.bits_per_dim(v, sets.hwc)))
             for k, v in vals["nll"].items()}
      for row in rows:
        out.summary.append({"id": ri.id, "variant": label, "settings": dict(over), "ood": row["ood"],
                            "auroc": round(row["auroc"], 4), "bpd_id_test": round(bpd["id_test"], 4),
                            "bpd_ood": round(bpd[row["ood"]], 4),
                            "ood_above_id_on_average": bpd[row["ood"]] < bpd["id_test"],
                            "train_steps": trained.result.step, "score_seconds": round(ts.seconds, 1)})
      imgs = model_samples(trained, n_samples, ri.seed)
      out.figures[f"samples_{label}_{ri.id}.png"] = functools.partial(
          figures.samples_grid, images_uint8=imgs, title=f"{name} samples, trained on {ri.id}")
      out.trained[(ri.id, label)] = (trained, sets)
  return out


def summary_table(summary: list[dict], paper_note=None) -> str:
  """Markdown: one line per (ID, variant, OOD): AUROC and mean bits/dim ID vs OOD."""
  lines = ["| train | variant | OOD | AUROC | bits/dim ID test | bits/dim OOD | OOD more likely on average |",
           "|---|---|---|---|---|---|---|"]
  for s in summary:
    lines.append(f"| {s['id']} | {s['variant']} | {s['ood']} | {s['auroc']:.3f} | "
                 f"{s['bpd_id_test']:.3f} | {s['bpd_ood']:.3f} | "
                 f"{'yes' if s['ood_above_id_on_average'] else 'no'} |")
  return "\n".join(lines)
