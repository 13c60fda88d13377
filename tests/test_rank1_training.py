"""The training recipe of rank-1 mixture models: the batch tiled over the components.

* `layers.TileComponents` tiles a training batch K times (copy ``k`` of every
  example goes through component ``k``) and is the identity at inference;
* one SGD step on ONE example moves the factors of every component (without
  the tiling only component 0's: the check can fail);
* the KL is added once per layer call, whatever the batch size;
* `models.MixtureLoss` is the mean over the K copies of the per-example loss
  (NumPy reference), `models.MixtureMetric` scores the mixture's mean;
* a rank-1 LeNet-5 built and compiled by the library trains with plain
  ``fit``, evaluates, round-trips through ``.keras`` and predicts;
* a rank-1 model of the library (`models.Rank1Sequential` /
  `Rank1Functional`) compiled with a PLAIN loss trains the same objective as
  with `MixtureLoss` (it wraps the loss and metrics), and a bad loss is named;
* the builders' ``rank1_options`` reach the layers and are checked.
"""

import keras
import numpy as np
import pytest

import tfp_bcnn
from tfp_bcnn import layers, models

RHO_ZERO = -40.0  # sigma ~ 1e-8: the factor noise switched off
K = 4


def _dense_model(tile=True, k=K, cls=keras.Sequential):
    body = [layers.Rank1Dense(3, activation="softmax", num_components=k, seed=0,
                              random_sign_init=0.5, kl_weight=0.0)]
    head = [keras.Input((5,))] + ([layers.TileComponents(k)] if tile else [])
    return cls(head + body)


def _silence(model):
    for layer in model.layers:
        for name in ("in_factor_rho", "out_factor_rho"):
            if hasattr(layer, name):
                v = getattr(layer, name)
                v.assign(np.full(v.shape, RHO_ZERO, "float32"))


def test_tile_components_sends_every_example_through_every_component():
    model = _dense_model()
    _silence(model)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    train = keras.ops.convert_to_numpy(model(x, training=True))
    assert train.shape == (K * 3, 3)
    dense = model.layers[-1]
    for k in range(K):  # rows k*B .. k*B + B - 1: component k on every example
        alone = keras.ops.convert_to_numpy(dense(np.tile(x, (K, 1)))[k * 3:(k + 1) * 3])
        np.testing.assert_allclose(train[k * 3:(k + 1) * 3], alone, atol=1e-6)
    assert np.abs(train[:3] - train[3:6]).max() > 1e-3  # the components differ
    infer = keras.ops.convert_to_numpy(model(x, training=False))
    assert infer.shape == (3, 3)  # identity at inference


@pytest.mark.parametrize("tile", [True, False])
def test_one_example_trains_every_component_only_when_tiled(tile):
    keras.utils.set_random_seed(0)
    model = _dense_model(tile)
    model.compile(keras.optimizers.SGD(0.5), models.MixtureLoss())
    before = keras.ops.convert_to_numpy(model.layers[-1].in_factor_loc).copy()
    x = np.random.default_rng(1).normal(size=(1, 5)).astype("float32")
    model.fit(x, np.array([1]), epochs=1, batch_size=1, verbose=0)
    moved = np.abs(keras.ops.convert_to_numpy(model.layers[-1].in_factor_loc) - before)
    moved = moved.max(axis=1) > 1e-6
    # Untiled, the single row belongs to component 0 only (block mapping).
    assert moved.tolist() == ([True] * K if tile else [True] + [False] * (K - 1))


def test_kl_counted_once_whatever_the_tiling():
    model = _dense_model()
    dense = model.layers[-1]
    dense.kl_weight.assign(0.25)
    x = np.ones((2, 5), "float32")
    model(x, training=True)
    tiled = float(keras.ops.convert_to_numpy(sum(model.losses)))
    model(np.ones((8, 5), "float32"), training=False)
    plain = float(keras.ops.convert_to_numpy(sum(model.losses)))
    expected = 0.25 * float(keras.ops.convert_to_numpy(dense.kl_divergence()))
    assert tiled == pytest.approx(expected, rel=1e-6) and plain == pytest.approx(expected,
                                                                                rel=1e-6)


