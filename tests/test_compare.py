"""Backend comparison metrics by hand, and `neurodeploy compare` across the gpu profiles and NEURON."""

import json

import numpy as np
import pytest

from neurodeploy.errors import ResultFormatError
from neurodeploy.evaluate.compare import (
    comparison_summary,
    neuron_count_agreement,
    prediction_agreement,
    spike_count_agreement,
)
from neurodeploy.evaluate.result import SimulationResult

POPS = {"populations": [{"name": "input", "role": "input", "size": 2}, {"name": "h", "role": "hidden", "size": 3},
                        {"name": "output", "role": "output", "size": 2}]}


def _result(readout, spikes):
    readout = np.asarray(readout, np.float32)
    return SimulationResult(readout, np.zeros(readout.shape[0], np.int64), np.asarray(spikes, np.float32),
                            np.asarray(spikes, np.float32), dict(POPS))


def test_agreement_by_hand():
    a = _result([[[1, 0], [1, 0], [0, 1]], [[0, 1], [0, 1], [0, 1]]], np.ones((2, 3, 3)))
    spikes = np.ones((2, 3, 3))
    spikes[0, 0, 1] = 2
    b = _result([[[1, 0], [0, 1], [0, 1]], [[0, 1], [0, 1], [1, 0]]], spikes)
    np.testing.assert_allclose(prediction_agreement(a, b), [1.0, 0.5, 0.5])
    counts = spike_count_agreement(a, b)
    assert counts["h"]["equal_fraction"] == pytest.approx(5 / 6)
    assert counts["h"]["total_ratio"] == pytest.approx(7 / 6)
    assert counts["input"]["equal_fraction"] == 1.0
    summary = comparison_summary(a, b)
    assert summary["prediction_agreement_min"] == 0.5 and summary["max_readout_difference"] == 1.0


def test_neuron_count_agreement_by_hand():
    a = _result(np.zeros((2, 3, 2)), np.zeros((2, 3, 3)))
    b = _result(np.zeros((2, 3, 2)), np.zeros((2, 3, 3)))
    # per item: input (2, ignored), h (3), output (2)
    a.neuron_counts = np.array([[5, 5, 1, 2, 3, 0, 0], [0, 0, 4, 4, 4, 0, 0]], np.float32)
    b.neuron_counts = np.array([[0, 0, 1, 2, 5, 0, 0], [0, 0, 4, 3, 4, 0, 1]], np.float32)
    agreement = neuron_count_agreement(a, b)
    assert "input" not in agreement
    assert agreement["h"] == {"equal_fraction": pytest.approx(4 / 6), "max_difference": 2.0}
    assert agreement["output"] == {"equal_fraction": pytest.approx(3 / 4), "max_difference": 1.0}
    assert agreement["all"] == {"equal_fraction": pytest.approx(7 / 10), "max_difference": 2.0}
    assert comparison_summary(a, b)["neuron_counts"]["all"]["equal_fraction"] == pytest.approx(0.7)
    a.neuron_counts = None
    assert "neuron_counts" not in comparison_summary(a, b)
    with pytest.raises(ResultFormatError, match="no per-neuron counts"):
        neuron_count_agreement(a, b)


def test_different_runs_are_refused():
    a = _result(np.zeros((2, 3, 2)), np.zeros((2, 3, 3)))
    b = _result(np.zeros((2, 4, 2)), np.zeros((2, 4, 3)))
    with pytest.raises(ResultFormatError, match="different items, steps or classes"):
        prediction_agreement(a, b)


@pytest.mark.slow
def test_cli_compare_gpu_profiles_and_neuron(tmp_path):
    pytest.importorskip("pyNN", reason="the neuron extra (PyNN + NEURON) is not installed")
    from neurodeploy.cli import main
    from neurodeploy.ir import load_network

    backends = "gpu:pynn,neuron,gpu:ideal,gpu:spinnaker,neuron:standard"
    assert main(["compare", "--backends", backends, "--samples", "6", "-T", "20", "--epochs", "1",
                 "--calibration-samples", "300", "--results-dir", str(tmp_path), "--run-id", "c",
                 "--workers", "2", "--no-progress", "--max-fan-in", "200", "--fan-in-epochs", "1"]) == 0
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert report["reference"] == "gpu:pynn" and set(report["backends"]) == set(backends.split(","))
    neuron = report["backends"]["neuron"]["agreement_with_reference"]
    assert neuron["prediction_agreement_min"] == 1.0
    assert all(v["equal_fraction"] >= 0.999 for v in neuron["spike_counts"].values())
    assert neuron["neuron_counts"]["all"]["equal_fraction"] >= 0.999
    # the fan-in pass (784 inputs > 200: the input pooled 2x2 on the host) and ring buffers reach every backend
    network = load_network(tmp_path / "c" / "network.zip")
    assert network.input.shape == (1, 14, 14) and network.metadata["fan_in_pass"]["max_fan_in"] == 200
    assert all("max_expected_summed_weight" in p.metadata for p in network.populations.values() if p.role != "input")
    assert report["backends"]["gpu:ideal"]["pipeline_delay"] == 0
    assert report["backends"]["neuron"]["pipeline_delay"] == 3
    assert (tmp_path / "c" / "accuracy_vs_time.png").is_file()
