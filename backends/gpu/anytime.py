"""The reference engine as the scale optimizer's simulator: projections compiled once, thresholds and
initial membranes swapped in per candidate (the interface is ``neurodeploy.optimize.objective.Simulator``)."""

from __future__ import annotations

import numpy as np
import torch

from neurodeploy.backends.gpu.compiled import compile_network, update_thresholds
from neurodeploy.backends.gpu.engine import chunk_steps, simulate_batch
from neurodeploy.errors import DataError
from neurodeploy.ir.network import Network


class AnytimeSimulator:
    """Accuracy curve and synaptic events per step of network variants on fixed data.

    network: the network as converted (every variant shares its projections).
    images ``[N, *input_shape]``, labels ``[N]``: the optimization set; T: steps per item (ideal profile,
    analog input).
    """

    def __init__(self, network: Network, images: torch.Tensor, labels: torch.Tensor, T: int,
                 device: torch.device, batch_size: int = 1000, memory_budget_mb: float = 64.0):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(f"optimization set: {images.shape[0]} images and {labels.shape[0]} labels")
        self.device = device
        self.compiled = compile_network(network, self.device)
        self.batches = [(images[i:i + batch_size].to(self.device, torch.float32), labels[i:i + batch_size])
                        for i in range(0, images.shape[0], batch_size)]
        self.n_items = int(labels.shape[0])
        self.T = T
        self.budget = memory_budget_mb * 2**20

    def curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(accuracy [T], mean synaptic events per item [T])`` of ``network``."""
        correct, events = self.item_curves(network)
        return correct.mean(0, dtype=np.float64), events

    def item_curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(correct [N, T] bool: item n classified right at step t, mean synaptic events per item [T])``."""
        update_thresholds(self.compiled, network, self.device)
        correct = []
        events = torch.zeros(self.T, dtype=torch.float64)
        with torch.inference_mode():
            for x, y in self.batches:
                chunk = chunk_steps(self.compiled, x.shape[0], self.T, self.budget)
                readout, counts, _, _ = simulate_batch(self.compiled, x, self.T, "analog", chunk, 0, 0)
                correct.append(readout.argmax(2).cpu() == y[:, None])
                events += counts[..., 1].sum(dim=(0, 2)).cpu().double()
        return torch.cat(correct).numpy(), (events / self.n_items).numpy()
