"""Tests of tfp_bcnn.uncertainty: the decomposition and Monte Carlo predict()."""

import gc
import importlib.util
import textwrap
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfp_bcnn import layers, uncertainty
from tfp_bcnn.uncertainty import Prediction, RegressionPrediction, decompose, predict

from _backend import register, result

LOG2 = np.log(2.0)


def _classifier(estimator="flipout", std=0.1, logits=False):
    conv = layers.layer_class(2, estimator)
    dense = layers.layer_class(0, estimator)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            conv(4, 3, activation="relu", posterior_std_init=std),
            keras.layers.Flatten(),
            dense(10, activation=None if logits else "softmax", posterior_std_init=std),
        ]
    )


def _deterministic():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)


def _all_samples_distinct(samples):
    """Every pair of the S samples of every example differs somewhere."""
    s = samples.shape[0]
    for i in range(s):
        for j in range(i + 1, s):
            if np.any(np.all(samples[i] == samples[j], axis=-1)):
                return False
    return True


# ------------------------------------------------------------ decompose()
def test_decompose_two_opposite_confident_samples():
    p = decompose(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
    np.testing.assert_allclose(p.mean, [[0.5, 0.5]])
    np.testing.assert_allclose(p.std, [[0.5, 0.5]])
    np.testing.assert_allclose(p.predictive_entropy, [LOG2])
    np.testing.assert_allclose(p.aleatoric, [0.0], atol=1e-15)
    np.testing.assert_allclose(p.epistemic, [LOG2])
    np.testing.assert_allclose(p.aleatoric_variance, [[0.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(p.epistemic_variance, [[0.25, 0.25]])
    assert p.samples is None


def test_decompose_identical_samples_have_no_epistemic_uncertainty():
    row = np.array([0.2, 0.3, 0.5])
    p = decompose(np.tile(row, (4, 2, 1)), return_samples=True)
    h = -np.sum(row * np.log(row))
    np.testing.assert_allclose(p.predictive_entropy, [h, h])
    np.testing.assert_allclose(p.aleatoric, [h, h])
    np.testing.assert_allclose(p.epistemic, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.epistemic_variance, 0.0, atol=1e-15)
    np.testing.assert_allclose(p.aleatoric_variance, np.tile(row * (1 - row), (2, 1)))
    assert p.samples.shape == (4, 2, 3)


def test_decompose_identities_against_scipy_and_full_covariance():
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(np.full(5, 0.7), size=(6, 20))  # (S, N, C)
    p = decompose(samples)
    pbar = samples.mean(axis=0)
    # Entropies against an independent implementation (scipy, nats).
    np.testing.assert_allclose(p.predictive_entropy, stats.entropy(pbar, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(
        p.aleatoric, stats.entropy(samples, axis=-1).mean(axis=0), rtol=1e-12
    )
    np.testing.assert_allclose(p.predictive_entropy, p.aleatoric + p.epistemic, atol=1e-12)
    for field in (p.predictive_entropy, p.aleatoric, p.epistemic):
        assert field.shape == (20,) and np.all(field >= 0)
    assert np.all(p.epistemic > 0)  # distinct samples: strictly positive MI
    # Kwon et al.: full matrices, then their diagonals.
    alea = np.mean(
        np.einsum("snc,cd->sncd", samples, np.eye(5))
        - np.einsum("snc,snd->sncd", samples, samples),
        axis=0,
    )
    d = samples - pbar
    epi = np.mean(np.einsum("snc,snd->sncd", d, d), axis=0)
    total = np.einsum("nc,cd->ncd", pbar, np.eye(5)) - np.einsum("nc,nd->ncd", pbar, pbar)
    np.testing.assert_allclose(alea + epi, total, atol=1e-12)
    np.testing.assert_allclose(
        p.aleatoric_variance, np.diagonal(alea, axis1=1, axis2=2), atol=1e-15
    )
    np.testing.assert_allclose(p.epistemic_variance, np.diagonal(epi, axis1=1, axis2=2), atol=1e-15)
    np.testing.assert_allclose(
        p.aleatoric_variance + p.epistemic_variance, pbar * (1 - pbar), atol=1e-12
    )
    np.testing.assert_allclose(p.std**2, p.epistemic_variance, atol=1e-15)
    np.testing.assert_allclose(p.std, samples.std(axis=0, ddof=0), atol=1e-15)


@pytest.mark.parametrize(
    "samples, message",
    [
        (np.full((2, 3), 0.5), "samples.shape=(2, 3)"),
        (np.zeros((2, 0, 3)), "samples.shape=(2, 0, 3)"),
        (np.array([[[2.0, -1.0]]]), "min=-1"),
        (np.array([[[0.5, 0.6]]]), "sums in [1.1"),
        (np.array([[[np.nan, 1.0]]]), "NaN"),
    ],
)
def test_decompose_rejects_non_probabilities(samples, message):
    with pytest.raises(ValueError, match="samples") as info:
        decompose(samples)
    assert message in str(info.value)


# ----------------------------------------------------------------- predict()
@pytest.mark.parametrize("estimator", ["flipout", "local_reparameterization", "reparameterization"])
@pytest.mark.parametrize("return_samples", [False, True])
def test_predict_shapes_numpy(estimator, return_samples):
    p = predict(_classifier(estimator), _images(5), num_samples=3, return_samples=return_samples)
    assert isinstance(p, Prediction)
    for name in ("mean", "std", "aleatoric_variance", "epistemic_variance"):
        assert getattr(p, name).shape == (5, 10)
    for name in ("predictive_entropy", "aleatoric", "epistemic"):
        assert getattr(p, name).shape == (5,)
    assert (p.samples is not None) == return_samples
    if return_samples:
        assert p.samples.shape == (3, 5, 10)
    np.testing.assert_allclose(p.mean.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.predictive_entropy, p.aleatoric + p.epistemic, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, y: tf.data.Dataset.from_tensor_slices(x).batch(3),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(y)))).batch(2),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)),  # unbatched
    ],
    ids=["x", "x_y", "x_y_w", "unbatched"],
)
def test_predict_tf_data_matches_numpy(make):
    model = _deterministic()
    x, y = _images(7), np.arange(7)
    expected = predict(model, x, num_samples=2, batch_size=3)
    p = predict(model, make(x, y), num_samples=2, batch_size=3, return_samples=True)
    assert p.samples.shape == (2, 7, 10)
    np.testing.assert_allclose(p.mean, expected.mean, atol=1e-6)


