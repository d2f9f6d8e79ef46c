"""Bring your own model: a conv net trained here (not from the zoo), saved as a torch.export program, as a
class plus state_dict and as a trusted pickled module, gives the same IR and the same SNN accuracy through
the CLI; converted networks run without their model; array data of any item shape; unsafe files refused."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.data import Split
from neurodeploy.ir import load_network
from neurodeploy.train import TrainConfig, evaluate_accuracy, train_model

MODELS = '''
import torch
import torch.nn as nn


class SmallConv(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 5, stride=2)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(channels * 36, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))
'''
QUICK = ["--samples", "200", "--no-progress", "--calibration-samples", "500", "--batch-size", "200"]


def _lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mnist):
    """The conv net trained 1 epoch on 3,000 digits, saved the three ways."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "my_models.py").write_text(MODELS)
    sys.path.insert(0, str(folder))
    try:
        import my_models

        torch.manual_seed(0)
        model = my_models.SmallConv(channels=4)
        train_model(model, Split(mnist.train.images[:3000], mnist.train.labels[:3000]), TrainConfig(epochs=1, seed=0),
                    progress=False)
        model.eval()
        torch.export.save(torch.export.export(model, (mnist.train.images[:1].clone(),)), folder / "net.pt2")
        torch.save(model.state_dict(), folder / "state.pt")
        torch.save(model, folder / "whole.pt")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("my_models", None)
    ways = {"export": ["--model", str(folder / "net.pt2")],
            "class": ["--model-class", f"{folder / 'my_models.py'}:SmallConv", "--model-kwargs", '{"channels": 4}',
                      "--weights", str(folder / "state.pt")],
            "pickle": ["--model", str(folder / "whole.pt"), "--trust-pickle"]}
    return folder, ways, evaluate_accuracy(model, mnist.test.head(200))


def test_three_ways_give_the_same_ir_and_snn_accuracy(saved, monkeypatch, capsys):
    folder, ways, ann = saved
    monkeypatch.chdir(folder)
    networks, summaries = {}, {}
    for name, flags in ways.items():
        model_flags = flags[1:] if flags[0] == "--model" else flags  # convert takes the file as its argument
        assert main(["convert", *model_flags, "--out", f"{name}.zip", "--calibration-samples", "500",
                     "--no-progress"]) == 0, _lines(capsys)
        networks[name] = load_network(folder / f"{name}.zip")
        assert main(["run", *flags, *QUICK, "-T", "200", "--run-id", f"run-{name}"]) == 0, _lines(capsys)
        summaries[name] = json.loads((folder / "results" / f"run-{name}" / "summary.json").read_text())
    reference = networks["export"]
    for name, network in networks.items():
        assert [(p.source, p.target) for p in network.projections] == [(p.source, p.target) for p in
                                                                         reference.projections]
        for mine, theirs in zip(network.projections, reference.projections, strict=True):
            for op, op_ref in zip(mine.ops, theirs.ops, strict=True):
                for key, array in op.arrays().items():
                    assert np.array_equal(array, op_ref.arrays()[key]), (name, mine.target, key)
        for pop in network.populations:
            bias, bias_ref = network.populations[pop].bias, reference.populations[pop].bias
            assert (bias is None and bias_ref is None) or np.array_equal(bias, bias_ref), (name, pop)
    accuracies = {name: s["snn_accuracy"] for name, s in summaries.items()}
    assert len(set(accuracies.values())) == 1, accuracies
    assert all(s["ann_accuracy"] == ann for s in summaries.values())
    assert abs(accuracies["export"] - ann) <= 0.01, (accuracies, ann)


def test_run_network_reproduces_the_run_that_wrote_it(saved, monkeypatch, capsys):
    folder, ways, _ = saved
    monkeypatch.chdir(folder)
    settings = [*QUICK, "-T", "40"]
    assert main(["run", *ways["export"], *settings, "--run-id", "made"]) == 0, _lines(capsys)
    assert main(["run", "--optimize", "--no-sparsity", "--optimize-evals", "3", "--optimize-items", "100",
                 *ways["export"], *settings, "--run-id", "made-opt"]) == 0, _lines(capsys)
    for made in ("made", "made-opt"):
        assert main(["run", "--network", f"results/{made}/network.zip", *settings, "--run-id", f"{made}-again"]) == 0
        first = json.loads((folder / "results" / made / "summary.json").read_text())
        again = json.loads((folder / "results" / f"{made}-again" / "summary.json").read_text())
        for key in ("ann_accuracy", "snn_accuracy", "peak_accuracy", "accuracy_curve", "pareto_latency",
                    "pareto_power", "time_to_target", "dynamic_confidence", "spikes_per_neuron"):
            assert again[key] == first[key], (made, key)
    # a converted network: a* from its record (measured on all test items, so any first n of them)
    assert main(["convert", str(folder / "net.pt2"), "--out", "conv.zip", "--no-progress",
                 "--calibration-samples", "500"]) == 0
    assert main(["run", "--network", "conv.zip", *settings, "--run-id", "conv"]) == 0
    assert json.loads((folder / "results" / "conv" / "summary.json").read_text())["ann_accuracy"] == \
        json.loads((folder / "results" / "made" / "summary.json").read_text())["ann_accuracy"]


