"""Untrusted files: every loader refuses a damaged or crafted file with one clear error.

Hand-made bad files, one per kind of damage, for each loader of ours: the
TF-free runtime and ``describe`` (``.tflite``), ``workflow.load_model``
(``.keras``), ``datasets.load_npz`` and ``datasets.load_image_folder``. Each
error must be a ``ValueError`` naming the file. The mutation fuzzing is in
tests/test_fuzz.py and benchmarks/fuzz.py.
"""

from __future__ import annotations

import stat
import zipfile
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


@pytest.mark.parametrize("loader", LOADERS)
def test_absent_input_outside_a_bias_refused(good, tmp_path, loader):
    """-1 (an absent input) in an operator's first input crashed LiteRT in the fuzz run."""
    data = bytearray(good)
    graph = schema.Model.GetRootAsModel(data, 0).Subgraphs(0)
    graph.Operators(graph.OperatorsLength() - 1).InputsAsNumpy()[0] = -1
    path = _write(tmp_path, "absent.tflite", data)
    _refused(path, LOADERS[loader], "allowed only for a bias")
    runtime.verify_tflite(bytes(data), runnable=False)  # well-formed, only not runnable


@pytest.mark.parametrize("target", ["constant", "other_output"])
def test_operator_writing_a_tensor_it_does_not_own_refused(good, tmp_path, target):
    """LiteRT crashed on an operator output moved onto another op's output (fuzz scan)."""
    data = bytearray(good)
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    if target == "constant":
        tensor = next(i for i in range(graph.TensorsLength())
                      if model.Buffers(graph.Tensors(i).Buffer()).DataLength())
    else:
        tensor = int(graph.Operators(0).OutputsAsNumpy()[0])
    graph.Operators(graph.OperatorsLength() - 1).OutputsAsNumpy()[0] = tensor
    _refused(_write(tmp_path, "writes.tflite", data), TFLiteBayesianModel,
             "writes into a constant tensor, a graph input or another operator's output")


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


# -------------------------------------------------------------------- .npz
def _npy(array, shape=None) -> bytes:
    """``.npy`` bytes of ``array``, its header declaring ``shape`` if given (a lie)."""
    import io

    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": tuple(array.shape if shape is None else shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(array.tobytes())
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _lie_about_size(path, member: str, size: int):
    """Rewrites ``member``'s uncompressed size in the central directory."""
    data = bytearray(Path(path).read_bytes())
    name = member.encode()
    at = data.index(b"PK\x01\x02" + bytes(0), 0)
    while data[at + 46 : at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 24 : at + 28] = size.to_bytes(4, "little")
    Path(path).write_bytes(bytes(data))
    return path


X = np.zeros((4, 5, 5), np.uint8)
Y = np.arange(4)


@pytest.mark.parametrize("damage, match", [
    ("object_array", "Python objects"),
    ("unsafe_name", "unsafe name"),
    ("shape_lie", "declares shape"),
    ("huge_shape", "declares shape"),
    ("size_lie_small", "x.npy"),
    ("size_lie_huge", "declares"),
    ("not_npy", "not a .npy array"),
    ("truncated", "Could not read"),
])
def test_crafted_npz_refused(tmp_path, damage, match):
    from tfp_bcnn import datasets

    path = tmp_path / f"{damage}.npz"
    members = {"x.npy": _npy(X), "y.npy": _npy(Y)}
    if damage == "object_array":
        np.savez(path, x=X, y=np.array([{"a": 1}, None, 2, 3], dtype=object))
    elif damage == "unsafe_name":
        members["../../x.npy"] = members.pop("x.npy")
    elif damage == "shape_lie":
        members["x.npy"] = _npy(X, shape=(40, 5, 5))
    elif damage == "huge_shape":
        members["x.npy"] = _npy(X, shape=(2**40, 2**20, 5))
    elif damage == "not_npy":
        members["x.txt"] = b"hello"
    if damage != "object_array":
        _zip(path, members)
    if damage == "size_lie_small":
        _lie_about_size(path, "x.npy", 10)
    elif damage == "size_lie_huge":
        _lie_about_size(path, "x.npy", 2**32 - 1)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    _refused(path, datasets.load_npz, match)


def test_npz_checks_accept_what_numpy_writes(tmp_path):
    from tfp_bcnn import datasets

    np.savez_compressed(tmp_path / "c.npz", x=X, y=Y)
    np.savez(tmp_path / "u.npz", x=X.astype(np.float32), y=Y)
    for name in ("c.npz", "u.npz"):
        x, y = datasets.load_npz(tmp_path / name)
        assert x.shape == (4, 5, 5, 1) and y.tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ .keras
