"""Graphs written elsewhere (sinabs, snnTorch, Norse, Rockpool, ...), read with NIR's semantics and the
caller's import options; each assumption is a :class:`~neurodeploy.nir.vocabulary.NIRWarning`
(docs/nir.md, "Import")."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import Network
from neurodeploy.ir.ops import AvgPool2d, Conv2d, Dense, Flatten, Op, Scale, chain_out_shape
from neurodeploy.ir.population import NeuronSpec, Population
from neurodeploy.nir.vocabulary import (
    NIR_RESETS,
    ImportOptions,
    NIRError,
    NIRUnsupportedError,
    _channel_form,
    _Names,
    _nir,
    _scalar,
    _warn,
)

_NEURONS = ("IF", "LIF", "I", "LI")
_OPS = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale", "Delay")
_REFUSED = {
    "CubaLIF": "its synaptic current state (tau_syn) has no IR equivalent",
    "CubaLI": "its synaptic current state (tau_syn) has no IR equivalent",
    "Threshold": "a stateless threshold (no membrane) has no IR equivalent",
    "NIRGraph": "nested graphs (e.g. snnTorch's recurrent RLeaky/RSynaptic) are recurrent",
}


def _pair(value) -> tuple[int, int]:
    flat = [int(v) for v in np.ravel(value)]
    return (flat[0], flat[0]) if len(flat) == 1 else (flat[0], flat[1])


class _ForeignReader:
    def __init__(self, graph, options: ImportOptions):
        self.nir = _nir()
        self.graph = graph
        self.notes: list[str] = []
        self.options = options
        resolved = options.resolved()
        meta = graph.metadata if isinstance(graph.metadata, dict) else {}
        # the graph's own statement wins over the import options, said once
        stated_dt = _scalar(meta.get("dt")) if "dt" in meta else None
        if isinstance(stated_dt, int | float) and not isinstance(stated_dt, bool) and stated_dt > 0:
            if options.dt is not None and float(options.dt) != float(stated_dt):
                self.note(f"the graph's metadata states dt = {stated_dt} s, which overrides the dt = {options.dt} s "
                          "given")
            resolved["dt"] = float(stated_dt)
        stated_reset = _scalar(meta.get("reset")) if "reset" in meta else None
        if stated_reset in NIR_RESETS:
            if options.reset is not None and options.reset != stated_reset:
                self.note(f"the graph's metadata states reset {stated_reset!r}, which overrides the reset "
                          f"{options.reset!r} given")
            resolved["reset"] = stated_reset
        self.resolved = resolved
        self.dt = resolved["dt"]
        self.reset = resolved["reset"]
        self.leak = resolved["leak"]
        self.kind = {name: type(node).__name__ for name, node in graph.nodes.items()}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            _warn(text)

    def _dt(self, name: str, what: str) -> float:
        if self.dt is None:
            raise NIRError(f"node {name!r}: {what} needs the time step, which this graph does not state: give it "
                           "(--nir-dt SECONDS, or --nir-from snntorch|sinabs|norse; Python: dt=...)")
        return float(self.dt)

    def network(self) -> Network:
        graph = self.graph
        for name in graph.nodes:
            kind = self.kind[name]
            if kind in _REFUSED:
                raise NIRUnsupportedError(f"node {name!r} ({kind}): {_REFUSED[kind]}")
            if kind not in _NEURONS + _OPS + ("Input", "Output"):
                raise NIRUnsupportedError(f"node {name!r}: NIR primitive {kind} is not supported")
        for a, b in graph.edges:
            for end in (a, b):
                if end not in graph.nodes:
                    raise NIRUnsupportedError(f"edge {a!r} -> {b!r} names {end!r}, which is not a node of this graph "
                                              "(sub-graph ports are not supported)")
        digraph = nx.DiGraph()
        digraph.add_nodes_from(graph.nodes)
        digraph.add_edges_from(graph.edges)
        if not nx.is_directed_acyclic_graph(digraph):
            cycle = " -> ".join(a for a, _ in nx.find_cycle(digraph))
            raise NIRUnsupportedError(f"recurrence through nodes {cycle}: the IR is feed-forward")
        inputs = [n for n in graph.nodes if self.kind[n] == "Input"]
        outputs = [n for n in graph.nodes if self.kind[n] == "Output"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRUnsupportedError(f"the IR takes one Input and one Output node; this graph has {inputs} and "
                                      f"{outputs}")
        self.digraph = digraph
        self.input, self.output = inputs[0], outputs[0]
        order = list(nx.lexicographical_topological_sort(digraph))
        self._shapes(order)
        return self._build(order)

    # shapes and op translation

    def _shapes(self, order: list[str]) -> None:
        nir = self.nir
        self.in_shape: dict[str, tuple[int, ...]] = {}
        self.out_shape: dict[str, tuple[int, ...]] = {}
        self.ops: dict[str, list[Op]] = {}
        self.bias: dict[str, np.ndarray | None] = {}
        self.delay: dict[str, int] = {}
        for name in order:
            node = self.graph.nodes[name]
            preds = list(self.digraph.predecessors(name))
            if name == self.input:
                shape = tuple(int(s) for s in np.ravel(node.input_type["input"]))
                self.in_shape[name] = self.out_shape[name] = _unit_height(shape)
                continue
            if not preds:
                raise NIRUnsupportedError(f"node {name!r} has no input")
            shapes = {self.out_shape[p] for p in preds}
            if len(shapes) != 1:
                raise NIRUnsupportedError(f"node {name!r} sums inputs of different shapes {sorted(shapes)}")
            shape = shapes.pop()
            self.in_shape[name] = shape
            kind = self.kind[name]
            if kind in _NEURONS or kind == "Output":
                self.out_shape[name] = shape
                continue
            ops, bias = self._op(name, node, shape, nir)
            self.ops[name] = ops
            out = chain_out_shape(ops, shape) if ops else shape
            self.out_shape[name] = out
            self.bias[name] = None if bias is None else np.broadcast_to(bias, out).astype(np.float64)

    def _op(self, name: str, node, shape: tuple[int, ...], nir) -> tuple[list[Op], np.ndarray | None]:
        kind = self.kind[name]
        try:
            if kind in ("Affine", "Linear"):
                weight = np.asarray(node.weight, np.float32)
                if weight.ndim != 2 or len(shape) != 1:
                    raise NIRUnsupportedError(f"node {name!r}: {kind} weight {weight.shape} on input {shape}")
                bias = np.asarray(node.bias, np.float64) if kind == "Affine" else None
                return [Dense(weight)], bias
            if kind in ("Conv2d", "Conv1d"):
                weight = np.asarray(node.weight, np.float32)
                one_d = kind == "Conv1d"
                if one_d:
                    weight = weight[:, :, None, :]
                kernel = weight.shape[2:]
                dilation = (1, int(np.ravel(node.dilation)[0])) if one_d else _pair(node.dilation)
                stride = (1, int(np.ravel(node.stride)[0])) if one_d else _pair(node.stride)
                padding = node.padding
                if isinstance(padding, (str, bytes)):
                    padding = padding.decode() if isinstance(padding, bytes) else padding
                    if padding == "valid":
                        padding = (0, 0)
                    elif padding == "same" and stride == (1, 1) and all(k % 2 for k in kernel):
                        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
                    else:
                        raise NIRUnsupportedError(f"node {name!r}: padding {padding!r} with stride {stride}")
                else:
                    padding = (0, int(np.ravel(padding)[0])) if one_d else _pair(padding)
                bias = np.asarray(node.bias, np.float64).reshape(-1)
                op = Conv2d(weight, stride, padding, dilation, int(np.ravel(node.groups)[0]))
                out = op.out_shape(shape)
                return [op], bias.reshape((-1, 1, 1)) * np.ones(out) if np.any(bias != 0) else None
            if kind in ("AvgPool2d", "SumPool2d"):
                pool = AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
                if kind == "AvgPool2d":
                    self.note("AvgPool2d is read with zero padding counted in the divisor (PyTorch's default)")
                    return [pool], None
                return [pool, Scale(np.float32(pool.kernel[0] * pool.kernel[1]))], None
            if kind == "Flatten":
                start, end = int(node.start_dim), int(node.end_dim)
                n = len(shape)
                if start % max(n, 1) == 0 and end % max(n, 1) == (n - 1) % max(n, 1):
                    return ([Flatten()] if n > 1 else []), None
                raise NIRUnsupportedError(f"node {name!r}: a partial Flatten (dims {start}..{end} of {shape})")
            if kind == "Scale":
                form = _channel_form(_fit(node.scale, shape).astype(np.float32), shape)
                if form is None:
                    raise NIRUnsupportedError(f"node {name!r}: a per-neuron Scale on a {shape} signal")
                return [Scale(form)], None
            if kind == "Delay":
                delays = np.asarray(node.delay, np.float64)
                exact = delays / self._dt(name, "a Delay")
                steps = np.round(exact)
                if not np.allclose(exact, steps, rtol=1e-5, atol=0) or not np.all(steps == steps.reshape(-1)[0]):
                    raise NIRUnsupportedError(f"node {name!r}: delays {np.unique(delays)} are not one whole number "
                                              f"of steps of {self.dt} s")
                self.delay[name] = int(round(float(steps.reshape(-1)[0])))
                return [], None
        except NIRError:
            raise
        except NeurodeployError as err:
            raise NIRUnsupportedError(f"node {name!r} ({kind}): {err}") from None
        raise NIRUnsupportedError(f"node {name!r}: {kind}")

    # populations and projections

    def _gain_and_neuron(self, name: str, node, shape, spiking: bool):
        """(input gain per neuron or None, NeuronSpec) of a neuron node."""
        kind = self.kind[name]
        r = _fit(node.r, shape)
        leak_tau = None
        if kind in ("LIF", "LI"):
            v_leak = _fit(node.v_leak, shape)
            if np.any(v_leak != 0):
                raise NIRUnsupportedError(f"node {name!r} ({kind}): v_leak != 0 is not supported")
            tau = _fit(node.tau, shape)
            if np.all(np.isinf(tau)):
                if not np.all(np.isinf(r)):
                    raise NIRUnsupportedError(f"node {name!r}: tau = inf with finite r passes no input")
                self.note(f"node {name!r}: tau = inf with r = inf (snnTorch's beta = 1) is read as a non-leaky "
                          "neuron with input gain 1 (r = tau / dt)")
                gain = np.ones(shape)
            else:
                if not np.all(tau == tau.reshape(-1)[0]):
                    raise NIRUnsupportedError(f"node {name!r}: per-neuron tau (the IR has one leak per population)")
                dt = self._dt(name, f"a leaky {kind}")
                ratio = dt / float(tau.reshape(-1)[0])
                if self.leak == "exp":
                    leak_tau = 1.0 / ratio
                else:
                    if not ratio < 1:
                        raise NIRUnsupportedError(f"node {name!r}: dt / tau = {ratio} >= 1 has no Euler decay")
                    leak_tau = -1.0 / math.log1p(-ratio)
                gain = r * ratio
                self.note(f"leaky nodes: decay per step {'exp(-dt/tau)' if self.leak == 'exp' else '1 - dt/tau'} "
                          f"with dt = {dt} s, input gain r * dt / tau")
        else:
            gain = r
        if np.allclose(gain, 1.0, rtol=1e-6, atol=0):
            gain = None
        neuron = NeuronSpec(threshold=1.0, leak_tau=leak_tau, readout="spikes" if spiking else "membrane")
        if spiking:
            theta = _fit(node.v_threshold, shape)
            form = _channel_form(theta.astype(np.float32), shape)
            if form is None:
                raise NIRUnsupportedError(f"node {name!r}: thresholds vary inside a channel of a {shape} population")
            neuron.threshold = float(form) if form.ndim == 0 else form
            v_reset = np.asarray(node.v_reset, np.float64) if node.v_reset is not None else np.zeros(1)
            if self.reset == "zero":
                if np.any(v_reset != 0):
                    raise NIRUnsupportedError(f"node {name!r}: v_reset != 0 (the IR resets to 0 or subtracts)")
                neuron.reset = "zero"
                if self.options.reset is None and self.options.writer is None:
                    self.note("spiking nodes follow NIR's semantics: reset to v_reset = 0 (nothing says otherwise; "
                              "sinabs and snnTorch graphs mean reset by subtraction: --nir-reset subtract or "
                              "--nir-from sinabs|snntorch)")
            else:
                neuron.reset = "subtract"
                self.note("spiking nodes reset by subtraction (v -= v_threshold; the import options), not to NIR's "
                          "v_reset")
            self.note("spikes are emitted at v >= v_threshold (NIR says v > v_threshold; snnTorch uses >, sinabs >=)")
        return gain, neuron

    def _build(self, order: list[str]) -> Network:
        graph, digraph = self.graph, self.digraph
        populations: dict[str, str] = {}  # node -> population name
        names = _Names(reserved=("input",))
        network = Network()
        network.add_population(Population("input", self.in_shape[self.input], "input"))
        populations[self.input] = "input"
        output_preds = list(digraph.predecessors(self.output))
        direct_output = (len(output_preds) == 1 and self.kind[output_preds[0]] in _NEURONS)
        gains: dict[str, np.ndarray | None] = {}
        amplitude: dict[str, np.ndarray] = {}
        for name in order:
            kind = self.kind[name]
            if kind not in _NEURONS:
                continue
            succs = list(digraph.successors(name))
            is_output = direct_output and output_preds[0] == name
            spiking = kind in ("IF", "LIF")
            if not spiking and not is_output:
                raise NIRUnsupportedError(f"node {name!r} ({kind}): a non-spiking node is read only as the readout "
                                          "right before the Output")
            if is_output and len(succs) > 1:
                raise NIRUnsupportedError(f"node {name!r}: the readout population feeds other nodes")
            shape = self.in_shape[name]
            gain, neuron = self._gain_and_neuron(name, graph.nodes[name], shape, spiking)
            gains[name] = gain
            pop_name = names.take(name)
            network.add_population(Population(pop_name, shape, "output" if is_output else "hidden", neuron))
            populations[name] = pop_name
            theta = np.asarray(neuron.threshold, np.float32)
            if spiking and np.any(theta != 1):
                amplitude[name] = theta
        if not direct_output:
            out_name = names.take("output")
            network.add_population(Population(out_name, self.in_shape[self.output], "output",
                                               NeuronSpec(readout="membrane")))
            populations[self.output] = out_name
            self.note("the Output node receives a current: it is read as a membrane readout (the current summed "
                      "over steps)")
        biases: dict[str, np.ndarray] = {}
        delays = set()
        for source in [n for n in order if n in populations and n != self.output]:
            for path in self._paths(source, populations):
                target = path[-1]
                ops = []
                if source in amplitude:
                    theta = amplitude[source]
                    ops.append(Scale((1.0 / theta).astype(np.float32)))
                for node in path[1:-1]:
                    ops += self.ops[node]
                delays.add(sum(self.delay.get(node, 0) for node in path[1:-1]))
                gain = gains.get(target)
                if gain is not None:
                    form = _channel_form(gain.astype(np.float32), self.in_shape[target])
                    if form is None:
                        raise NIRUnsupportedError(f"node {target!r}: an input gain (r) that varies inside a channel")
                    ops.append(Scale(form))
                network.connect(populations[source], populations[target], ops)
        for name in order:
            if self.bias.get(name) is None:
                continue
            for path in self._paths(name, populations):
                target = path[-1]
                contribution = _push_bias(self.bias[name], [op for n in path[1:-1] for op in self.ops[n]])
                gain = gains.get(target)
                if gain is not None:
                    contribution = contribution * gain
                key = populations[target]
                biases[key] = contribution if key not in biases else biases[key] + contribution
        for key, bias in biases.items():
            pop = network.populations[key]
            compact = _channel_form(bias, pop.shape)
            pop.bias = (compact if compact is not None and compact.ndim == 1 and len(pop.shape) > 1 else
                        np.broadcast_to(bias, pop.shape)).astype(np.float32)
        if len(delays) > 1:
            raise NIRUnsupportedError(f"projections with different delays ({sorted(delays)} steps): the IR has one "
                                      "delay profile for the whole network")
        delay = delays.pop() if delays else 0
        if delay > 1:
            raise NIRUnsupportedError(f"a delay of {delay} steps per projection (the IR knows 0 and 1)")
        network.metadata = {"source": "nir", "nir_import": {"options": self.resolved, "notes": list(self.notes),
                                                            "delay_steps": delay}}
        if delay:
            self.note("every projection is delayed by one step: simulate with profile 'pynn'")
            network.metadata["nir_import"]["notes"] = list(self.notes)
        try:
            return network.validate()
        except NeurodeployError as err:
            raise NIRError(f"the graph's network is invalid: {err}") from None

    def _paths(self, start: str, populations: dict) -> list[list[str]]:
        """Paths from ``start`` through op nodes to the next population nodes (or the Output)."""
        paths, stack = [], [[start]]
        while stack:
            path = stack.pop()
            for nxt in self.digraph.successors(path[-1]):
                if nxt in populations:
                    paths.append(path + [nxt])
                elif self.kind[nxt] == "Output":
                    continue  # a population feeding the Output directly is the readout itself
                else:
                    stack.append(path + [nxt])
        return sorted(paths)


def _fit(value, shape: tuple[int, ...]) -> np.ndarray:
    """A node parameter as a float64 array of the signal's ``shape`` (a (C, N) parameter of a Conv1d-shaped
    signal is reshaped to (C, 1, N); a scalar or (1,) broadcasts)."""
    array = np.asarray(value, np.float64)
    if array.size == math.prod(shape) and array.shape != shape:
        return array.reshape(shape)
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise NIRUnsupportedError(f"a parameter of shape {array.shape} does not fit the signal {shape}") from None


def _unit_height(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A (C, N) signal (Conv1d) is carried as (C, 1, N): the same neurons in the same order."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else shape


def _push_bias(bias: np.ndarray, ops: list[Op]) -> np.ndarray:
    """A constant carried through a chain of linear ops (float64)."""
    if not ops:
        return np.asarray(bias, np.float64)
    import torch

    from neurodeploy.ir.torch_ops import compile_chain

    chain = compile_chain(ops, dtype=torch.float64)
    with torch.no_grad():
        return chain(torch.as_tensor(np.asarray(bias, np.float64))[None])[0].numpy()
