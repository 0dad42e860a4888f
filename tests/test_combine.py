"""Tests of the scores.npz format (score_file) and of combining scores (combine)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import combine, score_file

ID = score_file.ID_SET


def _scores(seed=0, n_id=40, n_ood=30):
  """Two models; 'vae' has scores a and b, 'glow' only a; OOD sets mnist and lsun/bedroom."""
  rng = np.random.default_rng(seed)
  out = {}
  for model, names in (("vae", ("a", "b")), ("glow", ("a",))):
    for name in names:
      out[(model, name, ID)] = rng.normal(size=n_id).astype(np.float32)
      out[(model, name, "mnist")] = rng.normal(1.0, size=n_ood).astype(np.float32)
      out[(model, name, "lsun/bedroom")] = rng.normal(0.5, size=n_ood + 1).astype(np.float32)
  return out


# ----------------------------------------------------------------------------- score_file


def test_round_trip(tmp_path):
  scores = _scores()
  indices = {ID: np.arange(40), "mnist": np.arange(30)[::-1].astype(np.int32),
             "lsun/bedroom": None}
  arrays = score_file.to_arrays("fashion_mnist", scores, indices)
  assert "scores/vae/a/__id__" in arrays and "scores/glow/a/lsun%2Fbedroom" in arrays
  assert arrays["indices/mnist"].dtype == np.int64 and "indices/lsun%2Fbedroom" not in arrays
  assert arrays["id_name"].shape == () and arrays["id_name"].dtype.kind == "U"
  path = tmp_path / score_file.FILE
  score_file.write(path, arrays)
  score_file.write(path, arrays)                       # overwrites in place
  assert sorted(os.listdir(tmp_path)) == [score_file.FILE]   # no temporary file left
  id_name, got, idx = score_file.read(path)
  assert id_name == "fashion_mnist"
  assert set(got) == set(scores) and set(idx) == {ID, "mnist"}
  for k, v in scores.items():
    assert got[k].dtype == np.float32
    np.testing.assert_array_equal(got[k], v)
  np.testing.assert_array_equal(idx["mnist"], np.arange(30)[::-1])


def test_non_finite_scores_are_kept(tmp_path):
  arrays = score_file.to_arrays("c", {("m", "s", ID): np.array([np.nan, np.inf, 1.0])}, {})
  score_file.write(tmp_path / "s.npz", arrays)
  _, got, _ = score_file.read(tmp_path / "s.npz")
  assert np.isnan(got[("m", "s", ID)][0]) and np.isinf(got[("m", "s", ID)][1])


@pytest.mark.parametrize("id_name, scores, indices, match", [
    ("", {("m", "s", ID): [1.0]}, {}, "id_name"),
    ("c", {}, {}, "non-empty dict"),
    ("c", {("m", "s"): [1.0]}, {}, "triples"),
    ("c", {("m", "", ID): [1.0]}, {}, "non-empty string"),
    ("c", {("m", "s", ID): np.ones((2, 2))}, {}, "1-D"),
    ("c", {("m", "s", ID): np.array(["x"])}, {}, "real-valued"),
    ("c", {("m", "s", "mnist"): [1.0]}, {}, "no ID test scores"),
    ("c", {("m", "s", ID): [1.0, 2.0]}, {ID: [0]}, "1 indices"),
    ("c", {("m", "s", ID): [1.0]}, {ID: [0.5]}, "integer indices"),
    ("c", {("m", "s", ID): [1.0]}, {"svhn": [0]}, "no scores of that set"),
])
def test_to_arrays_rejects(id_name, scores, indices, match):
  with pytest.raises(InvalidInputError, match=match):
    score_file.to_arrays(id_name, scores, indices)


def test_read_errors_name_the_file(tmp_path):
  missing = tmp_path / "none.npz"
  with pytest.raises(InvalidInputError, match=f"{missing}: no such file"):
    score_file.read(missing)
  junk = tmp_path / "junk.npz"
  junk.write_bytes(np.random.default_rng(0).bytes(500))
  with pytest.raises(InvalidInputError, match="not an npz archive") as e:
    score_file.read(junk)
  assert str(e.value).startswith(str(junk)) and "pickle" not in str(e.value)
  obj = tmp_path / "obj.npz"
  np.savez(obj, id_name=np.array([{"a": 1}], dtype=object))
  with pytest.raises(InvalidInputError, match="holds Python objects") as e:
    score_file.read(obj)
  assert "allow_pickle" not in str(e.value)
  other = tmp_path / "other.npz"
  np.savez(other, id_name=np.array("c"), x=np.zeros(3))
  with pytest.raises(InvalidInputError, match="unexpected key 'x'"):
    score_file.read(other)
  no_id = tmp_path / "no_id.npz"
  np.savez(no_id, id_name=np.array("c"), **{"scores/m/s/mnist": np.zeros(3)})
  with pytest.raises(InvalidInputError, match=f"{no_id}: not a valid .*no ID test scores"):
    score_file.read(no_id)


# ----------------------------------------------------------------------------- standardise


def _brute_rank(ref, s):
  return np.array([(sum(r < v for r in ref) + 0.5 * sum(r == v for r in ref)) / len(ref)
                   for v in s])


def _brute_z(ref, s):
  mean = sum(ref) / len(ref)
  std = (sum((r - mean) ** 2 for r in ref) / len(ref)) ** 0.5
  return np.array([(v - mean) / std for v in s])


def test_rank_and_z_match_brute_force():
  rng = np.random.default_rng(1)
  ref = rng.integers(0, 5, 13).astype(float)              # many ties
  s = np.r_[rng.integers(-1, 7, 20).astype(float), ref]
  np.testing.assert_allclose(combine.standardise(ref, s, "rank"), _brute_rank(ref, s))
  np.testing.assert_allclose(combine.standardise(ref, s, "z"), _brute_z(ref, s))
  assert combine.standardise([1.0, 2.0], [0.0, 1.0, 1.5, 2.0, 3.0], "rank").tolist() == \
      [0.0, 0.25, 0.5, 0.75, 1.0]


def test_standardise_errors():
  with pytest.raises(InvalidInputError, match="constant"):
    combine.standardise([2.0, 2.0], [1.0], "z")
  with pytest.raises(InvalidInputError, match="unknown --how"):
    combine.standardise([1.0, 2.0], [1.0], "max")


def test_combine_is_the_mean_of_standardised_scores():
  rng = np.random.default_rng(2)
  by = {k: {ID: rng.normal(size=9), "o": rng.normal(size=5), "only_a": rng.normal(size=3)}
        for k in ("a", "b")}
  del by["b"]["only_a"]
  got = combine.combine(by, "rank")
  assert list(got) == [ID, "o"]
  want = (_brute_rank(by["a"][ID], by["a"]["o"]) + _brute_rank(by["b"][ID], by["b"]["o"])) / 2
  np.testing.assert_allclose(got["o"], want)
  with pytest.raises(InvalidInputError, match="at least 2"):
    combine.combine({"a": by["a"]}, "rank")
  by["b"]["o"] = by["b"]["o"][:4]
  with pytest.raises(InvalidInputError, match="different number of images"):
    combine.combine(by, "z")


@pytest.mark.parametrize("how", ["rank", "z"])
def test_complementary_scores_combine_better(how):
  """OOD half 1 is only seen by score a, half 2 only by score b (on a 100x scale, so raw
  scores must not be averaged): the combination beats both."""
  rng = np.random.default_rng(3)
  n = 1000
  a_id, b_id = rng.normal(size=n), 100 * rng.normal(size=n) + 50
  a_ood = np.r_[rng.normal(4.0, size=n // 2), rng.normal(size=n // 2)]
  b_ood = 100 * np.r_[rng.normal(size=n // 2), rng.normal(4.0, size=n // 2)] + 50
  got = combine.combine({"a": {ID: a_id, "o": a_ood}, "b": {ID: b_id, "o": b_ood}}, how)
  single = max(metrics.auroc(a_id, a_ood), metrics.auroc(b_id, b_ood))
  assert single < 0.8
  assert metrics.auroc(got[ID], got["o"]) > single + 0.05


# ----------------------------------------------------------------------------- CLI


def _run_dir(tmp_path, scores=None):
  run = tmp_path / "run"
  run.mkdir()
  scores = _scores() if scores is None else scores
  score_file.write(run / score_file.FILE,
                   score_file.to_arrays("fashion_mnist", scores, {"mnist": np.arange(30)}))
  return run, scores


def test_cli_end_to_end(tmp_path, capsys):
  run, scores = _run_dir(tmp_path)
  assert combine.main([str(run), "--scores", "a,b"]) == 0
  out_dir = run / "combined_rank_a+b"
  stdout = capsys.readouterr().out
  assert stdout.rstrip().endswith(f"wrote {out_dir}")
  assert "# Combined score rank(a+b), ID fashion_mnist" in stdout
  assert (out_dir / "report.md").read_text() in stdout
  rows = json.loads((out_dir / "results.json").read_text())
  assert {r["model"] for r in rows} == {"vae"}                 # glow lacks b
  assert {(r["score"], r["ood"]) for r in rows} == {
      (s, o) for s in ("a", "b", "rank(a+b)") for o in ("mnist", "lsun/bedroom")}
  for r in rows:
    if r["score"] in ("a", "b"):
      want = metrics.auroc(scores[("vae", r["score"], ID)], scores[("vae", r["score"], r["ood"])])
      assert r["auroc"] == want
  by = {n: {s: scores[("vae", n, s)] for s in (ID, "mnist", "lsun/bedroom")} for n in "ab"}
  comb = combine.combine(by, "rank")
  r = next(r for r in rows if r["score"] == "rank(a+b)" and r["ood"] == "mnist")
  assert r["auroc"] == pytest.approx(metrics.auroc(comb[ID], comb["mnist"]))
  _, written, idx = score_file.read(out_dir / score_file.FILE)     # chainable output
  assert ("vae", "rank(a+b)", "mnist") in written and list(idx) == ["mnist"]


def test_cli_z_models_and_out(tmp_path, capsys):
  scores = _scores()
  scores.update({("glow", "b", k[2]): v + 1 for k, v in scores.items() if k[:2] == ("glow", "a")})
  run, _ = _run_dir(tmp_path, scores)
  out = tmp_path / "elsewhere"
  assert combine.main([str(run), "--scores", "b, a", "--how", "z", "--models", "glow",
                       "--out", str(out)]) == 0
  rows = json.loads((out / "results.json").read_text())
  assert {r["model"] for r in rows} == {"glow"} and "z(b+a)" in {r["score"] for r in rows}
  assert capsys.readouterr().out.rstrip().endswith(f"wrote {out}")


@pytest.mark.parametrize("args, match", [
    (["--scores", "a,zz"], "score(s) ['zz'] not in the file; it has ['a', 'b']"),
    (["--scores", "a"], "at least 2 distinct scores"),
    (["--scores", "a,a"], "at least 2 distinct scores"),
    (["--scores", "a,b", "--how", "max"], "unknown --how 'max'"),
    (["--scores", "a,b", "--models", "pixelcnn"], "model(s) ['pixelcnn'] not in the file"),
    (["--scores", "a,b", "--models", "vae,glow"], "model 'glow' has no score(s) ['b']"),
])
def test_cli_errors(tmp_path, capsys, args, match):
  run, _ = _run_dir(tmp_path)
  before = sorted(os.listdir(tmp_path)), sorted(os.listdir(run))
  assert combine.main([str(run), *args]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err
  assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(run))) == before


def test_cli_without_scores_file(tmp_path, capsys):
  run = tmp_path / "old_run"
  run.mkdir()
  (run / "results.json").write_text("[]")
  assert combine.main([str(run), "--scores", "a,b"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  assert "predates scores.npz or was not an experiment run" in err
  assert os.listdir(run) == ["results.json"]