def test_mixture_loss_and_metric_against_numpy():
    rng = np.random.default_rng(0)
    b, c = 5, 4
    probs = rng.dirichlet(np.ones(c), size=K * b).astype("float32")
    y = rng.integers(0, c, size=b)
    weights = rng.random(b).astype("float32")
    per_copy = -np.log(probs[np.arange(K * b), np.tile(y, K)]).reshape(K, b)
    loss = models.MixtureLoss()
    got = float(keras.ops.convert_to_numpy(loss(y, probs, sample_weight=weights)))
    # sum_over_batch_size: the weighted per-example means, divided by B.
    np.testing.assert_allclose(got, np.sum(weights * per_copy.mean(0)) / b, rtol=1e-5)
    # K = 1 (evaluation, nothing tiled): the wrapped loss itself.
    plain = keras.losses.SparseCategoricalCrossentropy()(y, probs[:b])
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss(y, probs[:b]))),
                               float(keras.ops.convert_to_numpy(plain)), rtol=1e-6)
    metric = models.MixtureMetric("accuracy")
    metric.update_state(y, probs)
    mean = probs.reshape(K, b, c).mean(0)
    assert metric.name == "accuracy"
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(metric.result())),
                               np.mean(mean.argmax(1) == y), rtol=1e-6)
    metric.reset_state()
    assert float(keras.ops.convert_to_numpy(metric.result())) == 0.0
    for obj in (loss, metric, layers.TileComponents(3)):
        again = type(obj).from_config(obj.get_config())
        assert again.get_config() == obj.get_config()


def test_plain_compile_of_a_rank1_model_trains_the_mixture_objective():
    # Same start, noise off, one SGD epoch: a plain loss name on Rank1Sequential
    # must give exactly the MixtureLoss run (before the fix: a Keras shape error,
    # K * B predictions for B labels).
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    y = np.arange(8) % 3
    runs = []
    for plain in (True, False):
        keras.utils.set_random_seed(0)
        model = _dense_model(cls=models.Rank1Sequential)
        _silence(model)
        if plain:
            model.compile(keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
        else:
            model.compile(keras.optimizers.SGD(0.1), models.MixtureLoss(),
                          metrics=[models.MixtureMetric("accuracy")])
        hist = model.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
        runs.append((hist.history, [keras.ops.convert_to_numpy(v) for v in model.weights]))
    assert isinstance(model.loss, models.MixtureLoss)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(runs[0][0][key], runs[1][0][key], rtol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="Received: loss='nope'"):
        _dense_model(cls=models.Rank1Sequential).compile("sgd", loss="nope")


def test_mixture_wrappers_keep_structures_and_wrapped_objects():
    from tfp_bcnn._mixture_fit import mixture_loss, mixture_metrics

    loss = models.MixtureLoss()
    assert mixture_loss(loss) is loss and mixture_loss(None) is None
    wrapped = mixture_loss({"a": "mse", "b": loss})
    assert isinstance(wrapped["a"], models.MixtureLoss) and wrapped["b"] is loss
    kl = tfp_bcnn.KLDivergence(_dense_model())
    got = mixture_metrics(["accuracy", kl])
    assert isinstance(got[0], models.MixtureMetric) and got[1] is kl
    assert isinstance(mixture_metrics("accuracy")[0], models.MixtureMetric)


def test_builder_rank1_options():
    model = models.lenet5(num_train_examples=10, posterior="rank1", num_components=2,
                          rank1_options={"posterior": "cauchy", "random_sign_init": 0.5})
    assert isinstance(model, models.Rank1Sequential)
    rank1 = [la for la in model.layers if isinstance(la, layers.Rank1Layer)]
    assert rank1 and all(la.posterior == "cauchy" and la.random_sign_init == 0.5
                         for la in rank1)
    with pytest.raises(ValueError, match="unknown: \\['units'\\].*Received: rank1_options="):
        models.lenet5(num_train_examples=10, posterior="rank1", rank1_options={"units": 3})
    with pytest.raises(ValueError, match="posterior='rank1'.*Received: rank1_options="):
        models.lenet5(num_train_examples=10, rank1_options={"posterior": "cauchy"})
    with pytest.raises(TypeError, match="Received: rank1_options='cauchy'"):
        models.lenet5(num_train_examples=10, posterior="rank1", rank1_options="cauchy")


def test_tile_components_errors():
    with pytest.raises(ValueError, match="Received: num_components=0"):
        layers.TileComponents(0)
    with pytest.raises(ValueError, match="Received: loss='nope'"):
        models.MixtureLoss("nope")


@pytest.mark.slow
def test_lenet5_rank1_fits_evaluates_round_trips_and_predicts(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=40)
    model = models.lenet5(num_train_examples=40, seed=0, posterior="rank1", num_components=2)
    assert isinstance(model.layers[0], layers.TileComponents)
    models.compile_bayesian(model)
    hist = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert {"loss", "accuracy", "kl"} <= set(hist.history)
    assert np.isfinite(hist.history["loss"][0])
    assert np.isfinite(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    path = str(tmp_path / "r.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, models.Rank1Sequential)
    assert isinstance(loaded.loss, models.MixtureLoss)
    _silence(model)
    p = tfp_bcnn.predict(model, x[:3], num_samples=4, return_samples=True)
    q = tfp_bcnn.predict(model, x[:3], num_samples=4, method="moments", return_samples=True)
    assert p.samples.shape == (4, 3, 10)
    np.testing.assert_allclose(q.samples, p.samples, atol=1e-4)  # noise off: exact


# ------------------------------------------------------- to_bayesian(posterior="rank1")
def _sequential():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1), name="img"),
        keras.layers.Conv2D(3, 3, activation="relu", name="c"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, activation="softmax", name="d"),
    ], name="seq")


