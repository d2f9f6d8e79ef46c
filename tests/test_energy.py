"""Energy estimates (``neurodeploy.evaluate.energy``) against values computed by hand from the published
figures: Loihi 23.6 pJ per synaptic operation; SpiNNaker 1 nJ per 40-bit packet, 0.35 W per chip and
0.034 W per active core; 45 nm CMOS 4.6 pJ per fp32 MAC and 0.9 pJ per fp32 add."""

from __future__ import annotations

import numpy as np
import pytest

from neurodeploy.evaluate.energy import (
    ann_operations,
    energy_per_inference,
    estimate_cores,
    format_joules,
    result_energy,
)
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.evaluate.summary import summarize
from neurodeploy.ir import AvgPool2d, Conv2d, Dense, Flatten, Network, NeuronSpec, Population
from neurodeploy.ir.ops import AvgPool1d, Conv1d, Gather, SpatialLinear
from neurodeploy.targets import spinnaker


def small_conv_network() -> Network:
    """input (1, 6, 6) -conv 3x3-> hidden (2, 4, 4) -avgpool 2, flatten, dense-> output (3)."""
    net = Network()
    net.add_population(Population("input", (1, 6, 6), "input"))
    net.add_population(Population("hidden", (2, 4, 4), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Conv2d(np.ones((2, 1, 3, 3), np.float32))])
    net.connect("hidden", "output", [AvgPool2d(2, 2), Flatten(), Dense(np.ones((3, 8), np.float32))])
    return net.validate()


def test_published_constants():
    assert pytest.approx(1e-9) == spinnaker.JOULES_PER_PACKET  # 40 bits x 25 pJ
    assert pytest.approx(1.8e-9) == spinnaker.JOULES_PER_PACKET_WITH_PAYLOAD  # 72 bits x 25 pJ
    assert (spinnaker.WATTS_PER_IDLE_CHIP, spinnaker.WATTS_PER_ACTIVE_CORE) == (0.35, 0.034)


def test_ann_operations_by_hand():
    ops = ann_operations(small_conv_network())
    # conv: 2 x 4 x 4 outputs x (1 x 3 x 3) weights = 288 MACs; dense 3 x 8 = 24
    assert ops["macs"] == 288 + 24
    assert ops["input_macs"] == 288
    # pooling: 2 x 2 x 2 outputs x 4 additions = 32; biases: 32 hidden + 3 output neurons
    assert ops["accumulates"] == 32 + 35


