"""Prune a Bayesian LeNet-5 to 90% sparsity by signal-to-noise ratio, then export it.

Shows the deployment path of tfp_bcnn:

1. train a Flipout LeNet-5 briefly on MNIST-5k;
2. prune it during a short fine-tuning run: ``pruning.prune`` with a
   ``PolynomialDecay`` schedule (50% -> ``--sparsity``) and the ``"snr"``
   criterion ``|mu| / sigma`` (Blundell et al. 2015), the masks updated by the
   ``pruning.UpdatePruning`` callback; a pruned weight is 0 in its mean AND
   in its std, so every sampled weight there is exactly 0;
3. ``pruning.strip`` the model and print the sparsity of every layer;
4. export a SavedModel (``serving_default``: images -> mean, std, entropy,
   aleatoric, epistemic) and a sparse TFLite file with the Monte Carlo
   sampling inside one invocation (builtin ops only);
5. run the TFLite file with the TF-free ``TFLiteBayesianModel`` and compare
   its predictions with ``tfp_bcnn.predict`` on the Keras model (the two
   agree up to Monte Carlo error).

Run (about half a minute on 2 CPU cores)::

    python examples/prune_and_export.py
    python examples/prune_and_export.py --sparsity 0.95 --epochs 5 --prune-epochs 3

Outputs in ``--out-dir``: ``saved_model/``, ``model_sparse.tflite``,
``model.keras`` (the stripped model) and ``sparsity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# TensorFlow logs: warnings and info off (TF_CPP_MIN_LOG_LEVEL=0 brings them back);
# tfp_bcnn is imported first so that it hides TensorFlow's start-up lines
# (TFP_BCNN_VERBOSE=1 shows them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfp_bcnn as bcnn  # noqa: E402  (before keras)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfp_bcnn import datasets, export, metrics, models, pruning  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=2000,
                        help="training images taken from MNIST-5k (at most 4000)")
    parser.add_argument("--n-test", type=int, default=500, help="test digits (at most 1000)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs before pruning")
    parser.add_argument("--prune-epochs", type=int, default=2,
                        help="fine-tuning epochs while the sparsity ramps up")
    parser.add_argument("--sparsity", type=float, default=0.9, help="final sparsity")
    parser.add_argument("--criterion", choices=pruning.CRITERIA, default="snr")
    parser.add_argument("--scope", choices=pruning.SCOPES, default="global",
                        help="one SNR threshold over all layers, or each layer at the sparsity")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--num-samples", type=int, default=16,
                        help="Monte Carlo samples per prediction (and in the exported files)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.join("example_outputs", "prune_and_export"))
    return parser.parse_args(argv)


def pruning_schedule(steps: int, final_sparsity: float) -> pruning.PolynomialDecay:
    """50% at step 0, ``final_sparsity`` after ~2/3 of ``steps``, then held.

    The last third of the fine-tuning lets the remaining weights recover.
    ``end_step`` is a multiple of ``frequency`` so that the final pruning step
    reaches ``final_sparsity`` exactly.
    """
    frequency = max(1, steps // 16)
    end_step = max(frequency, (2 * steps // 3) // frequency * frequency)
    initial = min(0.5, final_sparsity)
    return pruning.PolynomialDecay(initial, final_sparsity, begin_step=0, end_step=end_step,
                                   frequency=frequency)


def main(argv=None) -> dict:
    """Train, prune, strip, export and compare; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    start = time.time()

    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    x_train, y_train = x_train[: args.n_train], y_train[: args.n_train]
    x_test, y_test = x_test[: args.n_test], y_test[: args.n_test]

    print(f"== train a Flipout LeNet-5 on {len(x_train)} digits ({args.epochs} epochs)")
    model = models.lenet5(estimator="flipout", num_train_examples=len(x_train), seed=args.seed)
    models.compile_bayesian(model, learning_rate=args.learning_rate)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    dense = bcnn.predict(model, x_test, num_samples=args.num_samples)
    acc_dense = metrics.accuracy(dense.mean, y_test)

    steps = args.prune_epochs * int(np.ceil(len(x_train) / args.batch_size))
    schedule = pruning_schedule(steps, args.sparsity)
    print(f"\n== prune by {args.criterion} with {schedule} over {steps} steps")
    pruning.prune(model, schedule, criterion=args.criterion, scope=args.scope)
    models.compile_bayesian(model, learning_rate=args.learning_rate)  # fresh optimizer: step 0
    model.fit(x_train, y_train, epochs=args.prune_epochs, batch_size=args.batch_size,
              callbacks=[pruning.UpdatePruning()], verbose=2)
    pruning.strip(model)
    report = pruning.sparsity(model)
    print(f"\n{'layer':<8}{'weights':>9}{'sparsity':>10}")
    for layer in bcnn.bayesian_layers(model):
        print(f"{layer.name:<8}{int(np.prod(layer.kernel_mask.shape)):>9}"
              f"{report[layer.name]:>10.3f}")
    print(f"{'total':<8}{'':>9}{report['total']:>10.3f}")
    (out_dir / "sparsity.json").write_text(json.dumps(report, indent=2))
    keras_path = out_dir / "model.keras"
    model.save(keras_path)

    pruned = bcnn.predict(model, x_test, num_samples=args.num_samples)
    acc_pruned = metrics.accuracy(pruned.mean, y_test)

    print("\n== export")
    saved_model = export.save_saved_model(model, out_dir / "saved_model",
                                          num_samples=args.num_samples)
    tflite = export.to_tflite(model, out_dir / "model_sparse.tflite",
                              num_samples=args.num_samples, sparse=True)
    info = export.describe(tflite)
    print(f"SavedModel: {saved_model} ({export.describe(saved_model)['size_bytes'] / 1e3:.0f} kB)")
    print(f"TFLite:     {tflite} ({info['size_bytes'] / 1e3:.0f} kB, "
          f"{info['sparse_tensors']} sparse tensors, {info['zero_fraction']:.1%} zero weights, "
          f"flex ops: {info['flex_ops'] or 'none'})")

    runner = export.runtime.TFLiteBayesianModel(tflite)
    lite = runner.predict(x_test)
    acc_lite = metrics.accuracy(lite.mean, y_test)
    agreement = float(np.mean(lite.mean.argmax(-1) == pruned.mean.argmax(-1)))
    max_mean_diff = float(np.max(np.abs(lite.mean - pruned.mean)))

    print(f"\n{'':<22}{'accuracy':>9}{'aleatoric':>11}{'epistemic':>11}")
    for name, p, acc in (("Keras, before pruning", dense, acc_dense),
                         ("Keras, pruned", pruned, acc_pruned),
                         ("TFLite, pruned", lite, acc_lite)):
        print(f"{name:<22}{acc:>9.3f}{p.aleatoric.mean():>11.4f}{p.epistemic.mean():>11.4f}")
    print(f"TFLite vs Keras: argmax agreement {agreement:.3f}, "
          f"max |mean prob difference| {max_mean_diff:.3f} (Monte Carlo error)")
    elapsed = time.time() - start
    print(f"done in {elapsed:.1f} s")
    return {
        "sparsity": report,
        "accuracy_dense": acc_dense,
        "accuracy_pruned": acc_pruned,
        "accuracy_tflite": acc_lite,
        "argmax_agreement": agreement,
        "max_mean_diff": max_mean_diff,
        "tflite_mean": lite.mean,
        "keras_mean": pruned.mean,
        "tflite_info": info,
        "files": {"saved_model": saved_model, "tflite": tflite, "keras": str(keras_path),
                  "sparsity": str(out_dir / "sparsity.json")},
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
