"""The layers' seams that the exporters and the moment pass call (`layers/_linear.py`).

``linear_moments`` against NumPy (Dense) and against Monte Carlo kernel draws
(depthwise convolution); ``linear``'s layout override; the rank-1 ``sample``
seam against NumPy and ``per_row`` of a list of tables against one table at a time.
"""

import keras
import numpy as np
import pytest
from keras import ops

from tfp_bcnn import layers
from tfp_bcnn.layers._linear import linear_moments


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


@pytest.mark.parametrize("deterministic_input", [False, True])
def test_dense_preactivation_moments_match_numpy(deterministic_input):
    """``mean = mu M + b``, ``var = v M^2 + (v + mu^2) S^2 + var(b) + floor`` (float32 vs
    float64 NumPy: rtol 1e-5)."""
    rng = np.random.default_rng(0)
    layer = layers.DenseFlipout(3, bayesian_bias=True, posterior_std_init=0.2, seed=0)
    mu = rng.normal(size=(4, 5)).astype("float32")
    layer.build(mu.shape)
    v = None if deterministic_input else rng.uniform(0.1, 1.0, size=(4, 5)).astype("float32")
    mean, var = layer.preactivation_moments(mu, v, variance_floor=1e-3)
    m, s2, b, b_var = (_np(t) for t in layer.posterior_moments())
    v64 = 0.0 if v is None else v.astype(np.float64)
    mu64 = mu.astype(np.float64)
    np.testing.assert_allclose(_np(mean), mu64 @ m + b, rtol=1e-5, atol=1e-6)
    expected = v64 @ np.square(m) if v is not None else 0.0
    expected = expected + (v64 + mu64 ** 2) @ s2 + b_var + 1e-3
    np.testing.assert_allclose(_np(var), expected, rtol=1e-5, atol=1e-7)


def test_depthwise_moments_match_monte_carlo_kernel_draws():
    """The moments of ``depthwise_conv(x, W)``, ``W ~ N(M, S^2)``, against G = 4000
    kernel draws (one ``linear`` call: the draws stacked as the depth multiplier): the
    mean within 5 standard errors, the variance within 10 % (its relative sd over
    4000 draws is ~2.2 %)."""
    keras.utils.set_random_seed(0)
    layer = layers.DepthwiseConv2DFlipout(3, padding="same", posterior_std_init=0.3, seed=0)
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype("float32")
    layer.build(x.shape)
    mean, var = (_np(t)[0] for t in layer.preactivation_moments(x, posterior=(
        *layer.posterior_moments()[:2], None, None)))
    g = 4000
    loc, sigma = (_np(t)[..., 0] for t in layer.kernel_posterior())  # (3, 3, 2)
    kernels = loc[..., None] + sigma[..., None] * np.random.default_rng(2).normal(
        size=(*loc.shape, g))
    draws = _np(layer.linear(x, kernels.astype("float32")))[0].reshape(5, 5, 2, g)
    se = draws.std(axis=-1) / np.sqrt(g)
    assert np.all(np.abs(draws.mean(axis=-1) - mean) < 5 * se + 1e-6)
    np.testing.assert_allclose(draws.var(axis=-1), var, rtol=0.1)


def test_linear_layout_override_and_its_check():
    keras.utils.set_random_seed(0)
    layer = layers.Conv2DFlipout(4, 3, padding="same", data_format="channels_first", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype("float32")
    layer.build(x.shape)
    kernel = layer.kernel_posterior()[0]
    own = _np(layer.linear(x, kernel))
    last = _np(layer.linear(np.transpose(x, (0, 2, 3, 1)), kernel, data_format="channels_last"))
    np.testing.assert_allclose(np.transpose(last, (0, 3, 1, 2)), own, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Received: data_format='NHWC'"):
        layer.linear(x, kernel, data_format="NHWC")


def test_linear_moments_deterministic_kernel_on_deterministic_input_is_deterministic():
    mean, var = linear_moments(ops.matmul, np.ones((2, 3), "float32"), None,
                               np.ones((3, 4), "float32"))
    assert var is None
    np.testing.assert_allclose(_np(mean), np.full((2, 4), 3.0))


def test_rank1_sample_seam_matches_numpy():
    """With zero factor scales a draw is ``((x o mu_r[k]) W) o mu_s[k] + b[k]`` for the
    component ``k = floor(i K / B)`` of row ``i``; ``per_row`` of a list of tables
    gathers the same rows as one table at a time."""
    keras.utils.set_random_seed(0)
    layer = layers.Rank1Dense(3, num_components=2, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    layer.build(x.shape)
    kernel, r_loc, _, s_loc, _, _ = layer.factors()
    bias = np.arange(6, dtype="float32").reshape(2, 3)
    zeros_in, zeros_out = np.zeros((2, 5), "float32"), np.zeros((2, 3), "float32")
    out = _np(layer.sample(ops.convert_to_tensor(x), (kernel, r_loc, zeros_in, s_loc,
                                                      zeros_out, bias)))
    k = np.array([0, 0, 1, 1])
    expected = ((x * _np(r_loc)[k]) @ _np(kernel)) * _np(s_loc)[k] + bias[k]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    together = layer.per_row([r_loc, s_loc, bias], x)
    for table, rows in zip([r_loc, s_loc, bias], together):
        np.testing.assert_array_equal(_np(rows), _np(layer.per_row(table, x)))
