"""The ``tfp-bcnn`` command: demo, train, evaluate, prune, export.

This module only parses arguments; the commands are ``tfp_bcnn.workflow``'s
``run_*`` functions and the main job is ``tfp_bcnn.demo.run_demo``. Every
command that writes a model or an artifact writes it to a temporary path
beside the target and renames it into place, so an interrupted run never
leaves a half-written file. Loading ``.keras`` files keeps Keras' safe_mode.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]

# The choices are literal here so that `tfp-bcnn --help` imports neither Keras nor TF;
# tests/test_workflow.py checks them against workflow.MODELS and layers.ESTIMATORS.
MODELS = ("lenet5", "alexnet", "three_conv_three_fc")
ESTIMATORS = ("flipout", "reparameterization", "local_reparameterization")
METHODS = ("mc", "moments")
SAMPLINGS = ("lrt", "weights", "moments")


# --------------------------------------------------------------- commands
def cmd_train(args):
    from . import workflow

    return workflow.run_train(
        model=args.model, estimator=args.estimator, frequentist=args.frequentist,
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, kl_schedule=args.kl_schedule,
        warmup_epochs=args.warmup_epochs, dropout=args.dropout, members=args.members,
        output=args.output, seed=args.seed, verbose=args.verbose)


def cmd_evaluate(args):
    from . import workflow

    model = args.model[0] if len(args.model) == 1 else args.model
    return workflow.run_evaluate(model=model, dataset=args.dataset,
                                 samples=args.samples, out_dir=args.out_dir,
                                 method=args.method)


def cmd_prune(args):
    from . import workflow

    return workflow.run_prune(
        model=args.model, final_sparsity=args.final_sparsity, criterion=args.criterion,
        scope=args.scope, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, dataset=args.dataset, output=args.output,
        seed=args.seed, verbose=args.verbose)


def cmd_export(args):
    from . import workflow

    return workflow.run_export(
        model=args.model, saved_model=args.saved_model, tflite=args.tflite,
        samples=args.samples, sampling=args.sampling, quantize=args.quantize,
        dataset=args.dataset, check_images=args.check_images, check=not args.no_check)


def cmd_demo(args):
    from .demo import run_demo

    run_demo(out_dir=args.out_dir, quick=args.quick, epochs=args.epochs, seed=args.seed)
    return 0


# ----------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfp-bcnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train, evaluate, prune, export and run a Bayesian LeNet-5")
    d.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    d.add_argument("--out-dir", default=None, help="default ./runs/<timestamp>/")
    d.add_argument("--epochs", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model and save it as .keras")
    t.add_argument("--model", choices=MODELS, default="lenet5")
    t.add_argument("--estimator", choices=ESTIMATORS, default="flipout")
    t.add_argument("--frequentist", action="store_true", help="the deterministic twin")
    t.add_argument("--dataset", default="mnist_5k", help="mnist_5k, digits, or a .npz path")
    # None: the tuned recipe, tfp_bcnn.models.RECIPE (20 epochs, batch 64, Adam 2e-3)
    t.add_argument("--epochs", type=int, default=None, help="default: models.RECIPE (20)")
    t.add_argument("--batch-size", type=int, default=None, help="default: models.RECIPE (64)")
    t.add_argument("--learning-rate", type=float, default=None,
                   help="default: models.RECIPE (2e-3)")
    t.add_argument("--kl-schedule", choices=("constant", "linear", "blundell"),
                   default="constant")
    t.add_argument("--warmup-epochs", type=int, default=3)
    t.add_argument("--dropout", type=float, default=None,
                   help="add MCDropout at this rate before every dense layer (with "
                   "--frequentist: the Monte Carlo dropout baseline)")
    t.add_argument("--members", type=int, default=1,
                   help="train a deep ensemble of this many members (seeds seed, seed+1, "
                   "...), written as <output stem>_<m>.keras")
    t.add_argument("--output", default="model.keras")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--verbose", type=int, default=1)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, calibration, uncertainty, OOD, shift")
    e.add_argument("model", nargs="+",
                   help="a .keras file, or several: a deep ensemble (members are samples)")
    e.add_argument("--dataset", default="mnist_5k")
    e.add_argument("--samples", type=int, default=32)
    e.add_argument("--method", choices=METHODS, default="mc",
                   help="mc: Monte Carlo; moments: one sampling-free pass, logits sampled")
    e.add_argument("--out-dir", default="evaluation")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("prune", help="fine-tune with a pruning schedule, save stripped")
    r.add_argument("model")
    r.add_argument("--final-sparsity", type=float, default=0.9)
    r.add_argument("--criterion", choices=("magnitude", "snr"), default="snr")
    r.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="rank weights across all layers (default) or per layer; per layer, "
                   "90%% of LeNet-5's 150-weight first convolution leaves 15 weights")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--learning-rate", type=float, default=5e-4)
    r.add_argument("--dataset", default="mnist_5k")
    r.add_argument("--output", default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--verbose", type=int, default=1)
    r.set_defaults(func=cmd_prune)

    x = sub.add_parser("export", help="SavedModel and/or TFLite with MC sampling inside")
    x.add_argument("model")
    x.add_argument("--saved-model", default=None)
    x.add_argument("--tflite", default=None)
    x.add_argument("--samples", type=int, default=32)
    x.add_argument("--sampling", choices=SAMPLINGS, default="lrt",
                   help="moments: one pass of propagated moments, logits sampled (fastest)")
    x.add_argument("--quantize", choices=("dynamic",), default=None)
    x.add_argument("--dataset", default="mnist_5k")
    x.add_argument("--check-images", type=int, default=200)
    x.add_argument("--no-check", action="store_true", help="skip the agreement check")
    x.set_defaults(func=cmd_export)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # bad input, or a read-only / full target
        print(f"tfp-bcnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
