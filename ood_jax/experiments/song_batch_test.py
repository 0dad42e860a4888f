"""Song et al. §6: the permutation test over whole batches on eval-mode mean bits/dim (b = 64).

    python -m ood_jax.experiments.song_batch_test                   # cpu preset, RealNVP
    python -m ood_jax.experiments.song_batch_test --preset smoke --out runs/song_batch_smoke
    python -m ood_jax.experiments.song_batch_test --pairs cifar10:celeb_a+rotation --models vae

§6: "we also perform permutation tests over entire batches of test samples, where the BPD of
evaluation mode are averaged. The AUC / AP of CIFAR10 versus OoD datasets are 1.00 / 1.00
(SVHN), 0.56 / 0.64 (CIFAR100), 0.82 / 0.68 (LSUN), and 0.56 / 0.68 (ImageNet)"; "significantly
lower than evaluated with training mode". The two numbers are AUROC and average precision,
OOD batches positive (§6: label 1 = OOD, "larger prediction values indicate ... OOD").

The test statistic is Eq. 2's ``T_perm`` with a batch in place of a sample: for a batch ``B``
of ``b`` images, ``L(B)`` = the mean over its images of the eval-mode ``log p(x)`` (nats per
image; a fixed multiple of minus the mean bits/dim), and ``T(B) = |#{i: L(B_i) <= L(B)} - N/2|``
over ``N`` reference batches ``B_i`` of ID images, so both unusually likely and unusually
unlikely batches are flagged. AUROC / AP of ``T`` between the ID test batches and the OOD
batches. Beside it (``batch_t_perm_train``, off with ``--no-train-mode``): the same test on
the train-mode mean log-likelihood of each batch (BatchNorm with the batch's own statistics,
``bn_train_bpd`` on that batch alone), the comparison the paper states without numbers.

For every pair of ``--pairs`` whose data is here (the paper's CIFAR-10 pairs: SVHN, CIFAR-100,
LSUN, ImageNet are listed as skipped when absent; grey FashionMNIST pairs and CelebA /
rotations added) and every model of ``--models`` (default RealNVP, the model of the paper's
Fig. 6 histograms of batch-mean bits/dim), trained on the ID split (checkpoints shared with
the other experiments). Writes ``report.md`` (ours beside the paper's), ``results.json``
(metric rows), ``meta.json``, ``batches.json`` (per-batch values), ``hist_batch_bpd_*.png``
(Fig. 6b) and the report's histograms / ROC curves of ``T``.

Choices where the paper is silent: batches are ``--partitions`` random partitions of each
set into whole batches of ``--b`` (the last short batch dropped; default one partition at
``paper``, 8 at ``cpu``, 2 at ``smoke``: more, overlapping batches when a set has few
images); the reference batches (Eq. 2's "training dataset") come from a random subset of the
ID training split as large as the ID test set (``--reference heldout``: the first half of
the ID test set instead, the second half scored); the model is RealNVP; ``log p`` is the
``nll`` score with the preset's ``k``.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from ood_jax import metrics
from ood_jax.data.pixels import num_dims
from ood_jax.data.registry import canonical_name
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, bn_settings, cli, figures, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

# §6 (AUROC, AP), RealNVP trained on CIFAR-10, eval-mode batch means.
PAPER = {("cifar10", "svhn"): (1.00, 1.00), ("cifar10", "cifar100"): (0.56, 0.64),
         ("cifar10", "lsun"): (0.82, 0.68), ("cifar10", "imagenet32"): (0.56, 0.68)}
PAPER_MODEL = "realnvp"
DEFAULT_PAIRS = ("fashion_mnist:mnist+kmnist+omniglot+rotation,"
                 "cifar10:svhn+cifar100+lsun+imagenet32+celeb_a+rotation")
PARTITIONS = {"smoke": 2, "cpu": 8, "paper": 1}
REFERENCES = ("train", "heldout")
EVAL, TRAIN = "batch_t_perm_eval", "batch_t_perm_train"


# ----------------------------------------------------------------------------- statistic


def partition(n: int, b: int, rounds: int, seed: int, stream: int = 0) -> np.ndarray:
  """int64 ``[rounds * (n // b), b]``: row indices of whole batches of ``b``, each round a
  fresh random permutation of ``range(n)`` cut into ``n // b`` batches (the rest dropped); a
  pure function of ``(seed, stream, round)``."""
  for v, what in ((n, "n"), (b, "b"), (rounds, "rounds")):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise InvalidInputError(f"partition: {what} must be an integer >= 1, got {v!r}.")
  if n < b:
    raise InvalidInputError(f"partition: {n} images make no whole batch of {b}.")
  g = n // b
  parts = [np.random.default_rng([int(seed), 11, int(stream), t]).permutation(n)[:g * b]
           .reshape(g, b) for t in range(int(rounds))]
  return np.concatenate(parts).astype(np.int64)


def batch_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """float64 ``[B]``: the mean of per-image ``values`` over each batch (row) of ``idx``."""
  return np.asarray(values, np.float64)[idx].mean(axis=1)


def batch_t_perm(ref: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Eq. 2 over batches: ``|#{i: ref_i <= v} - N/2|`` for each ``v`` of ``values`` (batch
  mean log-likelihoods), ``N = len(ref)``; float64 ``[len(values)]``, in ``[0, N/2]``."""
  ref = np.sort(np.asarray(ref, np.float64).ravel())
  if ref.size < 1:
    raise InvalidInputError("batch_t_perm: no reference batches.")
  count = np.searchsorted(ref, np.asarray(values, np.float64), side="right")
  return np.abs(count - ref.size / 2.0)


def batch_train_means(scorer, state, x: np.ndarray, idx: np.ndarray, hwc) -> np.ndarray:
  """float64 ``[B]``: the train-mode mean log-likelihood (nats per image) of each batch of
  ``idx``, BatchNorm with that batch's own statistics (``bn_train_bpd`` scoring the batch
  alone, ``scorer.b == idx.shape[1]``)."""
  d_ln2 = num_dims(tuple(hwc)) * math.log(2.0)
  return np.array([-float(np.mean(scorer.score(state, x[row]))) * d_ln2 for row in idx])


# ----------------------------------------------------------------------------- settings


def resolved(r: Run) -> dict:
  """``{'b', 'partitions', 'reference', 'train_mode', 'bn_base'}``; raises for bad values."""
  o = r.options
  b = 64 if o["b"] is None else o["b"]
  p = PARTITIONS[r.preset] if o["partitions"] is None else o["partitions"]
  if isinstance(b, bool) or not isinstance(b, int) or b < 2:
    raise InvalidInputError(f"--b must be an integer >= 2 (BatchNorm needs a batch), got {b!r}.")
  if isinstance(p, bool) or not isinstance(p, int) or p < 1:
    raise InvalidInputError(f"--partitions must be an integer >= 1, got {p!r}.")
  if o["reference"] not in REFERENCES:
    raise InvalidInputError(f"--reference must be one of {', '.join(REFERENCES)}, got "
                            f"{o['reference']!r}.")
  base = {"b": b, "K": 1, **({"k": o["bn_k"]} if o["bn_k"] is not None else {})}
  return {"b": b, "partitions": p, "reference": o["reference"],
          "train_mode": not o["no_train_mode"], "bn_base": base}


def plan(pairs, data_dir):
  return availability.plan(pairs, lambda n, split: availability.missing(n, split, data_dir),
                           ood_name=pipeline.ood_spec)


def check(r: Run) -> None:
  cfg = resolved(r)
  availability.parse_pairs(r.options["pairs"])
  r.scorer("bn_train_bpd", base=cfg["bn_base"])          # bad --bn-k: now


def paper_values(id_name: str, ood: str):
  return PAPER.get((canonical_name(id_name), canonical_name(ood)))


# ----------------------------------------------------------------------------- run


def model_result(ri: Run, trained: pipeline.Trained, sets: pipeline.Sets, cfg: dict) -> dict:
  """Per-batch values and T of one model on one pair: ``{'eval': {set: {...}}, 'train': ...}``
  with, per set (``'__ref__'``, ``'__id__'``, OOD names), ``mean_lp`` (per batch, nats per
  image), ``mean_bpd`` and ``t`` (not for the reference)."""
  b, p, seed = cfg["b"], cfg["partitions"], ri.seed
  rng = np.random.default_rng([seed, 12])
  if cfg["reference"] == "train":
    n_ref = min(len(sets.train.x), len(sets.test.x))
    ref_x = sets.train.x[np.sort(rng.permutation(len(sets.train.x))[:n_ref])]
    id_x = sets.test.x
  else:
    order = rng.permutation(len(sets.test.x))
    half = len(order) // 2
    ref_x, id_x = sets.test.x[np.sort(order[:half])], sets.test.x[np.sort(order[half:])]
  named = {"__ref__": ref_x, "__id__": id_x, **{n: s.x for n, s in sets.ood.items()}}
  for n, x in named.items():
    if len(x) < b:
      what = {"__ref__": "the reference ID images", "__id__": "the ID test images"}.get(n, n)
      raise InvalidInputError(f"{what}: {len(x)} images make no whole batch of --b {b}; "
                              "use a smaller --b or more images (--n-eval).")
  idx = {n: partition(len(x), b, p, seed, stream=j) for j, (n, x) in enumerate(named.items())}
  d_ln2 = num_dims(sets.hwc) * math.log(2.0)
  nll = ri.scorer("nll")
  state = nll.fit(trained.model, trained.variables, None)
  modes = {"eval": {n: batch_means(-nll.score(state, x), idx[n]) for n, x in named.items()}}
  if cfg["train_mode"] and bn_settings.has_batchnorm(trained.variables):
    sc = ri.scorer("bn_train_bpd", base=cfg["bn_base"])
    st = sc.fit(trained.model, trained.variables)
    modes["train"] = {n: batch_train_means(sc, st, x, idx[n], sets.hwc) for n, x in named.items()}
  out = {}
  for mode, means in modes.items():
    out[mode] = {n: {"mean_lp": v, "mean_bpd": -v / d_ln2,
                     **({} if n == "__ref__" else {"t": batch_t_perm(means["__ref__"], v)})}
                 for n, v in means.items()}
  return out


def _ap(v) -> str:
  return "–" if v is None else f"{v[0]:.2f} / {v[1]:.2f}"


def run(r: Run) -> Result:
  cfg = resolved(r)
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  runs = [r.for_id(i, o) for i, o in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}
  rows, table, samples, figs, per_batch, model_meta, notes = [], [], {}, {}, [], {}, []
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      with pipeline.Timer() as ts:
        res = model_result(ri, trained, sets, cfg)
      label = f"{name}_{ri.id}"
      if "train" not in res and cfg["train_mode"]:
        notes.append(f"{label}: no BatchNorm, eval mode only.")
      for mode, score in (("eval", EVAL), ("train", TRAIN)):
        if mode not in res:
          continue
        vals = res[mode]
        for ood in sets.ood:
          m = metrics.ood_metrics(vals["__id__"]["t"], vals[ood]["t"])
          rows.append({"id": ri.id, "model": name, "score": score, "ood": ood, **m})
        samples[(label, score)] = {
            "id_name": f"{ri.id} test batches", "id": vals["__id__"]["t"],
            "ood": {o: vals[o]["t"] for o in sets.ood},
            "xlabel": f"T_perm over batches of {cfg['b']}, {mode} mode (higher = more OOD)"}
        for set_name, v in vals.items():
          per_batch.append({"id": ri.id, "model": name, "mode": mode, "set": set_name,
                            "mean_bpd": v["mean_bpd"], "t": v.get("t")})
      for ood in sets.ood:
        get = lambda score: next(((x["auroc"], x["auprc_out"]) for x in rows if x["id"] == ri.id
                                  and x["model"] == name and x["score"] == score
                                  and x["ood"] == ood), None)
        table.append({"id": ri.id, "model": name, "ood": ood, "eval": get(EVAL),
                      "train": get(TRAIN), "paper_eval": paper_values(ri.id, ood),
                      "n_id_batches": len(res["eval"]["__id__"]["t"]),
                      "n_ood_batches": len(res["eval"][ood]["t"]),
                      "bpd_id_eval": float(np.mean(res["eval"]["__id__"]["mean_bpd"])),
                      "bpd_ood_eval": float(np.mean(res["eval"][ood]["mean_bpd"]))})
      panels = {f"{mode} mode": {("ID reference" if n == "__ref__" else f"{ri.id} test"
                                  if n == "__id__" else n): v["mean_bpd"]
                                 for n, v in vals.items()} for mode, vals in res.items()}
      figs[f"hist_batch_bpd_{label}.png"] = functools.partial(
          figures.histograms, panels=panels, xlabel="mean bits/dim of a batch",
          title=f"Song et al. Fig. 6b: batch-mean bits/dim, {name} on {ri.id} (b = {cfg['b']})")
      model_meta[label] = {**trained.meta(), "input_shape": list(sets.hwc),
                           "score_seconds": round(ts.seconds, 1)}
  lines = ["## Batch-level permutation test (§6), ours beside the paper's", "",
           f"AUROC / AP (OOD batches positive) of Eq. 2's T_perm over batches of {cfg['b']}: "
           "the batch's mean log-likelihood ranked among reference ID batches "
           f"({cfg['reference']} reference, {cfg['partitions']} random partition(s) per set). "
           "Paper: RealNVP on CIFAR-10, eval mode; it calls train mode \"near-perfect\" "
           "without numbers. With the `train` reference a generalisation gap (ID test batches "
           "less likely than training batches, see `hist_batch_bpd_*.png`) makes ID test "
           "batches look unusual to the two-sided test too; `--reference heldout` avoids it.", "",
           "| ID | model | OOD | batches ID / OOD | eval: ours | eval: paper | train mode: ours "
           "| mean bpd ID / OOD (eval) |", "|---|---|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['id']} | {t['model']} | {t['ood']} | {t['n_id_batches']} / "
                 f"{t['n_ood_batches']} | {_ap(t['eval'])} | {_ap(t['paper_eval'])} | "
                 f"{_ap(t['train'])} | {t['bpd_id_eval']:.3f} / {t['bpd_ood_eval']:.3f} |")
  if any(s for s in skipped if paper_values(s["id"], s["ood"])):
    lines += ["", "The paper's pairs not run here:", ""]
    for s in skipped:
      if paper_values(s["id"], s["ood"]):
        lines.append(f"* {s['id']} -> {s['ood']} (paper {_ap(paper_values(s['id'], s['ood']))})"
                     f": {s['reason']}.")
  lines += availability.skipped_lines([s for s in skipped if not paper_values(s["id"], s["ood"])])
  if notes:
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          **{k: v for k, v in cfg.items() if k != "bn_base"}, "models": model_meta,
          "scorers": {"nll": r.scorer_meta("nll"),
                      "bn_train_bpd": r.scorer_meta("bn_train_bpd", base=cfg["bn_base"])},
          "paper": {f"{i}:{o}": v for (i, o), v in PAPER.items()}, "paper_model": PAPER_MODEL}
  return Result(title=f"Song et al. §6: batch-level permutation test ({r.preset} preset)",
                meta=meta, rows=rows, samples=samples, sections=["\n".join(lines)],
                json_files={"batch_test.json": table, "batches.json": per_batch}, figures=figs)


EXPERIMENT = cli.Experiment(
    "song_batch_test", run, description=__doc__.split("\n\n")[0],
    defaults={"models": PAPER_MODEL, "scores": "nll,bn_train_bpd"},
    omit=("--id", "--ood", "--scores"),
    options=(
        cli.option("--pairs", default=DEFAULT_PAIRS,
                   help=f"train:ood+ood pairs, comma-separated (default {DEFAULT_PAIRS})"),
        cli.option("--b", type=int, default=None, help="images per batch (default 64)"),
        cli.option("--partitions", type=int, default=None,
                   help="random partitions of each set into whole batches (default: smoke 2, "
                        "cpu 8, paper 1)"),
        cli.option("--reference", default="train",
                   help="reference ID batches: 'train' (a subset of the training split as large "
                        "as the ID test set; Eq. 2) or 'heldout' (half of the ID test set)"),
        cli.option("--bn-k", type=int, default=None,
                   help="importance samples inside train-mode batches (default: the preset's)"),
        cli.option("--no-train-mode", action="store_true",
                   help="skip the train-mode comparison")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
