"""neurodeploy: PyTorch ANN -> spiking network IR -> backends -> one shared anytime evaluator.

Subpackages: ``ir`` (the network IR), ``convert`` (torch.fx converter and normalization), ``train``
(seed architectures and training), ``backends`` (simulators), ``evaluate`` (metrics, Dynamic
Confidence, reports), ``data`` (dataset readers and the embedded MNIST subset).
"""

__version__ = "0.1.0"
