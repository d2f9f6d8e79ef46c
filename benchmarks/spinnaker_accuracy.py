"""Issue 33's table for any model file: accuracy at T of the gpu backend's ideal and pynn profiles (default
settings: no fan-in pass) and of the spinnaker and spinnaker_exp profiles (fan-in pass 256) with the reset values
``--v-reset`` "calibrated" (the mean overshoot, before issue 33) and "refined" (per channel, by simulation), each
against the pynn profile on the same network (what the run's warning compares with). The model is converted once
per fan-in setting, and the ring buffers sized once, instead of once per run as ``neurodeploy run`` does.

    python benchmarks/spinnaker_accuracy.py MODEL_FILE [--samples 300] [-T 100] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.gpu.spinnaker_profile import set_reset_values
from neurodeploy.data import load_dataset
from neurodeploy.evaluate.diagnosis import final_accuracy
from neurodeploy.jobs.config import JobConfig, ModelSettings, RunSettings
from neurodeploy.jobs.events import silent
from neurodeploy.jobs.prepare import BACKEND_CALIBRATION_ITEMS, prepare_network

CELLS = {"spinnaker": "delta", "spinnaker_exp": "exp"}


def measure(model: str, samples: int, T: int, cache_dir: str | None) -> dict:
    dataset = load_dataset()
    config = JobConfig(model=ModelSettings(model=model), run=RunSettings(T=T, samples=samples, progress=False),
                       cache_dir=cache_dir, results_dir="/tmp")
    options = RunOptions(T=T, batch_size=samples, progress=False)
    rows: dict = {"model": model, "items": samples, "T": T}
    plain = prepare_network(config, dataset, [], Path("/tmp"), silent)
    rows["ann_accuracy"] = plain.ann_accuracy
    for profile in ("ideal", "pynn"):
        rows[profile] = final_accuracy(get_backend("gpu", profile=profile).run(
            plain.network, plain.test.images, plain.test.labels, options))
    for profile, cell in CELLS.items():
        backend = get_backend("gpu", profile=profile, v_reset="zero")
        prepared = prepare_network(config, dataset, [backend], Path("/tmp"), silent)
        network, test = prepared.network, prepared.test
        calibration = prepared.input_transform(dataset.train.images[:BACKEND_CALIBRATION_ITEMS])
        entry = {"pynn_same_network": final_accuracy(get_backend("gpu", profile="pynn").run(
            network, test.images, test.labels, options))}
        for mode in ("zero", "calibrated", "refined"):
            start = time.perf_counter()
            set_reset_values(network, calibration, "analog", mode, cell=cell)
            entry[f"{mode}_s"] = time.perf_counter() - start
            entry[mode] = final_accuracy(backend.run(network, test.images, test.labels, options))
        rows[profile] = entry
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("-T", type=int, default=100)
    parser.add_argument("--cache-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = measure(args.model, args.samples, args.T, args.cache_dir)
    text = json.dumps(rows, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