def _functional():
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="feat")
    h = keras.layers.Dense(6, activation="relu", name="a")(x)
    h = keras.layers.Add()([h, x])  # the input read by two layers
    return keras.Model(x, keras.layers.Dense(3, activation="softmax", name="b")(h), name="fn")


def _unit_factors(model):
    _silence(model)
    for layer in model.layers:
        if isinstance(layer, layers.Rank1Layer):
            for v in (layer.in_factor_loc, layer.out_factor_loc):
                v.assign(np.ones(v.shape, "float32"))


@pytest.mark.parametrize("build, shape", [(_sequential, (5, 8, 8, 1)), (_functional, (5, 6))])
def test_to_bayesian_rank1_keeps_the_trained_function(build, shape, tmp_path):
    net = build()
    x = np.random.default_rng(0).random(shape).astype("float32")
    bnn = models.to_bayesian(net, num_train_examples=50, posterior="rank1", num_components=K,
                             seed=0)
    # Rank1Sequential / Rank1Functional: the same kind of graph model, whose
    # compile wraps plain losses for the tiled copies.
    assert isinstance(bnn, type(net)) and bnn.name == net.name
    assert isinstance(bnn, (models.Rank1Sequential, models.Rank1Functional))
    twins = [la for la in bnn.layers if isinstance(la, layers.Rank1Layer)]
    assert len(twins) == 2 and all(t.num_components == K for t in twins)
    assert twins[0].posterior_std_init == 0.05  # the mean-field default 1e-3 replaced
    for twin in twins:
        old = net.get_layer(twin.name)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin.kernel),
                                      keras.ops.convert_to_numpy(old.kernel))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(twin.bias),
                                      np.tile(keras.ops.convert_to_numpy(old.bias), (K, 1)))
    assert keras.ops.convert_to_numpy(bnn(x, training=True)).shape[0] == K * len(x)
    # Factors at exactly 1 without noise: every component is the trained network.
    _unit_factors(bnn)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bnn(x, training=False)),
                               keras.ops.convert_to_numpy(net(x)), rtol=1e-5, atol=1e-6)
    if build is _functional:  # the tiled input trains with a plain loss (one step)
        bnn.compile("sgd", loss="sparse_categorical_crossentropy")
        hist = bnn.fit(x, np.arange(len(x)) % 3, epochs=1, batch_size=5, verbose=0)
        assert np.isfinite(hist.history["loss"][0])
        path = str(tmp_path / "fn.keras")  # the functional subclass round-trips
        bnn.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, models.Rank1Functional)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                   keras.ops.convert_to_numpy(bnn(x, training=False)),
                                   rtol=1e-5, atol=1e-6)


def test_to_bayesian_rank1_errors():
    net = keras.Sequential([keras.Input((8, 8, 2)),
                            keras.layers.DepthwiseConv2D(3, name="dw"),
                            keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
    with pytest.raises(ValueError, match="'dw' \\(DepthwiseConv2D\\).*Received: posterior="):
        models.to_bayesian(net, num_train_examples=10, posterior="rank1")
    ok = models.to_bayesian(net, num_train_examples=10, posterior="rank1", skip=["dw"])
    assert isinstance(ok.get_layer("out"), layers.Rank1Dense)
    with pytest.raises(ValueError, match="Received: moped_delta=0.1"):
        models.to_bayesian(net, num_train_examples=10, posterior="rank1", moped_delta=0.1)
    with pytest.raises(ValueError, match="Received: num_components=0"):
        models.to_bayesian(net, num_train_examples=10, posterior="rank1", num_components=0)
    with pytest.raises(ValueError, match="Received: posterior='rank2'"):
        models.to_bayesian(net, num_train_examples=10, posterior="rank2")
