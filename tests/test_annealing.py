"""KLAnnealing: schedule values, effect on the logged kl, serialization."""

import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import tfp_bcnn
from tfp_bcnn import layers
from tfp_bcnn._annealing import KLAnnealing, blundell_weight, linear_beta

from _backend import register, result

N = 40  # training examples of the tiny fits
BATCH = 10  # -> M = 4 steps per epoch


# --------------------------------------------------------------------------
# Schedule functions
# --------------------------------------------------------------------------


def test_linear_beta_values():
    assert [linear_beta(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert linear_beta(0, 1, beta=0.5) == 0.5
    assert linear_beta(1, 5, beta=2.0) == pytest.approx(0.8)


@pytest.mark.parametrize("m", [1, 2, 5, 17])
def test_blundell_weight_matches_eq9(m):
    # pi_i = 2^(M - i) / (2^M - 1), i = 1..M, against exact integer arithmetic.
    pis = [blundell_weight(b, m) for b in range(m)]
    expected = [2 ** (m - i) / (2**m - 1) for i in range(1, m + 1)]
    np.testing.assert_allclose(pis, expected, rtol=1e-12)
    assert sum(pis) == pytest.approx(1.0, rel=1e-12)
    assert all(a == pytest.approx(2 * b) for a, b in zip(pis, pis[1:]))


def test_blundell_weight_large_m_does_not_overflow():
    pis = [blundell_weight(b, 5000) for b in range(5000)]
    assert pis[0] == pytest.approx(0.5) and pis[-1] == 0.0
    assert sum(pis) == pytest.approx(1.0)


def test_beta_at_per_schedule():
    assert KLAnnealing("constant", beta=0.3).beta_at(7) == pytest.approx(0.3)
    lin = KLAnnealing("linear", warmup_epochs=4, beta=2.0)
    assert [lin.beta_at(e) for e in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    bl = KLAnnealing("blundell")
    # beta * M * pi_i: the per-example weight pi_i / B with B = N / M.
    assert bl.beta_at(0, batch=0, steps=4) == pytest.approx(4 * 8 / 15)
    assert bl.beta_at(3, batch=3, steps=4) == pytest.approx(4 * 1 / 15)
    assert np.mean([bl.beta_at(0, b, 4) for b in range(4)]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"batch=None"):
        bl.beta_at(0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"schedule": "cosine"}, r"schedule='cosine'"),
        ({"warmup_epochs": 0}, r"warmup_epochs=0"),
        ({"warmup_epochs": 2.5}, r"warmup_epochs=2.5"),
        ({"beta": -1.0}, r"beta=-1.0"),
        ({"beta": float("nan")}, r"beta=nan"),
        ({"num_train_examples": 0}, r"num_train_examples=0"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KLAnnealing(**kwargs)


def test_config_round_trip():
    cb = KLAnnealing("blundell", warmup_epochs=3, beta=0.5, num_train_examples=100)
    config = cb.get_config()
    assert config == {
        "schedule": "blundell", "warmup_epochs": 3, "beta": 0.5, "num_train_examples": 100
    }
    assert KLAnnealing.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert type(restored) is KLAnnealing and restored.get_config() == config


# --------------------------------------------------------------------------
# Effect on training: the logged kl (sum kl_weight * KL) follows the schedule
# --------------------------------------------------------------------------


def tiny_model(kl_weight=1 / N):
    """Two Bayesian layers, trained with learning rate 0 so the KL stays fixed.

    With a Normal prior the KL is in closed form, so the logged kl of an epoch
    is exactly ``factor * base_weight * KL`` (float32 rounding only).
    """
    model = keras.Sequential([
        keras.Input((4,)),
        layers.DenseFlipout(5, activation="relu", kl_weight=kl_weight, seed=1),
        layers.DenseReparameterization(3, activation="softmax", kl_weight=kl_weight, seed=2),
    ])
    model.compile(
        keras.optimizers.SGD(0.0),
        "sparse_categorical_crossentropy",
        metrics=[tfp_bcnn.KLDivergence(model)],
    )
    return model


@pytest.fixture(scope="module")
def compiled_tiny():
    """One `tiny_model` for the fast tests: its train step is traced once. The
    learning rate is 0, so only the kl_weight changes, and `tiny` resets it."""
    return tiny_model()


@pytest.fixture
def tiny(compiled_tiny):
    tfp_bcnn.set_kl_weight(compiled_tiny, 1 / N)
    return compiled_tiny


def data():
    rng = np.random.default_rng(0)
    return rng.random((N, 4)).astype("float32"), np.arange(N) % 3


def raw_kl(model):
    return float(ops.convert_to_numpy(tfp_bcnn.kl_divergence(model, scaled=False)))


@pytest.mark.slow
def test_linear_warmup_scales_logged_kl():
    model = tiny_model()
    x, y = data()
    kl = raw_kl(model)
    history = model.fit(
        x, y, batch_size=BATCH, epochs=4, verbose=0, callbacks=[KLAnnealing("linear", 3)]
    )
    logged = np.array(history.history["kl"])
    np.testing.assert_allclose(logged, np.array([1, 2, 3, 3]) / 3 * kl / N, rtol=1e-5)
    # Epoch 1's kl is 1/warmup of the later value for the same weights.
    assert logged[0] / logged[-1] == pytest.approx(1 / 3, rel=1e-5)
    # Nothing restored at the end: the final weight stays.
    assert tfp_bcnn.get_kl_weight(model) == pytest.approx(1 / N)


def test_constant_beta_and_base_from_num_train_examples(tiny):
    model = tiny
    tfp_bcnn.set_kl_weight(model, 1.0)  # raw KL in the layers; N given to the callback
    x, y = data()
    kl = raw_kl(model)
    cb = KLAnnealing("constant", beta=0.5, num_train_examples=N)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb])
    np.testing.assert_allclose(history.history["kl"], [0.5 * kl / N] * 2, rtol=1e-5)
    assert tfp_bcnn.get_kl_weight(model) == pytest.approx(0.5 / N)


class RecordWeight(keras.callbacks.Callback):
    """Reads the kl_weight seen by every training step (runs after KLAnnealing)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        self.weights.append(tfp_bcnn.get_kl_weight(self.model))


def test_blundell_per_minibatch_weights(tiny):
    model = tiny
    x, y = data()
    kl = raw_kl(model)
    record = RecordWeight()
    history = model.fit(
        x, y, batch_size=BATCH, epochs=2, verbose=0,
        callbacks=[KLAnnealing("blundell"), record],
    )
    m = N // BATCH
    expected = [m * blundell_weight(b, m) / N for b in range(m)] * 2
    np.testing.assert_allclose(record.weights, expected, rtol=1e-6)
    # The pi_i sum to 1, so the epoch mean of the logged kl is the ELBO's kl / N.
    np.testing.assert_allclose(history.history["kl"], [kl / N] * 2, rtol=1e-5)
    # The last minibatch's weight is left in place.
    assert tfp_bcnn.get_kl_weight(model) == pytest.approx(expected[-1], rel=1e-6)


def test_second_fit_reuses_base_weight(tiny):
    model = tiny
    x, y = data()
    kl = raw_kl(model)
    cb = KLAnnealing("linear", warmup_epochs=4)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[cb])
    assert tfp_bcnn.get_kl_weight(model) == pytest.approx(0.25 / N)
    # Continuing at epoch 1: the ramp goes on from the recorded base 1/N.
    history = model.fit(
        x, y, batch_size=BATCH, epochs=3, initial_epoch=1, verbose=0, callbacks=[cb]
    )
    np.testing.assert_allclose(history.history["kl"], [0.5 * kl / N, 0.75 * kl / N], rtol=1e-5)


def test_model_without_bayesian_layers_raises():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = data()
    with pytest.raises(ValueError, match=r"Bayesian layers"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[KLAnnealing()])


JAX_SCRIPT = register("annealing_schedules", textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    import keras, numpy as np
    import tfp_bcnn
    from tfp_bcnn import layers
    from tfp_bcnn._annealing import KLAnnealing

    N, B = 40, 10
    model = keras.Sequential([keras.Input((4,)),
                              layers.DenseFlipout(3, kl_weight=1 / N, seed=1)])
    # Zero data loss: the loss of a step is exactly sum kl_weight * KL.
    model.compile(keras.optimizers.SGD(0.0), lambda y, p: keras.ops.mean(p) * 0.0)
    kl = float(tfp_bcnn.kl_divergence(model, scaled=False))
    x = np.random.default_rng(0).random((N, 4)).astype("float32")
    out = {"kl": kl}
    for schedule in ("linear", "blundell"):
        tfp_bcnn.set_kl_weight(model, 1 / N)
        seen = []
        class Log(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                seen.append(float(logs["loss"]))  # running mean over the epoch
        model.fit(x, x[:, :3], batch_size=B, epochs=2, verbose=0, shuffle=False,
                  callbacks=[KLAnnealing(schedule, warmup_epochs=2), Log()])
        out[schedule] = seen
    report(out)
    """
))


@pytest.mark.slow
def test_schedules_reach_the_jax_training_loop():
    """On JAX the loop holds the state inside an epoch; per-batch writes must still land."""
    pytest.importorskip("jax")
    out = result(JAX_SCRIPT)
    m = N // BATCH

    def running_means(weights):
        per_epoch = np.reshape(weights, (-1, m))
        return (np.cumsum(per_epoch, axis=1) / np.arange(1, m + 1)).ravel() * out["kl"]

    linear = [0.5 / N] * m + [1.0 / N] * m
    np.testing.assert_allclose(out["linear"], running_means(linear), rtol=1e-5)
    blundell = [m * blundell_weight(b, m) / N for b in range(m)] * 2
    np.testing.assert_allclose(out["blundell"], running_means(blundell), rtol=1e-5)
