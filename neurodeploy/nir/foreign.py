"""Graphs written elsewhere (sinabs, snnTorch, Norse, Rockpool, ...), read with NIR's semantics and the
caller's import options; each assumption is a :class:`~neurodeploy.nir.vocabulary.NIRWarning`
(docs/nir.md, "Import")."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from neurodeploy.errors import NeurodeployError
from neurodeploy.ir.network import MAX_NEURONS, Network
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

#: neuron nodes that spike, and those read only as the readout (their membrane)
_SPIKING = ("IF", "LIF", "CubaLIF", "Threshold")
_MEMBRANES = ("I", "LI", "CubaLI")
_NEURONS = _SPIKING + _MEMBRANES
_OPS = ("Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale", "Delay")
#: leak_tau (steps) of a neuron that keeps nothing from one step to the next: exp(-1 / MEMORYLESS_TAU) is 0.0
#: in float32 and float64, so v(t) = i(t) exactly (NIR's stateless Threshold node)
MEMORYLESS_TAU = 1e-3
#: deepest nesting of NIRGraph nodes flattened (files are bounded by neurodeploy.nir.hdf5 already)
MAX_NESTING = 16


def _pair(value) -> tuple[int, int]:
    flat = [int(v) for v in np.ravel(value)]
    return (flat[0], flat[0]) if len(flat) == 1 else (flat[0], flat[1])


def flatten_graph(graph, nir, depth: int = 0) -> tuple[dict, list[tuple[str, str]]]:
    """The nodes and edges of ``graph`` with every nested ``NIRGraph`` node inlined: its nodes are named
    ``outer.inner``, an edge to (from) the nested graph goes to its Input (from its Output) node, or to the
    port it names (``outer.port``), and the nested graph's Input and Output nodes are then bypassed."""
    if depth > MAX_NESTING:
        raise NIRUnsupportedError(f"graphs nested deeper than {MAX_NESTING} levels")
    nodes: dict = {}
    edges: list[tuple[str, str]] = []
    ports: set[str] = set()
    entry: dict[str, str] = {}
    exit_: dict[str, str] = {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        inner_nodes, inner_edges = flatten_graph(node, nir, depth + 1)
        inputs = [k for k, n in inner_nodes.items() if isinstance(n, nir.Input)]
        outputs = [k for k, n in inner_nodes.items() if isinstance(n, nir.Output)]
        for k, n in inner_nodes.items():
            full = f"{name}.{k}"
            if full in graph.nodes:
                raise NIRUnsupportedError(f"nested graph {name!r}: its node {k!r} and the outer node {full!r} share "
                                          "a name")
            nodes[full] = n
        edges += [(f"{name}.{a}", f"{name}.{b}") for a, b in inner_edges]
        ports.update(f"{name}.{k}" for k in inputs + outputs)
        if len(inputs) == 1:
            entry[name] = f"{name}.{inputs[0]}"
        if len(outputs) == 1:
            exit_[name] = f"{name}.{outputs[0]}"
    for a, b in graph.edges:
        if a in exit_:
            a = exit_[a]
        if b in entry:
            b = entry[b]
        for end in (a, b):
            if end not in nodes:
                raise NIRUnsupportedError(f"edge {a!r} -> {b!r} names {end!r}, which is not a node of this graph")
        edges.append((a, b))
    for port in sorted(ports):  # a nested graph's Input / Output passes its signal through
        preds = [a for a, b in edges if b == port]
        succs = [b for a, b in edges if a == port]
        edges = [(a, b) for a, b in edges if port not in (a, b)] + [(a, b) for a in preds for b in succs]
        del nodes[port]
    return nodes, list(dict.fromkeys(edges))


def _back_edges(digraph: nx.DiGraph, source: str) -> set[tuple[str, str]]:
    """Edges that close a cycle in a depth-first search from ``source`` (successors in name order): without
    them the graph is acyclic, and they are the recurrent connections."""
    back, state = set(), {source: 1}  # 1: on the search path, 2: finished
    stack = [(source, iter(sorted(digraph.successors(source))))]
    while stack:
        node, successors = stack[-1]
        nxt = next(successors, None)
        if nxt is None:
            state[node] = 2
            stack.pop()
        elif state.get(nxt) == 1:
            back.add((node, nxt))
        elif nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(sorted(digraph.successors(nxt)))))
    return back


