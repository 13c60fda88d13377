"""Tests of tfp_bcnn.export.runtime, the numpy + LiteRT runner of exported files."""

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfp_bcnn
from tfp_bcnn import _prediction, layers
from tfp_bcnn.export import runtime, to_tflite
from tfp_bcnn.export.runtime import Prediction, TFLiteBayesianModel, summarize
from tfp_bcnn.uncertainty import decompose

NUM_SAMPLES = 4
FIELDS = (
    "mean",
    "std",
    "predictive_entropy",
    "aleatoric",
    "epistemic",
    "aleatoric_variance",
    "epistemic_variance",
    "samples",
)


@pytest.fixture(scope="module")
def tflite_path(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(3, 3, activation="relu", posterior_std_init=0.3),
            keras.layers.Flatten(),
            layers.DenseFlipout(4, activation="softmax", posterior_std_init=0.3),
        ]
    )
    path = tmp_path_factory.mktemp("runtime") / "tiny.tflite"
    return to_tflite(model, path, num_samples=NUM_SAMPLES)


@pytest.fixture(scope="module")
def model(tflite_path):
    return TFLiteBayesianModel(tflite_path, num_threads=1)


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)


# ------------------------------------------------------------- prediction
def test_attributes(model):
    assert model.input_shape == (None, 8, 8, 1)
    assert model.num_classes == 4 and model.num_samples == NUM_SAMPLES
    assert model.op_resolver in ("auto", "builtin_without_default_delegates")
    assert "tiny.tflite" in repr(model)


def test_predict_fields_match_tfp_bcnn_prediction(model):
    p = model.predict(_images(5), return_samples=True)
    assert [f.name for f in __import__("dataclasses").fields(Prediction)] == list(FIELDS)
    assert p.mean.shape == p.std.shape == p.aleatoric_variance.shape == (5, 4)
    assert p.epistemic.shape == p.aleatoric.shape == p.predictive_entropy.shape == (5,)
    assert p.samples.shape == (NUM_SAMPLES, 5, 4) and p.samples.dtype == np.float32
    # the same numbers as tfp_bcnn.uncertainty.decompose on the same samples
    reference = decompose(p.samples)
    for name in FIELDS[:-1]:
        np.testing.assert_allclose(getattr(p, name), getattr(reference, name), atol=1e-12)
    assert model.predict(_images(5)).samples is None


def test_summarize_matches_decompose_on_random_samples():
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(np.full(6, 0.3), size=(7, 9)).astype(np.float32)
    samples[0, 0] = np.eye(6)[2]  # exact zeros: 0 log 0 = 0
    ours, ref = summarize(samples), decompose(samples)
    for name in FIELDS[:-1]:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="samples.shape"):
        summarize(samples[0])


def test_invocations_pool_fresh_samples(model):
    x = _images(3)
    samples = model.sample(x, num_invocations=3)
    assert samples.shape == (3 * NUM_SAMPLES, 3, 4)
    flat = samples.reshape(3 * NUM_SAMPLES, -1)
    assert len(np.unique(flat, axis=0)) == 3 * NUM_SAMPLES  # all draws differ
    p = model.predict(x, num_invocations=3, return_samples=True)
    assert p.samples.shape == (3 * NUM_SAMPLES, 3, 4)


def test_chunking_gives_every_example_its_samples(model):
    x = _images(7)
    x[5] = 0.0  # one distinctive example, to check the order is kept
    samples = model.sample(x, batch_size=2)
    assert samples.shape == (NUM_SAMPLES, 7, 4)
    np.testing.assert_allclose(samples.sum(-1), 1.0, atol=1e-5)
    zero = model.sample(np.zeros((1, 8, 8, 1), np.float32), num_invocations=50)
    # example 5 (all zeros) is within the spread of the zero image's samples
    lo, hi = zero.min(axis=0)[0], zero.max(axis=0)[0]
    assert np.all(samples[:, 5] >= lo - 1e-6) and np.all(samples[:, 5] <= hi + 1e-6)
    assert model.sample(np.zeros((0, 8, 8, 1), np.float32)).shape == (NUM_SAMPLES, 0, 4)


def test_fresh_interpreters_and_invocations_differ(tflite_path):
    x = _images(2)
    a = TFLiteBayesianModel(tflite_path)
    b = TFLiteBayesianModel(tflite_path)
    first = a.sample(x)
    assert not np.array_equal(first, b.sample(x))
    assert not np.array_equal(first, a.sample(x))


