"""Monte Carlo with a deterministic prefix: tile at the first stochastic layer.

A small residual network (conv -> BN -> ReLU6 -> conv -> Add -> pool ->
dense) converted with ``to_bayesian(last=2)``: the second convolution and the
head are Bayesian, so the residual ``Add`` meets one tiled and one untiled
input.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_bcnn as bcnn
from tfp_bcnn import export, models
from tfp_bcnn import _forward_runners, uncertainty
from tfp_bcnn._tiling import Tile, tile_after_prefix
from tfp_bcnn.export import _inference

S = 2000  # Monte Carlo samples of the statistical tests


def _residual_net():
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(6.0, name="relu1")(h)
    b = keras.layers.Conv2D(4, 3, padding="same", name="c2")(h)
    a = keras.layers.Add(name="add")([h, b])
    f = keras.layers.GlobalAveragePooling2D(name="pool")(a)
    out = keras.layers.Dense(5, activation="softmax", name="head")(f)
    net = keras.Model(x, out, name="residual")
    bn = net.get_layer("bn1")
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=4).astype("float32") * 0.1)
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=4).astype("float32"))
    return net


@pytest.fixture(scope="module")
def nets():
    keras.utils.set_random_seed(7)
    det = _residual_net()
    bnn = models.to_bayesian(det, num_train_examples=50, moped_delta=0.5, last=2, seed=1)
    x = np.random.default_rng(1).random((3, 8, 8, 3)).astype("float32")
    return det, bnn, x


def _sample_stats(samples):
    """Per (example, class) mean and std over the sample axis 0."""
    samples = np.asarray(samples, dtype=np.float64)
    return samples.mean(0), samples.std(0)


def _assert_same_distribution(a, b):
    """Two independent sets of S samples (axis 0) of one distribution agree.

    Per entry, the difference of the sample means has standard deviation
    ``sqrt((sd_a^2 + sd_b^2) / S)``; 5 of them bound it (a false alarm has
    probability ~6e-7 per entry, ~1e-5 over the 15 entries). The ratio of two
    sample stds has relative standard error about ``1 / sqrt(S)`` (Gaussian
    samples; heavier tails widen it a little): ``5 / sqrt(S)`` bounds it.
    """
    num = len(a)
    mean_a, sd_a = _sample_stats(a)
    mean_b, sd_b = _sample_stats(b)
    bound = 5 * np.sqrt((sd_a**2 + sd_b**2) / num) + 1e-7
    assert np.all(np.abs(mean_a - mean_b) <= bound), (mean_a - mean_b, bound)
    assert sd_a.max() > 1e-3  # the head really samples
    np.testing.assert_allclose(sd_a, sd_b, rtol=5 / np.sqrt(num), atol=1e-5)


def test_tile_after_prefix_keeps_the_function_exactly(nets):
    det, _, x = nets
    late = tile_after_prefix(det, 4, lambda layer: layer.name == "c2")
    tiles = [la for la in late.layers if isinstance(la, Tile)]
    assert len(tiles) == 1  # h is tiled once, for c2 and for the Add
    np.testing.assert_allclose(late(x).numpy(), det(np.tile(x, (4, 1, 1, 1))).numpy(),
                               rtol=1e-6, atol=1e-7)
    # nothing stochastic: one pass, the output tiled at the end
    end = tile_after_prefix(det, 3, lambda layer: False)
    assert isinstance(end.layers[-1], Tile)
    np.testing.assert_allclose(end(x).numpy(), np.tile(det(x).numpy(), (3, 1)), atol=1e-7)
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"),
                            keras.layers.Dense(2, name="b")])
    late_seq = tile_after_prefix(seq, 2, lambda layer: layer.name == "b")
    assert [type(la).__name__ for la in late_seq.layers[1:]] == ["Dense", "Tile", "Dense"]


def test_tile_after_prefix_rejects_subclassed_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Received: model="):
        tile_after_prefix(Net(), 2, lambda layer: True)


@pytest.mark.parametrize("sampling", ["lrt", "weights"])
def test_export_graph_tiles_after_the_prefix_same_distribution(nets, sampling):
    _, bnn, x = nets
    num = S if sampling == "lrt" else 400  # "weights" unrolls one convolution per sample
    graph = _inference.InferenceGraph(bnn, num_samples=num, sampling=sampling)
    names = [la.name for la in graph._tiled.layers]
    # the first sampling layer's input is tiled; the prefix (c1, bn1, relu1) is not
    assert names.index("tile_0") > names.index("relu1")
    assert names.index("tile_0") < names.index(f"c2_{sampling}")
    late = graph.predict(tf.constant(x), return_samples=True)["samples"].numpy()
    # reference: the whole input tiled, as the export did before
    full = _inference._substitute(bnn, sampling, num, {})
    ref = full(tf.tile(tf.constant(x), [num, 1, 1, 1])).numpy().reshape(num, len(x), -1)
    _assert_same_distribution(late, ref)


def test_predict_tiles_after_the_prefix_same_distribution(nets, monkeypatch):
    """Late tiling in ``predict`` against tiling the input.

    Local reparameterization draws independent noise for every row, so the S
    samples are independent (Flipout too since its layers get
    ``sample_groups``: tests/test_flipout_groups.py).
    """
    det, flipout, x = nets
    assert uncertainty._tiled_after_prefix(flipout, 8) is not None
    fully = models.to_bayesian(det, "local_reparameterization", num_train_examples=50)
    assert uncertainty._tiled_after_prefix(fully, 8) is None  # nothing to save
    # a fully Flipout model is rebuilt all the same: its layers get sample_groups=8
    rebuilt = uncertainty._tiled_after_prefix(models.to_bayesian(det, num_train_examples=50), 8)
    assert rebuilt is not None and rebuilt.layers[1].name == "tile_0"
    assert uncertainty._tiled_after_prefix(flipout, 1) is None
    bnn = models.to_bayesian(det, "local_reparameterization", num_train_examples=50,
                             moped_delta=0.5, last=2, seed=1)
    late = bcnn.predict(bnn, x, num_samples=S, return_samples=True).samples
    monkeypatch.setattr(_forward_runners, "_tiled_after_prefix", lambda model, reps: None)
    uncertainty._FORWARD_CACHE.clear()
    full = bcnn.predict(bnn, x, num_samples=S, return_samples=True).samples
    uncertainty._FORWARD_CACHE.clear()
    _assert_same_distribution(late, full)


@pytest.mark.slow
def test_partially_bayesian_mobilenet_predict_moments_tflite_agree(tmp_path):
    """MobileNetV2 with a Bayesian last block + head: Keras MC, moments, TFLite agree.

    Local reparameterization (independent noise per row, as the ``lrt``
    export and the moments' independence assumption), S = 256 samples. Per
    entry, two S-sample means differ by less than ``5 * std * sqrt(2 / S)``
    (5 standard errors); the moments approximation of a 5-layer stochastic
    tail adds a bias, allowed 0.02 on a probability (the measured one is
    smaller).
    """
    det = models.mobilenet_v2(bayesian=False, seed=0)
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    # untrained, its activations vanish in inference mode (moving variance 1):
    # one training-mode call with momentum 0 sets the moving statistics
    for layer in det.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    det(np.random.default_rng(1).random((32, 32, 32, 3)).astype("float32"), training=True)
    net = models.to_bayesian(det, "local_reparameterization", num_train_examples=100,
                             last=5, seed=0, posterior_std_init=0.01)
    mc = bcnn.predict(net, x, num_samples=256)
    assert mc.std.max() > 1e-2
    bound = 5 * mc.std * np.sqrt(2 / 256) + 0.02
    means = {"moments": bcnn.predict(net, x, num_samples=256, method="moments").mean}
    for sampling in ("lrt", "moments"):
        path = export.to_tflite(net, tmp_path / f"m_{sampling}.tflite", num_samples=256,
                                sampling=sampling)
        means[f"tflite {sampling}"] = export.runtime.TFLiteBayesianModel(path).predict(x).mean
    for name, mean in means.items():
        assert np.all(np.abs(mean - mc.mean) <= bound), (name, np.abs(mean - mc.mean).max())
