"""sPyNNaker virtual-board mapping cost of the conv MNIST layer structure at several widths, with the
fan-in pass (limit 256), per connector variant of the spinnaker backend: ``fromlist`` (IF_curr_delta,
every synapse of the unrolled convolutions listed and written on the host) and ``local`` (IF_curr_exp,
sPyNNaker's local-only ConvolutionConnector / PoolDenseConnector: kernels instead of synaptic rows).

    python benchmarks/spinnaker_mapping.py                              # 4,8 and 8,16, both variants
    python benchmarks/spinnaker_mapping.py --channels 32,64 --connectors fromlist local   # full width

Weights are random (mapping cost does not depend on them); ring buffers come from the rate model on 32
random images, computed once per width and shared by the variants (not timed). The time of a row is the
backend's ``map`` call: lowering, sPyNNaker's build and its mapping run. Prints one line per width and
variant, the speed-up of each variant over the first, and writes benchmarks/spinnaker_mapping.json.
"""

from __future__ import annotations

import argparse
import json
import os
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

CONNECTORS = ("fromlist", "local")


def conv_mnist_network(channels: tuple[int, int]):
    """The benchmark's network: random conv MNIST after the fan-in pass, ring buffers annotated."""
    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    network = convert(conv_mnist(channels=channels).eval(), x)
    materialize_pooling(network, 256)
    annotate_summed_weights(network, x.numpy(), encoding="if")
    return network


def map_width(network, channels: tuple[int, int], connectors: str) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        report = get_backend("spinnaker", connectors=connectors).map(network, run_dir)
    total = time.perf_counter() - start
    return {"channels": list(channels), "connectors": connectors, "cell": report["cell"],
            "n_synapses": report["n_synapses"], "cores": report["cores"], "neuron_cores": report["neuron_cores"],
            "chips": report["chips"], "projections": report["projections"],
            "build_s": report["build_s"], "map_s": report["map_s"], "total_s": total,
            "s_per_million_synapses": total / report["n_synapses"] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", nargs="+", default=["4,8", "8,16"], help="conv widths as C1,C2")
    parser.add_argument("--connectors", nargs="+", default=list(CONNECTORS), choices=CONNECTORS,
                        help="connector variants to map, in this order (the speed-up is against the first)")
    args = parser.parse_args()
    rows = []
    for spec in args.channels:
        c1, c2 = (int(c) for c in spec.split(","))
        network = conv_mnist_network((c1, c2))
        first = None
        for connectors in args.connectors:
            row = map_width(network, (c1, c2), connectors)
            first = first or row
            row["speedup_vs_" + first["connectors"]] = first["total_s"] / row["total_s"]
            rows.append(row)
            print(f"channels {c1},{c2} {connectors:8s}: {row['n_synapses']:,} synapses, {row['cores']} cores on "
                  f"{row['chips']} chips, mapped in {row['total_s']:.1f} s (build {row['build_s']:.1f} s, sPyNNaker "
                  f"run {row['map_s']:.1f} s; {row['s_per_million_synapses']:.2f} s per million synapses; "
                  f"{first['total_s'] / row['total_s']:.1f}x vs {first['connectors']})", flush=True)
    out = Path(__file__).with_name("spinnaker_mapping.json")
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "load_average_at_end": os.getloadavg(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
