"""The reference simulator's engine: one batch, T steps, chunked layer-major execution.

Within a chunk of ``tc`` steps each projection runs once over ``[tc * B]`` stacked spike tensors (one
batched matmul/conv), then the target's neurons are scanned over the chunk. Neuron state (membranes,
encoder state, the last spikes for delayed projections) is carried across chunks, so memory is
bounded by the chunk size, and chunk boundaries are where a run can stop. ``tc = 1`` is step-major
streaming. Projections from an analog input see the same current every step: it is computed once per
batch and added as a constant.

Delays: a projection with delay d (its own, at least the profile's ``delay``: 1 on PyNN machines) hands a
spike emitted at step t to its target at step t + d; every population with delayed projections leaving it
keeps its spikes of the last steps (a delay buffer of the longest such delay). Recurrent networks: a
projection from a population at or after its target in the layer order (a feedback projection, delay
>= 1) finds its spikes in the buffer only when a chunk spans at most that delay, so chunks are cut to the
shortest feedback delay (:func:`max_chunk`; 1 for the usual one-step recurrence: step-major streaming).
"""

from __future__ import annotations

import torch

from neurodeploy.backends.base import ExitPolicy
from neurodeploy.backends.gpu import fused
from neurodeploy.backends.gpu.compiled import CompiledNetwork, Layer
from neurodeploy.backends.gpu.early_exit import first_exit
from neurodeploy.backends.gpu.encoders import SpikeEncoder
from neurodeploy.backends.gpu.neurons import integrate_and_fire
from neurodeploy.errors import BackendError
from neurodeploy.targets.spinnaker import round_s1615


def step_bytes(compiled: CompiledNetwork, batch: int, itemsize: int = 4) -> int:
    """Bytes of one step of ``batch`` items: about 3 values (membrane, spike, current) per neuron."""
    return 3 * itemsize * batch * sum(layer.size for layer in compiled.layers)