@pytest.mark.parametrize("n, batch_size", [(5, 256), (7, 3), (6, 3), (1, 1)])
def test_predict_batching_keeps_order(n, batch_size):
    # A deterministic model: predict() must give model(x), row for row, whatever
    # the batching and the padding of the last batch.
    model = _deterministic()
    x = _images(n)
    p = predict(model, x, num_samples=2, batch_size=batch_size)
    np.testing.assert_allclose(p.mean, keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    assert p.epistemic.shape == (n,) and np.all(p.epistemic < 1e-6)


def test_predict_deterministic_model_has_no_epistemic_uncertainty():
    p = predict(_deterministic(), _images(6), num_samples=8)
    assert np.all(p.epistemic < 1e-6)
    np.testing.assert_allclose(p.epistemic_variance, 0.0, atol=1e-12)
    np.testing.assert_allclose(p.predictive_entropy, p.aleatoric, atol=1e-6)


def test_predict_loop_path_keeps_order():
    # Reparameterization model with a tiny posterior std: every kernel draw is
    # within ~1e-6 of the mean, so the loop path must reproduce model(x)
    # (a shuffled batch or misplaced padding would be off by O(0.01)).
    model = _classifier("reparameterization", std=1e-6)
    x = _images(7)
    p = predict(model, x, num_samples=3, batch_size=3)
    np.testing.assert_allclose(p.mean, keras.ops.convert_to_numpy(model(x)), atol=1e-4)


def test_can_tile_decides_by_estimator():
    assert uncertainty._can_tile(_deterministic())
    assert uncertainty._can_tile(_classifier("flipout"))
    assert uncertainty._can_tile(_classifier("local_reparameterization"))
    assert not uncertainty._can_tile(_classifier("reparameterization"))
    mixed = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(2, 3),
            keras.layers.Flatten(),
            layers.DenseReparameterization(10, activation="softmax"),
        ]
    )
    assert not uncertainty._can_tile(mixed)
    nested = keras.Sequential([keras.Input((8, 8, 1)), _classifier("reparameterization")])
    assert not uncertainty._can_tile(nested)


@pytest.mark.parametrize("estimator", ["flipout", "local_reparameterization", "reparameterization"])
def test_samples_differ_across_draws(estimator):
    # For reparameterization this also shows that the loop path is taken:
    # tiling would repeat ONE kernel, so all S samples of an example would be equal.
    p = predict(_classifier(estimator), _images(4), num_samples=6, return_samples=True)
    assert _all_samples_distinct(p.samples)
    again = predict(_classifier(estimator), _images(4), num_samples=6, return_samples=True)
    assert not np.array_equal(p.samples, again.samples)


