"""Trains a small VAE a few steps and scores it; run under different device counts.

Usage: python tests/multidevice_run.py OUT.npz   (set XLA_FLAGS before starting)
"""

import sys

import jax
import numpy as np

from ood_jax.models import make_model
from ood_jax.scores import NLL
from ood_jax.train import TrainConfig, train


def main(out):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (64, 32, 32, 1), dtype=np.uint8)
  model = make_model("vae", "smoke", (32, 32, 1))
  cfg = TrainConfig(batch_size=16, num_steps=4, learning_rate=1e-3, halve_every_epochs=None)
  res = train(model, x, cfg, progress=False)
  scorer = NLL(k=4, chunk_size=16)
  scores = scorer.score(scorer.fit(model, res.variables, None), x[:24])
  leaves = {f"p{i}": np.asarray(l) for i, l in enumerate(jax.tree.leaves(res.variables))}
  np.savez(out, scores=scores, devices=jax.device_count(), **leaves)


if __name__ == "__main__":
  main(sys.argv[1])
