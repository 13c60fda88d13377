"""Training under tf.distribute.MirroredStrategy on two logical CPU devices.

The logical devices must be configured before TensorFlow initialises its
runtime, so everything runs in one subprocess (other tests are unaffected);
it prints a JSON report that the tests below check.

Keras 3 on TensorFlow runs the step on each replica with its share of the
global batch, divides every ``add_loss`` term by the number of replicas
(``_aggregate_additional_loss`` -> ``scale_loss_for_distribution``) and sums
the gradients over replicas. Each replica adds the whole ``kl_weight * KL``,
so after the division the KL is counted once per global step, as without a
strategy. The checks compare a model under the strategy with the same
weights outside it; posterior stds of 1e-6 make the forward passes
deterministic up to ~1e-5, so the tolerances (1e-4 relative on the loss,
1e-5 absolute on weights after two SGD steps) separate "counted once" from
"counted twice" (the KL here is ~97% of the loss) by orders of magnitude.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# the strategies run in a subprocess with two virtual devices
pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import tfp_bcnn
    from tfp_bcnn import layers
    from tfp_bcnn._annealing import KLAnnealing

    N = 64
    out = {}

    def build(lr=0.1, std=1e-6):
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(4, 3, activation="relu", posterior_std_init=std,
                                 kl_weight=1 / N, seed=1),
            keras.layers.Flatten(),
            layers.DenseLocalReparameterization(3, activation="softmax",
                                                posterior_std_init=std,
                                                kl_weight=1 / N, seed=2),
        ])
        model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy",
                      metrics=[tfp_bcnn.KLDivergence(model)])
        return model

    rng = np.random.default_rng(0)
    x = rng.random((N, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, N)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        dist = build()
    plain = build()
    plain.set_weights(dist.get_weights())
    out["kl_direct"] = float(tfp_bcnn.kl_divergence(plain))
    out["eval_dist"] = dist.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    out["eval_plain"] = plain.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    dist.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    plain.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    out["max_weight_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(dist.get_weights(), plain.get_weights()))

    # Annealing under the strategy: kl_weight (a mirrored variable) is set
    # from the callback; learning rate 0 keeps the KL fixed.
    with strategy.scope():
        annealed = build(lr=0.0)
    hist = annealed.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        callbacks=[KLAnnealing("linear", warmup_epochs=2)])
    out["annealed_kl"] = hist.history["kl"]

    # Noise of the replicas: the same input on both replicas.
    with strategy.scope():
        noisy = build(std=0.5)
    same = np.repeat(x[:1], 8, axis=0)
    probs = noisy.predict(same, batch_size=8, verbose=0)
    out["replica_noise_identical"] = bool(np.allclose(probs[:4], probs[4:]))
    out["rows_differ_within_replica"] = bool(not np.allclose(probs[0], probs[1]))
    print("REPORT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT"):])


def test_two_replicas(report):
    assert report["replicas"] == 2


def test_kl_counted_once_in_evaluation(report):
    dist, plain = report["eval_dist"], report["eval_plain"]
    assert dist["kl"] == pytest.approx(report["kl_direct"], rel=1e-5)
    assert dist["kl"] == pytest.approx(plain["kl"], rel=1e-5)
    assert dist["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    # Double counting would add a second KL (~97% of the loss).
    assert dist["loss"] - plain["kl"] < 0.5 * plain["kl"]


def test_training_steps_match_without_strategy(report):
    assert report["max_weight_diff"] < 1e-5


def test_annealing_under_strategy(report):
    kl = report["annealed_kl"]
    assert kl[0] == pytest.approx(kl[1] / 2, rel=1e-5)


def test_flipout_noise_independent_within_replica(report):
    assert report["rows_differ_within_replica"]


def test_replicas_draw_independent_noise(report):
    # The same input on both replicas: each replica folds its id into the seed,
    # so example k of replica 0 and of replica 1 get different noise.
    assert not report["replica_noise_identical"]


# ---------------------------------------------------------------- both engines
EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "scale_out.py")


def _scale_out(backend):
    """Runs examples/scale_out.py (the README's commands) on two virtual CPUs."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, EXAMPLE, "--devices", "2"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_data_parallel_example(backend):
    # JAX: keras.distribution.DataParallel over two XLA host devices;
    # TensorFlow: MirroredStrategy over two logical CPUs. The example computes
    # its checks against the same model on one device: loss - NLL equals the
    # KL (counted once per example, not once per device; the KL is ~99% of
    # the loss here, so double counting would be off by ~100%, the tolerance
    # is 0.1%), the weights after two epochs match the one-device fit to 1e-5
    # (posterior std 1e-6: noise ~1e-6), and rows on different devices draw
    # different noise.
    report = _scale_out(backend)
    assert report["backend"] == backend
    assert report["weights_on_devices"] == 2
    assert report["kl_counted_once"], report
    assert report["steps_match_one_device"], report
    assert report["devices_draw_independent_noise"], report
    assert all(np.isfinite(report["fit_loss"]))
