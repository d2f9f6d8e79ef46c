"""How close the gpu backend's fp32 and int8 precisions are to the exact sum: both against the same simulator in
float64, on the side-by-side benchmark's conv nets (``side_by_side.py``), ideal profile, analog input.

    python benchmarks/int8_exactness.py --nets conv_cifar,vgg11 --items 20 --T 50

Per pair (fp32 vs float64, int8 vs float64, int8 vs fp32): the (item, step, population) spike counts that
differ, the total spikes of each, the largest readout difference and the predictions at T that differ.
Writes ``benchmarks/int8_exactness.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from side_by_side import CASES

from neurodeploy.backends.gpu.binary_ops import DEFAULT_PARTS
from neurodeploy.backends.gpu.compiled import compile_network
from neurodeploy.backends.gpu.engine import simulate_batch
from neurodeploy.convert import convert

VARIANTS = {"float64": (torch.float64, None), "fp32": (torch.float32, None), "int8": (torch.float32, DEFAULT_PARTS)}


def compare(name: str, items: int, T: int) -> dict:
    case, _, _ = CASES[name]
    model, x, calibration, _ = case(items)
    network = convert(model, calibration)
    runs = {}
    with torch.inference_mode():
        for variant, (dtype, parts) in VARIANTS.items():
            compiled = compile_network(network, torch.device("cpu"), dtype, int8_parts=parts)
            readout, counts, *_ = simulate_batch(compiled, x[:items].to(dtype), T, "analog", 1, 0, 0)
            runs[variant] = readout.double().numpy(), counts[..., 0].double().numpy()
    rows = {}
    for a, b in (("fp32", "float64"), ("int8", "float64"), ("int8", "fp32")):
        (readout_a, spikes_a), (readout_b, spikes_b) = runs[a], runs[b]
        rows[f"{a}_vs_{b}"] = {
            "spike_counts_differing": int((spikes_a != spikes_b).sum()), "spike_counts": int(spikes_a.size),
            "total_spikes": [float(spikes_a.sum()), float(spikes_b.sum())],
            "readout_max_abs_difference": float(np.abs(readout_a - readout_b).max()),
            "predictions_differing_at_T": int((readout_a[:, -1].argmax(1) != readout_b[:, -1].argmax(1)).sum())}
    return {"net": name, "items": items, "T": T, **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="conv_cifar,vgg11")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--T", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).with_name("int8_exactness.json")))
    args = parser.parse_args()
    rows = []
    for name in args.nets.split(","):
        row = compare(name, args.items, args.T)
        rows.append(row)
        print(name, "  ".join(f"{key}: {value['spike_counts_differing']}/{value['spike_counts']} counts, "
                              f"{value['predictions_differing_at_T']} predictions"
                              for key, value in row.items() if key.endswith(("float64", "fp32"))), flush=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
