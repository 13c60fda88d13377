"""Model zoo builders, compile helper and to_bayesian conversion."""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import tfp_bcnn
from tfp_bcnn import layers, models, priors
from tfp_bcnn.layers import ESTIMATORS, BayesianLayer
from tfp_bcnn.layers._base import SIGMA_FLOOR

# (builder, small input shape) -- alexnet works at any size, 3Conv3FC needs >= 22x22.
ARCHS = [
    (models.lenet5, (28, 28, 1)),
    (models.alexnet, (16, 16, 1)),
    (models.three_conv_three_fc, (24, 24, 1)),
]
ARCH_IDS = [f.__name__ for f, _ in ARCHS]


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def linear_layers(model):
    return [
        layer for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, BayesianLayer))
    ]


def rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype("float32")


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("builder,shape", ARCHS, ids=ARCH_IDS)
def test_builder_params_twice_the_twin(builder, shape, estimator):
    bnn = builder(shape, num_classes=7, estimator=estimator, num_train_examples=500)
    twin = builder(shape, num_classes=7, bayesian=False)
    twin_layers = linear_layers(twin)
    kernels = sum(int(np.prod(layer.kernel.shape)) for layer in twin_layers)
    biases = sum(int(np.prod(layer.bias.shape)) for layer in twin_layers)
    assert n_params(twin.trainable_weights) == kernels + biases
    # Bayesian: loc and rho per kernel weight, deterministic bias.
    assert n_params(bnn.trainable_weights) == 2 * kernels + biases
    # Non-trainable: the pruning mask (one per kernel weight) and a kl_weight per layer.
    assert n_params(bnn.non_trainable_weights) == kernels + len(twin_layers)
    bnn_layers = linear_layers(bnn)
    assert [layer.name for layer in bnn_layers] == [layer.name for layer in twin_layers]
    assert all(isinstance(layer, BayesianLayer) for layer in bnn_layers)
    assert all(layer.estimator == estimator for layer in bnn_layers)
    assert [type(layer) for layer in bnn.layers if not isinstance(layer, BayesianLayer)] == [
        type(layer) for layer in twin.layers if layer not in twin_layers
    ]
    assert bnn.output_shape == twin.output_shape == (None, 7)
    for layer in bnn_layers:
        assert float(ops.convert_to_numpy(layer.kl_weight)) == pytest.approx(1 / 500)


def test_lenet5_geometry_and_softmax():
    model = models.lenet5(num_train_examples=4000)
    twin = models.lenet5(bayesian=False)
    # LeCun's geometry on 28x28: 5x5x16 = 400 features, 61,706 parameters.
    assert model.get_layer("flatten").output.shape[1:] == (400,)
    assert twin.count_params() == 61706
    assert model.name == "lenet5" and twin.name == "lenet5_deterministic"
    probs = ops.convert_to_numpy(model(rand((3, 28, 28, 1))))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    # 32x32 inputs: "valid" first convolution, as in the reference code.
    big = models.lenet5((32, 32, 3), bayesian=False)
    assert big.get_layer("flatten").output.shape[1:] == (400,)


def test_alexnet_and_3conv3fc_reference_geometry():
    alex = models.alexnet((32, 32, 3), bayesian=False)
    assert [alex.get_layer(f"pool{i}").output.shape[1] for i in (1, 2, 3)] == [4, 2, 1]
    alex28 = models.alexnet((28, 28, 1), bayesian=False)
    assert alex28.get_layer("flatten").output.shape[1:] == (128,)
    tc = models.three_conv_three_fc((32, 32, 3), bayesian=False)
    assert tc.get_layer("flatten").output.shape[1:] == (2 * 2 * 128,)


@pytest.mark.parametrize("builder", [f for f, _ in ARCHS], ids=ARCH_IDS)
def test_num_train_examples_required(builder):
    with pytest.raises(ValueError, match=r"num_train_examples=None"):
        builder()
    builder(bayesian=False)  # the twin needs none


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "4000"])
def test_num_train_examples_invalid(bad):
    with pytest.raises(ValueError, match=r"Received: num_train_examples="):
        models.lenet5(num_train_examples=bad)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"estimator": "bbb"}, r"estimator='bbb'"),
        ({"input_shape": (28, 28)}, r"input_shape=\(28, 28\)"),
        ({"num_classes": 1}, r"num_classes=1"),
    ],
)
def test_builder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.lenet5(num_train_examples=10, **kwargs)


