"""The torchvision classifiers through the converter, trained briefly here, one recipe for all.

For each architecture (random weights, never downloaded; torchvision's model definitions are loaded
without its compiled ops, :mod:`neurodeploy.train.torchvision_zoo`):

1. convert as it is; while the converter refuses, follow the action its refusal names: max pooling ->
   ``replace_max_pooling`` (strategy "avg"), an activation no IF neuron computes or a squeeze-excitation
   gate -> ``replace_activations``; each step is recorded;
2. train the resulting model, one recipe for all: ``--train-items`` embedded MNIST digits resized to
   3 x 32 x 32 (AlexNet at 3 x 64 x 64 because its feature extractor needs at least 63 x 63), ``--epochs``
   epochs of ``--optimizer`` (AdamW or SGD with momentum 0.9) at ``--lr`` with a one-cycle schedule (warm-up
   then cosine decay), batch ``--train-batch``; then the batch-norm statistics are recomputed over the
   training items (``torch.optim.swa_utils.update_bn``: a brief run leaves the running averages of
   torchvision's momentum-0.01 batch norms, MobileNetV3 and EfficientNet, far from the data). The trained
   weights are kept in ``--weights`` under a name that encodes the recipe, so a rerun with other
   conversion settings does not train again;
3. convert it (per-channel normalization, ``--granularity``, ``--v-init``, ``--negative-spikes``) and
   simulate ``--items`` test digits for ``max(--T)`` steps on the gpu backend (on the CPU unless CUDA is
   there): the readout at every step gives the SNN's accuracy and its argmax agreement with the ANN at
   each T of ``--T``.

    python examples/model_zoo.py                                   # all 13, writes results/model_zoo/
    OMP_NUM_THREADS=1 python examples/model_zoo.py --models mobilenet_v2 regnet_x_400mf --items 100

Each architecture's row is written to ``results/model_zoo/<name>.json`` when it is done, so a run that is
stopped keeps the rows it finished; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
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
from neurodeploy.train.trainer import evaluate_accuracy, train_epoch

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


def recipe(args) -> str:
    """The training recipe's settings as a file-name part (the weights cache key)."""
    return (f"n{args.train_items}-e{args.epochs}-{args.optimizer}{args.lr:g}-b{args.train_batch}"
            f"-s{args.seed}")


