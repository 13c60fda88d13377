"""The tfp-bcnn command: the quick main job end to end, clear and fast errors."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from tfp_bcnn import cli, workflow

#: absl / TF C++ lines, their preamble, LiteRT's INFO line, cuInit, oneDNN.
LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|INFO: Created TensorFlow|"
                      r"WARNING:(absl|tensorflow):)|cuInit|oneDNN", re.M)


def run_cli(*args, cwd, env=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFP_BCNN_VERBOSE")} if env is None else env
    return subprocess.run([sys.executable, "-m", "tfp_bcnn.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = run_cli("demo", "--quick", "--out-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    # no TensorFlow / absl / CUDA / LiteRT log line, with no TF_CPP_MIN_LOG_LEVEL set
    assert not LOG_LINE.search(out.stderr + out.stdout), out.stderr[-4000:]
    # stdout is a pipe here: plain lines, no progress-bar \r, \b or colour codes
    assert not re.search(r"[\r\b\x1b]", out.stdout + out.stderr), out.stdout[-2000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    for name in ("bayesian_lenet5.keras", "frequentist_lenet5.keras",
                 "bayesian_lenet5_pruned.keras", "bayesian_lenet5.tflite",
                 "bayesian_reliability.png", "bayesian_ood_histograms.png",
                 "bayesian_rotation.png", "frequentist_rotation.png"):
        assert (run / name).stat().st_size > 0, name
        assert str(run / name) in out.stdout, name  # the summary lists every file written
    assert (run / "saved_model" / "saved_model.pb").exists()
    # one quick epoch on 1,000 images: far from converged but well above chance (0.1)
    assert summary["bayesian"]["accuracy"] > 0.3
    assert summary["frequentist"]["accuracy"] > 0.3
    # the frequentist model is deterministic: epistemic figures are null, not 1e-16
    freq = summary["frequentist"]
    assert freq["deterministic"] is True and freq["epistemic"] is None
    assert all(r["auroc_epistemic"] is None for r in freq["ood"].values())
    assert all(r["epistemic"] is None for r in freq["rotation"])
    assert summary["bayesian"]["deterministic"] is False
    assert summary["bayesian"]["epistemic"] > 0
    assert set(summary["pruned"]["ood"]) == {"letters", "noise"}
    # pruned to the 90% target (the schedule reaches it before the last step)
    assert abs(summary["sparsity"]["total"] - 0.9) < 0.02
    lite = summary["export"]["tflite"]
    assert lite["argmax_agreement"] > 0.9  # same model, MC error only
    assert "summary of a SMOKE RUN" in out.stdout
    assert "OOD AUROC noise, epistemic (mutual information)" in out.stdout
    assert "| n/a " in out.stdout
    assert re.search(r"pruning to 9\d% (lowered|raised|left) the test accuracy", out.stdout)
    assert "done in" in out.stdout
    # the moments file beside the Monte Carlo one: against Keras moments, logit-draw error only
    moments = summary["export"]["tflite_moments"]
    assert moments["sampling"] == "moments" and moments["flex_ops"] == []
    assert moments["argmax_agreement"] > 0.9
    # (a one-epoch model: its AUROC is only checked to be one)
    assert 0 <= moments["ood_auroc_epistemic"] <= 1 and moments["ms_per_image"] > 0
    assert str(run / "bayesian_lenet5_moments.tflite") in out.stdout
    assert "Monte Carlo (lrt)" in out.stdout
    # the ONNX files beside them (the export extra is installed for the tests)
    for key in ("onnx", "onnx_moments"):
        assert summary["export"][key]["argmax_agreement"] > 0.9, key
        assert summary["export"][key]["format"] == "onnx", key
    assert str(run / "bayesian_lenet5_moments.onnx") in out.stdout and "ONNX moments" in out.stdout
    assert "OOD AUROC letters, epistemic (mutual information)" in out.stdout


@pytest.mark.slow
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
    # argument errors: argparse's usage line, exit status 2, before any TensorFlow work
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", str(tmp_path / "missing.keras")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "missing.keras" in err and "Received" in err

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(bad), "--tflite", str(tmp_path / "m.tflite")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "broken.keras" in err and "not a valid .keras file" in err
    assert "not found" not in err.lower()
    assert not (tmp_path / "m.tflite").exists()

    good = tmp_path / "good.keras"
    with zipfile.ZipFile(good, "w") as archive:  # a zip, but not what model.save writes
        archive.writestr("hello.txt", "hi")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(good)])
    assert exit_.value.code == 2
    assert "--saved-model" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--estimator", "mc_dropout"])
    assert exit_.value.code == 2


def test_load_model_says_not_a_valid_keras_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"Not a valid \.keras file.*model='.*bad\.keras'"):
        workflow.load_model(bad)
    archive = tmp_path / "other.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match=r"Not a valid \.keras file"):
        workflow.load_model(archive)
    with pytest.raises(ValueError, match="No such model file"):
        workflow.load_model(tmp_path / "none.keras")


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "-1"], "argument --epochs: must be an integer >= 1. Received: '-1'"),
    (["train", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["train", "--epochs", "2.5"], "--epochs: must be an integer >= 1"),
    (["train", "--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["train", "--learning-rate", "0"], "--learning-rate: must be a finite number > 0"),
    (["train", "--learning-rate", "nan"], "--learning-rate: must be a finite number > 0"),
    (["train", "--learning-rate=-1e-3"], "--learning-rate: must be a finite number > 0"),
    (["train", "--warmup-epochs", "0"], "--warmup-epochs: must be an integer >= 1"),
    (["train", "--seed", "-3"], "--seed: must be an integer >= 0"),
    (["train", "--output", "model.h5"], "--output: must be a file name ending in .keras"),
    (["train", "--dataset", "nowhere.npz"], "--dataset: must be one of mnist_5k, digits"),
    (["train", "--verbose", "5"], "--verbose: invalid choice"),
    (["demo", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["evaluate", "MODEL", "--samples", "0"], "--samples: must be an integer >= 1"),
    (["prune", "MODEL", "--final-sparsity", "1"], "--final-sparsity: must be a number in [0, 1)"),
    (["prune", "MODEL", "--final-sparsity", "-0.1"], "must be a number in [0, 1)"),
    (["prune", "MODEL", "--final-sparsity", "90"], "must be a number in [0, 1)"),
    (["prune", "MODEL", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["prune", "MODEL", "--learning-rate", "inf"], "--learning-rate: must be a finite number"),
    (["prune", "MODEL", "--output", "pruned"], "--output: must be a file name ending in .keras"),
    (["prune", "MODEL", "--min-channels", "0"], "--min-channels: must be an integer >= 1"),
    (["prune", "MODEL", "--min-fraction", "1"], "--min-fraction: must be a number in [0, 1)"),
    (["prune", "MODEL", "--normalize", "max"], "--normalize: invalid choice"),
    (["prune", "MODEL", "--cost", "latency"], "--cost: invalid choice"),
    (["prune", "MODEL", "--cost-exponent", "0"], "--cost-exponent: must be a finite number > 0"),
    (["export", "MODEL", "--tflite", "m.tfl"], "--tflite: must be a file name ending in .tflite"),
    (["export", "MODEL", "--tflite", "m.tflite", "--samples", "0"],
     "--samples: must be an integer >= 1"),
    (["export", "MODEL", "--tflite", "m.tflite", "--check-images", "0"],
     "--check-images: must be an integer >= 1"),
    (["export", "MODEL", "--onnx", "m.onx"], "--onnx: must be a file name ending in .onnx"),
    (["export", "MODEL"], "give --saved-model DIR, --tflite FILE.tflite and/or --onnx"),
])
def test_every_number_is_checked(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model.keras"
    with zipfile.ZipFile(model, "w") as archive:  # passes the command line's zip check
        archive.writestr("config.json", "{}")
    argv = [str(model) if a == "MODEL" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tfp-bcnn ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # nothing written


@pytest.mark.slow
def test_help_and_argument_errors_import_no_tensorflow(tmp_path):
    """The console script's module parses before importing the package (or TF)."""
    code = (
        "import sys, _tfp_bcnn_cli as c\n"
        "for argv in (['--help'], ['train', '--epochs', '-1'], ['export', 'x.keras']):\n"
        "    try:\n"
        "        c.main(argv)\n"
        "    except SystemExit as e:\n"
        "        print(e.code)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "      ('tensorflow', 'keras', 'tfp_bcnn')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-4:] == ["0", "2", "2", "[]"], out.stdout


