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
