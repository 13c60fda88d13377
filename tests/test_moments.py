"""Moment propagation (`tfp_bcnn.moments`) against independent references.

References: numerical integration (scipy) for the ReLU and the normal cdf /
pdf, Monte Carlo of the same Keras layer with many samples for every layer
rule, Monte Carlo ``predict`` for a whole trained LeNet-5, and the LiteRT
interpreter for the exported file.

Monte Carlo tolerances: with ``n`` independent draws, a sample mean has
standard error ``sd / sqrt(n)`` and a sample variance ``sqrt((m4 - var^2) / n)``
(``m4`` the fourth central moment, estimated from the same draws); an element
passes within 5 (mean) or 6 (variance) standard errors, so a correct rule
fails with probability below 1e-6 per element (checked on at most a few
hundred elements per test, seeds fixed).
"""

from __future__ import annotations

import importlib.util
import textwrap

import keras
import numpy as np
import pytest
from scipy import integrate, special

import tfp_bcnn
from tfp_bcnn import _moment_rules, layers, models, moments
from tfp_bcnn.layers._base import rho_from_sigma
from tfp_bcnn.layers._linear import linear_variance

from _backend import register, result

# ------------------------------------------------------------------ helpers


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _layer_moments(layer, mu, var, max_pool="separate"):
    """Moments of ``layer``'s output for inputs N(mu, var) (one rule, its activation)."""
    prop = moments._Propagator(max_pool, moments.default_kernel_moments)
    g = moments._Gaussian(mu.astype("float32"), var.astype("float32"), positive=True)
    out = prop._apply_pending(prop.layer(layer, [g], final=False))
    return _np(out.mean), _np(out.var)


def _mc_layer(layer, mu, var, n, rng):
    """Sample mean, variance and their standard errors of ``layer(x)``, x ~ N(mu, var).

    ``mu``/``var`` are one example ``(1, ...)``; the batch is ``n`` independent
    draws of it, one call (the layer draws its noise per row).
    """
    x = mu + np.sqrt(var) * rng.standard_normal((n, *mu.shape[1:]))
    y = _np(layer(x.astype("float32"), training=False))
    m = y.mean(0)
    c = y - m
    v = (c**2).mean(0)
    m4 = (c**4).mean(0)
    return m, v, np.sqrt(v / n), np.sqrt(np.maximum(m4 - v**2, 0) / n)


def _assert_mc(moment_mean, moment_var, mc, mean_atol=1e-5, var_rtol=0.0):
    m, v, se_m, se_v = mc
    assert np.all(np.abs(moment_mean[0] - m) <= 5 * se_m + mean_atol), np.max(
        np.abs(moment_mean[0] - m) / (se_m + 1e-12)
    )
    assert np.all(np.abs(moment_var[0] - v) <= 6 * se_v + var_rtol * v + 1e-7), np.max(
        np.abs(moment_var[0] - v) / (se_v + 1e-12)
    )


def _gaussian_input(shape, rng, low=0.05, high=0.5):
    return rng.normal(size=(1, *shape)), rng.uniform(low, high, size=(1, *shape))


# ------------------------------------------------------ normal cdf and ReLU


def test_normal_cdf_pdf_errors_against_scipy():
    # Bowling et al. 2009 state max |error| 1.4e-4 for the cdf; the pdf is exact.
    z = np.linspace(-10, 10, 4001).astype("float32")
    cdf, pdf = (_np(t) for t in moments.normal_cdf_pdf(z))
    z64 = z.astype(np.float64)
    assert np.max(np.abs(cdf - special.ndtr(z64))) < 1.5e-4
    assert np.max(np.abs(pdf - np.exp(-(z64**2) / 2) / np.sqrt(2 * np.pi))) < 1e-6


