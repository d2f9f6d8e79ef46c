"""neurodeploy: PyTorch ANN -> spiking network IR -> backends -> one shared anytime evaluator.

Subpackages: ``ir`` (the network IR), ``convert`` (torch.fx converter and normalization), ``passes``
(IR -> IR functions), ``targets`` (what one kind of hardware computes), ``train`` (seed architectures,
training, model files), ``optimize`` (scale optimization), ``evaluate`` (results, metrics, Dynamic
Confidence, summaries, plots), ``data`` (dataset readers and the embedded MNIST subset), ``jobs`` (the
orchestration: settings, model cache, the run, compare and optimize jobs) and ``cli`` (the command
line); the backends are ``neurodeploy.backends``. Definitions: ``docs/semantics.md``.
"""

__version__ = "0.1.0"