@pytest.fixture(scope="module")
def keras_bytes(tmp_path_factory):
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("untrusted") / "good.keras"
    _classifier().save(path)
    return path.read_bytes()


def _keras_members(data: bytes) -> dict[str, bytes]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.mark.parametrize("damage, match", [
    ("renamed_config", "no 'config.json'"),
    ("unsafe_name", "unsafe name"),
    ("weights_not_hdf5", "not an HDF5 file"),
    ("config_not_json", "corrupt: JSONDecodeError"),
    ("size_lie", "Not a valid .keras file"),
    ("truncated", "not a zip archive"),
])
def test_crafted_keras_refused(tmp_path, keras_bytes, damage, match):
    from tfp_bcnn import workflow

    members = _keras_members(keras_bytes)
    if damage == "renamed_config":
        members["c0nfig.json"] = members.pop("config.json")
    elif damage == "unsafe_name":
        members["/etc/evil"] = b"x"
    elif damage == "weights_not_hdf5":
        members["model.weights.h5"] = b"x" * 64
    elif damage == "config_not_json":
        members["config.json"] = members["config.json"][:-5]
    path = _zip(tmp_path / f"{damage}.keras", members)
    if damage == "size_lie":
        _lie_about_size(path, "config.json", 3)
    elif damage == "truncated":
        path.write_bytes(keras_bytes[: len(keras_bytes) // 2])
    _refused(path, workflow.load_model, match)


def test_keras_with_nan_weights_refused(tmp_path):
    from tfp_bcnn import workflow

    keras.utils.set_random_seed(3)
    model = _classifier()
    weight = model.layers[-1].weights[0]
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    model.save(tmp_path / "nan.keras")
    message = _refused(tmp_path / "nan.keras", workflow.load_model, "NaN or infinite")
    assert weight.path.split("/", 1)[1] in message  # the layer and variable


def test_cli_refuses_a_damaged_model_with_one_line(tmp_path, keras_bytes, capsys):
    from _tfp_bcnn_cli import main

    members = _keras_members(keras_bytes)
    members["model.weights.h5"] = b"\x89HDF\r\n\x1a\n" + b"\0" * 100
    path = _zip(tmp_path / "broken.keras", members)
    status = main(["export", str(path), "--tflite", str(tmp_path / "out.tflite"), "--no-check"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and str(path) in err[0], err
    assert not (tmp_path / "out.tflite").exists()


# ------------------------------------------------------------------ images
def _png(width, height) -> bytes:
    """A PNG whose header declares ``width x height`` (valid CRC), with one tiny IDAT."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * (height if height <= 64 else 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("damage, match", [
    ("huge", "oversized image"),
    ("above_our_limit", "more than 67108864"),
    ("truncated", "Unreadable"),
    ("garbage", "Unreadable"),
])
def test_broken_or_huge_image_named(tmp_path, damage, match):
    from tfp_bcnn import datasets

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "ok.png").write_bytes(_png(6, 6))
    ok = (tmp_path / "a" / "ok.png").read_bytes()
    bad = tmp_path / "b" / "bad.png"
    bad.write_bytes({"huge": _png(100_000, 100_000), "above_our_limit": _png(8200, 8200),
                     "truncated": ok[: len(ok) // 2],
                     "garbage": b"\x89PNG but not really"}[damage])
    _refused(bad, lambda p: datasets.load_image_folder(tmp_path, image_size=(4, 4)), match)


def test_image_in_a_format_tensorflow_cannot_decode_named(tmp_path):
    """A TIFF named .png: Pillow reads it, TensorFlow would not; refused before decoding."""
    from PIL import Image

    from tfp_bcnn import datasets

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "ok.png").write_bytes(_png(6, 6))
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "b" / "tiff.png", format="TIFF")
    _refused(tmp_path / "b" / "tiff.png",
             lambda p: datasets.load_image_folder(tmp_path, image_size=(4, 4)),
             "TIFF data, which TensorFlow does not decode")


@pytest.mark.slow
def test_describe_refuses_a_saved_model_with_nan_variables(tmp_path):
    """(Damaged bytes fail TensorFlow's own checksums; NaN saved as such must be refused.)"""
    keras.utils.set_random_seed(3)
    model = _classifier()
    weight = model.layers[-1].weights[0]
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    path = export.save_saved_model(model, tmp_path / "sm", num_samples=2)
    _refused(Path(path), export.describe, "NaN or infinite")
