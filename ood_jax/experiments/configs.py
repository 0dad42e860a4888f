"""Experiment presets, beside the code that runs them.

* ``smoke``: a tiny model on a 2k-image subset, 150 steps of batch 32: end-to-end in
  under two minutes on a 2-core CPU. For checking the pipeline, not for numbers.
* ``cpu``: the papers' architecture with a reduced budget (under an hour on 2 cores;
  the categorical-256 VAE takes ~1 s per batch-64 step here): 2 epochs of the full
  training split instead of 100, lr 1e-3 halved after the first epoch, 1000 evaluation
  images per set, k = 10 importance samples; train-mode BatchNorm scores with one
  composition round and one importance sample per batch member, WAIC over 3 models.
* ``paper``: the papers' settings: 100 epochs, lr 1e-3 halved every 30 epochs, batch
  64 (ROSE), full test sets, k = 1000 (the Likelihood Regret reference).
"""

from __future__ import annotations

import dataclasses

from ood_jax.registry import choose
from ood_jax.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  model_preset: str             # passed to models.make_model
  train: TrainConfig
  n_train: int | None           # None = the whole training split
  n_eval: int | None            # images per evaluation set; None = all
  k: int                        # importance samples for IWAE likelihoods
  # Per-score field overrides, {score name: {field: value}} (under --score-args; ``Run.scorer``).
  score_settings: dict = dataclasses.field(default_factory=dict)


PRESETS = {
    "smoke": Preset(
        "smoke", "smoke",
        TrainConfig(batch_size=32, num_steps=150, learning_rate=2e-3, halve_every_epochs=None,
                    log_every=25, checkpoint_every=50),
        n_train=2048, n_eval=300, k=4,
        score_settings={"bn_mixed": dict(K=1, k=1), "bn_train_bpd": dict(k=1),
                        "bn_enc_train_bpd": dict(k=1),
                        "waic": dict(members=2), "rose": dict(n_fisher=256, n_norm=256)}),
    "cpu": Preset(
        "cpu", "cpu",
        TrainConfig(batch_size=64, epochs=2, learning_rate=1e-3, halve_every_epochs=1,
                    log_every=50, checkpoint_every=250),
        n_train=None, n_eval=1000, k=10,
        score_settings={"bn_mixed": dict(K=1, k=1), "bn_train_bpd": dict(k=1),
                        "bn_enc_train_bpd": dict(k=1),
                        "waic": dict(members=3)}),
    "paper": Preset(
        "paper", "paper",
        TrainConfig(batch_size=64, epochs=100, learning_rate=1e-3, halve_every_epochs=30,
                    log_every=100, checkpoint_every=2000),
        n_train=None, n_eval=None, k=1000),
}


def get_preset(name: str) -> Preset:
  """The experiment preset ``name``; per-model training budgets under it live in each
  model's spec (``ModelSpec.budgets``)."""
  return PRESETS[choose("preset", name, PRESETS)]
