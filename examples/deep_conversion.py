"""Conversion of residual networks at low latency, measured on the embedded MNIST digits.

Two residual networks: the zoo's ``resnet_small`` and ``resnet20`` (three stages of three blocks,
downsampling shortcuts), trained here (kept in the model cache like every job's models: ``$NEURODEPLOY_CACHE``
or the user cache folder).

* ``qcfs``: each net fine-tuned with 2-bit activations (QuantReLU, mixed training resolution) and
  converted with QCFS; the quantized ANN's and the SNN's test accuracy at T = 16, 32, 64, read from the
  start, with a delayed readout (k chosen on calibration items of the training split), and with initial
  membranes calibrated for T = 32 on training items (``v_init="calibrated"``).
* ``staircase``: the quantized ANNs with each 2-bit staircase replaced by the T-level one a settled QCFS
  SNN computes at T = 16, 32, 64 (no simulation; the accuracy the SNN tends to at each T).
* ``rate``: the full-precision nets converted with rate coding (percentile normalization), test
  accuracy at T = 32, 64, 128 before and after per-channel threshold balancing, a delayed readout and
  calibrated initial membranes (the delay and the membranes are chosen on calibration items of the
  training split, never on the test split; ``--rate-rows`` runs some of the recipes).
* ``ops``: every newly supported op (global mean, Conv1d/1-D pooling, channel concatenation, clipped
  ReLUs): agreement of the SNN at large T with its ANN on random inputs.
* ``maxpool``: a conv net with max pooling trained here, and each max-pooling strategy's accuracy.

    python examples/deep_conversion.py                       # every part, writes results/deep_conversion/
    python examples/deep_conversion.py --parts qcfs --samples 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.convert import convert
from neurodeploy.data import load_dataset
from neurodeploy.ir.io import save_network
from neurodeploy.jobs.config import ConversionSettings, JobConfig, ModelSettings
from neurodeploy.jobs.events import silent
from neurodeploy.jobs.prepare import model_cache, model_for_conversion
from neurodeploy.train import evaluate_accuracy

ARCHS = {"resnet_small": 15, "resnet20": 8}  # architecture -> training epochs


def _archs(args) -> list[tuple[str, int]]:
    return [(arch, ARCHS[arch]) for arch in args.archs.split(",")]


def snn_accuracy(network, split, Ts: list[int], batch_size: int = 500) -> dict[int, float]:
    """Test accuracy of the readout at each T in ``Ts`` from one run of max(Ts) steps (the gpu backend
    on this machine's device), honouring a delayed readout recorded in the network."""
    backend = get_backend("gpu")
    result = backend.run(network, split.images, split.labels,
                         RunOptions(T=max(Ts), batch_size=batch_size, progress=False))
    predictions = result.predictions()
    labels = split.labels.numpy()
    return {T: float((predictions[:, T - 1] == labels).mean()) for T in Ts}


def model(arch: str, epochs: int, dataset, quant_epochs: int | None = None, seed: int = 0) -> nn.Module:
    """The full-precision model, or with ``quant_epochs`` its 2-bit quantized version (mixed-resolution
    fine-tuning), trained here or loaded from the model cache (``neurodeploy.jobs.models.cache_folder``)."""
    conversion = ConversionSettings() if quant_epochs is None else ConversionSettings(
        conversion="qcfs", quant_bits=2, quant_epochs=quant_epochs)
    config = JobConfig(model=ModelSettings(arch=arch, epochs=epochs, seed=seed), conversion=conversion)
    return model_for_conversion(config, dataset, model_cache(config, silent))[-1].model.eval()


QCFS_TS = [16, 32, 64]
CALIBRATION_T = 32  # the initial membranes are calibrated for T = 32 and the network is then run for every T


def qcfs_part(args, dataset, test) -> list[dict]:
    """QCFS on the 2-bit nets: the quantized ANN's test accuracy, the SNN's at T = 16, 32, 64 read from the
    start, with the delayed readout chosen for each T on calibration items (``readout_starts``, the
    choice ``convert(..., readout_start="auto", T=T)`` makes), and with initial membranes calibrated for
    T = 32 (``convert(..., v_init="calibrated", T=32)``, saved as ``qcfs_<arch>_calibrated.zip``); and how
    often the SNN's prediction equals the quantized ANN's, with and without the calibration."""
    from neurodeploy.backends.base import delayed_readout
    from neurodeploy.convert.readout import readout_starts

    choice_items = dataset.train.images[1000:1000 + args.readout_items]
    labels = test.labels.numpy()
    rows = []
    for arch, epochs in _archs(args):
        quantized = model(arch, epochs, dataset, args.quant_epochs)
        network = convert(quantized, dataset.train.images[:1000], conversion="qcfs")
        ann = evaluate_accuracy(quantized, test)
        with torch.no_grad():
            reference = quantized(choice_items).argmax(1).numpy()
        choices = readout_starts(network, choice_items, reference, QCFS_TS)
        result = get_backend("gpu").run(network, test.images, test.labels,
                                        RunOptions(T=max(QCFS_TS), batch_size=500, progress=False))
        readout = result.readout.astype(np.float64)
        row = {"arch": arch, "quantized_ann": ann}
        for T in QCFS_TS:
            k = choices[T]["readout_start"]
            row[f"snn_T{T}"] = float((readout[:, T - 1].argmax(1) == labels).mean())
            row[f"snn_T{T}_delayed"] = float((delayed_readout(readout[:, :T], k)[:, T - 1].argmax(1) == labels).mean())
            row[f"k{T}"] = k
        calibrated = convert(quantized, dataset.train.images[:1000], conversion="qcfs", v_init="calibrated",
                             T=CALIBRATION_T, progress=True)
        row["v_init_calibration"] = calibrated.metadata["v_init_calibration"]
        save_network(calibrated, Path(args.out) / f"qcfs_{arch}_calibrated.zip")
        with torch.no_grad():
            quantized_predictions = torch.cat([quantized(b) for b in test.images.split(500)]).argmax(1).numpy()
        calibrated_readout = get_backend("gpu").run(calibrated, test.images, test.labels, RunOptions(
            T=max(QCFS_TS), batch_size=500, progress=False)).readout
        for T in QCFS_TS:
            predictions = {"": readout[:, T - 1].argmax(1), "_calibrated": calibrated_readout[:, T - 1].argmax(1)}
            for suffix, predicted in predictions.items():
                row[f"agreement_T{T}{suffix}"] = float((predicted == quantized_predictions).mean())
            row[f"snn_T{T}_calibrated"] = float((predictions["_calibrated"] == labels).mean())
        rows.append(row)
        print(f"qcfs {arch}: quantized ANN {ann:.4f}; SNN " + ", ".join(
            f"T={T} {row[f'snn_T{T}']:.4f} / delayed (k={row[f'k{T}']}) {row[f'snn_T{T}_delayed']:.4f} / "
            f"v0 calibrated {row[f'snn_T{T}_calibrated']:.4f}" for T in QCFS_TS), flush=True)
        print(f"qcfs {arch}: calibrated v0 / theta {row['v_init_calibration']['fractions']}; predictions equal to the "
              "quantized ANN's (start / calibrated): " + ", ".join(
                  f"T={T} {row[f'agreement_T{T}']:.4f} / {row[f'agreement_T{T}_calibrated']:.4f}" for T in QCFS_TS),
              flush=True)
    return rows


def staircase_part(args, dataset, test) -> list[dict]:
    """What a settled QCFS SNN computes at T: each QuantReLU's Q-level staircase replaced by a T-level one
    of the same clip, theta / T * round(clip(x, 0, theta) T / theta) (the count of an IF neuron with v0 =
    theta / 2 after T steps of a constant input). The quantized ANNs' test accuracy at Q levels and at
    T = 16, 32, 64 levels: the accuracy a QCFS SNN tends to at each T, above the 2-bit ANN's."""
    from neurodeploy.train.quantized import QuantReLU

    def t_level(module: QuantReLU, T: int):
        def forward(x: torch.Tensor) -> torch.Tensor:
            step = module.step.abs()
            return torch.round(torch.clamp(x / step, 0, module.levels) * T / module.levels) * module.levels / T * step
        return forward

    rows = []
    for arch, epochs in _archs(args):
        quantized = model(arch, epochs, dataset, args.quant_epochs)
        row = {"arch": arch, "quantized_ann": evaluate_accuracy(quantized, test)}
        quantizers = [m for m in quantized.modules() if isinstance(m, QuantReLU)]
        for T in QCFS_TS:
            for module in quantizers:
                module.forward = t_level(module, T)
            row[f"staircase_T{T}"] = evaluate_accuracy(quantized, test)
            for module in quantizers:
                del module.forward
        rows.append(row)
        print(f"staircase {arch}: quantized ANN {row['quantized_ann']:.4f}; with T-level staircases " +
              ", ".join(f"T={T} {row[f'staircase_T{T}']:.4f}" for T in QCFS_TS), flush=True)
    return rows


RATE_RECIPES = [  # (row, granularity, v_init, delayed readout)
    ("before: layer-wise lambda, v0 = 0", "layer", "zero", False),
    ("+ per-channel threshold balancing", "neuron", "zero", False),
    ("+ delayed readout", "layer", "zero", True),
    ("+ both", "neuron", "zero", True),
    ("+ both, v0 = theta / 2", "neuron", "half", True),
    ("+ per-channel, v0 calibrated for T = 32", "neuron", "calibrated", False),
]
RATE_TS = [32, 64, 128]


def rate_part(args, dataset, test) -> list[dict]:
    """Rate conversion of the full-precision residual nets: accuracy at T = 32, 64, 128 for each recipe.
    The delayed readout's k is chosen for each T on calibration items of the training split
    (``readout_starts``: the same choice as ``convert(..., readout_start="auto", T=T)``)."""
    from neurodeploy.backends.base import delayed_readout
    from neurodeploy.convert.readout import readout_starts

    calibration = dataset.train.images[:1000]
    choice_items = dataset.train.images[1000:1000 + args.readout_items]
    backend = get_backend("gpu")
    labels = test.labels.numpy()
    rows = []
    for arch, epochs in _archs(args):
        source = model(arch, epochs, dataset)
        ann = evaluate_accuracy(source, test)
        with torch.no_grad():
            reference = source(choice_items).argmax(1).numpy()
        runs: dict[tuple[str, str], tuple] = {}
        for index, (row, granularity, v_init, delayed) in enumerate(RATE_RECIPES):
            if args.rate_rows and str(index) not in args.rate_rows.split(","):
                continue
            key = (granularity, v_init)
            if key not in runs:
                network = convert(source, calibration, granularity=granularity, v_init=v_init,
                                  T=RATE_TS[0] if v_init == "calibrated" else None, progress=v_init == "calibrated")
                result = backend.run(network, test.images, test.labels,
                                     RunOptions(T=max(RATE_TS), batch_size=500, progress=False))
                runs[key] = (network, result.readout.astype(np.float64), None)
            network, readout, choices = runs[key]
            if delayed and choices is None:
                choices = readout_starts(network, choice_items, reference, RATE_TS)
                runs[key] = (network, readout, choices)
            entry = {"arch": arch, "recipe": row, "ann": ann}
            for T in RATE_TS:
                k = choices[T]["readout_start"] if delayed else 0
                predictions = delayed_readout(readout[:, :T], k)[:, T - 1].argmax(1)
                entry[f"T{T}"] = float((predictions == labels).mean())
                entry[f"k{T}"] = k
            rows.append(entry)
            print(f"rate {arch} [{row}]: " + ", ".join(
                f"T={T} {entry[f'T{T}']:.4f}" + (f" (k={entry[f'k{T}']})" if delayed else "") for T in RATE_TS)
                + f"  (ANN {ann:.4f})", flush=True)
    return rows


class _Audio(nn.Module):
    """Keyword-spotting style: Conv1d stem, 1-D pooling, two branches concatenated along channels
    (Inception style), a strided Conv1d and a global mean over time."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv1d(2, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.left, self.right = nn.Conv1d(8, 6, 3, padding=1), nn.Conv1d(8, 4, 1)
        self.down, self.fc = nn.Conv1d(10, 12, 3, stride=2), nn.Linear(12, 5)

    def forward(self, x):
        h = nn.functional.avg_pool1d(torch.relu(self.bn(self.stem(x))), 2)
        h = torch.relu(torch.cat([self.left(h), self.right(h)], 1))
        return self.fc(torch.relu(self.down(h)).mean(-1))


class _Dense(nn.Module):
    """DenseNet style: each layer sees the concatenation of all earlier ones; global mean pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.l1, self.l2 = nn.Conv2d(6, 4, 3, padding=1), nn.Conv2d(10, 4, 3, padding=1)
        self.fc = nn.Linear(14, 5)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.cat([h, torch.relu(self.l1(h))], 1)
        h = torch.cat([h, torch.relu(self.l2(h))], 1)
        return self.fc(h.mean((2, 3)))


class _Clipped(nn.Module):
    def __init__(self):
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(8, 24), nn.Linear(24, 24), nn.Linear(24, 5)

    def forward(self, x):
        h = nn.functional.relu6(self.f1(x) * 8)
        return self.f3(nn.functional.hardtanh(self.f2(h), 0.0, 2.0))


class _MaxPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.c1(x)), 3, 2, 1)
        h = torch.relu(nn.functional.max_pool2d(self.c2(h), 2))
        return self.fc(torch.flatten(h, 1))


