"""Jobs started by a launcher (``neurodeploy.parallel``, ``docs/scaling.md``): launch detection, and the
same results from 2 MPI ranks (neuron backend) and 2 torch.distributed processes (gpu backend) as from one
process. Every rank stays on this machine: MPI over shared memory, torch.distributed on 127.0.0.1."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.errors import ConfigError
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.parallel import Launch, detect_launch

MPIRUN = shutil.which("mpirun") or str(Path(sys.executable).with_name("mpirun"))


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, Launch("mpi", 4, 3, "Open MPI")),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, Launch("mpi", 2, 0, "MPICH / PMI")),
    ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, Launch("mpi", 8, 5, "Slurm srun")),
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, None),  # a batch script, not a task of srun
    ({"WORLD_SIZE": "2", "RANK": "1", "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"},
     Launch("torch", 2, 1, "torchrun")),
    ({"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"}, None),  # one rank: a single process
])
def test_launch_is_read_from_the_launchers_environment(environ, expected):
    assert detect_launch(environ) == expected


def test_a_launcher_variable_that_is_no_number_is_refused():
    with pytest.raises(ConfigError, match="PMI_SIZE='two'"):
        detect_launch({"PMI_SIZE": "two", "PMI_RANK": "0"})


def test_cells_over_ranks_without_an_mpi_launch_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["run", "--backend", "neuron", "--distribute", "cells", "--samples", "5", "--no-progress",
                 "--results-dir", str(tmp_path)]) == 2
    assert "--distribute cells places the cells over MPI ranks: start the job with mpirun or srun" in \
        capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # refused before any work


SERVE_SCRIPT = """
import sys

from neurodeploy import parallel


class Released:
    \"\"\"A team whose rank 0 releases at once (the first bcast brings no work).\"\"\"

    rank, size = 1, 2

    def bcast(self, value):
        print("torch imported before the first piece of work:", "torch" in sys.modules)
        return None

    def close(self):
        pass


assert "torch" not in sys.modules
raise SystemExit(parallel.serve(Released()))
"""


def test_a_serving_rank_imports_torch_and_the_backends_before_the_first_piece_of_work(tmp_path):
    """While rank 0 prepares the job, the other ranks import what every share needs (docs/scaling.md): rank 0
    does not wait for that import in its first collective."""
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch imported before the first piece of work: True" in done.stdout


def _environment() -> dict:
    """This process's environment (its model cache and PYTHONPATH included), one thread a rank, MPI over
    shared memory only, and mpirun allowed as root (containers)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_MCA_btl="self,sm", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", MASTER_ADDR="127.0.0.1")
    for key in [k for k in env if k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_", "SLURM_"))] + ["WORLD_SIZE",
                                                                                                  "RANK"]:
        env.pop(key, None)
    return env


def _torchrun() -> list[str]:
    """torchrun with 2 processes on this machine, its store on a free port of 127.0.0.1 (torchrun's port 0
    is not passed on to the ranks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(port)]


def _text(done: subprocess.CompletedProcess) -> str:
    """What the job printed, without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)


def _same_arrays(first: Path, second: Path) -> None:
    a, b = SimulationResult.load(first), SimulationResult.load(second)
    for name in ("readout", "labels", "spike_counts", "synaptic_events"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


NEURON_RUN = ["run", "--backend", "neuron", "--samples", "20", "-T", "20", "--epochs", "1", "--no-progress"]


@contextmanager
def one_thread():
    """This process and the worker processes it starts at one thread, as every rank runs
    (:func:`_environment`): float32 sums over another thread count round differently (readouts within ~1e-5),
    and "identical to one process" compares the same arithmetic."""
    threads, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if variable is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = variable


@pytest.fixture(scope="module")
def one_process_neuron_run(tmp_path_factory) -> Path:
    """The single-machine default (its worker processes) of the runs the MPI jobs must equal."""
    pytest.importorskip("neuron", reason="the neuron extra (PyNN + NEURON) is not installed")
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed")
    if not Path(MPIRUN).exists():
        pytest.skip("mpirun not found: pip install 'neurodeploy[mpi]'")
    root = tmp_path_factory.mktemp("mpi")
    with one_thread():
        assert main(NEURON_RUN + ["--results-dir", str(root), "--run-id", "one"]) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("distribute", "device"), [("items", "cpu (2 ranks)"),
                                                     ("cells", "cpu (cells over 2 MPI ranks)")])
