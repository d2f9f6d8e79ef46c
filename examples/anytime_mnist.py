"""Before/after table of Dutson et al.'s anytime optimizations on dense MNIST and conv MNIST.

"before" is the plain conversion (layer-level 99.9 percentile scales, zero initial membrane) of the
trained model; "after" chains the three phases (`neurodeploy run --optimize`): sparsity fine-tuning,
neuron-level scales optimized for L_SNN on held-out training items, half-threshold initial membrane.
Both are measured on the test split. For dense MNIST a phase-2/3 table (granularity x initial membrane,
P_l relative to zero init) is added. Writes results/anytime/{anytime_report.json, anytime_report.md,
accuracy_<arch>.png}; every run keeps its own folder (summary.json, plots) beside them.

    python examples/anytime_mnist.py                   # both models (conv MNIST takes ~10 min on 2 cores)
    python examples/anytime_mnist.py --archs dense_mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neurodeploy.backends.gpu import GpuBackend  # noqa: E402
from neurodeploy.cli.render import console, render  # noqa: E402
from neurodeploy.convert import convert  # noqa: E402
from neurodeploy.data import load_dataset  # noqa: E402
from neurodeploy.evaluate.metrics import pareto_latency, pareto_power  # noqa: E402
from neurodeploy.jobs.config import JobConfig, ModelSettings, OptimizationSettings, RunSettings  # noqa: E402
from neurodeploy.jobs.prepare import model_cache, source_model  # noqa: E402
from neurodeploy.jobs.run import run_job  # noqa: E402
from neurodeploy.train import evaluate_accuracy  # noqa: E402

#: per model: training epochs, steps, and the optimization budget (``OptimizationSettings`` fields: simulations,
#: held-out items, steps per simulation; conv MNIST simulates ~50x slower)
SETTINGS = {
    "dense_mnist": {"epochs": 15, "T": 100, "optimization": {"evals": 250}},
    "conv_mnist": {"epochs": 6, "T": 50, "optimization": {"evals": 40, "items": 200, "T": 30}},
}
ROW_KEYS = ("peak_accuracy", "pareto_latency", "pareto_power", "time_to_target", "events_to_target")


def row(summary: dict) -> dict:
    return {"ann_accuracy": summary["ann_accuracy"], "peak_accuracy": summary["peak_accuracy"],
            "pareto_latency": summary["pareto_latency"]["pareto"], "pareto_power": summary["pareto_power"]["pareto"],
            "time_to_target": summary["time_to_target"], "events_to_target": summary["events_to_target"],
            "target_accuracy": summary["target_accuracy"], "accuracy_curve": summary["accuracy_curve"]}


def init_table(config: JobConfig) -> list[dict]:
    """Phases 2 and 3 alone on the plain model of ``config``: granularity x initial membrane on the test split."""
    dataset = load_dataset()
    model = source_model(config, dataset, model_cache(config, render)).model
    ann = evaluate_accuracy(model, dataset.test)
    backend, T = GpuBackend(device="cpu"), config.run.T
    rows = []
    for granularity in ("layer", "neuron"):
        for v_init in ("zero", "half", "uniform"):
            network = convert(model, dataset.train.images[:2000], granularity=granularity, v_init=v_init)
            simulator = backend.anytime_simulator(network, dataset.test.images, dataset.test.labels, T)
            accuracy, events = simulator.curves(network)
            rows.append({"granularity": granularity, "v_init": v_init, "peak_accuracy": float(accuracy.max()),
                         "pareto_latency": pareto_latency(accuracy, ann),
                         "pareto_power": pareto_power(accuracy, ann, events)})
    for r in rows:
        zero = next(z for z in rows if z["granularity"] == r["granularity"] and z["v_init"] == "zero")
        r["latency_vs_zero_init"] = r["pareto_latency"] / zero["pareto_latency"]
    return rows


def plot(arch: str, before: dict, after: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in (("before (plain)", before), ("after (3 phases)", after)):
        ax.plot(range(1, len(r["accuracy_curve"]) + 1), r["accuracy_curve"], label=label)
    ax.axhline(after["ann_accuracy"], color="grey", linestyle=":", label="ANN (after)")
    ax.set(xlabel="time step", ylabel="test accuracy", title=f"{arch}: accuracy over time", ylim=(0.8, 1.0))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(value) -> str:
    return "not reached" if value is None else f"{value:.4g}"


def markdown(report: dict) -> str:
    lines = ["# Anytime optimizations (Dutson et al.), measured on the embedded MNIST test split", "",
             "| model | | ANN acc | peak acc | P_l (steps) | P_p (events) | steps to 99% a* | events to 99% a* |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, entry in report["models"].items():
        for when in ("before", "after"):
            r = entry[when]
            lines.append(f"| {arch} (T={entry['T']}) | {when} | {r['ann_accuracy']:.4f} | {r['peak_accuracy']:.4f} | "
                         f"{r['pareto_latency']:.4g} | {r['pareto_power']:.4g} | {fmt(r['time_to_target'])} | "
                         f"{fmt(r['events_to_target'])} |")
        lines.append(f"| {arch} | ratio | | {entry['peak_accuracy_change_pp']:+.2f} pp | "
                     f"{entry['latency_reduction']:.1f}x lower | {entry['power_reduction']:.1f}x lower | | |")
    lines += ["", "Scale optimization wall time: " + ", ".join(
        f"{arch} {entry['optimize_wall_time_s']:.0f} s ({entry['optimize_evaluations']} simulations)"
        for arch, entry in report["models"].items()), ""]
    if report.get("init_table"):
        lines += ["## Phases 2 and 3 alone (plain dense MNIST model, no fine-tuning, no optimization)", "",
                  "| granularity | v_init | peak acc | P_l | P_p | P_l / P_l(zero init) |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['granularity']} | {r['v_init']} | {r['peak_accuracy']:.4f} | {r['pareto_latency']:.4g} | "
                  f"{r['pareto_power']:.4g} | {r['latency_vs_zero_init']:.3f} |" for r in report["init_table"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="dense_mnist,conv_mnist")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    out = Path(args.results_dir) / "anytime"
    out.mkdir(parents=True, exist_ok=True)
    report = {"data": "embedded MNIST (8,000 train / 2,000 test)", "form": "pareto", "models": {}}
    for arch in args.archs.split(","):
        settings = SETTINGS[arch]
        # a fresh JobConfig for each: it resolves granularity and v_init from whether it optimizes
        # (dataclasses.replace on a resolved config would keep the plain "layer" / "zero")
        common = {"model": ModelSettings(arch=arch, epochs=settings["epochs"]),
                  "run": RunSettings(T=settings["T"], progress=not args.no_progress), "results_dir": args.results_dir}
        plain = JobConfig(**common, run_id=f"anytime-{arch}-before")
        _, before = run_job(plain, render)
        optimized = OptimizationSettings(enabled=True, **settings["optimization"])
        _, after = run_job(JobConfig(**common, optimization=optimized, run_id=f"anytime-{arch}-after"), render)
        b, a = row(before), row(after)
        report["models"][arch] = {
            "T": settings["T"], "before": b, "after": a,
            "latency_reduction": b["pareto_latency"] / max(a["pareto_latency"], 1e-12),
            "power_reduction": b["pareto_power"] / max(a["pareto_power"], 1e-12),
            "peak_accuracy_change_pp": 100 * (a["peak_accuracy"] - b["peak_accuracy"]),
            "optimize_wall_time_s": after["scale_optimization"]["wall_time_s"],
            "optimize_evaluations": after["scale_optimization"]["evaluations"],
            "optimization": after["scale_optimization"],
        }
        plot(arch, b, a, out / f"accuracy_{arch}.png")
        if arch == "dense_mnist":
            report["init_table"] = init_table(plain)
        (out / "anytime_report.json").write_text(json.dumps(report, indent=1))
        (out / "anytime_report.md").write_text(markdown(report))
    console.print(markdown(report))
    console.print(f"written to {out}/")


if __name__ == "__main__":
    main()
