"""Flipout in ``predict``: independent samples (one kernel noise per tiled copy) and their cost.

``predict`` tiles a batch S times into one forward call. A Flipout layer
draws one kernel noise ``eps`` per call, so before this change the S copies
of an image shared ``eps`` and differed only by random signs; now every
Flipout layer is called with ``sample_groups=S`` and draws one ``eps`` per
copy (``BayesianLayer.grouped_linear``). Two measurements, in one process:

* statistics, on a LeNet-5 trained on MNIST-5k: the variance over repeated
  ``predict`` calls (and calls of the export graph, ``"lrt"`` /
  ``"weights"``) of the S-sample mean probability, divided by (the
  per-sample variance / S). Independent samples give 1; shared ``eps``
  gives more (the mean converges to ``E[p | eps]``, not ``E[p]``). Also the
  mean over images of the largest class gap between the S-sample mean and
  a reference mean of ``--reference`` independent samples.
* cost: the compiled forward call of one chunk, the old form (tiled, one
  ``eps``), the new one (tiled, ``eps`` per copy) and the other correct form
  (S calls of the chunk), all timed interleaved in one loop; LeNet-5 and
  MobileNetV2 (alpha 0.35, 32x32) fully Bayesian and with the last blocks
  Bayesian (late tiling after the deterministic prefix).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import Timer, emit, log, markdown_table, mean_std, recipe, set_seed, train


def _runners(model, reps: int) -> dict:
    """``name -> fn(chunk)``: the old shared-eps call, the grouped call, S separate calls."""
    import tensorflow as tf

    from tfp_bcnn import _forward_runners as fr
    from tfp_bcnn._tiling import tile_after_prefix

    import keras

    body = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    # before: late tiling only when the first layer is deterministic, and no groups
    old = None if fr._stochastic_layer(body[0]) else tile_after_prefix(
        model, reps, fr._stochastic_layer)

    @tf.function(reduce_retracing=True)
    def shared(x):  # before: one eps per call (late tiling kept where it applied)
        if old is not None:
            return old(x, training=False)
        return model(tf.tile(x, [reps] + [1] * (len(x.shape) - 1)), training=False)

    grouped = fr._TFForward(model, reps, False)
    single = fr._TFForward(model, 1, False)
    return {"tiled, one eps (before)": lambda x: shared(tf.constant(x)).numpy(),
            "tiled, eps per copy (now)": grouped,
            "S calls": lambda x: [single(x) for _ in range(reps)]}


def time_interleaved(model, x, reps: int, repeats: int) -> dict:
    """Median seconds of each runner on ``x``, all timed in one interleaved loop."""
    runs = _runners(model, reps)
    for fn in runs.values():
        fn(x)  # trace
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            with Timer() as t:
                fn(x)
            times[name].append(t.seconds)
    return {name: float(np.median(v)) for name, v in times.items()}


def _samples(model, x, reps: int, grouped: bool) -> np.ndarray:
    """``(S, N, C)`` probabilities: the grouped predict, or the old one-eps tiled call."""
    import tensorflow as tf

    import tfp_bcnn as bcnn

    if grouped:
        return bcnn.predict(model, x, num_samples=reps, batch_size=CHUNK,
                            return_samples=True).samples
    y = model(tf.tile(tf.constant(x), [reps, 1, 1, 1]), training=False).numpy()
    return y.reshape(reps, len(x), -1)


#: Images per forward call in the statistics (S * CHUNK rows at once).
CHUNK = 25


def _chunked(draw, x) -> np.ndarray:
    """``draw`` (``x -> (S, n, C)``) over chunks of `CHUNK` images, joined: ``(S, N, C)``."""
    return np.concatenate([draw(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)], axis=1)


def _export_samples(model, reps: int, sampling: str):
    """``x -> (S, N, C)`` of the export graph (`tfp_bcnn.export._inference`)."""
    import tensorflow as tf

    from tfp_bcnn.export import _inference

    graph = _inference.InferenceGraph(model, num_samples=reps, sampling=sampling)
    fn = tf.function(lambda im: graph.predict(im, return_samples=True)["samples"])
    return lambda x: fn(tf.constant(x)).numpy()


def independence(model, x, reps: int, repeats: int, reference: np.ndarray) -> dict:
    """Variance ratio (1 = independent) and mean largest gap to ``reference`` (N, C).

    For predict before / now and the exported ``"lrt"`` / ``"weights"`` forms.
    """
    forms = {"predict, one eps (before)": lambda x: _samples(model, x, reps, False),
             "predict, eps per copy (now)": lambda x: _samples(model, x, reps, True),
             "export lrt": _export_samples(model, reps, "lrt"),
             "export weights": _export_samples(model, reps, "weights")}
    out = {}
    for name, draw in forms.items():
        runs = np.stack([_chunked(draw, x) for _ in range(repeats)])
        means = runs.mean(axis=1)  # (R, N, C)
        per_sample = runs.reshape(-1, *runs.shape[2:]).var(axis=0, ddof=1)
        keep = per_sample > 1e-6
        ratio = float(np.mean(means.var(axis=0, ddof=1)[keep] / (per_sample[keep] / reps)))
        out[name] = (ratio, np.abs(means - reference).max(axis=-1).mean(axis=-1))  # gap (R,)
    return out


def statistics_table(args) -> str:
    """Train LeNet-5 per seed; the variance ratio and gap for each S, before and now."""
    import tfp_bcnn as bcnn
    from tfp_bcnn import datasets, models

    (xtr, ytr), (xte, _) = datasets.mnist_5k()
    x = xte[:args.images]
    rows = {}
    for seed in args.seeds:
        set_seed(seed)
        net = models.lenet5(num_train_examples=len(xtr), seed=seed)
        train(net, xtr, ytr, recipe=recipe(epochs=args.epochs), seed=seed)
        reference = bcnn.predict(net, x, num_samples=args.reference, batch_size=4).mean
        for reps in args.num_samples:
            log(f"seed {seed} S={reps}")
            for name, (ratio, gap) in independence(net, x, reps, args.repeats,
                                                   reference).items():
                rows.setdefault((reps, name), ([], []))
                rows[(reps, name)][0].append(ratio)
                rows[(reps, name)][1].extend(gap)
    table = markdown_table(
        ["S", "samples", "variance ratio (1 = independent)", "mean max-class gap to reference"],
        [[reps, name, mean_std(r, 2), mean_std(g, 4)] for (reps, name), (r, g) in rows.items()])
    top = max(args.num_samples)
    found = ", ".join(f"{name} {np.mean(r):.2f}" for (reps, name), (r, _) in rows.items()
                      if reps == top)
    return table + f"\n\nVariance ratio at S = {top} (mean over seeds): {found}."


def cost_table(args) -> str:
    """Interleaved cost of the three runners on LeNet-5 and MobileNetV2 forms."""
    import keras

    from tfp_bcnn import models

    rng = np.random.default_rng(0)
    cases = [("LeNet-5 Flipout", models.lenet5(num_train_examples=1000, seed=0),
              rng.random((args.batch, 28, 28, 1), dtype=np.float32), args.cost_samples)]
    det = models.mobilenet_v2(bayesian=False, seed=0)
    mx = rng.random((args.mobilenet_batch, 32, 32, 3), dtype=np.float32)
    for last, label in ((None, "all layers"), (args.last, f"last {args.last} layers")):
        net = models.to_bayesian(det, "flipout", num_train_examples=1000, last=last, seed=0)
        cases.append((f"MobileNetV2 0.35 32x32, {label} Flipout", net, mx, args.cost_samples))
    rows = []
    for name, model, x, reps in cases:
        log(f"timing {name}")
        times = time_interleaved(model, x, reps, args.cost_repeats)
        base = times["tiled, one eps (before)"]
        rows.append([name, f"{len(x)} x S={reps}"]
                    + [f"{1e3 * t:.1f} ms ({t / base:.2f}x)" for t in times.values()])
        keras.backend.clear_session()
    return markdown_table(["model", "chunk", *_RUNNER_NAMES], rows)


_RUNNER_NAMES = ("tiled, one eps (before)", "tiled, eps per copy (now)", "S calls")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--num-samples", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--repeats", type=int, default=6, help="predict calls per S (statistics)")
    p.add_argument("--reference", type=int, default=2048)
    p.add_argument("--batch", type=int, default=256, help="LeNet-5 chunk for the cost")
    p.add_argument("--mobilenet-batch", type=int, default=16)
    p.add_argument("--last", type=int, default=5)
    p.add_argument("--cost-samples", type=int, default=32)
    p.add_argument("--cost-repeats", type=int, default=10)
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    with Timer() as t:
        cost = cost_table(args)
        stats = statistics_table(args)
    emit(args.markdown, "\n\n".join([
        f"Statistics: LeNet-5 Flipout trained {args.epochs} epochs (recipe otherwise), seeds "
        f"{args.seeds}, {args.images} test images, {args.repeats} predict calls per S, "
        f"reference mean of {args.reference} independent samples (a small budget: the "
        "machine's 2 cores were shared by six jobs).", stats,
        "The variance ratio is Var over calls of the S-sample mean probability divided by "
        "(per-sample variance / S), averaged over the images and classes that vary: 1 for "
        "independent samples (each entry's estimate has a relative sd of sqrt(2 / (R - 1))); "
        "samples that share a noise term give 1 + S * Var(E[p | shared]) / Var(p), growing "
        "with S: the error of the Monte Carlo mean stops shrinking like 1 / sqrt(S).",
        f"Cost: one chunk, median of {args.cost_repeats} interleaved rounds (ratio to the "
        "old one-eps call). 'S calls' is the other correct form (S forward calls of the "
        "chunk, the whole model each time).", cost, TARGETS, f"Wall time {t.seconds:.0f} s."]))


#: What the tables show against the issue's targets (read them with the numbers above).
TARGETS = (
    "Targets. Independent Flipout samples in `predict` (correctness): met where the 'now' "
    "ratio stays near 1 at every S while the old one-eps call's grows with S; at a trained "
    "LeNet-5's sigma the old error is mild (the shared eps is averaged over many weights), on "
    "the unit test's small wide-posterior nets it is 6.6 / 4.0 against ~1 "
    "(tests/test_flipout_groups.py). Lowest cost: the grouped call costs more than the old "
    "(wrong) one, most where the Flipout layers have small spatial maps (the S groups run "
    "one after another through `ops.map`, a per-group overhead; TensorFlow on CPU has no "
    "convolution with a kernel per batch group, and a grouped convolution over S * C "
    "channels ran 6x slower; 1x1 convolutions and Dense run as one batched matmul); it is "
    "cheaper than S separate calls, the other correct form. Export: "
    "`sampling=\"weights\"` draws S independent kernels (ratio ~1); "
    "`sampling=\"lrt\"` shares |eps| across the S samples "
    "(`export/_random.sign_flip_normal`, signs flipped per sample), so its ratio grows with "
    "S as the old Flipout's did: the same kind of problem, left to the export's owner.")


if __name__ == "__main__":
    main()
