"""MobileNetV2 on TFLite: deterministic vs Monte Carlo vs moments, op counts, partitions, sizes.

``keras.applications.MobileNetV2(weights=None, alpha=--alpha)`` at
``--size`` x ``--size`` x 3 with 10 classes, converted by
``models.to_bayesian`` (Flipout, MOPED delta 0.1; every Conv2D,
DepthwiseConv2D and Dense Bayesian). Untrained weights: latency and file
size do not depend on the values (pruning keeps the largest |mu| per layer).

* Latency per image (batch 1, one LiteRT thread): every file of a table is
  timed in ONE interleaved loop (``benchmarks/_latency.py``: round-robin,
  shuffled order per round, median of ``--repeats``, p10-p90), with its op
  count, XNNPack delegate partitions and the ops left outside them:

  - the deterministic network (``tf.lite.TFLiteConverter``), the baseline;
  - ``sampling="lrt"`` Monte Carlo, S = ``--num-samples`` samples in one
    invocation (the image tiled S times), with the sign-flip noise of
    ``export/_random.py``;
  - the same with the previous noise, ``RANDOM_STANDARD_NORMAL`` over every
    pre-activation of every sample (``independent normals``), and with no
    noise at all (``zeros``, profiling only: what the rest of the graph
    costs), both built by patching the noise function of the export;
  - ``sampling="moments"`` (one pass of means and variances, BatchNorm
    folded into the kernels, one variance map per Dense / Conv layer on
    concatenated channels, the regrouped ReLU6 rule), and, for the shares of
    its parts (profiling files, built by patching the export):
    the previous file (two variance maps per layer, the 38-op ReLU6 rule),
    BatchNorm applied as its own rule (``fold_batch_norm=False``), and the
    ReLU6 moment rule replaced by ``(clip(mean, 0, 6), var)`` (wrong
    variances: what the linear maps and the rest cost without the
    activation rule).
* A second point (``--large-size`` / ``--large-alpha``, default alpha 1.0 at
  224x224x3): deterministic and moments only (the fully Bayesian MC-32 file
  would take seconds per call; a partially Bayesian one, possible with
  ``to_bayesian(last=k)``, is not measured yet).
* File sizes of the Bayesian ``lrt`` file: dense, pruned to 90 %
  (``pruning.prune_now``, stored sparse) and 90 % + int8.

Prints its markdown block (``--markdown`` also writes it, ``--json`` the raw
results)::

    python benchmarks/mobilenet.py                         # 96x96 and 224x224, S = 32
    python benchmarks/mobilenet.py --size 32 --repeats 5 --large-size 0
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _latency import format_ops, ratios, time_tflite_files  # noqa: E402

from tfp_bcnn import export, models, pruning  # noqa: E402
from tfp_bcnn import moments as moments_lib  # noqa: E402
from tfp_bcnn._io import write_bytes_atomic  # noqa: E402

#: Targets of issue 22 (ratios to the deterministic file, alpha 0.35 at 96x96).
TARGET_MOMENTS, TARGET_MC = 4.0, 160.0
#: Ratios from the thread's CPU time per invoke (`_latency`'s docstring: on a
#: loaded machine the wall-clock ratios against a sub-millisecond baseline are
#: inflated by preemption).
KEY = "cpu_ms"
#: Labels of the moments profiling files.
PREVIOUS = "moments, previous (38-op ReLU6, v + mu^2 pass)"
UNFOLDED = "moments, BatchNorm unfolded"
NO_ACTIVATION = "moments, ReLU6 rule removed (profiling)"
#: The previous files' ratios measured by issue 22 on an idle machine (interleaved).
ISSUE_IDLE = {"mc": 421.0, "moments": 8.6}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=96, help="input height and width")
    p.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    p.add_argument("--large-size", type=int, default=224,
                   help="second point's input size (0: skip it)")
    p.add_argument("--large-alpha", type=float, default=1.0)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", help="write the markdown block to this file")
    p.add_argument("--json", help="write the raw results to this file")
    return p.parse_args(argv)


def networks(alpha, size, seed):
    """``(deterministic MobileNetV2, its fully Bayesian twin, {layer class: count})``."""
    keras.utils.set_random_seed(seed)
    net = keras.applications.MobileNetV2(weights=None, alpha=alpha,
                                         input_shape=(size, size, 3), classes=10)
    model = models.to_bayesian(net, estimator="flipout", num_train_examples=1000,
                               moped_delta=0.1, seed=seed)
    import tfp_bcnn

    kinds = {}
    for layer in tfp_bcnn.bayesian_layers(model):
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    return net, model, kinds


def deterministic_file(net, path) -> str:
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export summary
        data = tf.lite.TFLiteConverter.from_keras_model(net).convert()
    write_bytes_atomic(path, data)
    return path


@contextlib.contextmanager
def patched_noise(kind):
    """Export with another LRT noise: ``"normals"`` (every draw) or ``"zeros"`` (none)."""
    from tfp_bcnn.export import _inference, _random

    saved = _inference.sign_flip_normal
    if kind == "normals":
        _inference.sign_flip_normal = lambda like, s: _random.standard_normal(tf.shape(like))
    else:
        _inference.sign_flip_normal = lambda like, s: tf.zeros_like(like)
    try:
        yield
    finally:
        _inference.sign_flip_normal = saved


@contextlib.contextmanager
def _patched(owner, name, value):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _previous_clipped_relu(mean, var, upper):
    """The ReLU6 rule before issue 22's third pass (38 TFLite ops), for the
    side-by-side timing only."""
    from keras import ops

    r = ops.rsqrt(var)
    a = -mean * r
    b = a + upper * r
    cdf_a, pdf_a = moments_lib.normal_cdf_pdf(a)
    cdf_b, pdf_b = moments_lib.normal_cdf_pdf(b)
    big_a = a * cdf_a + pdf_a
    big_b = b * (1.0 - cdf_b) - pdf_b
    d = big_a + big_b
    e2 = (cdf_b - cdf_a) + a * big_a + b * big_b
    return mean + (var * r) * d, var * ops.relu(e2 - ops.square(d))


@contextlib.contextmanager
def previous_moments():
    """Export the moments form as before: the 38-op ReLU6 rule, a ``v + mu^2`` pass."""
    from keras import ops

    from tfp_bcnn.layers import _linear

    current = _linear.linear_variance

    def linear_variance(linear, mean, var, kernel, kernel_var=None):
        if var is None or kernel_var is None:
            return current(linear, mean, var, kernel, kernel_var)
        return (linear(var, ops.square(kernel))
                + linear(var + ops.square(mean), kernel_var))

    with _patched(_linear, "linear_variance", linear_variance), \
            _patched(moments_lib, "clipped_relu_moments", _previous_clipped_relu):
        yield


@contextlib.contextmanager
def no_activation_rule():
    """Profiling: the ReLU6 moment rule replaced by ``(clip(mean), var)``."""
    from keras import ops

    with _patched(moments_lib, "clipped_relu_moments",
                  lambda mean, var, upper: (ops.clip(mean, 0.0, upper), var)):
        yield


@contextlib.contextmanager
def unfolded_batch_norm():
    """Export the moments form with BatchNorm as its own rule (``fold_batch_norm=False``)."""
    saved = moments_lib.propagate
    moments_lib.propagate = functools.partial(saved, fold_batch_norm=False)
    try:
        yield
    finally:
        moments_lib.propagate = saved


def main_point(args, tmp):
    """Files of the alpha ``--alpha`` point, timed interleaved; sizes of the lrt variants."""
    net, model, kinds = networks(args.alpha, args.size, args.seed)
    s = args.num_samples
    path = functools.partial(os.path.join, tmp)
    files = {"deterministic": deterministic_file(net, path("det.tflite"))}
    files["moments"] = export.to_tflite(model, path("moments.tflite"), num_samples=s,
                                        sampling="moments")
    for label, context, name in (
            (PREVIOUS, previous_moments, "moments_previous"),
            (UNFOLDED, unfolded_batch_norm, "moments_unfolded"),
            (NO_ACTIVATION, no_activation_rule, "moments_no_activation")):
        with context():
            files[label] = export.to_tflite(model, path(name + ".tflite"), num_samples=s,
                                            sampling="moments")
    files[f"MC-{s} (lrt, sign-flip noise)"] = export.to_tflite(model, path("mc.tflite"),
                                                                 num_samples=s)
    with patched_noise("normals"):
        files[f"MC-{s} (lrt, independent normals)"] = export.to_tflite(
            model, path("mc_normals.tflite"), num_samples=s)
    with patched_noise("zeros"):
        files[f"MC-{s} (lrt, no noise: profiling)"] = export.to_tflite(
            model, path("mc_zeros.tflite"), num_samples=s)
    pruning.prune_now(model, args.sparsity)
    sparse = export.to_tflite(model, path("sparse.tflite"), num_samples=s)
    int8 = export.to_tflite(model, path("int8.tflite"), num_samples=s, quantize="dynamic")
    timing = time_tflite_files(files, repeats=args.repeats, seed=args.seed)
    sizes = {"deterministic": os.path.getsize(files["deterministic"]),
             "dense": os.path.getsize(files[f"MC-{s} (lrt, sign-flip noise)"]),
             "sparse": os.path.getsize(sparse), "sparse_int8": os.path.getsize(int8)}
    relu6 = sum(isinstance(layer, keras.layers.ReLU) and layer.max_value == 6
                for layer in net.layers)
    return {"bayesian_layers": sum(kinds.values()), "relu6": int(relu6),
            "kinds": ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())),
            "latency": timing, "bytes": sizes}


def large_point(args, tmp):
    net, model, kinds = networks(args.large_alpha, args.large_size, args.seed)
    files = {"deterministic": deterministic_file(net, os.path.join(tmp, "large_det.tflite")),
             "moments": export.to_tflite(model, os.path.join(tmp, "large_moments.tflite"),
                                         num_samples=args.num_samples, sampling="moments")}
    return {"bayesian_layers": sum(kinds.values()),
            "latency": time_tflite_files(files, repeats=args.repeats, seed=args.seed)}


# ------------------------------------------------------------------ report
def _table(timing, base="deterministic") -> list[str]:
    ratio = ratios(timing, base, key=KEY)
    lines = ["| TFLite file | ops | XNNPack partitions | ops outside the delegate | "
             "ms per image, median (p10-p90) | CPU ms, median (p10-p90) | "
             "vs deterministic (CPU) | most frequent ops |",
             "|---|---:|---:|---|---:|---:|---:|---|"]
    for name, r in timing.items():
        outside = ", ".join(f"{k} {v}" for k, v in (r["undelegated"] or {}).items()) or "none"
        lines.append(f"| {name} | {r['ops']:,} | {r['partitions']} | {outside} | "
                     f"{r['ms']:.2f} ({r['ms_p10']:.2f}-{r['ms_p90']:.2f}) | "
                     f"{r['cpu_ms']:.2f} ({r['cpu_ms_p10']:.2f}-{r['cpu_ms_p90']:.2f}) | "
                     f"{ratio[name]:.1f}x | {format_ops(r, 5)} |")
    return lines


def _names(s):
    return (f"MC-{s} (lrt, sign-flip noise)", f"MC-{s} (lrt, independent normals)",
            f"MC-{s} (lrt, no noise: profiling)")


def markdown(results) -> str:
    """The benchmark's markdown block, from the results alone."""
    cfg, main = results["config"], results["main"]
    s = cfg["num_samples"]
    timing, size = main["latency"], main["bytes"]
    ratio = ratios(timing, "deterministic", key=KEY)
    mc, mc_normals, mc_zeros = _names(s)
    lines = [
        f"MobileNetV2 (alpha {cfg['alpha']}, {cfg['size']}x{cfg['size']}x3, 10 classes, "
        f"{main['bayesian_layers']} Bayesian layers after `to_bayesian`: {main['kinds']}), "
        f"untrained weights; batch 1, one LiteRT thread; all files timed interleaved in one "
        f"loop (`benchmarks/_latency.py`), median of {cfg['repeats']} rounds; ratios from "
        f"the CPU time of each invoke (one thread: the file's own compute, without the "
        f"waits for a core that inflate the wall-clock ratios of the long files on a "
        f"loaded machine); "
        f"load average {results['load']:.1f} on {os.cpu_count()} cores during the run.\n",
        *_table(timing),
    ]
    large = results.get("large")
    if large:
        lr = ratios(large["latency"], "deterministic", key=KEY)
        lines += ["", f"Second point: MobileNetV2 alpha {cfg['large_alpha']}, "
                  f"{cfg['large_size']}x{cfg['large_size']}x3, {large['bayesian_layers']} "
                  f"Bayesian layers, moments {lr['moments']:.1f}x the deterministic file "
                  "(MC-32 not built: fully Bayesian it takes seconds per call; a partially "
                  "Bayesian MC-32 at this size, now possible with `to_bayesian(last=k)`, "
                  "is not measured yet).", "", *_table(large["latency"])]
    lines += ["", "| file | KiB | vs deterministic |", "|---|---:|---:|"]
    for key, label in (("deterministic", "deterministic"),
                       ("dense", "Bayesian lrt, dense (mean + variance kernels)"),
                       ("sparse", f"Bayesian lrt, {cfg['sparsity']:.0%} pruned, sparse"),
                       ("sparse_int8", f"Bayesian lrt, {cfg['sparsity']:.0%} pruned, int8")):
        lines.append(f"| {label} | {size[key] / 1024:.0f} | "
                     f"{size[key] / size['deterministic']:.2f}x |")
    met = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines += [
        "", "| target (alpha 0.35, 96x96) | measured | |", "|---|---:|---|",
        f"| moments <= {TARGET_MOMENTS:g}x deterministic | {ratio['moments']:.1f}x | "
        f"{met(ratio['moments'] <= TARGET_MOMENTS)} |",
        f"| MC-{s} <= {TARGET_MC:g}x deterministic ({TARGET_MC / s:g}x per sample) | "
        f"{ratio[mc]:.0f}x ({ratio[mc] / s:.1f}x per sample) | {met(ratio[mc] <= TARGET_MC)} |",
        "", reading(results, ratio),
    ]
    return "\n".join(lines)