class _ForeignReader:
    """One graph written elsewhere -> a validated :class:`Network`: nested graphs flattened, recurrent edges
    found, shapes inferred from the Input, op nodes translated into projection chains between neuron
    nodes, neuron nodes into populations (docs/nir.md, "The mapping (import)"). Assumptions are notes
    (NIRWarnings), refusals NIRUnsupportedError naming the node."""

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
        self.nodes, self.edges = flatten_graph(graph, self.nir)
        if len(self.nodes) != len(graph.nodes):
            self.note("nested graphs are flattened (their nodes named outer.inner)")
        self.kind = {name: type(node).__name__ for name, node in self.nodes.items()}

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
        for name in self.nodes:
            kind = self.kind[name]
            if kind not in _NEURONS + _OPS + ("Input", "Output"):
                raise NIRUnsupportedError(f"node {name!r}: NIR primitive {kind} is not supported")
        digraph = nx.DiGraph()
        digraph.add_nodes_from(self.nodes)
        digraph.add_edges_from(self.edges)
        self._implicit_ends(digraph)
        inputs = [n for n in self.nodes if self.kind[n] == "Input"]
        outputs = [n for n in self.nodes if self.kind[n] == "Output"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRUnsupportedError(f"the IR takes one Input and one Output node; this graph has {inputs} and "
                                      f"{outputs}")
        self.digraph = digraph
        self.input, self.output = inputs[0], outputs[0]
        unreached = sorted(set(self.nodes) - nx.descendants(digraph, self.input) - {self.input})
        if unreached:
            raise NIRUnsupportedError(f"node {unreached[0]!r} is not reached from the Input {self.input!r}")
        ops_only = digraph.subgraph(n for n in self.nodes if self.kind[n] in _OPS)
        if not nx.is_directed_acyclic_graph(ops_only):
            cycle = " -> ".join(a for a, _ in nx.find_cycle(ops_only))
            raise NIRUnsupportedError(f"a cycle through no neuron node ({cycle}): a recurrence needs a neuron to hold "
                                      "its state")
        self.back = _back_edges(digraph, self.input)
        if self.back:
            self.note("recurrent connections (edges closing a cycle) deliver the spikes of the step before (a delay "
                      "of one step, or that of the Delay nodes on them), as snnTorch's RLeaky/RSynaptic compute")
        forward = nx.DiGraph()
        forward.add_nodes_from(self.nodes)
        forward.add_edges_from(e for e in self.edges if e not in self.back)
        self.forward = forward
        order = list(nx.lexicographical_topological_sort(forward))
        self._shapes(order)
        return self._build(order)

    def _implicit_ends(self, digraph: nx.DiGraph) -> None:
        """A graph without an Input (Output) node whose one source (sink) node states its input type gets
        one, as nir's own type inference adds them."""
        nir = self.nir
        if not any(k == "Input" for k in self.kind.values()):
            sources = [n for n in self.nodes if digraph.in_degree(n) == 0]
            declared = (getattr(self.nodes[sources[0]], "input_type", None) or {}).get("input") if \
                len(sources) == 1 else None
            if declared is not None and np.size(declared) and np.all(np.asarray(declared) > 0):
                self._add_end("input", nir.Input(np.asarray(declared)), (None, sources[0]), digraph)
        if not any(k == "Output" for k in self.kind.values()):
            sinks = [n for n in self.nodes if digraph.out_degree(n) == 0 and self.kind[n] != "Input"]
            if len(sinks) == 1:
                self._add_end("output", nir.Output(np.array([1])), (sinks[0], None), digraph)

    def _add_end(self, wanted: str, node, edge: tuple, digraph: nx.DiGraph) -> None:
        name, k = wanted, 1
        while name in self.nodes:
            name, k = f"{wanted}_{k}", k + 1
        self.nodes[name] = node
        self.kind[name] = type(node).__name__
        edge = (edge[0] or name, edge[1] or name)
        self.edges.append(edge)
        digraph.add_edge(*edge)
        self.note(f"the graph has no {type(node).__name__} node: {name!r} added at {edge}")

    # shapes and op translation

    def _shapes(self, order: list[str]) -> None:
        nir = self.nir
        self.in_shape: dict[str, tuple[int, ...]] = {}
        self.out_shape: dict[str, tuple[int, ...]] = {}
        self.ops: dict[str, list[Op]] = {}
        self.bias: dict[str, np.ndarray | None] = {}
        self.delay: dict[str, int] = {}
        for name in order:
            node = self.nodes[name]
            preds = list(self.forward.predecessors(name))
            if name == self.input:
                declared = (getattr(node, "input_type", None) or {}).get("input")
                if declared is None or np.size(declared) == 0:
                    raise NIRUnsupportedError(f"the Input node {name!r} declares no shape")
                shape = tuple(int(s) for s in np.ravel(declared))
                if any(s < 1 for s in shape) or math.prod(shape) > MAX_NEURONS:
                    raise NIRUnsupportedError(f"the Input node {name!r} declares the shape {list(shape)} (at most "
                                              f"{MAX_NEURONS} neurons)")
                self.in_shape[name] = self.out_shape[name] = _unit_height(shape)
                continue
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
            if math.prod(out) > MAX_NEURONS:
                raise NIRUnsupportedError(f"node {name!r} gives {math.prod(out)} values (at most {MAX_NEURONS})")
            self.out_shape[name] = out
            if bias is not None:
                bias = np.asarray(bias, np.float64)
                if bias.size == math.prod(out):
                    bias = bias.reshape(out)
                try:
                    self.bias[name] = np.broadcast_to(bias, out).astype(np.float64)
                except ValueError:
                    raise NIRUnsupportedError(f"node {name!r} ({kind}): a bias of shape {list(bias.shape)} on an "
                                              f"output of shape {list(out)}") from None
            else:
                self.bias[name] = None
        for a, b in sorted(self.back):
            if self.out_shape[a] != self.in_shape[b]:
                raise NIRUnsupportedError(f"recurrent edge {a!r} -> {b!r} carries shape {list(self.out_shape[a])} "
                                          f"into {b!r}, which takes {list(self.in_shape[b])}")

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
                start, end = int(np.ravel(node.start_dim)[0]), int(np.ravel(node.end_dim)[0])
                # a (C, N) signal is carried as (C, 1, N): its Flatten names the dims of (C, N)
                ranks = {len(shape), 2} if len(shape) == 3 and shape[1] == 1 else {len(shape)}
                if any(start % n == 0 and end % n == n - 1 for n in ranks):
                    return ([Flatten()] if len(shape) > 1 else []), None
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
                if not np.allclose(exact, steps, rtol=1e-5, atol=0) or np.any(steps < 0):
                    raise NIRUnsupportedError(f"node {name!r}: delays {np.unique(delays)[:4]} s are not whole "
                                              f"numbers of steps of {self.dt} s")
                if not np.all(steps == steps.reshape(-1)[0]):
                    raise NIRUnsupportedError(f"node {name!r}: delays differ between neurons ({np.unique(steps)[:4]} "
                                              "steps); the IR has one delay per projection")
                self.delay[name] = int(round(float(steps.reshape(-1)[0])))
                return [], None
        except NIRError:
            raise
        except NeurodeployError as err:
            raise NIRUnsupportedError(f"node {name!r} ({kind}): {err}") from None
        except (ValueError, TypeError, IndexError) as err:  # parameters of the wrong kind or rank
            raise NIRUnsupportedError(f"node {name!r} ({kind}): malformed parameters ({type(err).__name__}: "
                                      f"{str(err)[:120]})") from None
        raise NIRUnsupportedError(f"node {name!r}: {kind}")

    # populations and projections

    def _time_constant(self, name: str, tau: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(time constant in steps per neuron, dt / tau per neuron) of finite ``tau`` seconds: the IR's decay
        exp(-1 / steps) equals exp(-dt / tau) ("exp") or 1 - dt / tau ("euler")."""
        if not np.all(np.isfinite(tau)) or np.any(tau <= 0):
            raise NIRUnsupportedError(f"node {name!r}: {what} {np.unique(tau)[:4]} (the IR takes positive finite "
                                      "time constants, or tau = r = inf for no leak)")
        dt = self._dt(name, f"a leaky {self.kind[name]}")
        ratio = dt / tau
        if self.leak == "exp":
            steps = tau / dt
        else:
            if np.any(ratio >= 1):
                raise NIRUnsupportedError(f"node {name!r}: dt / {what} = {float(np.max(ratio))} >= 1 has no Euler "
                                          "decay (a smaller --nir-dt, or --nir-leak exp)")
            steps = -1.0 / np.log1p(-ratio)
        self.note(f"leaky nodes: decay per step {'exp(-dt/tau)' if self.leak == 'exp' else '1 - dt/tau'} with dt = "
                  f"{dt} s, input gain r * dt / tau (CubaLIF/CubaLI: times w_in * dt / tau_syn)")
        return steps, ratio

    def _gain_and_neuron(self, name: str, node, shape, spiking: bool):
        """(input gain per neuron or None, NeuronSpec) of a neuron node (docs/nir.md, "Import")."""
        kind = self.kind[name]
        neuron = NeuronSpec(threshold=1.0, readout="spikes" if spiking else "membrane")
        if kind == "Threshold":  # a spike whenever this step's input reaches the threshold; nothing is kept
            self.note(f"node {name!r}: a Threshold is a neuron whose membrane keeps nothing between steps (decay 0)")
            neuron.leak_tau, neuron.reset = MEMORYLESS_TAU, "zero"
            form = _channel_form(_fit(node.threshold, shape).astype(np.float32), shape)
            if form is None:
                raise NIRUnsupportedError(f"node {name!r}: thresholds vary inside a channel of a {shape} population")
            neuron.threshold = float(form) if form.ndim == 0 else form
            return None, neuron
        r = _fit(node.r, shape)
        gain = r
        if kind != "IF" and kind != "I":
            tau = _fit(node.tau_mem if kind.startswith("Cuba") else node.tau, shape)
            v_leak = _fit(node.v_leak, shape)
            if np.all(np.isinf(tau)):
                if not np.all(np.isinf(r)):
                    raise NIRUnsupportedError(f"node {name!r}: tau = inf with finite r passes no input")
                self.note(f"node {name!r}: tau = inf with r = inf (snnTorch's beta = 1) is read as a non-leaky "
                          "neuron with input gain 1 (r = tau / dt)")
                gain = np.ones(shape)
                if np.any(v_leak != 0):
                    self.note(f"node {name!r}: v_leak is ignored by a neuron that does not leak")
            else:
                steps, ratio = self._time_constant(name, tau, "tau_mem" if kind.startswith("Cuba") else "tau")
                gain = r * ratio
                neuron.leak_tau = _compact(steps, shape)
                neuron.v_leak = _compact(v_leak, shape)
            if kind.startswith("Cuba"):
                steps, ratio = self._time_constant(name, _fit(node.tau_syn, shape), "tau_syn")
                neuron.tau_syn = _compact(steps, shape)
                gain = gain * _fit(node.w_in, shape) * ratio
        if not np.all(np.isfinite(gain)):
            raise NIRUnsupportedError(f"node {name!r} ({kind}): its input gain is not finite (r, w_in or tau)")
        if np.allclose(gain, 1.0, rtol=1e-6, atol=0):
            gain = None
        if spiking:
            theta = _fit(node.v_threshold, shape)
            form = _channel_form(theta.astype(np.float32), shape)
            if form is None:
                raise NIRUnsupportedError(f"node {name!r}: thresholds vary inside a channel of a {shape} population")
            neuron.threshold = float(form) if form.ndim == 0 else form
            v_reset = _fit(node.v_reset, shape) if getattr(node, "v_reset", None) is not None else np.zeros(shape)
            if self.reset == "zero":
                neuron.reset = "zero"
                neuron.v_reset = _compact(v_reset, shape)
                if self.options.reset is None and self.options.writer is None:
                    self.note("spiking nodes follow NIR's semantics: reset to v_reset (nothing says otherwise; sinabs "
                              "and snnTorch graphs mean reset by subtraction: --nir-from sinabs|snntorch or "
                              "--nir-reset subtract)")
            else:
                neuron.reset = "subtract"
                if self.reset == "subtract-next":
                    neuron.reset_timing = "next_step"
                self.note("spiking nodes reset by subtraction (v -= v_threshold" +
                          (", in the step after the spike, after the leak: snnTorch's reset_delay" if
                           self.reset == "subtract-next" else "") + "; the import options), not to NIR's v_reset")
                if np.any(v_reset != 0):
                    self.note(f"node {name!r}: v_reset is not used (reset by subtraction)")
            self.note("spikes are emitted at v >= v_threshold (NIR says v > v_threshold; snnTorch and Norse use >, "
                      "sinabs >=): they differ only where v equals the threshold exactly")
        return gain, neuron

    def _build(self, order: list[str]) -> Network:
        digraph = self.digraph
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
            succs = [n for n in digraph.successors(name) if n != self.output]
            is_output = direct_output and output_preds[0] == name
            spiking = kind in _SPIKING
            if not spiking and not is_output:
                raise NIRUnsupportedError(f"node {name!r} ({kind}): a non-spiking node is read only as the readout "
                                          "right before the Output")
            if is_output and not spiking and succs:
                raise NIRUnsupportedError(f"node {name!r}: the membrane readout feeds other nodes")
            shape = self.in_shape[name]
            gain, neuron = self._gain_and_neuron(name, self.nodes[name], shape, spiking)
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
        for source in [n for n in order if n in populations and n != self.output]:
            for path in self._paths(source, populations):
                target = path[-1]
                ops = []
                if source in amplitude:
                    theta = amplitude[source]
                    ops.append(Scale((1.0 / theta).astype(np.float32)))
                for node in path[1:-1]:
                    ops += self.ops[node]
                delay = sum(self.delay.get(node, 0) for node in path[1:-1])
                if delay == 0 and any((a, b) in self.back for a, b in zip(path, path[1:], strict=False)):
                    delay = 1
                gain = gains.get(target)
                if gain is not None:
                    form = _channel_form(gain.astype(np.float32), self.in_shape[target])
                    if form is None:
                        raise NIRUnsupportedError(f"node {target!r}: an input gain (r) that varies inside a channel")
                    ops.append(Scale(form))
                network.connect(populations[source], populations[target], ops, delay=delay)
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
        delays = sorted({p.delay for p in network.projections})
        if delays != [0]:
            self.note(f"synaptic delays of {delays} steps (Delay nodes over dt, recurrent edges): each projection "
                      "keeps its own")
        network.metadata = {"source": "nir", "nir_import": {"options": self.resolved, "notes": list(self.notes),
                                                            "delays": delays}}
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


def _compact(values: np.ndarray, shape: tuple[int, ...]):
    """A per-neuron parameter as a float (all equal), a per-channel ``[C]`` array, or the full array."""
    form = _channel_form(np.asarray(values, np.float64), shape)
    if form is None:
        return np.asarray(values, np.float64).copy()
    return float(form) if form.ndim == 0 else form


def _fit(value, shape: tuple[int, ...]) -> np.ndarray:
    """A node parameter as a float64 array of the signal's ``shape`` (a (C, N) parameter of a Conv1d-shaped
    signal is reshaped to (C, 1, N); a scalar or (1,) broadcasts)."""
    try:
        array = np.asarray(value, np.float64)
    except (ValueError, TypeError):
        raise NIRUnsupportedError(f"a parameter is not numbers: {str(value)[:40]!r}") from None
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