def test_same_seed_twin_starts_at_posterior_means():
    bnn = models.lenet5(num_train_examples=10, seed=3)
    twin = models.lenet5(bayesian=False, seed=3)
    for b, d in zip(linear_layers(bnn), linear_layers(twin)):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(b.kernel_loc), ops.convert_to_numpy(d.kernel)
        )
        assert b.seed is not None


def test_prior_and_posterior_std_passed():
    prior = priors.ScaleMixtureNormal(0.5, 1.0, 0.01)
    model = models.lenet5(num_train_examples=10, prior=prior, posterior_std_init=0.02)
    for layer in linear_layers(model):
        assert layer.prior == prior
        np.testing.assert_allclose(ops.convert_to_numpy(layer.kernel_sigma), 0.02, rtol=1e-5)


@pytest.mark.slow
def test_compile_bayesian_logs_kl_and_trains():
    x, y = rand((64, 28, 28, 1)), np.arange(64) % 10
    model = models.compile_bayesian(models.lenet5(num_train_examples=64, seed=0))
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert {"loss", "accuracy", "kl"} <= set(history.history)
    assert 0 < history.history["kl"][0] < history.history["loss"][0]
    twin = models.compile_bayesian(models.lenet5(bayesian=False))
    assert "kl" not in twin.fit(x, y, epochs=1, verbose=0).history


def test_compile_bayesian_defaults_to_the_recipe():
    model = models.compile_bayesian(models.lenet5(bayesian=False))
    assert float(model.optimizer.learning_rate) == pytest.approx(models.RECIPE["learning_rate"])
    model = models.compile_bayesian(models.lenet5(bayesian=False), 1e-2)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)


def test_lenet5_keras_round_trip(tmp_path):
    model = models.compile_bayesian(
        models.lenet5(estimator="local_reparameterization", num_train_examples=4000, seed=1)
    )
    path = str(tmp_path / "lenet5.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    for a, b in zip(model.weights, loaded.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    assert tfp_bcnn.get_kl_weight(loaded) == pytest.approx(1 / 4000)
    assert json.dumps(loaded.get_config(), default=str) == json.dumps(
        model.get_config(), default=str
    )


# --------------------------------------------------------------------------
# to_bayesian
# --------------------------------------------------------------------------


def trained_residual_model():
    """Functional model with a skip connection (Add), BatchNorm and pooling."""
    inputs = keras.Input((8, 8, 2), name="x")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    r = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="c2")(h)
    h = keras.layers.Add(name="add")([h, r])
    h = keras.layers.Conv2D(6, 3, strides=2, use_bias=False, name="c3")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs, name="resnetish")
    # Non-trivial weights everywhere (also BatchNorm's moving statistics).
    rng = np.random.default_rng(0)
    model.set_weights([
        (rng.standard_normal(w.shape) * 0.3 + (1.0 if "variance" in w.path else 0.0))
        .astype("float32")
        for w in model.weights
    ])
    return model


def graph_signature(model):
    """(layer name, inbound nodes as serialized) for every layer of a functional model."""
    return [(layer["name"], layer["inbound_nodes"]) for layer in model.get_config()["layers"]]


