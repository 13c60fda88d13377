"""L1 / GroupL1 on the posterior means: values and gradients against NumPy,
config round trips, the layer hook and the ``reg`` metric."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_bcnn as bcnn
from tfp_bcnn import layers, models, regularizers


def _value_and_grad(reg, w):
    v = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = reg(v)
    return float(value), tape.gradient(value, v).numpy()


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 4), (2, 6)])
def test_l1_value_and_gradient(shape):
    w = np.random.default_rng(0).normal(size=shape).astype("float32")
    value, grad = _value_and_grad(regularizers.L1(0.3), w)
    # float32 sums of O(10) terms: 1e-6 relative is a few ulps
    np.testing.assert_allclose(value, 0.3 * np.abs(w.astype("float64")).sum(), rtol=1e-6)
    np.testing.assert_allclose(grad, 0.3 * np.sign(w), rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 4), (2, 2, 2, 3, 2)])
def test_group_l1_value_and_gradient_against_a_hand_computation(shape):
    rng = np.random.default_rng(1)
    w = rng.normal(size=shape).astype("float32")
    w[..., 0] = 0.0  # an all-zero (pruned) filter
    value, grad = _value_and_grad(regularizers.GroupL1(0.7), w)
    # by hand: the filter axis is the last one; group f = w[..., f]
    w64 = w.astype("float64")
    norms = np.sqrt(np.sum(w64.reshape(-1, shape[-1]) ** 2, axis=0))
    expected_grad = np.zeros_like(w64)
    for f in range(shape[-1]):
        if norms[f] > 0:
            expected_grad[..., f] = 0.7 * w64[..., f] / norms[f]
    # the 1e-12 under the square root shifts each norm by < 1e-6 (module docstring)
    np.testing.assert_allclose(value, 0.7 * norms.sum(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert np.all(grad[..., 0] == 0.0)  # zero filter: gradient exactly 0, not NaN


def test_group_l1_is_one_group_per_dense_unit_and_conv_filter():
    dense = np.array([[3.0, 0.0], [4.0, 1.0]], "float32")
    assert float(regularizers.GroupL1(1.0)(dense)) == pytest.approx(6.0, abs=1e-5)
    conv = np.zeros((2, 2, 3, 2), "float32")
    conv[..., 1] = 0.5  # 12 weights of 0.5: norm sqrt(12 * 0.25) = sqrt(3)
    assert float(regularizers.GroupL1(2.0)(conv)) == pytest.approx(2 * np.sqrt(3), rel=1e-5)


@pytest.mark.parametrize("cls", [regularizers.L1, regularizers.GroupL1])
def test_config_round_trip(cls):
    reg = cls(0.25)
    restored = keras.regularizers.deserialize(
        json.loads(json.dumps(keras.regularizers.serialize(reg))))
    assert type(restored) is cls and restored.get_config() == {"l1": 0.25}
    layer = layers.Conv2DFlipout(3, 2, kernel_regularizer=reg)
    clone = layers.Conv2DFlipout.from_config(json.loads(json.dumps(layer.get_config())))
    assert type(clone.kernel_regularizer) is cls and clone.kernel_regularizer.l1 == 0.25


@pytest.mark.parametrize("l1", [-1.0, float("nan"), "big", True])
def test_bad_strength(l1):
    with pytest.raises(ValueError, match="Received: l1="):
        regularizers.GroupL1(l1)
    with pytest.raises(ValueError, match="Received: l1="):
        regularizers.L1(l1)


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization",
                                       "local_reparameterization"])
def test_layer_adds_the_penalty_of_the_masked_means(estimator):
    reg = regularizers.GroupL1(0.1)
    layer = layers.layer_class(0, estimator)(4, kernel_regularizer=reg, kl_weight=0.0)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    layer(x)
    mask = np.ones((5, 4), "float32")
    mask[:, 2] = 0.0
    mask[0, 0] = 0.0
    layer.kernel_mask.assign(mask)
    layer(x)
    loc = layer.kernel_loc.numpy() * mask
    expected = 0.1 * np.sqrt((loc.astype("float64") ** 2).sum(axis=0)).sum()
    assert float(sum(layer.losses)) == pytest.approx(expected, rel=1e-5)
    assert float(regularizers.regularization_loss(keras.Sequential([layer]))) == pytest.approx(
        expected, rel=1e-5)


def test_builders_regularize_hidden_layers_and_log_reg():
    reg = regularizers.L1(1e-3)
    model = models.lenet5(num_train_examples=32, kernel_regularizer=reg, seed=0)
    regs = {layer.name: layer.kernel_regularizer for layer in bcnn.bayesian_layers(model)}
    assert regs == {"conv1": reg, "conv2": reg, "fc1": reg, "fc2": reg, "fc3": None}
    twin = models.lenet5(bayesian=False, kernel_regularizer=reg)
    assert twin.get_layer("conv1").kernel_regularizer is reg
    assert twin.get_layer("fc3").kernel_regularizer is None
    models.compile_bayesian(model, 1e-3)  # the step size the tolerance below assumes
    x = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
    y = np.arange(32) % 10
    logs = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    # one step: the metric is the penalty at the start of that step, the value
    # now is one Adam step (lr 1e-3) later: equal within a few percent
    now = float(regularizers.regularization_loss(model))
    assert logs["reg"][0] == pytest.approx(now, rel=0.05)
    assert logs["reg"][0] > 0 and logs["kl"][0] > 0
