"""How many validation items one phase-1 fine-tuning re-decides against the original (issue 34), and why:
the paired interval's width is set by those items. For one trained model (from the model cache) on one data
set, it prints the gained / lost items and the 90 % interval against the original on the validation part of
the training split for: one pass of train-mode forwards over the fit part (only the batch norms' running
statistics change), then one searched candidate's fine-tuning (``BudgetedSparsity`` at each penalty scale
given, from the original) on the labels or toward the original's outputs, with train-mode or frozen batch norms,
and, for each, pruned at 0 and at 0.005.

    OMP_NUM_THREADS=1 python benchmarks/phase1_discordance.py --cache-dir CACHE --data /tmp/datasets/noisy \
        --seed 1 --scales 0.0625 1 4
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from pathlib import Path

import torch

from neurodeploy.data.datasets import load_dataset
from neurodeploy.jobs.models import ModelCache, trained_model
from neurodeploy.optimize.budget import compare_paired
from neurodeploy.train import sparsity
from neurodeploy.train.trainer import split_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True, help="model cache holding the trained model")
    parser.add_argument("--data", default=None, help="data folder (default: the embedded MNIST)")
    parser.add_argument("--arch", default="dense_mnist")
    parser.add_argument("--epochs", type=int, default=15, help="the trained model's epochs (its cache key)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=[1 / 16, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    model = trained_model(ModelCache(args.cache_dir, lambda event: None), dataset, args.arch, args.epochs,
                          args.seed, False).model
    fit, val = split_validation(dataset.train, sparsity.VALIDATION_FRACTION, args.seed)
    original = sparsity.correct_flags(model, val).numpy()

    def line(what: str, candidate: torch.nn.Module) -> str:
        p = compare_paired(sparsity.correct_flags(candidate, val).numpy(), original, 0.005)
        s_c = sparsity.validation_report(candidate, val)["combined_sparsity"]
        return (f"{what}: {p.gained} gained, {p.lost} lost, [{100 * p.lower:+.2f}, {100 * p.upper:+.2f}] pp, "
                f"S_c {s_c:.3f}")

    drifted = copy.deepcopy(model).train()
    with torch.no_grad():
        for start in range(0, len(fit), 64):
            drifted(fit.images[start:start + 64])
    print(line("running statistics only (one pass of train-mode forwards)", drifted), flush=True)
    search = sparsity.BudgetedSparsity(seed=args.seed)
    per_round = min(-(-len(fit) // search.epochs), search.max_items)
    for distill, frozen in ((0.0, False), (1.0, False), (0.0, True), (1.0, True)):
        targets = sparsity.original_targets(model, fit, distill)
        for scale in args.scales:
            config = replace(search.config(scale), max_items=per_round, distill=distill, frozen_norms=frozen)
            tuned = copy.deepcopy(model)
            sparsity._finetune(tuned, fit, config, False, targets)  # one searched candidate, from the original
            what = f"scale {scale:g}, {'original outputs' if distill else 'labels'}, " \
                   f"{'frozen' if frozen else 'train-mode'} batch norms"
            pruned = copy.deepcopy(tuned)
            sparsity.prune(pruned, 0.005)
            print(line(what, tuned) + " | pruned at 0.005: " + line("", pruned)[2:], flush=True)


if __name__ == "__main__":
    main()