def test_to_bayesian_keeps_functional_graph():
    model = trained_residual_model()
    bnn = models.to_bayesian(model, num_train_examples=100, estimator="local_reparameterization")
    assert bnn is not model and bnn.name == model.name
    assert json.dumps(graph_signature(bnn)) == json.dumps(graph_signature(model))
    assert bnn.output_shape == model.output_shape
    converted = {"c1", "c2", "c3", "out"}
    for layer in bnn.layers:
        assert isinstance(layer, BayesianLayer) == (layer.name in converted), layer.name
    c2 = bnn.get_layer("c2")
    assert type(c2) is layers.Conv2DLocalReparameterization
    assert (c2.units, c2.kernel_size, c2.padding, c2.dilation_rate) == (4, (3, 3), "same", (2, 2))
    assert bnn.get_layer("c3").strides == (2, 2) and bnn.get_layer("c3").bias is None
    assert bnn.get_layer("c1").activation is keras.activations.relu
    assert bnn.get_layer("out").activation is keras.activations.softmax
    # Means and biases at the trained weights, sigma = posterior_std_init.
    for name in converted:
        old, new = model.get_layer(name), bnn.get_layer(name)
        np.testing.assert_array_equal(
            ops.convert_to_numpy(new.kernel_loc), ops.convert_to_numpy(old.kernel)
        )
        if old.use_bias:
            np.testing.assert_array_equal(
                ops.convert_to_numpy(new.bias), ops.convert_to_numpy(old.bias)
            )
        np.testing.assert_allclose(ops.convert_to_numpy(new.kernel_sigma), 1e-3, rtol=1e-4)
        assert float(ops.convert_to_numpy(new.kl_weight)) == pytest.approx(0.01)
    # Other layers: copied weights, not shared variables.
    old_bn, new_bn = model.get_layer("bn"), bnn.get_layer("bn")
    for a, b in zip(old_bn.weights, new_bn.weights):
        assert a is not b
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    old_bn.moving_mean.assign(np.zeros(4, "float32") + 9.0)
    assert not np.any(ops.convert_to_numpy(new_bn.moving_mean) == 9.0)


def test_moped_small_delta_matches_original():
    """With delta = 1e-6 every sigma is the floor 1e-6 (|w| < 1 here).

    The noise a layer adds has std ``sigma * ||x||`` per output (Flipout), about
    1e-5 for these inputs; through four layers it stays far below the
    tolerance 1e-4 on probabilities in [0, 1]. The mean over 8 calls must match
    the deterministic model; so must every single call.
    """
    model = trained_residual_model()
    bnn = models.to_bayesian(model, num_train_examples=100, moped_delta=1e-6)
    x = rand((16, 8, 8, 2), seed=1)
    expected = ops.convert_to_numpy(model(x))
    calls = np.stack([ops.convert_to_numpy(bnn(x)) for _ in range(8)])
    np.testing.assert_allclose(calls.mean(0), expected, atol=1e-4)
    np.testing.assert_allclose(calls[0], expected, atol=1e-4)
    # And the noise is there: a large delta changes the outputs.
    noisy = models.to_bayesian(model, num_train_examples=100, moped_delta=0.5)
    assert np.max(np.abs(ops.convert_to_numpy(noisy(x)) - expected)) > 1e-3


def test_moped_sigma_and_centered_prior():
    model = trained_residual_model()
    bnn = models.to_bayesian(model, num_train_examples=50, moped_delta=0.1, centered_prior=True)
    for name in ("c1", "c2", "c3", "out"):
        w = ops.convert_to_numpy(model.get_layer(name).kernel)
        new = bnn.get_layer(name)
        expected = np.maximum(0.1 * np.abs(w), models.MOPED_SIGMA_FLOOR)
        np.testing.assert_allclose(
            ops.convert_to_numpy(new.kernel_sigma), expected, rtol=1e-4, atol=2 * SIGMA_FLOOR
        )
        assert new.centered_prior
        np.testing.assert_array_equal(ops.convert_to_numpy(new.kernel_prior_loc), w)
    # The analytic Normal prior takes no sample: the centred KL outside a
    # forward pass (as the KL metric computes it) must not subtract from None.
    assert np.isfinite(float(ops.convert_to_numpy(tfp_bcnn.kl_divergence(bnn))))
    # A zero weight gets the floor, never a zero or NaN sigma.
    model.get_layer("out").kernel.assign(np.zeros((6, 3), "float32"))
    bnn = models.to_bayesian(model, num_train_examples=50, moped_delta=0.1)
    sigma = ops.convert_to_numpy(bnn.get_layer("out").kernel_sigma)
    np.testing.assert_allclose(sigma, models.MOPED_SIGMA_FLOOR, rtol=1e-3)
    assert np.isfinite(float(ops.convert_to_numpy(tfp_bcnn.kl_divergence(bnn))))


