"""The code blocks of the documentation (README and docs/ pages) run as written, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
OWN_MODEL = ROOT / "docs" / "own-model.md"


def _section(page: Path, section: str | None) -> str:
    """The text of ``page`` under the ``## section`` heading (None: the whole page)."""
    text = page.read_text()
    if section is None:
        return text
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def python_blocks(page: Path, section: str | None = None) -> list[str]:
    """The ```python blocks of ``page`` (or of its section ``section``)."""
    return re.findall(r"```python\n(.*?)```", _section(page, section), flags=re.S)


def test_getting_started_python_api_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(GETTING_STARTED, "Python API")
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/getting-started.md (Python API)", "exec"), {})
    accuracy, latency = capsys.readouterr().out.split()
    assert 0.5 < float(accuracy) <= 1.0 and float(latency) >= 0.0


def bash_blocks(page: Path, section: str | None = None) -> list[str]:
    """The ```bash blocks of ``page`` (or of its section ``section``)."""
    return re.findall(r"```bash\n(.*?)```", _section(page, section), flags=re.S)


def test_own_model_page_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every command of docs/own-model.md in a tmp folder (bash blocks in a subprocess, in order, with the
    model cache in tmp), then its Python block."""
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, NEURODEPLOY_CACHE=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    blocks = bash_blocks(OWN_MODEL)
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
    (block,) = python_blocks(OWN_MODEL)
    exec(compile(block, "docs/own-model.md", "exec"), {})
    snn, ann = capsys.readouterr().out.split()
    assert 0.5 < float(snn) <= 1.0 and 0.5 < float(ann) <= 1.0


def test_ci_runs_the_readme_test_command_verbatim():
    """The README's second quick-start command is what CI runs (.ci/run), character for character."""
    commands = bash_blocks(ROOT / "README.md", "Quick start")
    assert len(commands) == 2
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text().splitlines()
