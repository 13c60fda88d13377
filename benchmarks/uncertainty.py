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


def markdown(r) -> str:
    b, f = r["bayesian"], r["frequentist"]
    lines = [
        f"Flipout LeNet-5 vs frequentist LeNet-5, MNIST-5k, {r['epochs']} epochs, "
        f"batch {r['batch_size']}, {r['num_samples']} MC samples, backend {r['backend']}.",
        "",
        "| metric | Bayesian (Flipout) | frequentist | published (full MNIST): TFP VI / det. |",
        "|---|---|---|---|",
        f"| accuracy | {b['accuracy']:.4f} | {f['accuracy']:.4f} | 0.985 / 0.991 |",
        f"| NLL | {b['nll']:.4f} | {f['nll']:.4f} | 0.048 / 0.037 |",
        f"| Brier | {b['brier']:.4f} | {f['brier']:.4f} | |",
        f"| ECE (15 bins) | {b['ece']:.4f} | {f['ece']:.4f} | 0.010 / - |",
        f"| mean aleatoric (nats) | {b['aleatoric']:.4f} | {f['aleatoric']:.4f} | |",
        f"| mean epistemic (nats) | {b['epistemic']:.4f} | {f['epistemic']:.4f} | |",
    ]
    for name in b["ood"]:
        lines.append(f"| OOD AUROC {name}, mutual information | "
                     f"{b['ood'][name]['auroc_epistemic']:.4f} | "
                     f"{f['ood'][name]['auroc_epistemic']:.4f} | |")
        lines.append(f"| OOD AUROC {name}, predictive entropy | "
                     f"{b['ood'][name]['auroc_entropy']:.4f} | "
                     f"{f['ood'][name]['auroc_entropy']:.4f} | |")
    lines += ["", "| rotation (deg) | Bayesian acc | Bayesian epistemic | frequentist acc |",
              "|---|---|---|---|"]
    for rb, rf in zip(b["rotation"], f["rotation"]):
        lines.append(f"| {rb['angle']:.0f} | {rb['accuracy']:.3f} | {rb['epistemic']:.4f} | "
                     f"{rf['accuracy']:.3f} |")
    s = r["speed"]
    lines += ["", f"`predict` (32 samples, 1,000 images): {s['predict_s']:.2f} s vs the "
              f"`model.predict` loop {s['loop_s']:.2f} s: **{s['speedup']:.1f}x** faster.",
              "", "Targets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}"
                                          for k, v in r["targets"].items())]
    return "\n".join(lines)


def seeds_markdown(runs) -> str:
    """One row per seed: the targets, so that seed-to-seed spread is visible."""
    lines = ["| seed | acc B / F | NLL B / F | ECE B / F | AUROC letters (MI) | "
             "epistemic rises 0-90 | predict speed-up |", "|---|---|---|---|---|---|---|"]
    for seed, r in runs:
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
    args = p.parse_args(argv)
    runs = [(seed, run(args.epochs, args.batch_size, args.learning_rate, args.num_samples,
                       seed)) for seed in args.seeds]
    print(markdown(runs[0][1]))
    if len(runs) > 1:
        print(f"\nAll seeds ({len(runs)} runs, B = Bayesian Flipout, F = frequentist):\n")
        print(seeds_markdown(runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(seed): r for seed, r in runs}, f, indent=2, default=float)
    return runs


if __name__ == "__main__":
    main()
