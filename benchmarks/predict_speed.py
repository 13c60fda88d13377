"""Monte Carlo prediction speed: ``tfp_bcnn.predict`` against a user's loop.

A LeNet-5-sized Flipout classifier (28x28x1 inputs, built inline from
``tfp_bcnn.layers``) predicts random images ``num_samples`` times, two ways,
in the same process:

* ``tfp_bcnn.predict(model, x, num_samples=S)``: each batch tiled ``S`` times,
  one compiled forward call per batch;
* the loop users write: ``np.stack([model.predict(x, verbose=0) for _ in range(S)])``.

Each is run once to warm up (tracing), then timed ``--repeats`` times; the
table reports the medians and their ratio. Run::

    python benchmarks/predict_speed.py [--num-images 1000] [--num-samples 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfp_bcnn
from tfp_bcnn import models


def lenet5_flipout(estimator: str = "flipout") -> keras.Model:
    return models.lenet5(estimator=estimator, num_train_examples=1000)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: tracing / compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--estimator", default="flipout", choices=tfp_bcnn.layers.ESTIMATORS)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = lenet5_flipout(args.estimator)
    x = np.random.default_rng(0).random((args.num_images, 28, 28, 1), dtype=np.float32)
    s = args.num_samples

    def ours():
        return tfp_bcnn.uncertainty.predict(model, x, num_samples=s)

    def loop():
        return np.stack([model.predict(x, verbose=0) for _ in range(s)])

    t_ours = _median_time(ours, args.repeats)
    t_loop = _median_time(loop, args.repeats)
    print(
        f"{model.name}, {args.num_images} images, {s} samples, backend "
        f"{keras.backend.backend()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; median of {args.repeats}\n"
    )
    print("| method | seconds | images x samples / s |")
    print("|---|---:|---:|")
    for name, t in [
        (f"`tfp_bcnn.predict(num_samples={s})`", t_ours),
        (f"`{s} x model.predict` loop", t_loop),
    ]:
        print(f"| {name} | {t:.3f} | {args.num_images * s / t:,.0f} |")
    print(f"\nspeed-up: {t_loop / t_ours:.1f}x")


if __name__ == "__main__":
    main()
