"""The gpu backend on CUDA against the same backend on CPU, through the main job (``run_job``): the same
cached model, conversion and IR, run once per device and profile; the arrays of both runs compared.

    python benchmarks/cuda_vs_cpu.py                        # dense and conv MNIST, every profile
    python benchmarks/cuda_vs_cpu.py --archs dense_mnist --profiles ideal --samples 500

Per case: how many items have every population's spike count equal on both devices, the largest
readout difference, where the predictions differ (items x steps), both accuracies at T and both wall
times of the simulation. cuDNN convolutions run once with TF32 allowed (PyTorch's default for
convolutions) and once without, since a TF32 product keeps 10 mantissa bits and can move a membrane
across its threshold. Prints a table and writes ``benchmarks/cuda_vs_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.jobs.config import JobConfig, ModelSettings, RunSettings
from neurodeploy.jobs.run import run_job


def run_on(device: str, arch: str, profile: str, samples: int, T: int, folder: Path):
    config = JobConfig(backend="gpu", backend_options={"device": device, "profile": profile},
                       model=ModelSettings(arch=arch), run=RunSettings(samples=samples, T=T, progress=False),
                       results_dir=folder, run_id=f"{arch}-{profile}-{device.replace(':', '')}")
    run_folder, summary = run_job(config)
    result = SimulationResult.load(run_folder / "result.npz")
    return result, summary


def compare(cpu, cuda) -> dict:
    same_counts = (cpu.spike_counts == cuda.spike_counts).all(axis=(1, 2))  # [N, T, P]: every step, population
    differ = cpu.predictions() != cuda.predictions()
    return {
        "items_with_equal_spike_counts": float(same_counts.mean()),
        "max_readout_difference": float(np.abs(cpu.readout - cuda.readout).max()),
        "prediction_differs_item_steps": float(differ.mean()),
        "prediction_differs_at_T": float(differ[:, -1].mean()),
        "accuracy_at_T_cpu": float(cpu.accuracy_curve()[-1]),
        "accuracy_at_T_cuda": float(cuda.accuracy_curve()[-1]),
        "simulation_s_cpu": cpu.metadata.get("timings", {}).get("run_s"),
        "simulation_s_cuda": cuda.metadata.get("timings", {}).get("run_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="dense_mnist,conv_mnist")
    parser.add_argument("--profiles", default="ideal,pynn,spinnaker,spinnaker_exp")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).with_name("cuda_vs_cpu.json")))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("PyTorch sees no CUDA GPU: this benchmark compares CUDA with CPU")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            for profile in args.profiles.split(","):
                cpu, summary = run_on("cpu", arch, profile, args.samples, args.T, Path(tmp))
                for tf32 in (True, False):
                    torch.backends.cudnn.allow_tf32 = tf32
                    cuda, _ = run_on("cuda", arch, profile, args.samples, args.T, Path(tmp) / f"tf32-{tf32}")
                    row = {"arch": arch, "profile": profile, "cudnn_tf32": tf32, "items": len(cpu.labels),
                           "T": args.T, **compare(cpu, cuda)}
                    rows.append(row)
                    print(f"{arch:12s} {profile:13s} tf32={tf32!s:5s} equal-count items "
                          f"{row['items_with_equal_spike_counts']:.4f}  max |dO| {row['max_readout_difference']:.2e}  "
                          f"pred differs {row['prediction_differs_item_steps']:.5f} (at T "
                          f"{row['prediction_differs_at_T']:.4f})  acc cpu {row['accuracy_at_T_cpu']:.4f} cuda "
                          f"{row['accuracy_at_T_cuda']:.4f}  sim s cpu {row['simulation_s_cpu']} cuda "
                          f"{row['simulation_s_cuda']}", flush=True)
    machine = {"gpu": torch.cuda.get_device_name(), "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
