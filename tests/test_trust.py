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
            "attribute walk": "not a built-in ATen operator",
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


# --- run folders: nothing lost, nothing mixed ---------------------------------------------------------

def _run_args(model: Path, results: Path, run_id: str, *extra) -> list:
    return ["run", "--model", model, "--samples", "20", "-T", "5", "--calibration-samples", "100", "--no-progress",
            "--results-dir", results, "--run-id", run_id, *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every result file's bytes (the lock file only names its last holder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(good_pt2, tmp_path_factory):
    """A finished run (results/done) of the .pt2 model, and its files' bytes."""
    results = tmp_path_factory.mktemp("runs") / "results"
    assert main([str(a) for a in _run_args(good_pt2, results, "done")]) == 0
    folder = results / "done"
    assert (folder / "summary.json").is_file() and (folder / "network.zip").is_file()
    return folder, _snapshot(folder)


def test_a_finished_run_run_again_writes_nothing(finished, good_pt2, capsys):
    folder, before = finished
    assert main([str(a) for a in _run_args(good_pt2, folder.parent, "done")]) == 0
    assert "finished before" in capsys.readouterr().out
    assert _snapshot(folder) == before


def test_evaluate_out_refuses_a_run_folder(finished, capsys):
    folder, before = finished
    line = _one_line(["evaluate", folder / "result.npz", "--out", folder], capsys, "holds a run")
    assert "--out" in line and _snapshot(folder) == before


def test_a_second_run_with_the_same_id_is_refused_naming_the_holder(finished, good_pt2, capsys):
    import fcntl
    import os

    folder, before = finished
    fd = os.open(folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, b"pid 4242, started 2026-12-07T13:00:00+00:00")
        line = _one_line(_run_args(good_pt2, folder.parent, "done"), capsys, "in use by another run")
        assert "pid 4242" in line and "2026-12-07T13:00:00" in line
    finally:
        os.close(fd)
    assert _snapshot(folder) == before


def test_a_run_folder_removed_mid_run_is_an_error(good_pt2, tmp_path, capsys, monkeypatch):
    import shutil

    import neurodeploy.jobs.run as run_module

    deploy = run_module.deploy

    def remove_then_deploy(*args, **kwargs):
        shutil.rmtree(tmp_path / "results" / "gone")
        return deploy(*args, **kwargs)

    monkeypatch.setattr(run_module, "deploy", remove_then_deploy)
    assert main([str(a) for a in _run_args(good_pt2, tmp_path / "results", "gone")]) == 2
    lines = _lines(capsys)
    assert "was removed or replaced while the run" in lines[-1] and not any("written" in x for x in lines[:-1])
    assert not (tmp_path / "results" / "gone" / "summary.json").exists()


def test_a_refused_network_run_leaves_nothing_so_the_corrected_one_is_accepted(finished, tmp_path, capsys):
    folder, _ = finished
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not a network")
    argv = ["run", "--samples", "10", "-T", "3", "--no-progress", "--results-dir", tmp_path / "r", "--run-id", "n"]
    _one_line([*argv, "--network", bad], capsys, "bad.zip")
    assert not (tmp_path / "r").exists()
    assert main([str(a) for a in [*argv, "--network", folder / "network.zip"]]) == 0
    assert (tmp_path / "r" / "n" / "summary.json").is_file()


def test_every_output_file_is_written_atomically(tmp_path):
    """A write that fails midway leaves the earlier file as it was and no temporary file behind."""
    from neurodeploy.errors import WriteError
    from neurodeploy.safe_io import atomic_write

    target = tmp_path / "summary.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with pytest.raises(WriteError, match="No such file"), atomic_write(tmp_path / "gone" / "x.json") as handle:
        handle.write(b"x")


# --- the fingerprint covers what decides the result -------------------------------------------------

_NET = '''import torch


class Net(torch.nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, hidden)
        self.fc2 = torch.nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1)))){tail}
'''


def _class_files(folder: Path, tail: str = "", prelude: str = "") -> tuple[Path, Path]:
    import torch

    source = folder / "net.py"
    source.write_text(prelude + _NET.format(tail=tail))
    weights = folder / "net.pt"
    if not weights.exists():
        torch.manual_seed(0)
        layers = {"fc1.weight": torch.randn(16, 784) * 0.05, "fc1.bias": torch.zeros(16),
                  "fc2.weight": torch.randn(10, 16) * 0.3, "fc2.bias": torch.zeros(10)}
        torch.save(layers, weights)
    return source, weights


def test_a_resume_after_the_model_class_file_changed_is_refused(tmp_path, capsys):
    source, weights = _class_files(tmp_path)
    argv = ["run", "--model-class", f"{source}:Net", "--weights", weights, "--samples", "20", "-T", "5",
            "--calibration-samples", "100", "--no-progress", "--results-dir", tmp_path / "r", "--run-id", "c"]
    assert main([str(a) for a in argv]) == 0
    (tmp_path / "r" / "c" / "summary.json").unlink()  # as if interrupted before it finished
    _class_files(tmp_path, tail=" * 2")
    capsys.readouterr()
    _one_line(argv, capsys, "the code of --model-class")


def test_a_resume_whose_network_came_out_different_is_refused(tmp_path):
    from conftest import constant_current_network

    from neurodeploy.errors import ConfigError
    from neurodeploy.jobs.folders import network_hash, record_network
    from neurodeploy.safe_io import write_bytes

    write_bytes(tmp_path / "config.json", b'{"fingerprint": "x"}')
    record_network(tmp_path, constant_current_network([0.5, 0.2]))
    record_network(tmp_path, constant_current_network([0.5, 0.2]))  # the same network: accepted
    with pytest.raises(ConfigError, match="the network converted now differs"):
        record_network(tmp_path, constant_current_network([0.5, 0.2], threshold=0.9))
    assert network_hash(constant_current_network([1.0])) != network_hash(constant_current_network([1.0], reset="zero"))


# --- memory estimated before any work --------------------------------------------------------------

def test_the_memory_estimate_is_items_x_steps_x_what_is_stored_plus_a_batch():
    from neurodeploy.jobs.memory import estimate_bytes

    # 10 items x 1e7 steps x (10 classes + 2 x 2 populations) x 4 bytes, the batch's copy, 16 bytes of curves
    assert estimate_bytes(10, 10**7, 500, 10, 2) == 10 * 10**7 * 56 * 2 + 10 * 10**7 * 16
    assert estimate_bytes(1000, 10, 100, 10, 3, n_neurons=50) == 1000 * 10 * 64 + 100 * 10 * 64 + 1000 * 10 * 16 \
        + 1000 * 50 * 4


@pytest.mark.parametrize("argv", [["-T", "10000000", "--samples", "10"], ["-T", "100000000"]])
def test_a_run_too_large_for_memory_is_refused_before_any_work(argv, tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    _one_line(["run", *argv, "--no-progress"], capsys, "--memory-budget")
    assert time.perf_counter() - start < 20 and not (tmp_path / "results").exists()


# --- user code -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prelude, tail, needle", [
    ("import sys\nsys.exit(3)\n", "", "sys.exit(3)"),
    ("raise KeyboardInterrupt\n", "", "KeyboardInterrupt"),
    ("raise ImportError('no such thing')\n", "", "ImportError: no such thing"),
    ("", "\n\n\nclass Bad(Net):\n    def __init__(self):\n        raise SystemExit(0)\n", "sys.exit(0)"),
    ("", "\n\n\nclass Bad(Net):\n    def forward(self, x):\n        raise KeyboardInterrupt\n", "KeyboardInterrupt"),
])
def test_user_code_that_exits_or_raises_is_one_line_naming_the_file(prelude, tail, needle, tmp_path, capsys):
    source, weights = _class_files(tmp_path, tail=tail, prelude=prelude)
    name = "Bad" if "class Bad" in tail else "Net"
    line = _one_line(["run", "--model-class", f"{source}:{name}", "--weights", weights, "--samples", "10",
                      "--no-progress", "--results-dir", tmp_path / "r"], capsys, needle)
    assert "net.py" in line and not (tmp_path / "r").exists()


