"""Untrusted files: every loader refuses a damaged or crafted file with one clear error.

Hand-made bad files, one per kind of damage, for each loader of ours: the
TF-free runtime and ``describe`` (``.tflite``), ``workflow.load_model``
(``.keras``), ``datasets.load_npz`` and ``datasets.load_image_folder``. Each
error must be a ``ValueError`` naming the file. The mutation fuzzing is in
tests/test_fuzz.py and benchmarks/fuzz.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema

from tfp_bcnn import export, layers
from tfp_bcnn.export import runtime
from tfp_bcnn.export.runtime import TFLiteBayesianModel


def _classifier():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2DFlipout(3, 3, activation="relu", seed=5),
        keras.layers.Flatten(),
        layers.DenseFlipout(3, activation="softmax", seed=5),
    ])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("untrusted") / "good.tflite"
    return Path(export.to_tflite(_classifier(), path, num_samples=2)).read_bytes()


def _images(n=3):
    return np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)


def _float_constants(data: bytearray):
    """``(tensor, writable float32 view of its buffer)`` of each constant float tensor.

    Parsed with TensorFlow's generated schema (independent of the runtime's
    own reader); the views write into ``data``.
    """
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    out = []
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buf = model.Buffers(tensor.Buffer())
        if tensor.Type() == schema.TensorType.FLOAT32 and buf.DataLength():
            out.append((tensor, buf.DataAsNumpy().view(np.float32)))
    return out


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def _refused(path, call, match=None):
    """``call(path)`` raises one ValueError naming the file (and ``match`` if given)."""
    with pytest.raises(ValueError) as info:
        call(path)
    message = str(info.value)
    assert f"path={str(path)!r}" in message or str(path) in message, message
    if match:
        assert match in message, message
    return message


LOADERS = {"runtime": TFLiteBayesianModel, "describe": export.describe}


# ----------------------------------------------------------------- .tflite
def test_verify_accepts_what_to_tflite_writes(good, tmp_path):
    runtime.verify_tflite(good)
    samples = TFLiteBayesianModel(_write(tmp_path, "ok.tflite", good)).sample(_images())
    assert samples.shape == (2, 3, 3) and np.isfinite(samples).all()
    assert export.describe(tmp_path / "ok.tflite")["weights"] > 0


@pytest.mark.parametrize("loader", LOADERS)
def test_nan_weight_refused_naming_the_tensor(good, tmp_path, loader):
    data = bytearray(good)
    tensor, values = max(_float_constants(data), key=lambda tv: tv[1].size)
    values[values.size // 2] = np.nan
    path = _write(tmp_path, "nan.tflite", data)
    message = _refused(path, LOADERS[loader], "NaN or infinite weights")
    assert tensor.Name().decode() in message


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("damage", ["truncated", "empty", "not_tflite", "shape_vs_buffer",
                                    "huge_shape", "negative_shape", "operator_tensor_index",
                                    "root_offset"])
def test_damaged_tflite_refused(good, tmp_path, loader, damage):
    data = bytearray(good)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    elif damage == "not_tflite":
        data = bytearray(b"PK\x03\x04" + bytes(100))
    elif damage in ("shape_vs_buffer", "huge_shape", "negative_shape"):
        tensor, _ = _float_constants(data)[0]
        shape = tensor.ShapeAsNumpy()  # a view into data
        shape[0] = {"shape_vs_buffer": shape[0] + 1, "huge_shape": 2**30,
                    "negative_shape": -7}[damage]
    elif damage == "operator_tensor_index":
        op = schema.Model.GetRootAsModel(data, 0).Subgraphs(0).Operators(0)
        op.InputsAsNumpy()[0] = 10**6
    elif damage == "root_offset":
        data[0:4] = (2**31).to_bytes(4, "little")
    _refused(_write(tmp_path, f"{damage}.tflite", data), LOADERS[loader])


def test_huge_but_finite_weights_refused_at_prediction(good, tmp_path):
    """Weights of 3e38 are finite, the logits overflow: the output check catches it."""
    data = bytearray(good)
    for _, values in _float_constants(data):
        values[:] = 3e38
    path = _write(tmp_path, "huge.tflite", data)

    def load_and_predict(p):
        TFLiteBayesianModel(p).predict(_images())

    _refused(path, load_and_predict, "NaN, infinity or values outside [0, 1]")


def test_file_size_limit(good, tmp_path, monkeypatch):
    path = _write(tmp_path, "m.tflite", good)
    monkeypatch.setattr(runtime, "MAX_FILE_BYTES", len(good) - 1)
    _refused(path, TFLiteBayesianModel, "File over")


# -------------------------------------------------------------- check_file
@pytest.mark.slow
def test_check_file_reports_the_model_and_refusals(good, tmp_path):
    info = runtime.check_file(_write(tmp_path, "ok.tflite", good))
    assert info == {"input_shape": [None, 8, 8, 1], "num_classes": 3, "num_samples": 2,
                    "op_resolver": "auto"}
    bad = _write(tmp_path, "bad.tflite", good[: len(good) // 3])
    _refused(bad, runtime.check_file, "Not a valid TFLite model file")


def _fake_python(tmp_path, body):
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize("body, timeout, expected", [
    ("kill -SEGV $$", 30, "crashed (signal 11)"),
    ("sleep 5", 0.3, "took over 0.3 s"),
])
def test_check_file_survives_crashes_and_hangs(good, tmp_path, monkeypatch, body, timeout,
                                                expected):
    """A child that dies of SIGSEGV or hangs is reported, and this process goes on."""
    path = _write(tmp_path, "m.tflite", good)
    monkeypatch.setattr(runtime.sys, "executable", _fake_python(tmp_path, body))
    _refused(path, lambda p: runtime.check_file(p, timeout=timeout), expected)


def test_check_file_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        runtime.check_file(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="Received: timeout=0"):
        runtime.check_file(tmp_path / "missing.tflite", timeout=0)
