"""The reference simulator's engine: one batch, T steps, chunked layer-major execution.

Within a chunk of ``tc`` steps each projection runs once over ``[tc * B]`` stacked spike tensors (one
batched matmul/conv), then the target's neurons are scanned over the chunk. Neuron state (membranes,
encoder state, the last spikes for delayed projections) is carried across chunks, so memory is
bounded by the chunk size, and chunk boundaries are where a run can stop. ``tc = 1`` is step-major
streaming. Projections from an analog input see the same current every step: it is computed once per
batch and added as a constant.

Delay profile ``delay = 1`` (PyNN machines): a spike emitted at step t reaches its targets at t + 1.
"""

from __future__ import annotations

import torch

from neurodeploy.backends.base import ExitPolicy
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


class BatchSimulation:
    """Simulates one batch ``x [B, *input_shape]``; call :meth:`run` once."""

    def __init__(self, compiled: CompiledNetwork, x: torch.Tensor, encoding: str, delay: int, seed: int,
                 record_neurons: bool = False):
        self.net = compiled
        self.layers = compiled.layers
        self.B = x.shape[0]
        self.x = x
        self.delay = delay
        self.encoding = encoding
        self.encoder = SpikeEncoder(encoding, x, seed) if encoding != "analog" else None
        self.v = [self._initial_v(layer) for layer in self.layers]
        self.net_count = [torch.zeros_like(v) if layer.spike_cap is not None or layer.negative_spikes else None
                          for layer, v in zip(self.layers, self.v, strict=True)]
        # the last step's spikes, for delayed projections only (at a big net's size each copy of every layer's
        # state is as large as the activations)
        self.last = [torch.zeros((self.B, *layer.shape), dtype=x.dtype, device=x.device) if delay else None
                     for layer in self.layers]
        #: index of the last layer that reads each layer's spikes: a chunk's spikes are freed after it
        self.last_reader = list(range(len(self.layers)))
        for i, layer in enumerate(self.layers):
            for incoming in layer.incoming:
                self.last_reader[incoming.source] = max(self.last_reader[incoming.source], i)
        self.constants = [self._constants(layer) for layer in self.layers]
        output = self.layers[compiled.output_index]
        self.spike_readout = torch.zeros((self.B, output.size), dtype=x.dtype, device=x.device)
        #: spikes per neuron so far, ``[B, size]`` per layer (only when recording)
        self.neuron_counts = ([torch.zeros((self.B, layer.size), dtype=x.dtype, device=x.device)
                               for layer in self.layers] if record_neurons else None)
        self.t = 0

    def _initial_v(self, layer: Layer) -> torch.Tensor:
        v = torch.zeros((self.B, *layer.shape), dtype=self.x.dtype, device=self.x.device)
        return v.add_(layer.v_init) if layer.role != "input" else v

    def _constants(self, layer: Layer) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(current before the static input arrives, current after): bias plus the analog input's
        projection, which arrives ``delay`` steps late."""
        static = None
        if self.encoding == "analog":
            for incoming in layer.incoming:
                if incoming.source == 0:
                    part = incoming.fn(self.x)
                    static = part if static is None else static + part
        early = layer.bias
        late = early if static is None else (static if early is None else static + early)
        return early, late

    def _source_spikes(self, source: int, spikes: list, steps: int) -> torch.Tensor:
        s = spikes[source]
        if self.layers[source].amplitude is not None:
            s = s * self.layers[source].amplitude
        if self.delay:
            s = torch.cat([self.last[source][None], s[:-1]]) if steps > 1 else self.last[source][None]
        return s

    def _dynamic_current(self, layer: Layer, spikes: list, steps: int) -> torch.Tensor | None:
        current = inhibitory = None
        for incoming in layer.incoming:
            if incoming.source == 0 and self.encoding == "analog":
                continue
            src = self._source_spikes(incoming.source, spikes, steps)
            src = src.reshape(steps * self.B, *src.shape[2:])
            part = incoming.fn(src).reshape(steps, self.B, *layer.shape)
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
            dynamic = self._dynamic_current(layer, spikes, steps)
            early, late = self.constants[index]
            split = min(max(self.delay - t0, 0), steps) if early is not late else 0
            if layer.spiking:
                parts = []
                if split:
                    parts.append(integrate_and_fire(layer, self.v[index], _rows(dynamic, 0, split), early, split,
                                                    self.net_count[index]))
                if split < steps:
                    parts.append(integrate_and_fire(layer, self.v[index], _rows(dynamic, split, steps), late,
                                                    steps - split, self.net_count[index]))
                spikes[index] = parts[0] if len(parts) == 1 else torch.cat(parts)
            else:
                current = dynamic if dynamic is not None else torch.zeros(
                    (steps, self.B, *layer.shape), dtype=self.x.dtype, device=self.x.device)
                if early is not None and split:
                    current[:split] += early
                if late is not None:
                    current[split:] += late
                membrane = _integrate(layer, current, self.v[index])
                self.v[index] = membrane[-1].clone()
                readout.copy_(membrane.transpose(0, 1).reshape(self.B, steps, -1))
            if layer.role == "output" and layer.spiking:
                # a spike readout counts spikes; the running count lives in the (otherwise unused) net count
                cumulative = torch.cumsum(spikes[index], 0).reshape(steps, self.B, -1) + self.spike_readout[None]
                self.spike_readout = cumulative[-1].clone()
                readout.copy_(cumulative.transpose(0, 1))
            if spikes[index] is not None:
                self._count(index, spikes[index], counts, steps)
            for source in range(index + 1):  # spikes no later layer reads: only the activations of a few layers live
                if self.last_reader[source] == index and spikes[source] is not None:
                    if self.delay:
                        ends[source] = spikes[source][-1].clone()
                    spikes[source] = None
        for index, end in ends.items():  # after every layer has read the previous chunk's last spikes
            self.last[index] = end
        self.t = t1
        return readout, counts

    def _count(self, index: int, s: torch.Tensor, counts: torch.Tensor, steps: int) -> None:
        """Spikes and synaptic events of layer ``index``'s chunk spikes ``s`` into ``counts [B, steps, P, 2]``
        (and the per-neuron counts)."""
        flat = s.reshape(steps * self.B, -1)
        if self.layers[index].negative_spikes or (index == 0 and self.encoding != "analog"):
            flat = flat.abs()
        if self.neuron_counts is not None:
            self.neuron_counts[index] += flat.reshape(steps, self.B, -1).sum(0)
        stats = (flat @ self.layers[index].count_matrix).reshape(steps, self.B, 2)
        counts[:, :, index] = stats.transpose(0, 1)

    def compact(self, keep: torch.Tensor) -> None:
        """Keeps only the rows ``keep`` (indices into the current batch) of every per-item state."""
        B = self.B

        def rows(tensor):
            return tensor[keep] if torch.is_tensor(tensor) and tensor.ndim > 0 and tensor.shape[0] == B else tensor

        self.x = self.x[keep]
        self.v = [rows(v) for v in self.v]
        self.net_count = [rows(c) for c in self.net_count]
        self.last = [rows(s) for s in self.last]
        self.spike_readout = rows(self.spike_readout)
        self.constants = [(rows(early), rows(late)) if self._batched(early, late, i) else (early, late)
                          for i, (early, late) in enumerate(self.constants)]
        if self.encoder is not None:
            self.encoder.compact(keep)
        self.B = int(keep.numel())

    def _batched(self, early, late, index: int) -> bool:
        """Constants carry a batch axis only when they include the analog input's projection."""
        shape = self.layers[index].shape
        return any(torch.is_tensor(c) and c.ndim == len(shape) + 1 for c in (early, late))


