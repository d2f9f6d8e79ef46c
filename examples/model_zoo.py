"""The torchvision classifiers through the converter, trained briefly here, one recipe for all.

For each architecture (random weights, never downloaded; torchvision's model definitions are loaded
without its compiled ops, :mod:`neurodeploy.train.torchvision_zoo`):

1. convert as it is; while the converter refuses, follow the action its refusal names: max pooling ->
   ``replace_max_pooling`` (strategy "avg"), an activation no IF neuron computes or a squeeze-excitation
   gate -> ``replace_activations``; each step is recorded;
2. train the resulting model (``--train-items`` embedded MNIST digits resized to 3 x 32 x 32, AlexNet at
   3 x 64 x 64 because its feature extractor needs at least 63 x 63; ``--epochs`` epochs of SGD);
3. convert it (per-channel normalization, ``--granularity``, ``--v-init``) and simulate ``--items`` test
   digits for ``max(--T)`` steps on the gpu backend (on the CPU unless CUDA is there): the readout at
   every step gives the SNN's accuracy and its argmax agreement with the ANN at each T of ``--T``.

    python examples/model_zoo.py                                   # all 13, writes results/model_zoo/
    OMP_NUM_THREADS=1 python examples/model_zoo.py --models mobilenet_v2 regnet_x_400mf --items 100

Each architecture's row is written to ``results/model_zoo/<name>.json`` when it is done, so a run that is
stopped keeps the rows it finished; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.convert import convert
from neurodeploy.convert.activations import relu_model
from neurodeploy.convert.fx_graph import FxConverter
from neurodeploy.convert.max_pool import average_pooling_model
from neurodeploy.data import load_dataset
from neurodeploy.data.datasets import Split
from neurodeploy.errors import UnsupportedOperationError
from neurodeploy.train.torchvision_zoo import ARCHITECTURES, torchvision_model
from neurodeploy.train.trainer import TrainConfig, evaluate_accuracy, train_model

#: the refusal's action, recognised by the name it gives, and what following it does to the model
ACTIONS = {"replace_max_pooling": lambda m: average_pooling_model(m)[0],
           "replace_activations": lambda m: relu_model(m)[0]}


def resized(split: Split, size: int) -> Split:
    """MNIST digits as 3 x size x size images (bilinear resize, the gray level in all three channels)."""
    images = F.interpolate(split.images, size=(size, size), mode="bilinear", align_corners=False)
    return Split(images.repeat(1, 3, 1, 1).contiguous(), split.labels)


def follow_refusals(model: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Module, list[str]]:
    """``model`` after following each refusal's named action until the converter's walk accepts it."""
    steps = []
    for _ in range(len(ACTIONS) + 1):
        try:
            FxConverter(model, shape).run()
            return model, steps
        except UnsupportedOperationError as err:
            action = next((name for name in ACTIONS if name in str(err)), None)
            if action is None or action in steps:
                raise
            steps.append(action)
            print(f"  refused: {str(err)[:160]}...\n  -> {action}", flush=True)
            model = ACTIONS[action](model)
    raise RuntimeError("unreachable")


def run_one(name: str, args, data) -> dict:
    size = 64 if name == "alexnet" else 32
    train, test = resized(data.train.head(args.train_items), size), resized(data.test.head(args.items), size)
    shape = tuple(train.images.shape[1:])
    row: dict = {"model": name, "input": list(shape)}
    start = time.perf_counter()
    model, steps = follow_refusals(torchvision_model(name, num_classes=10, seed=args.seed), shape)
    row["actions"] = steps
    train_model(model, train, TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=64, seed=args.seed),
                progress=False)
    model.eval()
    row["train_s"] = round(time.perf_counter() - start, 1)
    row["ann_accuracy"] = evaluate_accuracy(model, test)
    with torch.no_grad():
        ann_pred = torch.cat([model(test.images[i:i + 100]).argmax(1) for i in range(0, len(test), 100)]).numpy()
    start = time.perf_counter()
    net = convert(model, train.images[:args.calibration], normalization=args.normalization,
                  percentile=None if args.normalization == "max" else args.percentile, granularity=args.granularity,
                  v_init=args.v_init,
                  T=max(args.T) if args.v_init == "calibrated" else None, choice_items=args.calibration)
    row["convert_s"] = round(time.perf_counter() - start, 1)
    row["populations"] = len(net.populations)
    start = time.perf_counter()
    result = get_backend("gpu").run(net, test.images, test.labels,
                                    RunOptions(T=max(args.T), batch_size=args.batch, progress=False))
    row["simulate_s"] = round(time.perf_counter() - start, 1)
    predictions = np.asarray(result.readout).argmax(2)  # [items, T]
    labels = test.labels.numpy()
    for T in args.T:
        row[f"snn_accuracy_T{T}"] = float((predictions[:, T - 1] == labels).mean())
        row[f"agreement_T{T}"] = float((predictions[:, T - 1] == ann_pred).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--train-items", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--items", type=int, default=300, help="test items simulated")
    parser.add_argument("--calibration", type=int, default=500, help="training items for normalization")
    parser.add_argument("--T", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--normalization", default="percentile", choices=["max", "percentile", "percentile_all"])
    parser.add_argument("--percentile", type=float, default=99.99,
                        help="99.99: the large-T limit of the deep nets agrees with the ANN (99.9 clips too much)")
    parser.add_argument("--granularity", default="neuron", choices=["layer", "neuron"])
    parser.add_argument("--v-init", default="half")
    parser.add_argument("--batch", type=int, default=50, help="simulation batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/model_zoo"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset()
    setup = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
             "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
             "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    rows = []
    for name in args.models:
        print(f"{name}:", flush=True)
        row = run_one(name, args, data) | {"setup": setup}
        (args.out / f"{name}.json").write_text(json.dumps(row, indent=1))
        rows.append(row)
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "setup"), flush=True)
    header = ["model", "actions", "ANN", *(f"SNN / agree T={T}" for T in args.T)]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        cells = [row["model"], ", ".join(row["actions"]) or "-", f"{100 * row['ann_accuracy']:.1f} %"]
        cells += [f"{100 * row[f'snn_accuracy_T{T}']:.1f} / {100 * row[f'agreement_T{T}']:.1f} %" for T in args.T]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
