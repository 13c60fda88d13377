"""A Bayesian MobileNetV2: build, train, measure uncertainty, prune filters, export, run.

The edge-network path of tfp_bcnn on offline data, over the library's pieces:

1. data: MNIST-5k digits brought to MobileNetV2's input by
   ``datasets.fit_images`` (zero-padded to 32x32, grey repeated to 3
   channels); letters A-J as out-of-distribution images;
2. ``models.mobilenet_v2`` (Keras Applications, alpha 0.35, Flipout; with
   ``--last K`` only the last K convertible layers are Bayesian) trained from
   scratch with ``models.MOBILENET_RECIPE`` (why that recipe: the builder's
   docstring and BENCHMARKS.md, "Deep networks");
3. uncertainty: ``tfp_bcnn.predict`` on test digits and letters (accuracy,
   epistemic uncertainty, OOD AUROC of the predictive entropy);
4. filter pruning of ``--sparsity`` of the channels (``structure="filter"``:
   channels tied by a residual Add go together, a depthwise layer follows
   the layer before it) with the channel allocation ``ALLOCATION`` that
   benchmarks/deep.py found best (one global ranking of L2-normalised group
   scores, every group keeping at least 8 and a quarter of its channels;
   ``--cost flops`` ranks by score per FLOP saved instead, faster but it
   collapses this net), a short fine-tuning (none with
   ``--finetune-epochs 0``: one shot), then ``pruning.shrink`` rebuilds the
   network smaller with the same function;
5. TFLite export of the shrunk network (``lrt`` Monte Carlo, which tiles the
   batch only from the first Bayesian layer on, and ``moments``), run by the
   TF-free ``TFLiteBayesianModel`` and compared with Keras.

Measured with ``--n-train 2000 --epochs 4`` (seed 0; 2 CPU cores at a load
average of about 15-20 from other jobs, 635 s; the defaults were not run end
to end on that machine): accuracy 0.515 -- 125 optimizer steps leave
MobileNetV2 far from trained, the recipe's 12 epochs on 4,000 digits reached
0.933 in the screening of ``models.mobilenet_v2``'s docstring -- mean
epistemic 0.018 nats on test digits and 0.025 on letters, entropy AUROC
0.632; pruning 50 % of the channels with ``ALLOCATION``, one fine-tuning
epoch and shrinking: parameters 1,212,767 -> 450,559, FLOPs per image
2,393,184 -> 1,760,978, accuracy 0.578 (the extra epoch helps more than the
lost channels hurt; the per-group pruning of the earlier version dropped to
0.147); TFLite vs Keras argmax agreement: lrt 0.971, moments 0.970. The same
run with ``--cost flops --cost-exponent 0.5`` (1,604 s, load ~20): 0.508
before, parameters -> 208,851, FLOPs -> 624,712 (-74 %), accuracy 0.142:
the FLOPs sit in the narrow early layers, and this net cannot lose them.
BENCHMARKS.md ("Deep networks", benchmarks/deep.py) compares the same
network with its twins and the allocations with TFLite latencies.

Run::

    python examples/mobilenet_uncertainty.py
    python examples/mobilenet_uncertainty.py --last 5 --epochs 6
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfp_bcnn as bcnn  # noqa: E402
from tfp_bcnn import datasets, export, metrics, models, pruning  # noqa: E402

RECIPE = models.MOBILENET_RECIPE
#: `pruning.prune` options of the channel allocation (see tfp_bcnn/pruning/_allocation.py
#: and BENCHMARKS.md, "Deep networks"): global ranking, L2-normalised group scores,
#: floor max(8, C / 4) channels per group; no cost (``--cost flops`` adds one).
ALLOCATION = {"scope": "global", "normalize": "l2", "min_channels": 8, "min_fraction": 0.25}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=4000, help="digits (at most 4000)")
    parser.add_argument("--n-test", type=int, default=1000, help="test digits (at most 1000)")
    parser.add_argument("--letters-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--last", type=int, default=None,
                        help="only the last K convertible layers Bayesian (default: all)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of channels")
    parser.add_argument("--finetune-epochs", type=int, default=1,
                        help="fine-tuning epochs while pruning (0: prune at once, no tuning)")
    parser.add_argument("--cost", choices=("none", "flops", "params"),
                        default=ALLOCATION.get("cost") or "none",
                        help="rank channels by score per FLOP / weight saved, or by score "
                        "alone (none) (default: %(default)s)")
    parser.add_argument("--cost-exponent", type=float,
                        default=ALLOCATION.get("cost_exponent", 1.0),
                        help="with --cost: divide scores by (cost / mean) ** this "
                        "(default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.join("example_outputs", "mobilenet"))
    return parser.parse_args(argv)


def prune_filters(net, x, y, sparsity, epochs, cost="none", cost_exponent=1.0):
    """``sparsity`` of the channels pruned by `ALLOCATION`, fine-tuned, stripped and shrunk.

    ``epochs`` of fine-tuning with the masks held by `pruning.UpdatePruning`
    (the pruning happens at the first step); 0 prunes at once without tuning.
    ``cost`` (``"none"``: by score alone) and ``cost_exponent`` replace
    `ALLOCATION`'s.
    """
    options = {"criterion": "l1", "structure": "filter", **ALLOCATION}
    options.pop("cost_exponent", None)
    options["cost"] = None if cost == "none" else cost
    if options["cost"] is not None:
        options["cost_exponent"] = cost_exponent
    if epochs == 0:
        pruning.prune_now(net, sparsity, **options)
    else:
        pruning.prune(net, pruning.ConstantSparsity(sparsity, 0), **options)
        models.compile_bayesian(net, RECIPE["learning_rate"] / 4)
        net.fit(x, y, epochs=epochs, batch_size=RECIPE["batch_size"], verbose=2,
                callbacks=[pruning.UpdatePruning()])
    return pruning.shrink(pruning.strip(net))


def main(argv=None) -> dict:
    """Train, measure, prune, export and run; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    (x, y), (xt, yt) = datasets.mnist_5k()
    x, y = datasets.fit_images(x[: args.n_train], 32), y[: args.n_train]
    xt, yt = datasets.fit_images(xt[: args.n_test], 32), yt[: args.n_test]
    letters = datasets.fit_images(datasets.letters(args.letters_per_class, seed=0)[0], 32)

    net = models.mobilenet_v2(num_train_examples=len(x), last=args.last, seed=args.seed)
    kinds = {}
    for layer in bcnn.bayesian_layers(net):
        kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    print("Bayesian layers:", ", ".join(f"{n} x{c}" for n, c in sorted(kinds.items())))
    models.compile_bayesian(net, RECIPE["learning_rate"])
    net.fit(x, y, epochs=args.epochs, batch_size=RECIPE["batch_size"], verbose=2,
            callbacks=models.recipe_callbacks(RECIPE))

    s = args.num_samples
    test, ood = bcnn.predict(net, xt, num_samples=s), bcnn.predict(net, letters, num_samples=s)
    auroc = metrics.ood_auroc(test.predictive_entropy, ood.predictive_entropy)
    params = net.count_params()
    flops = sum(r["flops"] for r in pruning.layer_costs(net))
    small = prune_filters(net, x, y, args.sparsity, args.finetune_epochs, args.cost,
                          args.cost_exponent)
    pruned = bcnn.predict(small, xt, num_samples=s)

    runs, infos = {}, {}
    for sampling in ("lrt", "moments"):
        path = export.to_tflite(small, out_dir / f"mobilenet_{sampling}.tflite",
                                num_samples=s, sampling=sampling)
        infos[sampling] = export.describe(path)
        runs[sampling] = export.runtime.TFLiteBayesianModel(path).predict(xt)
    agreement = {k: float(np.mean(r.mean.argmax(-1) == pruned.mean.argmax(-1)))
                 for k, r in runs.items()}
    result = {
        "bayesian_layers": kinds,
        "accuracy": metrics.accuracy(test.mean, yt),
        "accuracy_pruned": metrics.accuracy(pruned.mean, yt),
        "epistemic_test": float(test.epistemic.mean()),
        "epistemic_ood": float(ood.epistemic.mean()),
        "auroc_entropy": auroc,
        "params": (params, small.count_params()),
        "flops": (flops, sum(r["flops"] for r in pruning.layer_costs(small))),
        "agreement": agreement,
        "tflite_info": infos,
        "seconds": time.time() - start,
    }
    print(f"\naccuracy {result['accuracy']:.3f}, after pruning {args.sparsity:.0%} of the "
          f"channels and shrinking {result['accuracy_pruned']:.3f}; parameters "
          f"{params:,} -> {result['params'][1]:,}, FLOPs per image {flops:,} -> "
          f"{result['flops'][1]:,}")
    print(f"mean epistemic: test digits {result['epistemic_test']:.4f}, letters "
          f"{result['epistemic_ood']:.4f}; OOD AUROC (entropy) {auroc:.3f}")
    print("TFLite vs Keras argmax agreement: "
          + ", ".join(f"{k} {v:.3f}" for k, v in agreement.items()))
    print(f"done in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
