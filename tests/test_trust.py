"""Trust at the boundary (issue 29): no file runs code, no run loses or mixes data, failing and concurrent
runs stay clean. Every refusal is one line and exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from neurodeploy.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import hostile_pt2  # noqa: E402


def _lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def _one_line(argv, capsys, needle: str = "") -> str:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:
        code = done.code
    lines = _lines(capsys)
    assert code == 2 and len(lines) == 1, (code, lines)
    assert "Traceback" not in lines[0] and needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    return hostile_pt2.save_program(tmp_path_factory.mktemp("pt2") / "good.pt2")


# --- .pt2 archives -----------------------------------------------------------------------------------

_NEEDLES = {"custom op": "not a built-in ATen operator", "torch.load as a node": "not a built-in ATen operator",
            "compiled library": "compiled code", "pre-2.8 layout": "pre-2.8 layout"}


@pytest.mark.parametrize("kind", [k for k in hostile_pt2.HOSTILE if k != "guards code"])
@pytest.mark.parametrize("command", ["run", "convert"])
def test_a_hostile_pt2_is_refused_in_one_line_and_runs_nothing(kind, command, good_pt2, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    bad = hostile_pt2.hostile(kind, good_pt2, tmp_path / "bad.pt2", marker)
    argv = ["run", "--model", bad, "--samples", "10", "-T", "5", "--no-progress"] if command == "run" else \
        ["convert", bad, "--out", tmp_path / "x.zip", "--no-progress"]
    line = _one_line(argv, capsys, _NEEDLES.get(kind, "--trust-pickle"))
    assert str(bad) in line
    assert not marker.exists()
    assert not (tmp_path / "results").exists() and not (tmp_path / "x.zip").exists()


def test_the_payload_paths_are_real_torch_export_load_runs_them(good_pt2, tmp_path):
    """The check is what stops them: torch.export.load itself runs a pickled weight's payload."""
    from neurodeploy.convert.pt2_archive import load_program
    from neurodeploy.errors import ModelFormatError

    marker = tmp_path / "marker"
    bad = hostile_pt2.hostile("pickled weight", good_pt2, tmp_path / "bad.pt2", marker)
    with pytest.raises(ModelFormatError):
        load_program(bad, trust_pickle=True)  # trusted: loaded as it is; the weight is no tensor
    assert marker.exists()


def test_guards_code_is_never_compiled(good_pt2, tmp_path):
    from neurodeploy.convert.pt2_archive import load_program

    marker = tmp_path / "marker"
    bad = hostile_pt2.hostile("guards code", good_pt2, tmp_path / "bad.pt2", marker)
    program = load_program(bad)
    program.module()  # the unlifted module compiles guards_code; it was emptied when the archive was rebuilt
    assert program._guards_code == [] and not marker.exists()


def test_a_clean_pt2_reads_as_the_program_it_holds(good_pt2):
    import torch

    from neurodeploy.convert.pt2_archive import load_program

    ours = load_program(good_pt2)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(ours.module()(x), torch.export.load(str(good_pt2)).module()(x))
