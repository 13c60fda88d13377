"""Pruning benchmark: accuracy and file size of a Flipout LeNet-5 under pruning.

Trains a Bayesian LeNet-5 (Flipout, ``kl_weight = 1/N``) on MNIST-5k, then,
for each criterion (``magnitude``: ``|mu|``; ``snr``: ``|mu| / sigma``) and
each target sparsity, starts from the trained weights, fine-tunes under a
schedule of ``tfp-bcnn prune`` (``workflow.prune_and_finetune``: the
``PolynomialDecay`` of ``workflow.finetune_schedule``, ``UpdatePruning``, the
learning rate of ``workflow.FINETUNE``), strips the model and reports the
figures below. The unpruned row is fine-tuned the same way, for
the same ``--finetune-epochs`` from the same weights with a fresh optimizer,
without pruning, so every row has trained exactly as long:

* test accuracy of the Monte Carlo mean of ``--num-samples`` forward passes;
* the sparsity reached (all Bayesian kernels together);
* the size of the stripped ``.keras`` file, raw and gzip-compressed, against
  the unpruned model (saved uncompiled, i.e. without optimizer state).

Prints its markdown block (``markdown(results)``; ``--markdown`` also writes
it to a file, which ``run_all.py`` puts in BENCHMARKS.md); progress goes to
stderr, and no fit log is printed. ``--out`` writes the figures as JSON and
``--plot`` draws accuracy against sparsity (``tfp_bcnn.plots.sparsity_curve``).
On two CPU cores a run of a few epochs takes a few minutes::

    python benchmarks/pruning.py --epochs 3 --finetune-epochs 2 --out pruning.json

Training follows ``models.RECIPE`` unless ``--epochs`` etc. say otherwise (the
block then names the departure).
"""

from __future__ import annotations

import argparse
import gzip
import pathlib
import sys
import tempfile
import time

import keras
from _common import emit, log, markdown_table, mc_accuracy, recipe, recipe_note, train, write_json

from tfp_bcnn import datasets, models, pruning, workflow


