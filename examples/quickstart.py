"""The Python API end to end: train (or load) dense MNIST, convert it, simulate it under the ideal and
the PyNN-delay profiles, and evaluate both with the shared evaluator.

    python examples/quickstart.py --samples 500 --T 60
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.cli.render import comparison_table, console, render
from neurodeploy.data import load_dataset
from neurodeploy.evaluate.plots import plot_reports
from neurodeploy.evaluate.summary import summarize
from neurodeploy.jobs.config import JobConfig, ModelSettings, RunSettings
from neurodeploy.jobs.prepare import convert_model, model_cache, source_model
from neurodeploy.train import evaluate_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="results/quickstart")
    args = parser.parse_args()

    config = JobConfig(model=ModelSettings(epochs=args.epochs), run=RunSettings(progress=False))
    dataset = load_dataset()                                    # embedded MNIST subset
    cached = source_model(config, dataset, model_cache(config, render))  # trained once, then cached
    model, label = cached.model, cached.label
    network = convert_model(model, dataset, config)             # IR with normalized weights
    test = dataset.test.head(args.samples)
    ann_accuracy = evaluate_accuracy(model, test)

    runs = []
    for profile in ("ideal", "pynn"):
        backend = get_backend("gpu", profile=profile)
        result = backend.run(network, test.images, test.labels, RunOptions(T=args.T, progress=False))
        summary, arrays = summarize(result, ann_accuracy)
        runs.append((f"gpu/{profile}", summary, arrays))
    console.print(comparison_table([s for _, s, _ in runs], [name for name, _, _ in runs]))
    paths = plot_reports(Path(args.out), runs)
    console.print(f"{label}: plots in {Path(args.out)}/ ({len(paths)} PNG files)")


if __name__ == "__main__":
    main()
