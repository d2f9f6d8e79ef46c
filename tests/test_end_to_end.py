"""The main job: CLI commands, summary.json, resume, evaluate, and converted dense MNIST accuracy."""

import json

import numpy as np
import pytest
import torch

from neurodeploy.backends import RunOptions, get_backend
from neurodeploy.cli import main
from neurodeploy.convert import convert
from neurodeploy.evaluate.result import SimulationResult
from neurodeploy.train import evaluate_accuracy

SUMMARY_KEYS = {"backend", "T", "n_items", "ann_accuracy", "snn_accuracy", "peak_accuracy", "accuracy_curve",
                "wall_time_s", "pareto_latency", "pareto_power", "dynamic_confidence", "oracle"}


def test_converted_dense_mnist_tracks_the_ann(mnist, small_dense_model):
    """Scaling bugs (wrong lambda ratio, bias not divided, BN not folded) cost far more than 1 pp."""
    test = mnist.test.head(1000)
    ann = evaluate_accuracy(small_dense_model, test)
    net = convert(small_dense_model, mnist.train.images[:1000])
    result = get_backend("gpu", device="cpu").run(net, test.images, test.labels, RunOptions(T=60, progress=False))
    curve = result.accuracy_curve()
    assert ann > 0.9
    assert abs(curve[-1] - ann) <= 0.01, (curve[-1], ann)
    assert curve[4] < curve[-1]  # it is an anytime curve that rises


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    code = main(["run", "--samples", "300", "-T", "30", "--epochs", "2", "--calibration-samples", "500",
                 "--results-dir", str(root), "--run-id", "first", "--no-progress", "--batch-size", "100"])
    assert code == 0
    return root