def test_a_state_dict_mismatch_names_the_keys(tmp_path, capsys):
    import torch

    source, weights = _class_files(tmp_path)
    state = torch.load(weights)
    state["extra.weight"] = state.pop("fc2.weight")
    torch.save(state, weights)
    line = _one_line(["run", "--model-class", f"{source}:Net", "--weights", weights, "--no-progress",
                      "--results-dir", tmp_path / "r"], capsys, "fc2.weight")
    assert "extra.weight" in line and "Missing key" in line


def test_model_kwargs_deep_or_long_are_one_short_line(tmp_path, capsys):
    source, weights = _class_files(tmp_path)
    base = ["run", "--model-class", f"{source}:Net", "--weights", weights, "--no-progress"]
    _one_line([*base, "--model-kwargs", "[" * 60000 + "]" * 60000], capsys, "nested 60000 deep")
    line = _one_line([*base, "--model-kwargs", '{"hidden": "' + "x" * 120_000 + '"}'], capsys, "Net(**{'hidden'")
    assert len(line) < 600
    line = _one_line([*base, "--model-kwargs", '["' + "x" * 120_000 + '"]'], capsys, "a JSON object")
    assert len(line) < 600


# --- SpiNNaker configs ------------------------------------------------------------------------------

@pytest.mark.parametrize("body, needle", [
    ("[Machine]\nvirtual_board = True\nversion = 5\nvirtual_bored = True\n", "no option 'virtual_bored'"),
    ("[Machine]\nvirtual_board = True\nversion = 5\n[Mashine]\nx = 1\n", "unknown section [Mashine]"),
    ("[Machine]\nvirtual_board = True\nversion = 5\n[Reports]\ndefault_report_file_path = %(home)s\n", "'%'"),
    ("[Machine]\nvirtual_board = maybe\nversion = 5\n", "not a boolean"),
    ("[Machine]\nspalloc_server = 127.0.0.1\nspalloc_port = abc\n", "not a whole number"),
    ("[Machine]\nvirtual_board = True\nversion = 4\n", "not a board version"),
    (b"[Machine]\nvirtual_board = True\nversion = 5\n# \xff\xfe\n", "not UTF-8"),
])
def test_a_malformed_spinnaker_config_is_one_line_before_any_work(body, needle, tmp_path, capsys, monkeypatch):
    pytest.importorskip("spynnaker", reason="the spinnaker extra is not installed")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "board.cfg"
    config.write_bytes(body if isinstance(body, bytes) else body.encode())
    _one_line(["run", "--backend", "spinnaker", "--hardware-config", config, "--no-progress"], capsys, needle)
    assert not (tmp_path / "results").exists()


