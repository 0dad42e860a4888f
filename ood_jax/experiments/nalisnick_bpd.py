"""Nalisnick et al. Fig. 1 (table), Figs 2-3 and App. E (Fig. 8): bits/dim of train, test and OOD.

    python -m ood_jax.experiments.nalisnick_bpd                      # cpu preset
    python -m ood_jax.experiments.nalisnick_bpd --preset smoke --out runs/n_bpd_smoke
    python -m ood_jax.experiments.nalisnick_bpd --models glow --pairs cifar10:celeb_a+constant:128

For every pair of ``--pairs`` (default FashionMNIST -> MNIST, notMNIST, uniform noise and the
constant image 0; CIFAR-10 -> SVHN, CelebA, noise and the constant image 128: the paper's
sets, those absent here listed with the reason) trains (or loads from the checkpoint cache
shared with the other Nalisnick experiments) every model of ``--models`` (default Glow,
CV-Glow, the Gated PixelCNN and the VAE; model preset ``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at
``paper``: App. A.1's Glow, see ``glow.py``) and reports the mean bits/dim of the ID
*training* split (a subset the size of the test split), the ID test split and every OOD set,
beside the paper's (Fig. 1: Glow; App. E Fig. 8: random and constant inputs), the NLL AUROC
(OOD positive) and the three-colour histograms of Figs 2-3 (log-likelihood per dimension of
train, test and OOD).

Conventions: bits/dim = NLL / (D log 2) of the 8-bit data; flows with one uniform
dequantisation draw (``log p((x + u) / 256) - D log 256``); the VAE with the preset's IWAE
samples; the PixelCNNs exactly. The Gated PixelCNN is App. A.2's (``gated_pixelcnn.py``; add
``pixelcnnpp`` to ``--models`` for Salimans et al.'s); the paper's VAEs are Rosca et al.'s,
for which the ROSE VAE stands in (``vae.py``). ``constant:v`` is the image whose every pixel is ``v``;
``noise`` uniform pixels.

On colour ID sets only the models of ``--colour-models`` run (default: every model of
``--models``, except at ``cpu``, where only the flows: the colour Gated PixelCNN and the
categorical-256 VAE add about 40 min there; ``--colour-models all`` runs them). The VAE takes
32 x 32 inputs, so its grey sets are resized (``data.conform``); its bits/dim are per
dimension of the 32 x 32 images.

Cost at ``cpu`` (2 cores, cold cache): the ``nalisnick_cpu`` flows train 0.3 epoch (6-9 min
each, 30 min for the four, recorded in ``experiments/results/nalisnick_cpu.md``), the Gated
PixelCNN one epoch (13 min) and the VAE two (17 min) on FashionMNIST; the flows' share is nothing once
another Nalisnick experiment has cached them.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list

# Fig. 1 (Glow) and App. E Fig. 8 (Glow, "random" and "constant" inputs), bits/dim.
PAPER = {
    ("glow", "fashion_mnist"): {"id_train": 2.902, "id_test": 2.958, "mnist": 1.833,
                                "noise": 8.686, "constant:0": 0.339},
    ("glow", "cifar10"): {"id_train": 3.386, "id_test": 3.464, "svhn": 2.389,
                          "noise": 15.773, "constant:128": 0.589},
    ("glow", "mnist"): {"id_test": 1.262},
    ("glow", "svhn"): {"id_test": 2.057},
}
FLOWS = ("glow", "cv_glow", "realnvp")
DEFAULT_PAIRS = ("fashion_mnist:mnist+not_mnist+noise+constant:0,"
                 "cifar10:svhn+celeb_a+noise+constant:128")


def paper_bpd(model: str, id_name: str, which: str):
  """The paper's mean bits/dim of ``which`` (``id_train``, ``id_test`` or an OOD set name)
  under ``model`` trained on ``id_name``, or None."""
  vals = PAPER.get((model, canonical_name(id_name)), {})
  return vals.get(which if which.startswith("id_") or ":" in which else canonical_name(which))


def colour_models(r: Run) -> list[str]:
  """The models run on colour ID sets (``--colour-models``; see the module docstring)."""
  text = r.options.get("colour_models")
  if text is None:
    return [m for m in r.models if m in FLOWS] if r.preset == "cpu" else list(r.models)
  if text.strip() == "all":
    return list(r.models)
  names = split_list(text)
  bad = [m for m in names if m not in r.models]
  if bad:
    raise InvalidInputError(f"--colour-models: {', '.join(bad)} not in --models {','.join(r.models)}.")
  return names


def check(r: Run) -> None:
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()
  colour_models(r)


def _fmt(v) -> str:
  return "–" if v is None else f"{v:.3f}"


def _bpd_hist(path: str, panels: dict, title: str) -> str:
  return figures.histograms(path, panels, xlabel="log-likelihood per dimension (bits)", title=title)


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  rows, table, figs, model_meta = [], [], {}, {}
  runs = [r.for_id(id_name, oods) for id_name, oods in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}       # every model built and checked first
  colour = colour_models(r)
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      if sets.hwc[-1] == 3 and name not in colour:
        continue
      trained = pipeline.train_or_load(ri, name, sets)
      base = {"k": 1} if name in FLOWS else None     # one dequantisation draw for flows
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(ri, trained, sets, scores=["nll"], base=base)["nll"]
        scorer = ri.scorer("nll", name, trained.scores_ckpt_dir, base=base)
        state = scorer.fit(trained.model, trained.variables, sets.train.x)
        n = min(len(sets.test.x), len(sets.train.x))
        vals = {"id_train": scorer.score(state, sets.train.x[:n]),
                "id_test": vals.pop("__id__"), **vals}
      bpd = {k: pipeline.bits_per_dim(v, sets.hwc) for k, v in vals.items()}
      rows += pipeline.metric_rows(ri.id, name, {"nll": {"__id__": vals["id_test"],
                                                         **{k: v for k, v in vals.items()
                                                            if not k.startswith("id_")}}})
      for which, v in bpd.items():
        table.append({"train": ri.id, "model": name, "set": which,
                      "bpd_mean": round(float(np.mean(v)), 4),
                      "bpd_std": round(float(np.std(v)), 4), "n": int(v.size),
                      "paper_bpd": paper_bpd(name, ri.id, which)})
      label = f"{name}_{ri.id}"
      panels = {f"{name} on {ri.id}: {o}": {f"{ri.id} train": -bpd["id_train"],
                                            f"{ri.id} test": -bpd["id_test"], o: -bpd[o]}
                for o in sets.ood}
      figs[f"hist_{label}.png"] = functools.partial(
          _bpd_hist, panels=panels, title=f"{name} trained on {ri.id} (Figs 2-3)")
      model_meta[label] = {**trained.meta(), "train_config": dict(vars(trained.config)),
                           "score_seconds": round(ts.seconds, 1)}
  lines = ["## Mean bits/dim, ours beside the paper's (Fig. 1; App. E Fig. 8)", "",
           "| train | model | set | bits/dim ours | std | paper |", "|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['train']} | {t['model']} | {t['set']} | {t['bpd_mean']:.3f} | "
                 f"{t['bpd_std']:.3f} | {_fmt(t['paper_bpd'])} |")
  lines += ["", "The paper reports Glow only in numbers (Fig. 1, Fig. 8); PixelCNN and VAE as "
            "histograms (Fig. 3): the OOD set (MNIST, SVHN) gets the lower bits/dim under every "
            "model. Our ROSE VAE stands in for Rosca et "
            "al.'s VAEs."]
  if skipped:
    lines += ["", "Sets of the paper not run here:", ""]
    lines += [f"* {s['id']} -> {s['ood']}: {s['reason']}." for s in skipped]
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models": model_meta,
          "data_sources": {ri.id: pipeline.data_sources(by_id[ri.id][ri.models[0]]) for ri in runs}}
  return Result(title=f"Nalisnick et al. Fig. 1: bits/dim of train, test and OOD ({r.preset} preset)",
                meta=meta, rows=rows, sections=["\n".join(lines)],
                json_files={"bpd.json": table}, figures=figs)


EXPERIMENT = cli.Experiment(
    "nalisnick_bpd", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "glow,cv_glow,gated_pixelcnn,vae", "scores": "nll"},
    omit=("--id", "--ood", "--scores"),
    model_presets={"cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help="train:ood+ood pairs, comma-separated (default: the paper's sets)"),
             cli.option("--colour-models", default=None,
                        help="models run on colour ID sets: names, or 'all' (default: all; "
                             "at cpu the flows only)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
