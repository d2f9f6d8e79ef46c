"""Every graph of nir 1.0.8's own test suite (tests/test_readwrite.py and tests/test_architectures.py of
github.com/neuromorphs/NIR, rebuilt here with the same node types, shapes and edges) either runs on the gpu
backend or is refused in one line (a NeurodeployError): no numpy, h5py or nir traceback (docs/nir.md,
"Every NIR node type")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.errors import NeurodeployError
from neurodeploy.nir import from_nir_graph, read_nir

nir = pytest.importorskip("nir")

pytestmark = pytest.mark.filterwarnings("ignore::neurodeploy.nir.NIRWarning")

RNG = np.random.default_rng(0)


def affine(n_in, n_out):
    return nir.Affine(weight=RNG.normal(size=(n_out, n_in)), bias=RNG.normal(size=n_out))


def linear(n_in, n_out):
    return nir.Linear(weight=RNG.normal(size=(n_out, n_in)))


def lif(tau, threshold, v_leak=None):
    n = len(tau)
    return nir.LIF(tau=np.asarray(tau, float), r=np.ones(n), v_leak=np.zeros(n) if v_leak is None else v_leak,
                   v_reset=np.zeros(n), v_threshold=np.asarray(threshold, float))


def chain(*nodes):
    return nir.NIRGraph.from_list(*nodes)


def readwrite_fixtures():
    """The graphs of nir's tests/test_readwrite.py."""
    ones2, ones3 = np.ones(2), np.ones(3)
    nested = nir.NIRGraph(nodes={
        "a": nir.I(r=np.array([1.0, 1.0])),
        "b": nir.NIRGraph(nodes={"a": nir.Input(np.array([2])), "b": nir.Delay(np.array([1.0, 1.0])),
                                 "c": nir.Output(np.array([2]))}, edges=[("a", "b"), ("b", "c")]),
        "c": nir.Output(np.array([1, 1]))}, edges=[("a", "b"), ("b", "a")], type_check=False)
    return {
        "simple (self-loop on an Affine)": nir.NIRGraph(
            nodes={"input": nir.Input(np.array([2])), "a": affine(2, 2), "output": nir.Output(np.array([2]))},
            edges=[("input", "a"), ("a", "a"), ("a", "output")], type_check=False),
        "nested": nested,
        "conv1d_2 (a 4-D kernel)": chain(nir.Conv2d(input_shape=(100, 100), weight=RNG.normal(size=(1, 2, 3, 3)),
                                                   bias=RNG.normal(size=1), stride=1, padding=0, dilation=1,
                                                   groups=1)),
        "conv1d (skipped in nir's suite; here a Conv1d -> IF chain)": chain(
            nir.Input(np.array([2, 10])),
            nir.Conv1d(input_shape=10, weight=RNG.normal(size=(3, 2, 3)), bias=RNG.normal(size=3), stride=1,
                       padding=1, dilation=1, groups=1),
            nir.IF(r=np.ones((3, 10)), v_threshold=np.ones((3, 10)), v_reset=np.zeros((3, 10)))),
        "integrator": nir.NIRGraph(nodes={"a": affine(2, 2), "b": nir.I(ones2)}, edges=[("a", "b")]),
        "integrate_and_fire": nir.NIRGraph(nodes={"a": affine(2, 2), "b": nir.IF(ones2, np.zeros(2), ones2)},
                                           edges=[("a", "b")]),
        "leaky_integrator": chain(affine(2, 3), nir.LI(ones3, ones3, ones3)),
        "linear": chain(linear(2, 3), nir.LI(ones3, ones3, ones3)),
        "leaky_integrator_and_fire": chain(affine(2, 3), nir.LIF(ones3, ones3, ones3, np.zeros(3), 3 * ones3)),
        "current_based_leaky_integrator": chain(affine(2, 3), nir.CubaLI(ones3, 2 * ones3, ones3, ones3,
                                                                         w_in=2 * ones3)),
        "current_based_leaky_integrator_and_fire": chain(
            affine(2, 3), nir.CubaLIF(ones3, 2 * ones3, ones3, ones3, np.zeros(3), 3 * ones3, w_in=2 * ones3)),
        "scale": chain(nir.Input(np.array([3])), nir.Scale(np.array([1.0, 2.0, 3.0])), nir.Output(np.array([3]))),
        "simple_with_read_write": chain(nir.Input(np.array([3])), affine(3, 3), nir.Output(np.array([3]))),
        "delay (per-neuron delays)": chain(nir.Input(np.array([3])), nir.Delay(np.array([1.0, 2.0, 3.0])),
                                           nir.Output(np.array([3]))),
        "threshold": chain(nir.Input(np.array([3])), nir.Threshold(np.array([1.0, 2.0, 3.0])),
                           nir.Output(np.array([3]))),
        "flatten": chain(nir.Input(np.array([2, 3])),
                         nir.Flatten(start_dim=0, end_dim=1, input_type={"input": np.array([2, 3])}),
                         nir.Output(np.array([6]))),
        "sum_pool_2d": chain(nir.Input(np.array([2, 10, 10])),
                             nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                           padding=np.array([0, 0])), nir.Output(np.array([2, 5, 5]))),
        "avg_pool_2d": chain(nir.Input(np.array([2, 10, 10])),
                             nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                           padding=np.array([0, 0])), nir.Output(np.array([2, 5, 5]))),
    }


