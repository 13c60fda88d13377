"""Tests of ONNX export (`tfp_bcnn.export.to_onnx`) and its TF-free runner.

Fast tests use a tiny untrained Flipout net on 12x12 images (conversion about
1 s per file); the agreement tests (slow) use test_export's small conv net
trained 2 epochs on 2,000 MNIST images, with that file's tolerances.
"""

import concurrent.futures
import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tfp_bcnn import export, layers, moments
from tfp_bcnn.export import _inference
from tfp_bcnn.export.runtime import OnnxBayesianModel
from tfp_bcnn.uncertainty import predict

from test_export import NUM_SAMPLES, NUM_TEST, _check_agreement, _lenet_ish, _set_sigma

SAMPLINGS = _inference.SAMPLINGS
S = 8


def _tiny():
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            layers.Conv2DFlipout(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            layers.DenseFlipout(3, activation="softmax"),
        ],
        name="tiny",
    )


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 12, 12, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(3)
    model = _tiny()
    _set_sigma(model, 0.3)  # visible sampling noise
    return model


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {s: export.to_onnx(tiny, root / f"{s}.onnx", num_samples=S, sampling=s)
            for s in SAMPLINGS}


# ------------------------------------------------------------ the file
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_standard_ops_only_unseeded_random_ops_and_metadata(files, sampling):
    proto = onnx.load(files[sampling])
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} == {""}, "custom-domain ops"
    assert [o.domain for o in proto.opset_import] == [""]
    random = [n for n in proto.graph.node if n.op_type in export.onnx.RANDOM_OPS]
    assert random, "the sampling must happen inside the file"
    assert all("seed" not in {a.name for a in n.attribute} for n in random)
    info = json.loads({p.key: p.value for p in proto.metadata_props}["tfp_bcnn"])
    assert info["sampling"] == sampling and info["num_samples"] == S
    outputs = {o.name for o in proto.graph.output}
    assert set(_inference.OUTPUT_NAMES) | {"samples"} <= outputs
    assert ("logit_mean" in outputs) == (sampling == "moments")


@pytest.mark.slow
def test_inference_form_equals_model_when_sigma_vanishes(tmp_path):
    """sigma -> 0: every form is the deterministic net (float32 round-off only)."""
    model = _tiny()
    _set_sigma(model, 1e-8)
    x = _images(5)
    reference = keras.ops.convert_to_numpy(model(x))
    for sampling in SAMPLINGS:
        path = export.to_onnx(model, tmp_path / f"{sampling}.onnx", num_samples=4,
                              sampling=sampling)
        mean = OnnxBayesianModel(path).predict(x).mean
        np.testing.assert_allclose(mean, reference, atol=1e-5, err_msg=sampling)


@pytest.mark.parametrize("opset", [13, 18])
def test_opset_argument(tiny, tmp_path, opset):
    path = export.to_onnx(tiny, tmp_path / "m.onnx", num_samples=2, sampling="lrt", opset=opset)
    assert [o.version for o in onnx.load(path).opset_import] == [opset]
    assert OnnxBayesianModel(path).predict(_images(2)).mean.shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"opset": 12}, "opset=12"),
        ({"opset": 15.0}, "opset=15.0"),
        ({"opset": True}, "opset=True"),
        ({"sampling": "exact"}, "sampling='exact'"),
        ({"num_samples": 0}, "num_samples=0"),
    ],
)
def test_invalid_arguments(tiny, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.to_onnx(tiny, tmp_path / "m.onnx", **kwargs)
    assert not (tmp_path / "m.onnx").exists()


def test_directory_path_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="existing directory"):
        export.to_onnx(tiny, tmp_path)


# --------------------------------------------------------- randomness
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_two_sessions_and_two_runs_draw_different_samples(files, sampling):
    x = _images(3)
    first, second = OnnxBayesianModel(files[sampling]), OnnxBayesianModel(files[sampling])
    a, b = first.sample(x), second.sample(x)
    assert a.shape == b.shape == (S, 3, 3)
    assert not np.allclose(a, b), "two sessions repeated one sequence (a fixed seed)"
    assert not np.allclose(a, first.sample(x)), "a second run repeated the first"


