"""Uncertainty quality and speed: Flipout LeNet-5 against its frequentist twin.

On MNIST-5k (4,000 train / 1,000 test), both models are trained the same way
(same epochs, batch size, optimizer, seed) and evaluated with the same code
(``tfp_bcnn.evaluation.evaluate_classifier``). Reported side by side:

* test accuracy, NLL, Brier, ECE (15 bins);
* mean epistemic uncertainty (mutual information) at rotations 0..90 degrees,
  and whether it rises monotonically;
* OOD AUROC, MNIST test digits vs rendered letters A-J, scored by mutual
  information (epistemic) and by predictive entropy;
* speed: ``tfp_bcnn.predict`` with 32 samples against the loop users write
  today, ``np.stack([model.predict(x) for _ in range(32)])``, same model, data
  and run (ratio of medians).

Targets (issue 4): accuracy within 1 point of the frequentist model, ECE below
the frequentist model's, epistemic rising with rotation, AUROC >= 0.90, predict
>= 3x faster than the loop. Published reference (uncertainty-baselines, full
MNIST, LeNet-5): deterministic 99.1 % / NLL 0.037; TFP Flipout VI 98.5 % /
NLL 0.048 / ECE 0.010.

    python benchmarks/uncertainty.py --epochs 20 --seeds 0 1 2 --json uncertainty.json
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

import tfp_bcnn
from tfp_bcnn import datasets, models
from tfp_bcnn.evaluation import evaluate_classifier, json_ready


def train(bayesian, x, y, epochs, batch_size, learning_rate, seed):
    keras.utils.set_random_seed(seed)
    kwargs = {"estimator": "flipout", "num_train_examples": len(x)} if bayesian else {}
    model = models.lenet5(bayesian=bayesian, **kwargs)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model, time.perf_counter() - t0


def predict_speed(model, x, num_samples=32, repeats=3):
    tfp_bcnn.predict(model, x[:64], num_samples=num_samples)  # trace once
    model.predict(x[:64], verbose=0)
    ours, loop = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tfp_bcnn.predict(model, x, num_samples=num_samples)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.stack([model.predict(x, verbose=0) for _ in range(num_samples)])
        loop.append(time.perf_counter() - t0)
    return float(np.median(ours)), float(np.median(loop))


def run(epochs=20, batch_size=64, learning_rate=2e-3, num_samples=32, seed=0):
    (x, y), (x_test, y_test) = datasets.mnist_5k()
    results = {"epochs": epochs, "batch_size": batch_size, "num_samples": num_samples,
               "backend": keras.backend.backend()}
    for name, bayesian in (("bayesian", True), ("frequentist", False)):
        model, secs = train(bayesian, x, y, epochs, batch_size, learning_rate, seed)
        report = json_ready(evaluate_classifier(model, x_test, y_test,
                                                num_samples=num_samples))
        report["train_seconds"] = secs
        results[name] = report
        if bayesian:
            ours, loop = predict_speed(model, x_test, num_samples)
            results["speed"] = {"predict_s": ours, "loop_s": loop, "speedup": loop / ours}
    b, f = results["bayesian"], results["frequentist"]
    epi = [r["epistemic"] for r in b["rotation"]]
    results["targets"] = {
        "accuracy_within_1pt": b["accuracy"] >= f["accuracy"] - 0.01,
        "ece_below_frequentist": b["ece"] < f["ece"],
        "epistemic_monotonic_0_90": bool(np.all(np.diff(epi) > 0)),
        "auroc_letters_ge_0.90": b["ood"]["letters"]["auroc_epistemic"] >= 0.90,
        "predict_ge_3x": results["speed"]["speedup"] >= 3.0,
    }
    return results


def _ms(values, digits=4) -> str:
    """``mean +- std`` over seeds (sample std, ddof=1); the value alone for one seed;
    "n/a" for a figure that does not apply (None: a deterministic model's epistemic)."""
    if any(v is None for v in values):
        return "n/a"
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1):.{digits}f}"


