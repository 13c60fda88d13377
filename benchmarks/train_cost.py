"""Training cost of Bayesian LeNet-5 per estimator, against its frequentist twin and TFP.

One run, same data (MNIST-5k, 4,000 training images), same batch size and
optimizer (Adam, both from ``models.RECIPE``) for every model; the figure is the median wall time of
the epochs after the first (the first one includes tracing):

* ``frequentist``: ``tfp_bcnn.models.lenet5(bayesian=False)``;
* ``flipout``, ``reparameterization``, ``local_reparameterization``:
  ``tfp_bcnn.models.lenet5(estimator=...)``;
* ``flipout+kl_metric``: Flipout compiled by ``models.compile_bayesian``,
  i.e. also logging ``tfp_bcnn.KLDivergence`` (which recomputes the KL);
  every other model is compiled with Adam, the loss and accuracy only;
* ``tfp_flipout``: the same LeNet-5 of ``tfp.layers.Convolution2DFlipout`` /
  ``DenseFlipout`` in ``tf_keras`` (KL divided by N), and
  ``tf_keras_frequentist``, its deterministic twin in ``tf_keras`` (to tell
  the cost of the layers from the per-step cost of Keras 2 vs Keras 3).
  TFP's layers need Keras 2 (``TF_USE_LEGACY_KERAS=1``), which must be set
  before TensorFlow is imported, so they run in a worker subprocess;
* ``torch_flipout`` and ``torch_frequentist``: the same two tfp_bcnn
  LeNet-5s on the PyTorch backend (``KERAS_BACKEND=torch``, CPU, eager: the
  Keras torch trainer does not compile), in another worker subprocess, with
  ``--torch-threads`` intra-op threads (default: torch's own, one per core).

The models' epochs are interleaved (epoch e of every model before epoch e + 1
of any), so a change of load on a shared machine hits all of them alike.

Targets: Flipout <= 2.0x frequentist and faster than TFP Flipout;
reparameterization <= 1.2x; local reparameterization <= 2.2x; torch Flipout
<= 3.0x the TensorFlow backend's Flipout.

Usage::

    python benchmarks/train_cost.py            # 4 epochs, about 1.5 min on 2 cores
    python benchmarks/train_cost.py --epochs 3 --json results.json --skip-tfp --skip-torch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap

from _common import Timer, emit, log, recipe, recipe_note, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGETS = {
    "flipout": 2.0,
    "flipout+kl_metric": 2.0,
    "reparameterization": 1.2,
    "local_reparameterization": 2.2,
}
#: torch Flipout epoch over the TensorFlow backend's Flipout epoch.
TORCH_TARGET = 3.0

# The end of both worker scripts: one epoch of ``nets[name]`` per line read from
# stdin (its seconds back as JSON), or every net's test accuracy for "accuracy".
# The script above it defines ``nets``, ``Callback`` (its Keras' base class),
# ``x, y, xt, yt`` and ``batch_size``.
EPOCH_LOOP = textwrap.dedent(
    """
    class Timer(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()
        def on_epoch_end(self, epoch, logs=None):
            self.elapsed = time.perf_counter() - self.t

    for line in sys.stdin:
        name = line.strip()
        if name == "accuracy":
            acc = {k: float(np.mean(m.predict(xt, batch_size=500, verbose=0).argmax(-1) == yt))
                   for k, m in nets.items()}
            print(json.dumps(acc), flush=True)
            continue
        timer = Timer()
        nets[name].fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
        print(json.dumps({"seconds": timer.elapsed}), flush=True)
    """
)

# The Keras 2 references (TFP Flipout LeNet-5 and its tf_keras frequentist
# twin), run with TF_USE_LEGACY_KERAS=1 as a worker: it trains one epoch of
# the named model per line read from stdin and answers with one JSON line, so
# the main process can interleave its epochs with those of the other models.
LEGACY_WORKER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras
    from tfp_bcnn import datasets

    batch_size, n_train, seed = (int(v) for v in sys.argv[1:4])
    learning_rate = float(sys.argv[4])
    (x, y), (xt, yt) = datasets.mnist_5k()
    x, y = x[:n_train], y[:n_train]
    tf_keras.utils.set_random_seed(seed)
    tfd = tfp.distributions
    L = tf_keras.layers

    def lenet5(bayesian):
        kl = lambda q, p, _: tfd.kl_divergence(q, p) / n_train  # noqa: E731
        def conv(f, **kw):
            if bayesian:
                return tfp.layers.Convolution2DFlipout(
                    f, 5, activation="relu", kernel_divergence_fn=kl, **kw)
            return L.Conv2D(f, 5, activation="relu", **kw)
        def dense(u, act="relu"):
            if bayesian:
                return tfp.layers.DenseFlipout(u, activation=act, kernel_divergence_fn=kl)
            return L.Dense(u, activation=act)
        model = tf_keras.Sequential([
            tf_keras.Input((28, 28, 1)),
            conv(6, padding="same"), L.MaxPooling2D(2),
            conv(16), L.MaxPooling2D(2), L.Flatten(),
            dense(120), dense(84), dense(10, "softmax"),
        ])
        model.compile(tf_keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    Callback = tf_keras.callbacks.Callback
    nets = {"tfp_flipout": lenet5(True), "tf_keras_frequentist": lenet5(False)}
    print(json.dumps({"ready": tf_keras.__version__}), flush=True)
    """
) + EPOCH_LOOP