def test_moments_file_is_deterministic_and_equals_keras_moments(tiny, files):
    """The moment pass inside the file is `tfp_bcnn.moments.propagate`, op for op.

    Tolerance: float32 round-off of convolutions summed in another order
    (ONNX Runtime vs TensorFlow kernels), ~1e-6 relative on logits of order 1.
    """
    x = _images(6)
    session = ort.InferenceSession(files["moments"])
    names = ["logit_mean", "logit_variance"]
    first, second = session.run(names, {"images": x}), session.run(names, {"images": x})
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    reference = moments.propagate(tiny, x)
    np.testing.assert_allclose(first[0], keras.ops.convert_to_numpy(reference.mean),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first[1], keras.ops.convert_to_numpy(reference.variance),
                               rtol=1e-4, atol=1e-6)
    assert first[1].max() > 1e-3, "sigma 0.3 must give visible logit variances"


# ------------------------------------------------------------ runtime
def test_runtime_attributes_and_fields(files):
    model = OnnxBayesianModel(files["lrt"], num_threads=1)
    assert (model.input_shape, model.num_classes, model.num_samples) == ((None, 12, 12, 1), 3, S)
    p = model.predict(_images(5), num_invocations=2, return_samples=True)
    assert p.samples.shape == (2 * S, 5, 3)
    np.testing.assert_allclose(p.mean.sum(1), 1.0, atol=1e-5)
    assert p.mean.shape == p.std.shape == (5, 3) and p.epistemic.shape == (5,)
    assert type(p).__module__ == "tfp_bcnn._prediction"
    chunked = model.sample(_images(5), batch_size=2)
    assert chunked.shape == (S, 5, 3)


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_empty_batch_gives_empty_fields(files, sampling):
    p = OnnxBayesianModel(files[sampling]).predict(np.zeros((0, 12, 12, 1), np.float32))
    assert p.mean.shape == (0, 3) and p.epistemic.shape == (0,)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((12, 12, 1), np.float32), r"x\[None\]"),
        (np.zeros((2, 12, 12), np.float32), r"x.shape=\(2, 12, 12\)"),
        (np.zeros((2, 12, 13, 1), np.float32), r"x.shape=\(2, 12, 13, 1\)"),
        (np.zeros((2, 12, 12, 1), np.uint8), "x.dtype=uint8"),
        (np.where(np.arange(2)[:, None, None, None] == 1, np.nan, _images(2)), r"\[1\]"),
    ],
)
def test_runtime_refuses_bad_inputs(files, x, match):
    with pytest.raises(ValueError, match=match):
        OnnxBayesianModel(files["lrt"]).predict(x)


@pytest.mark.parametrize(
    "kwargs", [{"num_invocations": 0}, {"batch_size": -1}, {"num_invocations": 1.5}]
)
def test_runtime_invalid_arguments(files, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        OnnxBayesianModel(files["lrt"]).predict(_images(2), **kwargs)


def test_runtime_refuses_bad_files(files, tmp_path):
    with pytest.raises(ValueError, match="num_threads=0"):
        OnnxBayesianModel(files["lrt"], num_threads=0)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxBayesianModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="directory"):
        OnnxBayesianModel(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="junk.onnx"):
        OnnxBayesianModel(junk)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(files["lrt"], "rb").read()[:500])
    with pytest.raises(ValueError, match="truncated.onnx"):
        OnnxBayesianModel(truncated)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), foreign)
    with pytest.raises(ValueError, match="Not a model written by tfp_bcnn.export.to_onnx"):
        OnnxBayesianModel(foreign)


def test_runtime_is_thread_safe(tmp_path):
    """Eight threads share one object; each gets its own inputs' answer.

    sigma is 1e-8, so the answers are the deterministic net's up to float32
    round-off: a mixed-up batch would differ by far more than 1e-5.
    """
    model = _tiny()
    _set_sigma(model, 1e-8)
    runner = OnnxBayesianModel(export.to_onnx(model, tmp_path / "m.onnx", num_samples=4))
    inputs = [_images(4, seed=i) for i in range(8)]
    expected = [runner.predict(x).mean for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda x: runner.predict(x).mean, inputs * 4))
    for i, mean in enumerate(got):
        np.testing.assert_allclose(mean, expected[i % 8], atol=1e-5)


