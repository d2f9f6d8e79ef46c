"""The reference engine as the scale optimizer's simulator: projections compiled once, thresholds and
initial membranes swapped in per candidate (the interface is ``neurodeploy.optimize.objective.Simulator``).

In a job started by torchrun or an MPI launcher (``neurodeploy.parallel``) the optimization set is split into one
contiguous share per rank: each rank builds a simulator of its share once (the share is sent with the first
candidate; later candidates send their populations only) and returns, per candidate, which of its items are
classified right at each step and its synaptic events per step; rank 0 joins the items in order and adds the
events, sums of whole numbers in float64, so the curves equal one process's bit for bit (``docs/scaling.md``).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import torch

from neurodeploy.backends.gpu.compiled import compile_network, update_thresholds
from neurodeploy.backends.gpu.engine import chunk_steps, simulate_batch
from neurodeploy.errors import BackendError, DataError
from neurodeploy.ir.network import Network
from neurodeploy.parallel import current_team, map_over_ranks

#: this process's share of the optimization set in a launched job, by the token of the simulator it belongs to
#: (one at a time: a new simulator's first candidate replaces it)
_RANK_SHARES: dict[str, AnytimeSimulator] = {}


def _share_totals(args) -> tuple[np.ndarray, np.ndarray]:
    """One rank's per-item correctness and summed events of a candidate (:meth:`AnytimeSimulator.totals`):
    ``(token, setup, network)``; ``setup`` (the share's simulator arguments) comes with a simulator's first
    candidate only."""
    token, setup, network = args
    if setup is not None:
        network_h0, images, labels, T, device, batch_size, budget = setup
        if device.type == "cuda":  # one GPU per rank on a node
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        _RANK_SHARES.clear()
        _RANK_SHARES[token] = AnytimeSimulator(network_h0, images, labels, T, device, batch_size, budget,
                                               over_ranks=False)
    if token not in _RANK_SHARES:
        raise BackendError("this rank holds no share of the optimization set of this simulator (another simulator "
                           "was built since); build one simulator at a time in a launched job")
    return _RANK_SHARES[token].totals(network)


class AnytimeSimulator:
    """Accuracy curve and synaptic events per step of network variants on fixed data.

    network: the network as converted (every variant shares its projections).
    images ``[N, *input_shape]``, labels ``[N]``: the optimization set; T: steps per item (ideal profile,
    analog input). over_ranks: in a launched job, split the items over its ranks (module docstring).
    """

    def __init__(self, network: Network, images: torch.Tensor, labels: torch.Tensor, T: int,
                 device: torch.device, batch_size: int = 1000, memory_budget_mb: float = 64.0,
                 over_ranks: bool = True):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(f"optimization set: {images.shape[0]} images and {labels.shape[0]} labels")
        self.device = device
        self.n_items = int(labels.shape[0])
        self.T = T
        self.budget = memory_budget_mb * 2**20
        team = current_team() if over_ranks else None
        self._shares: list[tuple] | None = None
        if team is not None:
            bounds = np.linspace(0, self.n_items, team.size + 1).astype(int)
            self._token = uuid.uuid4().hex
            self._shares = [(network, images[a:b], labels[a:b], T, device, batch_size, memory_budget_mb)
                            for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
            return
        self.compiled = compile_network(network, self.device)
        self.batches = [(images[i:i + batch_size].to(self.device, torch.float32), labels[i:i + batch_size])
                        for i in range(0, images.shape[0], batch_size)]

    def totals(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(correct [n, T] bool: item n of this process's classified right at step t, synaptic events summed
        over items [T])`` of ``network``; the events are float64 sums of whole numbers (exact, whatever the
        order)."""
        update_thresholds(self.compiled, network, self.device)
        correct = []
        events = torch.zeros(self.T, dtype=torch.float64)
        with torch.inference_mode():
            for x, y in self.batches:
                chunk = chunk_steps(self.compiled, x.shape[0], self.T, self.budget)
                readout, counts, *_ = simulate_batch(self.compiled, x, self.T, "analog", chunk, 0, 0)
                correct.append(readout.argmax(2).cpu() == y[:, None])
                events += counts[..., 1].double().sum(dim=(0, 2)).cpu()
        return torch.cat(correct).numpy(), events.numpy()

    def curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(accuracy [T], mean synaptic events per item [T])`` of ``network``."""
        correct, events = self.item_curves(network)
        return correct.mean(0, dtype=np.float64), events

    def item_curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(correct [N, T] bool: item n classified right at step t, mean synaptic events per item [T])``."""
        if self._shares is None:
            correct, events = self.totals(network)
        else:
            setups = self._shares
            self._shares = [None] * len(setups)  # sent once: the ranks keep their share
            # a candidate differs from the compiled network only in its populations' neurons: the projections
            # (the weights, most of a pickled network) stay home
            neurons = Network(populations=dict(network.populations))
            parts = map_over_ranks(_share_totals, [(self._token, setup, neurons) for setup in setups])
            correct = np.concatenate([part[0] for part in parts])  # the shares are contiguous, in item order
            events = np.sum([part[1] for part in parts], axis=0)
        return correct, events / self.n_items