# --- where results cannot be written ------------------------------------------------------------------

def test_results_dir_that_cannot_hold_a_run_is_one_line(finished, good_pt2, tmp_path, capsys):
    import os

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _one_line(_run_args(good_pt2, a_file, "r"), capsys, "is a file or device, not a folder")
    _one_line(_run_args(good_pt2, "/dev/full", "r"), capsys, "is a file or device, not a folder")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "taken").write_text("x")
    _one_line(_run_args(good_pt2, tmp_path / "res", "taken"), capsys, "choose another --run-id")
    _one_line(_run_args(good_pt2, a_file / "below", "r"), capsys, "is a file, not a folder")
    locked = "/sys/neurodeploy-results" if os.geteuid() == 0 else tmp_path / "ro"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
    _one_line(_run_args(good_pt2, Path(locked) / "results", "r"), capsys, "cannot create the run folder")


def test_run_ids_up_to_the_filesystem_name_limit(good_pt2, tmp_path, capsys):
    from neurodeploy.jobs.config import JobConfig

    assert JobConfig(run_id="a" * 255).run_id == "a" * 255  # a legal folder name is accepted
    line = _one_line(_run_args(good_pt2, tmp_path, "a" * 256), capsys, "256 characters, more than the 255")
    assert "letters, digits" not in line