def test_ann_operations_of_one_dimensional_and_linear_map_ops():
    """Conv1d counts MACs, AvgPool1d and SpatialLinear count window additions, a Gather nothing."""
    adaptive = np.zeros((3, 4), np.float32)  # adaptive average pooling 4 -> 3: windows [0, 2), [1, 3), [2, 4)
    for i in range(3):
        adaptive[i, i:i + 2] = 0.5
    net = Network()
    net.add_population(Population("input", (1, 6), "input"))
    net.add_population(Population("hidden", (2, 4), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("pooled", (2, 2), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Conv1d(np.ones((2, 1, 3), np.float32))])
    net.connect("hidden", "pooled", [AvgPool1d(2, 2)])
    net.connect("hidden", "output", [SpatialLinear(adaptive), Gather(np.arange(6)[::-1].copy()),
                                     Dense(np.ones((3, 6), np.float32))])
    net.connect("pooled", "output", [Flatten(), Dense(np.ones((3, 4), np.float32))])
    ops = ann_operations(net.validate())
    # conv1d: 2 x 4 outputs x 3 weights = 24; dense 3 x 6 = 18 and 3 x 4 = 12
    assert ops["macs"] == 24 + 18 + 12
    assert ops["input_macs"] == 24
    # avgpool1d: 2 x 2 outputs x 2 = 8; spatial linear: 2 channels x 6 non-zeros = 12; the gather: 0;
    # biases: 8 + 4 hidden neurons, 3 output neurons x 2 incoming projections
    assert ops["accumulates"] == 8 + 12 + 8 + 4 + 6


def test_ann_operations_of_dense_mnist_shape():
    net = Network()
    net.add_population(Population("input", (784,), "input"))
    net.add_population(Population("h1", (128,), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("h2", (128,), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (10,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "h1", [Dense(np.zeros((128, 784), np.float32))])  # zero weights count: dense hardware
    net.connect("h1", "h2", [Dense(np.ones((128, 128), np.float32))])
    net.connect("h2", "output", [Dense(np.ones((10, 128), np.float32))])
    ops = ann_operations(net.validate())
    assert ops == {"macs": 100352 + 16384 + 1280, "accumulates": 266, "input_macs": 100352}


def test_energy_per_inference_by_hand():
    ann = {"macs": 312, "accumulates": 67, "input_macs": 288}
    out = energy_per_inference(synaptic_events=1000, spikes=200, T=100, dt_ms=1.0, ann=ann, cores=3, chips=1)
    assert out["loihi"]["joules"] == pytest.approx(1000 * 23.6e-12)  # 23.6 nJ
    # 200 packets x 1 nJ + 0.1 s x (1 chip x 0.35 W + 3 cores x 0.034 W) = 2e-7 + 0.0452
    assert out["spinnaker1"]["packets_joules"] == pytest.approx(2e-7)
    assert out["spinnaker1"]["static_joules"] == pytest.approx(0.0452)
    assert out["spinnaker1"]["joules"] == pytest.approx(0.0452002)
    assert out["cmos45_snn"]["joules"] == pytest.approx(1000 * 0.9e-12 + 288 * 4.6e-12)  # 2.2248 nJ
    assert out["cmos45_ann"]["joules"] == pytest.approx(312 * 4.6e-12 + 67 * 0.9e-12)  # 1.4955 nJ
    assert all(entry["source"] and entry["formula"] for entry in out.values())
    without = energy_per_inference(1000, 200, 100)
    assert set(without) == {"loihi", "cmos45_snn"}  # no mapping: no SpiNNaker figure; no ANN: no ANN figure


def test_spinnaker_static_energy_lasts_the_substepped_board_time():
    """K = 4 ticks per step at time_scale_factor 4: 100 steps last 400 ms of board time, so the static term is
    0.4 s x (1 x 0.35 W + 3 x 0.034 W) = 0.1808 J; the packets' term does not change (200 x 1 nJ)."""
    out = energy_per_inference(synaptic_events=1000, spikes=200, T=100, dt_ms=1.0, cores=3, chips=1, substeps=4)
    assert out["spinnaker1"]["static_joules"] == pytest.approx(0.1808)
    assert out["spinnaker1"]["packets_joules"] == pytest.approx(2e-7)
    assert "400 ms x (1 chips" in out["spinnaker1"]["formula"]
    assert out["loihi"]["joules"] == pytest.approx(1000 * 23.6e-12)  # no board time in the other platforms


def test_estimated_cores_and_chips():
    sizes = [{"size": 784}, {"size": 128}, {"size": 128}, {"size": 10}]
    assert estimate_cores(sizes) == (7 + 1 + 1 + 1, 1)
    assert estimate_cores([{"size": 128 * 17}, {"size": 1}]) == (18, 2)


def _result(mapping=None, substeps=None) -> SimulationResult:
    N, T = 4, 10
    spikes = np.zeros((N, T, 3), np.float32)
    spikes[:, :, 1] = 2.0  # 2 hidden spikes per step and item: 20 per item
    events = spikes * 5.0  # fan-out 5: 100 events per item
    readout = np.zeros((N, T, 3), np.float32)
    readout[np.arange(N), :, np.arange(N) % 3] = 1.0
    metadata = {"backend": "test", "T": T, "dt_ms": 1.0, "ann_accuracy": 1.0,
                "populations": [{"name": "input", "role": "input", "size": 36},
                                {"name": "hidden", "role": "hidden", "size": 32},
                                {"name": "output", "role": "output", "size": 3}],
                "ann_operations": {"macs": 312, "accumulates": 67, "input_macs": 288}}
    if mapping:
        metadata["mapping"] = mapping
    if substeps:
        metadata["substeps"] = substeps
    return SimulationResult(readout, np.arange(N) % 3, spikes, events, metadata)


def test_result_energy_from_counts_and_mapping():
    estimated = result_energy(_result(), 100.0)
    assert estimated["estimate"] is True and estimated["counts"]["spikes"] == 20.0
    assert estimated["counts"]["spinnaker_cores"] == 1 + 1 + 1  # 36, 32 and 3 neurons at 128 per core
    mapped = result_energy(_result({"cores": 5, "chips": 2}), 100.0)
    assert mapped["counts"]["spinnaker_cores_from"] == "mapping"
    # 20 packets x 1 nJ + 10 ms x (2 x 0.35 W + 5 x 0.034 W)
    assert mapped["platforms"]["spinnaker1"]["joules"] == pytest.approx(20e-9 + 0.01 * (0.7 + 0.17))
    substepped = result_energy(_result({"cores": 5, "chips": 2}, substeps=2), 100.0)
    # the result of a run at K = 2 (its metadata's substeps): 20 ms of board time for 10 steps
    assert substepped["counts"]["substeps"] == 2
    assert substepped["platforms"]["spinnaker1"]["joules"] == pytest.approx(20e-9 + 0.02 * (0.7 + 0.17))


def test_summary_reports_energy():
    summary, _ = summarize(_result(), 1.0)
    energy = summary["energy"]
    assert summary["synaptic_events_per_item"] == pytest.approx(100.0)
    assert energy["platforms"]["loihi"]["joules"] == pytest.approx(100 * 23.6e-12)
    assert energy["platforms"]["cmos45_ann"]["joules"] == pytest.approx(312 * 4.6e-12 + 67 * 0.9e-12)


def test_format_joules():
    assert format_joules(2.33e-6) == "2.33 µJ"
    assert format_joules(0.0345) == "34.5 mJ"
    assert format_joules(5.5e-7) == "550 nJ"
    assert format_joules(None) == "n/a"
