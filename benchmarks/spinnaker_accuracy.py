"""Issue 33's table for a model file or a zoo architecture: accuracy at T of the gpu backend's ideal and pynn
profiles (default settings: no fan-in pass) and of the spinnaker and spinnaker_exp profiles (fan-in pass 256) for
each number of sub-steps K (``--substeps``, ticks per IR step) and each reset mode ``--v-reset`` (calibrated: the
mean overshoot; refined: per channel, by simulation; zero), each against the pynn profile on the same network (what
the run's warning compares with). The model is converted once per fan-in setting, the ring buffers and reset values
set once per K and mode, instead of once per run as ``neurodeploy run`` does.

    python benchmarks/spinnaker_accuracy.py (MODEL_FILE | --arch ARCH [--epochs N] | --zoo NAME --zoo-weights DIR)
        [--samples 300] [-T 100] [--substeps 1,2,4,auto] [--auto-items 256] [--modes calibrated,refined]
        [--profiles spinnaker,spinnaker_exp] [--no-plain] [--diagnose N] [--out FILE.json]

``--zoo NAME``: a torchvision classifier of ``examples/model_zoo.py`` as that example builds it (its refusals'
actions followed) with the weights it trained into ``--zoo-weights`` (its ``--weights`` folder, default recipe;
never trained here), on the digits resized as it resizes them, converted with its settings (percentile 99.99,
granularity neuron, v_init half, 500 calibration items); the fan-in pass fine-tunes on its 3,000 training items.

Each finished entry is printed as one JSON line as it comes (runs take minutes on a loaded CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.backends.gpu.spinnaker_profile import choose_substeps, set_reset_values
from neurodeploy.data import Dataset, Split, load_dataset
from neurodeploy.errors import BackendError
from neurodeploy.evaluate.diagnosis import final_accuracy
from neurodeploy.jobs.config import ConversionSettings, JobConfig, ModelSettings, RunSettings
from neurodeploy.jobs.diagnosis import diagnose, exceeds_limit
from neurodeploy.jobs.events import silent
from neurodeploy.jobs.models import CachedModel
from neurodeploy.jobs.prepare import BACKEND_CALIBRATION_ITEMS, prepare_network
from neurodeploy.passes.ring_buffers import annotate_summed_weights

CELLS = {"spinnaker": "delta", "spinnaker_exp": "exp"}
#: the spinnaker backend's connectors whose board each profile predicts
CONNECTORS = {"spinnaker": "fromlist", "spinnaker_exp": "local"}
#: examples/model_zoo.py, loaded from the repository (examples are no package)
ZOO_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "model_zoo.py"


def zoo_model(name: str, weights: Path) -> tuple[CachedModel, Dataset, ConversionSettings]:
    """The zoo example's ``name`` with the weights its default recipe trained into ``weights``, the digits resized
    as it resizes them (its training items and the test digits) and its conversion settings; SystemExit when the
    weights are not there (nothing is trained here)."""
    spec = importlib.util.spec_from_file_location("model_zoo", ZOO_EXAMPLE)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    args = zoo.parser().parse_args(["--models", name, "--weights", str(weights)])
    path = args.weights / f"{name}-{zoo.recipe(args)}.pt"
    if not path.exists():
        raise SystemExit(f"--zoo {name}: no trained weights {path} (examples/model_zoo.py --train-only trains them)")
    data, size = load_dataset(), 64 if name == "alexnet" else 32
    dataset = Dataset(f"{data.name}-3x{size}x{size}", zoo.resized(data.train.head(args.train_items), size),
                      zoo.resized(data.test, size), data.n_classes)
    model, actions, _ = zoo.trained_model(name, dataset.train, args)
    info = {"arch": name, "input_shape": dataset.input_shape, "n_classes": data.n_classes, "actions": actions}
    conversion = ConversionSettings(percentile=args.percentile, granularity=args.granularity, v_init=args.v_init,
                                    calibration_samples=args.calibration)
    return CachedModel(model, info, f"zoo {name}", {"zoo": name, "weights": path.name}, str(path), "file"), \
        dataset, conversion


def measure(model: ModelSettings, samples: int, T: int, cache_dir: str | None, substeps: list[int],
            modes: list[str], profiles: list[str], plain_profiles: bool = True, dataset: Dataset | None = None,
            user: CachedModel | None = None, conversion: ConversionSettings | None = None,
            diagnose_items: int = 0, auto_items: int = BACKEND_CALIBRATION_ITEMS) -> dict:
    dataset = dataset or load_dataset()
    config = JobConfig(model=model, run=RunSettings(T=T, samples=samples, progress=False),
                       conversion=conversion or ConversionSettings(), cache_dir=cache_dir, results_dir="/tmp")
    options = RunOptions(T=T, batch_size=samples, progress=False)
    rows: dict = {"model": user.label if user else model.model or model.arch,
                  "epochs": None if model.model else model.epochs, "items": samples, "T": T}
    plain = prepare_network(config, dataset, [], Path("/tmp"), silent, user)
    rows["ann_accuracy"] = plain.ann_accuracy
    _show(rows, "ann_accuracy")
    for profile in ("ideal", "pynn") if plain_profiles else ():
        rows[profile] = final_accuracy(get_backend("gpu", profile=profile).run(
            plain.network, plain.test.images, plain.test.labels, options))
        _show(rows, profile)
    reference = None
    for profile in profiles:
        cell = CELLS[profile]
        prepared = prepare_network(config, dataset, [get_backend("gpu", profile=profile, v_reset="zero")],
                                   Path("/tmp"), silent, user)
        network, test = prepared.network, prepared.test
        calibration = prepared.input_transform(dataset.train.images[:BACKEND_CALIBRATION_ITEMS])
        try:  # what the board would be given: the spinnaker backend's lowering and value checks
            get_backend("spinnaker", connectors=CONNECTORS[profile]).check(network)
        except BackendError as err:
            rows[profile] = {"lowering_refuses": str(err)}
            _show(rows[profile], "lowering_refuses", profile)
            continue
        if reference is None:  # the pynn profile ignores what the spinnaker profiles' prepare adds: one run serves all
            reference = final_accuracy(get_backend("gpu", profile="pynn").run(network, test.images, test.labels,
                                                                              options))
        entry = rows[profile] = {"pynn_same_network": reference}
        _show(entry, "pynn_same_network", profile)
        for k in substeps:
            for mode in modes:
                start = time.perf_counter()
                if k == "auto":  # the rule of --substeps auto on labelled training items, then K's test accuracy
                    choice = choose_substeps(network, calibration[:auto_items], dataset.train.labels[:auto_items],
                                             "analog", mode, cell=cell, T=T)
                    entry[f"auto_{mode}_choice"] = choice
                    if f"k{choice['substeps']}_{choice['v_reset']}" in entry:  # measured before: the same network
                        entry[f"auto_{mode}"] = entry[f"k{choice['substeps']}_{choice['v_reset']}"]
                        entry[f"auto_{mode}_prepare_s"] = round(time.perf_counter() - start, 2)
                        _show(entry, f"auto_{mode}", profile)
                        continue
                    key, backend = f"auto_{mode}", get_backend("gpu", profile=profile, substeps=choice["substeps"])
                elif k == 1 and mode == "calibrated_ticks" and "k1_calibrated" in entry:  # in steps is in ticks
                    entry["k1_calibrated_ticks"] = entry["k1_calibrated"]
                    continue
                else:
                    annotate_summed_weights(network, calibration.numpy(), "analog", substeps=k)
                    set_reset_values(network, calibration, "analog", mode, cell=cell, substeps=k)
                    key, backend = f"k{k}_{mode}", get_backend("gpu", profile=profile, substeps=k)
                entry[f"{key}_prepare_s"] = round(time.perf_counter() - start, 2)
                start = time.perf_counter()
                entry[key] = final_accuracy(backend.run(network, test.images, test.labels, options))
                entry[f"{key}_run_s"] = round(time.perf_counter() - start, 2)
                if diagnose_items and exceeds_limit(100 * (reference - entry[key])):
                    # what the run's warning names: the population and the factor (diagnose, the first items)
                    items = Split(test.images[:diagnose_items], test.labels[:diagnose_items])
                    found = diagnose(backend, network, items, options)["cause"] or {}
                    entry[f"{key}_warning"] = {"population": found.get("population"), "factor": found.get(
                        "factor"), "agreement": found.get("agreement"), "diagnosed_items": len(items)}
                _show(entry, key, profile)
    return rows


def _show(entry: dict, key: str, profile: str = "") -> None:
    print(json.dumps({"profile": profile, key: entry[key], **{k: v for k, v in entry.items()
                                                             if k.startswith(key + "_")}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--arch", default="dense_mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--zoo", help="a torchvision classifier trained by examples/model_zoo.py")
    parser.add_argument("--zoo-weights", type=Path, default=Path("results/model_zoo/weights"),
                        help="examples/model_zoo.py's --weights folder")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("-T", type=int, default=100)
    parser.add_argument("--substeps", default="1,2,4", help="numbers of ticks per step, and auto: the rule of "
                        "--substeps auto on --auto-items training items (put it last: a K measured before is reused)")
    parser.add_argument("--auto-items", type=int, default=BACKEND_CALIBRATION_ITEMS,
                        help="labelled training items --substeps auto chooses K on (the backends use %(default)s)")
    parser.add_argument("--modes", default="calibrated")
    parser.add_argument("--profiles", default="spinnaker,spinnaker_exp")
    parser.add_argument("--no-plain", action="store_true", help="skip the ideal and pynn runs without fan-in pass")
    parser.add_argument("--diagnose", type=int, default=0, metavar="N",
                        help="where a profile loses more than the warning's limit, diagnose it on the first N items "
                             "(the population and factor the run's warning names)")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    user = dataset = conversion = None
    if args.zoo:
        user, dataset, conversion = zoo_model(args.zoo, args.zoo_weights)
    model = ModelSettings(model=user.path if user else args.model, arch=args.arch, epochs=args.epochs)
    rows = measure(model, args.samples, args.T, args.cache_dir,
                   [k if k == "auto" else int(k) for k in args.substeps.split(",")], args.modes.split(","),
                   args.profiles.split(","), not args.no_plain, dataset, user, conversion, args.diagnose,
                   args.auto_items)
    text = json.dumps(rows, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
