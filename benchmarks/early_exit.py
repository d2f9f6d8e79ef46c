"""Early exit with batch compaction: wall-clock saving vs step saving on one batch of 1000 items.

    python benchmarks/early_exit.py                      # conv_mnist, QCFS 2-bit, T = 32
    python benchmarks/early_exit.py --arch dense_mnist

The Dynamic Confidence threshold is picked on the validation half of the 2000 embedded MNIST test
digits; the other 1000 run once to T and once with early exit, as one batch each. Goal (issue 5): the
wall-clock saving is at least 0.8 x the step saving.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.data import load_dataset
from neurodeploy.evaluate.summary import summarize
from neurodeploy.jobs.config import ConversionSettings, JobConfig, ModelSettings, RunSettings
from neurodeploy.jobs.events import silent
from neurodeploy.jobs.prepare import convert_model, model_cache, model_for_conversion
from neurodeploy.jobs.run import run_early_exit
from neurodeploy.train import evaluate_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="conv_mnist")
    parser.add_argument("--conversion", default="qcfs", choices=["qcfs", "qffs"])
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quant-epochs", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("early_exit.json")))
    args = parser.parse_args()
    config = JobConfig(model=ModelSettings(arch=args.arch, epochs=args.epochs),
                       conversion=ConversionSettings(conversion=args.conversion, quant_epochs=args.quant_epochs),
                       run=RunSettings(T=args.T, batch_size=1000, exit="confidence", progress=False))
    dataset = load_dataset()
    model = model_for_conversion(config, dataset, model_cache(config, silent))[-1].model
    network = convert_model(model, dataset, config)
    backend = get_backend("gpu")
    full = backend.run(network, dataset.test.images, dataset.test.labels,
                       RunOptions(T=config.run.T, batch_size=1000, progress=False))
    full.metadata["ann_accuracy"] = evaluate_accuracy(model, dataset.test)
    summary, _ = summarize(full, full.metadata["ann_accuracy"])
    early = run_early_exit(backend, network, dataset.test, full, summary, config, Path("/tmp"))
    early["wall_over_step_saving"] = early["wall_saving"] / early["step_saving"]
    early.update(arch=args.arch, conversion=args.conversion, T=args.T, device=str(backend.device))
    print(f"{args.arch} {args.conversion} T={args.T}, {early['n_items']} items in one batch: step saving "
          f"{early['step_saving']:.1%}, wall saving {early['wall_saving']:.1%} ({early['full_T_wall_time_s']:.2f} s -> "
          f"{early['wall_time_s']:.2f} s), ratio {early['wall_over_step_saving']:.2f}; accuracy "
          f"{early['accuracy']:.4f} vs full T {early['full_T_accuracy']:.4f}")
    Path(args.out).write_text(json.dumps(early, indent=1))


if __name__ == "__main__":
    main()