def markdown(runs) -> str:
    """The benchmark's markdown block from ``{seed: results}`` (the JSON it writes).

    Every figure is the mean +- standard deviation over the seeds; a table
    per seed follows, so no single seed stands for the others.
    """
    rs = list(runs.values())
    first = rs[0]
    B = [r["bayesian"] for r in rs]
    F = [r["frequentist"] for r in rs]

    def row(label, get, published=""):
        return (f"| {label} | {_ms([get(b) for b in B])} | {_ms([get(f) for f in F])} | "
                f"{published} |")

    lines = [
        f"Flipout LeNet-5 against the frequentist LeNet-5 trained the same way "
        f"({first['epochs']} epochs, batch {first['batch_size']}, "
        f"{first['num_samples']} Monte Carlo samples, backend {first['backend']}); "
        f"seeds {', '.join(map(str, runs))}: mean +- standard deviation (sample std, ddof "
        f"= 1) over the "
        f"{len(rs)} seed{'s' if len(rs) > 1 else ''}.",
        "",
        "| metric | Bayesian (Flipout) | frequentist | published (full MNIST): TFP VI / det. |",
        "|---|---|---|---|",
        row("accuracy", lambda r: r["accuracy"], "0.985 / 0.991"),
        row("NLL", lambda r: r["nll"], "0.048 / 0.037"),
        row("Brier", lambda r: r["brier"]),
        row("ECE (15 bins)", lambda r: r["ece"], "0.010 / -"),
        row("mean aleatoric (expected entropy), nats", lambda r: r["aleatoric"]),
        row("mean epistemic (mutual information), nats", lambda r: r["epistemic"]),
    ]
    for name in first["bayesian"]["ood"]:
        lines.append(row(f"OOD AUROC {name}, epistemic (mutual information)",
                         lambda r, n=name: r["ood"][n]["auroc_epistemic"]))
        lines.append(row(f"OOD AUROC {name}, predictive entropy",
                         lambda r, n=name: r["ood"][n]["auroc_entropy"]))
    lines += ["", "| rotation (deg) | Bayesian acc | Bayesian epistemic | frequentist acc |",
              "|---|---|---|---|"]
    for i, angle in enumerate(r["angle"] for r in first["bayesian"]["rotation"]):
        lines.append(
            f"| {angle:.0f} | {_ms([b['rotation'][i]['accuracy'] for b in B], 3)} | "
            f"{_ms([b['rotation'][i]['epistemic'] for b in B])} | "
            f"{_ms([f['rotation'][i]['accuracy'] for f in F], 3)} |")
    speed = [r["speed"] for r in rs]
    lines += ["", f"`predict` ({first['num_samples']} samples, 1,000 images) against a loop of "
              f"`model.predict` calls: {_ms([s['predict_s'] for s in speed], 2)} s vs "
              f"{_ms([s['loop_s'] for s in speed], 2)} s, "
              f"**{_ms([s['speedup'] for s in speed], 1)}x** faster.", ""]
    targets = list(first["targets"])
    lines.append("Targets (seeds meeting each): " + ", ".join(
        f"{k}: {sum(bool(r['targets'][k]) for r in rs)} of {len(rs)}" for k in targets))
    if len(rs) > 1:
        lines += ["", seeds_markdown(runs)]
    return "\n".join(lines)


def seeds_markdown(runs) -> str:
    """One row per seed (B = Bayesian Flipout, F = frequentist)."""
    lines = ["| seed | acc B / F | NLL B / F | ECE B / F | AUROC letters, epistemic (mutual "
             "information) | epistemic rises 0-90 | predict speed-up |",
             "|---|---|---|---|---|---|---|"]
    for seed, r in runs.items():
        b, f = r["bayesian"], r["frequentist"]
        lines.append(
            f"| {seed} | {b['accuracy']:.4f} / {f['accuracy']:.4f} | {b['nll']:.4f} / "
            f"{f['nll']:.4f} | {b['ece']:.4f} / {f['ece']:.4f} | "
            f"{b['ood']['letters']['auroc_epistemic']:.4f} | "
            f"{'yes' if r['targets']['epistemic_monotonic_0_90'] else 'no'} | "
            f"{r['speed']['speedup']:.1f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one full run (both models) per seed")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    runs = {str(seed): run(args.epochs, args.batch_size, args.learning_rate, args.num_samples,
                           seed) for seed in args.seeds}
    runs = json.loads(json.dumps(runs, default=float))  # the form the JSON file holds
    block = markdown(runs)
    print(block)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(block + "\n")
    return runs


if __name__ == "__main__":
    main()
