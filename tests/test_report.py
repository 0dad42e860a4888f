"""Report writing: files, formats, atomicity."""

import json
import os

import numpy as np
import pytest

from ood_jax import metrics
from ood_jax.errors import InvalidInputError
from ood_jax.experiments import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _inputs():
  rng = np.random.default_rng(0)
  s_id = rng.normal(3.0, 0.3, 200)
  ood = {"mnist": rng.normal(2.5, 0.3, 150), "noise": rng.normal(8.0, 0.1, 100)}
  rows = [{"id": "fashion_mnist", "model": "vae", "score": "nll", "ood": name,
           **metrics.ood_metrics(s_id, s)} for name, s in ood.items()]
  # A second score with hand-set numbers to check the formatting.
  rows.append({"id": "fashion_mnist", "model": "vae", "score": "typicality", "ood": "mnist",
               "auroc": 0.98765, "auprc_in": 0.5, "auprc_out": 0.12345, "fpr80": 0.0004,
               "fpr95": 1.0, "n_id": 200, "n_ood": 150})
  samples = {("vae", "nll"): {"id_name": "fashion_mnist test", "id": s_id, "ood": ood,
                              "xlabel": "bits/dim"}}
  meta = {"preset": "smoke", "seed": 0, "wall_seconds": np.float32(1.5),
          "models": {"vae": {"bits_per_dim_mean": {"id_test": 3.0}}}, "shape": (28, 28, 1)}
  return dict(title="Test report", rows=rows, meta=meta, score_samples=samples,
              command="python -m ood_jax.experiments.table2 --preset smoke --out 'a b'")


def test_writes_all_files(tmp_path):
  out = tmp_path / "run"
  kw = _inputs()
  files = report.write_report(out, **kw)
  expected = {"report.md", "results.json", "meta.json", "hist_vae_nll.png", "roc_vae_nll.png"}
  assert set(files) == expected
  assert set(os.listdir(out)) == expected | {report.MANIFEST}   # and no temp dir left behind
  for name, path in files.items():
    assert path == os.path.join(out, name) and os.path.isfile(path)

  results = json.loads((out / "results.json").read_text())
  assert isinstance(results, list) and len(results) == 3
  for r in results:
    assert list(r) == list(report.ROW_KEYS)
  assert results[0]["auroc"] == kw["rows"][0]["auroc"]
  assert isinstance(results[0]["n_id"], int)

  meta = json.loads((out / "meta.json").read_text())
  assert meta["wall_seconds"] == 1.5 and meta["shape"] == [28, 28, 1]
  assert meta["models"]["vae"]["bits_per_dim_mean"]["id_test"] == 3.0

  for name in ("hist_vae_nll.png", "roc_vae_nll.png"):
    blob = (out / name).read_bytes()
    assert blob[:8] == PNG_MAGIC and len(blob) > 10_000


def test_report_markdown_tables(tmp_path):
  kw = _inputs()
  report.write_report(tmp_path, **kw)
  md = (tmp_path / "report.md").read_text()
  assert md.startswith("# Test report\n")
  assert kw["command"] in md
  assert "- **preset**: `smoke`" in md
  assert "### ID fashion_mnist, model vae (n_id = 200)" in md
  assert "| OOD set | n_ood | nll | typicality |" in md
  r_mnist, r_noise = kw["rows"][0], kw["rows"][1]
  assert (f"| mnist | 150 | {r_mnist['auroc']:.3f} / {r_mnist['auprc_out']:.3f} "
          "| 0.988 / 0.123 |") in md
  assert f"| noise | 100 | {r_noise['auroc']:.3f} / {r_noise['auprc_out']:.3f} | – |" in md
  assert "1.000 / 1.000" in md                      # noise is perfectly separated
  # Second table: FPR80 / AUPRC-in.
  assert "## FPR80 / AUPRC-in" in md
  assert f"| mnist | 150 | {r_mnist['fpr80']:.3f} / {r_mnist['auprc_in']:.3f} | 0.000 / 0.500 |" in md
  assert "(hist_vae_nll.png)" in md and "(roc_vae_nll.png)" in md


