"""Dense (per-pixel) inference: predict, GaussianHead on any rank, moments of U-Net blocks.

Small hand-built U-Nets (Bayesian conv -> max pool -> conv -> transposed conv or
upsampling -> skip concatenation -> 1x1 conv softmax, or a per-pixel
GaussianHead) stand in for `models.unet`.
"""

import keras
import numpy as np
import pytest

import tfp_bcnn
from tfp_bcnn import moments
from tfp_bcnn import layers
from tfp_bcnn.uncertainty import Prediction, RegressionPrediction, decompose, predict

SHAPE = (8, 8, 1)


def _unet(up="transpose", head="softmax", std=0.1, estimator="flipout", classes=3):
    """Input (8, 8, 1) -> per-pixel softmax (8, 8, classes) or GaussianHead(1) (8, 8, 2).

    ``up``: the decoder, ``"transpose"`` (Bayesian Conv2DTranspose), ``"nearest"`` or
    ``"bilinear"`` (UpSampling2D), or ``"both"`` (transposed conv and bilinear side by side).
    """
    conv = layers.layer_class(2, estimator)
    inp = keras.Input(SHAPE)
    a = conv(4, 3, padding="same", activation="relu", posterior_std_init=std, seed=1)(inp)
    b = keras.layers.MaxPooling2D(2)(a)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(b)
    ups = []
    if up in ("transpose", "both"):
        transpose = layers.layer_class(2, estimator, kind="transpose")
        ups.append(transpose(4, 2, strides=2, padding="same", posterior_std_init=std,
                             seed=2)(b))
    if up != "transpose":
        ups.append(keras.layers.UpSampling2D(2, interpolation=up.replace("both", "bilinear"))(b))
    c = keras.layers.Concatenate()([a, *ups])
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


# ------------------------------------------------- moments of the U-Net blocks
def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _rule(layer, gaussians):
    """One moment rule: ``layer`` on independent Gaussian inputs ``[(mu, var), ...]``."""
    prop = moments._Propagator("separate", moments.default_kernel_moments)
    gs = [moments._Gaussian(m.astype("float32"), v.astype("float32"), positive=True)
          for m, v in gaussians]
    out = prop._apply_pending(prop.layer(layer, gs, final=False))
    return _np(out.mean), _np(out.var)


def _assert_monte_carlo(layer, gaussians, n, rng):
    """The rule against ``n`` joint draws (each row its own inputs and, for a
    local-reparameterization or deterministic layer, exact noise per row).

    Mean within 5 standard errors ``sd / sqrt(n)``, variance within 6 standard
    errors ``sqrt((m4 - v^2) / n)`` (plus 1e-6 absolute for float32 round-off):
    a false alarm on one of a few hundred entries has probability below 1e-6.
    """
    got_m, got_v = _rule(layer, gaussians)
    xs = [(m + np.sqrt(v) * rng.standard_normal((n, *m.shape[1:]))).astype("float32")
          for m, v in gaussians]
    y = _np(layer(xs if len(xs) > 1 else xs[0], training=False))
    m, c = y.mean(0), y - y.mean(0)
    v = (c**2).mean(0)
    se_m, se_v = np.sqrt(v / n), np.sqrt(np.maximum((c**4).mean(0) - v**2, 0) / n)
    assert np.all(np.abs(got_m[0] - m) <= 5 * se_m + 1e-6), np.max(np.abs(got_m[0] - m) / se_m)
    assert np.all(np.abs(got_v[0] - v) <= 6 * se_v + 1e-6), np.max(np.abs(got_v[0] - v) / se_v)
    return got_m, got_v


def _gaussian(shape, rng):
    return rng.normal(size=(1, *shape)), rng.uniform(0.05, 0.5, size=(1, *shape))


