"""Chen's thesis, 3.3.4 (Figs 3.3-3.6): weak and strong backbones, ID vs OOD likelihoods.

    python -m ood_jax.experiments.chen_backbones                       # cpu preset
    python -m ood_jax.experiments.chen_backbones --preset smoke --out runs/chen_bb_smoke
    python -m ood_jax.experiments.chen_backbones --models vae_gaussian --pairs fashion_mnist:mnist

For every pair of ``--pairs`` that exists here (``chen_common``: FashionMNIST -> MNIST and
CIFAR-10 -> CelebA; the thesis' CelebA -> SVHN / LSUN and CIFAR-10 -> SVHN are listed with
the reason) trains (or loads from the checkpoint cache shared with the other Chen
experiments) every backbone of ``--models`` (default the AE, the categorical VAE, the VAE
with the Gaussian decoder and the GAN-VAE) on the ID training split and reports:

* histograms of the NLL, ID test vs OOD, per likelihood model (Figs 3.4, 3.6a): IWAE with
  the preset's ``k`` samples (``nll``), shown in bits/dim; the
  Gaussian decoders' values are densities of the dequantised data in the repository's
  convention (``likelihoods.py``: ``log N((x + 1/2) / 256) - D log 256``), the categorical
  VAE's a discrete probability;
* the reconstruction error ``recon_error`` (sum of squared errors on [0, 1] of the decoder mean
  at the posterior mean) for every backbone, the AE's only score (Fig. 3.3c);
* reconstruction grids: ID test and OOD images over their reconstructions (Figs 3.3, 3.5,
  3.6b), and the decoder's mean at prior samples of the generative backbones (the GAN-VAE's
  after re-estimating its decoder's BatchNorm statistics on prior samples, 3.3.5);
* AUROC (OOD positive) of every score per backbone, beside the thesis' finding: with the
  categorical decoder OOD gets the higher likelihood; with the Gaussian decoder "ID > OoD"
  on FashionMNIST -> MNIST (Fig. 3.4); the GAN-VAE "ID > OoD" on CelebA -> SVHN (Fig. 3.6a).
  The thesis gives no numbers for these figures;
* FID (3.3.2) of decoder-mean prior samples against the ID test images, only with
  ``--fid-weights`` (pytorch-fid's Inception weights as .npz, ``ood_jax/models/fid_inception.py``);
  without them the report says FID was not computed (no substitute network).

Cost at ``cpu`` (2 cores, cold cache; the other Chen experiments then load the checkpoints):
estimated from step times measured beside another job on 2026-12-02, to be replaced by the
recorded run's: the GAN-VAE's 4000 steps at batch 32 (0.25 s grey, 0.5-0.87 s colour), the
categorical VAE's 2 epochs of FashionMNIST (0.45-0.8 s per batch-64 step; not run on colour
sets at ``cpu``, ``--colour-models``), the Gaussian VAE and the AE 2 epochs each (0.1 s grey,
0.25-0.44 s colour): about 80 min of training for the two pairs, plus a few minutes of IWAE.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from ood_jax.experiments import availability, chen_common, cli, figures, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

# The thesis' findings where a pair runs here (its CelebA -> SVHN figures, 3.5-3.6, do not:
# vanilla VAE OOD > ID, GAN-VAE ID > OoD; they are quoted in the report).
THESIS = {
    ("vae", "fashion_mnist"): "OOD > ID (Figs 3.2-3.3: the Likelihood-Regret VAE)",
    ("vae_gaussian", "fashion_mnist"): "ID > OoD (Fig. 3.4)",
}
N_GRID = 8


def check(r: Run) -> None:
  chen_common.check_run(r, chen_common.BACKBONES, "not among the backbones")
  fid_net(r)                                   # a bad weight file fails before any training
  if int(r.options["fid_n"]) < 2:
    from ood_jax.errors import InvalidInputError
    raise InvalidInputError(f"--fid-n must be at least 2, got {r.options['fid_n']}.")


def fid_net(r: Run):
  """The FID feature network of ``--fid-weights`` (pytorch-fid's Inception weights as .npz),
  or None: then no FID is computed and the report says why (3.3.2; nothing else stands in)."""
  path = r.options.get("fid_weights")
  if not path:
    return None
  from ood_jax.models import fid_inception
  return fid_inception.load_feature_net(path)


def fid_of(net, trained, sets, n: int, seed: int) -> float:
  """FID between ``n`` decoder-mean prior samples and the first ``n`` ID test images."""
  from ood_jax import fid
  x = sets.test.x[:n]
  return fid.fid(net(chen_common.samples(trained, len(x), seed)), net(x))


def scores_of(name: str) -> list[str]:
  return ["recon_error"] if name == "ae" else ["nll", "recon_error"]


def run(r: Run) -> Result:
  runs, runnable, skipped = chen_common.runs_for(r)
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}        # every model built first
  rows, table, samples, figs, info = [], [], {}, {}, {}
  net, fids = fid_net(r), []
  for ri in runs:
    for name in chen_common.models_for(r, ri, by_id[ri.id]):
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      with pipeline.Timer() as ts:
        vals = pipeline.score_all(ri, trained, sets, scores=scores_of(name))
      rows += pipeline.metric_rows(ri.id, name, vals)
      samples.update(pipeline.samples_for(ri.id, f"{name}_{ri.id}", vals, sets.hwc))
      for score, v in vals.items():
        for set_name, s in v.items():
          which = f"{ri.id} test (ID)" if set_name == "__id__" else set_name
          mean = float(np.mean(chen_common.nats_to_bpd(s, sets.hwc) if score == "nll" else s))
          table.append({"train": ri.id, "model": name, "score": score, "set": which,
                        "mean": round(mean, 4), "n": int(len(s))})
      label = f"{name}_{ri.id}"
      x_id = sets.test.x[:N_GRID]
      grid = {f"{ri.id} test": x_id, "reconstruction": chen_common.reconstruct(trained, x_id)}
      for o, s in sets.ood.items():
        grid[o] = s.x[:N_GRID]
        grid[f"{o} reconstruction"] = chen_common.reconstruct(trained, s.x[:N_GRID])
      figs[f"recon_{label}.png"] = functools.partial(
          figures.image_grid, rows=grid, title=f"{name} trained on {ri.id}: reconstructions")
      if name != "ae":
        figs[f"samples_{label}.png"] = functools.partial(
            figures.samples_grid, images_uint8=chen_common.samples(trained, 16, ri.seed),
            title=f"{name} trained on {ri.id}: decoder mean at prior samples")
      if net is not None and name != "ae":
        with pipeline.Timer() as tf:
          fids.append({"train": ri.id, "model": name,
                       "fid": round(fid_of(net, trained, sets, int(r.options["fid_n"]), ri.seed), 2)})
        fids[-1]["seconds"] = round(tf.seconds, 1)
      info[label] = {**chen_common.backbone_meta(trained), "score_seconds": round(ts.seconds, 1)}
  lines = ["## AUROC per backbone (OOD positive), beside the thesis' finding", "",
           "| train | model | score | OOD | AUROC | thesis |", "|---|---|---|---|---:|---|"]
  for row in rows:
    lines.append(f"| {row['id']} | {row['model']} | {row['score']} | {row['ood']} | "
                 f"{row['auroc']:.3f} | {THESIS.get((row['model'], row['id']), '–') if row['score'] == 'nll' else '–'} |")
  lines += ["", "AUROC < 0.5 on `nll` means the OOD set gets the higher likelihood. Thesis on "
            "its CelebA -> SVHN pair (not available here): the vanilla VAE gives SVHN the higher "
            "likelihood (Fig. 3.5), the GAN-VAE \"ID > OoD\" (Fig. 3.6a). "
            f"`nll` is IWAE with k = {r.k} (the thesis: K = 5 and 50, \"consistent\").",
            "", chen_common.GAUSSIAN_FLOOR_NOTE, "",
            "## Means per set", "", "Bits/dim for `nll`; squared error on [0, 1] summed over the "
            "image for `recon_error`.", "",
            "| train | model | score | set | mean | N |", "|---|---|---|---|---:|---:|"]
  lines += [f"| {t['train']} | {t['model']} | {t['score']} | {t['set']} | {t['mean']:.4f} | {t['n']} |"
            for t in table]
  lines += ["", "## FID (3.3.2)", ""]
  if net is None:
    lines += ["Not computed: no Inception weights here (`--fid-weights PATH`: pytorch-fid's "
              "`pt_inception-2015-12-05` state dict saved as .npz; no other network stands in). "
              "Thesis: GAN-VAE 4.16 on CIFAR-10 (its own training and FID protocol)."]
  else:
    lines += [f"Decoder-mean prior samples against the first {r.options['fid_n']} ID test images "
              "(pytorch-fid's Inception from the given weights; our Flax port, not checked against "
              "pytorch-fid here). Thesis: GAN-VAE 4.16 on CIFAR-10.", "",
              "| train | model | FID |", "|---|---|---:|"]
    lines += [f"| {f['train']} | {f['model']} | {f['fid']:.2f} |" for f in fids]
  lines += chen_common.colour_note(r, by_id) + availability.skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "data_sources": chen_common.data_sources(runs, by_id)}
  return Result(title=f"Chen 3.3.4: backbones, ID vs OOD likelihood ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, sections=["\n".join(lines)],
                json_files={"means.json": table, "fid.json": fids}, figures=figs)


EXPERIMENT = cli.Experiment(
    "chen_backbones", run, description=__doc__.split("\n\n")[0],
    defaults={"models": ",".join(chen_common.BACKBONES), "scores": "nll"},
    omit=("--id", "--ood", "--scores"),
    options=(cli.option("--pairs", default=chen_common.DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {chen_common.DEFAULT_PAIRS})"),
             cli.option("--colour-models", default=None, help=chen_common.COLOUR_OPTION_HELP),
             cli.option("--fid-weights", default=None,
                        help="pytorch-fid Inception weights (.npz of its state dict) for FID; "
                             "default: no FID"),
             cli.option("--fid-n", type=int, default=1000,
                        help="images per side of the FID (default 1000)"),),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
