"""Kirichenko et al. App. K and L (Figs 10, 14): an st-net bottleneck changes the likelihood ranking.

    python -m ood_jax.experiments.kirichenko_bottleneck              # cpu preset
    python -m ood_jax.experiments.kirichenko_bottleneck --preset smoke --out runs/k_bneck_smoke

RealNVP (the run's model preset: ``kirichenko_cpu`` at ``cpu``, ``kirichenko`` at ``paper``)
whose st-networks have no skip connections from the intermediate blocks to the output (the
paper's baseline: "a standard deep convolutional residual network without additional skip
connections ... which were used in Dinh et al."), and the same with a bottleneck of dimension
l after the middle block ("a pair of fully-connected layers projecting to a space of
dimension l and back"; linear, as the reference code), l in ``--grey-dims`` (10, 50, 100) for
grey ID sets and ``--colour-dims`` (30, 80, 150) for colour ones. Per variant: NLL AUROC,
mean bits/dim of ID and OOD, histograms, samples; and the coupling-layer figure of the
l = 10 (smallest grey l) model (Fig. 14m). The paper's colour set is CelebA (no training split
here): CIFAR-10 stands in. Expected (paper): "as we decrease l, the likelihood of the OOD
data decreases but FashionMNIST likelihood stays the same"; l = 50, 100 put FashionMNIST above
MNIST.
"""

from __future__ import annotations

import sys

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, variants
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run, split_list

DEFAULT_PAIRS = "fashion_mnist:mnist+not_mnist,cifar10:celeb_a+svhn"


def dims(text: str, flag: str) -> list[int]:
  try:
    out = [int(v) for v in split_list(text)]
  except ValueError:
    raise InvalidInputError(f"{flag}: expected comma-separated integers, got {text!r}.") from None
  if min(out, default=1) < 1:
    raise InvalidInputError(f"{flag}: dimensions must be >= 1, got {text!r}.")
  return out


def variants_for(channels: int, grey: list[int], colour: list[int]) -> dict[str, dict]:
  """``{label: RealNVP settings}``: the skip-free baseline, then one per bottleneck l."""
  out = {"baseline": {"skip": False}}
  for l in (grey if channels == 1 else colour):
    out[f"l{l}"] = {"skip": False, "bottleneck": l}
  return out


def check(r: Run) -> None:
  dims(r.options["grey_dims"], "--grey-dims")
  dims(r.options["colour_dims"], "--colour-dims")
  availability.parse_pairs(r.options["pairs"])     # syntax now; data availability in run()


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  grey, colour = dims(r.options["grey_dims"], "--grey-dims"), dims(r.options["colour_dims"], "--colour-dims")
  runs = [r.for_id(i, o) for i, o in runnable]
  channels = {}

  def of(ri, sets):
    channels[ri.id] = sets.hwc[-1]
    return variants_for(sets.hwc[-1], grey, colour)

  sw = variants.sweep(r, "realnvp", runs, of)
  sections = ["## NLL AUROC and mean bits/dim per st-net bottleneck (RealNVP, skip-free st-nets)", "",
              variants.summary_table(sw.summary), "",
              "Paper (Fig. 10, FashionMNIST, histograms): the baseline assigns MNIST higher "
              "likelihood; l = 50 and l = 100 assign FashionMNIST significantly higher likelihood; "
              "as l decreases the OOD likelihood decreases while FashionMNIST's stays the same."]
  figures_, rows = dict(sw.figures), list(sw.rows)
  if grey and r.options["coupling_figure"]:
    from ood_jax.experiments import kirichenko_couplings  # noqa: PLC0415
    for (id_name, label), (trained, sets) in sw.trained.items():
      if channels.get(id_name) == 1 and label == f"l{min(grey)}":
        ri = next(x for x in runs if x.id == id_name)
        figs, crows = kirichenko_couplings.coupling_figures(ri, trained, sets, f"couplings_{label}_{id_name}")
        figures_.update(figs)
        sections += ["", f"## Coupling layers of the l = {min(grey)} model on {id_name} (Fig. 14m)", "",
                     kirichenko_couplings.mse_table(crows)]
  if skipped:
    sections.append("\n".join(availability.skipped_lines(skipped)[1:]))
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "grey_dims": grey, "colour_dims": colour}
  return Result(title=f"Kirichenko et al. App. L: st-net bottleneck ({r.preset} preset)", meta=meta,
                rows=rows, samples=sw.samples, sections=["\n".join(sections)],
                json_files={"bottleneck.json": sw.summary}, figures=figures_)


EXPERIMENT = cli.Experiment(
    "kirichenko_bottleneck", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "realnvp", "scores": "nll"},
    omit=("--id", "--ood", "--scores", "--models"),
    model_presets={"cpu": "kirichenko_cpu", "paper": "kirichenko"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS, help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--grey-dims", default="10,50,100", help="bottleneck l for grey ID sets"),
             cli.option("--colour-dims", default="30,80,150", help="bottleneck l for colour ID sets"),
             cli.option("--no-coupling-figure", dest="coupling_figure", action="store_false",
                        help="skip the coupling-layer figure of the smallest grey l")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
