"""The tutorial notebooks of docs/tutorials/ run as written (executed with nbclient in a real kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "docs" / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs(notebook, tmp_path, monkeypatch):
    repository = str(notebook.parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("NEURODEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    book = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [output for cell in book.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    figures = [output for cell in book.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
               if "image/png" in output.get("data", {})]
    assert figures, "the overview figure was not shown"
