"""Issue 33's table for a model file or a zoo architecture: accuracy at T of the gpu backend's ideal and pynn
profiles (default settings: no fan-in pass) and of the spinnaker and spinnaker_exp profiles (fan-in pass 256) for
each number of sub-steps K (``--substeps``, ticks per IR step) and each reset mode ``--v-reset`` (calibrated: the
mean overshoot; refined: per channel, by simulation; zero), each against the pynn profile on the same network (what
the run's warning compares with). The model is converted once per fan-in setting, the ring buffers and reset values
set once per K and mode, instead of once per run as ``neurodeploy run`` does.

    python benchmarks/spinnaker_accuracy.py (MODEL_FILE | --arch ARCH [--epochs N]) [--samples 300] [-T 100]
        [--substeps 1,2,4] [--modes calibrated,refined] [--profiles spinnaker,spinnaker_exp] [--no-plain]
        [--out FILE.json]

Each finished entry is printed as one JSON line as it comes (runs take minutes on a loaded CPU).
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
from neurodeploy.passes.ring_buffers import annotate_summed_weights

CELLS = {"spinnaker": "delta", "spinnaker_exp": "exp"}


def measure(model: ModelSettings, samples: int, T: int, cache_dir: str | None, substeps: list[int],
            modes: list[str], profiles: list[str], plain_profiles: bool = True) -> dict:
    dataset = load_dataset()
    config = JobConfig(model=model, run=RunSettings(T=T, samples=samples, progress=False),
                       cache_dir=cache_dir, results_dir="/tmp")
    options = RunOptions(T=T, batch_size=samples, progress=False)
    rows: dict = {"model": model.model or model.arch, "epochs": None if model.model else model.epochs,
                  "items": samples, "T": T}
    plain = prepare_network(config, dataset, [], Path("/tmp"), silent)
    rows["ann_accuracy"] = plain.ann_accuracy
    _show(rows, "ann_accuracy")
    for profile in ("ideal", "pynn") if plain_profiles else ():
        rows[profile] = final_accuracy(get_backend("gpu", profile=profile).run(
            plain.network, plain.test.images, plain.test.labels, options))
        _show(rows, profile)
    for profile in profiles:
        cell = CELLS[profile]
        prepared = prepare_network(config, dataset, [get_backend("gpu", profile=profile, v_reset="zero")],
                                   Path("/tmp"), silent)
        network, test = prepared.network, prepared.test
        calibration = prepared.input_transform(dataset.train.images[:BACKEND_CALIBRATION_ITEMS])
        entry = rows[profile] = {"pynn_same_network": final_accuracy(get_backend("gpu", profile="pynn").run(
            network, test.images, test.labels, options))}
        _show(entry, "pynn_same_network", profile)
        for k in substeps:
            annotate_summed_weights(network, calibration.numpy(), "analog", substeps=k)
            backend = get_backend("gpu", profile=profile, substeps=k)
            for mode in modes:
                start = time.perf_counter()
                set_reset_values(network, calibration, "analog", mode, cell=cell, substeps=k)
                entry[f"k{k}_{mode}_prepare_s"] = round(time.perf_counter() - start, 2)
                start = time.perf_counter()
                entry[f"k{k}_{mode}"] = final_accuracy(backend.run(network, test.images, test.labels, options))
                entry[f"k{k}_{mode}_run_s"] = round(time.perf_counter() - start, 2)
                _show(entry, f"k{k}_{mode}", profile)
    return rows


def _show(entry: dict, key: str, profile: str = "") -> None:
    print(json.dumps({"profile": profile, key: entry[key], **{k: v for k, v in entry.items()
                                                             if k.startswith(key + "_")}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--arch", default="dense_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("-T", type=int, default=100)
    parser.add_argument("--substeps", default="1,2,4")
    parser.add_argument("--modes", default="calibrated")
    parser.add_argument("--profiles", default="spinnaker,spinnaker_exp")
    parser.add_argument("--no-plain", action="store_true", help="skip the ideal and pynn runs without fan-in pass")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    model = ModelSettings(model=args.model, arch=args.arch, epochs=args.epochs)
    rows = measure(model, args.samples, args.T, args.cache_dir, [int(k) for k in args.substeps.split(",")],
                   args.modes.split(","), args.profiles.split(","), not args.no_plain)
    text = json.dumps(rows, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
