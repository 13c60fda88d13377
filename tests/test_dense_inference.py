"""Dense (per-pixel) inference: predict, GaussianHead on any rank, moments of U-Net blocks.

Small hand-built U-Nets (Bayesian conv -> max pool -> conv -> transposed conv or
upsampling -> skip concatenation -> 1x1 conv softmax, or a per-pixel
GaussianHead) stand in for `models.unet`.
"""

import keras
import numpy as np
import pytest

import tfp_bcnn
from tfp_bcnn import layers
from tfp_bcnn.uncertainty import Prediction, RegressionPrediction, decompose, predict

SHAPE = (8, 8, 1)


def _unet(up="transpose", head="softmax", std=0.1, estimator="flipout", classes=3):
    """Input (8, 8, 1) -> per-pixel softmax (8, 8, classes) or GaussianHead(1) (8, 8, 2)."""
    conv = layers.layer_class(2, estimator)
    inp = keras.Input(SHAPE)
    a = conv(4, 3, padding="same", activation="relu", posterior_std_init=std, seed=1)(inp)
    b = keras.layers.MaxPooling2D(2)(a)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(b)
    if up == "transpose":
        u = layers.Conv2DTransposeFlipout(4, 2, strides=2, padding="same",
                                          posterior_std_init=std, seed=2)(b)
    else:
        u = keras.layers.UpSampling2D(2, interpolation=up)(b)
    c = keras.layers.Concatenate()([a, u])
    if head == "softmax":
        out = keras.layers.Conv2D(classes, 1, activation="softmax")(c)
    else:
        out = layers.GaussianHead(1)(c)
    return keras.Model(inp, out)


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


# ------------------------------------------------------------ the contract
def _entropy(p):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
def test_dense_predict_fields_match_their_definitions_per_pixel(estimator):
    """Every field, pixel by pixel, from the returned samples (loop over pixels)."""
    keras.utils.set_random_seed(0)
    model = _unet(estimator=estimator, std=0.3)
    p = predict(model, _images(5), num_samples=6, batch_size=2, return_samples=True)
    assert isinstance(p, Prediction)
    assert p.samples.shape == (6, 5, 8, 8, 3)
    assert p.mean.shape == p.std.shape == p.aleatoric_variance.shape == (5, 8, 8, 3)
    assert p.predictive_entropy.shape == p.aleatoric.shape == p.epistemic.shape == (5, 8, 8)
    s = p.samples.astype(np.float64)
    for n, i, j in [(0, 0, 0), (4, 7, 7), (2, 3, 5)]:
        ps = s[:, n, i, j]  # (S, C) of one pixel
        pbar = ps.mean(axis=0)
        np.testing.assert_allclose(p.mean[n, i, j], pbar, rtol=1e-12)
        np.testing.assert_allclose(p.predictive_entropy[n, i, j], _entropy(pbar), rtol=1e-10)
        np.testing.assert_allclose(p.aleatoric[n, i, j], _entropy(ps).mean(), rtol=1e-10)
        np.testing.assert_allclose(p.epistemic[n, i, j],
                                   max(_entropy(pbar) - _entropy(ps).mean(), 0.0), atol=1e-12)
        np.testing.assert_allclose(p.aleatoric_variance[n, i, j], (ps * (1 - ps)).mean(0),
                                   rtol=1e-10)
        np.testing.assert_allclose(p.epistemic_variance[n, i, j], ps.var(axis=0), atol=1e-15)
    np.testing.assert_allclose(p.mean.sum(-1), 1.0, atol=1e-5)
    assert p.epistemic.max() > 1e-4  # the samples differ: a Bayesian model


