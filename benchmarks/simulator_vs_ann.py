"""Reference simulator speed as a ratio: wall time of T simulated steps divided by T x the ANN's own
batched forward pass on the same device and batch (the supplement's Table D setting: T = 50, 1000 items).

    python benchmarks/simulator_vs_ann.py                    # dense MNIST and conv CIFAR, fp32 and bf16
    python benchmarks/simulator_vs_ann.py --models dense_mnist --items 1000 --T 50

dense MNIST uses the trained embedded-MNIST model (trained here if not in the model cache);
conv CIFAR uses the seed architecture with random weights (no CIFAR data ships here) whose batch norm
statistics are set on random images, so layers fire at plausible rates; its "accuracy" column is the
agreement of the SNN's prediction at T with the ANN's prediction. Prints a table and writes
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.gpu import default_device
from neurodeploy.convert import convert
from neurodeploy.data import load_dataset
from neurodeploy.jobs.config import JobConfig, RunSettings
from neurodeploy.jobs.events import silent
from neurodeploy.jobs.prepare import model_cache, source_model
from neurodeploy.train import build


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ann_forward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 20) -> float:
    """Median wall time of one batched forward pass (after a warm-up)."""
    device = x.device
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_mnist_case(items: int):
    dataset = load_dataset()
    config = JobConfig(run=RunSettings(progress=False))
    model = source_model(config, dataset, model_cache(config, silent)).model
    x = dataset.test.images[:items]
    return model, x, dataset.train.images[:2000], dataset.test.labels[:items]


def conv_cifar_case(items: int):
    torch.manual_seed(0)
    model = build("conv_cifar", (3, 32, 32), 10, seed=0)
    calibration = torch.rand(256, 3, 32, 32)
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.momentum = None  # cumulative average over the calibration passes
        for start in range(0, 256, 64):
            model(calibration[start:start + 64])
    model.eval()
    x = torch.rand(items, 3, 32, 32)
    with torch.inference_mode():
        ann_predictions = torch.cat([model(x[i:i + 250]).argmax(1) for i in range(0, items, 250)])
    return model, x, calibration, ann_predictions  # "accuracy" = agreement with the ANN (no CIFAR labels here)


CASES = {"dense_mnist": dense_mnist_case, "conv_cifar": conv_cifar_case}


def measure(name: str, items: int, T: int, batch: int, precision: str, device: torch.device,
            repeats: int) -> dict:
    """Median simulator time over ``repeats`` runs against T x the median ANN forward time."""
    model, x, calibration, labels = CASES[name](items)
    network = convert(model, calibration)
    ann_s = ann_forward_seconds(model.to(device), x[:batch].to(device))
    backend = get_backend("gpu", device=str(device), precision=precision)
    options = RunOptions(T=T, batch_size=batch, progress=False)
    backend.run(network, x[:batch], labels[:batch], RunOptions(T=2, batch_size=batch, progress=False))  # warm-up
    runs = [backend.run(network, x, labels, options) for _ in range(repeats)]
    result = runs[0]
    sim_s = statistics.median(r.metadata["timings"]["run_s"] for r in runs)
    batches = (items + batch - 1) // batch
    ratio = sim_s / (T * ann_s * batches)
    return {"model": name, "precision": precision, "items": items, "T": T, "batch": batch,
            "ann_forward_s": ann_s, "simulator_s": sim_s, "ratio": ratio,
            "snn_accuracy_at_T": float(result.accuracy_curve()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dense_mnist,conv_cifar")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--batch", default="dense_mnist=1000,conv_cifar=500")
    parser.add_argument("--device")
    parser.add_argument("--repeats", type=int, help="simulator runs per case (default 5 dense, 1 conv)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    batches = dict(item.split("=") for item in args.batch.split(","))
    rows = []
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            repeats = args.repeats if args.repeats else (5 if name == "dense_mnist" else 1)
            row = measure(name, args.items, args.T, int(batches.get(name, 1000)), precision, device, repeats)
            rows.append(row)
            print(f"{name:12s} {precision:5s} ANN forward {row['ann_forward_s'] * 1e3:9.2f} ms  "
                  f"simulator {row['simulator_s']:8.2f} s  ratio {row['ratio']:.3f}  "
                  f"SNN accuracy (conv_cifar: agreement with ANN) at T {row['snn_accuracy_at_T']:.4f}", flush=True)
    machine = {"device": str(device), "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
