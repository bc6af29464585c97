"""Every notebook in notebooks/ runs top to bottom in this environment (what a reader does first).

Each runs in a fresh kernel of this interpreter, from the notebooks folder, with its own
``UQ_FLOWS_HOME``; a cell that raises fails the test with that cell's error.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there_without_outputs():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03"]
    for path in NOTEBOOKS:  # stored clean: outputs belong to the reader's run, not to git
        cells = nbformat.read(path, as_version=4).cells
        assert all(not cell.get("outputs") for cell in cells if cell.cell_type == "code"), path.name


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    kernels = tmp_path / "jupyter" / "kernels" / "uq-flows-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({  # this interpreter, whatever kernels the user has
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "uq-flows test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("UQ_FLOWS_HOME", str(tmp_path / "home"))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="uq-flows-test",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)  # every cell ran
    assert any(output.get("data", {}).get("image/png") for cell in code for output in cell.outputs)  # it shows figures