def train(model: nn.Module, split: Split, args) -> None:
    """The one recipe (module docstring, step 2), in place; ends in eval mode."""
    torch.manual_seed(args.seed)
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * -(-len(split) // args.train_batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.25)
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        train_epoch(model, split, optimizer, args.train_batch, generator, after_step=schedule.step)
    batches = [split.images[i:i + 100] for i in range(0, len(split), 100)]
    torch.optim.swa_utils.update_bn(batches, model)  # running averages -> the training items' statistics
    model.eval()


def trained_model(name: str, split: Split, args) -> tuple[nn.Module, list[str], bool]:
    """The architecture after its refusals' actions, trained by the recipe (or loaded from the weights
    cache); returns the model, the actions followed and whether it was loaded."""
    model, steps = follow_refusals(torchvision_model(name, num_classes=10, seed=args.seed),
                                   tuple(split.images.shape[1:]))
    path = args.weights / f"{name}-{recipe(args)}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval(), steps, True
    train(model, split, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)  # atomic: another process reading the cache never sees half a file
    return model, steps, False


def run_one(name: str, args, data) -> dict:
    size = 64 if name == "alexnet" else 32
    train_split, test = resized(data.train.head(args.train_items), size), resized(data.test.head(args.items), size)
    row: dict = {"model": name, "input": list(train_split.images.shape[1:]), "recipe": recipe(args)}
    start = time.perf_counter()
    model, row["actions"], row["weights_cached"] = trained_model(name, train_split, args)
    row["train_s"] = round(time.perf_counter() - start, 1)
    row["ann_accuracy"] = evaluate_accuracy(model, test)
    with torch.no_grad():
        ann_pred = torch.cat([model(test.images[i:i + 100]).argmax(1) for i in range(0, len(test), 100)]).numpy()
    start = time.perf_counter()
    if args.train_only:
        return row
    net = convert(model, train_split.images[:args.calibration], normalization=args.normalization,
                  percentile=None if args.normalization == "max" else args.percentile, granularity=args.granularity,
                  v_init=args.v_init,
                  T=max(args.T) if args.v_init == "calibrated" else None, choice_items=args.calibration,
                  negative_spikes=args.negative_spikes, headroom=args.headroom)
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


def parser() -> argparse.ArgumentParser:
    """The example's options (also how ``benchmarks/spinnaker_accuracy.py --zoo`` finds the trained weights)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--train-items", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--lr", type=float, default=3e-4,
                        help="peak learning rate of the one-cycle schedule (3e-4: at 1e-3 the nets without batch "
                             "norm, vgg16, alexnet and squeezenet1_0, stay at chance)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-only", action="store_true", help="train (fill the weights cache) and stop")
    parser.add_argument("--table", action="store_true", help="only print the table of the rows in --out")
    parser.add_argument("--items", type=int, default=300, help="test items simulated")
    parser.add_argument("--calibration", type=int, default=3000, help="training items for normalization")
    parser.add_argument("--T", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--normalization", default="percentile", choices=["max", "percentile", "percentile_all"])
    parser.add_argument("--percentile", type=float, default=99.99,
                        help="99.99: the large-T limit of the deep nets agrees with the ANN (99.9 clips too much)")
    parser.add_argument("--headroom", type=float, default=1.5,
                        help="lambda = headroom x the calibration statistic (convert(..., headroom=)): 1.5 clips no "
                             "test activation that changes a decision in the large-T limit (docs/converter.md)")
    parser.add_argument("--granularity", default="neuron", choices=["layer", "neuron"])
    parser.add_argument("--v-init", default="half")
    parser.add_argument("--negative-spikes", action="store_true",
                        help="hidden neurons take back overshoots (convert(..., negative_spikes=True))")
    parser.add_argument("--batch", type=int, default=50, help="simulation batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/model_zoo"), help="one json row per model")
    parser.add_argument("--weights", type=Path, default=Path("results/model_zoo/weights"),
                        help="trained weights, one file per model and recipe")
    return parser


def main() -> None:
    args = parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset()
    setup = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
             "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
             "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    for name in ([] if args.table else args.models):
        print(f"{name}:", flush=True)
        row = run_one(name, args, data) | {"setup": setup}
        if not args.train_only:
            (args.out / f"{name}.json").write_text(json.dumps(row, indent=1))
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "setup"), flush=True)
    print(table(args.out, args.T))


def conversion_options(args: dict) -> str:
    """The conversion settings of a row's run, as the table shows them."""
    scale = "max" if args["normalization"] == "max" else f"p {args['percentile']:g}"
    options = [f"{scale} x {args.get('headroom', 1.0):g} on {args['calibration']}", f"v0 {args['v_init']}"]
    return ", ".join(options + (["negative spikes"] if args["negative_spikes"] else []))


def table(folder: Path, steps: list[int]) -> str:
    """The markdown table of every architecture's row in ``folder`` (in the order of
    :data:`ARCHITECTURES`; "not run" where there is none) and how many agree with their ANN on >= 99 %
    of the items at some T of ``steps``."""
    header = ["model", "what it needs", "conversion", "items", "ANN", *(f"SNN / agreement T = {T}" for T in steps)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    agreeing = []
    for name in ARCHITECTURES:
        path = folder / f"{name}.json"
        if not path.exists():
            lines.append(f"| {name} | | | | not run | " + " | ".join([""] * len(steps)) + " |")
            continue
        row = json.loads(path.read_text())
        cells = [name, ", ".join(row["actions"]) or "-", conversion_options(row["setup"]["args"]),
                 str(row["setup"]["args"]["items"]),
                 f"{100 * row['ann_accuracy']:.1f} %"]
        if f"agreement_T{steps[0]}" not in row:
            lines.append("| " + " | ".join(cells + ["not simulated"] * len(steps)) + " |")
            continue
        cells += [f"{100 * row[f'snn_accuracy_T{T}']:.1f} / {100 * row[f'agreement_T{T}']:.1f} %" for T in steps]
        lines.append("| " + " | ".join(cells) + " |")
        if max(row[f"agreement_T{T}"] for T in steps) >= 0.99:
            agreeing.append(name)
    lines.append(f"\n{len(agreeing)} of {len(ARCHITECTURES)} agree with their ANN on >= 99 % of the items at some "
                 f"T <= {max(steps)}: {', '.join(agreeing) or 'none'}")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
