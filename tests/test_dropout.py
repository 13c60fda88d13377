"""MCDropout: stochastic at every call, unbiased, serializable, exported as builtin ops."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import tfp_bcnn
from tfp_bcnn import layers, models


def _ones(shape=(64, 50)):
    return np.ones(shape, "float32")


@pytest.mark.parametrize("training", [None, False, True])
def test_masks_at_every_call_whatever_training_is(training):
    layer = layers.MCDropout(0.25, seed=3)
    y = ops.convert_to_numpy(layer(_ones(), training=training))
    # every unit is either dropped (0) or kept and rescaled by 1 / (1 - rate)
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / 0.75], rtol=1e-6)
    # 3,200 Bernoulli(0.75) draws: std of the kept fraction is 0.0077; 0.04 is > 5 sigma
    assert abs(np.mean(y != 0) - 0.75) < 0.04
    y2 = ops.convert_to_numpy(layer(_ones(), training=training))
    assert not np.array_equal(y, y2)  # a fresh mask per call


def test_unbiased_mean():
    layer = layers.MCDropout(0.5, seed=0)
    x = np.random.default_rng(0).uniform(0.5, 1.5, (4000, 8)).astype("float32")
    y = ops.convert_to_numpy(layer(x))
    # E[y] = x: per column, the mean of y / x over 4,000 rows has std
    # sqrt(1/4000) = 0.016 (y / x is 0 or 2); 0.08 is 5 sigma.
    np.testing.assert_allclose((y / x).mean(axis=0), 1.0, atol=0.08)


def test_rate_zero_is_identity_and_noise_shape_broadcasts():
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 5)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(layers.MCDropout(0.0)(x)), x)
    y = ops.convert_to_numpy(layers.MCDropout(0.5, noise_shape=(None, 1, 1, None), seed=2)(x))
    kept = y != 0
    # whole feature maps are dropped or kept: the mask is constant over H and W
    assert np.all(kept == kept[:, :1, :1, :])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rate": 1.0}, "rate=1.0"),
        ({"rate": -0.1}, "rate=-0.1"),
        ({"rate": True}, "rate=True"),
        ({"rate": 0.5, "noise_shape": "batch"}, "noise_shape='batch'"),
        ({"rate": 0.5, "noise_shape": (None, 0)}, r"noise_shape=\(None, 0\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.MCDropout(**kwargs)


def test_config_and_keras_round_trip(tmp_path):
    layer = layers.MCDropout(0.3, noise_shape=(None, 1), seed=5, name="d")
    json.dumps(keras.saving.serialize_keras_object(layer))
    clone = layers.MCDropout.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    model = models.lenet5(bayesian=False, dropout=0.3, seed=0)
    path = tmp_path / "mc.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(a) for a in model.layers] == [type(b) for b in loaded.layers]
    assert loaded.get_layer("dropout1").rate == 0.3
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    assert not np.allclose(loaded.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_zoo_places_dropout_before_every_dense_layer():
    net = models.lenet5(bayesian=False, dropout=0.25)
    names = [layer.name for layer in net.layers]
    assert names[names.index("flatten"):] == [
        "flatten", "dropout1", "fc1", "dropout2", "fc2", "dropout3", "fc3"]
    assert net.name == "lenet5_mc_dropout"
    # the same seed gives the same kernels with or without dropout
    a = models.lenet5(bayesian=False, seed=4)
    b = models.lenet5(bayesian=False, dropout=0.5, seed=4)
    np.testing.assert_array_equal(a.get_layer("fc1").kernel, b.get_layer("fc1").kernel)
    alex = models.alexnet(input_shape=(28, 28, 1), bayesian=False, dropout=0.5)
    assert [la.name for la in alex.layers][-3:] == ["flatten", "dropout1", "fc1"]
    three = models.three_conv_three_fc(input_shape=(28, 28, 1), bayesian=False, dropout=0.5)
    assert sum(isinstance(la, layers.MCDropout) for la in three.layers) == 3
    assert not any(isinstance(la, layers.MCDropout) for la in models.lenet5(bayesian=False).layers)
    with pytest.raises(ValueError, match="dropout=1.5"):
        models.lenet5(bayesian=False, dropout=1.5)


def test_predict_gives_epistemic_uncertainty():
    model = models.lenet5(bayesian=False, dropout=0.5, seed=0)
    x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    p = tfp_bcnn.predict(model, x, num_samples=16, return_samples=True)
    assert p.samples.shape == (16, 8, 10)
    assert np.all(p.epistemic > 0)
    # samples of one example differ, so the tiled batch has one mask per row
    assert not np.allclose(p.samples[0], p.samples[1])


def test_shared_batch_mask_is_sampled_by_looping():
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, activation="relu"),
        layers.MCDropout(0.5, noise_shape=(1, None), seed=0),
        keras.layers.Dense(3, activation="softmax"),
    ])
    assert not tfp_bcnn.uncertainty._can_tile(model)
    p = tfp_bcnn.predict(model, np.ones((4, 6), "float32"), num_samples=8,
                         return_samples=True)
    # one mask per call shared by the batch: identical rows within a sample,
    # and (with 8 draws of 5 units) different samples
    np.testing.assert_allclose(p.samples[:, 0], p.samples[:, 3])
    assert np.ptp(p.samples[:, 0, 0]) > 0


@pytest.mark.slow  # converts to TFLite (about 7 s)
def test_tflite_export_keeps_dropout_on_with_builtin_ops(tmp_path):
    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    model = models.lenet5(bayesian=False, dropout=0.5, seed=0)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    path = export.to_tflite(model, tmp_path / "mc.tflite", num_samples=8)
    info = export.describe(path)
    assert "RANDOM_UNIFORM" in info["ops"] and not info["flex_ops"]
    p = TFLiteBayesianModel(path).predict(x)
    assert p.mean.shape == (4, 10)
    assert np.all(p.epistemic > 0)
    # unbiased masks: the TFLite mean matches Keras' Monte Carlo mean; with
    # 8 vs 256 samples of probabilities of a random net (std < 0.1), 0.15
    # bounds the difference at > 4 standard errors.
    ref = tfp_bcnn.predict(model, x, num_samples=256).mean
    np.testing.assert_allclose(p.mean, ref, atol=0.15)
