"""neurodeploy's reference simulator vs SpikingJelly 2.0 vs the dense floor, side by side in one process.

For each net the same ANN and items go through: neurodeploy's ``gpu`` backend (precision fp32 and, on the
CPU, int8: ``backends/gpu/binary_ops.py``), SpikingJelly's rate-coding converter
(``RateCodingRecipe(mode="99.9%")``) run multi-step (``set_step_mode(net, "m")``, the input repeated over
T) and single-step (T calls), and the dense floor: T x the ANN's own batched forward pass (median of 10),
times the number of batches. Every figure is a wall time in this process, so only the ratios between them
mean anything on a shared machine; simulators run ``--repeats`` times, interleaved, and the fastest run
counts. The process CPU time of the same runs is recorded beside the wall time: on a machine shared with
other jobs it is the steadier measure of work (run with ``OMP_WAIT_POLICY=PASSIVE`` so that threads waiting
at a barrier sleep instead of spinning, which would count as work).

Nets: ``dense_mnist`` (the trained embedded-MNIST model, 1000 items, batch 1000), ``conv_cifar`` (the seed
architecture of the supplement's Table D with random weights and batch-norm statistics set on random
images, as ``simulator_vs_ann.py``; 100 items, batch 50) and ``vgg11`` (VGG-11 with average pooling at
3 x 32 x 32, trained here for one short epoch on embedded MNIST resized to 32 x 32 and repeated over three
channels, so its layers fire at a trained net's rates; 100 items, batch 50).

SpikingJelly is not a dependency of neurodeploy; install it into the benchmark's environment with

    pip install --no-deps spikingjelly==2.0.0
    pip install loguru requests

(or ``pip install --no-deps --target DIR spikingjelly==2.0.0 loguru`` and ``PYTHONPATH=DIR``). Then

    OMP_NUM_THREADS=2 python benchmarks/side_by_side.py --threads 2                 # CPU, all three nets
    python benchmarks/side_by_side.py --device cuda --nets conv_cifar,vgg11          # CUDA (fp32 only)

writes ``benchmarks/side_by_side.json`` (``--out``) and prints one line per net.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from simulator_vs_ann import conv_cifar_case, dense_mnist_case  # noqa: E402

from neurodeploy.backends import RunOptions, get_backend  # noqa: E402
from neurodeploy.convert import convert  # noqa: E402
from neurodeploy.data import load_dataset  # noqa: E402

VGG11 = (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512, "pool")


def vgg11(n_classes: int = 10) -> nn.Module:
    """VGG-11 for 3 x 32 x 32 inputs: conv3x3-BN-ReLU blocks, 2x2 average pooling, FC 512, FC classes."""
    layers: list[nn.Module] = []
    c = 3
    for width in VGG11:
        if width == "pool":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, n_classes))


def mnist32(images: torch.Tensor) -> torch.Tensor:
    """Embedded MNIST ``[N, 1, 28, 28]`` resized to ``[N, 3, 32, 32]`` (bilinear, channel repeated)."""
    return F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def vgg11_case(items: int, cache: Path | None = None):
    """VGG-11 trained for one epoch (Adam, batch 64) on the embedded MNIST training images at 32 x 32
    (cached); returns the model, test items, calibration images and labels."""
    cache = cache or Path.home() / ".cache" / "neurodeploy" / "vgg11_mnist32.pt"
    dataset = load_dataset()
    train_x, train_y = mnist32(dataset.train.images), dataset.train.labels
    model = vgg11()
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
    else:
        torch.manual_seed(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        order = torch.randperm(len(train_y))
        for start in range(0, len(order), 64):
            index = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
    model.eval()
    return model, mnist32(dataset.test.images[:items]), train_x[:512], dataset.test.labels[:items]


CASES = {"dense_mnist": (dense_mnist_case, 1000, 1000), "conv_cifar": (conv_cifar_case, 100, 50),
         "vgg11": (vgg11_case, 100, 50)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def dense_floor(model: nn.Module, x: torch.Tensor, batch: int, T: int, device: torch.device) -> tuple[float, float]:
    """T x the median wall time (and process CPU time) of the ANN's forward pass over one batch, times the
    number of batches."""
    model = model.to(device).eval()
    part = x[:batch].to(device)
    walls, cpus = [], []
    with torch.inference_mode():
        model(part)
        for _ in range(10):
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            model(part)
            _sync(device)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    batches = (len(x) + batch - 1) // batch
    return T * statistics.median(walls) * batches, T * statistics.median(cpus) * batches


def spikingjelly_runner(model: nn.Module, calibration: torch.Tensor, device: torch.device, mode: str):
    """SpikingJelly's rate-coded conversion of ``model`` (99.9th-percentile norm) as a function
    ``(x, T, batch) -> summed output [N, classes]`` run in step mode ``mode`` ("m" or "s")."""
    from spikingjelly.activation_based import ann2snn, functional

    loader = [calibration[i:i + 128] for i in range(0, len(calibration), 128)]
    recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%")
    snn = ann2snn.Converter(recipe, device=device).convert(copy.deepcopy(model).to(device)).eval()
    functional.set_step_mode(snn, mode)

    def run(x: torch.Tensor, T: int, batch: int) -> torch.Tensor:
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                part = x[start:start + batch].to(device)
                functional.reset_net(snn)
                if mode == "m":
                    out = snn(part.unsqueeze(0).expand(T, *part.shape).contiguous()).sum(0)
                else:
                    out = sum(snn(part) for _ in range(T))
                outputs.append(out)
        _sync(device)
        return torch.cat(outputs)

    return run


def measure(name: str, T: int, device: torch.device, repeats: int) -> dict:
    load_before = os.getloadavg()[0]
    case, items, batch = CASES[name]
    model, x, calibration, labels = case(items)
    network = convert(model, calibration)
    floor = dense_floor(model, x, batch, T, device)
    options = RunOptions(T=T, batch_size=batch, progress=False)
    runners: dict[str, callable] = {}
    precisions = ("fp32", "int8") if device.type == "cpu" else ("fp32",)
    predictions: dict[str, torch.Tensor] = {}
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # precision -> readout, spike counts [N, T, P]
    for precision in precisions:
        backend = get_backend("gpu", device=str(device), precision=precision)
        backend.run(network, x[:batch], labels[:batch], RunOptions(T=2, batch_size=batch, progress=False))

        session = backend.compile(network, options)  # compiled once, as SpikingJelly converts once

        def run_neurodeploy(backend=backend, session=session, precision=precision):
            start, cpu = time.perf_counter(), time.process_time()
            results = [backend.simulate_batch(session, x[i:i + batch], labels[i:i + batch], i, options)
                       for i in range(0, len(x), batch)]
            seconds = time.perf_counter() - start, time.process_time() - cpu
            readout = np.concatenate([r.readout for r in results])
            predictions[f"neurodeploy_{precision}"] = torch.as_tensor(readout[:, -1].argmax(1))
            arrays[precision] = readout, np.concatenate([r.spike_counts for r in results])
            return seconds
        runners[f"neurodeploy_{precision}"] = run_neurodeploy
    for mode, label in (("m", "spikingjelly_multi_step"), ("s", "spikingjelly_single_step")):
        run = spikingjelly_runner(model, calibration, device, mode)
        run(x[:batch], 2, batch)  # warm-up

        def run_spikingjelly(run=run, label=label):
            start, cpu = time.perf_counter(), time.process_time()
            predictions[label] = run(x, T, batch).argmax(1).cpu()
            return time.perf_counter() - start, time.process_time() - cpu
        runners[label] = run_spikingjelly
    seconds: dict[str, list[tuple[float, float]]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, runner in runners.items():
            seconds[key].append(runner())
    best = {key: min(wall for wall, _ in values) for key, values in seconds.items()}
    cpu = {key: min(used for _, used in values) for key, values in seconds.items()}
    with torch.inference_mode():
        ann = torch.cat([model(x[i:i + batch].to(device)).argmax(1).cpu() for i in range(0, len(x), batch)])
    ours = min((key for key in best if key.startswith("neurodeploy")), key=best.get)
    theirs = min((key for key in best if key.startswith("spikingjelly")), key=best.get)
    cpu_ours = min((key for key in cpu if key.startswith("neurodeploy")), key=cpu.get)
    cpu_theirs = min((key for key in cpu if key.startswith("spikingjelly")), key=cpu.get)
    return {"net": name, "items": items, "batch": batch, "T": T, "dense_floor_s": floor[0], "seconds": best,
            "dense_floor_cpu_s": floor[1], "cpu_seconds": cpu,
            "all_runs_wall_cpu_s": seconds, "best_neurodeploy": ours, "best_spikingjelly": theirs,
            "speedup_vs_spikingjelly": best[theirs] / best[ours], "fraction_of_floor": best[ours] / floor[0],
            "cpu_speedup_vs_spikingjelly": cpu[cpu_theirs] / cpu[cpu_ours],
            "cpu_fraction_of_floor": cpu[cpu_ours] / floor[1],
            "agreement_with_ann_at_T": {key: float((p == ann).float().mean()) for key, p in predictions.items()},
            "int8_vs_fp32": _difference(arrays),
            "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
            "accuracy_ann": float((ann == torch.as_tensor(labels)).float().mean())}


def _goals(name: str, row: dict) -> str:
    """The issue's goals for this net, each in wall and CPU time: >= 2x SpikingJelly's best mode, and for the
    conv nets < 0.6 of the dense floor; with the load average before and after the net's runs."""
    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    text = (f">= 2x SpikingJelly (wall / CPU time) {verdict(row['speedup_vs_spikingjelly'] >= 2)} / "
            f"{verdict(row['cpu_speedup_vs_spikingjelly'] >= 2)}")
    if name != "dense_mnist":
        text += (f", < 0.6 of the floor {verdict(row['fraction_of_floor'] < 0.6)} / "
                 f"{verdict(row['cpu_fraction_of_floor'] < 0.6)}")
    before, after = row["load_average_1min_before_after"]
    return text + f"; load average {before:.1f} -> {after:.1f} on {os.cpu_count()} CPUs"


