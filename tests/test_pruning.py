"""Tests for tfp_bcnn.pruning: schedules against tfmot, exact sparsity, masking.

tfmot is the reference for the schedules, but importing it sets
``TF_USE_LEGACY_KERAS=1`` for the whole process (which breaks Keras 3), so its
side runs in a subprocess that prints its values as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_bcnn import layers, priors, pruning
from tfp_bcnn.kl import bayesian_layers, kl_divergence
from tfp_bcnn.layers import ESTIMATORS

# ------------------------------------------------------------------ helpers


def _model(estimator="flipout", seed=0):
    """A small conv + dense model with scores that include exact ties."""
    keras.utils.set_random_seed(seed)
    conv = layers.layer_class(2, estimator)
    dense = layers.layer_class(0, estimator)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            conv(4, 3, activation="relu", seed=1, name="conv"),
            keras.layers.Flatten(),
            dense(7, activation="relu", seed=2, name="fc1"),
            dense(3, activation="softmax", seed=3, name="fc2"),
        ]
    )
    rng = np.random.default_rng(seed)
    for layer in bayesian_layers(model):
        shape = tuple(layer.kernel_loc.shape)
        # rounded values: many exact ties, broken by the stable order
        layer.kernel_loc.assign(np.round(rng.normal(size=shape), 1).astype("float32"))
        layer.kernel_rho.assign(rng.uniform(-6, -1, size=shape).astype("float32"))
    return model


def _masks(model):
    return {
        layer.name: keras.ops.convert_to_numpy(layer.kernel_mask)
        for layer in bayesian_layers(model)
    }


def _scores(layer, criterion):
    loc = np.abs(keras.ops.convert_to_numpy(layer.kernel_loc).astype("float64"))
    if criterion == "snr":
        loc = loc / keras.ops.convert_to_numpy(layer.kernel_sigma).astype("float64")
    return loc.ravel()


# ------------------------------------------------------- schedules vs tfmot

SCHEDULES = [
    (
        "ConstantSparsity",
        {"target_sparsity": 0.7, "begin_step": 10, "end_step": 200, "frequency": 25},
    ),
    (
        "ConstantSparsity",
        {"target_sparsity": 0.5, "begin_step": 0, "end_step": -1, "frequency": 100},
    ),
    (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.5,
            "final_sparsity": 0.9,
            "begin_step": 0,
            "end_step": 1000,
        },
    ),
    (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.1,
            "final_sparsity": 0.95,
            "begin_step": 37,
            "end_step": 517,
            "power": 2,
            "frequency": 16,
        },
    ),
    (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.0,
            "final_sparsity": 0.8,
            "begin_step": 5,
            "end_step": 105,
            "power": 1,
            "frequency": 10,
        },
    ),
    (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.6,
            "final_sparsity": 0.2,
            "begin_step": 3,
            "end_step": 50,
            "power": 0.5,
            "frequency": 1,
        },
    ),
]
STEPS = sorted(
    set(range(0, 1300, 7)) | {0, 3, 5, 10, 35, 37, 50, 53, 105, 200, 225, 517, 1000, 1001, 1100}
)

_TFMOT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule
    specs, steps = json.loads(sys.argv[1])
    out = []
    for name, kwargs in specs:
        schedule = getattr(pruning_schedule, name)(**kwargs)
        values = []
        for step in steps:
            should, sparsity = schedule(step)
            values.append([bool(should.numpy()), float(sparsity.numpy())])
        out.append(values)
    print("JSON:" + json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def _tfmot_process(request):
    """Start tfmot's side at once, so that it runs while the other tests do
    (only when a test that needs it was selected: ``-m "not slow"`` skips it)."""
    if not any("tfmot_values" in item.fixturenames for item in request.session.items):
        yield None
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(
        [sys.executable, "-c", _TFMOT_SCRIPT, json.dumps([SCHEDULES, STEPS])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_polynomial_formula_and_numpy_steps():
    schedule = pruning.PolynomialDecay(0.5, 0.9, 100, 300, power=3, frequency=50)
    for step in (0, 100, 150, 200, 300, 400):
        p = np.clip((step - 100) / 200, 0, 1)
        assert schedule(np.int64(step))[1] == pytest.approx(0.9 + (0.5 - 0.9) * (1 - p) ** 3)
    assert schedule(tf.constant(150)) == (True, schedule(150)[1])
    # end_step == begin_step: one pruning step, straight to final_sparsity
    one = pruning.PolynomialDecay(0.2, 0.7, 10, 10)
    assert one(9) == (False, 0.2) and one(10) == (True, 0.7) and one(20) == (False, 0.7)


@pytest.mark.parametrize(
    "schedule",
    [
        pruning.ConstantSparsity(0.3, 5),
        pruning.ConstantSparsity(0.75, 0, 1000, 7),
        pruning.PolynomialDecay(0.5, 0.9, 0, 1000),
        pruning.PolynomialDecay(0.0, 0.95, 10, 110, power=2.5, frequency=20),
    ],
)
def test_schedule_config_round_trip(schedule):
    config = schedule.get_config()
    json.dumps(config)
    clone = type(schedule).from_config(config)
    assert clone == schedule and clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule) and restored.get_config() == config
    assert [restored(s) for s in range(0, 1200, 13)] == [schedule(s) for s in range(0, 1200, 13)]


def test_callback_and_config_round_trip():
    callback = pruning.UpdatePruning.from_config(pruning.UpdatePruning().get_config())
    assert isinstance(callback, pruning.UpdatePruning)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(pruning.UpdatePruning())
    )
    assert isinstance(restored, pruning.UpdatePruning)
    config = pruning.PruningConfig(
        pruning.PolynomialDecay(0.1, 0.5, 0, 10), "snr", "global", ("fc2",)
    )
    assert pruning.PruningConfig.from_config(json.loads(json.dumps(config.get_config()))) == config


# ------------------------------------------------------ exact target sparsity


@pytest.mark.parametrize("criterion", pruning.CRITERIA)
@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.9, 0.97])
def test_exact_sparsity_per_layer(criterion, target):
    model = _model()
    ref = {layer.name: _scores(layer, criterion) for layer in bayesian_layers(model)}
    pruning.prune_now(model, target, criterion=criterion, scope="layer", exclude=["fc2"])
    report = pruning.sparsity(model)
    for name, mask in _masks(model).items():
        if name == "fc2":
            assert mask.min() == 1.0 and report[name] == 0.0
            continue
        n = mask.size
        k = round(target * n)
        assert int(np.sum(mask == 0)) == k and report[name] == k / n
        # independent reference: the k lowest scores, ties by flat index
        expected = np.ones(n)
        expected[np.lexsort((np.arange(n), ref[name]))[:k]] = 0
        np.testing.assert_array_equal(mask.ravel(), expected)
    sizes = {name: m.size for name, m in _masks(model).items()}
    zeros = sum(int(np.sum(m == 0)) for m in _masks(model).values())
    assert report["total"] == zeros / sum(sizes.values())
    assert list(report) == ["conv", "fc1", "fc2", "total"]


@pytest.mark.parametrize("criterion", pruning.CRITERIA)
@pytest.mark.parametrize("target", [0.25, 0.8, 0.95])
def test_exact_sparsity_global(criterion, target):
    model = _model(estimator="local_reparameterization")
    names = [layer.name for layer in bayesian_layers(model)]
    scores = np.concatenate([_scores(layer, criterion) for layer in bayesian_layers(model)])
    pruning.prune_now(model, target, criterion=criterion, scope="global")
    flat = np.concatenate([_masks(model)[name].ravel() for name in names])
    k = round(target * flat.size)
    assert int(np.sum(flat == 0)) == k
    expected = np.ones(flat.size)
    expected[np.lexsort((np.arange(flat.size), scores))[:k]] = 0
    np.testing.assert_array_equal(flat, expected)
    assert pruning.sparsity(model)["total"] == k / flat.size
    # one threshold: every pruned score <= every kept score, across layers
    assert scores[flat == 0].max() <= scores[flat == 1].min()


def test_masks_only_grow():
    model = _model()
    pruning.prune_now(model, 0.5, criterion="snr")
    before = _masks(model)
    pruning.prune_now(model, 0.2, criterion="magnitude")  # lower target: no change
    for name, mask in _masks(model).items():
        np.testing.assert_array_equal(mask, before[name])
    pruning.prune_now(model, 0.8, criterion="magnitude", scope="global")
    for name, mask in _masks(model).items():
        assert np.all(mask[before[name] == 0] == 0)  # pruned stays pruned
    assert pruning.sparsity(model)["total"] == pytest.approx(0.8, abs=1e-3)


# ------------------------------------------------ masked weights are zero


def _one_hot_layer(rank, estimator):
    """A layer whose output on one-hot inputs reveals the sampled kernel."""
    cls = layers.layer_class(rank, estimator)
    layer = cls(5, seed=7, name="probe") if rank == 0 else cls(5, 1, seed=7, name="probe")
    model = keras.Sequential([keras.Input((6,) if rank == 0 else (1, 1, 6)), layer])
    rng = np.random.default_rng(3)
    shape = tuple(layer.kernel_loc.shape)
    layer.kernel_loc.assign(rng.normal(2.0, 1.0, size=shape).astype("float32"))
    layer.kernel_rho.assign(np.full(shape, 1.0, "float32"))  # sigma ~ 1.3
    layer.bias.assign(rng.normal(size=5).astype("float32"))
    return model, layer


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_sampled_kernels_zero_at_masked_positions(rank, estimator):
    model, layer = _one_hot_layer(rank, estimator)
    pruning.prune_now(model, 0.5)
    mask = keras.ops.convert_to_numpy(layer.kernel_mask).reshape(6, 5)
    bias = keras.ops.convert_to_numpy(layer.bias)
    loc, sigma = (keras.ops.convert_to_numpy(t).reshape(6, 5) for t in layer.kernel_posterior())
    assert np.all(loc[mask == 0] == 0) and np.all(sigma[mask == 0] == 0)
    # 50 copies of the 6 one-hot rows: row i of an output is row i of the
    # kernel this example saw (plus the bias); LRT: mean 0 and variance 0 there
    x = np.tile(np.eye(6, dtype="float32"), (50, 1))
    if rank:
        x = x.reshape(-1, 1, 1, 6)
    outs = [
        model(x, training=True),
        model(x, training=False),
        model.predict(x, verbose=0, batch_size=60),
    ]
    for out in outs:
        kernels = (keras.ops.convert_to_numpy(out).reshape(50, 6, 5) - bias).astype("float64")
        masked = np.broadcast_to(mask == 0, kernels.shape)
        assert np.all(
            keras.ops.convert_to_numpy(out).reshape(50, 6, 5)[masked]
            == np.broadcast_to(bias, (50, 6, 5))[masked]
        )
        # the unmasked weights are really sampled (not at their mean)
        assert np.all(kernels[:, mask == 1] != loc[mask == 1])


@pytest.mark.parametrize("prior", [priors.Normal(0.0, 1.0), priors.ScaleMixtureNormal()])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradient_zero_at_masked_positions(estimator, prior):
    cls = layers.layer_class(2, estimator)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            cls(4, 3, prior=prior, seed=5, kl_weight=0.1, name="c"),
            keras.layers.Flatten(),
            layers.layer_class(0, estimator)(3, seed=6, name="d"),
        ]
    )
    pruning.prune_now(model, 0.6, criterion="snr", scope="global")
    x = tf.random.stateless_normal((8, 6, 6, 3), seed=(1, 2))
    bayes = list(bayesian_layers(model))
    watched = [v for layer in bayes for v in (layer.kernel_loc, layer.kernel_rho)]
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_sum(out**2) + tf.add_n(model.losses)
    grads = tape.gradient(loss, watched)
    for layer, g_loc, g_rho in zip(bayes, grads[0::2], grads[1::2]):
        mask = keras.ops.convert_to_numpy(layer.kernel_mask)
        g_loc, g_rho = g_loc.numpy(), g_rho.numpy()
        assert np.all(np.isfinite(g_loc)) and np.all(np.isfinite(g_rho))
        assert np.all(g_loc[mask == 0] == 0) and np.all(g_rho[mask == 0] == 0)
        assert np.any(g_loc[mask == 1] != 0)


# -------------------------------------------------------- save, load, strip


def test_masks_survive_keras_save_load(tmp_path):
    model = _model()
    pruning.prune(model, pruning.ConstantSparsity(0.6, 0))  # state attached
    pruning.prune_now(model, 0.6, criterion="snr")
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for name, mask in _masks(model).items():
        np.testing.assert_array_equal(_masks(loaded)[name], mask)
    assert pruning.sparsity(loaded) == pruning.sparsity(model)
    assert pruning.pruning_config(loaded) is None  # only the masks are saved


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_strip(tmp_path, estimator):
    model = _model(estimator)
    pruning.prune(model, pruning.ConstantSparsity(0.7, 0), criterion="snr")
    pruning.prune_now(model, 0.7, criterion="snr")
    before = [
        [keras.ops.convert_to_numpy(t) for t in layer.kernel_posterior()]
        for layer in bayesian_layers(model)
    ]
    x = np.random.default_rng(0).uniform(size=(4, 6, 6, 2)).astype("float32")
    probes = {
        layer.name: np.ones(
            (1, 6, 6, 2) if layer.rank else (1, layer.kernel_loc.shape[0]), "float32"
        )
        for layer in bayesian_layers(model)
    }
    means = [
        keras.ops.convert_to_numpy(layer.linear(probes[layer.name], layer.kernel_posterior()[0]))
        for layer in bayesian_layers(model)
    ]
    assert pruning.strip(model) is model
    assert pruning.pruning_config(model) is None and not hasattr(model, "_tfp_bcnn_pruning")
    for layer, (loc, sigma), mean in zip(bayesian_layers(model), before, means):
        new_loc, new_sigma = (keras.ops.convert_to_numpy(t) for t in layer.kernel_posterior())
        np.testing.assert_array_equal(new_loc, loc)
        np.testing.assert_array_equal(new_sigma, sigma)
        mask = keras.ops.convert_to_numpy(layer.kernel_mask)
        assert np.all(keras.ops.convert_to_numpy(layer.kernel_loc)[mask == 0] == 0)
        assert np.all(keras.ops.convert_to_numpy(layer.kernel_rho)[mask == 0] == pruning.PRUNED_RHO)
        mean_after = layer.linear(probes[layer.name], layer.kernel_posterior()[0])
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mean_after), mean)
    path = tmp_path / "stripped.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert pruning.sparsity(loaded) == pruning.sparsity(model)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(loaded(x))))
    assert np.isfinite(float(keras.ops.convert_to_numpy(kl_divergence(loaded))))


# ---------------------------------------------------------- training loop


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.masks = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        self.masks.append(_masks(self.model))


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.slow
def test_fit_reaches_final_sparsity_on_schedule():
    model = _model()
    schedule = pruning.PolynomialDecay(0.2, 0.8, 0, 8, frequency=2)
    pruning.prune(model, schedule, criterion="snr")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    record = _Record()
    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[pruning.UpdatePruning(), record],
    )
    assert record.steps == list(range(1, 13))
    for step, masks in enumerate(record.masks):  # step `step` ran with these masks
        pruned_at = [t for t in range(step + 1) if schedule(t)[0]]
        target = schedule(pruned_at[-1])[1]
        for name, mask in masks.items():
            assert int(np.sum(mask == 0)) == round(target * mask.size), (step, name)
        if step:
            for name, mask in masks.items():  # masks only grow
                assert np.all(mask[record.masks[step - 1][name] == 0] == 0)
    final = pruning.sparsity(model)
    for layer in bayesian_layers(model):
        n = int(np.prod(layer.kernel_mask.shape))
        assert final[layer.name] == round(0.8 * n) / n
        loc, sigma = (keras.ops.convert_to_numpy(t) for t in layer.kernel_posterior())
        mask = keras.ops.convert_to_numpy(layer.kernel_mask)
        assert np.all(loc[mask == 0] == 0) and np.all(sigma[mask == 0] == 0)
    assert np.isfinite(model.evaluate(x, y, verbose=0))


def test_fit_with_steps_per_execution_and_tfmot_like_schedule():
    class TensorSchedule:
        """Duck-typed like a tfmot PruningSchedule: returns backend tensors."""

        def __call__(self, step):
            should = keras.ops.convert_to_tensor(step % 4 == 1 and step <= 9)
            return should, keras.ops.convert_to_tensor(0.1 * step, dtype="float32")

    model = _model("local_reparameterization")
    pruning.prune(model, TensorSchedule(), scope="global", exclude="fc2")
    model.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=3)
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[pruning.UpdatePruning()])
    # 12 steps in chunks of 3; the last pruning step, 9, is applied at step 9
    masks = _masks(model)
    assert masks["fc2"].min() == 1.0
    total = masks["conv"].size + masks["fc1"].size
    zeros = int(np.sum(masks["conv"] == 0) + np.sum(masks["fc1"] == 0))
    assert zeros == round(np.float32(0.9) * total)


def test_update_pruning_needs_prune():
    model = _model()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(8)
    with pytest.raises(ValueError, match="pruning.prune"):
        model.fit(x, y, verbose=0, callbacks=[pruning.UpdatePruning()])


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pruning.ConstantSparsity(1.0, 0), "target_sparsity=1.0"),
        (lambda: pruning.ConstantSparsity(-0.1, 0), "target_sparsity=-0.1"),
        (lambda: pruning.ConstantSparsity(0.5, -1), "begin_step=-1"),
        (lambda: pruning.ConstantSparsity(0.5, 10, 5), "end_step=5"),
        (lambda: pruning.ConstantSparsity(0.5, 0, frequency=0), "frequency=0"),
        (lambda: pruning.PolynomialDecay(0.5, 1.5, 0, 10), "final_sparsity=1.5"),
        (lambda: pruning.PolynomialDecay(1.0, 0.5, 0, 10), "initial_sparsity=1.0"),
        (lambda: pruning.PolynomialDecay(0.1, 0.5, 0, -1), "end_step=-1"),
        (lambda: pruning.PolynomialDecay(0.1, 0.5, 20, 10), "end_step=10"),
        (
            lambda: pruning.PolynomialDecay(0.1, 0.5, 0, 10, frequency=-3),
            "frequency=-3",
        ),
        (lambda: pruning.PolynomialDecay(0.1, 0.5, 0, 10, power=0), "power=0"),
        (lambda: pruning.PolynomialDecay(0.1, 0.5, 1.5, 10), "begin_step=1.5"),
    ],
)
def test_bad_schedule_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_prune_arguments():
    model = _model()
    with pytest.raises(ValueError, match="Received: criterion='foo'"):
        pruning.prune(model, criterion="foo")
    with pytest.raises(ValueError, match="Received: scope='all'"):
        pruning.prune_now(model, 0.5, scope="all")
    with pytest.raises(ValueError, match="Received: exclude='nope'"):
        pruning.prune(model, exclude=("fc1", "nope"))
    with pytest.raises(ValueError, match="no Bayesian layer to prune"):
        pruning.prune_now(model, 0.5, exclude=("conv", "fc1", "fc2"))
    with pytest.raises(ValueError, match="Received: sparsity=1.0"):
        pruning.prune_now(model, 1.0)
    with pytest.raises(ValueError, match="Received: sparsity=-0.5"):
        pruning.prune_now(model, -0.5)
    with pytest.raises(ValueError, match="Received: schedule=0.5"):
        pruning.prune(model, 0.5)
    with pytest.raises(ValueError, match="sparsity=1.5"):
        pruning.prune(model, lambda step: (True, 1.5))
    assert pruning.pruning_config(model) is None  # nothing stored on failure
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="plain_dense")])
    for call in (
        pruning.prune,
        pruning.strip,
        pruning.sparsity,
        lambda m: pruning.prune_now(m, 0.5),
    ):
        with pytest.raises(ValueError, match="no Bayesian layer"):
            call(plain)


# ------------------------------------------- schedules vs tfmot (run last)


@pytest.fixture(scope="module")
def tfmot_values(_tfmot_process):
    stdout, stderr = _tfmot_process.communicate(timeout=300)
    assert _tfmot_process.returncode == 0, stderr[-3000:]
    line = [ln for ln in stdout.splitlines() if ln.startswith("JSON:")][-1]
    return json.loads(line[len("JSON:") :])


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SCHEDULES)))
def test_schedule_matches_tfmot(tfmot_values, index):
    name, kwargs = SCHEDULES[index]
    schedule = getattr(pruning, name)(**kwargs)
    ours = [schedule(step) for step in STEPS]
    for (should, value), step in zip(ours, STEPS):
        assert type(should) is bool and type(value) is float, step
    assert [s for s, _ in ours] == [s for s, _ in tfmot_values[index]]
    assert sum(s for s, _ in ours) > 0  # the schedule prunes somewhere
    # tfmot computes in float32, we in float64: agree to float32 rounding.
    np.testing.assert_allclose(
        [v for _, v in ours], [v for _, v in tfmot_values[index]], rtol=0, atol=1e-6
    )


# ------------------------------------------------------------ explicit state


def test_prune_writes_nothing_onto_the_model():
    model = _model()
    before = set(vars(model))
    pruning.prune(model, pruning.ConstantSparsity(0.5, 0))
    assert set(vars(model)) == before
    assert pruning.pruning_config(model) == pruning.PruningConfig(
        pruning.ConstantSparsity(0.5, 0), "magnitude", "layer", ()
    )
    # the default schedule is made afresh: no instance is shared between models
    other = _model()
    pruning.prune(other)
    pruning.prune(model)
    assert pruning.pruning_config(model).schedule == pruning.PolynomialDecay(0.5, 0.9, 0, 1000)
    assert pruning.pruning_config(model).schedule is not pruning.pruning_config(other).schedule


def test_update_pruning_with_an_explicit_config():
    """Given a config, the callback needs no `prune` call and round-trips it."""
    model = _model()
    config = pruning.PruningConfig(pruning.ConstantSparsity(0.5, 0, frequency=1), "snr",
                                   "global", ("fc2",))
    callback = pruning.UpdatePruning(config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert restored.config == config
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[restored])
    assert pruning.pruning_config(model) is None
    masks = _masks(model)
    assert masks["fc2"].min() == 1.0
    zeros = sum(int(np.sum(masks[n] == 0)) for n in ("conv", "fc1"))
    assert zeros == round(0.5 * (masks["conv"].size + masks["fc1"].size))
    with pytest.raises(ValueError, match="Received: config=0.5"):
        pruning.UpdatePruning(0.5)
