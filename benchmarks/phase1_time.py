"""Phase 1's CPU time (``time.process_time``, one thread): ``budgeted_sparsity`` at its defaults on the trained
dense MNIST and conv MNIST models (embedded MNIST, 15 epochs, the seed given; taken from the model cache, trained
into it when absent), with the code on PYTHONPATH, so that two versions can be timed back to back:

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/phase1_time.py --cache-dir CACHE
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from neurodeploy.data.datasets import load_dataset
from neurodeploy.jobs.models import ModelCache, trained_model
from neurodeploy.train.sparsity import BudgetedSparsity, budgeted_sparsity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--arch", nargs="+", default=["dense_mnist", "conv_mnist"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(None)
    for arch in args.arch:
        model = trained_model(ModelCache(args.cache_dir, lambda event: None), dataset, arch, 15, args.seed,
                              False).model
        start = time.process_time()
        _, record = budgeted_sparsity(model, dataset.train, BudgetedSparsity(seed=args.seed), progress=False)
        took = time.process_time() - start
        paired = record["paired"]
        print(f"{arch}: phase 1 {took:.1f} s CPU, {record['fine_tunings']} fine-tunings, chosen scale "
              f"{record['scale']}, pruning below {record['config']['prune_threshold']}, S_c "
              f"{record['after']['combined_sparsity']:.3f}, {paired['gained']} gained / {paired['lost']} lost",
              flush=True)


if __name__ == "__main__":
    main()
