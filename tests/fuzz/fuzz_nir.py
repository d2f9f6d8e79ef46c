"""Fuzzing NIR files (HDF5) at the trust boundary (issue 29): seeded structure mutations of valid graphs,
each read as ``neurodeploy info x.nir`` and ``run --network x.nir`` read it (:func:`neurodeploy.ir.load_network`,
and :func:`neurodeploy.nir.reader.read_nir` with the sinabs and snnTorch import presets); an accepted graph
is simulated for 2 items x 4 steps on the gpu backend.

The bases: the fuzz harness's own networks written by :func:`neurodeploy.nir.writer.write_nir` (conv with
delays, dense with a spike readout), and graphs written with ``nir`` the way other libraries write them (a
recurrent CubaLIF network, a Conv2d / SumPool2d / IF CNN, a nested graph). The mutations act on the HDF5
tree with h5py: objects removed, renamed or duplicated; datasets replaced by other dtypes (complex, text,
integers, booleans, half floats, compound), other shapes (scalars, empty, extra axes, null dataspaces), NaN or
infinite values; soft, external and ancestor links; node types swapped; edges pointing nowhere; declared
sizes of gigabytes in a small compressed file; groups nested hundreds deep; bytes damaged or the file cut.

Defects: a traceback (any exception but neurodeploy's own), a hang, a multi-line message, or a file holding a
soft, external or looping link that was read (every link is refused before any array is read).
``python tests/fuzz/fuzz_nir.py --cases N`` runs it by hand.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import HANG_S, Hang, base_networks, byte_damage, deadline  # noqa: E402

from neurodeploy.errors import NeurodeployError  # noqa: E402

READERS = ("plain", "sinabs", "snntorch")


@dataclass
class NirReport:
    outcomes: Counter = field(default_factory=Counter)
    defects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, outcome: str, detail: str, name: str) -> None:
        self.outcomes[outcome] += 1
        if outcome in ("traceback", "hang", "multiline", "link followed"):
            self.defects.append(f"{name}: {outcome}: {detail}")

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"nir {sum(self.outcomes.values()):4d} cases: {counts}; {self.seconds:.1f} s"


def _foreign_graphs():
    """Graphs as other libraries write them (nir objects), written with ``nir.write``."""
    import nir

    rng = np.random.default_rng(3)
    n = 6
    recurrent = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([4])),
            "fc": nir.Affine(weight=rng.normal(size=(n, 4)).astype(np.float32), bias=np.zeros(n, np.float32)),
            "lif": nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n),
                               v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.ones(n)),
            "rec": nir.Linear(weight=rng.normal(scale=0.3, size=(n, n)).astype(np.float32)),
            "out": nir.Affine(weight=rng.normal(size=(2, n)).astype(np.float32), bias=np.zeros(2, np.float32)),
            "li": nir.LI(tau=np.full(2, 1e-2), r=np.ones(2), v_leak=np.zeros(2)),
            "output": nir.Output(output_type=np.array([2])),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out"), ("out", "li"),
               ("li", "output")],
    )
    cnn = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([1, 6, 6])),
            "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(size=(2, 1, 3, 3)).astype(np.float32),
                               stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2, np.float32)),
            "if1": nir.IF(r=np.ones((2, 6, 6)), v_threshold=np.ones((2, 6, 6))),
            "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
            "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1),
            "fc": nir.Affine(weight=rng.normal(size=(3, 18)).astype(np.float32), bias=np.zeros(3, np.float32)),
            "if2": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "conv"), ("conv", "if1"), ("if1", "pool"), ("pool", "flat"), ("flat", "fc"),
               ("fc", "if2"), ("if2", "output")],
    )
    inner = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([4])),
               "fc": nir.Affine(weight=rng.normal(size=(4, 4)).astype(np.float32), bias=np.zeros(4, np.float32)),
               "if": nir.IF(r=np.ones(4), v_threshold=np.ones(4)),
               "output": nir.Output(output_type=np.array([4]))},
        edges=[("input", "fc"), ("fc", "if"), ("if", "output")])
    nested = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([4])), "block": inner,
               "fc": nir.Affine(weight=rng.normal(size=(2, 4)).astype(np.float32), bias=np.zeros(2, np.float32)),
               "li": nir.LI(tau=np.full(2, 1e-2), r=np.ones(2), v_leak=np.zeros(2)),
               "output": nir.Output(output_type=np.array([2]))},
        edges=[("input", "block"), ("block", "fc"), ("fc", "li"), ("li", "output")])
    return [recurrent, cnn, nested]


def base_files(folder: Path) -> list[Path]:
    """Valid NIR files to mutate (each one is read once before fuzzing, so a base that fails is a bug)."""
    import nir

    from neurodeploy.nir.writer import write_nir

    paths = []
    for k, network in enumerate(base_networks()[:2]):
        paths.append(write_nir(network, folder / f"own_{k}.nir", delays=k == 0))
    for k, graph in enumerate(_foreign_graphs()):
        path = folder / f"foreign_{k}.nir"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nir.write(str(path), graph)
        paths.append(path)
    return paths


# --- mutations of the HDF5 tree ---------------------------------------------------------------------

def _objects(root: h5py.Group) -> list[str]:
    names: list[str] = []
    root.visit(names.append)
    return names


def _datasets(root: h5py.Group) -> list[str]:
    return [n for n in _objects(root) if isinstance(root.get(n, getlink=False), h5py.Dataset)]


def _groups(root: h5py.Group) -> list[str]:
    return [n for n in _objects(root) if isinstance(root.get(n, getlink=False), h5py.Group)]


def _replace(root: h5py.Group, name: str, make) -> None:
    del root[name]
    make(name)


def _new_values(rng: random.Random, old: np.ndarray):
    """A replacement for a dataset: (description, array or callable making it)."""
    shape = old.shape if old.shape else (3,)
    choice = rng.choice(["complex", "text", "int", "bool", "half", "compound", "scalar", "empty", "extra_axis",
                         "nan", "inf", "huge_values", "transposed", "one_less", "bytes"])
    if choice == "complex":
        return choice, (np.ones(shape) + 1j * np.ones(shape)).astype(np.complex64)
    if choice == "text":
        return choice, np.array(["w"] * int(np.prod(shape)), dtype=object).reshape(shape)
    if choice == "int":
        return choice, np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if choice == "bool":
        return choice, np.ones(shape, dtype=bool)
    if choice == "half":
        return choice, np.ones(shape, dtype=np.float16)
    if choice == "compound":
        return choice, np.zeros(shape, dtype=[("a", "<f4"), ("b", "<i4")])
    if choice == "scalar":
        return choice, np.float32(rng.choice([0.0, 1.0, -1.0, 1e30]))
    if choice == "empty":
        return choice, np.zeros((0,), np.float32)
    if choice == "extra_axis":
        return choice, np.ones((*shape, 2), np.float32)
    if choice == "nan":
        return choice, np.full(shape, np.nan, np.float32)
    if choice == "inf":
        return choice, np.full(shape, -np.inf, np.float32)
    if choice == "huge_values":
        return choice, np.full(shape, 3e38, np.float32)
    if choice == "transposed":
        return choice, np.ones(shape[::-1], np.float32)
    if choice == "one_less":
        return choice, np.ones(tuple(max(0, s - 1) for s in shape), np.float32)
    return choice, np.void(b"\x00\x01\x02")


def mutate(rng: random.Random, path: Path, other: Path) -> str:
    """Mutates the NIR file at ``path`` in place with one or two operators; ``other`` is a second file
    that an external link may name. Returns the operators' description."""
    names = []
    with h5py.File(path, "r+") as f:
        for _ in range(rng.choice([1, 1, 1, 2])):
            datasets, groups = _datasets(f), _groups(f)
            op = rng.choice(["remove", "values", "values", "soft_link", "external_link", "ancestor_link",
                             "null_space", "declared_gigabytes", "deep_nesting", "node_type", "edges", "extra",
                             "rename", "duplicate", "text_metadata", "version", "attribute"])
            if op == "remove" and (datasets or groups):
                name = rng.choice(datasets + groups)
                del f[name]
                names.append(f"remove {name}")
            elif op == "values" and datasets:
                name = rng.choice(datasets)
                try:
                    old = f[name][()]
                except Exception:  # a value h5py cannot read back: replace it all the same
                    old = np.zeros(3, np.float32)
                kind, new = _new_values(rng, np.asarray(old))
                del f[name]
                if isinstance(new, np.ndarray) and new.dtype == object:
                    f.create_dataset(name, data=new.astype(str).astype(object), dtype=h5py.string_dtype())
                else:
                    f.create_dataset(name, data=new)
                names.append(f"{kind} {name}")
            elif op == "soft_link" and (datasets or groups):
                name = rng.choice(datasets + groups)
                del f[name]
                f[name] = h5py.SoftLink(rng.choice(["/", "/node", f"/{name}", "/nowhere"]))
                names.append(f"soft link at {name}")
            elif op == "external_link" and datasets:
                name = rng.choice(datasets)
                del f[name]
                f[name] = h5py.ExternalLink(str(other), rng.choice(["/", "/node/nodes"]))
                names.append(f"external link at {name}")
            elif op == "ancestor_link" and groups:
                name = rng.choice(groups)
                f[f"{name}/loop"] = f[name]  # a hard link to its own group: an infinite tree
                names.append(f"hard link loop in {name}")
            elif op == "null_space" and datasets:
                name = rng.choice(datasets)
                del f[name]
                f.create_dataset(name, data=h5py.Empty("f4"))
                names.append(f"null dataspace {name}")
            elif op == "declared_gigabytes" and datasets:
                name = rng.choice(datasets)
                del f[name]
                f.create_dataset(name, shape=(rng.choice([10**9, 10**10]),), dtype="f4", chunks=(1 << 16,),
                                 compression="gzip", fillvalue=0.5)
                names.append(f"declared gigabytes {name}")
            elif op == "deep_nesting" and groups:
                group = f[rng.choice(groups)]
                for k in range(rng.choice([40, 300])):
                    group = group.create_group(f"d{k}")
                names.append("deep nesting")
            elif op == "node_type":
                types = [n for n in datasets if n.endswith("/type")]
                if types:
                    name = rng.choice(types)
                    del f[name]
                    f.create_dataset(name, data=rng.choice(["IF", "LIF", "CubaLIF", "Conv1d", "Delay", "Threshold",
                                                            "NIRGraph", "Scale", "Flatten", "Mystery", ""]))
                    names.append(f"node type at {name}")
            elif op == "edges":
                edges = [n for n in datasets if n.endswith("edges")]
                if edges:
                    name = rng.choice(edges)
                    del f[name]
                    f.create_dataset(name, data=np.array(rng.choice(
                        [[["input", "nowhere"]], [["a", "a"]], [], [["input", "output"]] * 3,
                         [["input"]]]), dtype=object).astype(str).astype(object), dtype=h5py.string_dtype())
                    names.append(f"edges at {name}")
            elif op == "extra" and groups:
                group = f[rng.choice(groups)]
                group.create_dataset(f"extra_{rng.randrange(99)}", data=np.ones(4, np.float32))
                names.append("extra dataset")
            elif op == "rename" and (datasets or groups):
                name = rng.choice(datasets + groups)
                f.move(name, f"{name}_renamed")
                names.append(f"rename {name}")
            elif op == "duplicate" and groups:
                name = rng.choice(groups)
                parent = name.rsplit("/", 1)[0] if "/" in name else ""
                target = f"{parent}/copy_{rng.randrange(99)}" if parent else f"copy_{rng.randrange(99)}"
                if target not in f:
                    f.copy(name, target)
                names.append(f"duplicate {name}")
            elif op == "text_metadata" and groups:
                group = f[rng.choice(groups)]
                meta = group.require_group("metadata")
                key = rng.choice(["dt", "reset", "T", "readout", "delay", "v_init", "neurodeploy"])
                if key in meta:
                    del meta[key]
                meta.create_dataset(key, data=rng.choice(["subtract", "-1", "1e400", "zero", "{}", "nan"]))
                names.append(f"metadata {key}")
            elif op == "version":
                if "version" in f:
                    del f["version"]
                f.create_dataset("version", data=rng.choice(["0.0.1", "99.0", "", "1.0.8"]))
                names.append("version")
            elif op == "attribute" and (datasets or groups):
                f[rng.choice(datasets + groups)].attrs["note"] = np.ones(3)
                names.append("attribute")
    if rng.random() < 0.12:  # bytes damaged or the file cut, on top
        data = path.read_bytes()
        if rng.random() < 0.5:
            damaged, how = byte_damage(rng, data)
        else:
            cut = rng.randrange(len(data))
            damaged, how = data[:cut], f"cut at {cut}"
        path.write_bytes(damaged)
        names.append(how)
    return "; ".join(names) or "unchanged"


