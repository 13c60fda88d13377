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

import keras
import numpy as np
from _common import emit, mean_std, median_time, recipe, recipe_note, train, write_json

import tfp_bcnn
from tfp_bcnn import datasets, models
from tfp_bcnn.evaluation import evaluate_classifier, json_ready


def train_lenet5(bayesian, x, y, used, seed):
    """LeNet-5 (Flipout or its frequentist twin) trained with the recipe ``used``."""
    keras.utils.set_random_seed(seed)
    kwargs = {"estimator": "flipout", "num_train_examples": len(x)} if bayesian else {}
    return train(models.lenet5(bayesian=bayesian, **kwargs), x, y, recipe=used)


def predict_speed(model, x, num_samples=32, repeats=3):
    """Median seconds of ``tfp_bcnn.predict`` and of the users' loop of ``model.predict``.

    The two are timed alternately, ``repeats`` times each after one warm-up
    call (tracing), so a change of the machine's load hits both.
    """
    def ours():
        return tfp_bcnn.predict(model, x, num_samples=num_samples)

    def loop():
        return np.stack([model.predict(x, verbose=0) for _ in range(num_samples)])

    ours(), loop()  # trace once
    times = [(median_time(ours, 1, warmup=0), median_time(loop, 1, warmup=0))
             for _ in range(repeats)]
    return float(np.median([t[0] for t in times])), float(np.median([t[1] for t in times]))


def run(used, num_samples=32, seed=0):
    (x, y), (x_test, y_test) = datasets.mnist_5k()
    results = {"epochs": used["epochs"], "batch_size": used["batch_size"],
               "recipe": dict(used), "num_samples": num_samples,
               "backend": keras.backend.backend()}
    for name, bayesian in (("bayesian", True), ("frequentist", False)):
        model, secs = train_lenet5(bayesian, x, y, used, seed)
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
    """`mean_std` over seeds; "n/a" for a figure that does not apply (None: a
    deterministic model's epistemic)."""
    if any(v is None for v in values):
        return "n/a"
    return mean_std(values, digits)


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

    used = first.get("recipe") or recipe(epochs=first["epochs"],
                                         batch_size=first["batch_size"])
    lines = [
        f"Flipout LeNet-5 against the frequentist LeNet-5 trained the same way "
        f"({first['num_samples']} Monte Carlo samples, backend {first['backend']}); "
        f"seeds {', '.join(map(str, runs))}: mean +- standard deviation (sample std, ddof "
        f"= 1) over the "
        f"{len(rs)} seed{'s' if len(rs) > 1 else ''}. "
        + recipe_note(used, "set on the command line"),
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
    p.add_argument("--epochs", type=int, default=None, help="default: models.RECIPE")
    p.add_argument("--batch-size", type=int, default=None, help="default: models.RECIPE")
    p.add_argument("--learning-rate", type=float, default=None, help="default: models.RECIPE")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one full run (both models) per seed")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    used = recipe(epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate)
    runs = {str(seed): run(used, args.num_samples, seed) for seed in args.seeds}
    runs = json.loads(json.dumps(runs, default=float))  # the form the JSON file holds
    emit(args.markdown, markdown(runs))
    write_json(args.json, runs)
    return runs


if __name__ == "__main__":
    main()
