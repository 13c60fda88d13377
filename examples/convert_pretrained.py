"""Turn a trained, plain Keras CNN (with a skip connection) into a Bayesian one.

Shows ``tfp_bcnn.models.to_bayesian`` with MOPED (Krishnan et al. 2020,
https://arxiv.org/abs/1906.05323):

1. train an ordinary functional Keras CNN on MNIST-5k (its second
   convolution has a residual connection, so the graph is not a plain
   stack);
2. convert it: every ``Conv2D`` / ``Dense`` becomes a Flipout layer whose
   posterior mean is the trained weight and whose std is
   ``moped_delta * |w|``; the graph, the skip connection and the layer names
   are kept;
3. check that, BEFORE any Bayesian training, the Monte Carlo mean prediction
   of the converted model is as accurate as the original (the posterior is
   centred on the trained weights);
4. fine-tune briefly with the ELBO (``compile_bayesian``: cross-entropy plus
   ``KL / N``) and print accuracy and uncertainty on test digits and on
   out-of-distribution letters.

Run (about 20 s on 2 CPU cores)::

    python examples/convert_pretrained.py
    python examples/convert_pretrained.py --moped-delta 0.05 --finetune-epochs 3
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

from tfp_bcnn import datasets, metrics, models  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=2000,
                        help="training images taken from MNIST-5k (at most 4000)")
    parser.add_argument("--n-test", type=int, default=500, help="test digits (at most 1000)")
    parser.add_argument("--letters-per-class", type=int, default=30,
                        help="OOD letters per letter A-J")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the plain CNN")
    parser.add_argument("--finetune-epochs", type=int, default=1,
                        help="ELBO fine-tuning epochs of the converted model")
    parser.add_argument("--moped-delta", type=float, default=0.1,
                        help="MOPED: posterior std = delta * |trained weight|")
    parser.add_argument("--estimator", default="flipout",
                        choices=("flipout", "reparameterization", "local_reparameterization"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--finetune-learning-rate", type=float, default=5e-4)
    parser.add_argument("--num-samples", type=int, default=16,
                        help="Monte Carlo samples per prediction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.join("example_outputs", "convert_pretrained"))
    return parser.parse_args(argv)


def plain_cnn(seed: int = 0) -> keras.Model:
    """A small functional CNN with a residual block: what a user already has."""
    init = keras.initializers.GlorotUniform
    L = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1",
                 kernel_initializer=init(seed))(inputs)
    r = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2",
                 kernel_initializer=init(seed + 1))(h)
    h = L.Add(name="skip")([h, r])
    h = L.MaxPooling2D(2, name="pool1")(h)
    h = L.Conv2D(32, 3, activation="relu", name="conv3", kernel_initializer=init(seed + 2))(h)
    h = L.MaxPooling2D(2, name="pool2")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(64, activation="relu", name="fc1", kernel_initializer=init(seed + 3))(h)
    outputs = L.Dense(10, activation="softmax", name="fc2",
                      kernel_initializer=init(seed + 4))(h)
    return keras.Model(inputs, outputs, name="plain_cnn")


def main(argv=None) -> dict:
    """Train, convert, compare, fine-tune; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    start = time.time()

    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    x_train, y_train = x_train[: args.n_train], y_train[: args.n_train]
    x_test, y_test = x_test[: args.n_test], y_test[: args.n_test]
    x_letters, _ = datasets.letters(args.letters_per_class, seed=args.seed)

    print(f"== 1. train a plain Keras CNN on {len(x_train)} digits ({args.epochs} epochs)")
    plain = plain_cnn(args.seed)
    plain.compile(keras.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    plain.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    p_plain = bcnn.predict(plain, x_test, num_samples=1)  # deterministic: one pass is enough
    acc_plain = metrics.accuracy(p_plain.mean, y_test)

    print(f"\n== 2. to_bayesian(estimator={args.estimator!r}, moped_delta={args.moped_delta})")
    bayes = models.to_bayesian(plain, args.estimator, num_train_examples=len(x_train),
                               moped_delta=args.moped_delta, seed=args.seed)
    for old, new in zip(plain.layers, bayes.layers):
        if type(old) is not type(new):
            print(f"  {old.name:<8}{type(old).__name__:<10}-> {type(new).__name__}")
    p_conv = bcnn.predict(bayes, x_test, num_samples=args.num_samples)
    acc_conv = metrics.accuracy(p_conv.mean, y_test)
    agreement = float((p_conv.mean.argmax(-1) == p_plain.mean.argmax(-1)).mean())
    print(f"\n== 3. before fine-tuning: accuracy plain {acc_plain:.3f}, converted (mean of "
          f"{args.num_samples} samples) {acc_conv:.3f}, argmax agreement {agreement:.3f}")

    print(f"\n== 4. fine-tune with the ELBO ({args.finetune_epochs} epoch(s))")
    models.compile_bayesian(bayes, learning_rate=args.finetune_learning_rate)
    bayes.fit(x_train, y_train, epochs=args.finetune_epochs, batch_size=args.batch_size,
              verbose=2)
    p_tuned = bcnn.predict(bayes, x_test, num_samples=args.num_samples)
    p_letters = bcnn.predict(bayes, x_letters, num_samples=args.num_samples)
    p_plain_letters = bcnn.predict(plain, x_letters, num_samples=1)
    acc_tuned = metrics.accuracy(p_tuned.mean, y_test)

    print(f"\n{'model':<24}{'accuracy':>9}{'ECE':>7}{'epistemic':>11}{'epist. letters':>16}"
          f"{'AUROC (entropy)':>17}")
    rows = (("plain CNN", p_plain, p_plain_letters),
            ("converted, fine-tuned", p_tuned, p_letters))
    aurocs = {}
    for name, p_in, p_out in rows:
        auroc = metrics.ood_auroc(p_in.predictive_entropy, p_out.predictive_entropy)
        aurocs[name] = auroc
        print(f"{name:<24}{metrics.accuracy(p_in.mean, y_test):>9.3f}"
              f"{metrics.expected_calibration_error(p_in.mean, y_test):>7.3f}"
              f"{p_in.epistemic.mean():>11.4f}{p_out.epistemic.mean():>16.4f}{auroc:>17.3f}")
    auroc_epistemic = metrics.ood_auroc(p_tuned.epistemic, p_letters.epistemic)
    print(f"converted model, letters vs digits by epistemic uncertainty: AUROC "
          f"{auroc_epistemic:.3f}")
    bayes_path = out_dir / "converted.keras"
    bayes.save(bayes_path)
    print(f"wrote {bayes_path}")
    elapsed = time.time() - start
    print(f"done in {elapsed:.1f} s")
    return {
        "accuracy_plain": acc_plain,
        "accuracy_converted": acc_conv,
        "argmax_agreement": agreement,
        "accuracy_finetuned": acc_tuned,
        "epistemic_test": float(p_tuned.epistemic.mean()),
        "epistemic_letters": float(p_letters.epistemic.mean()),
        "aleatoric_test": float(p_tuned.aleatoric.mean()),
        "auroc_entropy": aurocs,
        "auroc_epistemic": auroc_epistemic,
        "layer_types": {layer.name: type(layer).__name__ for layer in bayes.layers},
        "files": {"model": str(bayes_path)},
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
