"""Negative training (Kirichenko et al. 2020, App. D, Eq. 6): maximise the likelihood of the
in-distribution set D and minimise it on a second set D_OOD.

Eq. 6 maximises

    (1/N_D) sum_{x in D} log p(x)  -  (1/N_OOD) sum_{x in D_OOD} log p(x) I[log p(x) > c],
    N_OOD = sum_{x in D_OOD} I[log p(x) > c],

``c`` in nats per image (the paper: -100000 for its CelebA / CIFAR-10 / SVHN models, -30000
for MNIST / FashionMNIST / notMNIST; ``PAPER_C``): an OOD image whose log-likelihood is already
below ``c`` stops counting, so the OOD term cannot drive ``log p`` to minus infinity.

``negative_objective(c, weighting)`` is a per-batch estimate of Eq. 6 as a loss to minimise,
the ``objective`` of ``ood_jax.train.train(model, x_id, config, ood=x_ood, objective=...)``.
``log p`` is minus the model's per-sample training loss (flows: the dequantised NLL, nats per
image of the 8-bit data, the unit of ``c``; for the VAE it would be the ELBO). On a batch of
ID losses ``l_i`` and OOD log-likelihoods ``lp_j = -l_j``, with ``n = sum_j I[lp_j > c]``:

* ``'reference'`` (default): ``0.5 * (mean_i l_i + (1/n) sum_j lp_j I[lp_j > c])`` when
  ``n > 0``, else ``mean_i l_i`` alone: the loss of the reference code
  (``experiments/train_flows/train_unsup_ood_negative.py`` of PolinaKirichenko/flows_ood);
* ``'paper'``: ``mean_i l_i + (1/n) sum_j lp_j I[lp_j > c]`` (Eq. 6 as written, per batch;
  the OOD term is 0 when ``n = 0``).

Both put the two terms 1:1 and agree when ``n = 0`` (the plain maximum-likelihood loss, no
NaN); they differ by the factor 1/2 on batches with ``n > 0``. No gradient flows through the
indicator (it is computed on ``stop_gradient(lp)``; ``n`` is a count): an OOD image below
``c`` gets exactly zero gradient (its log-likelihood is selected out with ``where``, so a
NaN or -inf there stays out of the forward value too).

Why ``'reference'`` is the default: Fig. 5 was made with that code. Under Adam a constant
loss factor barely matters (the update is invariant to it up to ``eps``), but the factor is
not quite constant here (1/2 when ``n > 0``, 1 when ``n = 0``) and it meets the gradient
clipping (the reference clips at norm 100) and coupled L2 weight decay (torch Adam adds
``wd * theta`` to the gradient, so halving the loss doubles the decay's relative weight);
``'paper'`` is there for Eq. 6 as printed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ood_jax.errors import InvalidInputError
from ood_jax.registry import choose

WEIGHTINGS = ("reference", "paper")
DEFAULT_WEIGHTING = "reference"

# App. D: the threshold c (nats per image) of the paper's models, by training set.
PAPER_C = {"celeb_a": -100000.0, "cifar10": -100000.0, "svhn": -100000.0,
           "mnist": -30000.0, "fashion_mnist": -30000.0, "not_mnist": -30000.0}
GREY_C, COLOUR_C = -30000.0, -100000.0


def paper_c(dataset: str, channels: int) -> float:
  """The paper's ``c`` for a model trained on ``dataset`` (``PAPER_C``); other sets get the
  value of the paper's sets of their kind: -30000 for grey (28 x 28 in the paper), -100000
  for colour (32 x 32)."""
  base = dataset.split("+")[0].strip().lower()
  if base in PAPER_C:
    return PAPER_C[base]
  return GREY_C if channels == 1 else COLOUR_C


def negative_terms(id_losses: jax.Array, ood_losses: jax.Array, c: float):
  """``(mean ID loss, OOD term, n)`` of one batch: the OOD term is
  ``(1/n) sum_j lp_j I[lp_j > c]`` with ``lp = -ood_losses`` (0 when ``n = 0``) and
  ``n = sum_j I[lp_j > c]``; no gradient through the indicator or ``n``."""
  log_p = -ood_losses
  above = jax.lax.stop_gradient(log_p) > c
  n = jnp.sum(above)
  term = jnp.sum(jnp.where(above, log_p, 0.0)) / jnp.maximum(n, 1).astype(log_p.dtype)
  return jnp.mean(id_losses), term, n


@dataclasses.dataclass(frozen=True)
class NegativeObjective:
  """The negative-training loss (module docstring); ``objective(id_losses, ood_losses)``.

  Attributes:
    c: the log-likelihood threshold, nats per image (finite).
    weighting: ``'reference'`` (default, the reference code's 1/2) or ``'paper'`` (Eq. 6).
  """
  c: float
  weighting: str = DEFAULT_WEIGHTING
  needs_ood: ClassVar[bool] = True        # ``train`` refuses it without an OOD stream

  def __post_init__(self):
    c = self.c
    if (isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, float, np.integer, np.floating))
        or not math.isfinite(float(c))):
      raise InvalidInputError(f"negative objective: c must be a finite number (nats per image), "
                              f"got {c!r}.")
    object.__setattr__(self, "c", float(c))
    choose("negative-training weighting", self.weighting, WEIGHTINGS)

  def __call__(self, id_losses: jax.Array, ood_losses: jax.Array) -> jax.Array:
    id_mean, term, n = negative_terms(id_losses, ood_losses, self.c)
    if self.weighting == "paper":
      return id_mean + term
    return jnp.where(n > 0, 0.5 * (id_mean + term), id_mean)

  def describe(self) -> dict:
    """What checkpoint meta and reports record."""
    return {"name": "negative", "c": self.c, "weighting": self.weighting}


def negative_objective(c: float, weighting: str = DEFAULT_WEIGHTING) -> NegativeObjective:
  """The Kirichenko et al. Eq. 6 batch loss with threshold ``c`` (nats per image) and
  ``weighting`` ``'reference'`` (default) or ``'paper'``; see the module docstring."""
  return NegativeObjective(c=c, weighting=weighting)