def test_float64_inputs_are_accepted(model):
    assert model.predict(_images(2).astype(np.float64)).mean.shape == (2, 4)


# ------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((8, 8, 1), np.float32), "batch axis"),
        (np.zeros((2, 8, 8), np.float32), r"x.shape=\(2, 8, 8\)"),
        (np.zeros((2, 8, 9, 1), np.float32), r"x.shape=\(2, 8, 9, 1\)"),
        (np.zeros((2, 8, 8, 1), np.uint8), "x.dtype=uint8"),
        (np.full((2, 8, 8, 1), np.nan, np.float32), "NaN"),
    ],
)
def test_invalid_inputs(model, x, match):
    with pytest.raises(ValueError, match=match):
        model.predict(x)


@pytest.mark.parametrize(
    "kwargs", [{"num_invocations": 0}, {"batch_size": -1}, {"num_invocations": 1.5}]
)
def test_invalid_arguments(model, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        model.predict(_images(2), **kwargs)


def test_invalid_num_threads(tflite_path):
    with pytest.raises(ValueError, match="num_threads"):
        TFLiteBayesianModel(tflite_path, num_threads=0)


# ------------------------------------------------------------ bad files
@pytest.mark.parametrize("cut", [0, 7, 100, 0.5, -16])
def test_truncated_file_gives_value_error_naming_path(tflite_path, tmp_path, cut):
    data = open(tflite_path, "rb").read()
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(data[:end])
    with pytest.raises(ValueError, match="truncated.tflite"):
        TFLiteBayesianModel(bad)


def test_garbage_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="junk.tflite"):
        TFLiteBayesianModel(junk)
    saved_model_dir = tmp_path / "saved_model"
    saved_model_dir.mkdir()
    with pytest.raises(ValueError, match="SavedModel"):
        TFLiteBayesianModel(saved_model_dir)
    with pytest.raises(FileNotFoundError):
        TFLiteBayesianModel(tmp_path / "missing.tflite")


def test_corrupt_body_gives_value_error(tflite_path, tmp_path):
    """Bytes overwritten inside the flatbuffer tables (not just cut off)."""
    data = bytearray(open(tflite_path, "rb").read())
    data[8:64] = b"\xff" * 56
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.tflite"):
        TFLiteBayesianModel(bad)


def test_foreign_tflite_model_is_rejected(tmp_path):
    import tensorflow as tf

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    data = tf.lite.TFLiteConverter.from_keras_model(plain).convert()
    path = tmp_path / "plain.tflite"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="to_tflite"):
        TFLiteBayesianModel(path)


# -------------------------------------------------- standalone (no TF, Keras)
@pytest.mark.slow
def test_runtime_file_runs_alone_without_tensorflow_or_keras(tflite_path, tmp_path):
    """Copy runtime.py alone into a folder and run it with TF/Keras imports blocked."""
    shutil.copy(runtime.__file__, tmp_path / "runtime.py")
    code = textwrap.dedent(
        f"""
        import sys

        BLOCKED = ("tensorflow", "keras", "tfp_bcnn", "tensorflow_probability", "tf_keras")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked import: " + name)

        sys.meta_path.insert(0, Block())
        import numpy as np
        import runtime

        model = runtime.TFLiteBayesianModel({os.fspath(tflite_path)!r})
        p = model.predict(np.zeros((3, 8, 8, 1), np.float32), num_invocations=2)
        assert p.mean.shape == (3, 4)
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        # the standalone copy of the summaries, on fixed samples (two chunks joined)
        probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(6, 5))
        parts = [runtime.summarize(probs[:, :2], True), runtime.summarize(probs[:, 2:], True)]
        joined = runtime._concatenate(parts)
        print("OK", repr({{k: v.tolist() for k, v in vars(joined).items()}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    # ... gives the numbers of the package's one definition (float64 maths: 1e-12)
    alone = eval(result.stdout.split("OK", 1)[1])  # a dict literal of lists
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(6, 5))
    shared = _prediction.summarize(probs, return_samples=True)
    assert set(alone) == {f.name for f in dataclasses.fields(shared)}
    for name, value in alone.items():
        np.testing.assert_allclose(value, getattr(shared, name), rtol=1e-12, atol=1e-15)


def test_runtime_returns_the_package_prediction_type():
    """Inside the package the runtime's type and summaries are tfp_bcnn.predict's."""
    assert runtime.Prediction is tfp_bcnn.uncertainty.Prediction is _prediction.Prediction
    assert runtime.summarize is _prediction.summarize
