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


def test_quiet_run_prints_the_table_and_the_run_folder(folder, capsys):
    assert main(["-q", "run", "--samples", "20", "-T", "5", "--epochs", "1", "--run-id", "quiet"]) == 0
    out = capsys.readouterr().out
    assert "results written to results/quiet/" in out
    assert "simulating" not in out and "training" not in out  # no stage lines


def test_dataset_repr_shows_shapes_not_tensors():
    data = load_dataset()
    text = repr(data)
    assert len(text) < 300 and "\n" not in text and "tensor(" not in text
    assert "8000 items" in text and "2000 items" in text and "10 classes" in text and "[1, 28, 28]" in text
    assert repr(data.test.head(3)) == "Split(3 items: images torch.float32 [3, 1, 28, 28], labels torch.int64 [3])"
