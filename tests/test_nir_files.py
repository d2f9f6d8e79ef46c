"""Hostile NIR files (docs/nir.md, "Reading files"): links, dtypes, shapes, declared sizes and nesting are
checked before any array is read, and each refusal is one line with exit status 2 from the command line."""

from __future__ import annotations

import time

import numpy as np
import pytest

from neurodeploy.cli import main
from neurodeploy.nir import NIRError, read_nir
from neurodeploy.nir.hdf5 import MAX_DEPTH, NIRFileError

nir = pytest.importorskip("nir")
h5py = pytest.importorskip("h5py")

pytestmark = pytest.mark.filterwarnings("ignore::neurodeploy.nir.NIRWarning")


def _graph_file(path, weight=None):
    """A valid two-node graph (Input -> Linear -> IF -> Output) of 3 -> 2 neurons."""
    weight = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]], np.float32) if weight is None else weight
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(np.array([3])), "w": nir.Linear(weight),
        "lif": nir.IF(r=np.ones(2, np.float32), v_threshold=np.ones(2, np.float32)),
        "output": nir.Output(np.array([2]))},
        edges=[("input", "w"), ("w", "lif"), ("lif", "output")])
    nir.write(path, graph)
    return path


def _replace(path, where: str, make):
    """Replaces the object at ``where`` in the file with ``make(file)`` (a link, an array...)."""
    with h5py.File(path, "a") as f:
        del f[where]
        f[where] = make(f)
    return path


def _refused(path, capsys, match: str) -> None:
    """Refused by the reader (NIRFileError naming the problem) and by `neurodeploy info` (one line, exit 2)."""
    with pytest.raises(NIRFileError, match=match):
        read_nir(path)
    capsys.readouterr()
    assert main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], lines


def test_a_valid_file_reads(tmp_path):
    network = read_nir(_graph_file(tmp_path / "ok.nir"))
    assert [p.shape for p in network.populations.values()] == [(3,), (2,)]


def test_external_link_is_not_followed(tmp_path, capsys):
    """An external link to another file's zeros would make the network run with those weights."""
    other = tmp_path / "zeros.h5"
    with h5py.File(other, "w") as f:
        f["w"] = np.zeros((2, 3), np.float32)
    path = _replace(_graph_file(tmp_path / "ext.nir"), "node/nodes/w/weight",
                    lambda f: h5py.ExternalLink(str(other), "/w"))
    with h5py.File(path, "r") as f:  # h5py itself would follow it
        assert np.all(f["node/nodes/w/weight"][()] == 0)
    _refused(path, capsys, "external link")


def test_soft_link_to_an_ancestor_is_refused(tmp_path, capsys):
    path = _replace(_graph_file(tmp_path / "loop.nir"), "node/nodes/w/weight", lambda f: h5py.SoftLink("/node"))
    _refused(path, capsys, "soft link")


def test_hard_link_cycle_is_bounded(tmp_path, capsys):
    """A hard link from a group to its ancestor makes an infinite tree (RecursionError in nir.read)."""
    path = _graph_file(tmp_path / "cycle.nir")
    with h5py.File(path, "a") as f:
        f["node/nodes/w/again"] = f["node"]
    _refused(path, capsys, f"deeper than {MAX_DEPTH}")


@pytest.mark.parametrize(("array", "match"), [
    (np.array([[1 + 2j, 0, 0], [0, 1, 0]], np.complex64), "complex"),
    (np.array([[b"1", b"0", b"0"], [b"0", b"1", b"0"]]), "holds text"),
    (np.zeros((2, 3), [("a", "f4"), ("b", "f4")]), "dtype"),
])
def test_weights_that_are_not_real_numbers_are_refused(tmp_path, capsys, array, match):
    path = _replace(_graph_file(tmp_path / "w.nir"), "node/nodes/w/weight", lambda f: array)
    _refused(path, capsys, match)


def test_array_without_a_shape_is_refused(tmp_path, capsys):
    path = _replace(_graph_file(tmp_path / "empty.nir"), "node/nodes/w/weight", lambda f: h5py.Empty("f4"))
    _refused(path, capsys, "declares no shape")


@pytest.mark.parametrize("shape", [(10_000, 1_000_000), (1_000_000_000,)])  # 40 GB; a 1e9-element weight
def test_declared_size_is_checked_before_reading(tmp_path, capsys, shape):
    path = _graph_file(tmp_path / "big.nir")
    with h5py.File(path, "a") as f:
        del f["node/nodes/w/weight"]
        f.create_dataset("node/nodes/w/weight", shape=shape, dtype="f4", chunks=(1, 1000) if len(shape) == 2
                         else (1000,), compression="gzip")
    assert path.stat().st_size < 200_000  # unwritten chunks take no room: a small file declaring gigabytes
    start = time.perf_counter()
    _refused(path, capsys, "declare more than")
    assert time.perf_counter() - start < 30  # refused without reading (reading would take minutes)


def test_a_file_that_is_not_a_graph_is_one_line(tmp_path, capsys):
    path = tmp_path / "data.nir"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    _refused(path, capsys, "no group 'node'")
    broken = _replace(_graph_file(tmp_path / "broken.nir"), "node/nodes/w/type", lambda f: "Bogus")
    with pytest.raises(NIRError, match="not a NIR graph"):
        read_nir(broken)