def test_tail_pdf_errors_against_scipy():
    # the ReLU6 rule's (1 - Phi, phi): the logistic cdf's sign folded into its constants,
    # so the same 1.4e-4 bound (Bowling et al. 2009) on 1 - Phi; the pdf is exact.
    z = np.linspace(-10, 10, 4001).astype("float32")
    tail, pdf = (_np(t) for t in _moment_rules._tail_pdf(z))
    z64 = z.astype(np.float64)
    assert np.max(np.abs(tail - special.ndtr(-z64))) < 1.5e-4
    assert np.max(np.abs(pdf - np.exp(-(z64**2) / 2) / np.sqrt(2 * np.pi))) < 1e-6


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_linear_variance_equals_the_textbook_form(kind):
    """``v (*) (M^2 + S^2) + mu^2 (*) S^2`` (what is computed: no ``v + mu^2`` pass)
    equals ``v (*) M^2 + (v + mu^2) (*) S^2`` to float32 rounding (rtol 1e-5 on
    sums of 3-36 positive terms); the deterministic-input and -kernel cases."""
    rng = np.random.default_rng(0)
    if kind == "dense":
        x_shape, k_shape = (2, 3), (3, 4)
        linear = keras.ops.matmul
    else:
        x_shape, k_shape = (2, 5, 5, 4), (3, 3, 4, 2)
        linear = lambda x, k: keras.ops.conv(x, k, padding="same")  # noqa: E731
    mu, v = rng.normal(size=x_shape), rng.uniform(0.1, 1, x_shape)
    m, s2 = rng.normal(size=k_shape), rng.uniform(0.01, 0.2, k_shape)
    mu, v, m, s2 = (x.astype("float32") for x in (mu, v, m, s2))
    want = _np(linear(v, m * m)) + _np(linear(v + mu * mu, s2))
    np.testing.assert_allclose(_np(linear_variance(linear, mu, v, m, s2)), want, rtol=1e-5)
    np.testing.assert_allclose(_np(linear_variance(linear, mu, None, m, s2)),
                               _np(linear(mu * mu, s2)), rtol=1e-5)
    np.testing.assert_allclose(_np(linear_variance(linear, mu, v, m, None)),
                               _np(linear(v, m * m)), rtol=1e-5)
    assert linear_variance(linear, mu, None, m, None) is None


def _relu_by_quadrature(m, s):
    pdf = lambda x: np.exp(-((x - m) ** 2) / (2 * s * s)) / (s * np.sqrt(2 * np.pi))
    lo, hi = 0.0, max(m, 0.0) + 12 * s
    e1 = integrate.quad(lambda x: x * pdf(x), lo, hi, epsabs=1e-13, limit=200)[0]
    e2 = integrate.quad(lambda x: x * x * pdf(x), lo, hi, epsabs=1e-13, limit=200)[0]
    return e1, e2 - e1 * e1


@pytest.mark.parametrize("s", [0.1, 1.0, 7.0])
def test_relu_moments_match_numerical_integration(s):
    """Error budget: the cdf errs by <= 1.4e-4, so the mean errs by about
    ``|m| 1.4e-4 <= 1.4e-4 |z| s`` (the cdf error is < 1e-5 beyond |z| = 3.5):
    below 5e-4 s; the variance by a few times that relative to var: 1.5e-3 var."""
    zs = np.linspace(-5, 5, 41)
    m = (zs * s).astype("float32")
    v = np.full_like(m, s * s)
    got_m, got_v = (_np(t) for t in moments.relu_moments(m, v))
    for i, z in enumerate(zs):
        ref_m, ref_v = _relu_by_quadrature(float(m[i]), s)
        assert abs(got_m[i] - ref_m) <= 5e-4 * s + 1e-6 * s, (z, got_m[i], ref_m)
        assert abs(got_v[i] - ref_v) <= 1.5e-3 * s * s, (z, got_v[i], ref_v)


def test_relu_formulas_are_exact_with_an_exact_cdf(monkeypatch):
    """With erf in place of the logistic cdf the closed form matches quadrature to 1e-5."""

    def exact(z):
        return (0.5 * (1 + keras.ops.erf(z / np.sqrt(2.0))),
                keras.ops.exp(-0.5 * keras.ops.square(z)) / np.sqrt(2 * np.pi))

    monkeypatch.setattr(_moment_rules, "normal_cdf_pdf", exact)
    m = np.array([-3.0, -0.7, 0.0, 0.4, 2.5], "float32")
    v = np.array([0.5, 1.0, 2.0, 0.3, 4.0], "float32")
    got_m, got_v = (_np(t) for t in moments.relu_moments(m, v))
    for i in range(len(m)):
        ref_m, ref_v = _relu_by_quadrature(float(m[i]), float(np.sqrt(v[i])))
        np.testing.assert_allclose([got_m[i], got_v[i]], [ref_m, ref_v], rtol=2e-5, atol=1e-6)