def test_describe_onnx(files):
    info = export.describe(files["weights"])
    assert info["format"] == "onnx" and info["sampling"] == "weights"
    assert info["num_samples"] == S and info["opset"] == 15
    assert info["ops"]["RandomNormal"] >= 1 and info["op_count"] == sum(info["ops"].values())
    assert info["flex_ops"] == [] and info["weights"] > 0
    assert info["signatures"]["serving_default"]["inputs"] == ["images"]


def test_describe_refuses_corrupt_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="bad.onnx"):
        export.describe(bad)


# ------------------------------------------ agreement with Keras (slow)
@pytest.fixture(scope="module")
def trained():
    from tfp_bcnn import datasets

    (x, y), (xt, _) = datasets.mnist_5k()
    keras.utils.set_random_seed(7)
    model = _lenet_ish(2000)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[:2000], y[:2000], batch_size=64, epochs=2, verbose=0)
    return model, xt[:NUM_TEST]


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["lrt", "weights"])
def test_monte_carlo_file_agrees_with_keras(trained, tmp_path, sampling):
    """Argmax agreement >= 97 %, mean |p - p_keras| within the Monte Carlo bound,
    epistemic rank correlation >= 0.8 (test_export's `_check_agreement`)."""
    model, x = trained
    keras.utils.set_random_seed(8)
    reference = predict(model, x, num_samples=NUM_SAMPLES)
    path = export.to_onnx(model, tmp_path / "m.onnx", num_samples=NUM_SAMPLES, sampling=sampling)
    _check_agreement(reference, OnnxBayesianModel(path).predict(x))


@pytest.mark.slow
def test_moments_file_agrees_with_keras_moments(trained, tmp_path):
    """Argmax agreement >= 99 % with `predict(method="moments")` (same maths,
    independent logit draws: only near-ties can flip)."""
    model, x = trained
    reference = predict(model, x, num_samples=NUM_SAMPLES, method="moments")
    path = export.to_onnx(model, tmp_path / "m.onnx", num_samples=NUM_SAMPLES,
                          sampling="moments")
    mean = OnnxBayesianModel(path).predict(x).mean
    assert np.mean(mean.argmax(1) == reference.mean.argmax(1)) >= 0.99
    assert np.mean(np.abs(mean - reference.mean)) < 0.02


@pytest.mark.slow
def test_cli_export_onnx(tmp_path, capsys):
    from tfp_bcnn import cli, models, workflow

    path = workflow.save_model(models.lenet5(num_train_examples=4000, seed=0),
                               tmp_path / "m.keras")
    target = tmp_path / "m.onnx"
    assert cli.main(["export", str(path), "--onnx", str(target), "--sampling", "moments",
                     "--samples", "8", "--check-images", "50"]) == 0
    out = capsys.readouterr().out
    info = export.describe(target)
    assert info["sampling"] == "moments" and info["num_samples"] == 8
    assert "onnx: " in out and "argmax_agreement" in out