LEGACY_MODELS = ("tfp_flipout", "tf_keras_frequentist")

# The PyTorch-backend twins: the backend is fixed when Keras is imported, so
# they too train in a worker that answers one epoch per line read.
TORCH_WORKER = textwrap.dedent(
    """
    import json, sys, time
    import keras, numpy as np, torch
    from tfp_bcnn import datasets, models

    batch_size, n_train, seed, threads = (int(v) for v in sys.argv[1:5])
    learning_rate = float(sys.argv[5])
    if threads > 0:
        torch.set_num_threads(threads)
    (x, y), (xt, yt) = datasets.mnist_5k()
    x, y = x[:n_train], y[:n_train]
    keras.utils.set_random_seed(seed)
    nets = {"torch_frequentist": models.lenet5(bayesian=False, seed=seed),
            "torch_flipout": models.lenet5(estimator="flipout", num_train_examples=n_train,
                                           seed=seed)}
    for m in nets.values():
        m.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    Callback = keras.callbacks.Callback
    print(json.dumps({"ready": torch.__version__, "threads": torch.get_num_threads(),
                      "backend": keras.backend.backend()}), flush=True)
    """
) + EPOCH_LOOP

TORCH_MODELS = ("torch_flipout", "torch_frequentist")
NATIVE_MODELS = (
    "frequentist",
    "flipout",
    "reparameterization",
    "local_reparameterization",
    "flipout+kl_metric",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class NativeModel:
    """A tfp_bcnn LeNet-5 trained one epoch at a time in this process."""

    def __init__(self, name, used, data, seed):
        import keras

        from tfp_bcnn import models

        (self.x, self.y), (self.xt, self.yt) = data
        self.batch_size = used["batch_size"]
        keras.utils.set_random_seed(seed)
        estimator = name.split("+")[0]
        if name == "frequentist":
            self.model = models.lenet5(bayesian=False, seed=seed)
        else:
            self.model = models.lenet5(
                estimator=estimator, num_train_examples=len(self.x), seed=seed
            )
        if name.endswith("+kl_metric"):
            models.compile_bayesian(self.model, used["learning_rate"])
        else:
            self.model.compile(
                keras.optimizers.Adam(used["learning_rate"]), "sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )

    def epoch(self):
        import keras

        timer = Timer()

        class EpochTimer(keras.callbacks.Callback):  # the epoch alone, not fit's set-up
            def on_epoch_begin(self, epoch, logs=None):
                timer.__enter__()

            def on_epoch_end(self, epoch, logs=None):
                timer.__exit__()

        self.model.fit(self.x, self.y, batch_size=self.batch_size, epochs=1, verbose=0,
                       callbacks=[EpochTimer()])
        return timer.seconds

    def accuracy(self):
        import numpy as np

        probs = self.model.predict(self.xt, batch_size=500, verbose=0)
        return float(np.mean(probs.argmax(-1) == self.yt))


class Worker:
    """A worker subprocess (``script``) that trains one epoch per request."""

    what = "worker"

    def __init__(self, script, args, env):
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a pipe could fill and block
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env={k: v for k, v in dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                                     **env).items() if v is not None},
        )
        self.ready = self._ask(None)

    def _ask(self, request):
        if request is not None:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.stderr.seek(0)
                raise RuntimeError(f"The {self.what} failed:\n{self.stderr.read()[-3000:]}")
            if line.startswith("{"):
                return json.loads(line)

    def epoch(self, name):
        return self._ask(name)["seconds"]

    def accuracies(self):
        return self._ask("accuracy")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


