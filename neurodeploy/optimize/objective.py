"""The objective of the scale optimizer (Dutson et al., WACV 2023, section 4.2):

    L_SNN = lambda_e * (1 - peak accuracy) + lambda_l * P_l + lambda_p * P_p

measured by simulating the network on an optimization set (never the test split). lambda_l = 1 / P_l(H0)
and lambda_p = 1 / P_p(H0), with H0 the heuristic scaling the search starts from, so both terms are 1 at
H0; lambda_e is given (the paper: 200 for MNIST models, 50 for CIFAR). P_l and P_p are the Pareto forms
of :mod:`neurodeploy.evaluate.metrics`.

The simulator is the reference engine with the projections compiled once: a candidate only changes
thresholds and initial membranes (:class:`ScaleSpace`), which are swapped into the compiled network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from neurodeploy.backends.gpu.compiled import compile_network, update_thresholds
from neurodeploy.backends.gpu.engine import chunk_steps, simulate_batch
from neurodeploy.errors import DataError
from neurodeploy.evaluate.metrics import pareto_latency, pareto_power
from neurodeploy.ir.network import Network
from neurodeploy.optimize.parameters import ScaleSpace


@dataclass(frozen=True)
class Measurement:
    """The anytime metrics of one simulated candidate (Pareto forms; P_l in steps, P_p in events)."""

    peak_accuracy: float
    pareto_latency: float
    pareto_power: float

    def as_dict(self) -> dict:
        return asdict(self)


class CachedSimulator:
    """Accuracy curve and synaptic events per step of network variants on fixed data.

    network: the network as converted (every variant shares its projections).
    images ``[N, *input_shape]``, labels ``[N]``: the optimization set; T: steps per item.
    """

    def __init__(self, network: Network, images: torch.Tensor, labels: torch.Tensor, T: int,
                 device: str | torch.device = "cpu", batch_size: int = 1000, memory_budget_mb: float = 64.0):
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(f"optimization set: {images.shape[0]} images and {labels.shape[0]} labels")
        self.device = torch.device(device)
        self.compiled = compile_network(network, self.device)
        self.batches = [(images[i:i + batch_size].to(self.device, torch.float32), labels[i:i + batch_size])
                        for i in range(0, images.shape[0], batch_size)]
        self.n_items = int(labels.shape[0])
        self.T = T
        self.budget = memory_budget_mb * 2**20

    def curves(self, network: Network) -> tuple[np.ndarray, np.ndarray]:
        """``(accuracy [T], mean synaptic events per item [T])`` of ``network``."""
        update_thresholds(self.compiled, network, self.device)
        correct = torch.zeros(self.T, dtype=torch.float64)
        events = torch.zeros(self.T, dtype=torch.float64)
        with torch.inference_mode():
            for x, y in self.batches:
                chunk = chunk_steps(self.compiled, x.shape[0], self.T, self.budget)
                readout, counts, _, _ = simulate_batch(self.compiled, x, self.T, "analog", chunk, 0, 0)
                correct += (readout.argmax(2).cpu() == y[:, None]).sum(0).double()
                events += counts[..., 1].sum(dim=(0, 2)).cpu().double()
        return (correct / self.n_items).numpy(), (events / self.n_items).numpy()


@dataclass
class AnytimeObjective:
    """L_SNN of a parameter vector; :meth:`calibrate` with the measurement of H0 sets lambda_l, lambda_p."""

    simulator: CachedSimulator
    space: ScaleSpace
    network: Network
    ann_accuracy: float
    lambda_e: float
    lambda_l: float = 1.0
    lambda_p: float = 1.0

    def measure(self, x: np.ndarray) -> Measurement:
        """Simulates the candidate ``x`` on the optimization set."""
        accuracy, events = self.simulator.curves(self.space.apply(self.network, x))
        return Measurement(float(accuracy.max()), pareto_latency(accuracy, self.ann_accuracy),
                           pareto_power(accuracy, self.ann_accuracy, events))

    def loss(self, m: Measurement) -> float:
        return self.lambda_e * (1.0 - m.peak_accuracy) + self.lambda_l * m.pareto_latency \
            + self.lambda_p * m.pareto_power

    def calibrate(self, start: Measurement) -> None:
        """lambda_l = 1 / P_l(H0) and lambda_p = 1 / P_p(H0) (1 where that is 0)."""
        self.lambda_l = 1.0 / start.pareto_latency if start.pareto_latency > 0 else 1.0
        self.lambda_p = 1.0 / start.pareto_power if start.pareto_power > 0 else 1.0