def test_latency_helper_times_onnx_beside_tflite(tiny, files, tmp_path):
    """benchmarks/_latency.py times .onnx and .tflite files in one interleaved loop."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    try:
        import _latency
    finally:
        sys.path.pop(0)
    lite = export.to_tflite(tiny, tmp_path / "m.tflite", num_samples=S, sampling="moments")
    res = _latency.time_tflite_files({"onnx": files["moments"], "tflite": lite},
                                     repeats=3, warmup=1)
    assert list(res) == ["onnx", "tflite"]
    for r in res.values():
        assert r["repeats"] == 3 and 0 < r["ms_p10"] <= r["ms"] <= r["ms_p90"]
    assert res["onnx"]["partitions"] is None and res["onnx"]["op_counts"]["RandomNormalLike"] == 1
    assert res["onnx"]["ops"] == export.describe(files["moments"])["op_count"]


@pytest.mark.slow
def test_runner_runs_on_a_device_without_tensorflow_or_keras(files, tmp_path):
    """onnx_runtime.py copied beside runtime.py runs with TF/Keras/tfp_bcnn imports blocked."""
    import shutil
    import subprocess
    import sys
    import textwrap

    from tfp_bcnn.export import _onnx_runtime, runtime

    shutil.copy(runtime.__file__, tmp_path / "runtime.py")
    shutil.copy(_onnx_runtime.__file__, tmp_path / "onnx_runtime.py")
    code = textwrap.dedent(
        f"""
        import sys

        BLOCKED = ("tensorflow", "keras", "tfp_bcnn", "tensorflow_probability", "tf_keras",
                   "tf2onnx")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked import: " + name)

        sys.meta_path.insert(0, Block())
        import numpy as np
        from onnx_runtime import OnnxBayesianModel

        model = OnnxBayesianModel({str(files["moments"])!r})
        p = model.predict(np.zeros((3, 12, 12, 1), np.float32), num_invocations=2,
                          return_samples=True)
        assert p.mean.shape == (3, 3) and p.samples.shape == (2 * {S}, 3, 3)
        try:
            model.predict(np.full((1, 12, 12, 1), np.nan, np.float32))
        except ValueError as err:
            assert "NaN" in str(err)
        else:
            raise AssertionError("NaN accepted")
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_dense_onnx_files_give_per_pixel_fields(tmp_path):
    """A per-pixel softmax U-Net and a per-pixel GaussianHead regressor export
    to ONNX and `OnnxBayesianModel` reads them: at sigma = 1e-8 every sample is
    the mean network, so the per-pixel fields equal the Keras model to float32
    round-off (1e-5), for Monte Carlo and moments files alike."""
    from test_dense_inference import _images as _dense_images
    from test_dense_inference import _unet

    from tfp_bcnn.uncertainty import RegressionPrediction

    x = _dense_images(3, 2)
    for head in ("softmax", "gaussian"):
        model = _unet("both", head, std=1e-8)
        expected = np.asarray(model(x, training=False))
        for sampling in ("lrt", "moments"):
            path = export.to_onnx(model, tmp_path / f"{head}_{sampling}.onnx", num_samples=4,
                                  sampling=sampling)
            runner = OnnxBayesianModel(path)
            assert runner.output_shape == expected.shape[1:], (head, sampling)
            p = runner.predict(x, return_samples=True)
            assert p.samples.shape == (4, *expected.shape)
            if head == "softmax":
                assert not runner.regression and p.epistemic.shape == (3, 8, 8)
                np.testing.assert_allclose(p.mean, expected, atol=1e-5)
            else:
                assert runner.regression and isinstance(p, RegressionPrediction)
                np.testing.assert_allclose(p.mean, expected[..., :1], atol=1e-5)
                np.testing.assert_allclose(p.aleatoric_variance, expected[..., 1:] ** 2,
                                           rtol=1e-4)


@pytest.mark.slow
def test_rank1_moments_onnx_is_the_mixture(tmp_path):
    """A rank-1 mixture (K = 2) exports its K moment passes: the ONNX file's
    mean probabilities agree with ``predict(method="moments")`` within Monte
    Carlo error (S = 1024 each; `_assert_same_mean`'s 5 standard errors)."""
    from test_dense_inference import _assert_same_mean

    from tfp_bcnn import models

    keras.utils.set_random_seed(5)
    model = models.lenet5(num_classes=4, posterior="rank1", num_components=2,
                          num_train_examples=100)
    x = np.random.default_rng(5).random((3, 28, 28, 1), dtype=np.float32)
    path = export.to_onnx(model, tmp_path / "r1.onnx", num_samples=256, sampling="moments")
    onnx_p = OnnxBayesianModel(path).predict(x, num_invocations=4)
    keras_p = predict(model, x, num_samples=1024, method="moments")
    _assert_same_mean(onnx_p, keras_p, 1024, 1024)