def reading(results, ratio) -> str:
    """What the tables say, with the figures that say it."""
    s = results["config"]["num_samples"]
    mc, mc_normals, mc_zeros = _names(s)
    timing = results["main"]["latency"]
    noise_share = 1 - timing[mc_zeros][KEY] / timing[mc_normals][KEY]
    text = (
        f"Reading: where the Monte Carlo time goes, from sub-graphs timed side by side: with "
        f"independent normals (the previous export) MC-{s} costs {ratio[mc_normals]:.0f}x, "
        f"and {noise_share:.0%} of that is drawing them (the same file without noise costs "
        f"{ratio[mc_zeros]:.0f}x): `RANDOM_STANDARD_NORMAL` over S x H x W x C runs outside "
        f"XNNPack at Philox + Box-Muller cost per value. The sign-flip noise (one normal per "
        f"pre-activation of the image shared by the {s} samples, a random sign per sample "
        f"and position, and per channel where positions are few: each sample exactly the "
        f"independent-noise draw) costs {ratio[mc]:.0f}x, "
        f"{ratio[mc_normals] / ratio[mc]:.1f}x less, close to the no-noise file. What is left, "
        f"{ratio[mc_zeros] / s:.1f}x per sample without any noise, is the tiled arithmetic: "
        f"two convolutions per Bayesian layer (mean and variance) plus the layer's "
        f"elementwise passes (square, sqrt, noise multiply-add, BatchNorm, ReLU6) over "
        f"S-times-larger activations, where the deterministic file runs one fused "
        f"convolution; {timing[mc]['partitions']} delegate partitions remain (the SHAPE / "
        f"random ops of each layer); the no-noise file has as many. "
    ) + moments_reading(results, ratio)
    wall = ratios(timing, "deterministic")
    text += (
        f" Load: the issue measured the previous MC-32 file at {ISSUE_IDLE['mc']:g}x and "
        f"moments at {ISSUE_IDLE['moments']:g}x on an idle machine (wall clock); here (load "
        f"average {results['load']:.1f} on {os.cpu_count()} cores) the same previous MC-32 "
        f"file costs {ratio[mc_normals]:.0f}x in CPU time ({wall[mc_normals]:.0f}x wall "
        f"clock), {ratio[mc_normals] / ISSUE_IDLE['mc']:.1f}x its idle ratio; the sign-flip "
        f"file {wall[mc]:.0f}x and moments {wall['moments']:.1f}x wall clock. What is left "
        f"of the load in the CPU-time ratios is the contention for caches and the memory "
        f"bus, which the Bayesian files, streaming far more memory than the deterministic "
        f"one, feel more: an idle rerun is the final word on the targets."
    )
    large = results.get("large")
    if large:
        lr = ratios(large["latency"], "deterministic", key=KEY)
        text += (f" At alpha 1.0, 224x224 the convolutions are wider (up to 320 input "
                 f"channels) and moments cost {lr['moments']:.1f}x.")
    return text


