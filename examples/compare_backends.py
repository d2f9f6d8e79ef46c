"""One converted network on several backends, compared from Python (what `neurodeploy compare` does).

    python examples/compare_backends.py --backends gpu:pynn,neuron,gpu:ideal --samples 50 --T 50

The first backend is the reference; the others are compared with it on prediction agreement per step,
spike-count agreement per population and wall time. Writes compare.json and overlaid plots.
"""

from __future__ import annotations

import argparse

from neurodeploy.cli.render import render
from neurodeploy.jobs.compare import compare_backends
from neurodeploy.jobs.config import JobConfig, ModelSettings, RunSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="gpu:pynn,neuron,gpu:ideal")
    parser.add_argument("--arch", default="dense_mnist")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out-id", default="compare-example")
    args = parser.parse_args()
    config = JobConfig(model=ModelSettings(arch=args.arch, epochs=args.epochs),
                       run=RunSettings(T=args.T, samples=args.samples, progress=False), run_id=args.out_id)
    folder, report = compare_backends(config, args.backends.split(","), emit=render)  # prints the CLI's tables
    for spec, entry in report["backends"].items():
        agreement = entry["agreement_with_reference"]["prediction_agreement_mean"]
        print(f"{spec:12s} accuracy at T {entry['snn_accuracy']:.4f}, agreement with {report['reference']} "
              f"{agreement:.4f}, {entry['wall_time_per_item_s'] * 1e3:.2f} ms per item")


if __name__ == "__main__":
    main()