def test_a_network_without_a_record_reports_a_star_absent(saved, monkeypatch, capsys):
    from neurodeploy.ir import save_network

    folder, _, _ = saved
    monkeypatch.chdir(folder)
    assert main(["convert", str(folder / "net.pt2"), "--out", "bare.zip", "--no-progress"]) == 0
    network = load_network("bare.zip")
    del network.metadata["ann_accuracy"]
    save_network(network, "bare.zip")
    capsys.readouterr()
    assert main(["run", "--network", "bare.zip", "--samples", "50", "-T", "10", "--no-progress",
                 "--run-id", "bare"]) == 0
    summary = json.loads((folder / "results" / "bare" / "summary.json").read_text())
    assert summary["ann_accuracy"] is None and summary["pareto_latency"]["pareto"] is None
    assert "no ANN accuracy" in summary["ann_accuracy_absent"] and summary["snn_accuracy"] > 0.5
    assert "absent (no a*)" in capsys.readouterr().out


def test_a_pickle_payload_never_runs_without_trust_pickle(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    torch.save(Payload(), tmp_path / "evil.pt")
    monkeypatch.chdir(tmp_path)
    for argv in (["run", "--model", "evil.pt", "--samples", "10"], ["convert", "evil.pt", "--out", "x.zip"]):
        code = main(argv)
        lines = _lines(capsys)
        assert code == 2 and len(lines) == 1 and "--trust-pickle" in lines[0], lines
        assert not marker.exists()


def test_torchscript_is_refused_with_the_export_line(saved, tmp_path, capsys):
    folder, _, _ = saved
    script = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    torch.jit.save(script, tmp_path / "scripted.pt")
    code = main(["run", "--model", str(tmp_path / "scripted.pt"), "--samples", "10", "--results-dir",
                 str(tmp_path / "r")])
    lines = _lines(capsys)
    assert code == 2 and len(lines) == 1 and "TorchScript" in lines[0] and "torch.export.save" in lines[0], lines


def _vectors(path, shape, seed=0):
    """3 classes separable by the mean of the item, any item shape; an .npz of the four arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 600), ("test", 150)):
        y = rng.integers(0, 3, n)
        x = rng.normal(0, 0.3, (n, *shape)).astype(np.float32) + y.reshape(-1, *[1] * len(shape)) * 1.5
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.clip(x, 0, None).astype(np.float32), y
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_vectors_and_1d_signals_from_npz_run_or_give_one_line(kind, tmp_path, monkeypatch, capsys):
    shape = (32,) if kind == "linear" else (2, 32)
    arrays = _vectors(tmp_path / "data.npz", shape)
    torch.manual_seed(0)
    if kind == "linear":
        model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    else:
        model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 30, 3))
    train = Split(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]))
    train_model(model, train, TrainConfig(epochs=20, seed=0), progress=False)
    model.eval()
    torch.export.save(torch.export.export(model, (train.images[:1].clone(),)), tmp_path / "model.pt2")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--model", "model.pt2", "--data", "data.npz", "-T", "50", "--no-progress",
                 "--calibration-samples", "300", "--run-id", kind])
    lines = _lines(capsys)
    assert code in (0, 2), lines
    if code == 2:
        assert len(lines) == 1, lines
        return
    summary = json.loads((tmp_path / "results" / kind / "summary.json").read_text())
    assert summary["n_items"] == 150 and summary["ann_accuracy"] > 0.8
    assert abs(summary["snn_accuracy"] - summary["ann_accuracy"]) <= 0.05, summary["snn_accuracy"]


def test_data_that_does_not_fit_the_model_is_refused_before_work(tmp_path, monkeypatch, capsys):
    _vectors(tmp_path / "data.npz", (20,))
    model = torch.nn.Sequential(torch.nn.Linear(32, 3))
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 32),)), tmp_path / "model.pt2")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--model", "model.pt2", "--data", "data.npz", "--no-progress"])
    lines = _lines(capsys)
    assert code == 2 and len(lines) == 1 and "[20]" in lines[0] and "[32]" in lines[0], lines
    assert not (tmp_path / "results").exists()


def test_unknown_aten_ops_reach_the_refusal_table(tmp_path, monkeypatch, capsys):
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(x.flatten(1)[:, :10])

    torch.export.save(torch.export.export(Odd(), (torch.zeros(1, 1, 28, 28),)), tmp_path / "odd.pt2")
    code = main(["convert", str(tmp_path / "odd.pt2"), "--out", str(tmp_path / "o.zip"), "--no-progress"])
    lines = _lines(capsys)
    assert code == 2 and len(lines) == 1 and ("slice" in lines[0] or "sigmoid" in lines[0]), lines


def test_the_model_cache_follows_cache_dir_and_the_environment(tmp_path, monkeypatch, capsys):
    from neurodeploy.jobs.models import cache_folder

    monkeypatch.setenv("NEURODEPLOY_CACHE", str(tmp_path / "env"))
    assert cache_folder() == tmp_path / "env" and cache_folder(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("NEURODEPLOY_CACHE")
    import platformdirs

    assert str(cache_folder()).startswith(platformdirs.user_cache_dir("neurodeploy"))