def test_failure_midway_leaves_out_dir_untouched(tmp_path, monkeypatch):
  (tmp_path / "report.md").write_text("old report\n")
  (tmp_path / "checkpoints").mkdir()
  before = sorted(os.listdir(tmp_path))

  def boom(*args, **kwargs):
    raise RuntimeError("injected plotting failure")

  monkeypatch.setattr(report, "_plot_roc", boom)      # the histogram is already rendered
  with pytest.raises(RuntimeError, match="injected"):
    report.write_report(tmp_path, **_inputs())
  assert sorted(os.listdir(tmp_path)) == before        # no new files, no .tmp-report-* dir
  assert (tmp_path / "report.md").read_text() == "old report\n"


def test_failure_does_not_leave_created_out_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(report, "_plot_hist", lambda *a, **k: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    report.write_report(tmp_path / "new", **_inputs())
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key,value", [("auroc", float("nan")), ("fpr95", np.float32("nan")),
                                       ("auprc_in", float("inf"))])
def test_non_finite_row_rejected_before_writing(tmp_path, key, value):
  kw = _inputs()
  kw["rows"][1][key] = value
  with pytest.raises(InvalidInputError, match=rf"rows\[1\]\['{key}'\].*noise"):
    report.write_report(tmp_path / "run", **kw)
  assert not (tmp_path / "run").exists()


def test_malformed_rows_and_samples_rejected(tmp_path):
  kw = _inputs()
  del kw["rows"][0]["fpr80"]
  with pytest.raises(InvalidInputError, match="missing \\['fpr80'\\]"):
    report.write_report(tmp_path, **kw)
  kw = _inputs()
  kw["rows"].append(dict(kw["rows"][0]))
  with pytest.raises(InvalidInputError, match="duplicate"):
    report.write_report(tmp_path, **kw)
  kw = _inputs()
  kw["score_samples"][("vae", "nll")]["ood"]["noise"][3] = np.nan
  with pytest.raises(InvalidInputError, match="noise.*1 NaN"):
    report.write_report(tmp_path, **kw)
  assert os.listdir(tmp_path) == []


def _draw(path):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(2, 2))
  fig.add_subplot().plot([0, 1], [1, 0])
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png")


def test_one_writer_for_every_experiment_result(tmp_path):
  """An experiment's Result: custom results, markdown sections, extra JSON and figures."""
  out = tmp_path / "run"
  res = report.Result(title="Custom", meta={"a": 1}, results=[{"set": "x", "bpd": 3.2}],
                      sections=["## My table\n\n| a |\n|---|\n| 1 |"],
                      json_files={"summary.json": {"m": np.float64(0.5)}},
                      figures={"fig_curve.png": _draw})
  files = report.write(out, "python -m x", res)
  assert set(files) == {"report.md", "results.json", "meta.json", "summary.json", "fig_curve.png"}
  assert json.loads((out / "results.json").read_text()) == [{"set": "x", "bpd": 3.2}]
  assert json.loads((out / "summary.json").read_text()) == {"m": 0.5}
  md = (out / "report.md").read_text()
  assert "## My table" in md and "![fig_curve.png](fig_curve.png)" in md
  assert "AUROC / AUPRC-out" not in md                      # no metric rows, no metric tables
  with pytest.raises(InvalidInputError, match="reserved"):
    report.write(out, "x", report.Result(title="t", meta={}, results=[], json_files={"meta.json": 1}))


def _swap_dirs(tmp_path):
  return [n for n in os.listdir(tmp_path) if report.SWAP_TAG in n]


