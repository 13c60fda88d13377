"""Data-parallel training of a Bayesian CNN with the backend's own engine.

TensorFlow: ``tf.distribute.MirroredStrategy``; JAX:
``keras.distribution.DataParallel``. Nothing of ours distributes anything:
the model is built and ``fit`` under the engine as any Keras model. On a
CPU-only machine the devices are virtual::

    KERAS_BACKEND=tensorflow python examples/scale_out.py --devices 2
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \\
        python examples/scale_out.py --devices 2

(On TensorFlow the script splits the CPU into ``--devices`` logical devices
itself when there are fewer GPUs.) It fits a small Flipout / local
reparameterization CNN for a few steps and prints a JSON report with three
checks, all computed here against the same model run on one device:

* ``kl_counted_once``: the distributed loss is ``NLL + KL`` with the KL counted
  once per example (``loss - nll`` equals ``tfp_bcnn.kl_divergence(model)``),
  not once per device;
* ``steps_match_one_device``: after the distributed ``fit`` the weights equal
  those of the same ``fit`` on one device (posterior std 1e-6, so the noise is
  negligible);
* ``devices_draw_independent_noise``: with a large posterior std and the same
  image in every row, the rows that land on different devices differ.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tensorflow_devices(n):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= n:
        return [f"/gpu:{i}" for i in range(n)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * n
    )
    return [f"/cpu:{i}" for i in range(n)]


def _engine(n):
    """The engine; models are built, fitted and evaluated in its ``scope()``."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(_tensorflow_devices(n))
    if backend == "jax":
        devices = keras.distribution.list_devices()
        if len(devices) < n:
            raise SystemExit(
                f"JAX sees {len(devices)} device(s); for virtual CPU devices set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={n}. Received: devices={n}"
            )
        return keras.distribution.DataParallel(devices=devices[:n])
    raise SystemExit(f"Use the tensorflow or jax backend. Received: backend={backend!r}")


def _device_count(variable) -> int:
    """On how many devices a (replicated) variable lives."""
    value = variable.value
    if hasattr(value, "sharding"):  # a jax.Array
        return len(value.sharding.device_set)
    return len(getattr(value, "values", [value]))  # a tf.distribute MirroredVariable


def run(devices: int = 2, num_examples: int = 64, batch_size: int = 32, seed: int = 0) -> dict:
    if devices < 2:
        raise SystemExit(f"`devices` must be >= 2. Received: devices={devices}")
    import keras

    engine = _engine(devices)  # first: TensorFlow's logical devices precede any op
    import numpy as np

    import tfp_bcnn
    from tfp_bcnn import layers

    def build(std, lr=0.1):
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(4, 3, activation="relu", posterior_std_init=std,
                                 kl_weight=1 / num_examples, seed=seed + 1),
            keras.layers.Flatten(),
            layers.DenseLocalReparameterization(3, activation="softmax",
                                                posterior_std_init=std,
                                                kl_weight=1 / num_examples, seed=seed + 2),
        ])
        model.compile(keras.optimizers.SGD(lr), "sparse_categorical_crossentropy")
        return model

    rng = np.random.default_rng(seed)
    x = rng.random((num_examples, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, num_examples)
    out = {"backend": keras.backend.backend(), "devices": devices}

    plain = build(1e-6)
    with engine.scope():
        dist = build(1e-6)
        dist.set_weights(plain.get_weights())
        loss = dist.evaluate(x, y, batch_size=batch_size, verbose=0)
    out["weights_on_devices"] = _device_count(dist.layers[0].kernel_loc)
    probs = plain.predict(x, batch_size=batch_size, verbose=0)
    nll = float(np.mean(-np.log(probs[np.arange(num_examples), y])))
    kl = float(keras.ops.convert_to_numpy(tfp_bcnn.kl_divergence(plain)))
    out.update(loss=float(loss), nll=nll, kl=kl)
    out["kl_counted_once"] = bool(abs(loss - nll - kl) < 1e-3 * kl)

    with engine.scope():
        hist = dist.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    plain.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    out["fit_loss"] = [float(v) for v in hist.history["loss"]]
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(dist.get_weights(), plain.get_weights()))
    out["max_weight_diff"] = diff
    out["steps_match_one_device"] = bool(diff < 1e-5)

    with engine.scope():
        noisy = build(0.5)
        same = np.repeat(x[:1], 4 * devices, axis=0)
        p = noisy.predict(same, batch_size=4 * devices, verbose=0)
    shards = np.split(p, devices)
    out["devices_draw_independent_noise"] = bool(
        not any(np.allclose(shards[0], s) for s in shards[1:])
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    report = run(args.devices, args.examples, args.batch_size)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