def test_run_writes_the_documented_outputs(run_folder):
    folder = run_folder / "first"
    for name in ("result.npz", "summary.json", "curves.csv", "network.zip", "config.json", "accuracy_vs_time.png",
                 "accuracy_vs_events.png", "dc_pareto_front.png", "stop_time_histogram.png", "mean_confidence.png"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["n_items"] == 300 and summary["T"] == 30 and len(summary["accuracy_curve"]) == 30
    assert 0 <= summary["snn_accuracy"] <= 1 and summary["peak_accuracy"] >= summary["snn_accuracy"]
    assert set(summary["pareto_latency"]) == {"raw", "pareto"}
    assert {"alpha", "threshold", "mean_latency", "accuracy", "full_T_accuracy", "step_saving"} <= set(
        summary["dynamic_confidence"])
    assert {"accuracy", "mean_latency"} <= set(summary["oracle"])
    result = SimulationResult.load(folder / "result.npz")
    np.testing.assert_allclose(result.accuracy_curve(), summary["accuracy_curve"])
    from neurodeploy.jobs.models import cache_folder

    assert list(cache_folder().glob("dense_mnist-*.pt"))  # the trained model is cached (NEURODEPLOY_CACHE: conftest)
    assert not (folder / "partial").exists()


def test_rerun_uses_cached_model_and_resumes(run_folder, capsys):
    args = ["run", "--samples", "300", "-T", "30", "--epochs", "2", "--calibration-samples", "500",
            "--results-dir", str(run_folder), "--run-id", "second", "--no-progress", "--batch-size", "100"]
    partial = run_folder / "second" / "partial"
    partial.mkdir(parents=True)
    first = SimulationResult.load(run_folder / "first" / "result.npz")
    first.select(np.arange(100)).save(partial / "batch_0000000.npz")
    (run_folder / "second" / "config.json").unlink(missing_ok=True)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "resuming: 1 finished batches" in out
    second = SimulationResult.load(run_folder / "second" / "result.npz")
    np.testing.assert_array_equal(second.readout, first.readout)


def test_run_id_with_other_settings_is_refused(run_folder, capsys):
    assert main(["run", "--samples", "50", "-T", "5", "--results-dir", str(run_folder), "--run-id", "first",
                 "--no-progress"]) == 2
    assert "holds a run with other settings" in capsys.readouterr().out


def test_evaluate_overlays_saved_results(run_folder, tmp_path, capsys):
    result = run_folder / "first" / "result.npz"
    assert main(["evaluate", str(result), str(result), "--labels", "a,b", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(data) == {"a", "b"} and data["a"]["snn_accuracy"] == data["b"]["snn_accuracy"]
    assert (tmp_path / "accuracy_vs_time.png").is_file()
    assert "comparison" in capsys.readouterr().out


def test_train_convert_info(tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["train", "--epochs", "1", "--out", str(model), "--no-progress"]) == 0
    ir = tmp_path / "m.zip"
    assert main(["convert", str(model), "--out", str(ir), "--granularity", "neuron"]) == 0
    assert main(["info", str(ir)]) == 0
    out = capsys.readouterr().out
    assert "max_fan_in" in out and "784" in out
    # the metadata is a table, and the ANN's per-item record (2,000 entries) is shortened, not printed whole
    assert "granularity" in out and "[2000 values: " in out and len(out) < 8000


def test_long_lists_are_shortened_for_display():
    from neurodeploy.cli.render import brief

    assert brief({"a": list(range(10)), "b": [1, 2], "c": {"d": tuple("abcdefgh")}}) == {
        "a": "[10 values: 0, 1, 2, ...]", "b": [1, 2], "c": {"d": "[8 values: a, b, c, ...]"}}


def test_cli_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"nonsense")
    assert main(["info", str(bad)]) == 2
    assert main(["convert", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert main(["evaluate", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "not a readable IR archive" in out and "not a readable model file" in out
    assert "not a readable result file" in out and "Traceback" not in out


def test_result_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    result = SimulationResult(rng.normal(size=(3, 4, 2)).astype(np.float32), np.array([0, 1, 1]),
                              rng.random((3, 4, 2)).astype(np.float32), rng.random((3, 4, 2)).astype(np.float32),
                              {"backend": "gpu", "T": 4, "nested": {"a": [1, 2]}})
    loaded = SimulationResult.load(result.save(tmp_path / "r.npz"))
    for name in ("readout", "labels", "spike_counts", "synaptic_events"):
        assert np.array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.metadata == result.metadata


def test_device_is_reported(run_folder):
    meta = SimulationResult.load(run_folder / "first" / "result.npz").metadata
    assert meta["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_evaluate_needs_no_simulator(run_folder, tmp_path):
    """A saved result (from any backend) is evaluated with torch and every simulator unimportable."""
    import subprocess
    import sys

    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'pyNN', 'neuron', 'spynnaker'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from neurodeploy.cli import main\n"
        f"sys.exit(main(['evaluate', {str(run_folder / 'first' / 'result.npz')!r}, '--out', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "evaluation.json").is_file()


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    done = subprocess.run([sys.executable, str(example), "--samples", "200", "--T", "20", "--epochs", "1",
                           "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "gpu/ideal" in done.stdout and "gpu/pynn" in done.stdout
    assert (tmp_path / "plots" / "accuracy_vs_time.png").is_file()


DC_REPORT_KEYS = {"ann_accuracy", "full_T", "full_T_accuracy", "dc_accuracy", "dc_mean_latency", "step_saving",
                  "wall_saving", "spikes_per_neuron_full", "spikes_per_neuron_dc", "oracle_accuracy"}


@pytest.mark.slow
def test_dynamic_confidence_example_writes_its_report(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "dynamic_confidence.py"
    done = subprocess.run([sys.executable, str(example), "--archs", "dense_mnist", "--samples", "300",
                           "--epochs", "1", "--quant-epochs", "1", "--T-qcfs", "8", "--T-qffs", "4",
                           "--latency-items", "3", "--out", str(tmp_path / "dc")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "dc" / "dc_report.json").read_text())
    assert [(e["method"], e["arch"]) for e in report] == [("qcfs", "dense_mnist"), ("qffs", "dense_mnist")]
    for entry in report:
        assert set(entry) >= DC_REPORT_KEYS
        assert 1 <= entry["dc_mean_latency"] <= entry["full_T"]
        assert entry["spikes_per_neuron_dc"] <= entry["spikes_per_neuron_full"]
    assert (tmp_path / "dc" / "stop_times_qcfs_dense_mnist.png").is_file()


def test_cli_qcfs_with_early_exit(run_folder):
    assert main(["run", "--conversion", "qcfs", "--samples", "200", "-T", "12", "--epochs", "2",
                 "--quant-epochs", "1", "--calibration-samples", "300", "--results-dir", str(run_folder),
                 "--run-id", "qcfs", "--no-progress", "--exit", "confidence:0.5"]) == 0
    summary = json.loads((run_folder / "qcfs" / "summary.json").read_text())
    early = summary["early_exit"]
    assert early["threshold"] == pytest.approx(0.5) and early["threshold_source"] == "given"
    assert early["n_items"] == summary["dynamic_confidence"]["n_test"]
    exited = SimulationResult.load(run_folder / "qcfs" / "result_exit.npz")
    assert early["mean_latency"] == pytest.approx(exited.stop_times.mean())
    assert main(["run", "--samples", "20", "-T", "4", "--results-dir", str(run_folder), "--run-id", "bad",
                 "--no-progress", "--exit", "timeout:3"]) == 2


def test_train_with_sparsity_finetuning(tmp_path, capsys):
    base = tmp_path / "base.pt"
    assert main(["train", "--epochs", "1", "--out", str(base), "--no-progress"]) == 0
    sparse = tmp_path / "sparse.pt"
    assert main(["train", "--init", str(base), "--finetune-sparsity", "--sparsity-epochs", "1", "--out", str(sparse),
                 "--no-progress"]) == 0
    assert "sparsity fine-tuning" in capsys.readouterr().out
    from neurodeploy.train import load_model

    _, info = load_model(sparse)
    report = info["record"]["sparsity"]
    assert report["after"]["weight_sparsity"] > report["before"]["weight_sparsity"]


def test_optimize_applies_the_fan_in_pass_and_quantization_flags(tmp_path):
    """`optimize` takes --max-fan-in and --quant-bits like `run` (both were once accepted and ignored)."""
    from neurodeploy.ir import load_network

    out = tmp_path / "optimized.zip"
    assert main(["optimize", "--out", str(out), "--epochs", "1", "--conversion", "qcfs", "--quant-bits", "3",
                 "--quant-epochs", "1", "--max-fan-in", "200", "--fan-in-epochs", "1", "--no-sparsity",
                 "--optimize-evals", "3", "--optimize-items", "100", "-T", "8", "--calibration-samples", "300",
                 "--results-dir", str(tmp_path), "--run-id", "o", "--no-progress"]) == 0
    network = load_network(out)
    # 784 inputs > 200: the input is pooled 2x2 on the host
    assert network.input.shape == (1, 14, 14) and network.metadata["fan_in_pass"]["max_fan_in"] == 200
    report = json.loads((tmp_path / "o" / "optimization.json").read_text())
    assert report["fan_in_pass"] == network.metadata["fan_in_pass"]
    assert "3-bit" in report["model"]


def test_cli_qcfs_with_calibrated_initial_membranes(run_folder):
    """--v-init calibrated: the fractions are chosen for the run's T on calibration items and saved in the IR."""
    assert main(["run", "--conversion", "qcfs", "--v-init", "calibrated", "--samples", "200", "-T", "12",
                 "--epochs", "2", "--quant-epochs", "1", "--calibration-samples", "300",
                 "--results-dir", str(run_folder), "--run-id", "qcfs_calibrated", "--no-progress"]) == 0
    folder = run_folder / "qcfs_calibrated"
    assert json.loads((folder / "config.json").read_text())["conversion"]["v_init"] == "calibrated"
    from neurodeploy.ir.io import load_network

    network = load_network(next(folder.glob("*.zip")))
    choice = network.metadata["v_init_calibration"]
    assert choice["T"] == 12 and choice["items"] == 300 and choice["agreement"] >= choice["agreement_before"]
    hidden = [p for p in network.populations.values() if p.role == "hidden"]
    for population in hidden:
        np.testing.assert_allclose(population.neuron.v_init,
                                   choice["fractions"][population.name] * np.asarray(population.neuron.threshold))