def _difference(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict | None:
    """How far neurodeploy's int8 run is from its fp32 run: spike counts per item, step and population
    that differ, total spikes of each, the largest readout difference, predictions at T that differ."""
    if "int8" not in arrays:
        return None
    (r32, s32), (r8, s8) = arrays["fp32"], arrays["int8"]
    return {"spike_counts_differing": int((s32 != s8).sum()), "spike_counts_total": int(s32.size),
            "spikes_fp32": float(s32.sum()), "spikes_int8": float(s8.sum()),
            "readout_max_abs_difference": float(np.abs(r32 - r8).max()),
            "predictions_differing_at_T": int((r32[:, -1].argmax(1) != r8[:, -1].argmax(1)).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="dense_mnist,conv_cifar,vgg11")
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("side_by_side.json")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.nets.split(","):
        row = measure(name, args.T, device, args.repeats)
        rows.append(row)
        times = "  ".join(f"{key} {value:.3f} s" for key, value in row["seconds"].items())
        print(f"{name:11s} floor {row['dense_floor_s']:.3f} s  {times}  -> {row['best_neurodeploy']} "
              f"{row['speedup_vs_spikingjelly']:.2f}x {row['best_spikingjelly']}, "
              f"{row['fraction_of_floor']:.2f} of the floor (CPU time: {row['cpu_speedup_vs_spikingjelly']:.2f}x, "
              f"{row['cpu_fraction_of_floor']:.2f})", flush=True)
        print(f"{'':11s} {_goals(name, row)}", flush=True)
        if row["int8_vs_fp32"]:
            diff = row["int8_vs_fp32"]
            print(f"{'':11s} int8 vs fp32: {diff['spike_counts_differing']} of {diff['spike_counts_total']} spike "
                  f"counts differ, {diff['predictions_differing_at_T']} predictions at T", flush=True)
    import spikingjelly

    from neurodeploy.backends.gpu import fused

    machine = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": args.threads,
               "torch": torch.__version__, "spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"),
               "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "fused_scan": device.type == "cpu" and fused.kernel() is not None,
               "note": "wall times in one process on a shared machine: compare ratios only"}
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