def chunk_steps(compiled: CompiledNetwork, batch: int, T: int, budget_bytes: float, itemsize: int = 4) -> int:
    """Steps per chunk so that the chunk's spike and current tensors (about 3 values per neuron,
    item and step) fit ``budget_bytes``."""
    return max(1, min(T, int(budget_bytes // max(step_bytes(compiled, batch, itemsize), 1))))


def batch_part(compiled: CompiledNetwork, budget_bytes: float, itemsize: int = 4) -> int:
    """Items simulated together so that one step of them fits ``budget_bytes`` (at least 1): what bounds
    a big net's state when even one step of the whole batch does not fit."""
    return max(1, int(budget_bytes // max(step_bytes(compiled, 1, itemsize), 1)))


def max_chunk(compiled: CompiledNetwork, delay: int) -> int | None:
    """The most steps a chunk may span (None: any): the shortest delay of a feedback projection (one whose
    source is at or after its target in the layer order), ``delay`` being the profile's minimum."""
    limits = [max(incoming.delay, delay) for index, layer in enumerate(compiled.layers) for incoming in layer.incoming
              if incoming.source >= index]
    return min(limits) if limits else None


class BatchSimulation:
    """Simulates one batch ``x [B, *input_shape]``; call :meth:`run` once."""

    def __init__(self, compiled: CompiledNetwork, x: torch.Tensor, encoding: str, delay: int, seed: int,
                 record_neurons: bool = False, record_layers: tuple[int, ...] = (), T: int = 0):
        self.net = compiled
        self.layers = compiled.layers
        self.B = x.shape[0]
        self.x = x
        self.encoding = encoding
        self.encoder = SpikeEncoder(encoding, x, seed) if encoding != "analog" else None
        self.v = [self._initial_v(layer) for layer in self.layers]
        self.net_count = [torch.zeros_like(v) if layer.spike_cap is not None or layer.negative_spikes else None
                          for layer, v in zip(self.layers, self.v, strict=True)]
        self.syn = [torch.zeros_like(v) if layer.syn_decay is not None else None
                    for layer, v in zip(self.layers, self.v, strict=True)]
        self.previous = [torch.zeros_like(v) if layer.reset_next_step else None
                         for layer, v in zip(self.layers, self.v, strict=True)]
        #: per layer, whether its scan is fused (``fused``: uint8 spikes, counts from the scan); not for a layer
        #: whose every neuron's spikes are recorded
        self.fused = [layer.fused_neuron is not None and not record_neurons and i not in record_layers
                      for i, layer in enumerate(self.layers)]
        #: per layer, the effective delay of each incoming projection
        self.delays = [[max(incoming.delay, delay) for incoming in layer.incoming] for layer in self.layers]
        buffer = [0] * len(self.layers)
        for layer, delays in zip(self.layers, self.delays, strict=True):
            for incoming, d in zip(layer.incoming, delays, strict=True):
                if not (incoming.source == 0 and encoding == "analog"):  # analog input: a constant current
                    buffer[incoming.source] = max(buffer[incoming.source], d)
        #: per layer, its spikes of the last steps (oldest first) ``[D, B, *shape]``, None without delayed output
        self.history = [torch.zeros((d, self.B, *layer.shape), dtype=torch.uint8 if is_fused else x.dtype,
                                    device=x.device) if d else None
                        for layer, d, is_fused in zip(self.layers, buffer, self.fused, strict=True)]
        self.constants = [self._constants(layer, delays)
                          for layer, delays in zip(self.layers, self.delays, strict=True)]
        #: index of the last layer that reads each layer's spikes: a chunk's spikes are freed after it (at a big
        #: net's size each layer's chunk of spikes is as large as its activations)
        self.last_reader = list(range(len(self.layers)))
        for i, layer in enumerate(self.layers):
            for incoming in layer.incoming:
                self.last_reader[incoming.source] = max(self.last_reader[incoming.source], i)
        output = self.layers[compiled.output_index]
        self.spike_readout = torch.zeros((self.B, output.size), dtype=x.dtype, device=x.device)
        #: spikes per neuron so far, ``[B, size]`` per layer (only when recording)
        self.neuron_counts = ([torch.zeros((self.B, layer.size), dtype=x.dtype, device=x.device)
                               for layer in self.layers] if record_neurons else None)
        #: every neuron's spike (-1, 0, 1) at each of the T steps, ``[B, T, size]`` int8 per recorded layer index
        self.recorded = {index: torch.zeros((self.B, T, self.layers[index].size), dtype=torch.int8, device=x.device)
                         for index in record_layers}
        self.t = 0

    def _initial_v(self, layer: Layer) -> torch.Tensor:
        v = torch.zeros((self.B, *layer.shape), dtype=self.x.dtype, device=self.x.device)
        if layer.channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        return v.add_(layer.v_init) if layer.role != "input" else v

    @property
    def last(self) -> list[torch.Tensor | None]:
        """Per layer, the spikes of the step just simulated (None for a layer without delayed output)."""
        return [None if h is None else h[-1] for h in self.history]

    def _constants(self, layer: Layer, delays: list[int]) -> list[tuple[int, torch.Tensor | None]]:
        """The constant current of each stretch of the run, ``(first step, current)`` (0-based, ascending):
        the bias from step 0 on, plus each analog input projection from its delay on (its current is the same
        every step, computed once)."""
        arrivals: dict[int, torch.Tensor] = {}
        if self.encoding == "analog":
            for incoming, d in zip(layer.incoming, delays, strict=True):
                if incoming.source == 0:
                    part = incoming.fn(self.x)
                    arrivals[d] = part if d not in arrivals else arrivals[d] + part
        bias = None if layer.bias_in_projection else layer.bias
        segments = [(0, bias)] if 0 not in arrivals else []
        static = None
        for d in sorted(arrivals):
            static = arrivals[d] if static is None else static + arrivals[d]
            segments.append((d, static if bias is None else static + bias))
        if layer.channels_last:  # added to the channels-last membrane every step: the same layout
            segments = [(start, c.contiguous(memory_format=torch.channels_last) if torch.is_tensor(c) and c.ndim == 4
                         else c) for start, c in segments]
        return segments

    def _source_spikes(self, source: int, d: int, spikes: list, steps: int, amplitude: bool = True
                       ) -> torch.Tensor:
        """The source's spikes reaching a projection of delay ``d`` in this chunk's steps, times its amplitude
        (the raw spikes with ``amplitude=False``)."""
        s = spikes[source]
        if d:
            history = self.history[source]
            first = history.shape[0] - d
            s = history[first:first + steps] if steps <= d else torch.cat([history[first:], s[:steps - d]])
        if amplitude and self.layers[source].amplitude is not None:
            s = s * self.layers[source].amplitude
        return s

    def _dynamic_current(self, index: int, layer: Layer, spikes: list, steps: int) -> torch.Tensor | None:
        current = inhibitory = None
        for incoming, d in zip(layer.incoming, self.delays[index], strict=True):
            if incoming.source == 0 and self.encoding == "analog":
                continue
            fn = incoming.binary_fn or incoming.fn  # the int8 lowering takes the raw 0/1 spikes
            src = self._source_spikes(incoming.source, d, spikes, steps, amplitude=incoming.binary_fn is None)
            src = src.reshape(steps * self.B, *src.shape[2:])
            part = fn(src).reshape(steps, self.B, *layer.shape)
            current = part if current is None else current.add_(part)
            if incoming.fn_inh is not None:
                part = incoming.fn_inh(src).reshape(steps, self.B, *layer.shape)
                inhibitory = part if inhibitory is None else inhibitory.add_(part)
        if layer.saturation is not None and current is not None:
            # separate receptors whose per-step sums saturate (SpiNNaker's 16-bit ring buffers)
            current = current.clamp_(max=layer.saturation[0])
            if inhibitory is not None:
                current = current.sub_(inhibitory.clamp_(max=layer.saturation[1]))
        return current

    def step_chunk(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Advances every layer by ``steps`` steps; returns the chunk's readout ``[B, steps, C]`` and
        counts ``[B, steps, P, 2]`` (spikes, synaptic events per population)."""
        spikes: list[torch.Tensor | None] = [None] * len(self.layers)
        ends: dict[int, torch.Tensor] = {}  # the chunk's last spikes of layers read through delays
        t0, t1 = self.t, self.t + steps
        output = self.layers[self.net.output_index]
        readout = torch.empty((self.B, steps, output.size), dtype=self.x.dtype, device=self.x.device)
        counts = torch.zeros((self.B, steps, len(self.layers), 2), dtype=self.x.dtype, device=self.x.device)
        if self.encoder is not None:
            spikes[0] = self.encoder.next(steps)
            self._count(0, spikes[0], counts, steps)
        for index, layer in enumerate(self.layers):
            if index == 0:
                continue
            dynamic = self._dynamic_current(index, layer, spikes, steps)
            pieces = _pieces(self.constants[index], t0, steps)
            if self.fused[index]:
                spikes[index] = self._fused_scan(index, layer, dynamic, pieces, counts, steps)
            elif layer.spiking:
                parts = [integrate_and_fire(layer, self.v[index], _rows(dynamic, a, b), constant, b - a,
                                            self.net_count[index], self.syn[index], self.previous[index])
                         for a, b, constant in pieces]
                spikes[index] = parts[0] if len(parts) == 1 else torch.cat(parts)
            else:
                current = dynamic if dynamic is not None else torch.zeros(
                    (steps, self.B, *layer.shape), dtype=self.x.dtype, device=self.x.device)
                for a, b, constant in pieces:
                    if constant is not None:
                        current[a:b] += constant
                membrane = _integrate(layer, current, self.v[index], self.syn[index])
                self.v[index] = membrane[-1].clone()
                readout.copy_(membrane.transpose(0, 1).reshape(self.B, steps, -1))
            if layer.role == "output" and layer.spiking:
                # a spike readout counts spikes; the running count lives in the (otherwise unused) net count
                cumulative = torch.cumsum(spikes[index], 0).reshape(steps, self.B, -1) + self.spike_readout[None]
                self.spike_readout = cumulative[-1].clone()
                readout.copy_(cumulative.transpose(0, 1))
            if spikes[index] is not None and not self.fused[index]:
                self._count(index, spikes[index], counts, steps)
            for source in range(index + 1):  # spikes no later layer reads: only the activations of a few layers live
                if self.last_reader[source] == index and spikes[source] is not None:
                    history, s = self.history[source], spikes[source]
                    if history is not None:
                        depth = history.shape[0]
                        ends[source] = s[steps - depth:].clone() if steps >= depth else torch.cat([history[steps:], s])
                    spikes[source] = None
        for index, end in ends.items():  # after every layer has read the previous chunk's last spikes
            self.history[index] = end
        self.t = t1
        return readout, counts

    def _fused_scan(self, index: int, layer: Layer, dynamic: torch.Tensor | None,
                    pieces: list[tuple[int, int, torch.Tensor | None]], counts: torch.Tensor, steps: int
                    ) -> torch.Tensor:
        """The chunk's uint8 spikes ``[steps, B, *shape]`` of a fused layer (``fused``), its spikes and synaptic
        events written into ``counts [B, steps, P, 2]``."""
        shape, cl = layer.shape, layer.channels_last
        v = self.v[index]
        v_flat = fused.memory_order(v, 1, shape, cl)
        if v_flat.untyped_storage().data_ptr() != v.untyped_storage().data_ptr():  # e.g. after compaction
            v = self.v[index] = v.contiguous(memory_format=torch.channels_last) if cl else v.contiguous()
            v_flat = fused.memory_order(v, 1, shape, cl)
        dynamic = None if dynamic is None else fused.memory_order(dynamic, 2, shape, cl)
        out = fused.spike_buffer(steps, self.B, shape, cl, v.device)
        out_flat = fused.memory_order(out, 2, shape, cl)
        stats = torch.empty((steps, self.B, 2), dtype=torch.float32, device=v.device)
        for a, b, constant in pieces:
            if constant is not None:
                batched = constant.ndim == len(shape) + 1
                constant = constant.expand(*(constant.shape[:1] if batched else (1,)), *shape)
                constant = fused.memory_order(constant, 1, shape, cl)
            fused.scan(layer.fused_neuron, v_flat, None if dynamic is None else dynamic[a:b], constant,
                       out_flat[a:b], stats[a:b])
        counts[:, :, index] = stats.transpose(0, 1)
        return out

    def _count(self, index: int, s: torch.Tensor, counts: torch.Tensor, steps: int) -> None:
        """Spikes and synaptic events of layer ``index``'s chunk spikes ``s`` into ``counts [B, steps, P, 2]``
        (and the per-neuron counts)."""
        layer = self.layers[index]
        if index in self.recorded:  # signed, in the population's (c, h, w) order, before the counts take |spikes|
            self.recorded[index][:, self.t:self.t + steps] = s.reshape(steps, self.B, -1).transpose(0, 1)
        matrix = layer.count_matrix
        if layer.channels_last and self.neuron_counts is None:
            # neurons in memory order (h, w, c): the count matrix's rows in the same order, no copy of the spikes
            s = s.permute(0, 1, 3, 4, 2)
            c, h, w = layer.shape
            matrix = matrix.reshape(c, h, w, 2).permute(1, 2, 0, 3).reshape(-1, 2)
        flat = s.reshape(steps * self.B, -1)
        if layer.negative_spikes or (index == 0 and self.encoding != "analog"):
            flat = flat.abs()
        if self.neuron_counts is not None:
            self.neuron_counts[index] += flat.reshape(steps, self.B, -1).sum(0)
        stats = (flat @ matrix).reshape(steps, self.B, 2)
        counts[:, :, index] = stats.transpose(0, 1)

    def compact(self, keep: torch.Tensor) -> None:
        """Keeps only the rows ``keep`` (indices into the current batch) of every per-item state."""
        B = self.B

        def rows(tensor):
            return tensor[keep] if torch.is_tensor(tensor) and tensor.ndim > 0 and tensor.shape[0] == B else tensor

        self.x = self.x[keep]
        self.v = [rows(v) for v in self.v]
        self.net_count = [rows(c) for c in self.net_count]
        self.syn = [rows(c) for c in self.syn]
        self.previous = [rows(c) for c in self.previous]
        self.history = [None if h is None else h[:, keep] for h in self.history]
        self.spike_readout = rows(self.spike_readout)
        self.constants = [[(start, rows(c) if self._batched(c, i) else c) for start, c in segments]
                          for i, segments in enumerate(self.constants)]
        if self.encoder is not None:
            self.encoder.compact(keep)
        self.B = int(keep.numel())

    def _batched(self, constant, index: int) -> bool:
        """A constant carries a batch axis only when it includes the analog input's projection."""
        return torch.is_tensor(constant) and constant.ndim == len(self.layers[index].shape) + 1


def _pieces(segments: list[tuple[int, torch.Tensor | None]], t0: int, steps: int
            ) -> list[tuple[int, int, torch.Tensor | None]]:
    """The chunk of ``steps`` steps from step ``t0`` cut where the constant current changes:
    ``(first, stop, current)`` with steps relative to the chunk."""
    pieces = []
    for k, (start, constant) in enumerate(segments):
        stop = segments[k + 1][0] if k + 1 < len(segments) else t0 + steps
        a, b = max(start, t0) - t0, min(stop, t0 + steps) - t0
        if a < b:
            pieces.append((a, b, constant))
    return pieces


def _integrate(layer: Layer, current: torch.Tensor, v0: torch.Tensor, syn: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Membrane of a non-spiking layer after each step of ``current [steps, B, *shape]`` (``syn``: its
    synaptic current, updated in place, for a layer with ``syn_decay``)."""
    if layer.decay is None and not layer.fixed_point and syn is None:
        return torch.cumsum(current, 0).add_(v0)
    membrane = torch.empty_like(current)
    v = v0.clone()
    for k in range(current.shape[0]):
        if syn is not None:
            syn.mul_(layer.syn_decay).add_(current[k])
        if layer.decay is not None:
            v.mul_(layer.decay)
        if layer.leak_drive is not None:
            v.add_(layer.leak_drive)
        v.add_(current[k] if syn is None else syn)
        if layer.fixed_point:
            round_s1615(v)
        membrane[k] = v
    return membrane


def _rows(tensor: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[start:stop]


def simulate_batch(compiled: CompiledNetwork, x: torch.Tensor, T: int, encoding: str, chunk: int,
                   delay: int, seed: int, exit_policy: ExitPolicy | None = None, record_neurons: bool = False,
                   record_layers: tuple[int, ...] = ()
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Returns ``readout [B, T, C]``, ``counts [B, T, P, 2]`` (spikes, synaptic events per step and
    population; stored as ``[2, B, T, P]``, so that ``counts[..., 0]`` and ``counts[..., 1]`` are each
    contiguous and become the result's arrays without a copy), ``stop [B]`` (1-based exit step; T when
    the item ran to the end) and, with
    ``record_neurons`` (not with early exit), every neuron's spikes over the run ``[B, M]`` (layers
    concatenated in order) and, with ``record_layers`` (layer indices; not with early exit), every neuron's
    spike of those layers at each step ``[B, T, R]`` int8 (-1, 0, 1; the layers concatenated in that order),
    else None.

    With ``exit_policy`` items stop at the first step whose confidence passes the threshold and leave
    the batch at the end of that chunk; after its stop an item's readout stays at its value at the
    stop step and its counts are zero (nothing more was simulated for it).
    """
    if (record_neurons or record_layers) and exit_policy is not None:
        raise BackendError("per-neuron spikes are recorded for full runs; run without early exit")
    sim = BatchSimulation(compiled, x, encoding, delay, seed, record_neurons, record_layers, T)
    chunk = min(chunk, max_chunk(compiled, delay) or chunk)
    B = x.shape[0]
    n_classes = compiled.layers[compiled.output_index].size
    readout = torch.zeros((B, T, n_classes), dtype=x.dtype, device=x.device)
    counts = torch.zeros((2, B, T, len(compiled.layers)), dtype=x.dtype, device=x.device).permute(1, 2, 3, 0)
    stop = torch.full((B,), T, dtype=torch.long, device=x.device)
    rows = torch.arange(B, device=x.device)  # original index of every row still simulated
    while sim.t < T and sim.B > 0:
        t0 = sim.t
        steps = min(chunk, T - t0)
        chunk_readout, chunk_counts = sim.step_chunk(steps)
        if exit_policy is None:
            readout[:, t0:t0 + steps] = chunk_readout
            counts[:, t0:t0 + steps] = chunk_counts
            continue
        first = first_exit(chunk_readout, exit_policy)
        exited = first >= 0
        if exited.any():
            after = torch.arange(steps, device=x.device)[None, :] > first[:, None]
            after &= exited[:, None]
            chunk_counts[after] = 0
            frozen = chunk_readout.gather(1, first.clamp(min=0)[:, None, None].expand(-1, 1, n_classes))
            chunk_readout = torch.where(after[..., None], frozen, chunk_readout)
            stop[rows[exited]] = t0 + first[exited] + 1
        readout[rows, t0:t0 + steps] = chunk_readout
        counts[rows, t0:t0 + steps] = chunk_counts
        if exited.any():
            last = chunk_readout[exited, -1]
            readout[rows[exited], t0 + steps:] = last[:, None]
            keep = torch.nonzero(~exited).squeeze(1)
            sim.compact(keep)
            rows = rows[keep]
    neurons = torch.cat(sim.neuron_counts, dim=1) if record_neurons else None
    recorded = torch.cat([sim.recorded[index] for index in record_layers], dim=2) if record_layers else None
    return readout, counts, stop, neurons, recorded
