"""Tests of tfp_bcnn.export: inference form, SavedModel, TFLite, describe, atomic writes.

Statistical agreement tests use a small Flipout conv net trained briefly on
2,000 real MNIST images (shared, scope="module", with the exported files:
TFLite conversion is the slow part).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_bcnn import datasets, layers
from tfp_bcnn import export
from tfp_bcnn.export import _inference
from tfp_bcnn.export.runtime import TFLiteBayesianModel
from tfp_bcnn.uncertainty import predict

NUM_SAMPLES = 64
NUM_TEST = 200


# ----------------------------------------------------------------- helpers
def _spearman(a, b):
    """Spearman rank correlation with numpy ranks (no ties in float data)."""
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _mean_abs_bound(std_a, std_b, num_samples):
    """Bound on mean |mean_a - mean_b| for two independent S-sample estimates.

    Per entry the difference of the two Monte Carlo means has standard
    deviation ``sqrt((std_a^2 + std_b^2) / S)`` and, nearly normal, expected
    absolute value ``sqrt(2/pi)`` times that. Averaged over N * C = 2,000
    entries the ratio of observed to expected concentrates near 1 (Keras vs
    Keras measures 1.07); 1.5 leaves room for skewed small probabilities and
    for lrt's small bias (it ignores the weight sharing across positions).
    """
    expected = np.mean(np.sqrt(2 / np.pi) * np.sqrt((std_a**2 + std_b**2) / num_samples))
    return 1.5 * expected + 1e-6


def _check_agreement(reference, other, num_samples=NUM_SAMPLES):
    agree = np.mean(reference.mean.argmax(1) == other.mean.argmax(1))
    assert agree >= 0.97, agree
    mad = np.mean(np.abs(reference.mean - other.mean))
    bound = _mean_abs_bound(reference.std, other.std, num_samples)
    assert mad <= bound, (mad, bound)
    rho = _spearman(reference.epistemic, other.epistemic)
    assert rho >= 0.8, rho


class _Fields:
    def __init__(self, outputs):
        for k, v in outputs.items():
            setattr(self, k, np.asarray(v))


def _set_sigma(model, sigma):
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BayesianLayer):
            rho = layers._base.rho_from_sigma(sigma)
            layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, rho, np.float32))
            if layer.bias_rho is not None:
                layer.bias_rho.assign(np.full(layer.bias_rho.shape, rho, np.float32))


def _lenet_ish(num_train):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2DFlipout(8, 5, activation="relu", kl_weight=1 / num_train),
            keras.layers.MaxPooling2D(),
            layers.Conv2DFlipout(16, 5, activation="relu", kl_weight=1 / num_train),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            layers.DenseFlipout(10, activation="softmax", kl_weight=1 / num_train),
        ],
        name="lenet_ish",
    )


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mnist():
    (x, y), (xt, yt) = datasets.mnist_5k()
    return x[:2000], y[:2000], xt[:NUM_TEST], yt[:NUM_TEST]


@pytest.fixture(scope="module")
def trained(mnist):
    """Flipout conv net, 2 epochs on 2,000 MNIST images (about 8 s on 2 cores)."""
    keras.utils.set_random_seed(7)
    x, y, _, _ = mnist
    model = _lenet_ish(len(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_prediction(trained, mnist):
    keras.utils.set_random_seed(8)
    return predict(trained, mnist[2], num_samples=NUM_SAMPLES)


@pytest.fixture(scope="module")
def saved_models(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    return {
        s: export.save_saved_model(trained, root / f"sm_{s}", num_samples=NUM_SAMPLES, sampling=s)
        for s in _inference.SAMPLINGS
    }


@pytest.fixture(scope="module")
def tflites(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    return {
        s: export.to_tflite(trained, root / f"m_{s}.tflite", num_samples=NUM_SAMPLES, sampling=s)
        for s in _inference.SAMPLINGS
    }


# ------------------------------------------------ inference form (no files)
def _sequential():
    return keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            layers.Conv2DFlipout(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            layers.Conv2DLocalReparameterization(4, 3, strides=2, bayesian_bias=True),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            layers.DenseReparameterization(5, activation="softmax"),
        ]
    )


def _functional_skip():
    inp = keras.Input((10, 10, 1))
    h = layers.Conv2DFlipout(4, 3, padding="same", activation="relu")(inp)
    skip = keras.layers.Conv2D(4, 1)(inp)
    h = keras.layers.Add()([h, skip])
    h = keras.layers.BatchNormalization()(h)
    h = layers.Conv2DFlipout(3, 3, dilation_rate=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = layers.DenseFlipout(4, activation="softmax", bayesian_bias=True)(h)
    return keras.Model(inp, out)


def _nested_and_other_ranks():
    inner = keras.Sequential(
        [keras.Input((16, 3)), layers.Conv1DFlipout(4, 3, activation="relu"), keras.layers.Dense(5)]
    )
    inp = keras.Input((16, 3))
    h = inner(inp)  # (batch, 14, 5)
    h = layers.DenseFlipout(6, activation="tanh")(h)  # dense on a rank-3 input
    h = keras.layers.Flatten()(h)
    out = layers.DenseFlipout(3, activation="softmax")(h)
    return keras.Model(inp, out)


def _conv3d():
    return keras.Sequential(
        [
            keras.Input((6, 6, 6, 1)),
            layers.Conv3DFlipout(2, 3, activation="relu"),
            keras.layers.Flatten(),
            layers.DenseFlipout(3, activation="softmax"),
        ]
    )


def _channels_first():
    return keras.Sequential(
        [
            keras.Input((2, 7, 7)),
            layers.Conv2DFlipout(3, 3, data_format="channels_first", activation="relu"),
            layers.Conv2DFlipout(2, 2, data_format="channels_first", bayesian_bias=True),
            keras.layers.Flatten(),
            layers.DenseFlipout(3, activation="softmax"),
        ]
    )


def _edge():
    """MobileNet-style block and a decoder: depthwise and transposed convolutions, ReLU6."""
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2DFlipout(4, 1, use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU(6.0)(h)
    h = layers.DepthwiseConv2DFlipout(3, strides=2, padding="same", depth_multiplier=2,
                                      bayesian_bias=True)(h)
    h = keras.layers.ReLU(6.0)(h)
    skip = keras.layers.DepthwiseConv2D(3, padding="same")(h)  # deterministic twin too
    h = keras.layers.Add()([h, skip])
    h = layers.Conv2DTransposeLocalReparameterization(3, 3, strides=2, padding="same",
                                                      activation="relu6")(h)
    h = keras.layers.Conv2DTranspose(2, 2, strides=1, padding="valid")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = layers.DenseFlipout(4, activation="softmax")(h)
    return keras.Model(inp, out)


MODELS = {
    "edge_depthwise_transpose": _edge,
    "channels_first": _channels_first,
    "sequential": _sequential,
    "functional_skip": _functional_skip,
    "nested_conv1d_dense3d": _nested_and_other_ranks,
    "conv3d": _conv3d,
}


@pytest.mark.parametrize("sampling", _inference.SAMPLINGS)
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_inference_form_equals_model_when_sigma_vanishes(kind, sampling):
    """With sigma ~ 1e-8 every sample is the mean network: export == Keras to 1e-5.

    Checks the graph rewrite (skip connections, nested models, batch norm in
    inference mode, dropout as identity), conv ranks 1-3, strides, dilation,
    padding and both biases, against the Keras model itself.
    """
    model = MODELS[kind]()
    x = np.random.default_rng(0).random((3, *model.input_shape[1:]), dtype=np.float32)
    for layer in model._flatten_layers():
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        # non-trivial moving statistics
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    _set_sigma(model, 1e-8)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    if sampling == "moments" and kind == "nested_conv1d_dense3d":
        # tanh has no moment rule: refused by name (tests/test_moments.py)
        with pytest.raises(ValueError, match="tanh.*method='mc'"):
            _inference.InferenceGraph(model, num_samples=3, sampling=sampling)
        return
    graph = _inference.InferenceGraph(model, num_samples=3, sampling=sampling)
    out = tf.function(graph.predict)(tf.constant(x))
    np.testing.assert_allclose(out["mean"].numpy(), expected, atol=1e-5)
    assert np.max(out["epistemic"].numpy()) < 1e-5
    one = tf.function(graph.sample)(tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(one, expected, atol=1e-5)


def _one_by_one_conv(sampling, size=3):
    """1x1 conv, mu = 0, sigma = 1, on a size x size image of ones: output = kernel draw."""
    model = keras.Sequential(
        [keras.Input((size, size, 1)), layers.Conv2DFlipout(1, 1, use_bias=False),
         keras.layers.Flatten()]
    )
    layer = model.layers[0]
    layer.kernel_loc.assign(np.zeros((1, 1, 1, 1), np.float32))
    _set_sigma(model, 1.0)
    return _inference.InferenceGraph(model, num_samples=4, sampling=sampling)


def test_weights_sampling_shares_a_kernel_across_positions_lrt_does_not():
    """The documented lrt caveat: independent noise per spatial position."""
    x = tf.ones((1, 3, 3, 1))
    weights = tf.function(_one_by_one_conv("weights").predict)(x, return_samples=True)
    s = weights["samples"].numpy()[:, 0]  # (S, 9): one kernel draw per sample
    assert np.all(s == s[:, :1])
    assert np.std(s[:, 0]) > 0.1  # the samples differ from each other
    lrt = tf.function(_one_by_one_conv("lrt").predict)(x, return_samples=True)
    s = lrt["samples"].numpy()[:, 0]
    assert len(np.unique(s)) == s.size  # every position its own draw (9 < MIN_POSITIONS)
    # from 64 positions on, sign-flip noise (export/_random.py): one |draw| per
    # position shared by the samples, independent signs per sample and position
    graph = _one_by_one_conv("lrt", size=8)
    s = tf.function(graph.predict)(tf.ones((1, 8, 8, 1)), return_samples=True)["samples"]
    s = s.numpy()[:, 0]  # (4, 64)
    for row in s:
        assert len(np.unique(row)) == row.size
    np.testing.assert_allclose(np.abs(s), np.broadcast_to(np.abs(s[:1]), s.shape), rtol=1e-6)
    assert np.all(np.any(s != s[:1], axis=1)[1:])  # P(two equal sign patterns) = 2^-64


def test_random_ops_carry_no_seed_after_set_random_seed():
    keras.utils.set_random_seed(0)
    graph = _inference.InferenceGraph(_sequential(), num_samples=2, sampling="weights")
    fn = tf.function(graph.predict, input_signature=graph.input_signature)
    ops = [op for op in fn.get_concrete_function().graph.get_operations() if "Random" in op.type]
    assert ops and {op.type for op in ops} == {"RandomStandardNormal"}
    assert all(op.get_attr("seed") == 0 and op.get_attr("seed2") == 0 for op in ops)
    x = tf.ones((2, 12, 12, 2))
    assert not np.array_equal(fn(x)["mean"].numpy(), fn(x)["mean"].numpy())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampling": "flipout"}, "sampling"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2.0}, "num_samples"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _inference.InferenceGraph(_sequential(), **kwargs)


def test_unsupported_models(tmp_path):
    # a GaussianHead exports as the output layer only (tests/test_dense_inference.py)
    head = keras.Sequential([keras.Input((4,)), layers.GaussianHead(2),
                             layers.DenseFlipout(3, activation="softmax")])
    with pytest.raises(ValueError, match="GaussianHead only as the model's output"):
        export.to_tflite(head, tmp_path / "m.tflite")
    inp = keras.Input((4,))
    multi = keras.Model(inp, [layers.DenseFlipout(2)(inp), keras.layers.Dense(2)(inp)])
    with pytest.raises(ValueError, match="one input and one output"):
        export.save_saved_model(multi, tmp_path / "sm")
    with pytest.raises(ValueError, match="quantize"):
        export.to_tflite(_sequential(), tmp_path / "m.tflite", quantize="int4")
    assert not os.listdir(tmp_path)


# -------------------------------------------------------------- SavedModel
@pytest.mark.slow
def test_saved_model_agrees_with_keras(saved_models, keras_prediction, mnist):
    for sampling, path in saved_models.items():
        loaded = tf.saved_model.load(path)
        out = loaded.signatures["serving_default"](images=tf.constant(mnist[2]))
        assert set(out) == set(_inference.OUTPUT_NAMES), sampling
        _check_agreement(keras_prediction, _Fields(out))


@pytest.mark.slow
def test_saved_model_signatures_and_variable_batch(saved_models):
    loaded = tf.saved_model.load(saved_models["weights"])
    assert set(loaded.signatures) == {"serving_default", "sample"}
    for n in (1, 5):
        out = loaded.signatures["serving_default"](images=tf.zeros((n, 28, 28, 1)))
        assert out["mean"].shape == (n, 10) and out["epistemic"].shape == (n,)
        probs = loaded.signatures["sample"](images=tf.zeros((n, 28, 28, 1)))["probabilities"]
        assert probs.shape == (n, 10)
        np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_saved_model_loads_without_tfp_bcnn_keras_or_tfp(saved_models):
    """A subprocess blocks every new import of tfp_bcnn, TFP and Keras after TF."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf  # TF itself loads part of Keras: allowed

        BLOCKED = ("tfp_bcnn", "tensorflow_probability", "keras", "tf_keras")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked import: " + name)

        before = {{k for k in sys.modules if k.split(".")[0] in BLOCKED}}
        sys.meta_path.insert(0, Block())
        for path in {list(saved_models.values())!r}:
            m = tf.saved_model.load(path)
            out = m.signatures["serving_default"](images=tf.zeros((2, 28, 28, 1)))
            assert out["mean"].shape == (2, 10)
        after = {{k for k in sys.modules if k.split(".")[0] in BLOCKED}}
        assert not any(k.startswith(("tfp_bcnn", "tensorflow_probability")) for k in after)
        assert after == before, sorted(after - before)
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_saved_model_cli_run(saved_models, tmp_path):
    """``saved_model_cli run`` (TF 2.21 evaluates only literals in
    --input_exprs, so the images come from a .npy file via --inputs)."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed beside this python")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    result = subprocess.run(
        [
            cli, "run", "--dir", saved_models["lrt"], "--tag_set", "serve",
            "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in _inference.OUTPUT_NAMES:
        assert f"Result for output key {name}" in result.stdout


@pytest.mark.slow
def test_saved_model_random_ops_unseeded_and_fresh(saved_models):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_models["lrt"], "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes = [n for fn in proto.meta_graphs[0].graph_def.library.function for n in fn.node_def]
    random = [n for n in nodes if n.op.startswith(("Random", "StatelessRandom"))]
    # normals, and the uniforms of the sign-flip noise (export/_random.py)
    assert random and all(n.op in ("RandomStandardNormal", "RandomUniform") for n in random)
    assert all(n.attr["seed"].i == 0 and n.attr["seed2"].i == 0 for n in random)
    x = tf.ones((2, 28, 28, 1)) * 0.5
    a = tf.saved_model.load(saved_models["lrt"]).signatures["sample"](images=x)["probabilities"]
    b = tf.saved_model.load(saved_models["lrt"]).signatures["sample"](images=x)["probabilities"]
    assert not np.array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------------ TFLite
@pytest.mark.slow
def test_tflite_agrees_with_keras(tflites, keras_prediction, mnist):
    for sampling, path in tflites.items():
        p = TFLiteBayesianModel(path).predict(mnist[2])
        _check_agreement(keras_prediction, p)
        # and it classifies: accuracy close to the Keras model's
        acc_keras = np.mean(keras_prediction.mean.argmax(1) == mnist[3])
        assert np.mean(p.mean.argmax(1) == mnist[3]) >= acc_keras - 0.03, sampling


def _op_names(path):
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_path=os.fspath(path))._get_ops_details()]


@pytest.mark.slow
def test_tflite_builtin_ops_only(tflites):
    for sampling, path in tflites.items():
        names = _op_names(path)
        info = export.describe(path)
        assert sorted(info["ops"]) == sorted(set(names))
        flex = [n for n in names if n.startswith("Flex") or n in ("CUSTOM", "DELEGATE")]
        assert not flex and not info["flex_ops"], (sampling, flex)
        assert "RANDOM_STANDARD_NORMAL" in names
        for banned in ("WHILE", "IF", "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE"):
            assert banned not in names, (sampling, banned)


@pytest.mark.slow
def test_tflite_fresh_interpreters_draw_different_samples(tflites):
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    for path in tflites.values():
        a = TFLiteBayesianModel(path).sample(x)
        b = TFLiteBayesianModel(path).sample(x)
        assert not np.array_equal(a, b)


# --------------------------------------------------------- pruned weights
@pytest.fixture(scope="module")
def pruned(trained):
    """A copy of the trained net with 90% of every kernel masked by magnitude,
    and, in the first conv, every weight reading input rows 0-7 (so the first
    8 image rows cannot reach any output)."""
    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    for layer in model.layers:
        if isinstance(layer, layers.BayesianLayer):
            loc = np.abs(keras.ops.convert_to_numpy(layer.kernel_loc))
            mask = (loc > np.quantile(loc, 0.9)).astype(np.float32)
            layer.kernel_mask.assign(mask)
    return model


@pytest.mark.slow
def test_pruned_saved_model_kernels_are_exactly_zero(pruned, tmp_path):
    path = export.save_saved_model(pruned, tmp_path / "sm", num_samples=4)
    stored = {}
    variables = {id(v): v for v in tf.saved_model.load(path).variables}.values()
    for v in variables:
        if v.name.split("/")[-1].split(":")[0] in ("kernel_mean", "kernel_variance"):
            stored.setdefault(tuple(v.shape), []).append(v.numpy())
    for layer in pruned.layers:
        if isinstance(layer, layers.BayesianLayer):
            pruned_entries = keras.ops.convert_to_numpy(layer.kernel_mask) == 0
            kernels = stored[pruned_entries.shape]  # mean and variance
            assert len(kernels) == 2, layer.name
            for kernel in kernels:
                assert np.all(kernel[pruned_entries] == 0)
                assert np.all(kernel[~pruned_entries] != 0)
    assert export.describe(path)["zero_fraction"] > 0.8


@pytest.mark.slow
def test_pruned_tflite_sparse_is_smaller_and_exact(pruned, tmp_path):
    dense = export.to_tflite(pruned, tmp_path / "dense.tflite", num_samples=4, sparse=False)
    sparse = export.to_tflite(pruned, tmp_path / "sparse.tflite", num_samples=4, sparse=True)
    d, s = export.describe(dense), export.describe(sparse)
    assert s["size_bytes"] < 0.5 * d["size_bytes"], (s["size_bytes"], d["size_bytes"])
    assert s["sparse_tensors"] >= 4 and d["sparse_tensors"] == 0
    # masked entries are stored as exact zeros (dense) or not stored (sparse)
    assert d["zero_fraction"] > 0.85 and s["weights_stored"] < 0.2 * s["weights"]


@pytest.mark.slow
def test_pruned_weights_sampling_ignores_masked_inputs_exactly(pruned, tmp_path):
    """In "weights" mode a batch shares each kernel draw, so two images that
    differ only where every first-layer weight is masked give identical
    outputs in every sample, bit for bit (kernels stored compact, rebuilt
    with a scatter: the masked entries must be exact zeros)."""
    model = keras.models.clone_model(pruned)
    model.set_weights(pruned.get_weights())
    first = model.layers[0]  # 5x5 valid conv: input row 0 meets kernel row 0 only
    mask = keras.ops.convert_to_numpy(first.kernel_mask).copy()
    mask[0] = 0.0
    first.kernel_mask.assign(mask)
    path = export.to_tflite(model, tmp_path / "w.tflite", num_samples=8, sampling="weights")
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    x[1] = x[0]
    x[1, 0] = 1.0 - x[0, 0]  # change only input row 0
    samples = TFLiteBayesianModel(path).sample(x)
    np.testing.assert_array_equal(samples[:, 0], samples[:, 1])
    assert not np.array_equal(samples[0, 0], samples[1, 0])


@pytest.mark.slow
def test_dynamic_int8_runs_in_stock_interpreter(pruned, trained, tmp_path, mnist):
    path = export.to_tflite(pruned, tmp_path / "q.tflite", num_samples=16, quantize="dynamic")
    info = export.describe(path)
    assert info["int8_tensors"] >= 4 and not info["flex_ops"]
    runner = TFLiteBayesianModel(path)
    p = runner.predict(mnist[2][:50])
    ref = TFLiteBayesianModel(
        export.to_tflite(pruned, tmp_path / "f.tflite", num_samples=16, sparse=False)
    ).predict(mnist[2][:50])
    assert np.all(np.isfinite(p.mean))
    # int8 weights: the class decisions of the float model, up to borderline cases
    assert np.mean(p.mean.argmax(1) == ref.mean.argmax(1)) >= 0.9


# ------------------------------------------------------------ atomic writes
@pytest.mark.slow
def test_failed_tflite_export_keeps_previous_file(trained, tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous artifact")

    class Boom:
        @staticmethod
        def from_saved_model(*args, **kwargs):
            raise RuntimeError("converter exploded")

    monkeypatch.setattr(tf.lite, "TFLiteConverter", Boom)
    with pytest.raises(RuntimeError, match="exploded"):
        export.to_tflite(trained, target, num_samples=2)
    assert target.read_bytes() == b"previous artifact"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from tfp_bcnn import _io as _atomic

    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(_atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        _atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.tflite"]


@pytest.mark.slow
def test_saved_model_overwrite_and_failed_export(trained, tmp_path, monkeypatch):
    target = tmp_path / "sm"
    export.save_saved_model(trained, target, num_samples=2)
    export.save_saved_model(trained, target, num_samples=3)  # swap a complete one in
    assert sorted(os.listdir(tmp_path)) == ["sm"]
    before = {p: os.path.getsize(os.path.join(r, p)) for r, _, fs in os.walk(target) for p in fs}

    archive_class = type(keras.export.ExportArchive())  # the backend's subclass
    original = archive_class.write_out

    def write_then_fail(self, filepath, **kwargs):
        original(self, filepath, **kwargs)  # a complete directory, then...
        raise RuntimeError("crash after writing")

    monkeypatch.setattr(archive_class, "write_out", write_then_fail)
    with pytest.raises(RuntimeError, match="crash after writing"):
        export.save_saved_model(trained, target, num_samples=4)
    after = {p: os.path.getsize(os.path.join(r, p)) for r, _, fs in os.walk(target) for p in fs}
    assert after == before and sorted(os.listdir(tmp_path)) == ["sm"]
    out = tf.saved_model.load(target).signatures["serving_default"](images=tf.zeros((1, 28, 28, 1)))
    assert out["mean"].shape == (1, 10)


@pytest.mark.slow
def test_saved_model_refuses_to_replace_a_file(trained, tmp_path):
    target = tmp_path / "sm"
    target.write_bytes(b"a file")
    with pytest.raises(ValueError, match="not a directory"):
        export.save_saved_model(trained, target, num_samples=2)
    assert target.read_bytes() == b"a file" and os.listdir(tmp_path) == ["sm"]


# ---------------------------------------------------------------- describe
def test_describe_rejects_corrupt_artifacts(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.tflite"):
        export.describe(bad)
    (tmp_path / "sm").mkdir()
    with pytest.raises(ValueError, match="saved_model.pb"):
        export.describe(tmp_path / "sm")
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="sm"):
        export.describe(tmp_path / "sm")
    with pytest.raises(FileNotFoundError):
        export.describe(tmp_path / "missing.tflite")


@pytest.mark.slow
def test_artifacts_get_ordinary_permissions(tflites, saved_models):
    """Temporary files are private (0600 / 0700); the artifacts must not stay so."""
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tflites["lrt"]).st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(saved_models["lrt"]).st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.slow
def test_describe_tflite_fields(tflites):
    info = export.describe(tflites["lrt"])
    assert info["format"] == "tflite"
    assert 0 < info["gzip_bytes"] < info["size_bytes"] == os.path.getsize(tflites["lrt"])
    assert info["signatures"]["serving_default"]["inputs"] == ["images"]
    assert set(info["signatures"]["serving_default"]["outputs"]) == {
        *_inference.OUTPUT_NAMES,
        "samples",
    }


def test_graph_summaries_match_the_numpy_definition():
    """The TF ops inside an exported file compute `_prediction.summarize`'s fields.

    float32 in the graph against float64 in NumPy, probabilities away from 0
    (Dirichlet(2) draws, >= ~1e-4 here): 1e-5 absolute covers float32 rounding
    of logs and means of values <= log(4).
    """
    from tfp_bcnn import _prediction
    from tfp_bcnn.export import _inference

    probs = np.random.default_rng(3).dirichlet(np.full(4, 2.0), size=(16, 7))
    graph = _inference.summaries(tf.constant(probs, tf.float32), return_samples=True)
    ref = _prediction.summarize(probs)
    for name in _inference.OUTPUT_NAMES:
        np.testing.assert_allclose(graph[name].numpy(), getattr(ref, name), atol=1e-5)
    np.testing.assert_allclose(graph["samples"].numpy(), probs, atol=1e-7)
