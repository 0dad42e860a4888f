"""Nalisnick et al. App. F (Fig. 9): an ensemble of Glows does not fix the OOD likelihoods.

    python -m ood_jax.experiments.nalisnick_ensemble              # cpu: M = 5, 300 steps each
    python -m ood_jax.experiments.nalisnick_ensemble --preset smoke --out runs/n_ensemble_smoke
    python -m ood_jax.experiments.nalisnick_ensemble --members 3 --member-steps 900

"We compute an 'ensemble predictive distribution' as p(x) = (1/M) sum_m p(x; theta_m)": M Glows
(``--members``, default 5 as the paper; smoke 2) of one architecture, trained independently
from seeds ``seed + m`` on the ID training split of every ``--pairs`` entry whose data is here
(default FashionMNIST -> MNIST and CIFAR-10 -> SVHN, CelebA; the paper's Fig. 9 is CIFAR-10 vs
SVHN). Member 0 is the single model (``pipeline.train_or_load``, in the shared checkpoint cache
under its training config), members 1..M-1 are the WAIC scorer's (``waic`` with
``statistic='predictive'``, cached beside member 0 under ``<its checkpoint>_scores/waic/member<m>``,
the same cache as the WAIC ensembles of the other experiments with the same config). The score
of the ensemble is its predictive's NLL, ``-(logsumexp_m log p(x; theta_m) - log M)``; the single
model's is member 0's NLL; both in eval mode with one dequantisation draw per member and image
(``--score-args waic.k=K`` for the K-draw bound).

Budget: at ``cpu`` every member (member 0 too, so the ensemble is homogeneous) trains
``--member-steps`` (default 300) steps of the ``nalisnick_cpu`` recipe (batch 32, RMSprop;
the warm-up cut to a tenth of the member budget) instead of the recipe's 0.3 epoch (562 / 469
steps), so that M = 5 members of both pairs fit in about an hour on 2 CPU cores (the
``nalisnick_cpu`` Glow took 0.66-1.2 s (FashionMNIST) and 1.0-1.8 s (CIFAR-10) per batch-32
step on 2026-12-02: 5 x 300 x 1.7-3.0 s = 42-75 min, plus a few minutes of scoring; ``--member-steps`` to trade budget for time). At ``smoke`` and ``paper`` the members train the run's budget
(``--member-steps`` or ``--train-steps`` to change it).

Reports, per pair and model: mean bits/dim of the ID train subset (same size as the ID test),
the ID test split and every OOD set under the single model, under the ensemble predictive and
under each member (mean and range over members), the NLL AUROC (OOD positive) of the single
model, of the ensemble and of every member, and the Fig. 9 histograms
(``fig9_<model>_<id>.png``: single model left, ensemble right). Expected (paper): "ensembles did
not significantly change the relative difference between in-distribution and
out-of-distribution" data.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.nalisnick_training_curves import DEFAULT_PAIRS, train_subset
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, slug
from ood_jax.scores.waic import neg_log_predictive

MEMBERS = {"smoke": 2, "cpu": 5, "paper": 5}
CPU_MEMBER_STEPS = 300
BASE = {"k": 1}                  # one dequantisation draw per member and image
SINGLE, ENSEMBLE = "nll", "ensemble_predictive"     # the two scores of the rows


def members(r: Run) -> int:
  m = r.options.get("members")
  return MEMBERS.get(r.preset, 5) if m is None else int(m)


def member_steps(r: Run) -> int | None:
  """Steps per member: ``--member-steps``; at ``cpu`` without ``--train-steps`` or a length in
  ``--train-args``, ``CPU_MEMBER_STEPS``; else None (the run's training config)."""
  s = r.options.get("member_steps")
  if s is not None:
    return int(s)
  own_length = r.train_steps is not None or {"num_steps", "epochs"} & set(r.train_args)
  return CPU_MEMBER_STEPS if r.preset == "cpu" and not own_length else None


def member_config(r: Run, name: str):
  cfg = r.train_configs[name]
  steps = member_steps(r)
  if steps is None:
    return cfg
  # A short member budget keeps a warm-up of at most a tenth of it (not the flows' 200 steps).
  return dataclasses.replace(cfg, num_steps=steps, warmup_steps=min(cfg.warmup_steps, steps // 10))


def scorer(r: Run, name: str | None = None, ckpt_dir: str | None = None, config=None):
  """The run's ``waic`` scorer as the ensemble predictive of ``members(r)`` members."""
  over = {"statistic": "predictive", "members": members(r)}
  if config is not None:
    over["train_config"] = config
  return r.scorer("waic", name, ckpt_dir, base=BASE, **over)


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()
  if members(r) < 2:
    raise InvalidInputError(f"--members must be >= 2 (an ensemble), got {members(r)}.")
  s = r.options.get("member_steps")
  if s is not None and int(s) < 1:
    raise InvalidInputError(f"--member-steps must be >= 1, got {s}.")
  waic_args = r.score_args.get("waic", {})
  if waic_args.get("statistic", "predictive") != "predictive":
    raise InvalidInputError("--score-args waic.statistic: this experiment scores the ensemble "
                            "predictive (statistic=predictive); drop the setting.")
  if "members" in waic_args:
    raise InvalidInputError("--score-args waic.members: give the ensemble size with --members.")
  scorer(r)                                         # the scorer's own checks (k, chunk_size...)


def bpd(nll, hwc) -> float:
  return float(np.mean(pipeline.bits_per_dim(np.asarray(nll, np.float64), hwc)))


def _row(id_name: str, model: str, score: str, ood: str, s_id, s_ood) -> dict:
  return {"id": id_name, "model": model, "score": score, "ood": ood,
          **metrics.ood_metrics(s_id, s_ood)}


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  runs = [r.for_id(i, o) for i, o in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}       # every model built and checked first
  m_count = members(r)
  rows, samples, figs, model_meta, summary, sections = [], {}, {}, {}, [], []
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      config = member_config(ri, name)
      single = pipeline.train_or_load(ri, name, sets, config=config)
      sc = scorer(ri, name, single.scores_ckpt_dir, config)
      with pipeline.Timer() as tm:
        state = sc.fit(single.model, single.variables, sets.train.x)   # trains members 1..M-1
      named = {"__train__": train_subset(sets.train.x, len(sets.test.x), ri.seed),
               "__id__": sets.test.x, **{o: s.x for o, s in sets.ood.items()}}
      with pipeline.Timer() as ts:
        member_state = sc.member_state(single.model, state)
        lps = {k: sc.score(member_state, x).astype(np.float64) for k, x in named.items()}
        ens = {k: sc.score(state, x) for k, x in named.items()}       # the scorer's statistic
      singles = {k: -v[:, 0] for k, v in lps.items()}
      drift = max(float(np.max(np.abs(np.asarray(neg_log_predictive(v.T)) - ens[k])))
                  for k, v in lps.items())
      label = f"{name}_{ri.id}"
      set_names = {"__train__": f"{ri.id} train (subset)", "__id__": f"{ri.id} test",
                   **{o: o for o in sets.ood}}
      for o in sets.ood:
        rows.append(_row(ri.id, name, SINGLE, o, singles["__id__"], singles[o]))
        rows.append(_row(ri.id, name, ENSEMBLE, o, ens["__id__"], ens[o]))
      for score, vals in ((SINGLE, singles), (ENSEMBLE, ens)):
        samples[(label, score)] = {
            "id_name": f"{ri.id} test", "xlabel": "bits/dim",
            "id": pipeline.bits_per_dim(vals["__id__"], sets.hwc),
            "ood": {o: pipeline.bits_per_dim(vals[o], sets.hwc) for o in sets.ood}}
      per_set = []
      for k, title in set_names.items():
        member_bpd = [bpd(-lps[k][:, m], sets.hwc) for m in range(m_count)]
        per_set.append({"set": title, "n": int(len(named[k])), "single": bpd(singles[k], sets.hwc),
                        "ensemble": bpd(ens[k], sets.hwc),
                        "members_mean": float(np.mean(member_bpd)),
                        "members_min": float(np.min(member_bpd)),
                        "members_max": float(np.max(member_bpd))})
      per_ood = []
      for o in sets.ood:
        a_single = metrics.ood_metrics(singles["__id__"], singles[o])["auroc"]
        a_ens = metrics.ood_metrics(ens["__id__"], ens[o])["auroc"]
        a_members = [metrics.ood_metrics(-lps["__id__"][:, m], -lps[o][:, m])["auroc"]
                     for m in range(m_count)]
        gap = lambda v: bpd(v[o], sets.hwc) - bpd(v["__id__"], sets.hwc)
        per_ood.append({"ood": o, "auroc_single": a_single, "auroc_ensemble": a_ens,
                        "auroc_change": a_ens - a_single, "auroc_members": a_members,
                        "auroc_members_min": min(a_members), "auroc_members_max": max(a_members),
                        "ensemble_within_member_range":
                            bool(min(a_members) <= a_ens <= max(a_members)),
                        "gap_bpd_single": gap(singles), "gap_bpd_ensemble": gap(ens)})
      summary.append({"id": ri.id, "model": name, "members": m_count, "bits_per_dim": per_set,
                      "ood": per_ood})
      model_meta[label] = {**single.meta(), "members": m_count,
                           "member_train_config": dataclasses.asdict(config),
                           "member_checkpoints": f"{sc.ckpt_dir}/member<1..{m_count - 1}>",
                           "fit_seconds": round(tm.seconds, 1),
                           "score_seconds": round(ts.seconds, 1),
                           "predictive_vs_member_logprobs_max_abs_nats": drift}
      hist = {f"{name}, single model (member 0)": {set_names[k]: pipeline.bits_per_dim(v, sets.hwc)
                                                   for k, v in singles.items()},
              f"{name}, ensemble predictive (M = {m_count})": {
                  set_names[k]: pipeline.bits_per_dim(v, sets.hwc) for k, v in ens.items()}}
      fname = f"fig9_{slug(name)}_{slug(ri.id)}.png"
      figs[fname] = lambda path, h=hist, t=f"{name} trained on {ri.id}": figures.histograms(
          path, h, xlabel="bits/dim", title=t)
      sections.append("\n".join(_section(name, ri.id, m_count, config, per_set, per_ood, fname)))
  sections.append(
      "Paper (App. F, Fig. 9, five Glows on CIFAR-10 vs SVHN): \"ensembles did not significantly "
      "change the relative difference between in-distribution (CIFAR-10) and out-of-distribution "
      "(SVHN)\": SVHN still gets the higher likelihood.")
  if skipped:
    sections.append("\n".join(availability.skipped_lines(skipped)[1:]))
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "members": m_count, "member_steps": member_steps(r), "models": model_meta,
          "summary": summary,
          "data_sources": {ri.id: pipeline.data_sources(by_id[ri.id][ri.models[0]]) for ri in runs}}
  return Result(title=f"Nalisnick et al. App. F: ensemble of Glows ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, sections=sections,
                json_files={"ensemble.json": summary}, figures=figs)


def _section(name, id_name, m, config, per_set, per_ood, fname) -> list[str]:
  budget = f"{config.num_steps} steps" if config.num_steps else f"{config.epochs:g} epochs"
  lines = [f"## {name} trained on {id_name}: single model vs ensemble predictive (M = {m}, "
           f"{budget} each)", "",
           "| set | n | bits/dim single | bits/dim ensemble | members' mean (min – max) |",
           "|---|---:|---:|---:|---|"]
  for s in per_set:
    lines.append(f"| {s['set']} | {s['n']} | {s['single']:.3f} | {s['ensemble']:.3f} | "
                 f"{s['members_mean']:.3f} ({s['members_min']:.3f} – {s['members_max']:.3f}) |")
  lines += ["", "| OOD | AUROC single | AUROC ensemble | change | members' AUROC (min – max) | "
            "ensemble within members' range | bpd gap OOD − ID test, single | ensemble |",
            "|---|---:|---:|---:|---|---|---:|---:|"]
  for o in per_ood:
    lines.append(f"| {o['ood']} | {o['auroc_single']:.3f} | {o['auroc_ensemble']:.3f} | "
                 f"{o['auroc_change']:+.3f} | {o['auroc_members_min']:.3f} – "
                 f"{o['auroc_members_max']:.3f} | "
                 f"{'yes' if o['ensemble_within_member_range'] else 'no'} | "
                 f"{o['gap_bpd_single']:+.3f} | {o['gap_bpd_ensemble']:+.3f} |")
  lines += ["", "AUROC: OOD positive, scored by NLL (single model: member 0) or by the ensemble "
            "predictive's NLL; a negative bits/dim gap means the OOD set is the more likely one.",
            "", f"![{fname}]({fname})"]
  return lines


EXPERIMENT = cli.Experiment(
    "nalisnick_ensemble", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "glow", "scores": "nll,waic"}, omit=("--id", "--ood", "--scores"),
    model_presets={"smoke": "smoke", "cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--members", type=int, default=None,
                        help="ensemble size M (default: smoke 2, cpu 5, paper 5)"),
             cli.option("--member-steps", type=int, default=None,
                        help=f"training steps of every member (default: cpu {CPU_MEMBER_STEPS}; "
                             "else the run's training config)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
