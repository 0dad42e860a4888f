"""Chen's thesis, 3.3.6 (Eqs. 3.1-3.4, Fig. 3.8): the ELBO's three terms, ID vs OOD.

    python -m ood_jax.experiments.chen_elbo_components                 # cpu preset
    python -m ood_jax.experiments.chen_elbo_components --preset smoke --out runs/chen_elbo_smoke

For every available pair of ``--pairs`` (``chen_common``) and every model of ``--models``
(default the categorical VAE, the Gaussian-decoder VAE and the GAN-VAE; shared checkpoint
cache) computes, per image of the ID test split and of every OOD set, the ELBO's terms
(Eq. 3.1), each averaged over ``k`` (the preset's) posterior draws ``z = mu + sigma * eps``:
``E_q[log p(x|z)]`` (reconstruction), ``E_q[log p(z)]`` and ``-E_q[log q(z|x)]`` (with their
constants: they sum to the ELBO exactly), and the reduced forms of Eqs. 3.2-3.4: the squared
error ``||x - dec(z)||^2`` on [0, 1] (the Gaussian decoders' reconstruction term is
``-||.||^2 / (2 sigma^2)`` plus a constant), ``||mu(x)||^2`` and ``sum_d log sigma_d^2(x)``.
All in nats per image (the reduced forms in their own units). Under two BatchNorm settings:
``eval`` and ``encoder`` (the encoder's BatchNorm on batches of ``--b`` images of the scored
set, as ``bn_enc_train_bpd``).

Reported: histograms of every term, ID vs OOD, per model and setting; a table of each term's
AUROC, the term oriented as its share of ``-ELBO`` (OOD positive: a term that lowers the
OOD likelihood scores above 0.5; ``sq_error`` and ``mu_sq`` as they are, the log terms and
``sum_logvar`` negated); the means. Expected (thesis, figures only): for the VAE's BatchNorm
adjustment "reconstruction is the essential one"; for the GAN-VAE "the span of approximate
posterior also makes big impacts".
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax import metrics
from ood_jax.experiments import availability, chen_common, cli, figures, pipeline
from ood_jax.experiments.report import Result
from ood_jax.experiments.run import Run

TERMS = ("log_px_z", "log_pz", "neg_log_qz", "elbo", "sq_error", "mu_sq", "sum_logvar")
# +1: the term as it is scores OOD high; -1: its negation does (its share of -ELBO).
ORIENTATION = {"log_px_z": -1, "log_pz": -1, "neg_log_qz": -1, "elbo": -1, "sq_error": 1,
               "mu_sq": 1, "sum_logvar": -1}
SETTINGS = {"eval": False, "encoder": {"encoder": True}}


def check(r: Run) -> None:
  chen_common.check_run(r, chen_common.LIKELIHOOD_MODELS, "the ELBO is defined for the likelihood models only")
  chen_common.check_b(r)


def components_fn(model, variables, train, samples: int):
  """Jitted ``(x_batch, key) -> {term: float32[B]}``: every term averaged over ``samples``
  draws (a sequential ``lax.map``, so memory is one draw's); BatchNorm per ``train``
  (statistics of the batch where in train mode)."""
  d = model.latent_dim

  def one(xb, e):
    if train is False:
      return model.apply(variables, xb, e, False, method="elbo_components")
    out, _ = model.apply(variables, xb, e, train, method="elbo_components",
                         mutable=["batch_stats"])
    return out

  def fn(xb, key):
    eps = jax.random.normal(key, (samples, xb.shape[0], d), jnp.float32)
    c = jax.lax.map(lambda e: one(xb, e), eps)
    c = {k: jnp.mean(c[k], axis=0) for k in TERMS if k != "elbo"}
    c["elbo"] = c["log_px_z"] + c["log_pz"] + c["neg_log_qz"]
    return c
  return jax.jit(fn)


def components(fn, x: np.ndarray, b: int, seed: int) -> dict[str, np.ndarray]:
  """``fn`` over ``x`` in batches of ``b`` images of a seeded shuffle of ``x`` (the last batch
  filled with the first images of the shuffle, their values discarded), per-image terms
  returned in ``x``'s order."""
  n = len(x)
  b = min(b, n)
  perm = np.random.default_rng(seed).permutation(n)
  padded = np.concatenate([perm, perm[:(-n) % b]])
  out = {k: np.zeros(n, np.float64) for k in TERMS}
  for j, s in enumerate(range(0, len(padded), b)):
    idx = padded[s:s + b]
    c = jax.device_get(fn(x[idx], jax.random.fold_in(jax.random.PRNGKey(seed), j)))
    keep = slice(0, min(b, n - s))
    for k in TERMS:
      out[k][idx[keep]] = np.asarray(c[k])[keep]
  return out


def auroc(term: str, id_v: np.ndarray, ood_v: np.ndarray) -> float:
  o = ORIENTATION[term]
  return float(metrics.ood_metrics(o * id_v, o * ood_v)["auroc"])


def run(r: Run) -> Result:
  runs, runnable, skipped = chen_common.runs_for(r)
  by_id = {ri.id: pipeline.sets_for(ri) for ri in runs}
  b = chen_common.batch_size(r)
  table, means, figs, info = [], [], {}, {}
  for ri in runs:
    for name in chen_common.models_for(r, ri, by_id[ri.id]):
      sets = by_id[ri.id][name]
      trained = pipeline.train_or_load(ri, name, sets)
      named = {f"{ri.id} test (ID)": sets.test.x, **{o: s.x for o, s in sets.ood.items()}}
      seconds = {}
      for setting, train in SETTINGS.items():
        fn = components_fn(trained.model, trained.variables, train, ri.k)
        with pipeline.Timer() as ts:
          vals = {label: components(fn, x, b, ri.seed + j) for j, (label, x) in enumerate(named.items())}
        seconds[setting] = round(ts.seconds, 1)
        id_label = next(iter(named))
        for o in sets.ood:
          table.append({"train": ri.id, "model": name, "bn": setting, "ood": o,
                        **{t: round(auroc(t, vals[id_label][t], vals[o][t]), 4) for t in TERMS}})
        for label, v in vals.items():
          means.append({"train": ri.id, "model": name, "bn": setting, "set": label,
                        **{t: round(float(np.mean(v[t])), 3) for t in TERMS}})
        panels = {t: {label: v[t] for label, v in vals.items()} for t in TERMS}
        figs[f"terms_{name}_{ri.id}_{setting}.png"] = functools.partial(
            figures.histograms, panels=panels, xlabel=[f"{t} (nats)" if t not in (
                "sq_error", "mu_sq", "sum_logvar") else t for t in TERMS],
            title=f"{name} on {ri.id}, BatchNorm {setting}: ELBO terms (Fig. 3.8)")
      info[f"{name}_{ri.id}"] = {**chen_common.backbone_meta(trained), "score_seconds": seconds}
  lines = ["## AUROC of each ELBO term (OOD positive; the term as its share of -ELBO)", "",
           "| train | model | BatchNorm | OOD | " + " | ".join(TERMS) + " |",
           "|---|---|---|---|" + "---:|" * len(TERMS)]
  lines += [f"| {t['train']} | {t['model']} | {t['bn']} | {t['ood']} | " +
            " | ".join(f"{t[k]:.3f}" for k in TERMS) + " |" for t in table]
  lines += ["", "## Means per set (nats per image; sq_error on [0, 1], mu_sq, sum_logvar)", "",
            "| train | model | BatchNorm | set | " + " | ".join(TERMS) + " |",
            "|---|---|---|---|" + "---:|" * len(TERMS)]
  lines += [f"| {m['train']} | {m['model']} | {m['bn']} | {m['set']} | " +
            " | ".join(f"{m[k]:.2f}" for k in TERMS) + " |" for m in means]
  lines += ["", f"Each term averaged over k = {r.k} posterior draws per image; encoder train "
            f"mode on batches of b = {b} images of the scored set. log_px_z + log_pz + "
            "neg_log_qz = elbo exactly. Thesis (Fig. 3.8, axes not normalised, no numbers): "
            "for the VAE's BatchNorm adjustment the reconstruction term carries the change; for "
            "the GAN-VAE the posterior's span (neg_log_qz, sum_logvar) matters as well."]
  lines += chen_common.colour_note(r, by_id) + availability.skipped_lines(skipped)
  meta = {**availability.pairs_meta(r.settings_meta(), runnable, skipped, runs),
          "models_trained": info, "bn_batch": b, "samples_per_image": r.k,
          "data_sources": chen_common.data_sources(runs, by_id)}
  return Result(title=f"Chen 3.3.6: ELBO components, ID vs OOD ({r.preset} preset)",
                meta=meta, results=table, sections=["\n".join(lines)],
                json_files={"means.json": means}, figures=figs)


EXPERIMENT = cli.Experiment(
    "chen_elbo_components", run, description=__doc__.split("\n\n")[0],
    defaults={"models": ",".join(chen_common.LIKELIHOOD_MODELS), "scores": "nll"},
    omit=("--id", "--ood", "--scores"),
    options=(cli.option("--pairs", default=chen_common.DEFAULT_PAIRS,
                        help=f"train:ood+ood pairs (default {chen_common.DEFAULT_PAIRS})"),
             cli.option("--colour-models", default=None, help=chen_common.COLOUR_OPTION_HELP),
             cli.option("--b", type=int, default=None,
                        help="encoder train-mode batch size (default 64)")),
    check=check)
main = EXPERIMENT.main

if __name__ == "__main__":
  sys.exit(main())
