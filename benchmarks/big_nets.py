"""Big nets on the gpu backend on CPU (issue 27): peak memory and time of AlexNet and VGG-16 at 224x224.

    python benchmarks/big_nets.py                          # both nets, 16 items, T = 50
    python benchmarks/big_nets.py --nets alexnet --T 20 --items 4
    python benchmarks/big_nets.py --nets alexnet --precision int8   # the int8 path (backends/gpu/binary_ops.py)

The two architectures are written out here exactly as torchvision defines them (``torchvision.models.
alexnet`` and ``vgg16``: features / avgpool / classifier, VGG configuration "D", torchvision's weight
initialization), because ``import torchvision`` fails next to the CPU build of PyTorch ("operator
torchvision::nms does not exist"). Random weights (seeded), random N(0, 1) inputs; max pooling is
replaced by average pooling of the same window (``convert(..., max_pool="avg")``), calibration on 16
other random items.

Each net is converted in one fresh child process and simulated in another (as `neurodeploy convert`
and `neurodeploy run` are; the peak RSS of each is the child's ``ru_maxrss``, read by a wrapper
process that runs only that child), both with ``torch.set_num_threads(--threads)``. The simulating
child measures the dense floor, T x the ANN's forward of the same items as one batch (the fastest of
three forwards before and three after the SNN run, after a warm-up), and between them, with the ANN
freed as in `neurodeploy run`, loads the saved IR and runs the SNN with the gpu backend on the CPU (one
batch of all items, analog input, compile included), in the same process and thread setting. Wall
time and the process's CPU time are both recorded: with one thread on a machine loaded by other work,
CPU time is the steadier measure. Writes ``big_nets.json`` next to this file and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from memory_vs_T import machine  # the same machine line as the memory benchmark (this folder)
from torch import nn

#: runs one command and prints its peak RSS in KiB (Linux reports ru_maxrss in KiB, macOS in bytes)
_WRAPPER = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(rss // 1024 if sys.platform == 'darwin' else rss)\n"
            "sys.exit(code)\n")

VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class AlexNet(nn.Module):
    """torchvision.models.AlexNet (num_classes 1000, dropout 0.5)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class VGG(nn.Module):
    """torchvision.models.VGG with ``make_layers(cfgs["D"], batch_norm=False)``: vgg16."""

    def __init__(self, config: list, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


NETS = {"alexnet": AlexNet, "vgg16": lambda: VGG(VGG16_CONFIG)}


def _inputs(items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration [16, 3, 224, 224], test items [items, 3, 224, 224]): seeded N(0, 1) images."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn((16, 3, 224, 224), generator=generator), torch.randn((items, 3, 224, 224), generator=generator)


def convert_child(net: str, folder: Path, threads: int) -> dict:
    """Builds the net (seeded), converts it with ``max_pool="avg"`` and saves the ANN's weights and the
    IR into ``folder``."""
    from neurodeploy.convert import convert
    from neurodeploy.ir import save_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = NETS[net]().eval()
    calibration, _ = _inputs(1)
    start = time.perf_counter()
    network = convert(model, calibration, max_pool="avg")
    convert_s = time.perf_counter() - start
    torch.save(model.state_dict(), folder / f"{net}.pt")
    save_network(network, folder / f"{net}.zip")
    return {"convert_s": round(convert_s, 2)}


def _ann(net: str, folder: Path) -> nn.Module:
    model = NETS[net]().eval()
    model.load_state_dict(torch.load(folder / f"{net}.pt", weights_only=True))
    return model


def simulate_child(net: str, folder: Path, items: int, T: int, threads: int, full_floor: bool = False,
                   precision: str = "fp32") -> dict:
    """The dense floor and the SNN run from the ANN's weights and the IR in ``folder``, in this process:
    ANN forwards, then the SNN run without the ANN in memory (as `neurodeploy run`), then ANN forwards
    again (with ``full_floor`` also T forwards in a row, timed as one run)."""
    from neurodeploy.backends.base import RunOptions
    from neurodeploy.backends.gpu import GpuBackend
    from neurodeploy.ir import load_network

    torch.set_num_threads(threads)
    _, x = _inputs(items)
    model = _ann(net, folder)
    with torch.inference_mode():
        model(x)  # warm-up
    forwards = _forwards(model, x)
    labels = forwards.pop("logits").argmax(1)
    del model
    network = load_network(folder / f"{net}.zip")
    backend = GpuBackend(device="cpu", precision=precision)
    wall, cpu = time.perf_counter(), time.process_time()
    result = backend.run(network, x, labels, RunOptions(T=T, batch_size=items, progress=False))
    snn_s, snn_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    del network
    model = _ann(net, folder)
    after = _forwards(model, x)  # the load of other work varies: the floor is the fastest of both sets
    run = _forwards(model, x, T) if full_floor else None  # T forwards in a row: a run as long as the SNN's
    forward_s = min(forwards["wall"] + after["wall"])
    forward_cpu_s = min(forwards["cpu"] + after["cpu"])
    timings = result.metadata["timings"]
    return {
        "neurons": result.metadata["n_neurons"], "synapses": result.metadata["n_synapses"],
        "ann_forward_s": round(forward_s, 3), "floor_s": round(T * forward_s, 2),
        "snn_compile_s": round(timings["build_s"], 2), "snn_simulate_s": round(timings["run_s"], 2),
        "snn_s": round(snn_s, 2), "snn_over_floor": round(snn_s / (T * forward_s), 3),
        "simulate_over_floor": round(timings["run_s"] / (T * forward_s), 3),
        "ann_forward_cpu_s": round(forward_cpu_s, 3), "snn_cpu_s": round(snn_cpu_s, 2),
        "snn_over_floor_cpu": round(snn_cpu_s / (T * forward_cpu_s), 3),
        "agreement_at_T": float((result.readout[:, -1].argmax(1) == labels.numpy()).mean()),
        **({} if run is None else {
            "floor_run_s": round(sum(run["wall"]), 2), "floor_run_cpu_s": round(sum(run["cpu"]), 2),
            "snn_over_floor_run": round(snn_s / sum(run["wall"]), 3),
            "snn_over_floor_run_cpu": round(snn_cpu_s / sum(run["cpu"]), 3)}),
    }


def _forwards(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> dict:
    """Wall and process CPU seconds of ``repeats`` batched forwards of ``x``, and the logits."""
    record = {"wall": [], "cpu": []}
    with torch.inference_mode():
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            record["logits"] = model(x)
            record["wall"].append(time.perf_counter() - wall)
            record["cpu"].append(time.process_time() - cpu)
    return record


def _child(step: str, net: str, folder: Path, items: int, T: int, threads: int, full_floor: bool,
           precision: str) -> dict:
    """Runs one step in a fresh child process; its record plus the child's peak RSS (MB)."""
    out = folder / f"{net}_{step}.json"
    args = [sys.executable, __file__, "--child", step, "--nets", net, "--items", str(items), "--T", str(T),
            "--threads", str(threads), "--child-dir", str(folder), "--precision", precision,
            *(["--full-floor"] if full_floor else [])]
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{net} {step} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    record = json.loads(out.read_text())
    record[f"{step}_max_rss_mb"] = round(int(done.stdout.strip().splitlines()[-1]) / 1024, 1)
    return record


def measure(net: str, items: int, T: int, threads: int, folder: Path, full_floor: bool = False,
            precision: str = "fp32") -> dict:
    """Conversion and simulation of one net, each in its own child process (as `neurodeploy convert`
    and `neurodeploy run` are)."""
    record = {"net": net, "items": items, "T": T, "threads": threads, "precision": precision}
    record.update(_child("convert", net, folder, items, T, threads, full_floor, precision))
    record.update(_child("simulate", net, folder, items, T, threads, full_floor, precision))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["alexnet", "vgg16"])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-floor", action="store_true",
                        help="also time T batched forwards in a row (a floor run as long as the SNN run)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="the gpu backend's precision (int8: CPU int8 kernels on 0/1 spikes)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("big_nets.json")))
    parser.add_argument("--child", choices=("convert", "simulate"), help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.items, args.T, args.threads) < 1:
        parser.error("--items, --T and --threads must be at least 1")
    if args.child:
        folder, net = Path(args.child_dir), args.nets[0]
        record = (convert_child(net, folder, args.threads) if args.child == "convert"
                  else simulate_child(net, folder, args.items, args.T, args.threads, args.full_floor,
                                      args.precision))
        (folder / f"{net}_{args.child}.json").write_text(json.dumps(record))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="big_nets_") as tmp:
        for net in args.nets:
            rows.append(measure(net, args.items, args.T, args.threads, Path(tmp), args.full_floor, args.precision))
            print(f"{net}: {rows[-1]['simulate_max_rss_mb']:.0f} MB, {rows[-1]['snn_s']:.0f} s", file=sys.stderr)
    report = {
        "command": f"python benchmarks/big_nets.py --nets {' '.join(args.nets)} --items {args.items} --T {args.T} "
                   f"--threads {args.threads} --precision {args.precision}"
                   + (" --full-floor" if args.full_floor else ""),
        "machine": f"{machine()}, Python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.precision}: {'net':>8} {'convert: RSS (MB)':>18} {'s':>6} {'run: RSS (MB)':>14} {'floor (s)':>10} "
          f"{'compile (s)':>12} {'simulate (s)':>13} {'SNN / floor':>12} {'(CPU time)':>11}")
    for row in rows:
        print(f"{row['net']:>8} {row['convert_max_rss_mb']:>18.0f} {row['convert_s']:>6.1f} "
              f"{row['simulate_max_rss_mb']:>14.0f} {row['floor_s']:>10.1f} {row['snn_compile_s']:>12.1f} "
              f"{row['snn_simulate_s']:>13.1f} {row['snn_over_floor']:>12.2f} {row['snn_over_floor_cpu']:>11.2f}")


if __name__ == "__main__":
    main()