@pytest.mark.slow
def test_help_answers_quickly(tmp_path):
    """`tfp-bcnn --help` in well under a second on an idle machine (0.07-0.16 s
    measured on 2 loaded cores, against 5-13 s when TensorFlow was imported
    first). The bound, 3 s, only leaves room for a loaded CI machine: the
    real guarantee is the test above (no TensorFlow imported)."""
    script = shutil.which("tfp-bcnn", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the tfp-bcnn console script is not installed beside this python")
    start = time.perf_counter()
    out = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0 and "usage: tfp-bcnn" in out.stdout
    assert elapsed < 3.0, f"tfp-bcnn --help took {elapsed:.2f} s"


def test_tf_logs_switch(monkeypatch):
    """--tf-logs (or TFP_BCNN_VERBOSE=1) keeps every log line; by default the C++
    level is set to warnings-off before TensorFlow loads (unless the user set it)."""
    import logging

    import _tfp_bcnn_cli

    levels = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
    for name in ("TFP_BCNN_VERBOSE", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    try:
        _tfp_bcnn_cli._quiet_tensorflow(show_logs=True)
        assert os.environ["TFP_BCNN_VERBOSE"] == "1"
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        monkeypatch.delenv("TFP_BCNN_VERBOSE")
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
        _tfp_bcnn_cli._quiet_tensorflow(show_logs=False)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice wins
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
        _tfp_bcnn_cli._quiet_tensorflow(show_logs=False)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
        assert logging.getLogger("tensorflow").level == logging.ERROR
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert cli.build_parser().parse_args(["--tf-logs", "train"]).tf_logs is True



@pytest.mark.slow  # trains, prunes, shrinks and saves LeNet-5 through the CLI (over 5 s)
def test_structured_prune_prints_costs_and_writes_a_smaller_model(tmp_path, capsys, tiny_npz):
    # LeNet-5 on 40 images of 12x12 (its filter counts do not depend on the data)
    model = tmp_path / "m.keras"
    assert cli.main(["train", "--epochs", "1", "--output", str(model), "--verbose", "0",
                     "--dataset", tiny_npz]) == 0
    out = tmp_path / "small.keras"
    assert cli.main(["prune", str(model), "--structured", "--criterion", "l1",
                     "--final-sparsity", "0.5", "--epochs", "2", "--verbose", "0",
                     "--min-channels", "4", "--normalize", "l2", "--cost", "flops",
                     "--output", str(out), "--dataset", tiny_npz]) == 0
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
    assert min(small.get_layer(n).kernel_loc.shape[-1] for n in hidden) >= 4  # the floor
