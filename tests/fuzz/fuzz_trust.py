"""Fuzzing the trust boundary (issue 29): mutated ``torch.export`` archives, concurrent runs with one run
id, and runs on a failing file system.

* ``pt2``: seeded mutations of a valid program's archive (JSON members mutated, pickled payloads placed
  in records, sample inputs, legacy and unknown members, ``use_pickle`` turned on, dtype codes, sizes,
  strides and offsets that lie, node targets replaced, members dropped or truncated, bytes damaged).
  Each is read with :func:`neurodeploy.convert.pt2_archive.load_program` (what ``--model x.pt2`` does);
  an accepted program's input shape is read and it is rebuilt as a module and run on a zero batch.
  Defects: a traceback, a hang, a payload's marker file written ("code"), a multi-line message.
* ``runs``: CLI processes in a shared results folder: several at once with one run id, and processes
  under a file-size limit (``resource.setrlimit(RLIMIT_FSIZE)`` in the child, so writes fail with EFBIG)
  that start new runs or run a finished one again. Defects: a traceback, a hang, more than one line on
  a refusal, two runs finishing into one folder, a finished run's files changed.

``python tests/fuzz/fuzz_trust.py --pt2 N --runs M`` runs it by hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_pt2  # noqa: E402
from fuzzlib import HANG_S, Hang, byte_damage, deadline, mutate_json  # noqa: E402

from neurodeploy.errors import NeurodeployError  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600


@dataclass
class TrustReport:
    kind: str
    outcomes: Counter = field(default_factory=Counter)
    defects: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, outcome: str, detail: str, name: str) -> None:
        self.outcomes[outcome] += 1
        self.cases.append(f"{name}: {outcome}: {detail[:160]}")
        if outcome in ("traceback", "hang", "code", "multiline", "changed", "mixed"):
            self.defects.append(f"{self.kind} {name}: {outcome}: {detail}")

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"{self.kind:5s} {sum(self.outcomes.values()):4d} cases: {counts}; {self.seconds:.1f} s"


# --- .pt2 archives ----------------------------------------------------------------------------------

_TARGETS = ["torch.ops.aten.sin.default", "torch.ops.aten.linear.default", "torch.load", "builtins.exec",
            "torch.ops.my_ops.op.default", "#ext:op", "_operator.getitem", "math.sqrt", "torch.hub.load", "",
            "_operator.attrgetter", "_operator.call", "_operator.methodcaller"]
_MEMBERS = ["data/weights/model.pt", "data/constants/model.pt", "data/aotinductor/model/x.so", "extra/note.txt",
            "data/executorch/x.pte", "xl_model_weights/model_param_config", "data/sample_inputs/other.pt",
            "models/second.json", "serialized_state_dict.pt", "data/weights/weight_9"]


def _json_member(contents: dict[str, bytes], rng: random.Random) -> str:
    names = [n for n in contents if n.endswith(".json")]
    return rng.choice(names)


def _mutate(rng: random.Random, contents: dict[str, bytes], marker: Path) -> str:
    """One mutation of the archive's members in place; returns its name (marked skipped where an earlier
    mutation removed or broke what it changes)."""
    try:
        return _mutate_once(rng, contents, marker)
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, StopIteration):
        return "skipped"


def _mutate_once(rng: random.Random, contents: dict[str, bytes], marker: Path) -> str:
    root = next(iter(contents)).split("/", 1)[0] + "/"
    choice = rng.choice(["json", "json", "payload", "use_pickle", "constant_object", "member", "drop", "truncate",
                         "tensor_meta", "tensor_meta", "target", "guards", "hostile"])
    if choice == "json":
        name = _json_member(contents, rng)
        contents[name] = mutate_json(rng, json.loads(contents[name])).encode()
    elif choice == "payload":
        name = rng.choice([n for n in contents if "/data/" in n])
        contents[name] = hostile_pt2.payload_bytes(marker, rng.choice(["torch", "pickle"]))
    elif choice == "use_pickle":
        name = root + rng.choice(["data/weights/model_weights_config.json",
                                  "data/constants/model_constants_config.json"])
        config = json.loads(contents[name])
        for meta in config["config"].values():
            meta["use_pickle"] = rng.choice([True, 1, "true", None])
            contents[root + name.split("/")[1] + "/" + name.split("/")[2] + "/" + meta["path_name"]] = \
                hostile_pt2.payload_bytes(marker)
        contents[name] = json.dumps(config).encode()
    elif choice == "constant_object":
        hostile_pt2.HOSTILE[rng.choice(["opaque object constant", "custom object constant",
                                        "pickled tensor constant"])](contents, marker)
    elif choice == "member":
        contents[root + rng.choice(_MEMBERS)] = hostile_pt2.payload_bytes(marker)
    elif choice == "drop":
        del contents[rng.choice(list(contents))]
    elif choice == "truncate":
        name = rng.choice(list(contents))
        contents[name] = contents[name][: rng.randrange(max(1, len(contents[name])))]
    elif choice == "tensor_meta":
        name = root + "data/weights/model_weights_config.json"
        config = json.loads(contents[name])
        meta = rng.choice(list(config["config"].values()))["tensor_meta"]
        key = rng.choice(["dtype", "sizes", "strides", "storage_offset"])
        meta[key] = rng.choice([
            10, 11, 0, 99, -1, "float", None,  # complex, unknown, nonsense dtype codes
            [{"as_int": 10**12}], [{"as_int": -3}], [{"as_int": 10}, {"as_int": 10**9}], [],
            {"as_int": 10**15}, {"as_int": -1}, {"as_expr": "s0"}])
        contents[name] = json.dumps(config).encode()
    elif choice == "target":
        name = root + "models/model.json"
        program = json.loads(contents[name])
        nodes = program["graph_module"]["graph"]["nodes"]
        rng.choice(nodes)["target"] = rng.choice(_TARGETS)
        contents[name] = json.dumps(program).encode()
    elif choice == "guards":
        hostile_pt2.HOSTILE["guards code"](contents, marker)
    else:
        kind = rng.choice(list(hostile_pt2.HOSTILE))
        hostile_pt2.HOSTILE[kind](contents, marker)
        choice = f"hostile:{kind}"
    return choice


def _use(path: Path, dataset) -> None:
    """What ``--model x.pt2`` does before converting: the program read, rebuilt as a module, its shapes
    checked against the data and two items run through it."""
    from neurodeploy.jobs.user_models import exported_model

    exported_model(path, False, dataset)


def fuzz_pt2(count: int, seed: int = 29, workdir: Path | None = None) -> TrustReport:
    from neurodeploy.convert.pt2_archive import load_program
    from neurodeploy.data import load_dataset

    dataset = load_dataset()
    report = TrustReport("pt2")
    rng = random.Random(f"{seed}-pt2")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        good = hostile_pt2.save_program(root / "good.pt2")
        base = hostile_pt2.members(good)
        for index in range(count):
            marker = root / f"marker-{index}"
            contents = copy.copy(base)
            operators = [_mutate(rng, contents, marker) for _ in range(rng.choice([1, 1, 2, 3]))]
            path = root / f"case-{index}.pt2"
            hostile_pt2.write(path, contents)
            if rng.random() < 0.15:
                data, what = byte_damage(rng, path.read_bytes())
                path.write_bytes(data)
                operators.append(f"bytes:{what}")
            outcome, detail = "accepted", ""
            try:
                with deadline(HANG_S):
                    load_program(path)
                    try:
                        _use(path, dataset)
                    except NeurodeployError as err:
                        outcome, detail = "refused in use", str(err)
            except Hang:
                outcome, detail = "hang", f"no answer within {HANG_S} s"
            except NeurodeployError as err:
                message = str(err)
                outcome, detail = ("multiline" if "\n" in message.strip() else "refused"), message
            except Exception as err:  # every other exception is a defect
                outcome, detail = "traceback", f"{type(err).__name__}: {str(err)[:200]}"
            if marker.exists():
                outcome, detail = "code", f"a payload ran ({outcome}: {detail[:120]})"
            report.add(outcome, detail, f"#{index} {operators}")
            path.unlink()
    report.seconds = time.perf_counter() - start
    return report


# --- runs: one run id at once, failing file systems --------------------------------------------------

def _cli(argv: list[str], cwd: Path, file_limit: int | None = None) -> subprocess.Popen:
    def limit():
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    code = "import sys; from neurodeploy.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit)


def _outcome(process: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return "hang", f"no exit within {RUN_TIMEOUT_S} s"
    text = out + err
    lines = [line for line in text.splitlines() if line.strip()]
    if "Traceback" in text:
        return "traceback", text[-400:]
    if process.returncode == 0:
        return ("finished before" if "finished before" in text else "finished"), ""
    if process.returncode == 2:
        errors = [line for line in lines if line.startswith("error")]
        return ("refused" if len(errors) == 1 else "multiline"), (errors or lines or [""])[-1]
    return "traceback", f"exit {process.returncode}: {text[-300:]}"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def fuzz_runs(count: int, seed: int = 29, workdir: Path | None = None) -> TrustReport:
    """``count`` CLI processes: groups of three at once with one run id, and single runs under a file-size
    limit (new runs, and a finished run run again)."""
    report = TrustReport("runs")
    rng = random.Random(f"{seed}-runs")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        model = hostile_pt2.save_program(root / "model.pt2")
        common = ["--model", str(model), "--samples", "20", "-T", "5", "--calibration-samples", "100",
                  "--no-progress", "--results-dir", str(root / "results")]
        first = _cli(["run", *common, "--run-id", "finished"], root)
        outcome, detail = _outcome(first)
        report.add(outcome, detail, "the finished run")
        finished = root / "results" / "finished"
        before = _snapshot(finished) if (finished / "summary.json").exists() else None
        done, group = 1, 0
        while done < count:
            if rng.random() < 0.5 and count - done >= 3:
                run_id = f"together-{group}"
                group += 1
                processes = [_cli(["run", *common, "--run-id", run_id], root) for _ in range(3)]
                outcomes = [_outcome(p) for p in processes]
                for i, (outcome, detail) in enumerate(outcomes):
                    report.add(outcome, detail, f"{run_id} #{i}")
                finishing = [o for o, _ in outcomes if o == "finished"]
                if len(finishing) != 1 and not (finishing == [] and all(o == "refused" for o, _ in outcomes)):
                    report.add("mixed", f"{[o for o, _ in outcomes]}", run_id)
                if finishing and not (root / "results" / run_id / "summary.json").is_file():
                    report.add("changed", "a run said finished but its folder has no summary.json", run_id)
                done += 3
            else:
                limit = rng.choice([512, 2048, 8 << 10, 32 << 10, 128 << 10])
                again = rng.random() < 0.5
                run_id = "finished" if again else f"limited-{done}"
                outcome, detail = _outcome(_cli(["run", *common, "--run-id", run_id], root, file_limit=limit))
                report.add(outcome, detail, f"{run_id} under a {limit}-byte file limit")
                done += 1
            if before is not None and _snapshot(finished) != before:
                report.add("changed", "the finished run's files changed", "finished")
                before = _snapshot(finished)
    report.seconds = time.perf_counter() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pt2", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for report in (fuzz_pt2(args.pt2, args.seed) if args.pt2 else None,
                   fuzz_runs(args.runs, args.seed) if args.runs else None):
        if report is not None:
            print(report.line())
            for line in report.cases if args.verbose else report.defects[:30]:
                print("  ", line)


if __name__ == "__main__":
    main()
