"""Peak memory of `neurodeploy run` against the number of steps T (issue 19: memory bounded in T).

    python benchmarks/memory_vs_T.py                      # T = 300, 1000, 3000, 10000, 500 items
    python benchmarks/memory_vs_T.py --T 300 1000 --samples 200

Each T runs `neurodeploy run --samples N -T T --no-progress` (default model, gpu backend) in a fresh
process, after one unrecorded run that fills the model cache. Peak RSS is the child's maximum resident
set size (``getrusage(RUSAGE_CHILDREN)`` read by a wrapper process that runs only that child). Result
bytes per item-step are read from the headers of the run's result.npz (every array of the result, not
compressed, divided by N x T). The growth of peak RSS per item-step between the smallest and the
largest T is compared with what the result stores per item-step: the bound is about twice that
(the result itself, plus the evaluator's per-chunk temporaries and [N, T] curves). Writes
``memory_vs_T.json`` next to this file and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

#: runs one command and prints its peak RSS in KiB (Linux reports ru_maxrss in KiB, macOS in bytes)
_WRAPPER = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(rss // 1024 if sys.platform == 'darwin' else rss)\n"
            "sys.exit(code)\n")


def machine() -> str:
    """CPU model, cores and memory of this machine (Linux; the platform elsewhere)."""
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if not (cpuinfo.exists() and meminfo.exists()):
        return platform.platform()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")]
    total_kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
    return f"{models[0] if models else platform.machine()}, {len(models)} cores, {total_kib / 2**20:.0f} GiB"


def neurodeploy_command() -> list[str]:
    """The `neurodeploy` console script of this interpreter's environment (else the one on PATH)."""
    found = shutil.which("neurodeploy", path=str(Path(sys.executable).parent)) or shutil.which("neurodeploy")
    if found is None:
        sys.exit("benchmarks/memory_vs_T.py: the neurodeploy command is not installed (pip install -e .)")
    return [found]


def result_bytes(result_npz: Path) -> tuple[int, int, int]:
    """(bytes of every array of the result uncompressed, N, T) from the .npy headers of ``result_npz``."""
    total, shape = 0, None
    with zipfile.ZipFile(result_npz) as archive:
        for name in archive.namelist():
            if name == "metadata_json.npy":
                continue
            with archive.open(name) as handle:
                version = np.lib.format.read_magic(handle)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                array_shape, _, dtype = read(handle)
            total += int(np.prod(array_shape)) * dtype.itemsize
            if name == "readout.npy":
                shape = array_shape
    if shape is None:
        raise SystemExit(f"{result_npz}: no readout")
    return total, int(shape[0]), int(shape[1])


def measure(command: list[str], samples: int, T: int, folder: Path) -> dict:
    """One run in a fresh process: peak RSS (MB), result bytes per item-step, wall time (s)."""
    args = [*command, "run", "--samples", str(samples), "-T", str(T), "--no-progress", "--results-dir", str(folder)]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rss_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    result_npz = next(folder.glob("*/result.npz"))
    stored, n_items, steps = result_bytes(result_npz)
    device = json.loads(result_npz.with_name("summary.json").read_text())["metadata"].get("device")
    return {"T": T, "n_items": n_items, "device": device, "max_rss_mb": round(rss_mb, 1),
            "result_mb": round(stored / 2**20, 1), "result_bytes_per_item_step": stored / (n_items * steps),
            "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=[300, 1000, 3000, 10000])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", default=str(Path(__file__).with_name("memory_vs_T.json")))
    args = parser.parse_args()
    if len(args.T) < 2 or min(args.T) < 1 or args.samples < 1:
        parser.error("give at least two T of 1 step or more, and --samples of 1 or more")
    command = neurodeploy_command()
    rows = []
    with tempfile.TemporaryDirectory(prefix="memory_vs_T_") as tmp:
        measure(command, args.samples, min(args.T), Path(tmp) / "warm-up")  # fills the model cache
        for T in sorted(args.T):
            rows.append(measure(command, args.samples, T, Path(tmp) / f"T{T}"))
            print(f"T = {T}: {rows[-1]['max_rss_mb']:.0f} MB, {rows[-1]['wall_s']:.0f} s", file=sys.stderr)
    low, high = rows[0], rows[-1]
    growth = (high["max_rss_mb"] - low["max_rss_mb"]) * 2**20 / (args.samples * (high["T"] - low["T"]))
    stored = high["result_bytes_per_item_step"]
    report = {
        "command": f"neurodeploy run --samples {args.samples} -T <T> --no-progress",
        "machine": f"{machine()}, Python {platform.python_version()}",
        "rows": rows,
        "rss_growth_bytes_per_item_step": round(growth, 1),
        "result_bytes_per_item_step": stored,
        "growth_over_result": round(growth / stored, 2),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'T':>6} {'max RSS (MB)':>13} {'result (MB)':>12} {'result B/item-step':>19} {'wall (s)':>9}")
    for row in rows:
        print(f"{row['T']:>6} {row['max_rss_mb']:>13.0f} {row['result_mb']:>12.1f} "
              f"{row['result_bytes_per_item_step']:>19.1f} {row['wall_s']:>9.1f}")
    print(f"peak RSS grows by {growth:.0f} bytes per item-step from T = {low['T']} to {high['T']}; the result stores "
          f"{stored:.0f} ({growth / stored:.2f}x)")


if __name__ == "__main__":
    main()