def test_to_bayesian_sequential_and_training():
    model = keras.Sequential([
        keras.Input((10, 3)),
        keras.layers.Conv1D(4, 3, activation="tanh", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax", name="dense"),
    ], name="seq")
    bnn = models.to_bayesian(model, "reparameterization", num_train_examples=20, seed=5)
    assert isinstance(bnn, keras.Sequential) and bnn.name == "seq"
    assert type(bnn.get_layer("conv")) is layers.Conv1DReparameterization
    assert type(bnn.get_layer("dense")) is layers.DenseReparameterization
    assert bnn.get_layer("conv").seed == 5 and bnn.get_layer("dense").seed == 6
    models.compile_bayesian(bnn)
    history = bnn.fit(rand((20, 10, 3)), np.arange(20) % 2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["kl"][0] > 0


def test_to_bayesian_nested_models():
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu", name="inner_dense")],
        name="inner",
    )
    block_in = keras.Input((5,))
    block = keras.Model(
        block_in, keras.layers.Dense(4, name="block_dense")(block_in), name="block"
    )
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(2, name="head")(block(inner(inputs)))
    model = keras.Model(inputs, outputs, name="outer")
    bnn = models.to_bayesian(model, num_train_examples=10)
    assert [layer.name for layer in bnn.layers] == [layer.name for layer in model.layers]
    new_inner, new_block = bnn.get_layer("inner"), bnn.get_layer("block")
    assert isinstance(new_inner, keras.Sequential) and isinstance(new_block, keras.Model)
    assert isinstance(new_inner.get_layer("inner_dense"), layers.DenseFlipout)
    assert isinstance(new_block.get_layer("block_dense"), layers.DenseFlipout)
    assert len(list(tfp_bcnn.bayesian_layers(bnn))) == 3
    np.testing.assert_array_equal(
        ops.convert_to_numpy(new_block.get_layer("block_dense").kernel_loc),
        ops.convert_to_numpy(block.get_layer("block_dense").kernel),
    )
    # Skipping a nested model keeps everything inside it deterministic.
    partial = models.to_bayesian(model, num_train_examples=10, skip=("inner",))
    assert type(partial.get_layer("inner").get_layer("inner_dense")) is keras.layers.Dense
    assert isinstance(partial.get_layer("block").get_layer("block_dense"), layers.DenseFlipout)
    x = rand((4, 6))
    np.testing.assert_allclose(
        ops.convert_to_numpy(models.to_bayesian(model, num_train_examples=10,
                                                moped_delta=1e-6)(x)),
        ops.convert_to_numpy(model(x)),
        atol=1e-4,
    )


def test_to_bayesian_keeps_shared_layers_shared():
    inputs = [keras.Input((4,), name="a"), keras.Input((4,), name="b")]
    shared = keras.layers.Dense(3, name="shared")
    outputs = keras.layers.Add(name="add")([shared(inputs[0]), shared(inputs[1])])
    model = keras.Model(inputs, outputs)
    bnn = models.to_bayesian(model, num_train_examples=10, moped_delta=1e-6)
    assert [layer.name for layer in bnn.layers] == ["a", "b", "shared", "add"]
    assert len(list(tfp_bcnn.bayesian_layers(bnn))) == 1
    x = [rand((2, 4), 1), rand((2, 4), 2)]
    np.testing.assert_allclose(
        ops.convert_to_numpy(bnn(x)), ops.convert_to_numpy(model(x)), atol=1e-4
    )


def model_with(layer, input_shape=(8, 8, 2)):
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(2, 3, padding="same", name="ok_conv")(inputs)
    h = layer(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="ok_dense")(h))


class MyDense(keras.layers.Dense):
    pass


class MyDepthwise(keras.layers.DepthwiseConv2D):
    pass


@pytest.mark.parametrize(
    "layer,why",
    [
        (keras.layers.EinsumDense("...d,de->...e", output_shape=3, name="ein"),
         "no Bayesian twin"),
        (MyDepthwise(3, name="dw"), "a subclass of DepthwiseConv2D"),
        (keras.layers.Conv2D(2, 3, groups=2, name="grouped"), r"grouped convolution \(groups=2\)"),
        (MyDense(3, name="mine"), "a subclass of Dense"),
    ],
    ids=["einsum", "depthwise-subclass", "groups", "dense-subclass"],
)
def test_unsupported_layer_raises_or_is_skipped(layer, why):
    model = model_with(layer)
    with pytest.raises(ValueError, match=rf"'{layer.name}' \({type(layer).__name__}: {why}"):
        models.to_bayesian(model, num_train_examples=10)
    for skip in ((layer.name,), (type(layer),)):
        bnn = models.to_bayesian(model, num_train_examples=10, skip=skip)
        kept = bnn.get_layer(layer.name)
        assert type(kept) is type(layer)
        for a, b in zip(layer.weights, kept.weights):
            np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
        assert isinstance(bnn.get_layer("ok_dense"), layers.DenseFlipout)


