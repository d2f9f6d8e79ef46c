"""The README's Python code blocks run as written, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section whose heading is ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


@pytest.mark.parametrize("section", ["Python API"])
def test_readme_python_blocks_run(section, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(section)
    assert blocks
    for block in blocks:
        exec(compile(block, f"README.md ({section})", "exec"), {})
    accuracy, latency = capsys.readouterr().out.split()
    assert 0.5 < float(accuracy) <= 1.0 and float(latency) >= 0.0


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of the README section whose heading is ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_readme_your_own_model_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every command of "Your own model" in a tmp folder (bash blocks in a subprocess, in order, with the
    model cache in tmp), then its Python block."""
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, NEURODEPLOY_CACHE=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    blocks = bash_blocks("Your own model")
    assert len(blocks) == 3
    for block in blocks:
        done = subprocess.run(["bash", "-e", "-c", block.replace("neurodeploy run", "neurodeploy run --no-progress")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import json

    summaries = {name: json.loads((tmp_path / "results" / name / "summary.json").read_text())
                 for name in ("export", "class", "pickle", "again")}
    assert len({s["snn_accuracy"] for s in summaries.values()}) == 1
    assert summaries["again"]["ann_accuracy"] == summaries["export"]["ann_accuracy"]
    (block,) = python_blocks("Your own model")
    exec(compile(block, "README.md (Your own model)", "exec"), {})
    snn, ann = capsys.readouterr().out.split()
    assert 0.5 < float(snn) <= 1.0 and 0.5 < float(ann) <= 1.0
