"""When the int8 path's C++ extension (``backends/gpu/fused.py``) is built, a job says so before it waits: the
decision, tested without building (a build takes about a minute)."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from neurodeploy.backends import get_backend
from neurodeploy.backends.gpu import binary_ops, fused

ANNOUNCEMENT = "building the int8 neuron scan (first use on this machine, ~1 min)"


def _can_build() -> bool:
    from torch.utils.cpp_extension import is_ninja_available

    return is_ninja_available() and shutil.which(os.environ.get("CXX", "c++")) is not None


def test_the_library_is_looked_for_where_the_loader_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = fused.extension_name()
    assert name == f"neurodeploy_fused_if_{torch.backends.cpu.get_cpu_capability().lower()}"
    assert fused.library_path() == tmp_path / name / f"{name}.so"


def test_a_missing_or_older_library_is_stale(tmp_path):
    library = tmp_path / "x.so"
    assert fused.stale(library)
    library.write_bytes(b"")
    source = fused.SOURCE.stat().st_mtime
    os.utime(library, (source + 10, source + 10))
    assert not fused.stale(library)
    os.utime(library, (source - 10, source - 10))
    assert fused.stale(library)


@pytest.mark.skipif(not binary_ops.available(torch.device("cpu")), reason="no oneDNN int8 kernels")
@pytest.mark.skipif(not _can_build(), reason="no C++ compiler / ninja: the extension is never built")
def test_an_int8_backend_announces_a_pending_build_and_builds_nothing_to_say_so(tmp_path):
    """In a new process with an empty extensions folder the int8 backend's build line is the announcement (fp32's is
    None); deciding builds nothing; once a library newer than the source lies where a build puts it, nothing is
    announced."""
    code = ("from neurodeploy.backends import get_backend\n"
            "from neurodeploy.backends.gpu import fused\n"
            "def estimates():\n"
            "    return [get_backend('gpu', device='cpu', precision=p).build_estimate(None)\n"
            "            for p in ('int8', 'fp32')]\n"
            "print(estimates())\n"
            "print(sorted(str(p) for p in fused.library_path().parent.parent.rglob('*') if p.is_file()))\n"
            "fused.library_path().write_bytes(b'')\n"
            "print(estimates())\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr([ANNOUNCEMENT, None]), "[]", "[None, None]"]


@pytest.mark.skipif(not binary_ops.available(torch.device("cpu")), reason="no oneDNN int8 kernels")
def test_no_announcement_once_the_extension_was_loaded_in_this_process():
    fused.kernel()  # built (as test_fused.py does), or found unbuildable: a later compile waits for nothing
    assert not fused.build_pending()
    assert get_backend("gpu", device="cpu", precision="int8").build_estimate(None) is None
