"""The tfp-bcnn command: the quick main job end to end, and clear errors."""

import json
import os
import subprocess
import sys

import pytest

from tfp_bcnn import cli

# the command line: a subprocess demo and in-process commands
pytestmark = pytest.mark.slow


def run_cli(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tfp_bcnn.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_demo_quick_end_to_end(tmp_path):
    out = run_cli("demo", "--quick", "--out-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    for name in ("bayesian_lenet5.keras", "bayesian_lenet5_pruned.keras",
                 "bayesian_lenet5.tflite", "bayesian_reliability.png",
                 "bayesian_ood_histograms.png", "bayesian_rotation.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "saved_model" / "saved_model.pb").exists()
    # one quick epoch on 1,000 images: far from converged but well above chance (0.1)
    assert summary["bayesian"]["accuracy"] > 0.3
    assert summary["frequentist"]["accuracy"] > 0.3
    # pruned to the 90% target (the schedule reaches it before the last step)
    assert abs(summary["sparsity"]["total"] - 0.9) < 0.02
    lite = summary["export"]["tflite"]
    assert lite["argmax_agreement"] > 0.9  # same model, MC error only
    assert "summary (MNIST-5k test set)" in out.stdout
    assert str(run / "bayesian_lenet5.tflite") in out.stdout
    # the moments file beside the Monte Carlo one: against Keras moments, logit-draw error only
    moments = summary["export"]["tflite_moments"]
    assert moments["sampling"] == "moments" and moments["flex_ops"] == []
    assert moments["argmax_agreement"] > 0.9
    # (a one-epoch model: its AUROC is only checked to be one)
    assert 0 <= moments["ood_auroc_epistemic"] <= 1 and moments["ms_per_image"] > 0
    assert str(run / "bayesian_lenet5_moments.tflite") in out.stdout
    assert "Monte Carlo (lrt)" in out.stdout and "OOD AUROC letters (MI)" in out.stdout


def test_evaluate_and_export_with_moments(tmp_path, capsys):
    from tfp_bcnn import export, models, workflow

    path = workflow.save_model(models.lenet5(num_train_examples=4000, seed=0),
                               tmp_path / "m.keras")
    assert cli.main(["evaluate", str(path), "--method", "moments", "--samples", "8",
                     "--out-dir", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "moments, 8 samples" in out and (tmp_path / "eval" / "m_report.json").exists()
    report = json.loads((tmp_path / "eval" / "m_report.json").read_text())
    assert report["method"] == "moments"
    lite = tmp_path / "m.tflite"
    assert cli.main(["export", str(path), "--tflite", str(lite), "--sampling", "moments",
                     "--samples", "8", "--check-images", "50"]) == 0
    info = export.describe(lite)
    assert info["sampling"] == "moments" and info["num_samples"] == 8
    assert "argmax_agreement" in capsys.readouterr().out


def test_errors_are_clear(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    err = capsys.readouterr().err
    assert "missing.keras" in err and "Received" in err

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    assert cli.main(["export", str(bad), "--tflite", str(tmp_path / "m.tflite")]) == 2
    assert "broken.keras" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()

    assert cli.main(["export", str(bad)]) == 2
    assert "--saved-model" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        cli.main(["train", "--estimator", "mc_dropout"])


def test_structured_prune_prints_costs_and_writes_a_smaller_model(tmp_path, capsys):
    model = tmp_path / "m.keras"
    assert cli.main(["train", "--epochs", "1", "--output", str(model), "--verbose", "0"]) == 0
    out = tmp_path / "small.keras"
    assert cli.main(["prune", str(model), "--structured", "--criterion", "l1",
                     "--final-sparsity", "0.5", "--epochs", "2", "--verbose", "0",
                     "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "channels before" in text and "FLOPs per image" in text and "parameters" in text
    import keras

    import tfp_bcnn  # noqa: F401

    small = keras.saving.load_model(out)
    full = keras.saving.load_model(model)
    assert small.count_params() < 0.5 * full.count_params()
    # global scope: half of the 6 + 16 + 120 + 84 hidden filters / units, over the layers
    hidden = ("conv1", "conv2", "fc1", "fc2")
    assert sum(small.get_layer(n).kernel_loc.shape[-1] for n in hidden) == 226 - 113
