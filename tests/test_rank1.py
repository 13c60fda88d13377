"""Rank-1 mixture layers (tfp_bcnn.layers._rank1): maths against independent references.

* K = 1 with (numerically) zero factor noise is a plain Keras Dense / Conv
  with the kernel ``W o (r s^T)`` and the bias ``b`` (NumPy-free reference:
  Keras' own layers);
* the sample mean and variance of the outputs of one component match the
  closed form (module docstring) within 5 standard errors;
* ``propagate_moments`` matches Monte Carlo of the layer with Gaussian inputs;
* the KL matches TFP's ``kl_divergence`` (closed form, Normal posteriors) and
  a TFP Monte Carlo estimate (Cauchy posteriors);
* rows map to components in contiguous blocks; components differ;
* Keras' ``run_layer_test`` (config round trip, training step, mixed
  precision), ``.keras`` round trip, pruning masks, errors.
"""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

import tfp_bcnn
from tfp_bcnn import layers, models, priors
from tfp_bcnn.layers._rank1 import component_index

SHAPES = {0: (4, 5), 1: (4, 7, 3), 2: (4, 6, 6, 3), 3: (4, 4, 4, 4, 2)}
#: rho giving sigma = softplus(-40) + 1e-8 ~ 1e-8: "zero" factor noise.
RHO_ZERO = -40.0


def _make(rank, k, **kwargs):
    cls = layers.rank1_class(rank)
    if rank == 0:
        return cls(3, num_components=k, **kwargs)
    return cls(2, 3, num_components=k, padding="same" if rank == 1 else "valid", **kwargs)


