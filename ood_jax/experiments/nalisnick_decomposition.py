"""Nalisnick et al. §4 (Fig. 4a-c): log p(x) split into log p(z) and the volume term.

    python -m ood_jax.experiments.nalisnick_decomposition              # cpu preset
    python -m ood_jax.experiments.nalisnick_decomposition --preset smoke --out runs/n_dec_smoke

For every pair of ``--pairs`` (default FashionMNIST -> MNIST, CIFAR-10 -> SVHN and CelebA;
absent sets listed with the reason) and every flow of ``--models`` (default Glow and CV-Glow,
model preset ``nalisnick_cpu`` at ``cpu``, ``nalisnick`` at ``paper``; trained or loaded from
the checkpoint cache shared with the other Nalisnick experiments): per image, with one
uniform dequantisation draw ``y = (x + u) / 256``,

    log p(x) = log p(z) + log|det dz/dy| - D log 256,

and the histograms of ``log p(z)`` and of the volume term ``log|det dz/dy|`` for the ID
training split (a subset the size of the test split), the ID test split and each OOD set
(Fig. 4a-c), and their means. Accounting of the discretisation term: ``-D log 256`` (the
change of variables from ``y`` in [0, 1) to the 8-bit pixel scale) is the same for every
image; it is shown separately and left out of the plotted volume term (the paper's
``log|df/dx|`` on inputs scaled to [0, 1)), so ``log p(z) + volume - D log 256 = log p(x)``
exactly (checked per image in the report).

For CV-Glow the volume term is also computed from the parameters alone,
``sum over levels l, steps k of H_l W_l (log|det W_lk| + sum_c log|actnorm scale_lkc|)``
(the paper's ``HW sum_k log|det U_k|``; no ActNorm in the ``nalisnick`` preset), and shown to
be the same for every input (its spread over all scored images, and the largest deviation
from the parameter formula). Expected (paper): log p(z) of the OOD set is "clearly shifted to
the left" (lower), so the volume term causes the higher OOD likelihood.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.experiments import availability, cli, figures, pipeline
from ood_jax.experiments.kirichenko_table1 import plan
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run
from ood_jax.models.flows.glow import Glow
from ood_jax.models.flows.invconv import lu_weight

DEFAULT_PAIRS = "fashion_mnist:mnist,cifar10:svhn+celeb_a"
FLOW_MODELS = ("glow", "cv_glow")


def check(r: Run) -> None:
  for m in r.models:
    if m not in FLOW_MODELS:
      raise InvalidInputError(
          f"--models: {m!r} is not a Glow flow; the decomposition needs one of {', '.join(FLOW_MODELS)}.")
  availability.parse_pairs(r.options["pairs"])
  if int(r.options["chunk"]) < 1:
    raise InvalidInputError(f"--chunk must be >= 1, got {r.options['chunk']}.")


def parts_fn(model):
  """Jitted ``(variables, x_uint8, key) -> (log p(z), log|det J|)`` (``log_prob_parts``)."""
  return jax.jit(lambda v, xb, key: model.apply(v, xb, method="log_prob_parts",
                                                rngs={"sample": key}))


def log_prob_parts(model, variables, x: np.ndarray, seed: int, chunk: int = 256, fn=None):
  """``(log p(z), log|det dz/dy|)`` float64 ``[N]`` (nats, eval mode, one dequantisation draw
  per image; chunk ``i`` draws with ``fold_in(PRNGKey(seed), i)``; the volume term without
  ``-D log 256``). One compile per chunk shape (``fn``: a ``parts_fn(model)`` to reuse across
  sets): the last chunk is padded to ``chunk`` images."""
  d_log_256 = model.num_dims * np.log(256.0)
  fn = parts_fn(model) if fn is None else fn
  lpz, ld = [], []
  size = min(int(chunk), len(x))
  for i in range(0, len(x), size):
    part = x[i:i + size]
    n = len(part)
    if n < size:
      part = np.concatenate([part, np.repeat(part[:1], size - n, axis=0)])
    a, b = fn(variables, jnp.asarray(part), jax.random.fold_in(jax.random.PRNGKey(seed), i // size))
    lpz.append(np.asarray(a, np.float64)[:n])
    ld.append(np.asarray(b, np.float64)[:n] + d_log_256)
  return np.concatenate(lpz), np.concatenate(ld)


def cv_glow_volume(model: Glow, variables) -> float:
  """``log|det dz/dy|`` of a constant-volume Glow from its parameters alone: over levels l
  and steps k, ``H_l W_l (log|det W_lk| + sum_c log|s_lkc|)`` (``W`` the 1x1 kernel, ``s`` the
  ActNorm scale where present); the squeezes and additive couplings add 0."""
  if not isinstance(model, Glow) or not model.constant_volume:
    raise InvalidInputError("cv_glow_volume: needs a constant-volume Glow (additive, no logit).")
  params, consts = variables["params"], variables.get("flow_constants", {})
  h, w, _ = model.image_shape
  total = 0.0
  for l in range(model.levels):
    h, w = h // 2, w // 2
    for k in range(model.steps):
      step = params[f"level_{l}"][f"step{k}"]
      conv = step["invconv"]
      if "log_s" in conv:
        c = consts[f"level_{l}"][f"step{k}"]["invconv"]
        wmat, _ = lu_weight(c["perm"], c["sign_s"], conv["lower"], conv["upper"], conv["log_s"])
      else:
        wmat = conv["kernel"]
      logdet = float(np.linalg.slogdet(np.asarray(wmat, np.float64))[1])
      if "actnorm" in step:
        logdet += float(np.sum(np.log(np.abs(np.asarray(step["actnorm"]["scale"], np.float64)))))
      total += h * w * logdet
  return total


def run(r: Run) -> Result:
  runnable, skipped = plan(availability.parse_pairs(r.options["pairs"]), r.data_dir)
  availability.require(runnable, r.options["pairs"])
  chunk = int(r.options["chunk"])
  table, figs, model_meta, checks = [], {}, {}, []
  runs = [r.for_id(id_name, oods) for id_name, oods in runnable]
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}
  for ri in runs:
    for name in ri.models:
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      model, v = trained.model, trained.variables
      n = min(len(sets.test.x), len(sets.train.x))
      named = {f"{ri.id} train": sets.train.x[:n], f"{ri.id} test": sets.test.x,
               **{o: s.x for o, s in sets.ood.items()}}
      d_log_256 = model.num_dims * np.log(256.0)
      parts, worst = {}, 0.0
      fn = parts_fn(model)
      lp_fn = jax.jit(functools.partial(_log_prob, model))
      for i, (label, x) in enumerate(named.items()):
        lpz, ld = log_prob_parts(model, v, x, ri.seed + i, chunk, fn=fn)
        # The two parts sum to the model's log p(x) (same draws: log_prob with k = 1).
        lp = np.asarray(lp_fn(v, x[:min(len(x), chunk)], ri.seed + i), np.float64)
        worst = max(worst, float(np.max(np.abs(lpz[:len(lp)] + ld[:len(lp)] - d_log_256 - lp))))
        parts[label] = (lpz, ld)
        table.append({"train": ri.id, "model": name, "set": label,
                      "log_pz_mean": round(float(lpz.mean()), 2),
                      "volume_mean": round(float(ld.mean()), 2),
                      "volume_std": round(float(ld.std()), 4),
                      "log_px_mean": round(float((lpz + ld - d_log_256).mean()), 2),
                      "n": int(len(x))})
      entry = {"train": ri.id, "model": name, "d_log_256": round(d_log_256, 2),
               "max_abs_parts_minus_log_prob": worst}
      if model.constant_volume:
        vol = cv_glow_volume(model, v)
        allv = np.concatenate([p[1] for p in parts.values()])
        entry.update({"volume_from_kernels": round(vol, 4),
                      "volume_spread_over_inputs": float(allv.max() - allv.min()),
                      "max_abs_volume_minus_kernels": float(np.max(np.abs(allv - vol)))})
      checks.append(entry)
      label = f"{name}_{ri.id}"
      panels = {}
      for o in sets.ood:
        keep = [f"{ri.id} train", f"{ri.id} test", o]
        panels[f"{name}: log p(z), {o}"] = {k: parts[k][0] for k in keep}
        panels[f"{name}: log|dz/dy|, {o}"] = {k: parts[k][1] for k in keep}
      figs[f"decomposition_{label}.png"] = functools.partial(
          figures.histograms, panels=panels, xlabel="nats",
          title=f"{name} trained on {ri.id}: log p(z) and volume (Fig. 4a-c)")
      model_meta[label] = {**trained.meta(), "train_config": dict(vars(trained.config))}
  lines = ["## Means of log p(z) and of the volume term log|dz/dy| (nats; Fig. 4a-c)", "",
           "| train | model | set | log p(z) | log abs det dz/dy | its std | log p(x) | n |",
           "|---|---|---|---|---|---|---|---|"]
  for t in table:
    lines.append(f"| {t['train']} | {t['model']} | {t['set']} | {t['log_pz_mean']:.1f} | "
                 f"{t['volume_mean']:.1f} | {t['volume_std']:.3g} | {t['log_px_mean']:.1f} | {t['n']} |")
  lines += ["", "log p(x) = log p(z) + log|dz/dy| - D log 256 (the last term, the same for every "
            "image, per model below).", "",
            "| train | model | D log 256 | max abs(parts - log p(x)) | CV volume from kernels | "
            "spread over inputs | max abs(volume - kernels) |", "|---|---|---|---|---|---|---|"]
  for c in checks:
    cv = ("volume_from_kernels" in c)
    lines.append(f"| {c['train']} | {c['model']} | {c['d_log_256']:.1f} | "
                 f"{c['max_abs_parts_minus_log_prob']:.2g} | "
                 + (f"{c['volume_from_kernels']:.2f} | {c['volume_spread_over_inputs']:.2g} | "
                    f"{c['max_abs_volume_minus_kernels']:.2g} |" if cv else "– | – | – |"))
  lines += ["", "Paper (Fig. 4a-c, histograms only): the OOD set's log p(z) is lower than the ID "
            "set's (shifted left); its volume term is higher and causes the higher likelihood."]
  lines += availability.skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models": model_meta, "checks": checks}
  return Result(title=f"Nalisnick et al. §4: likelihood decomposition ({r.preset} preset)",
                meta=meta, results=table, sections=["\n".join(lines)],
                json_files={"checks.json": checks}, figures=figs)


def _log_prob(model, variables, x, seed):
  """``log_prob`` with k = 1 and the draws of ``log_prob_parts``' first chunk."""
  return model.apply(variables, jnp.asarray(x), False, 1, method="log_prob",
                     rngs={"sample": jax.random.fold_in(jax.random.PRNGKey(seed), 0)})


EXPERIMENT = cli.Experiment(
    "nalisnick_decomposition", run, description=__doc__.split("\n\n")[0],
    defaults={"models": "glow,cv_glow", "scores": "nll"}, omit=("--id", "--ood", "--scores"),
    model_presets={"cpu": "nalisnick_cpu", "paper": "nalisnick"},
    options=(cli.option("--pairs", default=DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {DEFAULT_PAIRS})"),
             cli.option("--chunk", type=int, default=256, help="images per compiled call")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