def test_causal_conv1d_raises():
    model = keras.Sequential(
        [keras.Input((8, 1)), keras.layers.Conv1D(2, 3, padding="causal", name="causal")]
    )
    with pytest.raises(ValueError, match=r"'causal' \(Conv1D: causal padding\)"):
        models.to_bayesian(model, num_train_examples=10)


def test_skip_keeps_convertible_layer_deterministic():
    model = trained_residual_model()
    bnn = models.to_bayesian(model, num_train_examples=10, skip=("out", keras.layers.Conv2D))
    assert not any(isinstance(layer, BayesianLayer) for layer in bnn.layers)
    np.testing.assert_allclose(
        ops.convert_to_numpy(bnn(rand((2, 8, 8, 2)))),
        ops.convert_to_numpy(model(rand((2, 8, 8, 2)))),
        rtol=1e-6,
    )


def test_to_bayesian_argument_errors():
    model = trained_residual_model()
    with pytest.raises(ValueError, match=r"num_train_examples=None"):
        models.to_bayesian(model)
    with pytest.raises(ValueError, match=r"moped_delta=-0.1"):
        models.to_bayesian(model, num_train_examples=10, moped_delta=-0.1)
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        models.to_bayesian(model, num_train_examples=10, skip=("nope",))
    with pytest.raises(TypeError, match=r"skip="):
        models.to_bayesian(model, num_train_examples=10, skip=(3,))
    with pytest.raises(ValueError, match=r"estimator='x'"):
        models.to_bayesian(model, "x", num_train_examples=10)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match=r"Sequential and functional"):
        models.to_bayesian(Sub(), num_train_examples=10)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"must be built"):
        models.to_bayesian(unbuilt, num_train_examples=10)


def test_regularizers_dropped_with_warning():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(2, kernel_regularizer="l2", name="reg")]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = models.to_bayesian(model, num_train_examples=10)
    assert any("['reg']" in str(w.message) for w in caught)
    assert isinstance(bnn.get_layer("reg"), layers.DenseFlipout)


def test_converted_model_round_trip(tmp_path):
    bnn = models.to_bayesian(
        trained_residual_model(), num_train_examples=100, moped_delta=0.1, centered_prior=True
    )
    path = str(tmp_path / "converted.keras")
    bnn.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(bnn.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_center_prior_is_a_deprecated_alias():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    with pytest.warns(DeprecationWarning, match="centered_prior"):
        bnn = models.to_bayesian(model, num_train_examples=10, center_prior=True)
    assert bnn.get_layer("fc").centered_prior


# --------------------------------------------------------------------------
# Edge networks: depthwise, separable and transposed convolutions
# --------------------------------------------------------------------------

def _tiny_unet():
    inputs = keras.Input((16, 16, 3))
    skip = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="enc")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(skip)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="mid")(h)
    h = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(h)
    h = keras.layers.Concatenate(name="cat")([h, skip])
    h = keras.layers.SeparableConv2D(4, 3, padding="same", depth_multiplier=2,
                                     activation="relu", name="sep")(h)
    h = keras.layers.ReLU(max_value=6.0, name="relu6")(h)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(h))