def _clipped_by_quadrature(m, s, upper):
    """Moments of min(max(x, 0), upper): quadrature inside, point masses at 0 and upper."""
    pdf = lambda x: np.exp(-((x - m) ** 2) / (2 * s * s)) / (s * np.sqrt(2 * np.pi))
    lo, hi = max(0.0, m - 12 * s), min(upper, m + 12 * s)
    e1 = e2 = 0.0
    if lo < hi:
        e1 = integrate.quad(lambda x: x * pdf(x), lo, hi, epsabs=1e-13, limit=200)[0]
        e2 = integrate.quad(lambda x: x * x * pdf(x), lo, hi, epsabs=1e-13, limit=200)[0]
    tail = special.ndtr((m - upper) / s)  # P(x > upper)
    e1 += upper * tail
    e2 += upper * upper * tail
    return e1, e2 - e1 * e1


def test_clipped_relu_formulas_are_exact_with_an_exact_cdf(monkeypatch):
    """With erf in place of the logistic cdf, ReLU6's closed form matches quadrature to 1e-5."""

    def exact(z):
        return (0.5 * (1 + keras.ops.erf(z / np.sqrt(2.0))),
                keras.ops.exp(-0.5 * keras.ops.square(z)) / np.sqrt(2 * np.pi))

    def exact_tail(z):  # (1 - Phi(z), phi(z)), the form the rule calls
        cdf, pdf = exact(z)
        return 1.0 - cdf, pdf

    monkeypatch.setattr(_moment_rules, "_tail_pdf", exact_tail)
    m = np.array([-3.0, -0.7, 0.0, 0.4, 2.5, 3.0, 5.8, 6.0, 9.0], "float32")
    v = np.array([0.5, 1.0, 2.0, 0.3, 4.0, 1e-6, 0.2, 1.0, 9.0], "float32")
    got_m, got_v = (_np(t) for t in moments.clipped_relu_moments(m, v, 6.0))
    for i in range(len(m)):
        ref_m, ref_v = _clipped_by_quadrature(float(m[i]), float(np.sqrt(v[i])), 6.0)
        np.testing.assert_allclose([got_m[i], got_v[i]], [ref_m, ref_v], rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("s", [0.01, 0.5, 3.0])
def test_clipped_relu_moments_match_numerical_integration(s):
    """ReLU6 with the logistic cdf. Error budget: each Phi errs by <= 1.4e-4 and
    enters the mean with the weights |mu| and |6 - mu|, so the mean errs by
    <= 1.4e-4 (|mu| + |6 - mu|) (bound 1.5e-4 of that). The cdf error only
    matters where Phi is far from 0 and 1, i.e. within a few s of a clip,
    where mu^2 Phi(a) and (6 - mu)^2 (1 - Phi(b)) are O(s^2): the variance
    errs by a small multiple of 1.4e-4 s^2 (measured <= 9e-4 s^2 on this
    grid); the bound is 2e-3 s^2 at every mu, which also shows that the
    centred form keeps the variance's relative accuracy inside (0, 6)
    (an uncentred E[y^2] - E[y]^2 in float32 would err by ~50 % at s = 1e-3, mu = 3)."""
    mus = np.linspace(-2 - 4 * s, 8 + 4 * s, 61)
    m = mus.astype("float32")
    v = np.full_like(m, s * s)
    got_m, got_v = (_np(t) for t in moments.clipped_relu_moments(m, v, 6.0))
    for i, mu in enumerate(mus):
        ref_m, ref_v = _clipped_by_quadrature(float(m[i]), s, 6.0)
        scale = abs(mu) + abs(6 - mu)
        assert abs(got_m[i] - ref_m) <= 1.5e-4 * scale + 1e-5 * s, (mu, got_m[i], ref_m)
        assert abs(got_v[i] - ref_v) <= 2e-3 * s * s, (mu, got_v[i], ref_v)


def test_relu_of_zero_variance_is_finite():
    m, v = moments.relu_moments(np.array([-1.0, 0.0, 2.0], "float32"),
                                np.full(3, moments.VAR_FLOOR, "float32"))
    np.testing.assert_allclose(_np(m), [0.0, 4e-7, 2.0], atol=1e-6)
    assert np.all(np.isfinite(_np(v)))


# ------------------------------------------------------------ linear layers

_SHAPES = {0: ((5,), {}), 1: ((8, 3), {"kernel_size": 3}), 2: ((6, 6, 2), {"kernel_size": 3}),
           3: ((4, 4, 4, 2), {"kernel_size": 2})}


def _bayesian_layer(rank, estimator, input_shape, *, activation=None, bayesian_bias=False,
                    std=0.3, seed=0):
    cls = layers.layer_class(rank, estimator)
    kwargs = dict(_SHAPES[rank][1])
    layer = cls(3, activation=activation, posterior_std_init=std, seed=seed,
                bayesian_bias=bayesian_bias, bias_initializer="random_normal", **kwargs)
    layer.build((None, *input_shape))
    return layer


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
@pytest.mark.parametrize("bayesian_bias", [False, True])
def test_bayesian_linear_moments_match_monte_carlo(rank, bayesian_bias):
    """Local reparameterization draws every output independently per row, so a
    batch of ``n`` rows with their own input draws is ``n`` exact joint samples
    of (input, weights): the rule is exact, only MC error remains."""
    rng = np.random.default_rng(rank)
    shape = _SHAPES[rank][0]
    layer = _bayesian_layer(rank, "local_reparameterization", shape, bayesian_bias=bayesian_bias)
    mask = (rng.random(layer.kernel_mask.shape) > 0.3).astype("float32")  # 30 % pruned
    layer.kernel_mask.assign(mask)
    mu, var = _gaussian_input(shape, rng)
    got = _layer_moments(layer, mu, var)
    _assert_mc(*got, _mc_layer(layer, mu, var, 20000, rng))


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_all_twelve_classes_share_the_moment_rule(rank):
    """The moments depend on the posterior only, not the estimator: the three
    classes of a rank with the same weights give identical moments."""
    rng = np.random.default_rng(10 + rank)
    shape = _SHAPES[rank][0]
    mu, var = _gaussian_input(shape, rng)
    results = []
    source = None
    for estimator in layers.ESTIMATORS:
        layer = _bayesian_layer(rank, estimator, shape, activation="relu", bayesian_bias=True)
        if source is None:
            source = layer
            source.kernel_mask.assign((rng.random(source.kernel_mask.shape) > 0.5).astype("f4"))
            source.kernel_rho.assign(rng.normal(-2, 0.5, source.kernel_rho.shape).astype("f4"))
        else:
            layer.set_weights(source.get_weights())
        results.append(_layer_moments(layer, mu, var))
    for other in results[1:]:
        np.testing.assert_allclose(other[0], results[0][0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(other[1], results[0][1], rtol=1e-6, atol=1e-7)


def test_a_fully_pruned_unit_is_deterministic_zero_noise():
    layer = _bayesian_layer(0, "flipout", (5,))
    mask = np.ones(layer.kernel_mask.shape, "float32")
    mask[:, 0] = 0.0
    layer.kernel_mask.assign(mask)
    m, v = _layer_moments(layer, np.ones((1, 5)), np.full((1, 5), 0.2))
    assert v[0, 0] <= 2 * moments.VAR_FLOOR and v[0, 1] > 1e-3
    np.testing.assert_allclose(m[0, 0], _np(layer.bias)[0], atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.Dense(4, bias_initializer="random_normal"),
        lambda: keras.layers.Conv2D(3, 3, padding="same"),
        lambda: keras.layers.Conv1D(2, 2, strides=2),
        lambda: keras.layers.AveragePooling2D(2, padding="same"),
        lambda: keras.layers.AveragePooling2D(3, strides=2),
        lambda: keras.layers.GlobalAveragePooling2D(),
        lambda: keras.layers.Rescaling(2.5, offset=-1.0),
        lambda: keras.layers.ZeroPadding2D(1),
    ],
    ids=["dense", "conv2d", "conv1d", "avgpool_same", "avgpool_valid", "gap", "rescaling", "pad"],
)
def test_exact_deterministic_layers_match_monte_carlo(make):
    rng = np.random.default_rng(3)
    layer = make()
    shape = (8, 3) if isinstance(layer, keras.layers.Conv1D) else (
        (6,) if isinstance(layer, keras.layers.Dense) else (5, 5, 2))
    layer.build((None, *shape))
    mu, var = _gaussian_input(shape, rng)
    got = _layer_moments(layer, mu, var)
    _assert_mc(*got, _mc_layer(layer, mu, var, 20000, rng))


def test_batch_normalization_is_exact():
    rng = np.random.default_rng(4)
    layer = keras.layers.BatchNormalization()
    layer.build((None, 4, 4, 3))
    layer.moving_mean.assign(rng.normal(size=3).astype("f4"))
    layer.moving_variance.assign(rng.uniform(0.2, 3, size=3).astype("f4"))
    layer.gamma.assign(rng.normal(size=3).astype("f4"))
    layer.beta.assign(rng.normal(size=3).astype("f4"))
    mu, var = _gaussian_input((4, 4, 3), rng)
    _assert_mc(*_layer_moments(layer, mu, var), _mc_layer(layer, mu, var, 20000, rng))


def test_relu_layer_matches_monte_carlo():
    """Independent Gaussian inputs: a ReLU layer's moments are the rectified
    Gaussian's, up to the cdf approximation (<= 5e-4 s, see above)."""
    rng = np.random.default_rng(5)
    mu, var = _gaussian_input((40,), rng, 0.1, 2.0)
    for layer in (keras.layers.ReLU(), keras.layers.Activation("relu")):
        got = _layer_moments(layer, mu, var)
        _assert_mc(*got, _mc_layer(layer, mu, var, 40000, rng), mean_atol=1e-3, var_rtol=3e-3)


def test_mc_dropout_bernoulli_moments():
    rng = np.random.default_rng(6)
    layer = layers.MCDropout(0.3, seed=1)
    mu, var = _gaussian_input((30,), rng)
    _assert_mc(*_layer_moments(layer, mu, var), _mc_layer(layer, mu, var, 40000, rng))


def test_inference_dropout_is_the_identity():
    mu, var = _gaussian_input((7,), np.random.default_rng(7))
    m, v = _layer_moments(keras.layers.Dropout(0.5), mu, var)
    np.testing.assert_allclose(m, mu, rtol=1e-6)
    np.testing.assert_allclose(v, var, rtol=1e-6)


# ---------------------------------------------------------------- max pool


def test_clark_max_of_two_is_exact_against_monte_carlo():
    """A window of two independent Gaussians: Clark's moments are exact (only
    the cdf approximation remains: 1.4e-4 relative terms)."""
    rng = np.random.default_rng(8)
    layer = keras.layers.MaxPooling2D((2, 1))
    mu, var = _gaussian_input((8, 1, 5), rng, 0.05, 1.0)
    got = _layer_moments(layer, mu, var, max_pool="clark")
    _assert_mc(*got, _mc_layer(layer, mu, var, 40000, rng), mean_atol=1e-3, var_rtol=2e-3)


def test_clark_2x2_pool_error_and_separate_is_a_lower_bound():
    """Pairwise Clark re-fits a Gaussian after each pair: measured here at
    0.014 sd in the mean and 13 % in the variance against MC (40,000 draws);
    tolerances 0.05 sd and 20 %. The separate form's mean max_i mu_i is a
    lower bound of E[max]: measured 0.39 sd low on average, 0.85 at most (and
    variances up to 3.3 times MC's)."""
    rng = np.random.default_rng(9)
    layer = keras.layers.MaxPooling2D(2)
    mu, var = _gaussian_input((6, 6, 3), rng, 0.1, 1.0)
    m, v, se_m, _ = _mc_layer(layer, mu, var, 40000, rng)
    clark_m, clark_v = _layer_moments(layer, mu, var, max_pool="clark")
    assert np.all(np.abs(clark_m[0] - m) <= 0.05 * np.sqrt(v) + 5 * se_m)
    assert np.all(np.abs(clark_v[0] - v) <= 0.2 * v)
    sep_m, _ = _layer_moments(layer, mu, var, max_pool="separate")
    assert np.all(sep_m[0] <= m + 5 * se_m)
    # how crude: the separate mean misses by up to about one sd here
    gap = (m - sep_m[0]) / np.sqrt(v)
    assert 0.1 < gap.max() < 1.5


def test_max_pool_acts_on_pre_activations():
    """conv(relu) -> max pool: the pool takes the max of the Gaussian
    pre-activations, then the ReLU (max and relu commute)."""
    rng = np.random.default_rng(11)
    conv = _bayesian_layer(2, "flipout", (6, 6, 2), activation="relu")
    pool = keras.layers.MaxPooling2D(2)
    model = keras.Sequential([keras.Input((6, 6, 2)), conv, pool])
    x = rng.random((2, 6, 6, 2)).astype("float32")
    out = moments.propagate(model, x)
    prop = moments._Propagator("separate", moments.default_kernel_moments)
    g = prop.layer(conv, [moments._Gaussian(x)], final=False)
    assert g.pending == "relu"
    ref_m, ref_v = moments.relu_moments(pool(g.mean), pool(g.var))
    np.testing.assert_allclose(_np(out.mean), _np(ref_m), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(out.variance), _np(ref_v), rtol=1e-5, atol=1e-9)


def test_functional_graph_with_skip_connection():
    """Add of independent branches: variances add (exact for independent inputs)."""
    inp = keras.Input((6,))
    a = layers.DenseFlipout(5, posterior_std_init=0.2, seed=1)(inp)
    b = keras.layers.Dense(5)(inp)
    s = keras.layers.Add()([a, b])
    c = keras.layers.Concatenate()([s, a])
    out = keras.layers.Dense(3, activation="softmax")(c)
    model = keras.Model(inp, out)
    x = np.random.default_rng(12).random((4, 6)).astype("float32")
    res = moments.propagate(model, x)
    assert res.output == "softmax" and res.mean.shape == (4, 3)
    p = tfp_bcnn.predict(model, x, method="moments", num_samples=16)
    assert p.mean.shape == (4, 3) and np.all(p.epistemic >= 0)


# ------------------------------------------------------------ whole LeNet-5


@pytest.fixture(scope="module")
def lenet():
    """A LeNet-5 Flipout trained for a few steps, posterior widened to sigma=0.04
    so that the variances matter (MC epistemic about 0.1 nats)."""
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = tfp_bcnn.datasets.mnist_5k()
    model = models.lenet5(num_train_examples=4000, seed=0)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x[:640], y[:640], epochs=2, batch_size=64, verbose=0)
    for layer in tfp_bcnn.bayesian_layers(model):
        layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, rho_from_sigma(0.04), "f4"))
    return model, xt[:60], yt[:60]


