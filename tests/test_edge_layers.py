"""Bayesian depthwise and transposed convolutions against Keras' deterministic layers."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from keras import ops
from keras.src import testing

import tfp_bcnn  # noqa: F401  (registers the layers)
from tfp_bcnn import layers

from _backend import register, result

DEPTHWISE = sorted(layers.DEPTHWISE_CLASSES.items())
TRANSPOSE = sorted(layers.TRANSPOSE_CLASSES.items())
ALL = DEPTHWISE + TRANSPOSE
IDS = [cls.__name__ for _, cls in ALL]

#: rank -> (input shape without batch); 3 input channels everywhere.
SPATIAL = {1: (6, 3), 2: (5, 5, 3), 3: (3, 3, 3, 3)}


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def is_depthwise(cls):
    return issubclass(cls, layers.BayesianDepthwiseConv)


def make_pair(cls, **kwargs):
    """A Bayesian layer and its deterministic Keras twin with the same hyper-parameters."""
    rank = cls._rank
    if is_depthwise(cls):
        common = dict(kernel_size=3, strides=1, padding="same", depth_multiplier=2)
        keras_cls = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}[rank]
        return cls(**common, **kwargs), keras_cls(**common)
    common = dict(filters=2, kernel_size=3, strides=2, padding="same")
    keras_cls = {1: keras.layers.Conv1DTranspose, 2: keras.layers.Conv2DTranspose,
                 3: keras.layers.Conv3DTranspose}[rank]
    return cls(**common, **kwargs), keras_cls(**common)


def built_pair(cls, x, **kwargs):
    """The pair built on x, the Keras layer holding the posterior mean and a random bias."""
    bayes, det = make_pair(cls, **kwargs)
    bayes.build(x.shape)
    det.build(x.shape)
    loc = rand(bayes.kernel_loc.shape, seed=7)
    bias = rand(bayes.bias.shape, seed=8)
    bayes.kernel_loc.assign(loc)
    bayes.bias.assign(bias)
    det.set_weights([loc, bias])
    return bayes, det


@pytest.mark.parametrize("key,cls", ALL, ids=IDS)
def test_mean_is_the_keras_layer_with_posterior_means(key, cls):
    x = rand((2,) + SPATIAL[key[0]], seed=1)
    bayes, det = built_pair(cls, x)
    expected = ops.convert_to_numpy(det(x))
    assert bayes.kernel_loc.shape == det.kernel.shape  # same kernel layout as Keras
    # the linear map itself is the same op: float32 round-off only
    mean = ops.convert_to_numpy(bayes.linear(x, bayes.kernel_loc) + bayes.bias)
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-5)
    # at sigma = 1e-8 (the floor) any draw is the deterministic output: the noise
    # term is <= sum_i |x_i| * 1e-8 * |eps| ~ 1e-6
    bayes.kernel_rho.assign(np.full(bayes.kernel_rho.shape, -40.0, "float32"))
    out = ops.convert_to_numpy(bayes(x))
    assert out.shape == expected.shape == tuple(bayes.compute_output_shape(x.shape))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def draws(layer, x, n):
    """n independent output draws for the batch x.

    Local reparameterization draws every output element independently, so one
    call on x tiled n times gives n independent draws. Flipout and
    reparameterization share one kernel noise ``eps`` per call (Flipout's signs
    only decorrelate the examples), so they get n calls.
    """
    if layer.estimator == "local_reparameterization":
        out = ops.convert_to_numpy(layer(np.concatenate([x] * n)))
        return out.reshape((n, len(x)) + out.shape[1:])
    call = tf.function(layer.__call__)
    return np.stack([call(x).numpy() for _ in range(n)])


@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
@pytest.mark.parametrize("kind", ["depthwise", "transpose"])
def test_output_variance_is_linear_of_x2_and_sigma2(kind, estimator):
    """Var y = sum_i x_i^2 sigma_i^2 = linear(x^2, sigma^2) for all three estimators.

    The reference is Keras' deterministic layer applied to x^2 with the kernel
    sigma^2 (no bias), an independent implementation of the same map. The
    outputs are exactly normal given the signs (and the signs do not change
    the variance), so the sample variance of n draws has relative standard
    error sqrt(2 / (n - 1)); the tolerance is 5 of those (false alarm ~6e-7
    per element, a few hundred elements). The mean is checked to 5 standard
    errors of the sample mean.
    """
    cls = layers.layer_class(2, estimator, kind=kind)
    x = rand((2,) + SPATIAL[2], seed=3)
    bayes, det = built_pair(cls, x, seed=5)
    sigma = np.random.default_rng(9).uniform(0.1, 0.5, bayes.kernel_rho.shape).astype("float32")
    bayes.kernel_rho.assign(layers._base.rho_from_sigma(sigma).astype("float32"))
    n = 1500
    y = draws(bayes, x, n)
    det.set_weights([np.square(sigma), np.zeros(bayes.bias.shape, "float32")])
    analytic = ops.convert_to_numpy(det(np.square(x)))
    np.testing.assert_allclose(y.var(axis=0, ddof=1), analytic, rtol=5 * np.sqrt(2 / (n - 1)))
    det.set_weights([ops.convert_to_numpy(bayes.kernel_loc), ops.convert_to_numpy(bayes.bias)])
    se = np.sqrt(analytic / n)
    assert np.all(np.abs(y.mean(axis=0) - ops.convert_to_numpy(det(x))) <= 5 * se + 1e-5)


def test_flipout_decorrelates_the_examples_of_one_call():
    """One Flipout call on a repeated example: rows differ (own signs per example)."""
    for cls in (layers.DepthwiseConv2DFlipout, layers.Conv2DTransposeFlipout):
        x = np.repeat(rand((1,) + SPATIAL[2]), 8, axis=0)
        bayes, _ = built_pair(cls, x, posterior_std_init=0.5, seed=1)
        y = ops.convert_to_numpy(bayes(x))
        assert np.min(np.std(y, axis=0)) > 1e-3


@pytest.mark.parametrize("key,cls", ALL, ids=IDS)
def test_mask_zeroes_weights_and_kl(key, cls):
    x = rand((2,) + SPATIAL[key[0]], seed=2)
    bayes, det = built_pair(cls, x, posterior_std_init=0.3, seed=4)
    bayes.kernel_mask.assign(np.zeros(bayes.kernel_mask.shape, "float32"))
    out = ops.convert_to_numpy(bayes(x))
    # every weight pruned: the output is the bias, exactly, in every draw
    bias = ops.convert_to_numpy(bayes.bias)
    np.testing.assert_array_equal(out, np.broadcast_to(bias, out.shape))
    assert float(bayes.losses[-1]) == 0.0


@pytest.mark.parametrize("key,cls", ALL, ids=IDS)
def test_config_and_keras_file_round_trip(key, cls, tmp_path):
    shape = SPATIAL[key[0]]
    bayes, _ = make_pair(cls, posterior_std_init=0.02, kl_weight=0.25, seed=3,
                         name="edge")
    inp = keras.Input(shape)
    model = keras.Model(inp, bayes(inp))
    clone = cls.from_config(bayes.get_config())
    assert clone.get_config() == bayes.get_config()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("edge")
    assert type(layer) is cls
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    x = rand((2,) + shape)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.linear(x, layer.kernel_loc)),
        ops.convert_to_numpy(bayes.linear(x, bayes.kernel_loc)), rtol=1e-6, atol=1e-6)


def test_transpose_output_padding_and_errors():
    layer = layers.Conv2DTransposeFlipout(4, 3, strides=2, output_padding=1)
    ref = keras.layers.Conv2DTranspose(4, 3, strides=2, output_padding=1)
    x = rand((1, 5, 5, 3))
    assert layer(x).shape == ref(x).shape == (1, 12, 12, 4)
    assert layer.get_config()["output_padding"] == (1, 1)
    with pytest.raises(ValueError, match="output_padding=-1"):
        layers.Conv2DTransposeFlipout(4, 3, output_padding=-1)
    with pytest.raises(ValueError, match="depth_multiplier=0"):
        layers.DepthwiseConv2DFlipout(3, depth_multiplier=0)
    with pytest.raises(ValueError, match="rank=3"):
        layers.layer_class(3, "flipout", kind="depthwise")
    with pytest.raises(ValueError, match="kind='grouped'"):
        layers.layer_class(2, "flipout", kind="grouped")


class KerasLayerContractTest(testing.TestCase):
    """Keras' own layer checks (build, symbolic call, training, serialization,
    mixed precision) on every new class."""

    @parameterized.named_parameters(*[(cls.__name__, cls) for _, cls in ALL])
    def test_run_layer_test(self, cls):
        rank = cls._rank
        if is_depthwise(cls):
            kwargs = dict(kernel_size=3, depth_multiplier=2, padding="same", seed=1)
            out = (2,) + SPATIAL[rank][:-1] + (6,)
        else:
            kwargs = dict(filters=2, kernel_size=3, strides=2, padding="same", seed=1)
            out = (2,) + tuple(2 * n for n in SPATIAL[rank][:-1]) + (2,)
        self.run_layer_test(
            cls,
            init_kwargs=kwargs,
            input_shape=(2,) + SPATIAL[rank],
            expected_output_shape=out,
            expected_num_trainable_weights=3,  # kernel_loc, kernel_rho, bias
            expected_num_non_trainable_weights=2,  # kl_weight, kernel_mask
            expected_num_seed_generators=1,
            expected_num_losses=1,  # the KL
            supports_masking=False,
        )


JAX_SCRIPT = register("edge_layers_train", textwrap.dedent(
    """
    import numpy as np, keras, tfp_bcnn
    from tfp_bcnn import layers
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype("float32")
    y = np.random.default_rng(1).standard_normal((4, 6, 6, 6)).astype("float32")
    result = {}
    for est in layers.ESTIMATORS:
        inp = keras.Input((6, 6, 3))
        h = layers.layer_class(2, est, kind="depthwise")(3, depth_multiplier=2, padding="same",
                                                         posterior_std_init=0.05, seed=1)(inp)
        h = layers.layer_class(2, est, kind="transpose")(3, 3, strides=1, padding="same",
                                                         posterior_std_init=0.05, seed=2)(h)
        out = keras.layers.Conv2D(6, 1)(h)
        m = keras.Model(inp, out)
        m.compile("adam", "mse")
        h = m.fit(x, y, epochs=5, verbose=0).history["loss"]
        a, b = np.asarray(m(x)), np.asarray(m(x))
        result[est] = [h[0], h[-1], float(np.abs(a - b).max()), len(m.losses)]
    report(result)
    """
))


@pytest.mark.slow
def test_jax_backend_subprocess():
    pytest.importorskip("jax")
    for first, last, spread, n_losses in result(JAX_SCRIPT).values():
        assert last < first
        assert spread > 0
        assert n_losses == 2


# ------------------------------------------------------------ export / TFLite
def _edge_classifier():
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2DFlipout(4, 1, use_bias=False, seed=1)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU(6.0)(h)
    h = layers.DepthwiseConv2DFlipout(3, strides=2, padding="same", depth_multiplier=2,
                                      seed=2)(h)
    h = keras.layers.ReLU(6.0)(h)
    h = layers.Conv2DTransposeFlipout(3, 3, strides=2, padding="same", activation="relu",
                                      seed=3)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.DenseFlipout(4, activation="softmax", seed=4)(h))


@pytest.mark.parametrize("sampling", ["lrt", "weights", "moments"])
def test_tflite_builtins_and_runtime_agree_with_keras(sampling, tmp_path):
    """Depthwise and transposed Bayesian layers export to builtin ops
    (DEPTHWISE_CONV_2D, TRANSPOSE_CONV), and at sigma = 1e-8 the TF-free runtime
    gives the Keras model's probabilities to float32 round-off (1e-5)."""
    from ai_edge_litert.interpreter import Interpreter

    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    model = _edge_classifier()
    for layer in tfp_bcnn.bayesian_layers(model):
        layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, -40.0, "float32"))
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    expected = ops.convert_to_numpy(model(x, training=False))
    path = export.to_tflite(model, tmp_path / f"{sampling}.tflite", num_samples=4,
                            sampling=sampling)
    ops_used = {op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()}
    assert not any(n.startswith("Flex") or n in ("CUSTOM", "DELEGATE") for n in ops_used)
    assert "DEPTHWISE_CONV_2D" in ops_used and "TRANSPOSE_CONV" in ops_used, ops_used
    pred = TFLiteBayesianModel(path).predict(x)
    np.testing.assert_allclose(pred.mean, expected, atol=1e-5)


def test_unstructured_pruning_masks_and_predict():
    """prune_now masks the depthwise / transposed kernels; predict (MC and moments) runs."""
    from tfp_bcnn import pruning

    model = _edge_classifier()
    pruning.prune_now(model, 0.5)
    for layer in tfp_bcnn.bayesian_layers(model):
        mask = ops.convert_to_numpy(layer.kernel_mask)
        assert mask.shape == tuple(layer.kernel_loc.shape)
        assert mask.sum() == mask.size - round(0.5 * mask.size)
        # the kept weights are the largest |mu|: every pruned |mu| <= every kept |mu|
        mu = np.abs(ops.convert_to_numpy(layer.kernel_loc))
        assert mu[mask == 0].max() <= mu[mask == 1].min()
    x = np.random.default_rng(1).random((5, 8, 8, 3), dtype=np.float32)
    mc = tfp_bcnn.predict(model, x, num_samples=8)
    mom = tfp_bcnn.predict(model, x, num_samples=8, method="moments")
    for p in (mc, mom):
        assert p.mean.shape == (5, 4)
        np.testing.assert_allclose(p.mean.sum(axis=1), 1.0, atol=1e-5)
