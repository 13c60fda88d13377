"""Training cost on an accelerator, JAX backend (TensorFlow is never imported).

Builds a larger training set from MNIST-5k (each image shifted by up to 2
pixels and lightly noised, about 60,000 images by default), then reports in
one run, same data and batch size:

* median epoch time (epochs after the first, which compiles) of the
  frequentist LeNet-5 and of the Bayesian LeNet-5 with each estimator, as
  ratios to the frequentist model;
* images per second of ``tfp_bcnn.predict`` with 32 Monte Carlo samples;

for each Keras dtype policy asked for (``--policies``, default ``float32`` and
``mixed_float16``: float16 compute, float32 variables and KL), with each
model's epoch time also as a ratio to the same model in float32.

Meant for a GPU machine where TensorFlow is not installed: only keras, jax,
numpy, scikit-learn and the tfp_bcnn package are needed::

    KERAS_BACKEND=jax python benchmarks/gpu.py --json gpu.json

Works on the CPU too, where float16 is emulated and slow (a smoke run, as
``tests/test_gpu_benchmark.py`` does: ``--copies 1 --train-images 512
--epochs 2 --predict-images 32``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import Timer, emit, markdown_table, recipe_note, write_json  # noqa: E402

import tfp_bcnn  # noqa: E402
from tfp_bcnn import datasets, layers, models  # noqa: E402


def augmented_mnist(copies: int, seed: int = 0):
    """MNIST-5k train set, ``copies`` shifted and noised versions of each image."""
    (x, y), (x_test, y_test) = datasets.mnist_5k()
    rng = np.random.default_rng(seed)
    xs, ys = [x], [y]
    for _ in range(copies - 1):
        dx, dy = rng.integers(-2, 3, size=2)
        shifted = np.roll(np.roll(x, dx, axis=2), dy, axis=1)
        noisy = np.clip(shifted + rng.normal(0, 0.05, size=x.shape), 0, 1)
        xs.append(noisy.astype("float32"))
        ys.append(y)
    return (np.concatenate(xs), np.concatenate(ys)), (x_test, y_test)


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch (`_common.Timer` around it)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._timer = Timer().__enter__()

    def on_epoch_end(self, epoch, logs=None):
        self._timer.__exit__()
        self.times.append(self._timer.seconds)


def epoch_time(model, x, y, epochs, batch_size):
    """Median epoch time after the first, compiled as the workflow does (the
    recipe's learning rate; no KL metric on JAX)."""
    models.compile_bayesian(model, models.RECIPE["learning_rate"])
    timer = EpochTimer()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
    return float(np.median(timer.times[1:])), model


def set_seed(seed):
    """Seed python and numpy; layers get ``seed=`` (keras.utils.set_random_seed
    would import TensorFlow where it is installed)."""
    random.seed(seed)
    np.random.seed(seed)


POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def run(copies=15, epochs=3, batch_size=128, seed=0, policies=("float32", "mixed_float16"),
        predict_images=None, train_images=None):
    for policy in policies:
        if policy not in POLICIES:
            raise ValueError(f"`policies` must be among {POLICIES}. Received: policy={policy!r}")
    (x, y), (x_test, _) = augmented_mnist(copies, seed)
    x, y, x_test = x[:train_images], y[:train_images], x_test[:predict_images]
    out = {"backend": keras.backend.backend(), "train_images": int(len(x)),
           "batch_size": batch_size, "epochs": epochs, "devices": _devices(),
           "predict_images": int(len(x_test))}
    rows = []
    try:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            rows += _policy_rows(policy, x, y, x_test, epochs, batch_size, seed)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    float32 = {r["model"]: r["epoch_s"] for r in rows if r["policy"] == "float32"}
    for row in rows:
        if row["model"] in float32:
            row["x_float32"] = row["epoch_s"] / float32[row["model"]]
    out["rows"] = rows
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    return out


def _policy_rows(policy, x, y, x_test, epochs, batch_size, seed):
    set_seed(seed)
    base, _ = epoch_time(models.lenet5(bayesian=False, seed=seed), x, y, epochs, batch_size)
    rows = [{"policy": policy, "model": "frequentist", "epoch_s": base, "ratio": 1.0}]
    for est in layers.ESTIMATORS:
        set_seed(seed)
        model = models.lenet5(estimator=est, num_train_examples=len(x), seed=seed)
        secs, model = epoch_time(model, x, y, epochs, batch_size)
        row = {"policy": policy, "model": est, "epoch_s": secs, "ratio": secs / base}
        tfp_bcnn.predict(model, x_test[:256], num_samples=32)  # compile
        with Timer() as t:
            tfp_bcnn.predict(model, x_test, num_samples=32)
        row["predict_images_per_s"] = len(x_test) / t.seconds
        rows.append(row)
    return rows


def _devices():
    try:
        import jax

        return [str(d) for d in jax.devices()]
    except Exception:  # another backend
        return [platform.processor() or platform.machine()]


def markdown(r):
    lines = [f"Backend {r['backend']}, devices {', '.join(r['devices'])}; "
             f"{r['train_images']} training images, batch {r['batch_size']}, "
             f"median of epochs 2..{r['epochs']}; predict timed on "
             f"{r.get('predict_images', 1000)} test images; TensorFlow imported: "
             f"{r['tensorflow_imported']}. "
             + recipe_note(dict(models.RECIPE, batch_size=r["batch_size"], epochs=r["epochs"]),
                           "a larger batch keeps an accelerator busy; a few epochs time one"),
             ""]
    rows = []
    for row in r["rows"]:
        ips = row.get("predict_images_per_s")
        x32 = row.get("x_float32")
        rows.append([row.get("policy", "float32"), row["model"], f"{row['epoch_s']:.2f}",
                     f"{row['ratio']:.2f}", "-" if x32 is None else f"{x32:.2f}",
                     "-" if ips is None else f"{ips:.0f}"])
    return "\n".join(lines) + "\n" + markdown_table(
        ["policy", "model", "epoch (s)", "x frequentist", "x float32",
         "predict, 32 samples (images/s)"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=15, help="4,000 images per copy")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", default="float32,mixed_float16",
                   help=f"comma-separated Keras dtype policies among {', '.join(POLICIES)}")
    p.add_argument("--predict-images", type=int, default=None,
                   help="test images timed by predict (default: all 1,000)")
    p.add_argument("--train-images", type=int, default=None,
                   help="cap on the training images (a smoke run; default: all)")
    p.add_argument("--json", help="write the report to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    r = run(args.copies, args.epochs, args.batch_size, args.seed,
            tuple(args.policies.split(",")), args.predict_images, args.train_images)
    emit(args.markdown, markdown(r))
    write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
