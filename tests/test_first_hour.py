"""What a new user meets in the first hour (issue 32): messages that say what to do instead, "did you
mean" for mistyped flags and choices, a missing extra found before any work, ``-q`` naming the run
folder, and a data set whose repr fits on a line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.cli import main
from neurodeploy.data import load_dataset


def one_error_line(argv, capsys) -> str:
    """Runs the CLI; asserts exit status 2 and a single output line, which it returns."""
    try:
        code = main(argv)
    except SystemExit as done:  # usage errors from the parser
        code = done.code
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURODEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("argv, suggestion", [
    (["run", "--smaples", "200"], "--smaples: did you mean --samples?"),
    (["run", "--samples", "20", "--dc-rulle", "stable"], "--dc-rulle: did you mean --dc-rule?"),
    (["run", "--backend", "nueron"], "did you mean neuron?"),
    (["run", "--dc-rule", "fastst"], "did you mean fastest?"),
    (["rnu"], "did you mean run?"),
    (["compare", "--backends", "gpu:pyn"], "did you mean pynn?"),  # a backend's own choice, checked by it
])
def test_mistyped_flag_or_choice_gets_did_you_mean(argv, suggestion, folder, capsys):
    assert suggestion in one_error_line(argv, capsys)


def test_a_mistyped_flag_points_to_the_subcommands_help(folder, capsys):
    line = one_error_line(["run", "--smaples", "200"], capsys)
    assert line.startswith("error: neurodeploy run: unrecognized arguments: --smaples 200")
    assert line.endswith("(see neurodeploy run --help)")


def test_far_off_words_get_no_suggestion(folder, capsys):
    line = one_error_line(["run", "--dc-rule", "xyzzy"], capsys)
    assert "did you mean" not in line and "invalid choice: 'xyzzy'" in line


def test_model_given_as_python_file_points_to_model_class(folder, capsys):
    (folder / "mine.py").write_text("import torch\n")
    line = one_error_line(["run", "--model", "mine.py"], capsys)
    assert "--model-class mine.py:ClassName --weights" in line


def test_network_given_a_trained_model_points_to_model(folder, capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), folder / "model.pt2")
    torch.save(model.state_dict(), folder / "state.pt")
    for name in ("model.pt2", "state.pt"):
        line = one_error_line(["run", "--network", name], capsys)
        assert f"a trained model, not a converted network; run it with --model {name}" in line


def test_a_test_label_outside_the_training_classes_is_reported_in_the_test_split(folder, capsys):
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x_train=rng.random((30, 4), dtype=np.float32), y_train=np.arange(30) % 3,
             x_test=rng.random((5, 4), dtype=np.float32), y_test=np.array([0, 1, 7, 2, 1]))
    line = one_error_line(["run", "--data", "data.npz", "--samples", "5"], capsys)
    assert "test item 2 has label 7, but the training split's labels stop at 2" in line
    assert "never occurs" not in line


def test_missing_extra_is_found_before_any_work_with_the_install_command(folder, capsys, monkeypatch):
    from neurodeploy.backends.neuron import NeuronBackend

    monkeypatch.setattr(NeuronBackend, "requires_modules", ("neurodeploy_module_not_installed",))
    line = one_error_line(["run", "--backend", "neuron", "--samples", "5"], capsys)
    assert "neurodeploy_module_not_installed" in line
    assert 'pip install -c constraints-cpu.txt -e ".[neuron]"' in line
    assert not (folder / "cache").exists() and not (folder / "results").exists()  # nothing trained or written
    line = one_error_line(["compare", "--backends", "gpu:pynn,neuron"], capsys)
    assert 'pip install -c constraints-cpu.txt -e ".[neuron]"' in line
    assert main(["backends"]) == 0
    listing = capsys.readouterr().out
    assert 'neuron     missing neurodeploy_module_not_installed: pip install -c constraints-cpu.txt -e ".[neuron]"' \
        in listing
    assert "gpu        installed" in listing


def test_backends_says_which_are_installed(capsys):
    from neurodeploy.backends import backend_class

    assert main(["backends"]) == 0
    listing = capsys.readouterr().out
    for name in ("gpu", "neuron", "spinnaker"):
        state = "installed" if not backend_class(name).missing_modules() else "missing"
        assert f"{name:10s} {state}" in listing
    # the conversion features each backend implements, which a job checks before any work
    assert "conversion features: spike caps, negative spikes" in listing.split("neuron     ")[0]  # gpu's entry
    assert listing.split("neuron     ")[1].split("\n")[2].strip() == "conversion features: none"


def test_quiet_run_prints_the_table_and_the_run_folder(folder, capsys, monkeypatch):
    import logging
    import warnings

    from neurodeploy.cli import render

    monkeypatch.setenv("PYTHONWARNINGS", "")  # restored afterwards, as everything -q changes in this process
    monkeypatch.delenv(render.LOG_LEVEL_VARIABLE, raising=False)
    level = logging.getLogger().level
    with warnings.catch_warnings():
        try:
            assert main(["-q", "run", "--samples", "20", "-T", "5", "--epochs", "1", "--run-id", "quiet"]) == 0
        finally:
            render.configure(type("Args", (), {"quiet": False, "verbose": 0})())
            logging.getLogger().setLevel(level)
    out = capsys.readouterr().out
    assert "results written to results/quiet/" in out
    assert "simulating" not in out and "training" not in out  # no stage lines


def test_dataset_repr_shows_shapes_not_tensors():
    data = load_dataset()
    text = repr(data)
    assert len(text) < 300 and "\n" not in text and "tensor(" not in text
    assert "8000 items" in text and "2000 items" in text and "10 classes" in text and "[1, 28, 28]" in text
    assert repr(data.test.head(3)) == "Split(3 items: images torch.float32 [3, 1, 28, 28], labels torch.int64 [3])"


def small_dense_network():
    """input (4) -> hidden (5) -> output (3), dense weights with no zeros: 5 x 4 + 3 x 5 = 35 synapses and
    5 + 3 = 8 neurons (the input's are not neurons)."""
    from neurodeploy.ir import Dense, Network, NeuronSpec, Population

    rng = np.random.default_rng(0)
    net = Network()
    net.add_population(Population("input", (4,), "input"))
    net.add_population(Population("hidden", (5,), "hidden", NeuronSpec(threshold=1.0)))
    net.add_population(Population("output", (3,), "output", NeuronSpec(readout="membrane")))
    net.connect("input", "hidden", [Dense(rng.uniform(0.1, 1.0, (5, 4)).astype(np.float32))])
    net.connect("hidden", "output", [Dense(rng.uniform(0.1, 1.0, (3, 5)).astype(np.float32))])
    return net.validate()


def test_neuron_build_is_announced_with_its_size_and_an_estimate(tmp_path, monkeypatch):
    """The stage line comes before the build (deploy emits it before mapping and running), with the
    neuron and synapse counts and the 10-30 us per synapse range."""
    from neurodeploy.backends import get_backend
    from neurodeploy.ir.connectivity import size
    from neurodeploy.jobs.config import JobConfig
    from neurodeploy.jobs.run import deploy

    network = small_dense_network()
    assert size(network) == (8, 35)
    events = []
    backend = get_backend("neuron", workers=1)
    deploy(backend, network, tmp_path, JobConfig(backend="neuron", backend_options={"workers": 1}), events.append)
    stages = [e.message for e in events if e.kind == "stage"]
    assert stages == ["building the network in NEURON (8 neurons, 35 synapses, 1 worker): estimated 0 s to 0 s "
                      "before the first item"]
    from neurodeploy.ir import connectivity  # the same rule for 17.2 M synapses: 172 s to 516 s

    monkeypatch.setattr(connectivity, "size", lambda _: (84_810, 17_200_000))
    assert backend.build_estimate(network).endswith("estimated 3 min to 9 min before the first item")

def test_spinnaker_mapping_is_announced_with_its_size():
    from neurodeploy.backends import get_backend

    line = get_backend("spinnaker", connectors="fromlist").build_estimate(small_dense_network())
    assert line.startswith("mapping the network with sPyNNaker (8 neurons, 35 synapses, fromlist connectors)")


def test_an_interrupted_run_names_the_run_id_that_resumes_it(folder, capsys, monkeypatch):
    from neurodeploy.cli import commands

    def interrupt_at_simulation(event):  # Ctrl-C once the run folder holds the converted network
        if event.kind == "stage" and event.message.startswith("simulating"):
            raise KeyboardInterrupt
    monkeypatch.setattr(commands, "render", interrupt_at_simulation)
    assert main(["run", "--samples", "20", "-T", "5", "--epochs", "1", "--no-progress"]) == 130
    line = capsys.readouterr().out.strip().splitlines()[-1]
    run_id = line.removeprefix("interrupted; run again with --run-id ").removesuffix(" to resume")
    assert line != run_id and (folder / "results" / run_id / "network.zip").is_file()