def test_lenet5_moments_agree_with_monte_carlo(lenet):
    """Monte Carlo with S = 500 samples is the reference: a mean probability's
    MC standard error is sd_s / sqrt(500) <= 0.022, about 0.002 on average
    over the 500 entries. The rest is the approximation (diagonal covariance,
    separate max pool, logistic cdf), measured on this model (S = 800, 60
    images) at a mean |difference| of 0.0042: tolerance 0.015. Argmax: counted
    where MC's top-two margin exceeds 5 MC standard errors (MC's argmax is
    then settled): measured 100 %, required 95 %. Mutual information: measured
    Spearman 0.98 with MC and a mean 0.90 times MC's; required > 0.9 and
    within [0.6, 1.2] times."""
    model, x, _ = lenet
    x = x[:50]
    keras.utils.set_random_seed(1)
    mc = tfp_bcnn.predict(model, x, num_samples=500, batch_size=25)
    mom = tfp_bcnn.predict(model, x, num_samples=4000, method="moments")
    diff = np.abs(mom.mean - mc.mean)
    assert diff.mean() < 0.015, diff.mean()
    top2 = np.sort(mc.mean, axis=1)[:, -2:]
    se = mc.std.max(axis=1) / np.sqrt(500)
    settled = (top2[:, 1] - top2[:, 0]) > 5 * se
    assert settled.sum() >= 30
    agree = (mom.mean.argmax(1) == mc.mean.argmax(1))[settled].mean()
    assert agree >= 0.95, agree
    rho = np.corrcoef(np.argsort(np.argsort(mom.epistemic)),
                      np.argsort(np.argsort(mc.epistemic)))[0, 1]
    assert rho > 0.9, rho
    ratio = mom.epistemic.mean() / mc.epistemic.mean()
    assert 0.6 < ratio < 1.2, ratio