@pytest.mark.parametrize("bayesian", [True, False])
@pytest.mark.parametrize("padding, strides", [("same", 2), ("valid", 1)])
def test_conv2d_transpose_moments_match_monte_carlo(bayesian, padding, strides):
    """mean = mu (*)^T M + b, var = (v + mu^2) (*)^T S^2 + v (*)^T M^2 through the
    transposed convolution; exact for independent inputs and weights, so only
    Monte Carlo error remains (the local-reparameterization layer draws every
    output of every row independently: n rows are n exact joint samples)."""
    rng = np.random.default_rng(strides)
    if bayesian:
        layer = layers.Conv2DTransposeLocalReparameterization(
            3, 3, strides=strides, padding=padding, posterior_std_init=0.3, seed=0,
            bayesian_bias=True)
    else:
        layer = keras.layers.Conv2DTranspose(3, 3, strides=strides, padding=padding,
                                             bias_initializer="random_normal")
    layer.build((None, 4, 4, 2))
    if bayesian:
        layer.kernel_mask.assign((rng.random(layer.kernel_mask.shape) > 0.3).astype("f4"))
    got_m, got_v = _assert_monte_carlo(layer, [_gaussian((4, 4, 2), rng)], 20000, rng)
    assert got_m.shape == got_v.shape == (1, *layer.compute_output_shape((1, 4, 4, 2))[1:])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [2, (3, 2)])
def test_upsampling_moments_match_monte_carlo(interpolation, size):
    """Nearest copies each input; bilinear is the linear map A x B^T, so its
    variance goes through the squared weights: exact for independent inputs."""
    rng = np.random.default_rng(3)
    layer = keras.layers.UpSampling2D(size, interpolation=interpolation)
    got_m, got_v = _assert_monte_carlo(layer, [_gaussian((3, 4, 2), rng)], 20000, rng)
    fh, fw = (size, size) if isinstance(size, int) else size
    assert got_v.shape == (1, 3 * fh, 4 * fw, 2)


@pytest.mark.parametrize("size, factor", [(1, 2), (4, 2), (5, 3), (3, 4)])
def test_bilinear_matrix_is_the_layer(size, factor):
    """The interpolation matrices reproduce Keras' bilinear UpSampling2D (to float32)."""
    x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype("float32")
    layer = keras.layers.UpSampling2D((factor, 2), interpolation="bilinear")
    a = moments.bilinear_matrix(size, factor)
    b = moments.bilinear_matrix(size + 1, 2)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    ref = np.einsum("ph,qw,nhwc->npqc", a, b, x)
    np.testing.assert_allclose(_np(layer(x)), ref, atol=1e-5)


def test_upsampling_refuses_other_interpolations():
    inp = keras.Input(SHAPE)
    h = layers.Conv2DFlipout(2, 3, padding="same")(inp)
    h = keras.layers.UpSampling2D(2, interpolation="bicubic")(h)
    model = keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax")(h))
    with pytest.raises(ValueError, match="interpolation 'bicubic'.*Received: layer="):
        predict(model, _images(1), method="moments")


def test_skip_concatenation_moments_match_monte_carlo():
    """Concatenate of independent moment pairs: means and variances side by side
    (a deterministic branch contributes variance 0)."""
    rng = np.random.default_rng(5)
    layer = keras.layers.Concatenate()
    got_m, got_v = _assert_monte_carlo(
        layer, [_gaussian((4, 4, 2), rng), _gaussian((4, 4, 3), rng)], 20000, rng)
    assert got_v.shape == (1, 4, 4, 5)
    prop = moments._Propagator("separate", moments.default_kernel_moments)
    mixed = prop.layer(layer, [moments._Gaussian(np.ones((1, 2, 2, 1), "f4")),
                               moments._Gaussian(np.ones((1, 2, 2, 1), "f4"),
                                                 np.full((1, 2, 2, 1), 0.5, "f4"))], False)
    np.testing.assert_allclose(_np(mixed.var)[..., 0], 0.0)
    np.testing.assert_allclose(_np(mixed.var)[..., 1], 0.5)


