"""Smoke tests of the runnable examples in ``examples/``, with tiny settings.

Each example is imported by path and its ``main(argv)`` run in-process (one
TensorFlow import for the whole file), except ``edge_inference.py``, which
runs in a subprocess so that the test can check that it imports neither
TensorFlow, Keras nor tfp_bcnn. The settings are the smallest that still show
each example's point; the tolerances below say why they hold at that size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfp_bcnn as bcnn
from tfp_bcnn import datasets, export, layers

# every example runs as a script in a fresh process
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    """Import ``examples/<name>.py`` as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mnist_uncertainty(tmp_path):
    n_test, n_letters = 200, 200
    result = load_example("mnist_uncertainty").main([
        "--n-train", "1000", "--n-test", str(n_test), "--letters-per-class", "20",
        "--epochs", "3", "--num-samples", "4", "--out-dir", str(tmp_path),
    ])
    preds = result["predictions"]
    assert preds["test digits"].mean.shape == (n_test, 10)
    assert preds["letters"].epistemic.shape == (n_letters,)
    for p in preds.values():
        np.testing.assert_allclose(p.mean.sum(-1), 1.0, atol=1e-5)
        assert np.all(p.aleatoric >= 0) and np.all(p.epistemic >= 0)
    for key in ("test", "rotated", "letters"):
        assert result[key]["epistemic"] > 0  # Flipout: the samples differ
    assert all(0.0 <= v <= 1.0 for v in result["auroc"].values())
    # 1000 images x 3 epochs reach 84-87% test accuracy (seeds 0-2); 0.7 leaves room.
    assert result["test"]["accuracy"] > 0.7
    # Letters are far from digits: the predictive entropy separates them well
    # above chance already after 3 epochs (AUROC 0.77-0.79 for seeds 0-2; chance is 0.5).
    assert result["auroc_letters_entropy"] > 0.65
    assert result["letters"]["aleatoric"] > result["test"]["aleatoric"]
    assert result["rotated"]["accuracy"] < result["test"]["accuracy"]
    assert_png(result["files"]["reliability"])
    assert_png(result["files"]["histograms"])


def test_prune_and_export(tmp_path):
    result = load_example("prune_and_export").main([
        "--n-train", "512", "--n-test", "200", "--epochs", "2", "--prune-epochs", "1",
        "--num-samples", "8", "--out-dir", str(tmp_path),
    ])
    report = result["sparsity"]
    # Global SNR threshold: exactly round(0.9 * total) kernel weights pruned.
    assert report["total"] == pytest.approx(0.9, abs=1e-4)
    assert set(report) == {"conv1", "conv2", "fc1", "fc2", "fc3", "total"}
    assert all(0.0 < v < 1.0 for v in report.values())
    files = result["files"]
    assert (Path(files["saved_model"]) / "saved_model.pb").is_file()
    assert Path(files["tflite"]).is_file() and Path(files["keras"]).is_file()
    assert json.loads(Path(files["sparsity"]).read_text()) == pytest.approx(report)
    info = result["tflite_info"]
    assert not info["flex_ops"]  # builtin ops only: the stock interpreter runs it
    assert info["sparse_tensors"] > 0 and info["zero_fraction"] > 0.8
    assert result["tflite_mean"].shape == result["keras_mean"].shape == (200, 10)
    # Same posterior, fresh Monte Carlo draws: the classes agree up to MC error.
    assert result["argmax_agreement"] >= 0.9
    assert abs(result["accuracy_tflite"] - result["accuracy_pruned"]) <= 0.05


