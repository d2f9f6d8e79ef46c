"""Worker processes that work from any caller, a plain script included.

``multiprocessing``'s spawn start method runs the caller's main file again in every worker (as
``__mp_main__``), so a script without an ``if __name__ == "__main__":`` guard starts its whole work again
in each worker, which then dies trying to start workers of its own (``BrokenProcessPool``). The workers
here are fresh interpreters running this module (``python -m neurodeploy.backends.processes``): they
import only what the function they are given needs, never the caller's main file.

Protocol: the parent writes two pickles to the worker's stdin, its ``sys.path`` and then
``(function, argument)``; the worker moves its own stdout onto stderr (so that what simulators print cannot
mix with the answer), calls ``function(argument)`` and writes one pickle back on the original stdout:
``("ok", value)`` or ``("error", exception, traceback text)``. Exceptions are raised again in the
parent as they were raised in the worker.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from neurodeploy.errors import BackendError

MODULE = "neurodeploy.backends.processes"


def _start(env: Mapping[str, str] | None) -> subprocess.Popen:
    environment = dict(os.environ)
    for key, value in (env or {}).items():
        if key == "PYTHONWARNINGS" and environment.get(key):
            value = f"{environment[key]},{value}"  # later entries win: ours for the messages it names
        environment[key] = value
    return subprocess.Popen([sys.executable, "-m", MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=environment)


def run_in_processes(function: Callable, arguments: Sequence, env: Mapping[str, str] | None = None,
                     what: str = "worker") -> list[Any]:
    """``[function(a) for a in arguments]``, each call in its own worker process, all at once (as
    ``ProcessPoolExecutor.map`` with one worker per argument); returns the values in order. ``function``
    must be importable by name (defined at module level). ``env``: environment variables set in the
    workers (``PYTHONWARNINGS`` is appended to the caller's). A worker that raises raises the same
    exception here; one that dies raises BackendError naming ``what``."""
    processes: list[subprocess.Popen] = []

    def call(index: int) -> Any:
        process = processes[index]
        payload = pickle.dumps(list(sys.path)) + pickle.dumps((function, arguments[index]))
        out, _ = process.communicate(payload)
        try:
            answer = pickle.loads(out)
        except Exception:  # noqa: BLE001 - a worker that died wrote nothing (or half an answer)
            raise BackendError(f"{what} process {index} exited with status {process.returncode} without an "
                               "answer (see the lines above)") from None
        if answer[0] == "error":
            _, error, text = answer
            if isinstance(error, BaseException):
                raise error
            raise BackendError(f"{what} process {index} failed:\n{text}")
        return answer[1]

    try:
        processes.extend(_start(env) for _ in arguments)
        with ThreadPoolExecutor(max(len(arguments), 1)) as pool:
            return list(pool.map(call, range(len(arguments))))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _serve() -> int:
    """The worker's side of the protocol (see the module docstring)."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    level = os.environ.get("NEURODEPLOY_LOG_LEVEL")  # the command line's -q / -v
    if level:
        logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)
    stdin = sys.stdin.buffer
    sys.path[:] = pickle.load(stdin)
    try:
        function, argument = pickle.load(stdin)
        answer = ("ok", function(argument))
    except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
        text = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(err))
            answer = ("error", err, text)
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled goes back as text
            answer = ("error", None, text)
    with os.fdopen(answer_fd, "wb") as out:
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
