"""Metrics against values computed by hand (OOD positive, higher score = more OOD)."""

from fractions import Fraction

import numpy as np
import pytest

from ood_jax import metrics
from ood_jax.errors import InvalidInputError

ID_A, OOD_A = [0, 1, 2, 3], [2, 3, 4, 5]   # overlapping sets with two ID/OOD ties


def test_auroc_with_ties_by_pair_counting():
  # OOD 2: beats {0, 1}, ties {2} -> 2.5;  OOD 3: beats {0, 1, 2}, ties {3} -> 3.5;
  # OOD 4, 5: beat all four -> 4 + 4.   (2.5 + 3.5 + 4 + 4) / 16 = 14/16.
  assert metrics.auroc(ID_A, OOD_A) == float(Fraction(14, 16)) == 0.875


def test_auroc_extremes():
  assert metrics.auroc([0, 1, 2], [3, 4]) == 1.0
  assert metrics.auroc([3, 4], [0, 1, 2]) == 0.0
  assert metrics.auroc([7, 7, 7], [7, 7]) == 0.5
  # One OOD sample tied with every ID sample, one above all: (0.5 * 2 + 2) / 4.
  assert metrics.auroc([1, 1], [1, 2]) == 0.75


def test_auroc_swap_or_negate_is_complement():
  rng = np.random.default_rng(0)
  s_id, s_ood = rng.integers(0, 6, 40), rng.integers(2, 8, 30)   # many ties
  a = metrics.auroc(s_id, s_ood)
  assert metrics.auroc(s_ood, s_id) == pytest.approx(1 - a, abs=1e-12)
  assert metrics.auroc(-s_id, -s_ood) == pytest.approx(1 - a, abs=1e-12)


def test_auroc_matches_brute_force_pair_count():
  rng = np.random.default_rng(1)
  s_id, s_ood = rng.integers(0, 5, 23), rng.integers(1, 6, 17)
  d = s_ood[:, None] - s_id[None, :]
  want = ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size
  assert metrics.auroc(s_id, s_ood) == pytest.approx(want, abs=1e-12)


def test_auprc_out_by_hand():
  # Thresholds on ID_A / OOD_A, flag OOD if score >= t:
  #   t=5: TP 1 FP 0 -> P 1,   R 1/4      t=4: TP 2 FP 0 -> P 1,   R 2/4
  #   t=3: TP 3 FP 1 -> P 3/4, R 3/4      t=2: TP 4 FP 2 -> P 4/6, R 1
  # AP = 1/4 (1 + 1 + 3/4 + 2/3) = 41/48.
  assert metrics.auprc_out(ID_A, OOD_A) == pytest.approx(41 / 48, abs=1e-12)


def test_auprc_asymmetric_case_by_hand():
  s_id, s_ood = [0, 1], [1, 2, 3]
  # OOD positive, by score descending: t=3: P 1, R 1/3; t=2: P 1, R 2/3;
  # t=1 (OOD 1 and ID 1 tied): TP 3 FP 1 -> P 3/4, R 1.  AP = 1/3 + 1/3 + 1/3 * 3/4 = 11/12.
  assert metrics.auprc_out(s_id, s_ood) == pytest.approx(11 / 12, abs=1e-12)
  # ID positive, by score ascending: t=0: P 1, R 1/2; t=1 (tied): TP 2 FP 1 -> P 2/3, R 1.
  # AP = 1/2 + 1/2 * 2/3 = 5/6.
  assert metrics.auprc_in(s_id, s_ood) == pytest.approx(5 / 6, abs=1e-12)
  # Pairs: OOD 1 beats 0 and ties 1 -> 1.5; OOD 2, 3 -> 2 + 2.   5.5 / 6.
  assert metrics.auroc(s_id, s_ood) == pytest.approx(11 / 12, abs=1e-12)


def test_auprc_all_tied_is_class_fraction():
  s_id, s_ood = [4.0, 4.0], [4.0, 4.0, 4.0]
  assert metrics.auprc_out(s_id, s_ood) == pytest.approx(3 / 5)
  assert metrics.auprc_in(s_id, s_ood) == pytest.approx(2 / 5)


def test_fpr_at_tpr_without_ties():
  s_id = np.arange(10.0)                                  # 0 .. 9
  s_ood = np.r_[np.arange(10.0, 18.0), 5.5, 2.5]          # 8 above every ID, then 5.5, 2.5
  # TPR 0.8 needs 8 OOD: t=10 flags no ID -> 0.
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.8) == 0.0
  # TPR 0.9 needs 9 OOD: t=5.5 flags ID {6, 7, 8, 9} -> 0.4.
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.9) == 0.4
  # TPR 0.95 needs all 10: t=2.5 flags ID {3, ..., 9} -> 0.7.
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.95) == 0.7
  m = metrics.ood_metrics(s_id, s_ood)
  assert (m["fpr80"], m["fpr95"]) == (0.0, 0.7)