def test_two_calls_draw_new_samples_and_model_still_trains():
    model = _classifier("flipout")
    x = _images(4)
    a = predict(model, x, num_samples=4, return_samples=True).samples
    b = predict(model, x, num_samples=4, return_samples=True).samples
    assert not np.array_equal(a, b)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_compiled_call_cache_does_not_keep_the_model_alive():
    model = _classifier("flipout")
    predict(model, _images(2), num_samples=2)
    assert model in uncertainty._FORWARD_CACHE
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("estimator", ["flipout", "local_reparameterization"])
def test_tiled_and_looped_paths_agree_in_distribution(estimator):
    # Both paths draw from the same marginal distribution; the per-example noise
    # makes tiling valid. But a Flipout call draws ONE eps per layer, shared by
    # the whole (tiled) batch and decorrelated only by random signs, so the
    # tiled samples of one call are not independent. The standard error of the
    # tiled mean is therefore estimated by batch means: R = 30 calls of T = 10
    # tiles, SE_t = std(call means) / sqrt(R); the looped samples (one kernel
    # per call) are independent, SE_l = std / sqrt(S), S = 300. Each of the
    # 4 x 10 mean probabilities must agree within 5 * sqrt(SE_t^2 + SE_l^2):
    # a false alarm has probability ~2e-5 per entry (t with 29 dof), ~1e-3 in
    # all; the seeds are fixed, so the outcome is reproducible.
    model = _classifier(estimator, std=0.3)
    x = _images(4)
    r, t, s = 30, 10, 300
    args = {
        "batch_size": 256,
        "return_samples": True,
        "from_logits": False,
        "verbose": 0,
    }
    call_means = np.stack(
        [
            uncertainty._monte_carlo(model, x, t, tile=True, **args).samples.mean(axis=0)
            for _ in range(r)
        ]
    )
    looped = uncertainty._monte_carlo(model, x, s, tile=False, **args).samples
    assert looped.shape == (s, 4, 10)
    se = np.sqrt(call_means.var(axis=0, ddof=1) / r + looped.var(axis=0, ddof=1) / s)
    assert se.max() > 1e-3  # the noise is not negligible, so the test has power
    diff = np.abs(call_means.mean(axis=0) - looped.mean(axis=0))
    np.testing.assert_array_less(diff, 5 * se)


def test_from_logits_applies_softmax():
    model = _classifier("flipout", logits=True)
    x = _images(3)
    with pytest.raises(ValueError, match="from_logits=True"):
        predict(model, x, num_samples=2)
    p = predict(model, x, num_samples=4, return_samples=True, from_logits=True)
    np.testing.assert_allclose(p.samples.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.mean, p.samples.mean(axis=0), atol=1e-6)


def test_regression_gaussian_head():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            layers.DenseFlipout(16, activation="relu", posterior_std_init=0.1),
            layers.GaussianHead(2),
        ]
    )
    x = np.random.default_rng(0).normal(size=(9, 4)).astype("float32")
    p = predict(model, x, num_samples=5, batch_size=4, return_samples=True)
    assert isinstance(p, RegressionPrediction)
    assert p.samples.shape == (5, 9, 4)
    mu, sigma = p.samples[..., :2].astype(float), p.samples[..., 2:].astype(float)
    np.testing.assert_allclose(p.mean, mu.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.aleatoric_variance, (sigma**2).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.epistemic_variance, mu.var(axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(p.variance, p.aleatoric_variance + p.epistemic_variance)
    np.testing.assert_allclose(p.std, np.sqrt(p.variance))
    assert np.all(p.epistemic_variance > 0)
    assert predict(model, x, num_samples=2).samples is None
    with pytest.raises(ValueError, match="from_logits=True"):
        predict(model, x, from_logits=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples=0"),
        ({"num_samples": -3}, "num_samples=-3"),
        ({"num_samples": 2.5}, "num_samples=2.5"),
        ({"num_samples": True}, "num_samples=True"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": "8"}, "batch_size='8'"),
        ({"x": np.zeros((0, 9, 9, 1))}, "x.shape=(0, 9, 9, 1)"),  # empty is fine, not this
        ({"x": np.zeros((8, 8, 1))}, "x.shape=(8, 8, 1)"),
        ({"x": np.zeros((2, 9, 9, 1))}, "x.shape=(2, 9, 9, 1)"),
    ],
)
def test_predict_rejects_bad_arguments(kwargs, message):
    args = {"x": _images(2), "num_samples": 2, "batch_size": 4}
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        predict(_classifier(), **args)
    assert message in str(info.value)


def test_verbose_shows_progress(capsys):
    predict(
        _classifier("reparameterization"),
        _images(5),
        num_samples=2,
        batch_size=2,
        verbose=1,
    )
    assert "6/6" in capsys.readouterr().out  # 3 batches x 2 kernel draws


def test_repr_shows_shapes():
    text = repr(decompose(np.full((2, 3, 4), 0.25)))
    assert "mean=<array (3, 4)>" in text and "samples=None" in text


JAX_PREDICT = register("jax_predict", textwrap.dedent(
        """
        import numpy as np, keras
        from tfp_bcnn import layers
        from tfp_bcnn.uncertainty import predict
        assert keras.backend.backend() == "jax"
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(4, 3, activation="relu", posterior_std_init=0.1),
            keras.layers.Flatten(),
            layers.DenseFlipout(10, activation="softmax", posterior_std_init=0.1),
        ])
        x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
        a = predict(model, x, num_samples=4, batch_size=3, return_samples=True)
        b = predict(model, x, num_samples=4, batch_size=3, return_samples=True)
        assert a.mean.shape == (5, 10) and a.samples.shape == (4, 5, 10), a
        assert np.all(np.isfinite(a.mean)) and np.allclose(a.mean.sum(-1), 1, atol=1e-5)
        assert np.all(np.ptp(a.samples, axis=0).max(-1) > 0)   # samples differ across S
        assert not np.array_equal(a.samples, b.samples)         # the seed state advanced
        report("JAX-OK")
        """
))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_predict_on_jax_backend():
    assert result(JAX_PREDICT) == "JAX-OK"
