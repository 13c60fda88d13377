"""BatchNormalization folded into the preceding layer's moments (`tfp_bcnn._bn_fold`).

Folding is exact algebra (``a`` scales output channels, which every linear
map keeps apart), so the folded moments equal the unfolded ones (BN applied
as its own rule) up to float32 rounding: relative 1e-5 on means and
variances of order 1 (a few roundings of a ~30-term sum each).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfp_bcnn import layers, moments

RTOL, ATOL = 1e-5, 1e-6


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _randomize_bn(model, rng):
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype("f4"))
            layer.moving_variance.assign(rng.uniform(0.3, 3, size=n).astype("f4"))
            if layer.scale:
                layer.gamma.assign(rng.normal(size=n).astype("f4"))
            if layer.center:
                layer.beta.assign(rng.normal(size=n).astype("f4"))


def _functional():
    """Every kernel layout: Bayesian conv, depthwise, transpose, Keras conv, dense;
    a BN with two readers (not folded) and a BN on a layer with an activation."""
    x = keras.Input((8, 8, 2))
    h = layers.Conv2DFlipout(4, 3, padding="same", use_bias=False, seed=1,
                             posterior_std_init=0.3)(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU(6.0)(h)
    h = layers.DepthwiseConv2DFlipout(3, padding="same", seed=2, posterior_std_init=0.3)(h)
    h = keras.layers.BatchNormalization(scale=False)(h)
    skip = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 1)(skip)
    h = keras.layers.BatchNormalization(center=False)(h)
    h = keras.layers.Add()([h, skip])
    h = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(3, 3, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)  # after an activation: not folded
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = layers.DenseFlipout(5, bayesian_bias=True, seed=3, posterior_std_init=0.3)(h)
    h = keras.layers.BatchNormalization()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    return keras.Model(x, out)


def _sequential():
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        layers.Conv2DReparameterization(3, 3, seed=4, posterior_std_init=0.3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
        keras.layers.BatchNormalization(),
        layers.Conv2DTransposeFlipout(2, 2, seed=5, posterior_std_init=0.3),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(4),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(3, activation="softmax"),
    ])


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_folded_batch_norm_equals_the_separate_rule(build):
    rng = np.random.default_rng(0)
    model = build()
    _randomize_bn(model, rng)
    x = rng.random((4, *model.input_shape[1:])).astype("float32")
    folded = moments.propagate(model, x)
    separate = moments.propagate(model, x, fold_batch_norm=False)
    np.testing.assert_allclose(_np(folded.mean), _np(separate.mean), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(folded.variance), _np(separate.variance), rtol=RTOL,
                               atol=ATOL)
    assert np.all(_np(separate.variance) > 1e-4)  # a Bayesian net: variances that matter


def test_fold_scales_each_kernel_layout_by_output_channel():
    from tfp_bcnn import _bn_fold

    rng = np.random.default_rng(1)
    for layer, shape in [(keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (5, 5, 3)),
                         (keras.layers.Conv2DTranspose(4, 3), (5, 5, 3)),
                         (keras.layers.Conv2D(4, 3), (5, 5, 3)),
                         (keras.layers.Dense(4), (3,))]:
        layer.build((None, *shape))
        out = layer.compute_output_shape((None, *shape))
        bn = keras.layers.BatchNormalization()
        bn.build(out)
        _randomize_bn(keras.Sequential([bn]), rng)
        x = rng.random((2, *shape)).astype("float32")
        kernel, _, bias, _ = _bn_fold.fold(layer, moments.default_kernel_moments(layer), bn)
        want = _np(bn(layer(x), training=False))
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
        np.testing.assert_allclose(_np(layer(x)), want, rtol=1e-5, atol=1e-5)
        assert _bn_fold.can_fold(layer, bn, len(out))
