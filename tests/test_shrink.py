"""Filter pruning (structure="filter") and `pruning.shrink`.

Exactness of `shrink` is checked two ways: the deterministic path (every
posterior std at the 1e-8 floor, so a forward pass is the mean network up to
~1e-8 noise) end to end, and the local-reparameterization moments (mean and
variance of the pre-activations) of each shrunk layer against the masked
layer on the same inputs, with ordinary posterior stds.
"""

import keras
import numpy as np
import pytest

import tfp_bcnn as bcnn
from tfp_bcnn import layers, models, pruning
from tfp_bcnn.layers import ESTIMATORS

L = keras.layers

#: float32 sums of a few hundred terms in a different order: ~1e-6 relative;
#: the 1e-8 std floor adds noise of ~1e-7 on activations of O(1).
ATOL = 2e-5


def _deterministic(model):
    for layer in bcnn.bayesian_layers(model):
        layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, -30.0, "float32"))


def _random_biases(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape).astype("float32"))


def _filters_pruned(layer):
    mask = layer.kernel_mask.numpy()
    return np.all(mask.reshape(-1, mask.shape[-1]) == 0, axis=0)


# ------------------------------------------------------------ filter masks


@pytest.mark.parametrize("criterion", ["l1", "magnitude", "snr"])
def test_filter_masks_zero_whole_filters_by_score(criterion):
    model = models.lenet5(num_train_examples=100, seed=0, posterior_std_init=0.01)
    for layer in bcnn.bayesian_layers(model):  # distinct stds, so SNR differs from |mu|
        rho = np.random.default_rng(1).normal(-4.0, 0.5, layer.kernel_rho.shape)
        layer.kernel_rho.assign(rho.astype("float32"))
    _random_biases(model)
    ref = {}
    for layer in bcnn.bayesian_layers(model):
        mu = np.abs(layer.kernel_loc.numpy().astype("float64"))
        mu = mu.reshape(-1, mu.shape[-1])
        sigma = layer.kernel_sigma.numpy().reshape(mu.shape)
        ref[layer.name] = {"l1": np.abs(mu).sum(0), "magnitude": np.sqrt((mu ** 2).sum(0)),
                           "snr": (mu / sigma).mean(0)}[criterion]
    pruning.prune_now(model, 0.5, criterion=criterion, structure="filter")
    for layer in bcnn.bayesian_layers(model):
        pruned = _filters_pruned(layer)
        loc, sigma = (t.numpy() for t in layer.kernel_posterior())
        if layer.name == "fc3":  # the classifier is never filter-pruned
            assert not pruned.any() and layer.kernel_mask.numpy().min() == 1
            continue
        k = round(0.5 * pruned.size)
        assert pruned.sum() == k
        expected = np.zeros(pruned.size, bool)
        expected[np.argsort(ref[layer.name], kind="stable")[:k]] = True
        np.testing.assert_array_equal(pruned, expected)
        # mean AND std of the whole filter are 0, and so is its bias
        assert np.all(loc[..., pruned] == 0) and np.all(sigma[..., pruned] == 0)
        assert np.all(sigma[..., ~pruned] > 0)
        assert np.all(layer.bias.numpy()[pruned] == 0)
    report = pruning.sparsity(model)
    assert report["conv1"] == 0.5 and report["fc3"] == 0.0


def test_global_filter_scope_keeps_a_filter_in_every_layer():
    model = models.lenet5(num_train_examples=100, seed=0)
    model.get_layer("conv1").kernel_loc.assign(
        model.get_layer("conv1").kernel_loc.numpy() * 1e-3)  # all tiny: first to go
    pruning.prune_now(model, 0.9, criterion="l1", scope="global", structure="filter")
    conv1 = _filters_pruned(model.get_layer("conv1"))
    assert conv1.sum() == conv1.size - 1
    counts = [_filters_pruned(layer) for layer in bcnn.bayesian_layers(model)][:-1]
    total = sum(c.size for c in counts)
    assert sum(c.sum() for c in counts) == round(0.9 * total)


def test_update_pruning_keeps_pruned_biases_at_zero():
    model = models.lenet5(num_train_examples=64, seed=0)
    pruning.prune(model, pruning.ConstantSparsity(0.5, 0, frequency=1000), criterion="snr",
                  structure="filter")
    assert pruning.pruning_config(model).structure == "filter"
    models.compile_bayesian(model, 1e-2)
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    model.fit(x, np.arange(64) % 10, batch_size=16, epochs=1, verbose=0,
              callbacks=[pruning.UpdatePruning()])
    for layer in list(bcnn.bayesian_layers(model))[:-1]:
        pruned = _filters_pruned(layer)
        assert pruned.sum() == round(0.5 * pruned.size)
        assert np.all(layer.bias.numpy()[pruned] == 0)
    config = pruning.pruning_config(model)
    assert pruning.PruningConfig.from_config(config.get_config()) == config