OPS = {  # name -> (model, input shape, convert arguments)
    "x.mean((2, 3)) + torch.cat (DenseNet block)": (_Dense, (1, 8, 8), {}),
    "nn.Conv1d + 1-D pooling + torch.cat + x.mean(-1)": (_Audio, (2, 16), {}),
    "nn.ReLU6 + nn.Hardtanh(0, 2)": (_Clipped, (8,), {}),
    "max pooling, strategy 'spiking'": (_MaxPools, (1, 8, 8), {"max_pool": "spiking"}),
    "float64 model (cast)": (lambda: _Dense().double(), (1, 8, 8), {}),
}


def ops_part(args) -> list[dict]:
    """Agreement of the SNN (O(T) / T at T = 1000, max normalization) with its ANN's argmax on random
    inputs, for every newly converted op."""
    import copy

    rows = []
    for name, (factory, shape, kwargs) in OPS.items():
        torch.manual_seed(0)
        net = factory().eval()
        x = torch.rand(args.op_items, *shape)
        with torch.no_grad():
            ann = copy.deepcopy(net).float()(x).numpy()
        network = convert(net, x, normalization="max", **kwargs)
        result = get_backend("gpu").run(network, x, torch.zeros(len(x), dtype=torch.long),
                                        RunOptions(T=1000, batch_size=500, progress=False))
        snn = result.readout[:, -1] / 1000
        row = {"op": name, "items": len(x), "populations": len(network.populations),
               "agreement": float((snn.argmax(1) == ann.argmax(1)).mean()),
               "max_error_relative": float(np.abs(snn - ann).max() / np.abs(ann).max())}
        rows.append(row)
        print(f"ops {name}: agreement {row['agreement']:.4f} at T = 1000", flush=True)
    return rows