@pytest.fixture(scope="module")
def edge_model(tmp_path_factory):
    """A small Flipout CNN, its .tflite file, and a .npz of 12 digits and 8 letters."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2DFlipout(4, 5, strides=2, activation="relu", kl_weight=1e-3, seed=1),
        keras.layers.Flatten(),
        layers.DenseFlipout(10, activation="softmax", kl_weight=1e-3, seed=2),
    ])
    folder = tmp_path_factory.mktemp("edge")
    path = export.to_tflite(model, folder / "model.tflite", num_samples=8)
    (_, _), (x_test, y_test) = datasets.mnist_5k()
    x_letters, _ = datasets.letters(1)
    x = np.concatenate([x_test[:12], x_letters[:8]])
    y = np.concatenate([y_test[:12], np.full(8, -1)])
    images = folder / "images.npz"
    np.savez(images, x=(x * 255).round().astype(np.uint8), y=y)
    expected = bcnn.predict(model, np.round(x * 255) / 255, num_samples=16).mean.argmax(-1)
    return path, images, expected


def run_edge(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_edge_inference_runs_without_tensorflow(edge_model, tmp_path):
    tflite, images, expected = edge_model
    out = tmp_path / "out"
    stdout = run_edge([str(EXAMPLES / "edge_inference.py"), tflite, "--images", str(images),
                       "--threshold", "0", "--check-imports", "--out-dir", str(out)], tmp_path)
    assert "modules imported: []" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["heavy_modules"] == []
    assert results["num_inputs"] == 20 and results["num_samples"] == 8
    # The TFLite samples and tfp_bcnn.predict share the posterior; the weights'
    # std is 1e-3, far below the logit gaps of random Glorot kernels.
    agreement = np.mean(np.array(results["predicted"]) == expected)
    assert agreement >= 0.9
    # Threshold 0: every input whose epistemic uncertainty is positive is flagged.
    rows = (out / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 21
    epistemic = np.array([float(r.split(",")[4]) for r in rows[1:]])
    assert results["num_flagged"] == int(np.sum(epistemic > 0)) > 0
    assert 0.0 <= results["accuracy"] <= 1.0 and results["flagged_unlabelled"] <= 8


def test_edge_inference_copied_beside_runtime(edge_model, tmp_path):
    """The device layout: the script and runtime.py copied together, probes made by numpy."""
    tflite, _, _ = edge_model
    import tfp_bcnn.export.runtime as runtime

    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(EXAMPLES / "edge_inference.py", app)
    shutil.copy(runtime.__file__, app / "runtime.py")
    stdout = run_edge([str(app / "edge_inference.py"), tflite, "--threshold", "1e9",
                       "--check-imports", "--out-dir", str(tmp_path / "out")], tmp_path)
    assert f"runtime: {app / 'runtime.py'}" in stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["heavy_modules"] == []
    assert results["num_inputs"] == 6 and results["num_flagged"] == 0


def test_edge_inference_with_no_arguments_finds_its_model(edge_model, tmp_path):
    """No arguments: the model prune_and_export.py writes, relative to the working folder
    (when it is missing the script makes it with prune_and_export.py; not run here: a
    full training). No TensorFlow / LiteRT log line on stderr."""
    tflite, _, _ = edge_model
    default = tmp_path / "example_outputs" / "prune_and_export" / "model_sparse.tflite"
    default.parent.mkdir(parents=True)
    shutil.copy(tflite, default)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFP_BCNN_VERBOSE")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "edge_inference.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK ..." is hidden
    results = json.loads(
        (tmp_path / "example_outputs" / "edge_inference" / "results.json").read_text())
    assert results["num_inputs"] == 6


def test_edge_inference_docstring_commands(edge_model, tmp_path):
    """The docstring's commands: make digits.npz, then run with --images digits.npz; a
    missing --images file is a usage error (exit 2), not a traceback."""
    tflite, _, _ = edge_model
    doc = load_example("edge_inference").__doc__
    command = re.search(r"python (-c \"[^\"]+\")", doc.replace("\\\n", " ")).group(1)
    proc = subprocess.run(f"{sys.executable} {command}", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "digits.npz") as data:
        assert data["x"].shape == (200, 28, 28, 1) and data["y"].shape == (200,)
    stdout = run_edge([str(EXAMPLES / "edge_inference.py"), tflite, "--images", "digits.npz",
                       "--threshold", "2e-4", "--out-dir", str(tmp_path / "out")], tmp_path)
    assert "accuracy on the 200 labelled inputs" in stdout

    proc = subprocess.run([sys.executable, str(EXAMPLES / "edge_inference.py"), tflite,
                           "--images", "missing.npz"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "--images: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_convert_pretrained(tmp_path):
    result = load_example("convert_pretrained").main([
        "--n-train", "800", "--n-test", "200", "--letters-per-class", "10", "--epochs", "2",
        "--num-samples", "4", "--out-dir", str(tmp_path),
    ])
    types = result["layer_types"]
    assert types["conv1"] == "Conv2DFlipout" and types["fc2"] == "DenseFlipout"
    assert types["skip"] == "Add" and types["pool1"] == "MaxPooling2D"
    # MOPED centres the posterior on the trained weights: before any Bayesian
    # training the mean prediction is the original's (delta = 0.1 perturbs
    # the logits by ~10%, which flips only near-ties; agreement 0.965-0.995 and
    # accuracy within 0.01 of the plain CNN's for seeds 0-2).
    assert result["argmax_agreement"] >= 0.9
    assert abs(result["accuracy_converted"] - result["accuracy_plain"]) <= 0.05
    assert result["accuracy_plain"] > 0.6  # 0.79-0.85 for seeds 0-2
    assert result["accuracy_finetuned"] >= result["accuracy_plain"] - 0.1
    assert result["epistemic_test"] > 0 and result["epistemic_letters"] > 0
    assert 0.0 <= result["auroc_epistemic"] <= 1.0
    assert Path(result["files"]["model"]).is_file()


def test_regression_heteroscedastic(tmp_path):
    result = load_example("regression_heteroscedastic").main([
        "--n-train", "256", "--epochs", "60", "--num-samples", "32", "--out-dir", str(tmp_path),
    ])
    p = result["prediction"]
    assert p.mean.shape == p.aleatoric_variance.shape == (len(result["grid"]), 1)
    assert np.all(p.aleatoric_variance > 0) and np.all(p.epistemic_variance >= 0)
    np.testing.assert_allclose(p.variance, p.aleatoric_variance + p.epistemic_variance)
    # No data beyond |x| = 3: the posterior's spread of the mean grows there.
    # Seeds 0-2 at this size give ratios of 10-13; a factor 3 is a wide margin.
    assert result["epistemic_ratio"] > 3.0
    assert (result["out_of_range"]["epistemic_variance"]
            > 3.0 * result["in_range"]["epistemic_variance"])
    # The predicted noise grows with |x| like the true noise (0.2 -> 0.6; the
    # model gives 0.18-0.21 -> 0.67-0.86 for seeds 0-2).
    assert result["aleatoric_std_edge"] > 1.5 * result["aleatoric_std_centre"]
    assert result["rmse_in_range"] < 0.5
    assert_png(result["files"]["plot"])


def test_mobilenet_uncertainty(tmp_path):
    # one batch of 64 digits, one epoch, pruning at once (no fine-tuning fit:
    # the fine-tuning path is pruning.prune + UpdatePruning, tested on MobileNet-
    # like blocks in test_shrink_groups.py)
    result = load_example("mobilenet_uncertainty").main([
        "--n-train", "64", "--n-test", "16", "--letters-per-class", "1", "--epochs", "1",
        "--finetune-epochs", "0", "--num-samples", "4", "--sparsity", "0.5",
        "--out-dir", str(tmp_path),
    ])
    kinds = result["bayesian_layers"]
    assert set(kinds) == {"Conv2DFlipout", "DepthwiseConv2DFlipout", "DenseFlipout"}
    assert kinds["DepthwiseConv2DFlipout"] == 17  # MobileNetV2 has 17 depthwise convolutions
    assert result["params"][1] < 0.7 * result["params"][0]  # channels really removed
    assert result["flops"][1] < result["flops"][0]  # and compute
    for info in result["tflite_info"].values():
        assert not info["flex_ops"]
    # At this size the network is barely trained (128 digits, 1 + 1 epochs; the
    # default run is the one that learns): no accuracy or uncertainty level is
    # asserted, only that the pipeline runs and the files agree.
    assert result["epistemic_test"] >= 0
    assert all(v >= 0.5 for v in result["agreement"].values())


def test_segmentation_uncertainty(tmp_path):
    result = load_example("segmentation_uncertainty").main([
        "--train-scenes", "64", "--test-scenes", "8", "--epochs", "1", "--base-filters", "4",
        "--num-samples", "4", "--out-dir", str(tmp_path),
    ])
    p = result["prediction"]
    assert p.mean.shape == (8, 32, 32, 11) and p.epistemic.shape == (8, 32, 32)
    # One epoch on 64 scenes learns little: only that the pipeline runs, the
    # figures are defined and the files are written (the default run learns).
    assert 0 <= result["mean_iou"] <= 1 and result["ause_random"] > 0
    assert 0 <= result["auroc_epistemic_letters"] <= 1
    for path in result["files"].values():
        assert_png(path)


def test_super_resolution(tmp_path):
    result = load_example("super_resolution").main([
        "--train-size", "128", "--test-size", "24", "--epochs", "1", "--num-samples", "4",
        "--out-dir", str(tmp_path),
    ])
    p = result["prediction"]
    assert p.mean.shape == p.aleatoric_variance.shape == (24, 28, 28, 1)
    assert (p.aleatoric_variance > 0).all() and (p.epistemic_variance >= 0).all()
    assert result["epistemic_ratio_photos"] > 0 and np.isfinite(result["psnr"])
    for path in result["files"].values():
        assert_png(path)
