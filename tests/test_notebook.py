"""The quickstart notebook runs from top to bottom (tiny budget)."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("QUICKSTART_TRAIN_IMAGES", "512")
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = os.path.join(ROOT, "examples", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    last = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "hah_vgg_small" in last and "vgg_small_bn" in last