def test_fpr_at_tpr_ties_include_tied_id_samples():
  s_id, s_ood = [0, 1, 2, 4, 4], [4, 4, 5, 6, 7]
  # 80% TPR = 4 of 5 OOD. t=5 flags only 3; the next point t=4 flags all 5 OOD and both
  # tied ID samples: FPR = 2/5 (no interpolation to "half of the tie").
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.8) == 0.4
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.95) == 0.4
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.6) == 0.0    # t=5: 3/5 OOD, no ID


def test_fpr_at_tpr_exact_fraction_reaches_target():
  # 19 / 20 OOD above every ID sample: TPR 0.95 is reached exactly at FPR 0, despite
  # floating point; the last OOD sample (below all ID) would cost FPR 1.
  s_id, s_ood = np.arange(10.0), np.r_[100.0 + np.arange(19), -1.0]
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.95) == 0.0
  assert metrics.fpr_at_tpr(s_id, s_ood, 0.96) == 1.0
  s_ood5 = np.r_[100.0 + np.arange(4), -1.0]            # 4 / 5 reaches 0.8
  assert metrics.fpr_at_tpr(s_id, s_ood5, 0.8) == 0.0


def test_fpr_extremes():
  assert metrics.fpr_at_tpr([0, 1], [2, 3], 0.95) == 0.0
  assert metrics.fpr_at_tpr([2, 3], [0, 1], 0.95) == 1.0
  assert metrics.fpr_at_tpr([1, 1], [1, 1], 0.8) == 1.0
  assert metrics.fpr_at_tpr([0, 1], [2, 3], 0.0) == 0.0


def test_fpr_matches_brute_force_definition():
  rng = np.random.default_rng(2)
  s_id, s_ood = rng.integers(0, 8, 31), rng.integers(2, 10, 29)
  for tpr in (0.5, 0.8, 0.95, 1.0):
    best = min((s_id >= t).mean() for t in np.r_[np.unique(np.r_[s_id, s_ood]), np.inf]
               if (s_ood >= t).mean() >= tpr)
    assert metrics.fpr_at_tpr(s_id, s_ood, tpr) == best


def test_ood_metrics_keys_and_types():
  m = metrics.ood_metrics(np.float32(ID_A), np.asarray(OOD_A, np.int64))
  assert set(m) == {"auroc", "auprc_in", "auprc_out", "fpr80", "fpr95", "n_id", "n_ood"}
  assert m["auroc"] == 0.875
  assert m["auprc_out"] == pytest.approx(41 / 48) and m["auprc_in"] == pytest.approx(41 / 48)
  # 80% TPR = 4 of 4 (3.2 rounds up): t=2 flags ID {2, 3} -> 0.5.
  assert (m["fpr80"], m["fpr95"]) == (0.5, 0.5)
  assert (m["n_id"], m["n_ood"]) == (4, 4)
  assert all(type(m[k]) is float for k in ("auroc", "auprc_in", "auprc_out", "fpr80", "fpr95"))
  assert type(m["n_id"]) is int and type(m["n_ood"]) is int


@pytest.mark.parametrize("s_id,s_ood,match", [
    ([], [1.0], r"score_id .*empty"),
    ([1.0], [], r"score_ood .*empty"),
    ([1.0, np.nan], [1.0], r"score_id .*1 NaN and 0 infinite"),
    ([1.0], [np.inf, np.nan, np.nan, 2.0], r"score_ood .*2 NaN and 1 infinite value\(s\) among 4"),
    ([[1.0, 2.0]], [1.0], r"score_id .*1-D.*\(1, 2\)"),
    (["a"], [1.0], r"score_id .*real-valued"),
])
def test_invalid_scores(s_id, s_ood, match):
  for fn in (metrics.auroc, metrics.auprc_in, metrics.auprc_out, metrics.ood_metrics):
    with pytest.raises(InvalidInputError, match=match):
      fn(s_id, s_ood)
  with pytest.raises(InvalidInputError, match=match):
    metrics.fpr_at_tpr(s_id, s_ood, 0.95)


@pytest.mark.parametrize("tpr", [-0.1, 1.5, float("nan"), "0.95", True])
def test_invalid_tpr(tpr):
  with pytest.raises(InvalidInputError, match="tpr"):
    metrics.fpr_at_tpr([0.0], [1.0], tpr)
