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
* latency per image (batch 1, one LiteRT thread, median of ``--repeats``,
  every file timed in one interleaved loop by ``_latency.time_tflite_files``):
  S samples tiled in one invocation vs S single-sample invocations (S times
  the one-sample file's median) vs the deterministic LeNet-5;
* ONNX (`tfp_bcnn.export.to_onnx`, run by ONNX Runtime through
  ``OnnxBayesianModel``): file sizes and argmax agreement with Keras of the
  lrt, weights and moments files (targets: >= 97 % for Monte Carlo against
  ``predict``, >= 99 % for moments against ``predict(method="moments")``),
  and their latency in the same interleaved loop as the TFLite files,
  beside a TFLite moments file (target: ONNX moments within 2x of it).

Training follows ``models.RECIPE`` (``--epochs`` etc. override it; the block
names a departure).

The markdown block goes to stdout (and to ``--markdown FILE``). Run::

    python benchmarks/export.py [--epochs 5] [--sparsity 0.9] [--num-samples 32]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _common import Timer, emit, markdown_table, recipe, recipe_note, spearman, train
from _latency import time_tflite_files

from tfp_bcnn import datasets, export, models, pruning
from tfp_bcnn.export.runtime import OnnxBayesianModel, TFLiteBayesianModel
from tfp_bcnn.uncertainty import predict

VARIANTS = {
    "lrt, dense": dict(sampling="lrt", sparse=False),
    "lrt, sparse": dict(sampling="lrt", sparse=True),
    "lrt, sparse + int8": dict(sampling="lrt", sparse=True, quantize="dynamic"),
    "weights, dense": dict(sampling="weights", sparse=False),
    "weights, sparse": dict(sampling="weights", sparse=True),
}


def _acc(p, y) -> float:
    return float(np.mean(p.mean.argmax(1) == y))


def _row(name, p, ref, ood=None, digits=4) -> list:
    """Cells of one prediction against the reference ``ref``: mean epistemic (and
    on ``ood``), Spearman rank correlation of epistemic, mean |mean - ref.mean|."""
    return [name, f"{p.epistemic.mean():.{digits}f}",
            "" if ood is None else f"{ood.epistemic.mean():.{digits}f}",
            f"{spearman(ref.epistemic, p.epistemic):.3f}",
            f"{np.mean(np.abs(p.mean - ref.mean)):.{digits}f}"]


def train_and_prune(args, used, data):
    """Train with ``used``, prune one-shot by SNR (one global threshold, as
    ``tfp-bcnn prune`` and the main job do), fine-tune with the masks fixed."""
    (x, y), (xt, yt) = data
    model = models.lenet5(num_train_examples=len(x), seed=args.seed)
    with Timer() as t:
        train(model, x, y, recipe=used, seed=args.seed)
        acc_unpruned = _acc(predict(model, xt, num_samples=args.num_samples), yt)
        pruning.prune_now(model, args.sparsity, criterion="snr", scope="global")
        models.compile_bayesian(model, used["learning_rate"])
        train(model, x, y, recipe=dict(used, epochs=args.finetune_epochs))
    return model, acc_unpruned, t.seconds


def export_variants(model, tmp, s, xt, x_ood) -> dict:
    """Every file of `VARIANTS`: its description, conversion time and predictions."""
    out = {}
    for name, kwargs in VARIANTS.items():
        path = os.path.join(tmp, name.replace(", ", "_").replace(" + ", "_") + ".tflite")
        with Timer() as t:
            export.to_tflite(model, path, num_samples=s, **kwargs)
        runner = TFLiteBayesianModel(path)
        out[name] = {"path": path, "info": export.describe(path), "convert_s": t.seconds,
                     "resolver": runner.op_resolver, "p": runner.predict(xt),
                     "p_ood": runner.predict(x_ood)}
    return out


#: ONNX files of the benchmark: label -> sampling.
ONNX_VARIANTS = {"ONNX lrt": "lrt", "ONNX weights": "weights", "ONNX moments": "moments"}
#: Argmax agreement targets with Keras (issue 25): Monte Carlo, moments.
AGREEMENT_TARGETS = {"lrt": 0.97, "weights": 0.97, "moments": 0.99}


def export_onnx(model, tmp, s, xt) -> dict:
    """The `ONNX_VARIANTS` files and a TFLite moments file (the latency reference):
    path, description, conversion time and predictions on ``xt``."""
    out = {}
    for name, sampling in ONNX_VARIANTS.items():
        path = os.path.join(tmp, name.replace(" ", "_") + ".onnx")
        with Timer() as t:
            export.to_onnx(model, path, num_samples=s, sampling=sampling)
        out[name] = {"path": path, "sampling": sampling, "info": export.describe(path),
                     "convert_s": t.seconds, "p": OnnxBayesianModel(path).predict(xt)}
    path = os.path.join(tmp, "moments_sparse.tflite")
    with Timer() as t:
        export.to_tflite(model, path, num_samples=s, sampling="moments")
    out["TFLite moments, sparse"] = {
        "path": path, "sampling": "moments", "info": export.describe(path),
        "convert_s": t.seconds, "p": TFLiteBayesianModel(path).predict(xt)}
    return out


def onnx_section(onnx_files, yt, keras_pred, keras_moments) -> str:
    """Sizes, ops and agreement of the ONNX files against Keras (targets named)."""
    rows = []
    for name, f in onnx_files.items():
        info, p, sampling = f["info"], f["p"], f["sampling"]
        ref = keras_moments if sampling == "moments" else keras_pred
        agree = float(np.mean(p.mean.argmax(1) == ref.mean.argmax(1)))
        target = AGREEMENT_TARGETS[sampling]
        verdict = f"{'met' if agree >= target else 'MISSED'} (>= {target:.0%})"
        rows.append([name, f"{info['size_bytes']:,}", f"{info['gzip_bytes']:,}",
                     info["op_count"], f"{_acc(p, yt):.4f}",
                     "moments" if sampling == "moments" else "Monte Carlo",
                     f"{agree:.4f}", f"{np.mean(np.abs(p.mean - ref.mean)):.5f}", verdict,
                     f"{f['convert_s']:.1f}"])
    return ("## ONNX files (ONNX Runtime) against Keras\n\n"
            "Agreement is with Keras `tfp_bcnn.predict` of the same pruned model on the 1,000 "
            "test images: Monte Carlo (S samples) for the lrt / weights files, "
            "`method=\"moments\"` for the moments files; both sides draw their own "
            "samples, so the difference is Monte Carlo error when the export is right.\n\n"
            + markdown_table(["file", "bytes", "gzip", "ops", "accuracy", "Keras reference",
                              "agree w/ Keras", "mean abs diff of mean vs Keras", "target",
                              "convert s"], rows)
            + "\n\nThe ONNX files store their kernels dense (tf2onnx writes dense "
            "initializers; ONNX Runtime's CPU kernels do not run ONNX sparse tensors), so "
            "they are as large as the dense TFLite files above, not the sparse ones; gzip "
            "takes most of the pruned zeros back. The weights file unrolls one convolution "
            "per Monte Carlo sample (its op count), as the TFLite file does.")


def sizes_section(files, yt, keras_pred) -> str:
    """Sizes of each file against the dense one of its sampling, and its agreement."""
    dense = {"lrt": files["lrt, dense"]["info"]["size_bytes"],
             "weights": files["weights, dense"]["info"]["size_bytes"]}
    rows = []
    for name, f in files.items():
        info, p = f["info"], f["p"]
        rows.append([
            name, f"{info['size_bytes']:,}", f"{info['gzip_bytes']:,}",
            f"{info['size_bytes'] / dense[name.split(',')[0]]:.3f}x", info["sparse_tensors"],
            info["int8_tensors"], f"{_acc(p, yt):.4f}",
            f"{np.mean(p.mean.argmax(1) == keras_pred.mean.argmax(1)):.4f}",
            f"{np.mean(np.abs(p.mean - keras_pred.mean)):.5f}", f["resolver"],
            f"{f['convert_s']:.1f}"])
    return "## Sizes and accuracy\n\n" + markdown_table(
        ["TFLite file", "bytes", "gzip", "vs dense (same sampling)", "sparse tensors",
         "int8 tensors", "accuracy", "agree w/ Keras", "mean abs diff of mean vs Keras",
         "op resolver", "convert s"], rows)


def sampling_section(model, files, keras_pred, keras_ood, xt, s) -> str:
    """lrt vs weights sampling at the trained posterior width."""
    again = predict(model, xt, num_samples=s)
    def row(name, p, ood=None):
        cells = _row(name, p, keras_pred, ood, digits=5)
        return cells[:3] + [f"{p.predictive_entropy.mean():.5f}"] + cells[3:]

    rows = [["Keras Flipout", f"{keras_pred.epistemic.mean():.5f}",
             f"{keras_ood.epistemic.mean():.5f}",
             f"{keras_pred.predictive_entropy.mean():.5f}", "1", "0"],
            row("Keras Flipout (2nd run: Monte Carlo noise)", again)]
    rows += [row(f"TFLite {n}", files[n]["p"], files[n]["p_ood"])
             for n in ("lrt, sparse", "weights, sparse")]
    return ("## lrt vs weights sampling (what ignoring weight sharing changes)\n\n"
            + markdown_table(["", "mean epistemic MNIST (nats)", "mean epistemic letters (OOD)",
                              "mean predictive entropy MNIST",
                              "Spearman epistemic vs Keras (MNIST)",
                              "mean abs diff of mean vs Keras"], rows))


def wide_posterior(model, xt, yt, x_ood, s, scale, tmp) -> str:
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
    ref, ref_ood = predict(wide, xt, num_samples=k * s), predict(wide, x_ood, num_samples=k * s)
    again = predict(wide, xt, num_samples=k * s)
    rows = [["Keras Flipout", f"{_acc(ref, yt):.4f}", f"{ref.epistemic.mean():.4f}",
             f"{ref_ood.epistemic.mean():.4f}", "1", "0"],
            ["Keras Flipout (2nd run)", f"{_acc(again, yt):.4f}",
             *_row("", again, ref)[1:]]]
    for sampling in ("lrt", "weights"):
        path = os.path.join(tmp, f"wide_{sampling}.tflite")
        export.to_tflite(wide, path, num_samples=s, sampling=sampling)
        runner = TFLiteBayesianModel(path)
        p, p_ood = runner.predict(xt, num_invocations=k), runner.predict(x_ood, num_invocations=k)
        rows.append([f"TFLite {sampling}", f"{_acc(p, yt):.4f}", *_row("", p, ref, p_ood)[1:]])
    return (f"Same model with every posterior std x{scale:g} (a wide posterior, where the "
            f"correlation that lrt drops matters); {k} x {s} = {k * s} samples "
            f"(TFLite: {k} invocations pooled by the runtime):\n\n"
            + markdown_table(["", "accuracy", "mean epistemic MNIST",
                              "mean epistemic letters (OOD)", "Spearman epistemic vs Keras",
                              "mean abs diff of mean vs Keras"], rows))


def _time_what_loads(files: dict, repeats: int, seed: int) -> tuple[dict, dict]:
    """`time_tflite_files` on every file the default (XNNPack) interpreter can
    prepare, interleaved; ``({label: result}, {label: why not timed})``.

    XNNPack cannot take sparse int8 kernels; the runtime then falls back to
    the builtin kernels, which `time_tflite_files` does not (it times what
    LiteRT does by default), so such a file is named, not timed.
    """
    untimed = {}
    for label, path in files.items():
        try:
            time_tflite_files({label: path}, repeats=1, warmup=0)
        except RuntimeError as err:
            first = str(err).split("failed to delegate")[1:2] or [str(err)]
            untimed[label] = ("the default XNNPack delegate cannot prepare it (LiteRT: "
                              f"failed to delegate {first[0].strip()[:40]} ...)")
    timed = {k: v for k, v in files.items() if k not in untimed}
    return time_tflite_files(timed, repeats=repeats, seed=seed), untimed


def _onnx_verdict(ms, onnx_files, repeats, seed) -> str:
    """The latency target: ONNX moments within 2x of the TFLite moments file, in
    the loop of every file and in a loop of the two moments files alone."""
    pair = ("ONNX moments", "TFLite moments, sparse")
    if not onnx_files or not all(k in ms for k in pair):
        return ""
    ratio = ms[pair[0]] / ms[pair[1]]
    alone = time_tflite_files({k: onnx_files[k]["path"] for k in pair},
                              repeats=10 * repeats, seed=seed)
    ratio_alone = alone[pair[0]]["ms"] / alone[pair[1]]["ms"]
    return (f"\n\nTarget ONNX moments latency within 2x of the TFLite moments file: "
            f"{ratio:.2f}x in the loop above, {'met' if ratio <= 2 else 'MISSED'}; "
            f"{ratio_alone:.2f}x ({alone[pair[0]]['ms']:.3f} vs {alone[pair[1]]['ms']:.3f} ms) "
            f"when the two moments files are timed alone in their own interleaved loop of "
            f"{10 * repeats} rounds. ONNX Runtime times `session.run` of the `samples` output, "
            "what `OnnxBayesianModel` reads (it skips the in-graph summaries that TFLite's "
            "`invoke()` computes); both one thread, same random image. Why ONNX Runtime is "
            "slower here: at batch 1 the moments graph is about 160 tiny ops, so the cost is "
            "per-op dispatch, and ONNX Runtime runs every node through its own kernel (plus "
            "the NHWC <-> NCHW Transposes tf2onnx puts around each convolution and pooling of "
            "the mean and variance paths), where LiteRT hands most of the graph to XNNPack in "
            "3 partitions. The margin moves with the machine's load (compare the two "
            "ratios).")


def latency_section(model, files, tmp, s, repeats, seed, onnx_files=None) -> str:
    """Latency per image of every file (TFLite and ONNX), timed interleaved in one loop."""
    single = os.path.join(tmp, "lrt_single.tflite")
    export.to_tflite(model, single, num_samples=1)
    det_path = os.path.join(tmp, "deterministic.tflite")
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export summary
        det = tf.lite.TFLiteConverter.from_keras_model(
            models.lenet5(bayesian=False, seed=seed)).convert()
    with open(det_path, "wb") as f:
        f.write(det)
    timed = {f"lrt sparse, {s} samples tiled in 1 invocation": (files["lrt, sparse"]["path"], 1),
             f"lrt sparse + int8, {s} tiled in 1 invocation":
                 (files["lrt, sparse + int8"]["path"], 1),
             f"weights sparse, {s} tiled in 1 invocation": (files["weights, sparse"]["path"], 1),
             f"lrt sparse, {s} single-sample invocations": (single, s),
             "deterministic LeNet-5, 1 invocation": (det_path, 1)}
    timed.update({k: (f["path"], 1) for k, f in (onnx_files or {}).items()})
    res, untimed = _time_what_loads({k: v[0] for k, v in timed.items()}, repeats, seed)
    ms = {k: res[k]["ms"] * n for k, (_, n) in timed.items() if k in res}
    base = ms["deterministic LeNet-5, 1 invocation"]
    rows = [[k, f"{v:.3f}", f"{v / base:.1f}x", res[k]["partitions"]] for k, v in ms.items()]
    rows += [[k, f"not timed: {why}", "", ""] for k, why in untimed.items()]
    return (f"## Latency per image (batch 1, 1 thread, median of {repeats}, all files "
            "interleaved in one loop; S single-sample invocations = S x the one-sample "
            "file's median)\n\n"
            + markdown_table(["", "ms per image", "vs deterministic", "XNNPack partitions"],
                             rows) + _onnx_verdict(ms, onnx_files, repeats, seed))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: models.RECIPE")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigma-scale", type=float, default=30.0,
        help="posterior std multiplier of the wide-posterior comparison of lrt vs weights")
    parser.add_argument("--markdown", help="write the markdown block to this file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    s, used = args.num_samples, recipe(epochs=args.epochs)
    keras.utils.set_random_seed(args.seed)
    data = (x, y), (xt, yt) = datasets.mnist_5k()
    x_ood = datasets.letters()[0][: len(xt)]
    model, acc_unpruned, train_s = train_and_prune(args, used, data)
    sparsity = pruning.sparsity(model)
    keras_pred, keras_ood = predict(model, xt, num_samples=s), predict(model, x_ood, num_samples=s)
    tmp = tempfile.mkdtemp(prefix="bench_export_")
    files = export_variants(model, tmp, s, xt, x_ood)
    onnx_files = export_onnx(model, tmp, s, xt)
    keras_moments = predict(model, xt, num_samples=s, method="moments")
    blocks = [
        f"# Export benchmark: LeNet-5 Flipout, {args.sparsity:.0%} of the Bayesian weights "
        f"pruned by SNR, one global threshold (measured {sparsity['total']:.3f}), S = {s}",
        f"Keras: {used['epochs']} + {args.finetune_epochs} epochs on MNIST-5k ({train_s:.0f} s), "
        f"test accuracy {_acc(keras_pred, yt):.4f} pruned, {acc_unpruned:.4f} before pruning "
        f"(tfp_bcnn.predict, S = {s}); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, TF {tf.__version__}. "
        + recipe_note(used, "set on the command line"),
        sizes_section(files, yt, keras_pred),
        sampling_section(model, files, keras_pred, keras_ood, xt, s),
        wide_posterior(model, xt, yt, x_ood, s, args.sigma_scale, tmp),
        onnx_section(onnx_files, yt, keras_pred, keras_moments),
        latency_section(model, files, tmp, s, args.repeats, args.seed, onnx_files),
    ]
    emit(args.markdown, "\n\n".join(blocks))


if __name__ == "__main__":
    main()