def test_bad_structured_arguments():
    model = models.lenet5(num_train_examples=10)
    with pytest.raises(ValueError, match="Received: structure='channel'"):
        pruning.prune(model, structure="channel")
    with pytest.raises(ValueError, match="Received: criterion='l2'"):
        pruning.prune_now(model, 0.5, criterion="l2", structure="filter")
    with pytest.raises(ValueError, match="never prunes the last Bayesian layer"):
        pruning.prune_now(model, 0.5, structure="filter",
                          exclude=["conv1", "conv2", "fc1", "fc2"])


# ------------------------------------------------------------------ shrink


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_shrink_keeps_the_function_of_lenet5(estimator, tmp_path):
    model = models.lenet5(num_train_examples=100, estimator=estimator, seed=0)
    _random_biases(model)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter")
    _deterministic(model)
    small = pruning.shrink(model)
    assert [r["channels"] for r in pruning.layer_costs(small)] == [3, 8, 60, 42, 10]
    assert small.count_params() < 0.3 * model.count_params()
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(small(x), model(x), atol=ATOL)
    # the masked model is untouched and the small one saves, loads and trains
    assert model.get_layer("conv1").kernel_loc.shape[-1] == 6
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), small(x), atol=ATOL)
    models.compile_bayesian(loaded)
    loaded.fit(x, np.arange(6), epochs=1, verbose=0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_shrink_keeps_the_moments_of_every_layer(estimator):
    """Mean and variance of each Bayesian layer's pre-activations, given the
    same (kept) inputs: ``x (*) mu`` and ``x^2 (*) sigma^2``, ordinary stds."""
    model = models.lenet5(num_train_examples=100, estimator=estimator, seed=0,
                          posterior_std_init=0.05)
    pruning.prune_now(model, 0.4, criterion="snr", structure="filter")
    small = pruning.shrink(model)
    rng = np.random.default_rng(0)
    old_layers = list(bcnn.bayesian_layers(model))
    new_layers = list(bcnn.bayesian_layers(small))
    for n, (old, new) in enumerate(zip(old_layers, new_layers)):
        in_shape = (4, *old.input.shape[1:])
        x = rng.random(in_shape).astype("float32")
        kept_out = np.flatnonzero(~_filters_pruned(old)) if old.name != "fc3" else slice(None)
        # a pruned filter of the layer before outputs relu(0) = 0
        x_new = x
        if n > 0:
            gone = _filters_pruned(old_layers[n - 1])
            x = (x.reshape(4, 5, 5, 16) if old.name == "fc1" else x).copy()
            x[..., gone] = 0.0
            x_new = x[..., ~gone]
            if old.name == "fc1":  # after Flatten of (5, 5, 16) channels_last
                x, x_new = x.reshape(4, -1), x_new.reshape(4, -1)
        for moment in (lambda layer, v: layer.linear(v, layer.kernel_posterior()[0]),
                       lambda layer, v: layer.linear(v ** 2, layer.kernel_posterior()[1] ** 2)):
            want = np.asarray(moment(old, x))[..., kept_out]
            got = np.asarray(moment(new, x_new))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("flatten_format", ["channels_last", "channels_first"])
def test_flatten_bookkeeping(conv_format, flatten_format):
    shape = (6, 6, 2) if conv_format == "channels_last" else (2, 6, 6)
    model = keras.Sequential([
        keras.Input(shape),
        layers.Conv2DReparameterization(5, 3, activation="relu", data_format=conv_format,
                                        name="conv"),
        L.MaxPooling2D(2, data_format=conv_format),
        L.Flatten(data_format=flatten_format),
        layers.DenseReparameterization(3, name="out"),
    ])
    _random_biases(model)
    mask = np.ones(model.get_layer("conv").kernel_mask.shape, "float32")
    mask[..., [1, 3]] = 0.0
    model.get_layer("conv").kernel_mask.assign(mask)
    model.get_layer("conv").bias.assign(np.array([0.1, 0.0, -0.2, 0.0, 0.3], "float32"))
    _deterministic(model)
    small = pruning.shrink(model)
    assert small.get_layer("conv").kernel_loc.shape[-1] == 3
    assert small.get_layer("out").kernel_loc.shape[0] == 3 * 2 * 2
    x = np.random.default_rng(0).random((4, *shape)).astype("float32")
    np.testing.assert_allclose(small(x), model(x), atol=ATOL)


def _functional_with_batchnorm():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2DLocalReparameterization(6, 3, padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.3)(x)
    x = L.Conv2D(4, 3, name="plain_conv")(x)  # plain Keras conv, "valid": folds
    x = L.ReLU()(x)
    x = layers.Conv2DFlipout(5, 1, activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = layers.DenseFlipout(7, activation="relu", name="fc")(x)
    outputs = layers.DenseFlipout(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="chain")


def test_shrink_through_batchnorm_plain_conv_and_global_pooling():
    model = _functional_with_batchnorm()
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(size=6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 6).astype("float32"))
    bn.beta.assign(rng.normal(size=6).astype("float32"))  # BN(0) != 0: folded
    pruning.prune_now(model, 0.5, criterion="magnitude", structure="filter")
    _deterministic(model)
    small = pruning.shrink(model)
    assert isinstance(small, keras.Model) and not isinstance(small, keras.Sequential)
    assert small.get_layer("conv1").kernel_loc.shape[-1] == 3
    assert small.get_layer("bn").gamma.shape == (3,)
    assert small.get_layer("plain_conv").kernel.shape == (3, 3, 3, 4)
    assert small.get_layer("conv2").kernel_loc.shape[-1] == 3  # 5 -> round(2.5) = 2 pruned
    assert small.get_layer("fc").kernel_loc.shape == (3, 3)  # 7 -> round(3.5) = 4 pruned
    assert small.get_layer("out").kernel_loc.shape == (3, 3)
    x = rng.random((5, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(small(x, training=False), model(x, training=False), atol=ATOL)


def test_a_nonzero_constant_before_a_bayesian_layer_keeps_its_channel():
    model = keras.Sequential([
        keras.Input((6,)),
        layers.DenseFlipout(4, activation="sigmoid", name="a"),  # sigmoid(0) = 0.5
        layers.DenseFlipout(2, name="b"),
    ])
    mask = np.ones((6, 4), "float32")
    mask[:, 1] = 0.0
    model.get_layer("a").kernel_mask.assign(mask)
    small = pruning.shrink(model)
    assert small.get_layer("a").kernel_loc.shape[-1] == 4  # kept: 0.5 * random weights


def test_unsupported_topologies_name_the_layer():
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2DFlipout(2, 3, padding="same", name="c1")(inputs)
    y = layers.Conv2DFlipout(2, 3, padding="same", name="c2")(x)
    z = L.Concatenate(name="concat")([x, y])  # a residual Add shrinks: test_shrink_groups
    outputs = layers.DenseFlipout(3, name="head")(L.Flatten()(z))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="Concatenate.*Received: layer='concat'"):
        pruning.prune_now(model, 0.5, structure="filter")
    with pytest.raises(ValueError, match="Concatenate.*Received: layer='concat'"):
        pruning.shrink(model)
    x = np.ones((2, 8, 8, 2), "float32")
    assert model(x).shape == (2, 3)  # the masked model is still usable

    inputs = keras.Input((4,))
    h = layers.DenseFlipout(3, name="h")(inputs)
    model = keras.Model(inputs, [L.Dense(2, name="p")(h), L.Dense(2, name="q")(h)])
    with pytest.raises(ValueError, match="one input and one output"):
        pruning.shrink(model)

    nested = keras.Sequential([keras.Input((4,)), keras.Sequential(
        [layers.DenseFlipout(3)], name="inner"), layers.DenseFlipout(2)])
    with pytest.raises(ValueError, match="Received: layer='inner'"):
        pruning.shrink(nested)
    with pytest.raises(ValueError, match="Received: model="):
        pruning.shrink("model.keras")
    odd = keras.Sequential([keras.Input((4,)), layers.DenseFlipout(3),
                            L.LayerNormalization(name="ln"), layers.DenseFlipout(2)])
    with pytest.raises(ValueError, match="Received: layer='ln' \\(LayerNormalization\\)"):
        pruning.shrink(odd)


@pytest.mark.slow
def test_shrunk_model_exports_to_tflite(tmp_path):
    from tfp_bcnn import export

    model = models.lenet5(num_train_examples=100, seed=0)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter")
    small = pruning.shrink(model)
    path = tmp_path / "small.tflite"
    export.to_tflite(small, path, num_samples=4)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    pred = export.runtime.TFLiteBayesianModel(str(path)).predict(x)
    assert pred.mean.shape == (3, 10)
    np.testing.assert_allclose(pred.mean.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dropout", [None, 0.25])
def test_shrink_keeps_the_output_moments(dropout):
    """Sampling-free moments (mean and variance of the logits, ordinary posterior
    stds, MC dropout included) of the shrunk model equal the masked model's."""
    from tfp_bcnn import moments

    model = models.lenet5(num_train_examples=100, seed=0, posterior_std_init=0.05,
                          dropout=dropout)
    pruning.prune_now(model, 0.5, criterion="snr", scope="global", structure="filter")
    small = pruning.shrink(model)
    assert small.count_params() < 0.5 * model.count_params()
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    want, got = moments.propagate(model, x), moments.propagate(small, x)
    np.testing.assert_allclose(np.asarray(got.mean), np.asarray(want.mean), atol=ATOL)
    np.testing.assert_allclose(np.asarray(got.variance), np.asarray(want.variance),
                               rtol=1e-4, atol=ATOL)


@pytest.mark.slow
def test_shrunk_model_exports_with_moments(tmp_path):
    from tfp_bcnn import export

    model = models.lenet5(num_train_examples=100, seed=0)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter")
    path = tmp_path / "small_moments.tflite"
    export.to_tflite(pruning.shrink(model), path, num_samples=8, sampling="moments")
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    assert export.runtime.TFLiteBayesianModel(str(path)).predict(x).mean.shape == (2, 10)
