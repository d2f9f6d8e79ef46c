"""Compiles and loads the NEURON mechanisms the backend needs, once per installation.

PyNN's own mechanisms (``pyNN/neuron/nmodl``) must be compiled after ``pip install pyNN``; the exact
NL-IAF cell (``nmodl/nliaf.mod``) is compiled into ``nmodl/build-<hash of the .mod>/`` next to it.
Both use ``nrnivmodl`` with the machine's C compiler; a failed compile raises BackendError with the
compiler's output.
"""

from __future__ import annotations

import fcntl
import hashlib
import platform
import shutil
import subprocess
from pathlib import Path

from neurodeploy.errors import BackendError

NMODL_DIR = Path(__file__).with_name("nmodl")


def _library(folder: Path) -> Path:
    return folder / platform.machine() / "libnrnmech.so"


def _nrnivmodl(folder: Path) -> None:
    """Compiles the .mod files of ``folder`` unless a library is there; a lock file keeps processes that
    start at the same time from compiling into the same folder at once."""
    executable = shutil.which("nrnivmodl")
    if executable is None:
        raise BackendError("nrnivmodl not found: install the neuron extra (pip install -e '.[neuron]')")
    with (folder / ".neurodeploy-compile.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _library(folder).exists():
            return
        done = subprocess.run([executable], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0 or not _library(folder).exists():
        raise BackendError(f"nrnivmodl failed in {folder}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def ensure_pynn_mechanisms() -> None:
    """Compiles PyNN's NEURON mechanisms if that was not done after installation."""
    try:
        import pyNN
    except ImportError as err:
        raise BackendError(f"the neuron backend needs PyNN and NEURON ({err}); pip install -e '.[neuron]'") from None
    folder = Path(pyNN.__file__).parent / "neuron" / "nmodl"
    if not _library(folder).exists():
        _nrnivmodl(folder)


def prepare() -> None:
    """Compiles everything the workers load, once, before they start."""
    ensure_pynn_mechanisms()
    nliaf_library()


def nliaf_library() -> Path:
    """Path of the compiled NL-IAF mechanism library (compiled on first use)."""
    source = NMODL_DIR / "nliaf.mod"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    build = NMODL_DIR / f"build-{digest}"
    if not _library(build).exists():
        build.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, build / "nliaf.mod")
        _nrnivmodl(build)
    return _library(build)


def load_nliaf(h) -> None:
    """Loads the NL-IAF mechanism into NEURON's ``h`` (once per process)."""
    if not hasattr(h, "NLIAF"):
        h.nrn_load_dll(str(nliaf_library()))