def file_sizes(weights, num_train_examples, directory) -> tuple[int, int]:
    """(raw, gzip -9) bytes of the ``.keras`` file of an uncompiled model."""
    model = models.lenet5(num_train_examples=num_train_examples)
    model.set_weights(weights)
    path = pathlib.Path(directory) / "model.keras"
    model.save(path)
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=9))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: models.RECIPE)")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=workflow.FINETUNE["epochs"],
        help="fine-tuning epochs under pruning (default: workflow.FINETUNE)",
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
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=None, help="default: models.RECIPE")
    p.add_argument("--learning-rate", type=float, default=None, help="default: models.RECIPE")
    p.add_argument("--finetune-learning-rate", type=float,
                   default=workflow.FINETUNE["learning_rate"],
                   help="default: workflow.FINETUNE (that of tfp-bcnn prune)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    p.add_argument("--plot", help="write the accuracy-vs-sparsity PNG to this file")
    return p.parse_args(argv)


def markdown(results) -> str:
    """The benchmark's markdown block, from the results alone."""
    cfg = results["config"]
    base = results["baseline"]
    criteria = results["criteria"]
    rows = {}
    for r in results["runs"]:
        rows.setdefault(r["target_sparsity"], {})[r["criterion"]] = r
    head = (["sparsity"] + [f"acc {c}" for c in criteria] + [f"reached {c}" for c in criteria]
            + [f"gzip KiB {c}" for c in criteria])
    table = [["0 (unpruned)"] + [f"{base['accuracy']:.4f}"] * len(criteria)
             + ["0.000"] * len(criteria) + [f"{base['gzip_bytes'] / 1024:.1f}"] * len(criteria)]
    for target in sorted(rows):
        row = rows[target]
        table.append([f"{target:g}"] + [f"{row[c]['accuracy']:.4f}" for c in criteria]
                     + [f"{row[c]['sparsity']:.3f}" for c in criteria]
                     + [f"{row[c]['gzip_bytes'] / 1024:.1f} "
                        f"({row[c]['gzip_bytes'] / base['gzip_bytes']:.2f}x)" for c in criteria])
    intro = (
        f"Flipout LeNet-5 trained {cfg['epochs']} epochs, then every row fine-tuned "
        f"{cfg['finetune_epochs']} more epochs from the same weights with a fresh Adam "
        f"optimizer (learning rate {cfg['finetune_learning_rate']:g}; the unpruned row without "
        f"pruning, the others as `tfp-bcnn prune` does, `workflow.prune_and_finetune` "
        f"under {results['schedule']}, {cfg['scope']} scope); accuracy of the mean of "
        f"{cfg['num_samples']} Monte Carlo samples on the 1,000 test images (one seed, "
        f"{cfg['seed']}; the accuracy of one model varies by about 0.005 (std) from seed to "
        "seed in the uncertainty benchmark, so differences under about 0.01 are not "
        "significant); gzip "
        "size of the stripped `.keras` file and its ratio to the unpruned one. Before "
        f"fine-tuning the trained model scored {base['accuracy_before_finetuning']:.4f}. "
        + recipe_note(results["recipe"], "set on the command line") + "\n"
    )
    return intro + "\n" + markdown_table(head, table)


def finetune_unpruned(trained, n, data, args, used) -> keras.Model:
    """The unpruned row: the same fine-tuning (epochs, fresh optimizer), no pruning."""
    model = models.lenet5(num_train_examples=n, seed=args.seed)
    model.set_weights(trained)
    models.compile_bayesian(model, args.finetune_learning_rate)
    return train(model, *data, recipe=dict(used, epochs=args.finetune_epochs))[0]


def prune_row(trained, n, data, args, used, criterion, target, tmp) -> tuple[dict, keras.Model]:
    """One pruned row: `workflow.prune_and_finetune` from the trained weights."""
    t0 = time.time()
    model = models.lenet5(num_train_examples=n, seed=args.seed)
    model.set_weights(trained)
    model = workflow.prune_and_finetune(
        model, *data, final_sparsity=target, criterion=criterion, epochs=args.finetune_epochs,
        batch_size=used["batch_size"], learning_rate=args.finetune_learning_rate,
        scope=args.scope, verbose=0)
    reached = pruning.sparsity(model)
    raw, gz = file_sizes(model.get_weights(), n, tmp)
    return {"criterion": criterion, "target_sparsity": target, "sparsity": reached["total"],
            "layer_sparsity": {k: v for k, v in reached.items() if k != "total"},
            "keras_bytes": raw, "gzip_bytes": gz, "seconds": time.time() - t0}, model


def plot(runs, criteria, path, baseline) -> None:
    """Accuracy against sparsity per criterion (``plots.sparsity_curve``)."""
    from tfp_bcnn.plots import sparsity_curve

    targets = sorted({r["target_sparsity"] for r in runs})
    acc = {c: [next(r["accuracy"] for r in runs
                    if r["criterion"] == c and r["target_sparsity"] == t) for t in targets]
           for c in criteria}
    sparsity_curve(targets, acc, path, baseline=baseline)


def main(argv=None) -> int:
    args = parse_args(argv)
    used = recipe(epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate)
    args.epochs, args.batch_size, args.learning_rate = (
        used["epochs"], used["batch_size"], used["learning_rate"])
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    data, n = (x_train, y_train), len(x_train)

    start = time.time()
    model, _ = train(models.lenet5(num_train_examples=n, seed=args.seed), *data, recipe=used)
    trained = model.get_weights()
    tmp = tempfile.mkdtemp(prefix="tfp_bcnn_pruning_")
    trained_accuracy = mc_accuracy(model, x_test, y_test, args.num_samples)
    model = finetune_unpruned(trained, n, data, args, used)
    raw, gz = file_sizes(model.get_weights(), n, tmp)
    baseline = {"accuracy": mc_accuracy(model, x_test, y_test, args.num_samples),
                "accuracy_before_finetuning": trained_accuracy, "keras_bytes": raw,
                "gzip_bytes": gz}
    log(f"trained {args.epochs} + {args.finetune_epochs} epochs in {time.time() - start:.0f} s: "
        f"accuracy {baseline['accuracy']:.4f} ({trained_accuracy:.4f} before fine-tuning), "
        f".keras {raw / 1024:.1f} KiB, gzip {gz / 1024:.1f} KiB")

    runs = []
    for criterion in args.criteria:
        for target in args.sparsities:
            run, model = prune_row(trained, n, data, args, used, criterion, target, tmp)
            run["accuracy"] = mc_accuracy(model, x_test, y_test, args.num_samples)
            runs.append(run)
            log(f"{criterion:9s} {target:.2f}: accuracy {run['accuracy']:.4f}, "
                f"sparsity {run['sparsity']:.3f}, "
                f"gzip {run['gzip_bytes'] / 1024:.1f} KiB ({run['seconds']:.0f} s)")
    sched = workflow.finetune_schedule(n, args.batch_size, args.finetune_epochs, 0.5)
    results = {
        "config": vars(args), "recipe": used, "criteria": list(args.criteria),
        "baseline": baseline, "runs": runs,
        "schedule": f"`workflow.finetune_schedule` (PolynomialDecay from 0 to the target, "
                    f"ending at step {sched.end_step}, pruning every {sched.frequency} steps)",
        "seconds": time.time() - start,
    }
    emit(args.markdown, markdown(results))
    write_json(args.out, results)
    if args.plot:
        plot(runs, args.criteria, args.plot, baseline["accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