def _read(path: Path, reader: str):
    from neurodeploy.ir import load_network
    from neurodeploy.nir.reader import read_nir

    if reader == "plain":
        return load_network(path)
    return read_nir(path, writer=reader)


def _simulate(network) -> None:
    from neurodeploy.backends import RunOptions, get_backend

    x = torch.rand(2, *network.input.shape)
    get_backend("gpu", device="cpu").run(network, x, torch.zeros(2, dtype=torch.long),
                                        RunOptions(T=4, batch_size=2, progress=False))


def fuzz_nir(count: int, seed: int = 31, workdir: Path | None = None) -> NirReport:
    report = NirReport()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        bases = base_files(folder)
        for base in bases:  # every base reads as it is: the mutations alone make the cases
            _simulate(_read(base, "plain" if base.name.startswith("own") else "snntorch"))
        other = folder / "other.nir"
        other.write_bytes(b"\x00" * 64)  # an external link's target that is no HDF5 file at all
        rng = random.Random(seed)
        for index in range(count):
            base = bases[index % len(bases)]
            path = folder / f"case_{index}.nir"
            path.write_bytes(base.read_bytes())
            try:
                how = mutate(rng, path, other)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # h5py refused the mutation
                how = f"mutation refused by h5py ({type(err).__name__})"
            reader = READERS[index % len(READERS)]
            name = f"case {index} ({base.name}, {reader}: {how})"
            try:
                with deadline(HANG_S), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    network = _read(path, reader)
                    _simulate(network)
                if "link" in how:  # every link is refused before any array is read: accepted means followed
                    report.add("link followed", how, name)
                else:
                    report.add("accepted", "", name)
            except Hang:
                report.add("hang", f"no answer in {HANG_S} s", name)
            except NeurodeployError as err:
                text = str(err)
                report.add("multiline" if "\n" in text.strip() else "refused", text, name)
            except Exception:  # anything else reached the user as a traceback
                report.add("traceback", traceback.format_exc(limit=4), name)
    report.seconds = time.perf_counter() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    report = fuzz_nir(args.cases, args.seed)
    print(report.line())
    for defect in report.defects:
        print(defect)
    sys.exit(1 if report.defects else 0)


if __name__ == "__main__":
    main()
