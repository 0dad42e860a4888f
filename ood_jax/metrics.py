"""Threshold-free and fixed-TPR metrics for OOD detection.

Conventions used throughout:

* **OOD is the positive class** and a score is **higher for more OOD**. A detector flags
  a sample as OOD when ``score >= t`` for a threshold ``t``.
* ``score_id`` holds the scores of the in-distribution (ID) test set (negatives),
  ``score_ood`` those of one OOD set (positives). Both are 1-D, finite and non-empty;
  anything else raises ``InvalidInputError``.
* TPR is the fraction of OOD samples flagged, FPR the fraction of ID samples flagged.

Every metric is a plain Python ``float`` in ``[0, 1]``; computed with scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_jax.errors import InvalidInputError

# Absolute slack when comparing a ROC point's TPR (a ratio k / n_ood) against the target
# TPR, so that e.g. 19 / 20 counts as reaching 0.95 despite floating-point rounding.
# Far below 1 / n_ood for any set size that fits in memory.
_TPR_TOL = 1e-12


def check_scores(s, what: str) -> np.ndarray:
  """Returns ``s`` as a 1-D float64 array; raises ``InvalidInputError`` if it is not a
  non-empty, 1-D, finite set of real numbers. ``what`` names the set in the message."""
  try:
    a = np.asarray(s)
  except Exception as e:  # ragged lists and the like
    raise InvalidInputError(f"{what}: could not be read as an array of scores ({e}).") from None
  if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
    raise InvalidInputError(f"{what}: expected real-valued scores, got dtype {a.dtype}.")
  if np.issubdtype(a.dtype, np.complexfloating):
    raise InvalidInputError(f"{what}: expected real-valued scores, got complex dtype {a.dtype}.")
  if a.ndim != 1:
    raise InvalidInputError(f"{what}: expected a 1-D array of per-sample scores, got shape {a.shape}.")
  if a.size == 0:
    raise InvalidInputError(f"{what}: the set is empty; at least one score is needed.")
  a = a.astype(np.float64)
  n_nan = int(np.isnan(a).sum())
  n_inf = int(np.isinf(a).sum())
  if n_nan or n_inf:
    raise InvalidInputError(
        f"{what}: {n_nan} NaN and {n_inf} infinite value(s) among {a.size} scores; "
        "every score must be finite (check the model's log-likelihoods for overflow).")
  return a


def _labelled(score_id, score_ood) -> tuple[np.ndarray, np.ndarray]:
  """Validated scores concatenated ID-first, with labels 0 = ID, 1 = OOD."""
  s_id = check_scores(score_id, "score_id (in-distribution)")
  s_ood = check_scores(score_ood, "score_ood (out-of-distribution)")
  y = np.concatenate([np.zeros(s_id.size, np.int8), np.ones(s_ood.size, np.int8)])
  return y, np.concatenate([s_id, s_ood])


def auroc(score_id, score_ood) -> float:
  """Area under the ROC curve with OOD positive.

  Equals the probability that a random OOD sample scores higher than a random ID sample,
  counting ties as 1/2: ``(#{ood > id} + 0.5 #{ood == id}) / (n_id n_ood)`` over all pairs.
  0.5 = chance, 1.0 = perfect separation, 0.0 = perfectly reversed.
  """
  y, s = _labelled(score_id, score_ood)
  return float(roc_auc_score(y, s))


def auprc_out(score_id, score_ood) -> float:
  """Average precision with OOD as the positive class, ranking by ``score``.

  scikit-learn's step-wise definition ``AP = sum_n (R_n - R_{n-1}) P_n`` over the
  distinct thresholds ``t`` (flag if ``score >= t``, so tied samples enter together),
  with recall ``R`` and precision ``P`` of the OOD class. Its chance level is the OOD
  fraction ``n_ood / (n_id + n_ood)``.
  """
  y, s = _labelled(score_id, score_ood)
  return float(average_precision_score(y, s))


def auprc_in(score_id, score_ood) -> float:
  """Average precision with ID as the positive class, ranking by ``-score``.

  Same step-wise definition as ``auprc_out``, with the roles of the sets swapped: a
  sample is called ID when ``score <= t``. Chance level is ``n_id / (n_id + n_ood)``.
  """
  y, s = _labelled(score_id, score_ood)
  return float(average_precision_score(1 - y, -s))


def _fpr_at_tpr(y: np.ndarray, s: np.ndarray, tpr: float) -> float:
  fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
  # ROC points are ordered by decreasing threshold, so TPR and FPR are non-decreasing and
  # the first point that reaches the target has the smallest FPR among those that do.
  i = int(np.argmax(tprs >= tpr - _TPR_TOL))
  return float(fprs[i])


def fpr_at_tpr(score_id, score_ood, tpr: float) -> float:
  """False positive rate at a fixed true positive rate (e.g. ``tpr=0.95`` -> FPR95).

  Definition: over the ROC operating points "flag OOD if ``score >= t``", one per
  distinct score value ``t`` (plus ``t = +inf``, which flags nothing), take those whose
  TPR (fraction of OOD samples flagged) is ``>= tpr``, and return the smallest FPR
  (fraction of ID samples flagged) among them. No interpolation between points: with
  ties, an operating point flags *all* samples tied at ``t``, so ID samples tied with the
  OOD sample that is needed to reach ``tpr`` count as false positives. TPR ``k / n_ood``
  is compared with ``tpr`` up to 1e-12, so ``19 / 20`` reaches ``0.95``.

  Args:
    score_id: 1-D scores of the ID test set.
    score_ood: 1-D scores of the OOD set.
    tpr: target true positive rate in ``[0, 1]``.

  Returns:
    FPR in ``[0, 1]``; lower is better.
  """
  if isinstance(tpr, bool) or not isinstance(tpr, (int, float, np.integer, np.floating)) \
      or not 0.0 <= float(tpr) <= 1.0:
    raise InvalidInputError(f"tpr: expected a number in [0, 1] (e.g. 0.95), got {tpr!r}.")
  y, s = _labelled(score_id, score_ood)
  return _fpr_at_tpr(y, s, float(tpr))


def ood_metrics(score_id, score_ood) -> dict:
  """All metrics for one (ID, OOD) pair.

  Returns:
    ``{"auroc", "auprc_in", "auprc_out", "fpr80", "fpr95"}`` as floats (see the
    functions of the same names; ``fprXX = fpr_at_tpr(..., XX / 100)``) and the set sizes
    ``"n_id"``, ``"n_ood"`` as ints.
  """
  y, s = _labelled(score_id, score_ood)
  return {
      "auroc": float(roc_auc_score(y, s)),
      "auprc_in": float(average_precision_score(1 - y, -s)),
      "auprc_out": float(average_precision_score(y, s)),
      "fpr80": _fpr_at_tpr(y, s, 0.80),
      "fpr95": _fpr_at_tpr(y, s, 0.95),
      "n_id": int((y == 0).sum()),
      "n_ood": int((y == 1).sum()),
  }