def test_predict_moments_fields_and_samples(lenet):
    model, x, _ = lenet
    p = tfp_bcnn.predict(model, x[:5], num_samples=7, method="moments", return_samples=True)
    assert p.samples.shape == (7, 5, 10) and p.mean.shape == (5, 10)
    np.testing.assert_allclose(p.aleatoric_variance + p.epistemic_variance,
                               p.mean * (1 - p.mean), atol=1e-9)
    np.testing.assert_allclose(p.predictive_entropy, p.aleatoric + p.epistemic, atol=1e-9)


def test_clark_and_separate_agree_on_lenet(lenet):
    model, x, _ = lenet
    a = moments.propagate(model, x, max_pool="separate")
    b = moments.propagate(model, x, max_pool="clark")
    assert (_np(a.mean).argmax(1) == _np(b.mean).argmax(1)).mean() >= 0.95


# -------------------------------------------------------------- regression


def test_gaussian_head_regression_moments_match_monte_carlo():
    """One Bayesian hidden layer on a deterministic input: hidden units are
    independent, so the head mean and the epistemic variance are exact up to
    MC error (3 % of the variance with 4000 + 4000 samples, 6 sd: 20 %)."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((4,)),
        layers.DenseLocalReparameterization(16, activation="relu", posterior_std_init=0.3),
        tfp_bcnn.GaussianHead(1),
    ])
    x = np.random.default_rng(13).normal(size=(6, 4)).astype("float32")
    mc = tfp_bcnn.predict(model, x, num_samples=4000)
    mom = tfp_bcnn.predict(model, x, num_samples=4000, method="moments")
    assert isinstance(mom, tfp_bcnn.RegressionPrediction)
    sd = np.sqrt(mc.epistemic_variance)
    np.testing.assert_array_less(np.abs(mom.mean - mc.mean), 6 * sd / np.sqrt(2000) + 1e-4)
    ratio = mom.epistemic_variance / mc.epistemic_variance
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


# ------------------------------------------------------------------ errors


def _small(activation="relu", extra=None):
    return keras.Sequential([
        keras.Input((6,)),
        layers.DenseFlipout(4, activation=activation, name="hidden"),
        *(extra or []),
        keras.layers.Dense(3, activation="softmax"),
    ])


def test_unsupported_layer_names_it_and_points_to_mc():
    x = np.ones((2, 6), "float32")
    with pytest.raises(ValueError, match=r"'hidden' \(DenseFlipout\).*tanh.*method='mc'"):
        tfp_bcnn.predict(_small("tanh"), x, method="moments")
    model = _small(extra=[keras.layers.LayerNormalization(name="ln")])
    with pytest.raises(ValueError, match=r"'ln' \(LayerNormalization\).*method='mc'"):
        tfp_bcnn.predict(model, x, method="moments")


def test_softmax_inside_and_missing_softmax_are_refused():
    x = np.ones((2, 6), "float32")
    with pytest.raises(ValueError, match="softmax is supported only as the model output"):
        tfp_bcnn.predict(_small("softmax"), x, method="moments")
    logits = keras.Sequential([keras.Input((6,)), layers.DenseFlipout(3)])
    with pytest.raises(ValueError, match="from_logits=False"):
        tfp_bcnn.predict(logits, x, method="moments")
    p = tfp_bcnn.predict(logits, x, method="moments", from_logits=True)
    assert p.mean.shape == (2, 3)


def test_bad_method_and_max_pool():
    with pytest.raises(ValueError, match=r"Received: method='moment'"):
        tfp_bcnn.predict(_small(), np.ones((2, 6)), method="moment")
    with pytest.raises(ValueError, match=r"Received: max_pool='avg'"):
        moments.propagate(_small(), np.ones((2, 6)), max_pool="avg")


# ------------------------------------------------------------------ export


def _builtin_names():
    from tensorflow.lite.python import schema_py_generated as schema

    return {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")} - {"CUSTOM"}


def test_tflite_moments_builtin_ops_runtime_and_agreement(lenet, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    model, x, _ = lenet
    path = export.to_tflite(model, tmp_path / "m.tflite", sampling="moments", num_samples=32)
    info = export.describe(path)
    assert info["flex_ops"] == [] and set(info["ops"]) <= _builtin_names(), info["ops"]
    assert "RANDOM_STANDARD_NORMAL" in info["ops"] and "CONV_2D" in info["ops"]
    assert (info["sampling"], info["num_samples"], info["max_pool"]) == ("moments", 32, "separate")
    assert info["signatures"]["serving_default"]["outputs"] == sorted(
        ["mean", "std", "predictive_entropy", "aleatoric", "epistemic", "samples"]
    ) or set(info["signatures"]["serving_default"]["outputs"]) == {
        "mean", "std", "predictive_entropy", "aleatoric", "epistemic", "samples"}
    lite = TFLiteBayesianModel(path).predict(x, num_invocations=8, return_samples=True)
    assert lite.samples.shape == (256, len(x), 10)
    ref = tfp_bcnn.predict(model, x, num_samples=256, method="moments")
    # same Gaussian, independent draws: 5 standard errors of two 256-sample means
    se = np.sqrt((lite.std**2 + ref.std**2) / 256)
    assert np.all(np.abs(lite.mean - ref.mean) <= 5 * se + 2e-3)
    two = [TFLiteBayesianModel(path).predict(x[:3], return_samples=True).samples for _ in "ab"]
    assert not np.array_equal(*two)  # no seed stored: fresh interpreters differ


def test_tflite_moments_int8_and_sparse(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tfp_bcnn import export
    from tfp_bcnn.export.runtime import TFLiteBayesianModel

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2DFlipout(8, 3, activation="relu", posterior_std_init=0.05),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        layers.DenseFlipout(64, activation="relu", posterior_std_init=0.05),
        layers.DenseFlipout(4, activation="softmax", posterior_std_init=0.05),
    ])
    dense = model.layers[-2]
    mask = (np.random.default_rng(0).random(dense.kernel_mask.shape) > 0.9).astype("f4")
    dense.kernel_mask.assign(mask)
    path = export.to_tflite(model, tmp_path / "q.tflite", sampling="moments", num_samples=8,
                            quantize="dynamic")
    info = export.describe(path)
    assert info["int8_tensors"] > 0 and info["sparse_tensors"] > 0 and info["flex_ops"] == []
    x = np.random.default_rng(1).random((5, 8, 8, 1)).astype("float32")
    p = TFLiteBayesianModel(path).predict(x)
    assert p.mean.shape == (5, 4) and np.all(np.isfinite(p.epistemic))


def test_saved_model_moments(lenet, tmp_path):
    import tensorflow as tf

    from tfp_bcnn import export

    model, x, _ = lenet
    path = export.save_saved_model(model, tmp_path / "sm", sampling="moments", num_samples=64)
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](images=tf.constant(x[:4]))
    assert set(out) == {"mean", "std", "predictive_entropy", "aleatoric", "epistemic"}
    one = loaded.signatures["sample"](images=tf.constant(x[:4]))["probabilities"]
    assert one.shape == (4, 10)
    ref = tfp_bcnn.predict(model, x[:4], num_samples=4000, method="moments")
    se = out["std"].numpy() / np.sqrt(64)  # the 4000-sample reference adds little
    assert np.all(np.abs(out["mean"].numpy() - ref.mean) <= 5 * se + 3e-3)
    assert export.describe(path)["sampling"] == "moments"


def test_bad_sampling_and_failed_export_keeps_the_old_file(tmp_path):
    from tfp_bcnn import export

    path = tmp_path / "m.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"Received: sampling='moment'"):
        export.to_tflite(_small(), path, sampling="moment")
    with pytest.raises(ValueError, match=r"'hidden' \(DenseFlipout\).*method='mc'"):
        export.to_tflite(_small("tanh"), path, sampling="moments")
    with pytest.raises(ValueError, match=r"Received: max_pool='x'"):
        export.to_tflite(_small(), path, sampling="moments", max_pool="x")
    assert path.read_bytes() == b"previous"


# --------------------------------------------------------------------- JAX


JAX_MOMENTS = register("jax_moments", textwrap.dedent(
        """
        import numpy as np, keras
        from tfp_bcnn import layers, moments
        from tfp_bcnn.uncertainty import predict
        assert keras.backend.backend() == "jax"
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(4, 3, activation="relu", posterior_std_init=0.1),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            layers.DenseFlipout(10, activation="softmax", posterior_std_init=0.1),
        ])
        x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
        p = predict(model, x, num_samples=16, batch_size=3, method="moments")
        assert p.mean.shape == (5, 10) and np.allclose(p.mean.sum(-1), 1, atol=1e-5)
        assert np.all(p.epistemic > 0)
        eager = moments.propagate(model, x)
        report(float(np.asarray(eager.variance).mean()))
        """
))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_predict_moments_on_jax_backend():
    assert result(JAX_MOMENTS) > 0