def _max_pool_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def maxpool_part(args, dataset, test) -> list[dict]:
    """A conv net with max pooling trained here (3 epochs), and each strategy's accuracy: the ANN the
    SNN approaches, and the SNN at T = 32, 64, 128 (per-channel lambdas, v0 = theta / 2)."""
    from neurodeploy.convert import replace_max_pooling
    from neurodeploy.train import TrainConfig, train_model

    torch.manual_seed(0)
    cnn = _max_pool_cnn()
    train_model(cnn, dataset.train, TrainConfig(epochs=3, seed=0), progress=False)
    cnn.eval()
    calibration = dataset.train.images[:1000]
    finetuned = replace_max_pooling(cnn, dataset.train, epochs=2)
    # (strategy, model converted, convert arguments, the ANN the SNN approaches)
    strategies = [("max_pool='avg' (no retraining)", cnn, {"max_pool": "avg"}, replace_max_pooling(cnn)),
                  ("replace_max_pooling + 2 epochs fine-tuning", finetuned, {}, finetuned),
                  ("max_pool='spiking'", cnn, {"max_pool": "spiking"}, cnn)]
    rows = [{"strategy": "ANN with max pooling", "ann": evaluate_accuracy(cnn, test)}]
    print(f"maxpool ANN with max pooling: {rows[0]['ann']:.4f}", flush=True)
    for name, source, kwargs, reference in strategies:
        network = convert(source, calibration, granularity="neuron", v_init="half", **kwargs)
        ann = evaluate_accuracy(reference, test)
        snn = snn_accuracy(network, test, RATE_TS)
        rows.append({"strategy": name, "ann": ann, "populations": len(network.populations),
                     **{f"T{T}": a for T, a in snn.items()}})
        print(f"maxpool {name}: ANN {ann:.4f}, SNN " + ", ".join(f"T={T} {a:.4f}" for T, a in snn.items()),
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="qcfs,staircase,rate,ops,maxpool")
    parser.add_argument("--samples", type=int, default=None, help="test items (default: all 2,000)")
    parser.add_argument("--archs", default="resnet_small,resnet20", help=f"residual nets, from {sorted(ARCHS)}")
    parser.add_argument("--quant-epochs", type=int, default=8)
    parser.add_argument("--op-items", type=int, default=1000, help="random inputs per op (part ops)")
    parser.add_argument("--readout-items", type=int, default=300,
                        help="training items (after the 1,000 calibration items) the delayed readout is chosen on")
    parser.add_argument("--rate-rows", default="", help="comma-separated indices of RATE_RECIPES to run (default: all)")
    parser.add_argument("--out", default="results/deep_conversion")
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = load_dataset()
    test = dataset.test.head(args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"samples": len(test)}
    parts = args.parts.split(",")
    start = time.perf_counter()
    if "qcfs" in parts:
        report["qcfs"] = qcfs_part(args, dataset, test)
    if "staircase" in parts:
        report["staircase"] = staircase_part(args, dataset, test)
    if "rate" in parts:
        report["rate"] = rate_part(args, dataset, test)
    if "ops" in parts:
        report["ops"] = ops_part(args)
    if "maxpool" in parts:
        report["maxpool"] = maxpool_part(args, dataset, test)
    report["wall_time_s"] = time.perf_counter() - start
    (out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
