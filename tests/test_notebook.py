"""The quickstart notebook runs from top to bottom (tiny budget)."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_runs(monkeypatch):
    monkeypatch.setenv("QUICKSTART_TRAIN_IMAGES", "256")
    monkeypatch.setenv("QUICKSTART_EPOCHS", "1")
    monkeypatch.setenv("QUICKSTART_ATTACK_IMAGES", "8")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = os.path.join(ROOT, "examples", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    last = notebook.cells[-1].outputs[-1]["data"]["text/plain"]
    for name in ("vgg_small_bn", "hah_vgg_small", "robust_hah_vgg_small", "linf 0.05",
                 "checks passed"):
        assert name in last, last
