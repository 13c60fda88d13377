"""Bayesian layers: shapes, estimators, KL, serialization, training, bad input."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

import tfp_bcnn
from tfp_bcnn import layers, priors

from _backend import register, result

tfd = tfp.distributions

# rank -> (input shape without batch, kernel_size)
INPUTS = {0: ((5,), None), 1: ((9, 3), 3), 2: ((7, 7, 3), 3), 3: ((5, 5, 5, 2), 2)}
ALL = sorted(layers.LAYER_CLASSES.items(), key=lambda kv: (kv[0][0], kv[0][1]))
IDS = [cls.__name__ for _, cls in ALL]


def make(cls, units=4, **kwargs):
    if cls._rank == 0:
        return cls(units, **kwargs)
    return cls(units, INPUTS[cls._rank][1], **kwargs)


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("key,cls", ALL, ids=IDS)
class TestEveryLayer:
    def test_shape_weights_losses(self, key, cls):
        rank, _ = key
        shape, k = INPUTS[rank]
        layer = make(cls, units=4, kl_weight=0.5)
        inp = keras.Input(shape)
        model = keras.Sequential([inp, layer])
        y = model(rand((2,) + shape))
        assert tuple(y.shape)[1:] == tuple(layer.compute_output_shape((None,) + shape))[1:]
        in_ch = shape[-1]
        kernel = (in_ch, 4) if rank == 0 else (k,) * rank + (in_ch, 4)
        assert tuple(layer.kernel_loc.shape) == kernel
        assert tuple(layer.kernel_rho.shape) == kernel
        assert tuple(layer.kernel_mask.shape) == kernel
        # trainable: loc, rho, bias; non-trainable: mask, kl_weight
        assert len(layer.trainable_weights) == 3
        assert len(layer.non_trainable_weights) == 2
        n = int(np.prod(kernel))
        assert model.count_params() == 3 * n + 4 + 1  # loc, rho, mask, bias, kl_weight
        assert len(model.losses) == 1
        np.testing.assert_allclose(np.asarray(layer.kernel_mask), 1.0)

    def test_config_round_trip(self, key, cls):
        layer = make(cls, units=3, activation="relu", posterior_std_init=0.05,
                     kl_weight=0.25, seed=7, prior=priors.ScaleMixtureNormal(0.25, 1.5, 0.1))
        config = layer.get_config()
        json.dumps(keras.saving.serialize_keras_object(layer))  # JSON-able
        clone = cls.from_config(config)
        assert clone.get_config() == config
        assert clone.prior == layer.prior

    def test_initial_sigma(self, key, cls):
        layer = make(cls, posterior_std_init=0.02)
        layer.build((None,) + INPUTS[key[0]][0])
        np.testing.assert_allclose(ops.convert_to_numpy(layer.kernel_sigma), 0.02, rtol=1e-5)


def test_twelve_public_classes():
    names = {cls.__name__ for cls in layers.LAYER_CLASSES.values()}
    expected = {f"{a}{b}" for a in ("Conv1D", "Conv2D", "Conv3D", "Dense")
                for b in ("Reparameterization", "Flipout", "LocalReparameterization")}
    assert names == expected
    for cls in layers.LAYER_CLASSES.values():
        assert getattr(layers, cls.__name__) is cls
        assert issubclass(cls, layers.BayesianLayer)


# ---------------------------------------------------------------------- KL
def closed_form_kl(m, s, pm, ps):
    return np.log(ps / s) + (s**2 + (m - pm) ** 2) / (2 * ps**2) - 0.5


def test_normal_kl_closed_form_and_tfp_direction():
    rng = np.random.default_rng(0)
    loc = rng.normal(0, 0.5, 50).astype("float32")
    scale = rng.uniform(0.05, 2.0, 50).astype("float32")
    prior = priors.Normal(0.3, 0.7)
    ours = ops.convert_to_numpy(prior.kl(loc, scale, None))
    expected = closed_form_kl(loc.astype("float64"), scale.astype("float64"), 0.3, 0.7)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=1e-5)
    ref = tfd.kl_divergence(tfd.Normal(loc, scale), tfd.Normal(0.3, 0.7)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)
    reversed_ = tfd.kl_divergence(tfd.Normal(0.3, 0.7), tfd.Normal(loc, scale)).numpy()
    assert np.max(np.abs(ours - reversed_)) > 1e-2  # the test can tell the directions apart


def test_layer_kl_is_sum_of_posterior_vs_prior_and_scaled_by_kl_weight():
    layer = layers.DenseFlipout(3, prior=priors.Normal(0.0, 0.5), kl_weight=0.125,
                                posterior_std_init=0.1)
    x = rand((4, 6))
    layer(x)
    loc = np.asarray(layer.kernel_loc)
    sigma = ops.convert_to_numpy(layer.kernel_sigma)
    ref = tfd.kl_divergence(tfd.Normal(loc, sigma), tfd.Normal(0.0, 0.5)).numpy().sum()
    np.testing.assert_allclose(float(layer.kl_divergence()), ref, rtol=1e-5)
    np.testing.assert_allclose(float(layer.losses[0]), 0.125 * ref, rtol=1e-5)


def test_scale_mixture_monte_carlo_kl_is_unbiased():
    # E_q[log q(w) - log p(w)] estimated with 200k draws by TFP vs our single-sample
    # estimator averaged over 200k draws: both have standard error ~ std/sqrt(n) ~ 5e-3.
    prior = priors.ScaleMixtureNormal(0.5, 1.0, 0.1)
    n = 200_000
    rng = np.random.default_rng(1)
    w = (0.2 + 0.3 * rng.standard_normal(n)).astype("float32")
    ours = ops.convert_to_numpy(prior.kl(np.float32(0.2), np.float32(0.3), w))
    mixture = tfd.MixtureSameFamily(
        tfd.Categorical(probs=[0.5, 0.5]), tfd.Normal([0.0, 0.0], [1.0, 0.1]))
    ref = (tfd.Normal(0.2, 0.3).log_prob(w) - mixture.log_prob(w)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    se = ours.std() / np.sqrt(n)
    # quadrature of the exact expectation
    grid = np.linspace(0.2 - 8 * 0.3, 0.2 + 8 * 0.3, 20001)
    q = np.exp(-0.5 * ((grid - 0.2) / 0.3) ** 2) / (0.3 * np.sqrt(2 * np.pi))
    p = 0.5 * np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi) + 0.5 * np.exp(
        -0.5 * (grid / 0.1) ** 2) / (0.1 * np.sqrt(2 * np.pi))
    exact = np.trapezoid(q * (np.log(q) - np.log(p)), grid)
    assert abs(ours.mean() - exact) < 4 * se


def test_tfp_prior_analytic_and_monte_carlo():
    loc = np.array([0.1, -0.4], "float32")
    scale = np.array([0.2, 0.6], "float32")
    analytic = priors.get(tfd.Normal(0.0, 2.0))
    assert isinstance(analytic, priors.TFPPrior) and not analytic.needs_sample
    np.testing.assert_allclose(
        np.asarray(analytic.kl(loc, scale, None)), closed_form_kl(loc, scale, 0.0, 2.0), atol=1e-5)
    mc = priors.TFPPrior(tfd.StudentT(3.0, 0.0, 1.0))  # no analytic KL registered
    assert mc.needs_sample
    w = np.array([0.3, 0.1], "float32")
    ref = tfd.Normal(loc, scale).log_prob(w) - tfd.StudentT(3.0, 0.0, 1.0).log_prob(w)
    np.testing.assert_allclose(np.asarray(mc.kl(loc, scale, w)), ref.numpy(), atol=1e-6)
    clone = priors.TFPPrior.from_config(mc.get_config())
    assert clone.get_config() == mc.get_config()
    layer = layers.DenseReparameterization(2, prior=tfd.Laplace(0.0, 1.0))
    layer(rand((3, 4)))
    assert np.isfinite(float(layer.losses[0]))


def test_prior_configs_round_trip():
    for prior in (priors.Normal(0.5, 2.0), priors.ScaleMixtureNormal(0.3, 1.0, 0.01)):
        blob = keras.saving.serialize_keras_object(prior)
        assert keras.saving.deserialize_keras_object(blob) == prior


# ---------------------------------------------------------------- estimators
def draws_of(layer, x, n):
    """n output draws for the batch x: one tiled call where every example gets
    independent noise (Flipout, LRT), n calls where the batch shares a kernel."""
    if layer.estimator == "reparameterization":
        call = tf.function(layer.__call__)
        return np.stack([call(x).numpy() for _ in range(n)])
    tiled = np.concatenate([x] * n)
    out = ops.convert_to_numpy(layer(tiled))
    return out.reshape((n, len(x)) + out.shape[1:])


def mean_output(layer, x):
    loc, _ = layer.kernel_posterior()
    out = layer.linear(x, loc) + (0 if layer.bias is None else layer.bias)
    return ops.convert_to_numpy(out)


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
def test_estimators_share_the_mean(rank, estimator):
    cls = layers.layer_class(rank, estimator)
    layer = make(cls, units=3, posterior_std_init=0.3, seed=3)
    shape = INPUTS[rank][0]
    x = rand((2,) + shape, seed=5)
    n = 400 if estimator == "reparameterization" else 4000
    draws = draws_of(layer, x, n)
    target = mean_output(layer, x)
    # The average of n independent draws is within 5 standard errors of the mean
    # output (each element: |mean - target| <= 5 * std / sqrt(n); false alarm rate
    # per element ~6e-7, so the test is reliable over the few hundred elements).
    se = draws.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(draws.mean(axis=0) - target) <= 5 * se + 1e-6)


def test_local_reparameterization_dense_variance_is_analytic():
    layer = layers.DenseLocalReparameterization(4, posterior_std_init=0.5, seed=11)
    x = rand((3, 6), seed=2)
    n = 4000
    draws = draws_of(layer, x, n)
    _, sigma = layer.kernel_posterior()
    analytic = np.square(x) @ np.square(ops.convert_to_numpy(sigma))
    # sample variance of n normal draws has relative standard error sqrt(2/n) ~ 2.2%;
    # 5 of those is a 11% tolerance.
    np.testing.assert_allclose(draws.var(axis=0), analytic, rtol=5 * np.sqrt(2 / n))


def test_flipout_perturbs_each_example_reparameterization_shares_kernel():
    x = np.repeat(rand((1, 6)), 8, axis=0)
    flip = layers.DenseFlipout(5, posterior_std_init=0.5, seed=1)
    y = ops.convert_to_numpy(flip(x))
    assert np.min(np.std(y, axis=0)) > 1e-3  # rows differ
    rep = layers.DenseReparameterization(5, posterior_std_init=0.5, seed=1)
    y = ops.convert_to_numpy(rep(x))
    np.testing.assert_allclose(y, np.repeat(y[:1], 8, axis=0), atol=1e-6)
    assert not np.allclose(y, ops.convert_to_numpy(rep(x)))  # new kernel per call


def test_pruned_weight_kl_zero_and_no_nan_gradient():
    layer = layers.Conv2DLocalReparameterization(3, 3, posterior_std_init=0.1)
    x = np.zeros((2, 6, 6, 2), "float32")  # zero inputs: the LRT variance is exactly 0
    layer.build(x.shape)
    layer.kernel_mask.assign(np.zeros(layer.kernel_mask.shape, "float32"))
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y) + tf.add_n(layer.losses)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert float(layer.losses[0]) == 0.0
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    np.testing.assert_array_equal(grads[0].numpy(), 0.0)  # loc gets no gradient
    np.testing.assert_array_equal(grads[1].numpy(), 0.0)  # rho gets no gradient


def test_bayesian_bias():
    layer = layers.DenseFlipout(3, bayesian_bias=True, posterior_std_init=0.2)
    layer(rand((2, 4)))
    assert layer.bias is None and layer.bias_loc is not None
    assert len(layer.trainable_weights) == 4


# ------------------------------------------------------------ model-level API
def tiny_model(estimator="flipout", n=1000):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.layer_class(2, estimator)(8, 3, activation="relu", kl_weight=1 / n),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        layers.layer_class(0, estimator)(10, activation="softmax", kl_weight=1 / n),
    ])


def test_set_kl_weight_and_errors():
    model = tiny_model()
    tfp_bcnn.set_kl_weight(model, 0.5)
    assert all(float(layer.kl_weight) == 0.5 for layer in tfp_bcnn.bayesian_layers(model))
    assert tfp_bcnn.get_kl_weight(model) == 0.5
    with pytest.raises(ValueError, match="value=-1"):
        tfp_bcnn.set_kl_weight(model, -1)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no Bayesian layer"):
        tfp_bcnn.set_kl_weight(plain, 0.1)


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target


@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
def test_fit_lowers_loss_and_logs_kl(estimator):
    x, y = digits()
    model = tiny_model(estimator, n=len(x))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy", tfp_bcnn.KLDivergence(model)])
    hist = model.fit(x, y, epochs=3, batch_size=128, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert "kl" in hist and hist["kl"][0] > 0
    # kl is the KL term alone: loss - kl is the NLL, well below log(10) after training
    assert 0 < hist["loss"][-1] - hist["kl"][-1] < np.log(10)
    assert hist["accuracy"][-1] > 0.6


def test_keras_round_trip(tmp_path):
    x, y = digits()
    model = tiny_model("flipout")
    for layer in tfp_bcnn.bayesian_layers(model):  # a visible posterior std
        layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, -1.0, "float32"))
    model.layers[0].kernel_mask.assign(
        (np.random.default_rng(0).random(model.layers[0].kernel_mask.shape) > 0.5)
        .astype("float32"))
    tfp_bcnn.set_kl_weight(model, 0.01)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [w.name for w in model.weights] == [w.name for w in loaded.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out1 = ops.convert_to_numpy(loaded(x[:4]))
    out2 = ops.convert_to_numpy(loaded(x[:4]))
    assert not np.allclose(out1, out2)  # still stochastic
    assert len(loaded.losses) == 2
    # the Normal prior's KL is analytic, so both models add exactly the same loss
    model(x[:4])
    np.testing.assert_allclose(float(sum(loaded.losses)), float(sum(model.losses)), rtol=1e-6)


# --------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"filters": 0}, "filters=0"),
        ({"filters": -2}, "filters=-2"),
        ({"kernel_size": 0}, r"kernel_size=0"),
        ({"kernel_size": (3, -1)}, r"kernel_size=\(3, -1\)"),
        ({"posterior_std_init": 0.0}, "posterior_std_init=0.0"),
        ({"posterior_std_init": -1e-3}, "posterior_std_init=-0.001"),
        ({"kl_weight": -0.5}, "kl_weight=-0.5"),
        ({"prior": "cauchy"}, "prior='cauchy'"),
        ({"prior": 3.0}, "prior=3.0"),
        ({"padding": "full"}, "padding='full'"),
    ],
)
def test_bad_conv_arguments(kwargs, match):
    args = {"filters": 4, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        layers.Conv2DFlipout(**args)


def test_bad_dense_and_estimator():
    with pytest.raises(ValueError, match="units=0"):
        layers.DenseFlipout(0)
    with pytest.raises(ValueError, match="estimator='mc_dropout'"):
        layers.layer_class(2, "mc_dropout")
    with pytest.raises(ValueError, match="estimator='bogus'"):
        layers.BayesianLayer(rank=0, estimator="bogus", units=3)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match=r"input_shape=\(2, 8, 8\)"):
        layers.Conv2DFlipout(4, 3)(np.zeros((2, 8, 8), "float32"))
    with pytest.raises(ValueError, match=r"input_shape=\(4,\)"):
        layers.DenseFlipout(4)(np.zeros((4,), "float32"))


JAX_SCRIPT = register("layers_train", textwrap.dedent(
    """
    import numpy as np, keras
    assert keras.backend.backend() == "jax"
    import tfp_bcnn
    from tfp_bcnn import layers
    from sklearn.datasets import load_digits
    d = load_digits(); x = (d.images / 16.0).astype("float32")[..., None][:512]
    y = d.target[:512]
    keras.utils.set_random_seed(0)
    losses = {}
    for est in layers.ESTIMATORS:
        m = keras.Sequential([keras.Input((8, 8, 1)),
            layers.layer_class(2, est)(8, 3, activation="relu", kl_weight=1 / len(x)),
            keras.layers.Flatten(),
            layers.layer_class(0, est)(10, activation="softmax", kl_weight=1 / len(x))])
        m.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        h = m.fit(x, y, epochs=3, batch_size=128, verbose=0).history["loss"]
        a, b = np.asarray(m(x[:3])), np.asarray(m(x[:3]))
        losses[est] = [h[0], h[-1], float(np.abs(a - b).max()), len(m.losses)]
    report(losses)
    """
))


@pytest.mark.slow
def test_jax_backend_subprocess():
    pytest.importorskip("jax")
    for first, last, spread, n_losses in result(JAX_SCRIPT).values():
        assert last < first
        assert spread > 0  # stochastic on JAX too
        assert n_losses == 2


@pytest.mark.parametrize("rank", [0, 2])
def test_flipout_bayesian_bias_is_drawn_per_example(rank):
    """Rows of a tiled batch must be independent samples (predict tiles Flipout)."""
    cls = layers.layer_class(rank, "flipout")
    layer = make(cls, units=3, bayesian_bias=True, seed=0)
    shape = INPUTS[rank][0]
    layer.build((None,) + shape)
    layer.kernel_rho.assign(np.full(layer.kernel_rho.shape, -30.0, "float32"))  # sigma ~ 0
    layer.bias_rho.assign(np.full(layer.bias_rho.shape, 0.5, "float32"))  # sigma ~ 0.97
    x = np.repeat(rand((1,) + shape), 64, axis=0)
    y = ops.convert_to_numpy(layer(x)).reshape(64, -1, 3)
    # the same input: rows differ only through their bias draws; within a row
    # (conv) every position shares the draw, so the offset from the mean is constant
    offsets = y - ops.convert_to_numpy(layer.linear(x, layer.kernel_loc)).reshape(64, -1, 3)
    np.testing.assert_allclose(offsets, np.broadcast_to(offsets[:, :1], offsets.shape), atol=1e-4)
    # 64 draws of N(0, 0.97^2): the sample std is within 0.75..1.2 with
    # probability > 0.999 (chi-square with 63 d.o.f.)
    std = offsets[:, 0].std(axis=0)
    assert np.all((std > 0.75) & (std < 1.2)), std