def test_dense_predict_chunking_keeps_the_examples_apart():
    """Chunks of 2 (padded last chunk) give the per-image results of one chunk of 5:
    with sigma -> 0 every sample is the mean net, so the fields must agree exactly."""
    model = _unet(std=1e-8)
    x = _images(5)
    a = predict(model, x, num_samples=3, batch_size=2)
    b = predict(model, x, num_samples=3, batch_size=16)
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-6)
    np.testing.assert_allclose(a.predictive_entropy, b.predictive_entropy, atol=1e-5)
    single = predict(model, x[3:4], num_samples=3)
    np.testing.assert_allclose(single.mean[0], a.mean[3], atol=1e-6)


def test_dense_regression_per_pixel():
    keras.utils.set_random_seed(1)
    model = _unet(head="gaussian", std=0.3)
    p = predict(model, _images(3), num_samples=5, batch_size=2, return_samples=True)
    assert isinstance(p, RegressionPrediction)
    assert p.samples.shape == (5, 3, 8, 8, 2)
    mu, sigma = p.samples[..., :1].astype(float), p.samples[..., 1:].astype(float)
    assert p.mean.shape == p.variance.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(p.mean, mu.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.aleatoric_variance, (sigma**2).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.epistemic_variance, mu.var(axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(p.std, np.sqrt(p.aleatoric_variance + p.epistemic_variance))
    assert np.all(p.epistemic_variance > 0)


def test_decompose_dense_samples_and_shape_errors():
    p = decompose(np.full((2, 3, 4, 5, 6), 1 / 6))
    assert p.mean.shape == (3, 4, 5, 6) and p.epistemic.shape == (3, 4, 5)
    np.testing.assert_allclose(p.predictive_entropy, np.log(6))
    with pytest.raises(ValueError, match=r"samples.shape=\(2, 3\)"):
        decompose(np.full((2, 3), 0.5))


def test_dense_predict_empty_and_wrong_shapes():
    model = _unet()
    empty = predict(model, np.zeros((0, *SHAPE), np.float32), num_samples=2)
    assert empty.mean.shape == (0, 8, 8, 3) and empty.epistemic.shape == (0, 8, 8)
    with pytest.raises(ValueError, match=r"Received: x.shape=\(2, 9, 8, 1\)"):
        predict(model, np.zeros((2, 9, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"x\[None\].*Received: x.shape=\(8, 8, 1\)"):
        predict(model, np.zeros(SHAPE, np.float32))


def test_dense_logits_need_from_logits():
    inp = keras.Input(SHAPE)
    out = layers.Conv2DFlipout(3, 3, padding="same", posterior_std_init=0.1)(inp)
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="from_logits=True"):
        predict(model, _images(2), num_samples=2)
    p = predict(model, _images(2), num_samples=2, from_logits=True)
    np.testing.assert_allclose(p.mean.sum(-1), 1.0, atol=1e-5)


# ------------------------------------------------------------ GaussianHead
@pytest.mark.parametrize("shape", [(4,), (5, 4), (6, 5, 4), (3, 6, 5, 4)])
def test_gaussian_head_on_any_rank(shape):
    """Rank 2 to 5: the dense map acts on the last axis, std > min_std everywhere."""
    head = layers.GaussianHead(2, min_std=0.01)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    y = keras.ops.convert_to_numpy(head(x))
    assert y.shape == (2, *shape[:-1], 4)
    assert head.compute_output_shape((None, *shape)) == (None, *shape[:-1], 4)
    assert np.all(y[..., 2:] > 0.01)
    # per position: the same head as on the flattened rows
    flat = keras.ops.convert_to_numpy(head(x.reshape(-1, shape[-1])))
    np.testing.assert_allclose(y.reshape(-1, 4), flat, rtol=1e-5, atol=1e-6)
    nll = keras.ops.convert_to_numpy(tfp_bcnn.gaussian_nll(np.zeros((2, *shape[:-1], 2)), y))
    assert nll.shape == (2, *shape[:-1])


def test_gaussian_head_refuses_rank_one_inputs():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(4,\)"):
        layers.GaussianHead(1).build((4,))
