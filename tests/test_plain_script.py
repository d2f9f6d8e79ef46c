"""The neuron backend from a plain script: no ``if __name__ == "__main__":`` guard, run as ``python
script.py``. Worker processes that re-imported the caller's main file (``multiprocessing``'s spawn) ran
the script again in every worker and died (BrokenProcessPool); the workers are fresh interpreters now
(``neurodeploy.backends.processes``). The script must also print no warnings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from neurodeploy.backends.processes import run_in_processes
from neurodeploy.errors import BackendError

SCRIPT = textwrap.dedent("""
    import numpy as np
    import torch

    from neurodeploy.backends import RunOptions, get_backend
    from neurodeploy.ir import Dense, Network, NeuronSpec, Population

    print("script body runs")  # once: a worker that re-ran this file would print it again
    rng = np.random.default_rng(0)
    net = Network()
    net.add_population(Population("input", (8,), "input"))
    net.add_population(Population("hidden", (16,), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Dense(rng.uniform(0.0, 0.5, (16, 8)).astype(np.float32))])
    net.connect("hidden", "output", [Dense(rng.normal(0.0, 0.5, (3, 16)).astype(np.float32))])
    net.validate()
    x = torch.as_tensor(rng.uniform(0.0, 1.0, (4, 8)), dtype=torch.float32)
    labels = torch.zeros(4, dtype=torch.long)
    options = RunOptions(T=10, progress=False)
    result = get_backend("neuron", workers=2).run(net, x, labels, options)
    reference = get_backend("gpu", device="cpu", profile="pynn").run(net, x, labels, options)
    assert result.readout.shape == (4, 10, 3), result.readout.shape
    assert result.spike_counts.sum() > 0
    assert (result.predictions() == reference.predictions()).all()
    print("neuron items", result.n_items)
""")


@pytest.mark.slow
def test_neuron_backend_from_a_plain_script(tmp_path):
    pytest.importorskip("pyNN", reason="the neuron extra (PyNN + NEURON) is not installed")
    pytest.importorskip("neuron", reason="the neuron extra (PyNN + NEURON) is not installed")
    script = tmp_path / "plain_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("script body runs") == 1, done.stdout
    assert "neuron items 4" in done.stdout
    assert "warn" not in done.stderr.lower(), done.stderr


def test_worker_processes_return_values_and_raise_what_the_worker_raised():
    import math
    import os

    assert run_in_processes(math.sqrt, [9.0]) == [3.0]
    with pytest.raises(ValueError, match="invalid literal"):
        run_in_processes(int, ["not a number"])
    with pytest.raises(BackendError, match="test worker process 0 exited with status 3"):
        run_in_processes(os._exit, [3], what="test worker")