def architecture_fixtures():
    """The graphs of nir's tests/test_architectures.py."""
    def branch_1(n_out):
        return chain(affine(2, 3), nir.Delay(np.array([0.5, 0.1, 0.2])), lif([10, 20, 30], [1, 2, 3]),
                     affine(3, n_out))

    def branch_2(n_out):
        return chain(affine(2, 2), lif([10, 20], [1, 2]), affine(2, n_out))

    def split(n_in):
        return {"pre_split": chain(affine(n_in, 3), lif([10, 20, 30], [1, 2, 3])),
                "branch_1": chain(affine(3, 2), lif([10, 20], [1, 2])),
                "branch_2": chain(affine(3, 2), lif([15, 5], [1, 1]))}

    split_edges = [("pre_split", "branch_1"), ("pre_split", "branch_2"), ("branch_1", "junction"),
                   ("branch_2", "junction")]
    return {
        "sequential": chain(affine(2, 3), nir.Delay(np.array([0.5, 0.1, 0.2])), lif([10, 20, 30], [1, 2, 3]),
                            affine(3, 2)),
        "recurrent_on_first_node": nir.NIRGraph(
            nodes={"input": nir.Input(np.array([2])), "affine": affine(2, 2), "integrator": nir.I(RNG.normal(size=2)),
                   "output": nir.Output(np.array([2]))},
            edges=[("input", "affine"), ("affine", "integrator"), ("integrator", "affine"),
                   ("integrator", "output")]),
        "recurrent_on_second_node": nir.NIRGraph(
            nodes={"affine1": affine(2, 2), "affine2": affine(2, 2), "integrator": nir.I(RNG.normal(size=2)),
                   "affine3": affine(2, 2)},
            edges=[("affine1", "affine2"), ("affine2", "integrator"), ("integrator", "affine2"),
                   ("integrator", "affine3")]),
        "two_independent_branches": nir.NIRGraph(nodes={"branch_1": branch_1(2), "branch_2": branch_2(2)},
                                                 edges=[]),
        "two_independent_branches_merging": nir.NIRGraph(
            nodes={"branch_1": branch_1(3), "branch_2": branch_2(3), "junction": lif([5, 2, 1], [1, 1, 1])},
            edges=[("branch_1", "junction"), ("branch_2", "junction")]),
        "merge_and_split_single_output": nir.NIRGraph(
            nodes={**split(2),
                   "junction": nir.Affine(weight=np.array([[2, 0], [1, 3], [4, 1]]), bias=np.array([0, 1]))},
            edges=split_edges, type_check=False),
        "merge_and_split_different_output_type": nir.NIRGraph(
            nodes={**split(3), "junction": affine(2, 2)}, edges=split_edges, type_check=False),
        "residual": nir.NIRGraph(
            nodes={"a": affine(2, 2), "b": lif([10, 20], [1, 2]), "c": affine(2, 2), "d": lif([10, 20], [1, 2]),
                   "e": affine(2, 2), "f": lif([15, 5], [1, 1])},
            edges=[("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "e"), ("e", "f")]),
        "complex (a 2-D bias)": nir.NIRGraph(
            nodes={"a": nir.Affine(weight=np.array([[1], [2], [3]]), bias=np.array([[0, 0, 0]])),
                   "b": lif([10, 20, 30], [1, 2, 3]), "c": lif([5, 20, 1], [1, 1, 1]),
                   "d": nir.Affine(weight=np.array([[1, 3], [2, 3], [1, 4]]).T, bias=np.array([0, 0])),
                   "e": nir.Affine(weight=np.array([[1, 3], [2, 3], [1, 4]]).T, bias=np.array([0, 0])),
                   "f": nir.Affine(weight=np.array([[1, 3], [1, 4]]), bias=np.array([0, 0]))},
            edges=[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("c", "e"), ("d", "f"), ("e", "f")],
            type_check=False),
    }


FIXTURES = {**readwrite_fixtures(), **architecture_fixtures()}
#: what the importer does with each (the row of docs/nir.md it exercises)
REFUSED = {
    "simple (self-loop on an Affine)": "a cycle through no neuron node",
    "nested": "is not reached from the Input",  # its I node has no input
    "integrate_and_fire": "thresholds must be positive",  # positional arguments give v_threshold = 0
    "leaky_integrator_and_fire": "thresholds must be positive",
    "current_based_leaky_integrator_and_fire": "thresholds must be positive",
    "delay (per-neuron delays)": "delays differ between neurons",
    "sequential": "delays differ between neurons",
    "recurrent_on_first_node": "the membrane readout feeds other nodes",
    "recurrent_on_second_node": "a non-spiking node is read only as the readout",
    "two_independent_branches": "one Input and one Output",
    "two_independent_branches_merging": "one Input and one Output",
    "merge_and_split_single_output": "a bias of shape [2] on an output of shape [3]",  # the fixture's own mismatch
}


def _outcome(graph, tmp_path, name):
    """("ran", steps) or ("refused", message); anything else propagates (a test failure)."""
    try:
        path = tmp_path / "g.nir"
        nir.write(path, graph)
        network = read_nir(path, dt=1e-3)  # the file path: the checked HDF5 reader too
    except NeurodeployError as err:
        return "refused", str(err)
    except (TypeError, ValueError):  # nir.write cannot store this graph: read it from memory
        try:
            network = from_nir_graph(graph, dt=1e-3)
        except NeurodeployError as err:
            return "refused", str(err)
    x = torch.as_tensor(RNG.random((2, *network.input.shape)), dtype=torch.float32)
    result = get_backend("gpu", device="cpu").run(network, x, torch.zeros(2, dtype=torch.long),
                                                  RunOptions(T=5, batch_size=2, progress=False))
    return "ran", result.readout.shape[1]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_fixture_runs_or_is_refused_in_one_line(name, tmp_path):
    kind, detail = _outcome(FIXTURES[name], tmp_path, name)
    if name in REFUSED:
        assert kind == "refused" and REFUSED[name] in detail and "\n" not in detail, detail
    else:
        assert (kind, detail) == ("ran", 5), detail


def test_every_node_type_of_nir_is_covered():
    """Each node class nir 1.0.8 defines appears in a fixture (so each has a tested outcome)."""
    import inspect

    classes = {name for name, obj in inspect.getmembers(nir.ir, inspect.isclass)
               if issubclass(obj, nir.NIRNode) and obj is not nir.NIRNode}

    def kinds(graph):
        found = {type(graph).__name__}
        for node in graph.nodes.values():
            found |= kinds(node) if isinstance(node, nir.NIRGraph) else {type(node).__name__}
        return found

    used = set().union(*(kinds(g) for g in FIXTURES.values()))
    assert classes - used <= {"Identity"}, classes - used  # nir's Identity is never written to a file


def _graph(middle: dict, shape=(3,)):
    names = list(middle)
    edges = [("input", names[0]), *zip(names, names[1:], strict=False), (names[-1], "output")]
    return nir.NIRGraph(nodes={"input": nir.Input(np.array(shape)), **middle, "output": nir.Output(np.array([2]))},
                        edges=edges, type_check=False)


def _set(node, **values):
    """A node with parameters nir's constructor would have refused (as a hand-edited graph has them)."""
    for key, value in values.items():
        object.__setattr__(node, key, value)
    return node


ONES = np.ones(2)
MALFORMED = {
    "tau of another shape": (lambda: _graph({"w": nir.Linear(np.ones((2, 3))), "l": _set(
        nir.LIF(tau=ONES, r=ONES, v_leak=ONES * 0, v_threshold=ONES), tau=np.ones(5))}), "does not fit the signal"),
    "a 1-D Affine weight": (lambda: _graph({"w": _set(nir.Affine(np.ones((2, 3)), ONES), weight=np.ones(3)),
                                            "l": nir.IF(r=ONES, v_threshold=ONES)}), r"Affine weight \(3,\)"),
    "a 3-D Conv2d weight": (lambda: _graph({"c": _set(nir.Conv2d(
        input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
        bias=np.zeros(2)), weight=np.ones((2, 3, 3)))}, (1, 4, 4)), "4-d"),
    "NaN weights": (lambda: _graph({"w": nir.Linear(np.full((2, 3), np.nan)), "l": nir.IF(r=ONES, v_threshold=ONES)}),
                    "NaN"),
    "a negative tau": (lambda: _graph({"w": nir.Linear(np.ones((2, 3))), "l": nir.LIF(
        tau=-ONES, r=ONES, v_leak=ONES * 0, v_threshold=ONES)}), "positive finite time constants"),
    "a pooling kernel larger than its input": (lambda: _graph({"p": nir.SumPool2d(
        kernel_size=np.array([9, 9]), stride=np.array([1, 1]), padding=np.array([0, 0]))}, (1, 4, 4)), "too small"),
    "a NaN delay": (lambda: _graph({"d": nir.Delay(np.full(3, np.nan))}), "not whole numbers"),
    "an input of 1e10 neurons": (lambda: _graph({"s": nir.Scale(np.ones(1))}, (100_000, 100_000)), "at most"),
    "an empty Flatten dim": (lambda: _graph({"f": _set(nir.Flatten(
        input_type={"input": np.array([3])}, start_dim=0, end_dim=-1), start_dim=np.array([]))}), "malformed"),
    "text for r": (lambda: _graph({"w": nir.Linear(np.ones((2, 3))), "l": _set(
        nir.IF(r=ONES, v_threshold=ONES), r="x")}), "not numbers"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_graphs_are_one_line_refusals(name):
    make, needle = MALFORMED[name]
    with pytest.raises(NeurodeployError, match=needle) as refused:
        from_nir_graph(make(), dt=1e-3)
    assert "\n" not in str(refused.value)