def _plain(rank, layer):
    if rank == 0:
        return keras.layers.Dense(3)
    cls = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    return cls(2, 3, padding=layer.padding)


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_k1_zero_noise_is_plain_layer_with_scaled_kernel(rank):
    rng = np.random.default_rng(rank)
    x = rng.normal(size=SHAPES[rank]).astype("float32")
    layer = _make(rank, 1, seed=3)
    layer(x)
    r = rng.normal(size=layer.in_factor_loc.shape).astype("float32")
    s = rng.normal(size=layer.out_factor_loc.shape).astype("float32")
    b = rng.normal(size=layer.bias.shape).astype("float32")
    layer.in_factor_loc.assign(r)
    layer.out_factor_loc.assign(s)
    layer.in_factor_rho.assign(np.full(r.shape, RHO_ZERO, "float32"))
    layer.out_factor_rho.assign(np.full(s.shape, RHO_ZERO, "float32"))
    layer.bias.assign(b)
    w = keras.ops.convert_to_numpy(layer.kernel)
    plain = _plain(rank, layer)
    plain.build(x.shape)
    plain.set_weights([w * r[0][:, None] * s[0][None, :], b[0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               keras.ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-5)


def test_rows_map_to_contiguous_component_blocks():
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(component_index(10, 4)),
                                  [0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(component_index(8, 4)),
                                  np.repeat(np.arange(4), 2))


def test_components_see_distinct_factors():
    layer = layers.Rank1Dense(4, num_components=4, seed=0, random_sign_init=0.5)
    x = np.ones((8, 6), "float32")
    layer(x)
    for v in (layer.in_factor_rho, layer.out_factor_rho):
        v.assign(np.full(v.shape, RHO_ZERO, "float32"))
    y = keras.ops.convert_to_numpy(layer(x))
    # Random-sign means (random_sign_init=0.5): each component has its own signs.
    signs = np.sign(keras.ops.convert_to_numpy(layer.in_factor_loc))
    assert len({tuple(row) for row in signs}) == 4
    np.testing.assert_allclose(y[0::2], y[1::2], atol=1e-6)  # same block: same output
    blocks = y[0::2]
    assert min(np.abs(blocks[i] - blocks[j]).max() for i in range(4) for j in range(i)) > 1e-3


def _random_layer(k=2, std=0.3, seed=0):
    layer = layers.Rank1Dense(3, num_components=k, seed=seed, posterior_std_init=std)
    layer(np.zeros((k, 4), "float32"))
    rng = np.random.default_rng(seed)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return layer


def _closed_form(layer, comp, m, v):
    """Mean and variance of one component's output for inputs N(m, v) (module docstring)."""
    f = keras.ops.convert_to_numpy
    w = f(layer.kernel).astype(np.float64)
    r_mu, r_sd = f(layer.in_factor_loc)[comp], f(layer.in_factor_sigma)[comp]
    s_mu, s_sd = f(layer.out_factor_loc)[comp], f(layer.out_factor_sigma)[comp]
    z_mean = (m * r_mu) @ w
    z_var = ((v + m**2) * (r_sd**2 + r_mu**2) - (m * r_mu) ** 2) @ w**2
    mean = z_mean * s_mu + f(layer.bias)[comp]
    var = z_var * (s_sd**2 + s_mu**2) + z_mean**2 * s_sd**2
    return mean, var


def _check_moments(samples, mean, var, z=5.0):
    """Sample mean and variance within ``z`` standard errors of the closed form.

    SE of the mean: sqrt(var / M); of the variance: sqrt((m4 - var^2) / M) with
    the sample fourth central moment m4 (the outputs are not Gaussian: products
    of Gaussians). 5 SE: 12 comparisons fail by chance with probability ~1e-5.
    """
    n = len(samples)
    c = samples - samples.mean(0)
    m4 = np.mean(c**4, 0)
    assert np.all(np.abs(samples.mean(0) - mean) < z * np.sqrt(var / n)), (samples.mean(0), mean)
    assert np.all(np.abs(samples.var(0) - var) < z * np.sqrt((m4 - var**2) / n)), (
        samples.var(0), var)


def test_sample_mean_and_variance_match_closed_form():
    keras.utils.set_random_seed(0)
    layer = _random_layer()
    x = np.array([0.5, -1.0, 2.0, 0.3], "float32")
    m = 20000
    y = keras.ops.convert_to_numpy(layer(np.tile(x, (2 * m, 1)))).astype(np.float64)
    for comp in range(2):
        mean, var = _closed_form(layer, comp, x.astype(np.float64), 0.0)
        _check_moments(y[comp * m:(comp + 1) * m], mean, var)


def test_propagated_moments_match_monte_carlo_of_the_layer():
    keras.utils.set_random_seed(1)
    layer = _random_layer(seed=1)
    m_in = np.array([0.5, -1.0, 2.0, 0.3])
    v_in = np.array([0.2, 0.5, 0.1, 1.0])
    m = 20000
    x = (m_in + np.sqrt(v_in) * np.random.default_rng(2).normal(size=(2 * m, 4))).astype("f4")
    y = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    tensor = keras.ops.convert_to_tensor
    mean, var = layer.propagate_moments(tensor(np.tile(m_in, (2, 1)), "float32"),
                                        tensor(np.tile(v_in, (2, 1)), "float32"))
    mean, var = keras.ops.convert_to_numpy(mean), keras.ops.convert_to_numpy(var)
    for comp in range(2):
        ref_mean, ref_var = _closed_form(layer, comp, m_in, v_in)
        np.testing.assert_allclose(mean[comp], ref_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var[comp], ref_var, rtol=1e-4, atol=1e-5)
        _check_moments(y[comp * m:(comp + 1) * m], ref_mean, ref_var)


def test_kl_matches_tfp_normal_posterior():
    tfd = pytest.importorskip("tensorflow_probability").distributions
    layer = layers.Rank1Dense(3, num_components=3, prior=priors.Normal(1.0, 0.5),
                              posterior_std_init=0.2, seed=0)
    layer(np.ones((3, 4), "float32"))
    f = keras.ops.convert_to_numpy
    ref = 0.0
    for loc, sigma in ((layer.in_factor_loc, layer.in_factor_sigma),
                       (layer.out_factor_loc, layer.out_factor_sigma)):
        ref += float(np.sum(f(tfd.kl_divergence(tfd.Normal(f(loc), f(sigma)),
                                                tfd.Normal(1.0, 0.5)))))
    np.testing.assert_allclose(float(f(layer.kl_divergence())), ref / 3, rtol=1e-5)
    # The loss added by a call is kl_weight times that.
    layer.kl_weight.assign(0.25)
    layer(np.ones((3, 4), "float32"))
    np.testing.assert_allclose(float(f(layer.losses[0])), 0.25 * ref / 3, rtol=1e-5)


def test_kl_estimate_cauchy_posterior_matches_tfp_monte_carlo():
    tfd = pytest.importorskip("tensorflow_probability").distributions
    keras.utils.set_random_seed(0)
    layer = layers.Rank1Dense(2, num_components=2, posterior="cauchy", posterior_std_init=0.1,
                              prior=priors.Cauchy(1.0, 0.5), seed=0)
    layer(np.ones((2, 3), "float32"))
    f = keras.ops.convert_to_numpy
    estimates = [float(f(layer.kl_divergence())) for _ in range(200)]
    ref = 0.0
    for loc, sigma in ((layer.in_factor_loc, layer.in_factor_sigma),
                       (layer.out_factor_loc, layer.out_factor_sigma)):
        q = tfd.Cauchy(f(loc), f(sigma))
        z = q.sample(100000, seed=1)
        ref += float(np.sum(np.mean(f(q.log_prob(z) - tfd.Cauchy(1.0, 0.5).log_prob(z)), 0)))
    ref /= 2
    # Tolerance: 5 standard errors of the 200-call mean (the reference's own MC
    # error, 100,000 draws per entry, is ~20x smaller).
    se = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - ref) < 5 * se + 1e-3, (np.mean(estimates), ref, se)


@pytest.mark.parametrize("rank", [0, 2])
def test_run_layer_test(rank):
    TestCase().run_layer_test(
        layers.rank1_class(rank),
        init_kwargs={**({"units": 3} if rank == 0 else {"filters": 2, "kernel_size": 3}),
                     "num_components": 2, "seed": 1, "kl_weight": 0.01},
        input_shape=SHAPES[rank],
        expected_output_shape=(4, 3) if rank == 0 else (4, 4, 4, 2),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=2,
        expected_num_seed_generators=1,
        expected_num_losses=1,
        supports_masking=False,
        run_training_check=True,
        run_mixed_precision_check=True,
    )


def _tiny_model(k=2, **kwargs):
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        layers.Rank1Conv2D(3, 3, activation="relu", num_components=k, seed=1,
                           kl_weight=1 / 64, **kwargs),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        layers.Rank1Dense(3, activation="softmax", num_components=k, seed=2, kl_weight=1 / 64,
                          **kwargs),
    ])