def test_ctrl_c_while_the_parser_is_built_is_one_line(monkeypatch, capsys):
    import neurodeploy.cli.parser as parser

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parser, "build_parser", interrupted)
    assert main(["run"]) == 130
    assert _lines(capsys) == ["interrupted"]


# --- a rerun killed or failing while it works leaves the finished run as it was ----------------------

class _Injected:
    """Counts the file-system calls of a block and fails the ``at``-th (an OSError "No space left on
    device", or a KeyboardInterrupt standing for a kill); ``at`` None only counts."""

    NAMES = ("open", "replace", "mkdir", "unlink", "rmdir", "ftruncate", "pwrite", "fsync", "rename")

    def __init__(self, monkeypatch, at: int | None, kill: bool):
        import builtins
        import errno
        import io
        import os

        self.calls, self.at, self.kill = 0, at, kill

        def wrap(original):
            def call(*args, **kwargs):
                self.calls += 1
                if self.calls == self.at:
                    if self.kill:
                        raise KeyboardInterrupt
                    raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)
                return original(*args, **kwargs)
            return call

        for name in self.NAMES:
            monkeypatch.setattr(os, name, wrap(getattr(os, name)))
        monkeypatch.setattr(builtins, "open", wrap(builtins.open))
        monkeypatch.setattr(io, "open", wrap(io.open))


def test_a_rerun_failed_or_killed_at_20_points_leaves_the_finished_run_byte_identical(finished, good_pt2, capsys):
    folder, before = finished
    settings = {"same": _run_args(good_pt2, folder.parent, "done"),
                "other": _run_args(good_pt2, folder.parent, "done", "--percentile", "99")}
    with pytest.MonkeyPatch.context() as patch:
        counter = _Injected(patch, None, False)
        assert main([str(a) for a in settings["same"]]) == 0
        total = counter.calls
    assert total >= 20
    seen = [f"a rerun of the finished run makes {total} file-system calls"]
    points = sorted({max(1, round(i * total / 14)) for i in range(14)}) + [1, 2, 3, 5, 8, 13]
    capsys.readouterr()
    for number, at in enumerate(points[:20]):
        argv = settings["same" if number % 3 else "other"]
        with pytest.MonkeyPatch.context() as patch:
            _Injected(patch, at, kill=bool(number % 2))
            code = main([str(a) for a in argv])
        lines = _lines(capsys)
        seen.append(f"call {at} ({'kill' if number % 2 else 'ENOSPC'}, {'same' if number % 3 else 'other'}): "
                    f"exit {code}")
        assert code in (0, 2, 130), (at, code, lines)
        assert not any("Traceback" in line for line in lines), lines
        if code == 2:
            assert len([line for line in lines if line.startswith("error")]) == 1, lines
        assert _snapshot(folder) == before, f"failure at file-system call {at} of {total} changed the run"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(seen) == 21, seen  # the count and the 20 failure points, each with its exit status


def test_a_full_disk_is_one_line_and_leaves_no_half_file(good_pt2, tmp_path):
    """Writes fail with EFBIG past a 16 KiB file-size limit (setrlimit in the child), as on a full disk:
    network.zip (33 KB) cannot be written; one line, exit 2, and the refused new run leaves nothing."""
    import resource
    import subprocess

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    code = "import sys; from neurodeploy.cli import main; sys.exit(main())"
    argv = [str(a) for a in _run_args(good_pt2, tmp_path / "results", "full")]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600,
                          preexec_fn=limit, cwd=tmp_path)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, lines
    assert len([line for line in lines if line.startswith("error")]) == 1 and "File too large" in lines[-1], lines
    assert not (tmp_path / "results").exists()
