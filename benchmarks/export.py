"""Export benchmark: sizes, accuracy and latency of a pruned LeNet-5 Flipout on TFLite.

A LeNet-5 Flipout (`tfp_bcnn.models.lenet5`) is trained on MNIST-5k, pruned
one-shot by magnitude to ``--sparsity`` (default 90%) with
`tfp_bcnn.pruning.prune_now`, fine-tuned with the masks fixed, then exported:

* sizes: dense vs sparse TFLite vs sparse + dynamic-range int8, for both
  samplings (``lrt``: constant mean / variance kernels; ``weights``: kernels
  sampled at run time, pruned ones stored sparse);
* accuracy and uncertainty of each file (numpy + LiteRT runtime, S samples)
  against Keras ``tfp_bcnn.predict`` on the 1,000 MNIST-5k test images, and
  what ``lrt`` changes against ``weights`` (``lrt`` ignores the weight sharing
  of a convolution across positions): mean epistemic uncertainty on MNIST and
  on out-of-distribution letters, mean |difference| of predictive means, and
  the rank correlation of epistemic uncertainty;
* latency per image (batch 1, one LiteRT thread, median of ``--repeats``): S
  samples tiled in one invocation vs S single-sample invocations vs the
  deterministic LeNet-5.

The markdown block goes to stdout (and to ``--markdown FILE``). Run::

    python benchmarks/export.py [--epochs 5] [--sparsity 0.9] [--num-samples 32]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tfp_bcnn import datasets, export, models, pruning
from tfp_bcnn.export.runtime import TFLiteBayesianModel
from tfp_bcnn.uncertainty import predict


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _latency(path, repeats, invocations=1):
    """Median seconds per image of ``invocations`` calls on one image."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
        try:  # XNNPACK cannot take sparse int8 kernels: fall back as the runtime does
            interpreter = Interpreter(
                model_path=path, num_threads=1, experimental_op_resolver_type=resolver
            )
            runner = interpreter.get_signature_runner()
            name = next(iter(runner.get_input_details()))
            runner(**{name: x})  # allocate, warm up
            break
        except RuntimeError:
            continue
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(invocations):
            runner(**{name: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _wide_posterior(model, xt, yt, x_ood, s, scale, tmp, emit):
    """lrt vs weights where it matters: every posterior std multiplied by ``scale``."""
    from tfp_bcnn.layers import BayesianLayer
    from tfp_bcnn.layers._base import rho_from_sigma

    wide = keras.models.clone_model(model)
    wide.set_weights(model.get_weights())
    for layer in wide.layers:
        if isinstance(layer, BayesianLayer):
            sigma = keras.ops.convert_to_numpy(layer.kernel_sigma) * scale
            layer.kernel_rho.assign(rho_from_sigma(sigma).astype(np.float32))
    k = 4  # invocations pooled: 4 x S samples, so Monte Carlo noise is small
    ref = predict(wide, xt, num_samples=k * s)
    ref_ood = predict(wide, x_ood, num_samples=k * s)
    again = predict(wide, xt, num_samples=k * s)
    emit(
        f"\nSame model with every posterior std x{scale:g} (a wide posterior, where the "
        f"correlation that lrt drops matters); {k} x {s} = {k * s} samples "
        f"(TFLite: {k} invocations pooled by the runtime):\n"
    )
    emit(
        "| | accuracy | mean epistemic MNIST | mean epistemic letters (OOD) | "
        "Spearman epistemic vs Keras | mean abs diff of mean vs Keras |"
    )
    emit("|---|---:|---:|---:|---:|---:|")
    emit(
        f"| Keras Flipout | {np.mean(ref.mean.argmax(1) == yt):.4f} | {ref.epistemic.mean():.4f} | "
        f"{ref_ood.epistemic.mean():.4f} | 1 | 0 |"
    )
    emit(
        f"| Keras Flipout (2nd run) | {np.mean(again.mean.argmax(1) == yt):.4f} | "
        f"{again.epistemic.mean():.4f} | | {_spearman(ref.epistemic, again.epistemic):.3f} | "
        f"{np.mean(np.abs(again.mean - ref.mean)):.4f} |"
    )
    for sampling in ("lrt", "weights"):
        path = os.path.join(tmp, f"wide_{sampling}.tflite")
        export.to_tflite(wide, path, num_samples=s, sampling=sampling)
        runner = TFLiteBayesianModel(path)
        p, p_ood = runner.predict(xt, num_invocations=k), runner.predict(x_ood, num_invocations=k)
        emit(
            f"| TFLite {sampling} | {np.mean(p.mean.argmax(1) == yt):.4f} | "
            f"{p.epistemic.mean():.4f} | "
            f"{p_ood.epistemic.mean():.4f} | {_spearman(ref.epistemic, p.epistemic):.3f} | "
            f"{np.mean(np.abs(p.mean - ref.mean)):.4f} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigma-scale",
        type=float,
        default=30.0,
        help="posterior std multiplier of the wide-posterior comparison of lrt vs weights",
    )
    parser.add_argument("--markdown", help="write the markdown block to this file")
    args = parser.parse_args(argv)
    s = args.num_samples
    lines = []  # the markdown block, printed and written at the end

    def emit(text=""):
        lines.append(text)

    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = datasets.mnist_5k()
    x_ood, _ = datasets.letters()
    x_ood = x_ood[: len(xt)]
    model = models.lenet5(num_train_examples=len(x), seed=args.seed)
    models.compile_bayesian(model)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    acc_unpruned = float(np.mean(predict(model, xt, num_samples=s).mean.argmax(1) == yt))
    # one global SNR threshold, as `tfp-bcnn prune` and the main job do
    pruning.prune_now(model, args.sparsity, criterion="snr", scope="global")
    models.compile_bayesian(model)
    model.fit(x, y, batch_size=64, epochs=args.finetune_epochs, verbose=0)
    train_s = time.perf_counter() - t0
    sparsity = pruning.sparsity(model)

    keras_pred = predict(model, xt, num_samples=s)
    keras_ood = predict(model, x_ood, num_samples=s)
    keras_acc = float(np.mean(keras_pred.mean.argmax(1) == yt))

    tmp = tempfile.mkdtemp(prefix="bench_export_")
    variants = {
        "lrt, dense": dict(sampling="lrt", sparse=False),
        "lrt, sparse": dict(sampling="lrt", sparse=True),
        "lrt, sparse + int8": dict(sampling="lrt", sparse=True, quantize="dynamic"),
        "weights, dense": dict(sampling="weights", sparse=False),
        "weights, sparse": dict(sampling="weights", sparse=True),
    }
    rows, preds = [], {}
    for name, kwargs in variants.items():
        path = os.path.join(tmp, name.replace(", ", "_").replace(" + ", "_") + ".tflite")
        t = time.perf_counter()
        export.to_tflite(model, path, num_samples=s, **kwargs)
        convert_s = time.perf_counter() - t
        info = export.describe(path)
        runner = TFLiteBayesianModel(path)
        p = runner.predict(xt)
        p_ood = runner.predict(x_ood)
        preds[name] = (p, p_ood, path)
        rows.append((name, info, convert_s, runner.op_resolver, p, p_ood))

    dense_size = {"lrt": rows[0][1]["size_bytes"], "weights": rows[3][1]["size_bytes"]}
    emit(
        f"# Export benchmark: LeNet-5 Flipout, {args.sparsity:.0%} of the Bayesian weights "
        f"pruned by SNR, one global threshold (measured {sparsity['total']:.3f}), S = {s}\n"
    )
    emit(
        f"Keras: {args.epochs} + {args.finetune_epochs} epochs on MNIST-5k ({train_s:.0f} s), "
        f"test accuracy {keras_acc:.4f} pruned, {acc_unpruned:.4f} before pruning "
        f"(tfp_bcnn.predict, S = {s}); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}.\n"
    )
    emit("## Sizes and accuracy\n")
    emit(
        "| TFLite file | bytes | gzip | vs dense (same sampling) | sparse tensors | int8 tensors "
        "| accuracy | agree w/ Keras | mean abs diff of mean vs Keras | op resolver | convert s |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, info, convert_s, resolver, p, _ in rows:
        base = dense_size[name.split(",")[0]]
        acc = np.mean(p.mean.argmax(1) == yt)
        agree = np.mean(p.mean.argmax(1) == keras_pred.mean.argmax(1))
        mad = np.mean(np.abs(p.mean - keras_pred.mean))
        emit(
            f"| {name} | {info['size_bytes']:,} | {info['gzip_bytes']:,} | "
            f"{info['size_bytes'] / base:.3f}x | {info['sparse_tensors']} | "
            f"{info['int8_tensors']} | "
            f"{acc:.4f} | {agree:.4f} | {mad:.5f} | {resolver} | {convert_s:.1f} |"
        )

    emit("\n## lrt vs weights sampling (what ignoring weight sharing changes)\n")
    emit(
        "| | mean epistemic MNIST (nats) | mean epistemic letters (OOD) "
        "| mean predictive entropy MNIST "
        "| Spearman epistemic vs Keras (MNIST) | mean abs diff of mean vs Keras |"
    )
    emit("|---|---:|---:|---:|---:|---:|")
    emit(
        f"| Keras Flipout | {keras_pred.epistemic.mean():.5f} | {keras_ood.epistemic.mean():.5f} | "
        f"{keras_pred.predictive_entropy.mean():.5f} | 1 | 0 |"
    )
    keras_again = predict(model, xt, num_samples=s)
    emit(
        f"| Keras Flipout (2nd run: Monte Carlo noise) | {keras_again.epistemic.mean():.5f} | | "
        f"{keras_again.predictive_entropy.mean():.5f} | "
        f"{_spearman(keras_pred.epistemic, keras_again.epistemic):.3f} | "
        f"{np.mean(np.abs(keras_again.mean - keras_pred.mean)):.5f} |"
    )
    for name in ("lrt, sparse", "weights, sparse"):
        p, p_ood, _ = preds[name]
        emit(
            f"| TFLite {name} | {p.epistemic.mean():.5f} | {p_ood.epistemic.mean():.5f} | "
            f"{p.predictive_entropy.mean():.5f} | "
            f"{_spearman(keras_pred.epistemic, p.epistemic):.3f} | "
            f"{np.mean(np.abs(p.mean - keras_pred.mean)):.5f} |"
        )

    _wide_posterior(model, xt, yt, x_ood, s, args.sigma_scale, tmp, emit)

    emit(f"\n## Latency per image (batch 1, 1 thread, median of {args.repeats})\n")
    single = os.path.join(tmp, "lrt_single.tflite")
    export.to_tflite(model, single, num_samples=1)
    det = models.lenet5(bayesian=False, seed=args.seed)
    det_path = os.path.join(tmp, "deterministic.tflite")
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export summary
        det_bytes = tf.lite.TFLiteConverter.from_keras_model(det).convert()
    with open(det_path, "wb") as f:
        f.write(det_bytes)
    lat = [
        (
            f"lrt sparse, {s} samples tiled in 1 invocation",
            _latency(preds["lrt, sparse"][2], args.repeats),
        ),
        (
            f"lrt sparse + int8, {s} tiled in 1 invocation",
            _latency(preds["lrt, sparse + int8"][2], args.repeats),
        ),
        (
            f"weights sparse, {s} tiled in 1 invocation",
            _latency(preds["weights, sparse"][2], args.repeats),
        ),
        (
            f"lrt sparse, {s} single-sample invocations",
            _latency(single, args.repeats, invocations=s),
        ),
        ("deterministic LeNet-5, 1 invocation", _latency(det_path, args.repeats)),
    ]
    emit("| | ms per image | vs deterministic |")
    emit("|---|---:|---:|")
    for name, sec in lat:
        emit(f"| {name} | {1e3 * sec:.3f} | {sec / lat[-1][1]:.1f}x |")

    block = "\n".join(lines)
    print(block)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(block + "\n")


if __name__ == "__main__":
    main()