class LegacyWorker(Worker):
    """The Keras 2 / TFP subprocess (``LEGACY_WORKER``)."""

    what = "TFP reference"

    def __init__(self, batch_size, n_train, seed, learning_rate):
        super().__init__(LEGACY_WORKER, [batch_size, n_train, seed, repr(float(learning_rate))],
                         {"TF_USE_LEGACY_KERAS": "1"})
        self.tf_keras_version = self.ready["ready"]


class TorchWorker(Worker):
    """The PyTorch-backend subprocess (``TORCH_WORKER``); ``threads`` 0: torch's default."""

    what = "PyTorch-backend worker"

    def __init__(self, batch_size, n_train, seed, learning_rate, threads=0):
        super().__init__(TORCH_WORKER, [batch_size, n_train, seed, threads,
                                        repr(float(learning_rate))],
                         {"KERAS_BACKEND": "torch", "TF_USE_LEGACY_KERAS": None})
        self.torch_version, self.threads = self.ready["ready"], self.ready["threads"]


def median_after_first(times):
    rest = times[1:] if len(times) > 1 else times
    return statistics.median(rest)


def versions():
    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "numpy": np.__version__,
    }


def table(results, baseline):
    rows = [
        "| model | median epoch (s) | x frequentist | target | test acc. |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ratio = r["median_epoch_s"] / baseline
        target = TARGETS.get(name)
        if name == "torch_flipout" and "flipout" in results:
            vs_tf = r["median_epoch_s"] / results["flipout"]["median_epoch_s"]
            target_txt = (f"<= {TORCH_TARGET:.1f} x TF flipout: {vs_tf:.2f} "
                          f"({'met' if vs_tf <= TORCH_TARGET else 'MISSED'})")
        elif name in LEGACY_MODELS or name in TORCH_MODELS:
            target_txt = "-"
        elif target is None:
            target_txt = "1.0"
        else:
            target_txt = f"<= {target:.1f} ({'met' if ratio <= target else 'MISSED'})"
        rows.append(
            f"| {name} | {r['median_epoch_s']:.2f} | {ratio:.2f} | {target_txt} | "
            f"{r['test_accuracy']:.3f} |"
        )
    return "\n".join(rows)


def start_workers(args, used, n_train, info, names):
    """The TFP and PyTorch-backend workers that the options ask for (or None);
    adds their versions to ``info`` and their models to ``names``."""
    worker = torch_worker = None
    if not args.skip_tfp:
        worker = LegacyWorker(used["batch_size"], n_train, args.seed, used["learning_rate"])
        info["tf_keras"] = worker.tf_keras_version
        names += LEGACY_MODELS
    if not args.skip_torch:
        torch_worker = TorchWorker(used["batch_size"], n_train, args.seed,
                                   used["learning_rate"], args.torch_threads)
        info["torch"] = torch_worker.torch_version
        info["torch_threads"] = torch_worker.threads
        names += TORCH_MODELS
    return worker, torch_worker


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model (>= 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: models.RECIPE")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-tfp", action="store_true", help="skip the TFP reference")
    parser.add_argument("--skip-torch", action="store_true",
                        help="skip the PyTorch-backend rows (torch not installed)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="intra-op threads of the torch worker (0: torch's default)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--markdown", help="write the markdown block to this file")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(
            f"--epochs must be >= 2 (the first epoch is not timed). Received: {args.epochs}"
        )

    import keras
    import tensorflow as tf

    from tfp_bcnn import datasets

    load_start = os.getloadavg()[0]

    tf.get_logger().setLevel("ERROR")  # one predict function per model is no retracing issue
    used = recipe(batch_size=args.batch_size)
    (x, y), test = datasets.mnist_5k()
    data = ((x[: args.train_size], y[: args.train_size]), test)
    info = versions()
    names = list(NATIVE_MODELS)
    native = {name: NativeModel(name, used, data, args.seed) for name in NATIVE_MODELS}
    worker, torch_worker = start_workers(args, used, len(data[0][0]), info, names)

    def epoch(name):
        if name in native:
            return native[name].epoch()
        return (torch_worker if name in TORCH_MODELS else worker).epoch(name)

    # Epoch e of every model runs before epoch e + 1 of any, so a change of
    # load on the machine hits all models alike; epoch 1 (tracing) is not timed.
    times = {name: [] for name in names}
    for e in range(args.epochs):
        for name in names:
            times[name].append(epoch(name))
        log(f"epoch {e + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    accuracy = {name: m.accuracy() for name, m in native.items()}
    if worker is not None:
        accuracy.update(worker.accuracies())
        worker.close()
    if torch_worker is not None:
        accuracy.update(torch_worker.accuracies())
        torch_worker.close()
    results = {
        name: {"epoch_times": times[name], "test_accuracy": accuracy[name]} for name in names
    }
    for r in results.values():
        r["median_epoch_s"] = median_after_first(r["epoch_times"])
    baseline = results["frequentist"]["median_epoch_s"]

    del baseline
    machine = f"{usable_cores()} cores, {cpu_model()}"
    report = {"machine": machine, "backend": keras.backend.backend(), "versions": info,
              "batch_size": used["batch_size"], "recipe": used, "epochs": args.epochs,
              "train_size": len(data[0][0]), "results": results,
              "load_average": [load_start, os.getloadavg()[0]]}
    emit(args.markdown, markdown(report))
    write_json(args.json, report)


def markdown(report) -> str:
    """The benchmark's markdown block, from the JSON report alone."""
    results = report["results"]
    baseline = results["frequentist"]["median_epoch_s"]
    lines = [
        f"LeNet-5 on MNIST-5k ({report['train_size']} images, batch {report['batch_size']}), "
        f"{report['epochs']} epochs per model, interleaved (epoch e of every model before "
        f"epoch e + 1 of any); median of epochs 2..{report['epochs']} (epoch 1 traces); one "
        f"seed. Backend {report['backend']}; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ". "
        + (recipe_note(dict(report["recipe"], epochs=report["epochs"]),
                       "a cost per epoch needs only a few") if "recipe" in report else ""),
        "",
        table(results, baseline),
    ]
    if "tfp_flipout" in results:
        ratio = results["flipout"]["median_epoch_s"] / results["tfp_flipout"]["median_epoch_s"]
        lines += ["", f"Flipout here against TFP's Flipout layers (tf_keras): {ratio:.2f}x the "
                  "time per epoch."]
    if "torch_flipout" in results:
        lines += ["", torch_note(report)]
    return "\n".join(lines)


def torch_note(report) -> str:
    """The PyTorch-backend rows in words: the target (met or missed, by how
    much), where the time goes, the threads and the load."""
    r, versions_ = report["results"], report["versions"]

    def t(name):
        return r[name]["median_epoch_s"]

    flip, freq = t("torch_flipout") / t("flipout"), t("torch_frequentist") / t("frequentist")
    verdict = ("met" if flip <= TORCH_TARGET
               else f"MISSED by {flip - TORCH_TARGET:.2f}x")
    load = report.get("load_average")
    return (
        f"PyTorch backend (torch {versions_.get('torch')}, eager: Keras' torch trainer does "
        f"not compile the step; {versions_.get('torch_threads')} intra-op thread(s), "
        f"TensorFlow on its default threads): Flipout {flip:.2f}x the TensorFlow backend's "
        f"Flipout epoch (target <= {TORCH_TARGET:.1f}: {verdict}). The two factors of it: "
        f"the frequentist twin alone is {freq:.2f}x its TensorFlow epoch (the backend's cost "
        "per step: eager ops and autograd against a compiled tf.function), and Flipout "
        f"costs {t('torch_flipout') / t('torch_frequentist'):.2f}x the frequentist on torch "
        f"against {t('flipout') / t('frequentist'):.2f}x on TensorFlow (the layers' own cost)."
        + (f" Load average over the run: {load[0]:.1f} at the start, {load[1]:.1f} at the end "
           f"on {report['machine'].split(',')[0]} (torch's spinning OpenMP threads are why "
           "it runs on one thread here)." if load else "")
    )

if __name__ == "__main__":
    main()