def moments_reading(results, ratio) -> str:
    """Where the moments file's time goes, from its profiling files in the same loop."""
    timing, n_relu6 = results["main"]["latency"], results["main"]["relu6"]
    m, prev, bare = (timing[k] for k in ("moments", PREVIOUS, NO_ACTIVATION))
    act_share = 1 - bare[KEY] / m[KEY]
    per_relu6 = (m["ops"] - bare["ops"]) / n_relu6
    over = ratio["moments"] / TARGET_MOMENTS
    verdict = "met" if over <= 1 else f"missed by a factor {over:.1f}"
    return (
        f"Moments: {ratio['moments']:.1f}x ({m['ops']:,} ops), against {ratio[PREVIOUS]:.1f}x "
        f"for the previous file ({prev['ops']:,} ops; same loop: "
        f"{prev[KEY] / m[KEY]:.2f}x its CPU time). The changes: the variance map computed as "
        f"`v (*) (M^2 + S^2) + mu^2 (*) S^2` (no `v + mu^2` pass) and the ReLU6 rule "
        f"regrouped (the cdf's sign folded into its constants, `D^2` never formed): fewer "
        f"ops, no time gain beyond the few per cent by which equivalent files differ in one "
        f"loop. One variance map per Dense / Conv layer on concatenated channels, "
        f"`[v, mu^2] (*) [M^2 + S^2 ; S^2]` (70 instead of 104 CONV_2D), was timed in "
        f"this loop in three runs of this round: 7% faster, 3% slower, and 3% faster "
        f"with BatchNorm unfolded (LeNet-5: 6% slower): the concatenation costs about "
        f"the pass it saves, no consistent gain, so it was removed. "
        f"Where the time goes (profiling files of the same loop): the ReLU6 moment rule "
        f"is {act_share:.0%} of it, "
        f"{per_relu6:.0f} elementwise ops per activation over {n_relu6} activations; with "
        f"the rule replaced by a clip of the mean the file costs {ratio[NO_ACTIVATION]:.1f}x "
        f"({bare['ops']} ops): the mean and variance convolutions, the squares of the "
        f"means and the concatenations, where the deterministic file runs one "
        f"convolution with BatchNorm and ReLU6 fused into it. BatchNorm folding: "
        f"{ratio[UNFOLDED]:.1f}x unfolded ({timing[UNFOLDED]['ops'] - m['ops']} more ops). "
        f"The target (<= {TARGET_MOMENTS:g}x) is {verdict}: even a free activation rule "
        f"would leave {ratio[NO_ACTIVATION]:.1f}x. Each "
        f"elementwise op is a full pass over the activation, and a two-sided clip needs a "
        f"cdf and a pdf per boundary (8 ops each "
        f"with builtins: no `erf`, no fused multiply-add) plus the products that combine "
        f"them; a trial with a one-op cdf and a one-op pdf (errors 0.0095 and 0.027, see "
        f"`moments.normal_cdf_pdf`) removed 12 ops per activation and only 13% of the "
        f"file's time (loaded machine), so it was not taken. Closing the rest needs fewer "
        f"passes than builtin ops allow: a fused moment kernel (a custom op, which the "
        f"stock interpreter and XNNPack would not run)."
    )


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    results = {"config": vars(args)}
    with tempfile.TemporaryDirectory(prefix="tfp_bcnn_mobilenet_") as tmp:
        loads = [load_average()]
        results["main"] = main_point(args, tmp)
        if args.large_size:
            results["large"] = large_point(args, tmp)
        loads.append(load_average())
    results["load"] = max(loads)
    results["seconds"] = time.time() - t0
    print(f"done in {results['seconds']:.0f} s", file=sys.stderr)
    block = markdown(results)
    print(block)
    if args.markdown:
        write_bytes_atomic(args.markdown, (block + "\n").encode())
    if args.json:
        write_bytes_atomic(args.json, json.dumps(results, indent=2, default=str).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
