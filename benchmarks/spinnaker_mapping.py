"""sPyNNaker virtual-board mapping cost of the conv MNIST layer structure at several widths, with the
fan-in pass (limit 256), as seconds per million synapses (sPyNNaker builds every synaptic row of the
unrolled convolutions on the host).

    python benchmarks/spinnaker_mapping.py                       # channels 4,8 and 8,16
    python benchmarks/spinnaker_mapping.py --channels 32,64      # the full width (takes long)

Weights are random (mapping cost does not depend on them); ring buffers come from the rate model on
32 random images. Prints one line per width and writes benchmarks/spinnaker_mapping.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from neurodeploy.backends import get_backend
from neurodeploy.convert import convert
from neurodeploy.passes.fan_in import materialize_pooling
from neurodeploy.passes.ring_buffers import annotate_summed_weights
from neurodeploy.train.zoo import conv_mnist


def map_width(channels: tuple[int, int]) -> dict:
    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    network = convert(conv_mnist(channels=channels).eval(), x)
    materialize_pooling(network, 256)
    annotate_summed_weights(network, x.numpy(), encoding="if")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        report = get_backend("spinnaker").map(network, run_dir)
    total = time.perf_counter() - start
    return {"channels": list(channels), "n_synapses": report["n_synapses"], "cores": report["cores"],
            "chips": report["chips"], "build_s": report["build_s"], "map_s": report["map_s"], "total_s": total,
            "s_per_million_synapses": total / report["n_synapses"] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", nargs="+", default=["4,8", "8,16"], help="conv widths as C1,C2")
    args = parser.parse_args()
    rows = []
    for spec in args.channels:
        c1, c2 = (int(c) for c in spec.split(","))
        row = map_width((c1, c2))
        rows.append(row)
        print(f"channels {c1},{c2}: {row['n_synapses']:,} synapses, {row['cores']} cores on {row['chips']} chips, "
              f"mapped in {row['total_s']:.1f} s ({row['s_per_million_synapses']:.1f} s per million synapses)")
    out = Path(__file__).with_name("spinnaker_mapping.json")
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
