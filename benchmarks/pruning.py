"""Pruning benchmark: accuracy and file size of a Flipout LeNet-5 under pruning.

Trains a Bayesian LeNet-5 (Flipout, ``kl_weight = 1/N``) on MNIST-5k, then,
for each criterion (``magnitude``: ``|mu|``; ``snr``: ``|mu| / sigma``) and
each target sparsity, starts from the trained weights, fine-tunes under a
``PolynomialDecay`` schedule with ``UpdatePruning``, strips the model and
reports the figures below. The unpruned row is fine-tuned the same way, for
the same ``--finetune-epochs`` from the same weights with a fresh optimizer,
without pruning, so every row has trained exactly as long:

* test accuracy of the Monte Carlo mean of ``--num-samples`` forward passes;
* the sparsity reached (all Bayesian kernels together);
* the size of the stripped ``.keras`` file, raw and gzip-compressed, against
  the unpruned model (saved uncompiled, i.e. without optimizer state).

Prints its markdown block (``markdown(results)``; ``--markdown`` also writes
it to a file, which ``run_all.py`` puts in BENCHMARKS.md); progress goes to
stderr, and no fit log is printed. ``--out`` writes the figures as JSON and
``--plot`` draws accuracy against sparsity (``tfp_bcnn.plots.sparsity_curve``,
skipped if that is not importable). Small defaults; on two CPU cores the
default run takes a few minutes::

    python benchmarks/pruning.py --epochs 3 --finetune-epochs 2 --out pruning.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np

import tfp_bcnn
from tfp_bcnn import datasets, metrics, models, pruning


def mc_accuracy(model, x, y, num_samples: int) -> float:
    """Accuracy of the mean of ``num_samples`` stochastic forward passes."""
    return metrics.accuracy(tfp_bcnn.predict(model, x, num_samples=num_samples).mean, y)


def file_sizes(weights, num_train_examples, directory) -> tuple[int, int]:
    """(raw, gzip -9) bytes of the ``.keras`` file of an uncompiled model."""
    model = models.lenet5(num_train_examples=num_train_examples)
    model.set_weights(weights)
    path = pathlib.Path(directory) / "model.keras"
    model.save(path)
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9))


def schedule_for(target, steps, initial):
    """PolynomialDecay from ``initial`` to ``target`` over the first ~70% of steps."""
    frequency = max(1, steps // 20)
    end = max(frequency, frequency * int(0.7 * steps / frequency))
    return pruning.PolynomialDecay(
        min(initial, target), target, 0, end, power=3, frequency=frequency
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=2,
        help="fine-tuning epochs under pruning (default 2)",
    )
    p.add_argument(
        "--sparsities",
        type=float,
        nargs="+",
        default=[0.5, 0.75, 0.9, 0.95, 0.98],
    )
    p.add_argument(
        "--criteria",
        nargs="+",
        default=list(pruning.CRITERIA),
        choices=pruning.CRITERIA,
    )
    p.add_argument("--scope", default="layer", choices=pruning.SCOPES)
    p.add_argument(
        "--initial-sparsity",
        type=float,
        default=0.0,
        help="sparsity at the start of the schedule (capped at the target)",
    )
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    p.add_argument("--plot", help="write the accuracy-vs-sparsity PNG to this file")
    return p.parse_args(argv)


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    from tfp_bcnn._io import write_bytes_atomic

    write_bytes_atomic(path, text.encode())


def markdown(results) -> str:
    """The benchmark's markdown block, from the results alone."""
    cfg = results["config"]
    base = results["baseline"]
    criteria = results["criteria"]
    rows = {}
    for r in results["runs"]:
        rows.setdefault(r["target_sparsity"], {})[r["criterion"]] = r
    head = (
        ["sparsity"]
        + [f"acc {c}" for c in criteria]
        + [f"reached {c}" for c in criteria]
        + [f"gzip KiB {c}" for c in criteria]
    )
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        "| 0 (unpruned) | "
        + " | ".join([f"{base['accuracy']:.4f}"] * len(criteria))
        + " | "
        + " | ".join(["0.000"] * len(criteria))
        + " | "
        + " | ".join([f"{base['gzip_bytes'] / 1024:.1f}"] * len(criteria))
        + " |",
    ]
    for target in sorted(rows):
        cells = [f"{target:g}"]
        cells += [f"{rows[target][c]['accuracy']:.4f}" for c in criteria]
        cells += [f"{rows[target][c]['sparsity']:.3f}" for c in criteria]
        cells += [
            f"{rows[target][c]['gzip_bytes'] / 1024:.1f} "
            f"({rows[target][c]['gzip_bytes'] / base['gzip_bytes']:.2f}x)"
            for c in criteria
        ]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (
        f"Flipout LeNet-5 trained {cfg['epochs']} epochs, then every row fine-tuned "
        f"{cfg['finetune_epochs']} more epochs from the same weights with a fresh Adam "
        f"optimizer (the unpruned row without pruning, the others under "
        f"{results['schedule']}, {cfg['scope']} scope); accuracy of the mean of "
        f"{cfg['num_samples']} Monte Carlo samples on the 1,000 test images (one seed, "
        f"{cfg['seed']}; the accuracy of one model varies by about 0.005 (std) from seed to "
        "seed in the uncertainty benchmark, so differences under about 0.01 are not "
        "significant); gzip "
        "size of the stripped `.keras` file and its ratio to the unpruned one. Before "
        f"fine-tuning the trained model scored {base['accuracy_before_finetuning']:.4f}.\n"
    )
    return intro + "\n" + "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    n = len(x_train)
    loss = "sparse_categorical_crossentropy"

    start = time.time()
    model = models.lenet5(num_train_examples=n, seed=args.seed)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    trained = model.get_weights()
    tmp = tempfile.mkdtemp(prefix="tfp_bcnn_pruning_")
    trained_accuracy = mc_accuracy(model, x_test, y_test, args.num_samples)
    # the unpruned row: the same fine-tuning (epochs, fresh optimizer), no pruning
    model = models.lenet5(num_train_examples=n, seed=args.seed)
    model.set_weights(trained)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss)
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.finetune_epochs,
              verbose=0)
    raw, gz = file_sizes(model.get_weights(), n, tmp)
    baseline = {
        "accuracy": mc_accuracy(model, x_test, y_test, args.num_samples),
        "accuracy_before_finetuning": trained_accuracy,
        "keras_bytes": raw,
        "gzip_bytes": gz,
    }
    print(
        f"trained {args.epochs} + {args.finetune_epochs} epochs in {time.time() - start:.0f} s: "
        f"accuracy {baseline['accuracy']:.4f} ({trained_accuracy:.4f} before fine-tuning), "
        f".keras {raw / 1024:.1f} KiB, gzip {gz / 1024:.1f} KiB",
        file=sys.stderr,
    )

    steps = args.finetune_epochs * int(np.ceil(n / args.batch_size))
    runs = []
    for criterion in args.criteria:
        for target in args.sparsities:
            t0 = time.time()
            model = models.lenet5(num_train_examples=n, seed=args.seed)
            model.set_weights(trained)
            schedule = schedule_for(target, steps, args.initial_sparsity)
            pruning.prune(model, schedule, criterion=criterion, scope=args.scope)
            model.compile(keras.optimizers.Adam(args.learning_rate), loss)  # step 0
            model.fit(
                x_train,
                y_train,
                batch_size=args.batch_size,
                epochs=args.finetune_epochs,
                verbose=0,
                callbacks=[pruning.UpdatePruning()],
            )
            pruning.strip(model)
            reached = pruning.sparsity(model)
            raw, gz = file_sizes(model.get_weights(), n, tmp)
            run = {
                "criterion": criterion,
                "target_sparsity": target,
                "sparsity": reached["total"],
                "layer_sparsity": {k: v for k, v in reached.items() if k != "total"},
                "accuracy": mc_accuracy(model, x_test, y_test, args.num_samples),
                "keras_bytes": raw,
                "gzip_bytes": gz,
                "seconds": time.time() - t0,
            }
            runs.append(run)
            print(
                f"{criterion:9s} {target:.2f}: accuracy {run['accuracy']:.4f}, "
                f"sparsity {run['sparsity']:.3f}, gzip {gz / 1024:.1f} KiB "
                f"({run['seconds']:.0f} s)",
                file=sys.stderr,
            )

    results = {
        "config": vars(args),
        "criteria": list(args.criteria),
        "baseline": baseline,
        "runs": runs,
        "schedule": f"PolynomialDecay(initial {args.initial_sparsity:g}, final = target, "
        f"over the first ~70% of the {steps} steps, power 3)",
        "seconds": time.time() - start,
    }
    block = markdown(results)
    print(block)
    if args.markdown:
        write_text(args.markdown, block + "\n")
    if args.out:
        write_text(args.out, json.dumps(results, indent=2))
    if args.plot:
        try:
            from tfp_bcnn.plots import sparsity_curve
        except ImportError:
            print("tfp_bcnn.plots.sparsity_curve unavailable: no plot", file=sys.stderr)
        else:
            targets = sorted({r["target_sparsity"] for r in runs})
            acc = {
                c: [
                    next(
                        r["accuracy"]
                        for r in runs
                        if r["criterion"] == c and r["target_sparsity"] == t
                    )
                    for t in targets
                ]
                for c in args.criteria
            }
            sparsity_curve(targets, acc, args.plot, baseline=baseline["accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