@pytest.mark.parametrize("head", ["softmax", "gaussian"])
@pytest.mark.parametrize("up", ["transpose", "nearest", "bilinear"])
def test_dense_moments_equal_the_model_when_sigma_vanishes(up, head):
    """sigma = 1e-8: every activation is deterministic, so the moment pass, its
    per-pixel draws and the softmax (or GaussianHead) over the last axis give
    the Keras model's own output (float32 round-off, 1e-5)."""
    model = _unet(up, head, std=1e-8)
    x = _images(3, 2)
    expected = _np(model(x, training=False))
    p = predict(model, x, num_samples=4, method="moments", return_samples=True)
    if head == "softmax":
        np.testing.assert_allclose(p.mean, expected, atol=1e-5)
        assert p.samples.shape == (4, 3, 8, 8, 3)
    else:
        np.testing.assert_allclose(p.mean, expected[..., :1], atol=1e-5)
        np.testing.assert_allclose(p.aleatoric_variance, expected[..., 1:] ** 2, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("up", ["transpose", "nearest", "bilinear"])
def test_dense_moments_agree_with_monte_carlo(up, seed):
    """A whole small U-Net (Bayesian conv, max pool, upsampling, skip concatenation,
    per-pixel softmax), sigma = 0.1, Monte Carlo with S = 1000 as the reference
    (its mean-probability error is about sd / sqrt(1000) < 0.004). The rest is
    the approximation (diagonal covariance: one kernel draw is shared by all
    pixels; separate max pool; logistic cdf), measured on seeds 0-2 at a mean
    |difference| of the per-pixel probabilities of 0.004-0.010 (max 0.053) and
    a Spearman correlation of the per-pixel predictive entropies of 0.90-0.97:
    tolerances 0.02 (mean), 0.08 (max), 0.8 (rank correlation). The per-pixel
    epistemic ranking of this untrained net is not checked: it measured 0.0 to
    0.84 (the mutual information is ~1e-3 nats here, dominated by the
    dropped pixel correlations)."""
    from scipy import stats

    keras.utils.set_random_seed(seed)
    model = _unet(up, std=0.1)
    x = _images(4, 1)
    mc = predict(model, x, num_samples=1000, batch_size=4)
    mom = predict(model, x, num_samples=1000, method="moments")
    diff = np.abs(mc.mean - mom.mean)
    assert diff.mean() < 0.02 and diff.max() < 0.08, (diff.mean(), diff.max())
    rho = stats.spearmanr(mc.predictive_entropy.ravel(), mom.predictive_entropy.ravel())[0]
    assert rho > 0.8, rho


# ------------------------------------------------------------------ exports
def _export_all(model, tmp_path, sampling, num_samples):
    """TFLite (read by the TF-free runtime) and SavedModel (plain tf.saved_model.load)."""
    import tensorflow as tf

    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    path = export.to_tflite(model, tmp_path / f"{sampling}.tflite", num_samples=num_samples,
                            sampling=sampling)
    saved = export.save_saved_model(model, tmp_path / f"{sampling}_sm",
                                    num_samples=num_samples, sampling=sampling)
    return TFLiteBayesianModel(path), tf.saved_model.load(saved).signatures["serving_default"]


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["lrt", "weights", "moments"])
def test_dense_exports_equal_keras_when_sigma_vanishes(sampling, tmp_path):
    """sigma = 1e-8: every sample is the mean network, so the TFLite file (builtin
    ops only: TRANSPOSE_CONV, the bilinear resize and its variance as matmuls)
    and the SavedModel give the Keras model's per-pixel probabilities to float32
    round-off (1e-5), with every field per pixel."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = _unet("both", std=1e-8)
    x = _images(3, 2)
    expected = _np(model(x, training=False))
    runtime, serving = _export_all(model, tmp_path, sampling, 4)
    ops_used = {op["op_name"] for op in
                Interpreter(model_path=runtime.path)._get_ops_details()}
    assert not any(n.startswith("Flex") or n in ("CUSTOM", "DELEGATE") for n in ops_used)
    assert "TRANSPOSE_CONV" in ops_used, ops_used
    assert runtime.output_shape == (8, 8, 3) and runtime.num_classes == 3
    p = runtime.predict(x, return_samples=True)
    assert p.samples.shape == (4, 3, 8, 8, 3) and p.epistemic.shape == (3, 8, 8)
    np.testing.assert_allclose(p.mean, expected, atol=1e-5)
    out = serving(images=tf.constant(x))
    np.testing.assert_allclose(out["mean"].numpy(), expected, atol=1e-5)
    assert out["predictive_entropy"].shape == out["epistemic"].shape == (3, 8, 8)
    assert runtime.predict(x[:0]).mean.shape == (0, 8, 8, 3)


def _assert_same_mean(a, b, s_a, s_b, extra=0.0):
    """Per-pixel mean probabilities of two Monte Carlo estimates agree within 5
    combined standard errors ``sqrt(std_a^2 / S_a + std_b^2 / S_b)`` (+ 1e-4
    for float32 round-off, + ``extra``): over the 576 entries a false alarm has
    probability below 1e-3."""
    se = np.sqrt(a.std**2 / s_a + b.std**2 / s_b)
    excess = np.abs(a.mean - b.mean) - 5 * se - 1e-4 - extra
    assert np.all(excess <= 0), (np.abs(a.mean - b.mean).max(), excess.max())


def test_dense_moments_export_is_the_keras_moment_pass(tmp_path):
    """The exported moment pass (constant masked kernels, the graph the files
    trace) equals `moments.propagate` on the Keras model to float32 round-off,
    at sigma = 0.2; the TFLite file's per-pixel samples then agree with
    ``predict(method="moments")`` within Monte Carlo error (S = 1024 each)."""
    from tfp_bcnn.export._inference import InferenceGraph

    keras.utils.set_random_seed(3)
    model = _unet("both", std=0.2)
    x = _images(3, 4)
    graph = InferenceGraph(model, num_samples=256, sampling="moments")
    ours, ref = graph._moments.moments(x), moments.propagate(model, x)
    np.testing.assert_allclose(_np(ours.mean), _np(ref.mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(ours.variance), _np(ref.variance), rtol=1e-4, atol=1e-9)
    assert _np(ref.variance).min() > 1e-4  # the variances are not trivial
    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    path = export.to_tflite(model, tmp_path / "m.tflite", num_samples=256, sampling="moments")
    lite = TFLiteBayesianModel(path).predict(x, num_invocations=4)
    keras_moments = predict(model, x, num_samples=1024, method="moments")
    _assert_same_mean(lite, keras_moments, 1024, 1024)


@pytest.mark.slow
def test_dense_weights_export_matches_keras_monte_carlo(tmp_path):
    """``sampling="weights"`` draws one kernel per sample, the exact posterior
    predictive, so its per-pixel mean probabilities agree with Keras Monte
    Carlo of the reparameterization twin (also one kernel per draw) within
    Monte Carlo error, S = 512 each, sigma = 0.2 (see `_assert_same_mean`).
    (A Flipout model is not the reference here: the tiled samples of one call
    share one eps per layer and differ by signs only, which with 1-4 channels
    leaves a per-call error that does not shrink with S: 0.09 measured.)"""
    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    keras.utils.set_random_seed(3)
    model = _unet("both", std=0.2, estimator="reparameterization")
    x = _images(3, 4)
    path = export.to_tflite(model, tmp_path / "w.tflite", num_samples=16, sampling="weights")
    lite = TFLiteBayesianModel(path).predict(x, num_invocations=32)
    mc = predict(model, x, num_samples=512, batch_size=3)
    assert mc.epistemic.mean() > 1e-3  # the posterior is wide enough to matter
    _assert_same_mean(lite, mc, 512, 512)


@pytest.mark.slow
def test_dense_regression_exports_equal_keras_when_sigma_vanishes(tmp_path):
    """A per-pixel GaussianHead exports too: at sigma = 1e-8 the TFLite file (via
    the runtime, a `RegressionPrediction`) and the SavedModel give the Keras
    model's per-pixel mean and std (aleatoric variance = std^2, epistemic 0)
    to float32 round-off. Files for ``"moments"`` (its own head sampling); the
    Monte Carlo forms through their graph (the head is a plain layer there)."""
    import tensorflow as tf

    from tfp_bcnn.export._inference import InferenceGraph

    model = _unet("both", "gaussian", std=1e-8)
    x = _images(3, 2)
    expected = _np(model(x, training=False))
    for sampling in ("lrt", "weights"):
        out = InferenceGraph(model, num_samples=3, sampling=sampling).predict(tf.constant(x))
        np.testing.assert_allclose(out["mean"].numpy(), expected[..., :1], atol=1e-5)
        np.testing.assert_allclose(out["std"].numpy(), expected[..., 1:], rtol=1e-4)
    runtime, serving = _export_all(model, tmp_path, "moments", 4)
    assert runtime.regression and runtime.output_shape == (8, 8, 2)
    p = runtime.predict(x, num_invocations=2)
    assert isinstance(p, RegressionPrediction) and p.mean.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(p.mean, expected[..., :1], atol=1e-5)
    np.testing.assert_allclose(p.aleatoric_variance, expected[..., 1:] ** 2, rtol=1e-4)
    assert p.epistemic_variance.max() < 1e-8
    out = serving(images=tf.constant(x))
    assert sorted(out) == sorted(("mean", "aleatoric_variance", "epistemic_variance",
                                  "variance", "std"))
    np.testing.assert_allclose(out["mean"].numpy(), expected[..., :1], atol=1e-5)
    np.testing.assert_allclose(out["std"].numpy(), expected[..., 1:], rtol=1e-4)


def test_export_refuses_misplaced_heads():
    from tfp_bcnn.export._inference import InferenceGraph

    inp = keras.Input((4,))
    h = layers.GaussianHead(3)(inp)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    with pytest.raises(ValueError, match="output layer. Received: layer="):
        InferenceGraph(model)
    with pytest.raises(ValueError, match="Received: from_logits=True"):
        InferenceGraph(_unet(head="gaussian"), from_logits=True)
    inp = keras.Input((None, None, 1))
    open_shape = keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax")(inp))
    with pytest.raises(ValueError, match=r"Received: output_shape=\(None, None, None, 3\)"):
        InferenceGraph(open_shape)


def test_standalone_runtime_summaries_are_the_package_ones():
    """``runtime.py`` loaded as a lone file (its own copies of the summaries, no
    tfp_bcnn import) gives the package's numbers on dense samples, per pixel
    (float64 maths: 1e-12), classifier and GaussianHead."""
    import importlib.util

    from tfp_bcnn import _prediction
    from tfp_bcnn.export import runtime

    spec = importlib.util.spec_from_file_location("runtime_alone", runtime.__file__)
    alone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(alone)
    assert alone.summarize is not _prediction.summarize  # the copy, not an import
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(5, 2, 4, 4))
    gauss = np.concatenate([rng.normal(size=(5, 2, 4, 4, 2)),
                            rng.uniform(0.1, 1, size=(5, 2, 4, 4, 2))], axis=-1)
    for mine, ours, samples in [(alone.summarize, _prediction.summarize, probs),
                                (alone.summarize_gaussian, _prediction.summarize_gaussian,
                                 gauss)]:
        a = alone._concatenate([mine(samples[:, :1]), mine(samples[:, 1:])])
        b = ours(samples)
        assert type(a).__name__ == type(b).__name__
        for name in ("mean", "std"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12,
                                       atol=1e-15)
        for f in ("epistemic", "epistemic_variance"):
            if hasattr(b, f):
                np.testing.assert_allclose(getattr(a, f), getattr(b, f), atol=1e-15)


def test_dense_ensemble_pools_members_per_pixel():
    """Two deterministic U-Nets: one sample each, the per-pixel mean is their average
    and the epistemic part their disagreement (mutual information > 0)."""
    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        inp = keras.Input(SHAPE)
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
        members.append(keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax")(h)))
    x = _images(2, 5)
    p = predict(members, x, return_samples=True)
    assert p.samples.shape == (2, 2, 8, 8, 3) and p.epistemic.shape == (2, 8, 8)
    outputs = [_np(m(x)) for m in members]
    np.testing.assert_allclose(p.mean, (outputs[0] + outputs[1]) / 2, atol=1e-6)
    assert p.epistemic.min() > 0