def _randomize_batchnorm(model, seed=0):
    """Non-trivial BatchNorm statistics, so that the comparison exercises them."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.1, beta.shape).astype("float32"),
                               rng.normal(0, 0.1, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
def test_unet_with_transposed_and_separable_converts(estimator):
    net = _tiny_unet()
    x = rand((2, 16, 16, 3), seed=1)
    bnn = models.to_bayesian(net, estimator=estimator, num_train_examples=100,
                             posterior_std_init=1e-7, seed=0)
    assert type(bnn.get_layer("up")) is layers.layer_class(2, estimator, kind="transpose")
    sep = bnn.get_layer("sep")
    assert [type(s) for s in sep.layers] == [layers.layer_class(2, estimator, kind="depthwise"),
                                             layers.layer_class(2, estimator)]
    assert [s.name for s in sep.layers] == ["sep_depthwise", "sep_pointwise"]
    assert type(bnn.get_layer("relu6")) is keras.layers.ReLU
    # posterior std 1e-7: each output moves by ~1e-7 * sqrt(sum x^2), far below 1e-4
    np.testing.assert_allclose(ops.convert_to_numpy(bnn(x)), ops.convert_to_numpy(net(x)),
                               rtol=1e-4, atol=1e-4)


def test_separable_moped_sigma_on_both_kernels():
    net = _tiny_unet()
    bnn = models.to_bayesian(net, num_train_examples=100, moped_delta=0.1)
    old = net.get_layer("sep")
    dw, pw = bnn.get_layer("sep").layers
    for new, w in ((dw, old.depthwise_kernel), (pw, old.pointwise_kernel)):
        w = ops.convert_to_numpy(w)
        np.testing.assert_allclose(ops.convert_to_numpy(new.kernel_loc), w)
        np.testing.assert_allclose(ops.convert_to_numpy(new.kernel_sigma),
                                   np.maximum(0.1 * np.abs(w), models.MOPED_SIGMA_FLOOR),
                                   rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(ops.convert_to_numpy(pw.bias), ops.convert_to_numpy(old.bias))


def test_mobilenet_v2_converts_and_keeps_its_outputs():
    net = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3),
                                         classes=10, classifier_activation=None)
    _randomize_batchnorm(net)
    x = rand((2, 32, 32, 3), seed=2)
    bnn = models.to_bayesian(net, estimator="flipout", num_train_examples=1000,
                             posterior_std_init=1e-7, moped_delta=None, seed=0)
    kinds = {}
    for old, new in zip(net.layers, bnn.layers):
        assert old.name == new.name
        kinds[type(old).__name__] = type(new).__name__
    assert kinds == {
        "InputLayer": "InputLayer", "Conv2D": "Conv2DFlipout",
        "DepthwiseConv2D": "DepthwiseConv2DFlipout", "Dense": "DenseFlipout",
        "BatchNormalization": "BatchNormalization", "ReLU": "ReLU", "Add": "Add",
        "ZeroPadding2D": "ZeroPadding2D", "GlobalAveragePooling2D": "GlobalAveragePooling2D",
    }
    assert len(list(tfp_bcnn.bayesian_layers(bnn))) == sum(
        isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                           keras.layers.Dense)) for layer in net.layers)
    logits = ops.convert_to_numpy(net(x, training=False))
    out = ops.convert_to_numpy(bnn(x, training=False))
    # sigma = 1e-7 through ~50 layers: the perturbation stays ~1e-5 of the logits' scale
    np.testing.assert_allclose(out, logits, rtol=1e-3, atol=1e-3 * np.abs(logits).max())
    # MOPED on a depthwise layer: sigma = delta * |w|
    moped = models.to_bayesian(net, num_train_examples=1000, moped_delta=0.1)
    w = ops.convert_to_numpy(net.get_layer("expanded_conv_depthwise").kernel)
    got = ops.convert_to_numpy(moped.get_layer("expanded_conv_depthwise").kernel_sigma)
    np.testing.assert_allclose(got, np.maximum(0.1 * np.abs(w), models.MOPED_SIGMA_FLOOR),
                               rtol=1e-4, atol=1e-7)


def test_output_bias_std_gives_the_output_layer_a_wide_bayesian_bias():
    model = models.lenet5(num_train_examples=100, output_bias_std=0.7, seed=0)
    out = model.get_layer("fc3")
    assert out.bayesian_bias and not model.get_layer("fc2").bayesian_bias
    np.testing.assert_allclose(np.asarray(out.bias_sigma), 0.7, rtol=1e-5)
    twin = models.lenet5(bayesian=False, output_bias_std=0.7)  # ignored by the twin
    assert twin.get_layer("fc3").bias is not None
    with pytest.raises(ValueError, match="output_bias_std=0"):
        models.lenet5(num_train_examples=100, output_bias_std=0)