def test_rewrite_swaps_the_whole_report_in_at_once(tmp_path, monkeypatch):
  """Killed right after the one atomic exchange (before the kept entries are moved back):
  out holds the complete new report (report.md and results.json of the same run, nothing of
  the old one), and ``recover`` (run before every run) gives the checkpoints back."""
  out = tmp_path / "run"
  report.write_report(out, **_inputs())
  (out / "checkpoints").mkdir()
  (out / "checkpoints" / "w").write_text("weights")
  old_results = (out / "results.json").read_text()
  kw2 = dict(_inputs(), title="second run")

  def killed(*a):
    raise KeyboardInterrupt

  monkeypatch.setattr(report, "_restore_kept", killed)
  with pytest.raises(KeyboardInterrupt):
    report.write_report(out, **kw2)
  assert "# second run" in (out / "report.md").read_text()
  assert sorted(os.listdir(out)) == sorted(json.loads((out / report.MANIFEST).read_text())
                                           + [report.MANIFEST])
  assert len(_swap_dirs(tmp_path)) == 1                 # the previous contents, set aside
  monkeypatch.undo()
  report.recover(out)
  assert (out / "checkpoints" / "w").read_text() == "weights" and not _swap_dirs(tmp_path)
  assert (out / "results.json").read_text() == old_results   # same rows, new title
  assert "# second run" in (out / "report.md").read_text()


def test_killed_build_is_discarded_and_fallback_moves_files(tmp_path, monkeypatch):
  out = tmp_path / "run"
  report.write_report(out, **_inputs())
  (out / "checkpoints").mkdir()
  os.makedirs(tmp_path / f".run{report.SWAP_TAG}killed")          # a build killed mid-way
  open(tmp_path / f".run{report.SWAP_TAG}killed" / report.BUILDING, "w").close()
  monkeypatch.setattr(report, "_exchange", lambda a, b: False)   # no renameat2 here
  report.write_report(out, **dict(_inputs(), title="again"))
  assert "# again" in (out / "report.md").read_text() and (out / "checkpoints").is_dir()
  assert not _swap_dirs(tmp_path)


def test_rewrite_removes_the_previous_reports_own_files_only(tmp_path):
  """Figures of a score the new run no longer has go; files the writer did not write stay;
  temporary dirs of a killed run are cleaned up."""
  out = tmp_path / "run"
  kw = _inputs()
  report.write_report(out, **kw)
  (out / "checkpoints").mkdir()
  (out / "notes.txt").write_text("mine")
  (out / ".tmp-report-killed").mkdir()
  kw2 = dict(kw, score_samples={("vae", "nll2"): kw["score_samples"][("vae", "nll")]})
  report.write_report(out, **kw2)
  names = set(os.listdir(out))
  assert "hist_vae_nll.png" not in names and "hist_vae_nll2.png" in names
  assert {"checkpoints", "notes.txt"} <= names and ".tmp-report-killed" not in names


def test_run_section_is_a_table_of_models_with_the_rest_in_meta_json(tmp_path):
  meta = {"preset": "smoke", "seed": 0, "train_config": {"lr": 1e-3},
          "models": {"vae": {"parameters": 1234567, "train_steps": 40,
                             "train_seconds_this_run": 12.5, "score_seconds": 3.25,
                             "final_train_loss_nats": 1812.4,
                             "bits_per_dim_mean": {"id_test": 3.1, "mnist": 2.4}},
                     "glow": {"train_steps": 8}}}
  report.write_report(tmp_path, **dict(_inputs(), meta=meta))
  md = (tmp_path / "report.md").read_text()
  run = md.split("## Run")[1].split("## AUROC")[0]
  assert ("| model | parameters | training steps | train s | score s | final loss (nats) | "
          "bits/dim id_test | bits/dim mnist |") in run
  assert "| vae | 1,234,567 | 40 | 12.5 | 3.25 | 1812 | 3.1 | 2.4 |" in run
  assert "| glow | – | 8 | – | – | – | – | – |" in run
  assert "- **preset**: `smoke`" in run and "lr" not in run
  assert "train_config" in run and "[meta.json](meta.json)" in run


def test_run_table_also_reads_models_trained(tmp_path):
  meta = {"models_trained": {"gan_vae_cifar10": {"train_steps": 4000,
                                                 "final_train_loss_nats": 16570.97}}}
  report.write_report(tmp_path, **dict(_inputs(), meta=meta))
  run = (tmp_path / "report.md").read_text().split("## Run")[1].split("## AUROC")[0]
  assert "| gan_vae_cifar10 | – | 4,000 | – | – | 16,571 |" in run
