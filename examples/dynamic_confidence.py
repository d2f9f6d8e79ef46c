"""Dynamic Confidence on QCFS and QFFS conversions (in the spirit of Li et al., ICCV 2023, Tables 1-3).

For each (conversion, architecture): the quantized ANN's accuracy, the SNN at full T, the Dynamic
Confidence operating point picked on a validation part and measured on a test part (mean latency,
step saving, spikes per neuron with and without DC), the oracle bound, and wall-clock time with early
exit in the simulator: per item at batch 1000 (batch compaction) and per item in batch-1 streaming
mode (chunk = 1, like a latency table). Writes dc_report.json, dc_report.md and stop-time histograms.

    python examples/dynamic_confidence.py                     # embedded MNIST, conv_mnist + resnet_small
    python examples/dynamic_confidence.py --archs dense_mnist --samples 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from neurodeploy.backends import ExitPolicy, RunOptions, get_backend  # noqa: E402
from neurodeploy.cli.render import render  # noqa: E402
from neurodeploy.data import load_dataset  # noqa: E402
from neurodeploy.evaluate.dynamic_confidence import validation_test_split  # noqa: E402
from neurodeploy.evaluate.summary import summarize  # noqa: E402
from neurodeploy.jobs.config import (  # noqa: E402
    ConversionSettings,
    EvaluationSettings,
    JobConfig,
    ModelSettings,
    RunSettings,
)
from neurodeploy.jobs.prepare import convert_model, model_cache, model_for_conversion  # noqa: E402
from neurodeploy.jobs.run import run_early_exit  # noqa: E402
from neurodeploy.train import evaluate_accuracy  # noqa: E402


def streaming_latency(backend_kwargs: dict, network, images, labels, T: int, policy: ExitPolicy | None) -> float:
    """Seconds per item with batch size 1 and one step per chunk."""
    backend = get_backend("gpu", chunk=1, **backend_kwargs)
    options = RunOptions(T=T, batch_size=1, progress=False, exit_policy=policy)
    return backend.run(network, images, labels, options).metadata["timings"]["per_item_s"]


def evaluate_entry(method: str, arch: str, args, dataset, out: Path) -> dict:
    alpha = "T" if method == "qcfs" else f"bits:{args.bits}"
    config = JobConfig(
        model=ModelSettings(arch=arch, epochs=args.epochs, seed=args.seed),
        conversion=ConversionSettings(conversion=method, quant_bits=args.bits, quant_epochs=args.quant_epochs,
                                      v_init=args.v_init),
        run=RunSettings(T=args.T_qcfs if method == "qcfs" else args.T_qffs or 2**args.bits - 1, batch_size=1000,
                        exit="confidence", progress=False),
        evaluation=EvaluationSettings(dc_alpha=alpha))
    T = config.run.T
    cached = model_for_conversion(config, dataset, model_cache(config, render))[-1]
    model, label = cached.model, cached.label
    test = dataset.test.head(args.samples)
    ann_accuracy = evaluate_accuracy(model, test)
    network = convert_model(model, dataset, config)  # with --v-init calibrated: chosen for this T on training items
    backend = get_backend("gpu")
    full = backend.run(network, test.images, test.labels, RunOptions(T=T, batch_size=1000, progress=False))
    full.metadata["ann_accuracy"] = ann_accuracy
    summary, arrays = summarize(full, ann_accuracy, dc_alpha=alpha, seed=args.seed)
    dc, bound = summary["dynamic_confidence"], summary["oracle"]
    entry_folder = out / f"{method}_{arch}"
    entry_folder.mkdir(parents=True, exist_ok=True)
    full.save(entry_folder / "result.npz")
    early = run_early_exit(backend, network, test, full, summary, config, entry_folder)
    _, test_index = validation_test_split(full.n_items, config.evaluation.dc_validation_fraction, config.model.seed)
    few = test_index[: args.latency_items]
    policy = ExitPolicy(dc["alpha"], dc["threshold_log_odds"])
    latency_full = streaming_latency({}, network, test.images[few], test.labels[few], T, None)
    latency_dc = streaming_latency({}, network, test.images[few], test.labels[few], T, policy)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(arrays["stop_times"], bins=np.arange(0.5, T + 1.5), alpha=0.7, label="DC")
    ax.hist(arrays["oracle_stop_times"], bins=np.arange(0.5, T + 1.5), histtype="step", label="oracle")
    ax.set(xlabel="stop step", ylabel="test items", title=f"{method.upper()} {arch}: stop times")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"stop_times_{method}_{arch}.png", dpi=110)
    plt.close(fig)
    return {
        "method": method, "arch": arch, "model": label, "bits": args.bits, "v_init": args.v_init,
        "n_items": full.n_items,
        "ann_accuracy": ann_accuracy, "full_T": T, "full_T_accuracy": dc["full_T_accuracy"],
        "snn_accuracy_all_items": summary["snn_accuracy"], "peak_accuracy": summary["peak_accuracy"],
        "dc_accuracy": dc["accuracy"], "dc_mean_latency": dc["mean_latency"], "step_saving": dc["step_saving"],
        "wall_saving": early["wall_saving"], "early_exit_step_saving": early["step_saving"],
        "wall_per_item_batch1000_full_s": early["full_T_wall_time_s"] / early["n_items"],
        "wall_per_item_batch1000_dc_s": early["wall_time_s"] / early["n_items"],
        "latency_per_item_batch1_full_s": latency_full, "latency_per_item_batch1_dc_s": latency_dc,
        "spikes_per_neuron_full": dc["spikes_per_neuron_full"], "spikes_per_neuron_dc": dc["spikes_per_neuron_dc"],
        "oracle_accuracy": bound["accuracy"], "oracle_mean_latency": bound["mean_latency"],
        "alpha": dc["alpha"], "threshold": dc["threshold"],
    }


COLUMNS = [
    ("method", "{}"), ("arch", "{}"), ("v_init", "{}"), ("ann_accuracy", "{:.4f}"), ("full_T", "{}"),
    ("full_T_accuracy", "{:.4f}"),
    ("dc_accuracy", "{:.4f}"), ("dc_mean_latency", "{:.2f}"), ("step_saving", "{:.1%}"), ("wall_saving", "{:.1%}"),
    ("spikes_per_neuron_full", "{:.3f}"), ("spikes_per_neuron_dc", "{:.3f}"), ("oracle_accuracy", "{:.4f}"),
    ("oracle_mean_latency", "{:.2f}"), ("latency_per_item_batch1_full_s", "{:.4f}"),
    ("latency_per_item_batch1_dc_s", "{:.4f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="conv_mnist,resnet_small")
    parser.add_argument("--methods", default="qcfs,qffs")
    parser.add_argument("--bits", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="full-precision training epochs")
    parser.add_argument("--quant-epochs", type=int, default=2, help="quantized fine-tuning epochs")
    parser.add_argument("--T-qcfs", type=int, default=32)
    parser.add_argument("--T-qffs", type=int, help="default 2^bits - 1: QFFS reproduces the quantized ANN at "
                        "T = Q and drifts afterwards (capped spikes, bias still arriving every step)")
    parser.add_argument("--samples", type=int, default=None, help="test items (default: all 2000)")
    parser.add_argument("--latency-items", type=int, default=50, help="items for the batch-1 latency columns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v-init", choices=("half", "calibrated"), default="half",
                        help="initial membranes: theta/2 (QCFS's shift) or calibrated on training items for the T run")
    parser.add_argument("--out", default="results/dynamic_confidence")
    args = parser.parse_args()
    console = Console(width=200)  # the report table has 15 columns
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset()
    entries = []
    for arch in args.archs.split(","):
        for method in args.methods.split(","):
            console.print(f"{method} / {arch} ...")
            entries.append(evaluate_entry(method, arch, args, dataset, out))
            (out / "dc_report.json").write_text(json.dumps(entries, indent=1))  # incremental: nothing is lost
    table = Table(title="Dynamic Confidence (embedded MNIST test items; DC picked on a validation part)")
    for name, _ in COLUMNS:
        table.add_column(name)
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for entry in entries:
        cells = [fmt.format(entry[name]) for name, fmt in COLUMNS]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    (out / "dc_report.md").write_text("\n".join(lines) + "\n")
    console.print(f"report written to {out}/ (dc_report.json, dc_report.md, stop_times_*.png)")


if __name__ == "__main__":
    main()