@pytest.mark.slow
def test_keras_round_trip_export_and_mixed_precision(tmp_path):
    model = _tiny_model(posterior_std_init=0.1)
    x = np.random.default_rng(0).random((8, 6, 6, 1)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    p1 = tfp_bcnn.predict(model, x, num_samples=4, method="moments")
    p2 = tfp_bcnn.predict(loaded, x, num_samples=4, method="moments")
    np.testing.assert_allclose(p1.epistemic.shape, p2.epistemic.shape)
    assert loaded.layers[0].num_components == 2 and loaded.layers[0].posterior == "normal"
    # Keras' own SavedModel export serves the stochastic model (two calls differ).
    import tensorflow as tf

    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    a, b = (served.serve(tf.constant(x)).numpy() for _ in range(2))
    assert a.shape == (8, 3) and np.abs(a - b).max() > 1e-4
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mp = _tiny_model()
        mp.compile("adam", "sparse_categorical_crossentropy")
        hist = mp.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
        assert all(v.dtype == "float32" for v in mp.weights)
        assert mp.layers[0].losses[0].dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_pruning_mask_zeroes_the_shared_kernel():
    layer = layers.Rank1Dense(3, num_components=2, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    layer(x)
    mask = np.ones(layer.kernel_mask.shape, "float32")
    mask[:, 1] = 0.0
    layer.kernel_mask.assign(mask)
    layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    y = keras.ops.convert_to_numpy(layer(x))
    assert np.all(y[:, 1] == 0.0)  # the unit's every input weight pruned: exactly 0


def test_errors():
    with pytest.raises(ValueError, match="Received: num_components=0"):
        layers.Rank1Dense(3, num_components=0)
    with pytest.raises(ValueError, match="Received: posterior='laplace'"):
        layers.Rank1Conv2D(3, 3, posterior="laplace")
    with pytest.raises(ValueError, match="Received: random_sign_init=2"):
        layers.Rank1Dense(3, random_sign_init=2)
    with pytest.raises(ValueError, match="infinite.*Received: prior=Normal"):
        layers.Rank1Dense(3, posterior="cauchy", prior=priors.Normal(1.0, 1.0))
    with pytest.raises(ValueError, match="Received: rank=4"):
        layers.rank1_class(4)
    model = _tiny_model(k=4)
    x = np.zeros((2, 6, 6, 1), "float32")
    with pytest.raises(ValueError, match="multiple of 4.*Received: num_samples=6"):
        tfp_bcnn.predict(model, x, num_samples=6)
    cauchy = _tiny_model(posterior="cauchy")
    with pytest.raises(ValueError, match="Cauchy"):
        tfp_bcnn.predict(cauchy, x, num_samples=4, method="moments")
    with pytest.raises(ValueError, match="Received: posterior='rank2'"):
        models.lenet5(num_train_examples=10, posterior="rank2")


def test_lenet5_rank1_builder_and_mixture_predict():
    model = models.lenet5(num_train_examples=100, posterior="rank1", num_components=4, seed=0)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Rank1Conv2D", "Rank1Dense"} <= kinds and model.name == "lenet5_rank1"
    assert tfp_bcnn.get_kl_weight(model) == pytest.approx(1 / 100)
    tfp_bcnn.set_kl_weight(model, 0.5)  # KLAnnealing and the kl metric use the same walk
    assert all(float(keras.ops.convert_to_numpy(layer.kl_weight)) == 0.5
               for layer in model.layers if isinstance(layer, layers.Rank1Layer))
    unscaled = float(keras.ops.convert_to_numpy(tfp_bcnn.kl_divergence(model, scaled=False)))
    scaled = float(keras.ops.convert_to_numpy(tfp_bcnn.kl_divergence(model)))
    assert unscaled > 0 and scaled == pytest.approx(0.5 * unscaled, rel=1e-5)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    p = tfp_bcnn.predict(model, x, num_samples=8, return_samples=True)
    assert p.samples.shape == (8, 3, 10) and np.all(p.epistemic >= 0)
    # Sample s comes from component floor(s K / S): with the noise off, the two
    # samples of each component coincide and the components differ.
    for layer in model.layers:
        for name in ("in_factor_rho", "out_factor_rho"):
            if hasattr(layer, name):
                v = getattr(layer, name)
                v.assign(np.full(v.shape, RHO_ZERO, "float32"))
    p = tfp_bcnn.predict(model, x, num_samples=8, return_samples=True)
    np.testing.assert_allclose(p.samples[0::2], p.samples[1::2], atol=1e-6)
    assert np.abs(p.samples[0] - p.samples[2]).max() > 1e-4
    q = tfp_bcnn.predict(model, x, num_samples=8, method="moments", return_samples=True)
    # Zero factor noise: the moment pass is exact up to the max-pool and ReLU
    # rules on deterministic inputs, i.e. exact here.
    np.testing.assert_allclose(q.samples[0::2], p.samples[0::2], atol=1e-4)
    for build in (models.alexnet, models.three_conv_three_fc):
        m = build(num_train_examples=10, posterior="rank1", num_components=2)
        assert any(isinstance(layer, layers.Rank1Layer) for layer in m.layers)