def test_two_mpi_ranks_equal_one_process_spike_for_spike(one_process_neuron_run, distribute, device):
    """Items: each rank simulates its share in its own NEURON. Cells: PyNN places half of every population's
    cells on each rank and NEURON carries the spikes between them (NEURON itself counts 2 ranks)."""
    root = one_process_neuron_run
    done = subprocess.run([MPIRUN, "--oversubscribe", "-np", "2", sys.executable, "-m", "neurodeploy", *NEURON_RUN,
                           "--results-dir", str(root), "--run-id", distribute, "--distribute", distribute],
                          env=_environment(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 ranks (MPI, started by Open MPI)" in _text(done)
    _same_arrays(root / "one" / "result.npz", root / distribute / "result.npz")
    metadata = SimulationResult.load(root / distribute / "result.npz").metadata
    assert metadata["device"] == device
    assert metadata["neuron_ranks"] == (2 if distribute == "cells" else 1)


@pytest.mark.slow
def test_two_torchrun_processes_equal_one_process_and_resume(tmp_path):
    common = ["run", "--samples", "60", "-T", "10", "--epochs", "1", "--batch-size", "20", "--no-progress",
              "--results-dir", str(tmp_path)]
    with one_thread():
        assert main(common + ["--run-id", "one"]) == 0
    one = SimulationResult.load(tmp_path / "one" / "result.npz")
    partial = tmp_path / "two" / "partial"  # rank 0 checkpoints joined batches: a rerun resumes from them
    partial.mkdir(parents=True)
    one.select(np.arange(20)).save(partial / "batch_0000000.npz")
    done = subprocess.run([*_torchrun(), "-m", "neurodeploy", *common, "--run-id", "two"], env=_environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 ranks (torch.distributed (gloo), started by torchrun)" in _text(done)
    assert "resuming: 1 finished batches" in _text(done)
    _same_arrays(tmp_path / "one" / "result.npz", tmp_path / "two" / "result.npz")
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two")]
    for summary in summaries:  # what differs between two runs of one machine: their timings
        summary.pop("wall_time_s"), summary.pop("metadata")
    assert summaries[0] == summaries[1]


TEAM_SCRIPT = """
from neurodeploy import parallel

team = parallel.join(parallel.detect_launch())
if team.rank != 0:
    raise SystemExit(parallel.serve(team))
try:
    print("values", parallel.map_over_ranks(int, ["1", "2", "3"]))
    parallel.map_over_ranks(int, ["4", "not a number"])
except Exception as err:
    print("raised", type(err).__name__, str(err).splitlines()[0])
finally:
    parallel.release(team)
"""


@pytest.mark.slow
def test_an_error_on_one_rank_ends_the_job_on_rank_0_with_that_ranks_message(tmp_path):
    """Argument i goes to rank i mod 2; rank 1's exception is raised on rank 0, naming rank 1, and every rank
    leaves (the job ends with status 0 after rank 0 released the others)."""
    script = tmp_path / "team.py"
    script.write_text(TEAM_SCRIPT)
    done = subprocess.run([*_torchrun(), str(script)], env=_environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "values [1, 2, 3]" in done.stdout
    assert "raised BackendError rank 1 failed:" in done.stdout


ANYTIME_SCRIPT = """
import copy

import numpy as np
import torch
import torch.nn as nn

from neurodeploy import parallel
from neurodeploy.backends.gpu import anytime
from neurodeploy.convert import convert


def share_size(_):
    return [simulator.n_items for simulator in anytime._RANK_SHARES.values()]


team = parallel.join(parallel.detect_launch())
if team.rank != 0:
    raise SystemExit(parallel.serve(team))
try:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    images, labels = torch.rand(25, 1, 4, 4), torch.randint(0, 3, (25,))
    network = convert(model, images, normalization="max")
    variant = copy.deepcopy(network)
    hidden = next(p for p in variant.populations.values() if p.role == "hidden")
    hidden.neuron.threshold = np.float32(0.7) * np.asarray(hidden.neuron.threshold, np.float32)
    over = anytime.AnytimeSimulator(network, images, labels, 15, torch.device("cpu"), batch_size=10)
    one = anytime.AnytimeSimulator(network, images, labels, 15, torch.device("cpu"), batch_size=10, over_ranks=False)
    for candidate in (network, variant, network):
        for a, b in zip(over.curves(candidate), one.curves(candidate)):
            assert a.tobytes() == b.tobytes(), (a, b)
    print("curves equal; items per rank", parallel.map_over_ranks(share_size, [0, 1]))
finally:
    parallel.release(team)
"""


@pytest.mark.slow
def test_the_optimizers_simulator_splits_its_items_over_torchrun_processes(tmp_path):
    """``--optimize``'s simulator (``AnytimeSimulator``) in a launched job: 25 items split 12 / 13 over the two
    ranks, curves of three candidates equal to one process's bit for bit."""
    script = tmp_path / "anytime_team.py"
    script.write_text(ANYTIME_SCRIPT)
    done = subprocess.run([*_torchrun(), str(script)], env=_environment(), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "curves equal; items per rank [[12], [13]]" in done.stdout
