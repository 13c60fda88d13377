"""Sampling-free moments vs Monte Carlo: the main job's Flipout LeNet-5 on MNIST-5k.

For each seed, the main job's model (``models.lenet5`` defaults, Flipout,
Adam 2e-3, batch 64, 20 epochs on the 4,000 training images) is evaluated
with the same code (``tfp_bcnn.evaluation.evaluate_classifier``) by

* ``moments``: ``predict(method="moments")``, one pass of propagated means
  and variances, S logit draws (default max pooling ``"separate"``);
* ``moments (Clark)``: the same with Clark's pairwise max pooling (through
  ``tfp_bcnn.moments.MomentsSampler``; no rotation curve);
* ``MC-32`` and ``MC-256``: Monte Carlo ``predict`` with 32 and 256 samples.

Reported side by side: accuracy, NLL, ECE, OOD AUROC by mutual information
and by predictive entropy against rendered letters and uniform noise, the
rotation curve, the Spearman correlation of the epistemic part with
MC-256's (MNIST test + letters pooled), the Keras ``predict`` time on the
1,000 test images, and the TFLite latency per image (batch 1, one LiteRT
thread, every file timed in one interleaved loop by ``benchmarks/_latency.py``,
median of ``--repeats`` rounds, with op counts and XNNPack partitions) of the moments file
(both max-pool forms), the MC-32 file (``sampling="lrt"``, the batch tiled 32
times in one invocation) and the deterministic twin (same architecture,
plain Keras layers).

Targets (issue 12, latency tightened by issue 22): TFLite moments latency
<= 3x the deterministic LeNet-5 (and MC-32 no slower than before);
accuracy within 0.3 points of MC-32; ECE <= MC-32's + 0.005; AUROC (mutual
information) within 0.02 of MC-32's against letters and against noise;
Spearman of epistemic vs MC-256 >= 0.8.

    python benchmarks/moments.py --seeds 0 1 2 --json moments.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time

import keras
import numpy as np

import tfp_bcnn
from tfp_bcnn import datasets, metrics, models
from tfp_bcnn.evaluation import evaluate_classifier, json_ready
from tfp_bcnn.moments import MomentsSampler
from tfp_bcnn.uncertainty import decompose

#: name -> (predict method, samples, max_pool)
METHODS = {
    "moments": ("moments", 32, "separate"),
    "moments (Clark)": ("moments", 32, "clark"),
    "MC-32": ("mc", 32, None),
    "MC-256": ("mc", 256, None),
}


def train(x, y, epochs, batch_size, learning_rate, seed):
    keras.utils.set_random_seed(seed)
    model = models.lenet5(estimator="flipout", num_train_examples=len(x))
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model, time.perf_counter() - t0


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _clark_predict(model, x, samples, batch_size=256):
    """``predict(method="moments")`` with Clark max pooling (not a predict option)."""
    sampler = MomentsSampler(model, x[:1], samples, from_logits=False, max_pool="clark")
    parts = [sampler(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return decompose(np.concatenate(parts, axis=1))


def _clark_report(model, x_test, y_test, ood, samples):
    """The fields of `evaluate_classifier` that the tables use, for the Clark form."""
    pred = _clark_predict(model, x_test, samples)
    report = {**metrics.summary(pred.mean, y_test), "epistemic": float(pred.epistemic.mean()),
              "rotation": [], "ood": {}, "_predictions": {"test": pred}}
    for name, x_ood in ood.items():
        p = _clark_predict(model, x_ood, samples)
        report["_predictions"][name] = p
        report["ood"][name] = {
            "auroc_epistemic": metrics.ood_auroc(pred.epistemic, p.epistemic),
            "auroc_entropy": metrics.ood_auroc(pred.predictive_entropy, p.predictive_entropy),
        }
    _clark_predict(model, x_test[:64], samples)
    t0 = time.perf_counter()
    _clark_predict(model, x_test, samples)
    report["predict_s"] = time.perf_counter() - t0
    return report


def _predict_seconds(model, x, method, samples, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tfp_bcnn.predict(model, x, num_samples=samples, method=method)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def evaluate(model, x_test, y_test, angles, repeats):
    letters = datasets.letters()[0]
    ood = {"letters": letters, "noise": datasets.noise(len(x_test), shape=(28, 28, 1))[0]}
    out = {}
    for name, (method, samples, max_pool) in METHODS.items():
        if max_pool == "clark":
            report = _clark_report(model, x_test, y_test, ood, samples)
        else:
            report = evaluate_classifier(
                model, x_test, y_test, num_samples=samples, ood=ood, method=method,
                angles=None if name == "MC-256" else angles,
            )
            tfp_bcnn.predict(model, x_test[:64], num_samples=samples, method=method)  # trace
            report["predict_s"] = _predict_seconds(
                model, x_test, method, samples, 1 if name == "MC-256" else repeats
            )
        preds = report["_predictions"]
        report["_pooled_epistemic"] = np.concatenate(
            [preds["test"].epistemic, preds["letters"].epistemic]
        )
        out[name] = report
    ref = out["MC-256"]["_pooled_epistemic"]
    for report in out.values():
        report["spearman_vs_mc256"] = _spearman(report["_pooled_epistemic"], ref)
    return {name: json_ready(report) for name, report in out.items()}


# ------------------------------------------------------------------- TFLite
def tflite_latency(model, tmp, repeats):
    """Median ms per image, ops and delegate partitions of each file, timed interleaved.

    Every file in one round-robin loop (``benchmarks/_latency.py``), so the
    ratios to the deterministic file are taken under the same load.
    """
    import tensorflow as tf
    from _latency import time_tflite_files

    from tfp_bcnn import export

    paths = {
        "moments": export.to_tflite(model, os.path.join(tmp, "moments.tflite"),
                                    sampling="moments", num_samples=32),
        "moments (Clark)": export.to_tflite(model, os.path.join(tmp, "clark.tflite"),
                                            sampling="moments", num_samples=32,
                                            max_pool="clark"),
        "MC-32 (lrt, tiled)": export.to_tflite(model, os.path.join(tmp, "mc32.tflite"),
                                               sampling="lrt", num_samples=32),
    }
    det = models.lenet5(bayesian=False)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export summary
        data = tf.lite.TFLiteConverter.from_keras_model(det).convert()
    paths["deterministic"] = os.path.join(tmp, "deterministic.tflite")
    with open(paths["deterministic"], "wb") as f:
        f.write(data)
    timing = time_tflite_files(paths, repeats=repeats)
    return {name: {k: r[k] for k in ("ms", "ms_p10", "ms_p90", "ops", "partitions",
                                     "undelegated")}
            for name, r in timing.items()}


def run(seed, epochs, batch_size, learning_rate, repeats, predict_repeats, angles):
    (x, y), (x_test, y_test) = datasets.mnist_5k()
    model, secs = train(x, y, epochs, batch_size, learning_rate, seed)
    result = {"seed": seed, "train_s": secs}
    result["methods"] = evaluate(model, x_test, y_test, angles, predict_repeats)
    with tempfile.TemporaryDirectory(prefix="bench_moments_") as tmp:
        result["tflite"] = tflite_latency(model, tmp, repeats)
    return result


# ------------------------------------------------------------------ report
def _stat(values, digits=4):
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1):.{digits}f}"


def targets(runs) -> list[tuple[str, bool, str]]:
    """(target, met in every seed's mean, measured) for the issue's targets."""

    def mean(fn):
        return float(np.mean([fn(r) for r in runs]))

    mom = lambda r: r["methods"]["moments"]  # noqa: E731
    mc = lambda r: r["methods"]["MC-32"]  # noqa: E731
    ratio = mean(lambda r: r["tflite"]["moments"]["ms"] / r["tflite"]["deterministic"]["ms"])
    dacc = mean(lambda r: mom(r)["accuracy"] - mc(r)["accuracy"])
    dece = mean(lambda r: mom(r)["ece"] - mc(r)["ece"])
    out = [
        ("TFLite moments latency <= 3x deterministic (issue 22; issue 12 asked 5x)",
         ratio <= 3, f"{ratio:.2f}x"),
        ("accuracy within 0.3 pt of MC-32", abs(dacc) <= 0.003, f"{100 * dacc:+.2f} pt"),
        ("ECE <= MC-32 + 0.005", dece <= 0.005, f"{dece:+.4f}"),
    ]
    for name in ("letters", "noise"):
        d = mean(lambda r, o=name: mom(r)["ood"][o]["auroc_epistemic"]
                 - mc(r)["ood"][o]["auroc_epistemic"])
        out.append((f"AUROC, epistemic (mutual information), vs {name} within 0.02 of MC-32",
                    abs(d) <= 0.02, f"{d:+.4f}"))
    rho = mean(lambda r: mom(r)["spearman_vs_mc256"])
    out.append(("Spearman epistemic vs MC-256 >= 0.8", rho >= 0.8, f"{rho:.3f}"))
    return out


def markdown(runs, config) -> str:
    """The benchmark's markdown block from the runs and the config (the JSON it writes)."""
    names = list(METHODS)
    n = len(runs)
    lines = [
        f"Flipout LeNet-5 (`models.lenet5` defaults), MNIST-5k (4,000 train / 1,000 test), "
        f"{config['epochs']} epochs, batch {config['batch_size']}, Adam "
        f"{config['learning_rate']:g}, seeds {', '.join(str(r['seed']) for r in runs)} "
        f"(mean +- sample std over {n} seeds). "
        "Moments: one pass of propagated means and variances, then 32 logit draws. "
        "OOD: 1,000 rendered letters A-J and 1,000 uniform-noise images.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]

    def row(label, fn, digits=4):
        cells = [_stat([fn(r["methods"][m]) for r in runs], digits) for m in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("accuracy", lambda m: m["accuracy"])
    row("NLL", lambda m: m["nll"])
    row("ECE (15 bins)", lambda m: m["ece"])
    row("mean epistemic (mutual information), MNIST test, nats", lambda m: m["epistemic"])
    for ood in ("letters", "noise"):
        row(f"OOD AUROC {ood}, epistemic (mutual information)",
            lambda m, o=ood: m["ood"][o]["auroc_epistemic"])
        row(f"OOD AUROC {ood}, predictive entropy",
            lambda m, o=ood: m["ood"][o]["auroc_entropy"])
    row("Spearman epistemic vs MC-256 (MNIST + letters)", lambda m: m["spearman_vs_mc256"], 3)
    row("Keras predict, 1,000 images (s)", lambda m: m["predict_s"], 2)
    mc32 = np.mean([r["methods"]["MC-32"]["predict_s"] for r in runs])
    mom = np.mean([r["methods"]["moments"]["predict_s"] for r in runs])
    lines += ["", f"Keras `predict`: moments is **{mc32 / mom:.1f}x** faster than MC-32 "
              "(ratio of the seed means).", ""]

    angles = [a["angle"] for a in runs[0]["methods"]["moments"]["rotation"]]
    rot_names = [m for m in names if runs[0]["methods"][m]["rotation"]]
    lines += ["| rotation (deg) | " + " | ".join(f"{m} acc / epistemic" for m in rot_names)
              + " |", "|---|" + "---|" * len(rot_names)]
    for i, angle in enumerate(angles):
        cells = []
        for m in rot_names:
            acc = np.mean([r["methods"][m]["rotation"][i]["accuracy"] for r in runs])
            epi = np.mean([r["methods"][m]["rotation"][i]["epistemic"] for r in runs])
            cells.append(f"{acc:.3f} / {epi:.4f}")
        lines.append(f"| {angle:.0f} | " + " | ".join(cells) + " |")

    files = list(runs[0]["tflite"])
    det = "deterministic"
    lines += ["", f"TFLite latency per image (batch 1, one thread, every file timed in one "
              f"interleaved loop by `benchmarks/_latency.py`, median of {config['repeats']} "
              "rounds per seed):", "",
              "| file | ops | XNNPack partitions | ms per image | vs deterministic |",
              "|---|---:|---:|---:|---:|"]
    for f in files:
        ms = [r["tflite"][f]["ms"] for r in runs]
        ratio = [r["tflite"][f]["ms"] / r["tflite"][det]["ms"] for r in runs]
        lines.append(f"| {f} | {runs[0]['tflite'][f]['ops']} | "
                     f"{runs[0]['tflite'][f].get('partitions', '?')} | {_stat(ms, 4)} | "
                     f"{_stat(ratio, 2)}x |")
    lines += ["", "| target | met | measured (mean over seeds) |", "|---|---|---|"]
    missed = []
    for label, met, value in targets(runs):
        lines.append(f"| {label} | {'yes' if met else '**no**'} | {value} |")
        if not met:
            missed.append(f"{label} ({value})")
    lines += ["", reading(runs, missed)]
    return "\n".join(lines)


def reading(runs, missed) -> str:
    """What the tables say, with the figures that say it."""

    def mean(method, key):
        return float(np.mean([r["methods"][method][key] for r in runs]))

    mi = mean("moments", "epistemic") / mean("MC-32", "epistemic")
    rho_mom, rho_mc = mean("moments", "spearman_vs_mc256"), mean("MC-32", "spearman_vs_mc256")
    clark = float(np.mean([r["tflite"]["moments (Clark)"]["ms"] / r["tflite"]["deterministic"]["ms"]
                           for r in runs]))
    text = (
        f"Reading: the mean mutual information of moments is {mi:.2f} times MC-32's: the "
        "diagonal approximation drops the correlation that one shared kernel draw creates "
        "between positions and units, so its absolute epistemic values are smaller, while "
        f"its ranking of inputs matches MC-32's (Spearman with MC-256 {rho_mom:.3f} vs "
        f"{rho_mc:.3f} for MC-32, whose own sampling noise bounds it). Clark's max pooling "
        f"costs {clark:.1f}x the deterministic latency for figures within seed noise of the "
        "separate form, which is therefore the default."
    )
    mc32 = float(np.mean([r["tflite"]["MC-32 (lrt, tiled)"]["ms"]
                          / r["tflite"]["deterministic"]["ms"] for r in runs]))
    text += (f" The MC-32 file costs {mc32:.0f}x the deterministic one (286x before the "
             "sign-flip noise of issue 22, timed every 4th round of the same kind of loop).")
    if missed:
        text += " Missed: " + "; ".join(missed) + "."
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=300,
                   help="interleaved TFLite rounds (each file once per round)")
    p.add_argument("--predict-repeats", type=int, default=3)
    p.add_argument("--angles", type=float, nargs="*", default=[0, 15, 30, 45, 60, 75, 90])
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    p.add_argument("--from-json", help="only render the markdown of a --json file")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        config, runs = saved["args"], saved["runs"]
    else:
        config = vars(args)
        runs = [run(seed, args.epochs, args.batch_size, args.learning_rate, args.repeats,
                    args.predict_repeats, args.angles) for seed in args.seeds]
        runs = json.loads(json.dumps(runs, default=float))  # the form the JSON file holds
    block = markdown(runs, config)
    print(block)
    if args.json and not args.from_json:
        with open(args.json, "w") as f:
            json.dump({"args": config, "runs": runs}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(block + "\n")


if __name__ == "__main__":
    main()