def _integrate(layer: Layer, current: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """Membrane of a non-spiking layer after each step of ``current [steps, B, *shape]``."""
    if layer.decay is None and not layer.fixed_point:
        return torch.cumsum(current, 0).add_(v0)
    membrane = torch.empty_like(current)
    v = v0.clone()
    for k in range(current.shape[0]):
        if layer.decay is not None:
            v.mul_(layer.decay)
        v.add_(current[k])
        if layer.fixed_point:
            round_s1615(v)
        membrane[k] = v
    return membrane


def _rows(tensor: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[start:stop]


def simulate_batch(compiled: CompiledNetwork, x: torch.Tensor, T: int, encoding: str, chunk: int,
                   delay: int, seed: int, exit_policy: ExitPolicy | None = None, record_neurons: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Returns ``readout [B, T, C]``, ``counts [B, T, P, 2]`` (spikes, synaptic events per step and
    population; stored as ``[2, B, T, P]``, so that ``counts[..., 0]`` and ``counts[..., 1]`` are each
    contiguous and become the result's arrays without a copy), ``stop [B]`` (1-based exit step; T when
    the item ran to the end) and, with
    ``record_neurons`` (not with early exit), every neuron's spikes over the run ``[B, M]`` (layers
    concatenated in order).

    With ``exit_policy`` items stop at the first step whose confidence passes the threshold and leave
    the batch at the end of that chunk; after its stop an item's readout stays at its value at the
    stop step and its counts are zero (nothing more was simulated for it).
    """
    if record_neurons and exit_policy is not None:
        raise BackendError("per-neuron spike counts are recorded for full runs; run without early exit")
    sim = BatchSimulation(compiled, x, encoding, delay, seed, record_neurons)
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
    return readout, counts, stop, neurons
