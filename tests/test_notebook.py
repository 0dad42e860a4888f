"""``notebooks/quickstart.ipynb`` runs top to bottom (nbclient, a real kernel).

It trains the smoke table's VAE (60 steps) and a second small one on FashionMNIST (about
4 minutes on a busy 2-core CPU, 2.5 of them in the table cell), so it is a slow test: set
``OOD_JAX_SLOW_TESTS=1`` (CI does). It needs the Debian FashionMNIST and MNIST in
``../shared/data`` (the notebook downloads only on Colab).
"""

from __future__ import annotations

import pathlib

import pytest

from conftest import needs_fmnist, needs_shared_data, slow_only

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _text(output) -> str:
  if "text" in output:
    return output["text"]
  data = output.get("data", {})
  return "\n".join(str(data.get(k, "")) for k in ("text/markdown", "text/plain"))


def test_notebook_is_stripped_nbformat4():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
@slow_only
@needs_fmnist
@needs_shared_data
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's OUT = tempfile.mkdtemp()
  monkeypatch.chdir(tmp_path)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  code = [c for c in nb.cells if c.cell_type == "code"]
  errors = [o for c in code for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  report = next(c for c in code if "report.md" in c.source and "Markdown(" in c.source)
  assert any("AUROC" in _text(o) for o in report.outputs), report.outputs
  images = next(c for c in code if "*.png" in c.source)
  assert sum("image/png" in o.get("data", {}) for o in images.outputs) >= 2
  assert any("NLL AUROC" in _text(o) for c in code for o in c.outputs)
  assert list(tmp_path.glob("ood_jax_*/table2_smoke/report.md"))
