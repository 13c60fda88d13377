"""Dense-output builders (`models.unet`, `models.super_resolution`) and their loss."""

import keras
import numpy as np
import pytest
from keras import ops

import tfp_bcnn
from tfp_bcnn import models
from tfp_bcnn.layers import ESTIMATORS, BayesianLayer, GaussianHead, gaussian_nll


def rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype("float32")


def small_unet(**kwargs):
    kwargs.setdefault("num_train_examples", 20)
    return models.unet((16, 16, 1), 3, depth=2, base_filters=4, seed=0, **kwargs)


def bayesian_layers(model):
    return [layer for layer in model.layers if isinstance(layer, BayesianLayer)]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_unet_shapes_and_twin(estimator):
    bnn = small_unet(estimator=estimator)
    twin = small_unet(bayesian=False)
    assert bnn.output_shape == twin.output_shape == (None, 16, 16, 3)
    names = [layer.name for layer in bayesian_layers(bnn)]
    # 2 x (2 encoder + 2 decoder) + 2 bottleneck convolutions, 2 transposed, the 1x1 head.
    assert len(names) == 13 and "up1" in names and names[-1] == "head"
    twin_linear = [layer.name for layer in twin.layers if hasattr(layer, "kernel")]
    assert twin_linear == names
    # Same seed: the twin's initial kernels are the posterior means.
    for name in ("down1_conv1", "up2", "head"):
        np.testing.assert_array_equal(ops.convert_to_numpy(bnn.get_layer(name).kernel_loc),
                                      ops.convert_to_numpy(twin.get_layer(name).kernel))
    probs = ops.convert_to_numpy(bnn(rand((2, 16, 16, 1))))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_unet_gaussian_head_and_super_resolution_shapes():
    gauss = models.unet((16, 16, 2), 2, base_filters=4, head="gaussian",
                        num_train_examples=5, seed=0)
    assert gauss.output_shape == (None, 16, 16, 4)
    assert isinstance(gauss.layers[-1], GaussianHead)
    sr = models.super_resolution(3, (8, 8, 1), filters=8, num_train_examples=5, seed=0)
    assert sr.output_shape == (None, 24, 24, 2)
    out = ops.convert_to_numpy(sr(rand((2, 8, 8, 1))))
    assert (out[..., 1:] > 0).all()  # the std half is positive
    twin = models.super_resolution(3, (8, 8, 1), filters=8, bayesian=False, seed=0)
    assert not bayesian_layers(twin) and twin.name == "super_resolution_deterministic"


def test_kl_weight_counts_every_pixel():
    # Per-pixel losses are averaged over H * W, so kl_weight = 1 / (N * H * W).
    bnn = small_unet(num_train_examples=20)
    for layer in bayesian_layers(bnn):
        assert float(ops.convert_to_numpy(layer.kl_weight)) == pytest.approx(1 / (20 * 256))
    sr = models.super_resolution(2, (6, 6, 1), filters=4, num_train_examples=10)
    assert float(ops.convert_to_numpy(bayesian_layers(sr)[0].kl_weight)) == pytest.approx(
        1 / (10 * 144))
    raw = float(ops.convert_to_numpy(tfp_bcnn.kl_divergence(bnn, scaled=False)))
    scaled = float(ops.convert_to_numpy(tfp_bcnn.kl_divergence(bnn)))
    assert scaled == pytest.approx(raw / (20 * 256), rel=1e-5)


def test_compile_picks_the_loss_of_the_head():
    assert models.loss_for(small_unet()) == "sparse_categorical_crossentropy"
    seg = models.compile_bayesian(small_unet())
    assert seg.loss == "sparse_categorical_crossentropy"
    sr = models.compile_bayesian(
        models.super_resolution(2, (6, 6, 1), filters=4, num_train_examples=10))
    assert sr.loss is gaussian_nll


@pytest.mark.slow
def test_unet_fit_lowers_the_loss_and_logs_kl():
    # A learnable per-pixel rule: class 1 where the pixel is bright, 2 where dark
    # in the right half, 0 elsewhere. 40 steps of Adam lower the likelihood term
    # (loss - kl; the KL of 13 layers at the init std dominates at this tiny N).
    x = rand((32, 16, 16, 1))
    y = np.where(x[..., 0] > 0.5, 1, 0)
    y[:, :, 8:] = np.where(x[:, :, 8:, 0] <= 0.5, 2, y[:, :, 8:])
    model = models.compile_bayesian(small_unet(num_train_examples=32), 1e-2)
    history = model.fit(x, y, batch_size=8, epochs=10, verbose=0).history
    nll = np.subtract(history["loss"], history["kl"])
    assert nll[-1] < 0.7 * nll[0]
    assert history["kl"][0] > 0
    assert history["accuracy"][-1] > 0.6


def test_super_resolution_fit_lowers_the_loss():
    hi = rand((16, 12, 12, 1), seed=1)
    lo = hi.reshape(16, 6, 2, 6, 2, 1).mean(axis=(2, 4))
    model = models.compile_bayesian(
        models.super_resolution(2, (6, 6, 1), filters=8, num_train_examples=16, seed=0), 1e-2)
    history = model.fit(lo, hi, batch_size=8, epochs=10, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] - 0.2


def test_keras_round_trip(tmp_path):
    for model in (small_unet(), small_unet(bayesian=False),
                  models.super_resolution(2, (6, 6, 1), filters=4, num_train_examples=3)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.output_shape == model.output_shape
        for a, b in zip(model.weights, loaded.weights):
            np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    x = rand((2, 16, 16, 1))
    twin = small_unet(bayesian=False)
    twin.save(tmp_path / "twin.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(twin(x)), ops.convert_to_numpy(
        keras.saving.load_model(tmp_path / "twin.keras")(x)), atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": (15, 16, 1)}, "divisible by 2\\*\\*depth = 4"),
    ({"head": "sigmoid"}, "head='sigmoid'"),
    ({"num_train_examples": None}, "num_train_examples=None"),
    ({"depth": 0}, "depth=0"),
    ({"num_classes": 1}, "num_classes=1"),
    ({"input_shape": (16, 16)}, "input_shape=\\(16, 16\\)"),
])
def test_unet_errors_name_the_argument(kwargs, match):
    args = {"input_shape": (16, 16, 1), "num_classes": 3, "num_train_examples": 4}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        models.unet(**args)


def test_super_resolution_errors():
    with pytest.raises(ValueError, match="scale=1"):
        models.super_resolution(1, num_train_examples=3)
    with pytest.raises(ValueError, match="num_train_examples=None"):
        models.super_resolution(2)
