"""The ``tfp-bcnn`` command: demo, train, evaluate, prune, export.

This module parses and checks the arguments; the commands are
``tfp_bcnn.workflow``'s ``run_*`` functions and the main job is
``tfp_bcnn.demo.run_demo``. It lives outside the ``tfp_bcnn`` package (as the
top-level module ``_tfp_bcnn_cli``; ``tfp_bcnn.cli`` re-exports it) because
importing anything inside the package first runs ``tfp_bcnn/__init__.py``,
which imports Keras and TensorFlow eagerly (about 5 s): here ``--help`` and
every argument error answer before TensorFlow is imported, and TensorFlow is
imported only by a command that runs. Every number is checked when it is
parsed (exit status 2, the usage line, and nothing written).

TensorFlow's native log lines are silenced (``tfp_bcnn._quiet``, and
``TF_CPP_MIN_LOG_LEVEL=2`` unless already set); ``tfp-bcnn --tf-logs ...`` or
``TFP_BCNN_VERBOSE=1`` shows them all. Every command checks every output path
before it starts work (``tfp_bcnn._io.check_output_path``: the folder exists,
or ``--mkdir`` creates it, and accepts a new file; else exit status 2, the
target named, nothing written), then writes each model or artifact to a
temporary path beside the target and renames it into place, so an
interrupted run never leaves a half-written file. Progress goes to a
terminal as Keras' bars and to a file or pipe as one plain line per epoch
(``tfp_bcnn._console``). Loading ``.keras`` files keeps Keras' safe_mode.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

__all__ = ["build_parser", "main"]

# The choices are literal here so that `tfp-bcnn --help` imports neither Keras nor TF;
# tests/test_workflow.py checks them against workflow.MODELS and layers.ESTIMATORS.
MODELS = ("lenet5", "alexnet", "three_conv_three_fc", "mobilenet_v2", "unet")
ESTIMATORS = ("flipout", "reparameterization", "local_reparameterization")
METHODS = ("mc", "moments")
SAMPLINGS = ("lrt", "weights", "moments")
#: Named data sets of ``tfp_bcnn.datasets.get``; anything else must be a path.
DATASETS = ("mnist_5k", "digits", "digit_scenes")


# ---------------------------------------------------------- argument types
def _integer(minimum: int):
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}. Received: {text!r}")
        return value

    return parse


def _real(low: float, *, low_open: bool, high: float = math.inf, high_open: bool = True,
          what: str):
    """An argparse ``type``: a finite number in the interval described by ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text!r}")
        return value

    return parse


def _path_ending(suffix: str):
    """An argparse ``type``: a path whose name ends in ``suffix``."""

    def parse(text: str) -> str:
        if not text.endswith(suffix) or os.path.basename(text) == suffix:
            raise argparse.ArgumentTypeError(
                f"must be a file name ending in {suffix}. Received: {text!r}")
        return text

    return parse


def _model_file(text: str) -> str:
    """An argparse ``type``: an existing zip archive, as ``model.save`` writes a
    ``.keras`` file (``workflow.load_model`` checks the rest when it loads)."""
    import zipfile

    if not os.path.isfile(text):
        what = "a folder" if os.path.isdir(text) else "no such file"
    elif not zipfile.is_zipfile(text):
        what = "not a valid .keras file: not the zip archive that model.save writes"
    else:
        return text
    raise argparse.ArgumentTypeError(f"must be a .keras model file ({what}). Received: {text!r}")


def _dataset(text: str) -> str:
    """An argparse ``type``: a named data set, or an existing ``.npz`` file or folder."""
    if text in DATASETS or os.path.isdir(text) or (
            text.lower().endswith(".npz") and os.path.isfile(text)):
        return text
    raise argparse.ArgumentTypeError(
        f"must be one of {', '.join(DATASETS)}, an existing .npz file or a folder of class "
        f"subfolders. Received: {text!r}")


POSITIVE_INT = _integer(1)
NON_NEGATIVE_INT = _integer(0)
POSITIVE_REAL = _real(0.0, low_open=True, what="a finite number > 0")
SPARSITY = _real(0.0, low_open=False, high=1.0, high_open=True, what="a number in [0, 1)")
DROPOUT_RATE = _real(0.0, low_open=True, high=1.0, high_open=True, what="a number in (0, 1)")
KERAS_FILE = _path_ending(".keras")
TFLITE_FILE = _path_ending(".tflite")
ONNX_FILE = _path_ending(".onnx")


# --------------------------------------------------------------- commands
def cmd_train(args):
    from tfp_bcnn import workflow

    return workflow.run_train(
        model=args.model, estimator=args.estimator, frequentist=args.frequentist,
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, kl_schedule=args.kl_schedule,
        warmup_epochs=args.warmup_epochs, dropout=args.dropout, members=args.members,
        output=args.output, seed=args.seed, verbose=args.verbose, mkdir=args.mkdir,
        last=args.last, input_size=args.input_size)


def cmd_evaluate(args):
    from tfp_bcnn import workflow

    model = args.model[0] if len(args.model) == 1 else args.model
    return workflow.run_evaluate(model=model, dataset=args.dataset,
                                 samples=args.samples, out_dir=args.out_dir,
                                 method=args.method, mkdir=args.mkdir)


def cmd_prune(args):
    from tfp_bcnn import workflow

    return workflow.run_prune(
        model=args.model, final_sparsity=args.final_sparsity, criterion=args.criterion,
        scope=args.scope, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, dataset=args.dataset, output=args.output,
        seed=args.seed, structured=args.structured, verbose=args.verbose, mkdir=args.mkdir,
        **{k: getattr(args, k) for k in ("min_channels", "min_fraction", "normalize", "cost",
                                         "cost_exponent") if getattr(args, k) is not None})


def cmd_export(args):
    from tfp_bcnn import workflow

    return workflow.run_export(
        model=args.model, saved_model=args.saved_model, tflite=args.tflite,
        samples=args.samples, sampling=args.sampling, quantize=args.quantize,
        dataset=args.dataset, check_images=args.check_images, check=not args.no_check,
        mkdir=args.mkdir, onnx=args.onnx)


def cmd_demo(args):
    from tfp_bcnn.demo import run_demo

    run_demo(out_dir=args.out_dir, quick=args.quick, epochs=args.epochs, seed=args.seed,
             mkdir=args.mkdir)
    return 0


def check_export(args) -> str | None:
    """The one rule across options: an export needs at least one format."""
    if not args.saved_model and not args.tflite and not args.onnx:
        return ("give --saved-model DIR, --tflite FILE.tflite and/or --onnx FILE.onnx. "
                "Received: none")
    return None


# ----------------------------------------------------------------- parser
#: The top-level description of ``tfp-bcnn --help``: plain text, no markup.
DESCRIPTION = (
    "Bayesian CNNs for Keras 3: train, evaluate, prune and export models whose weights are "
    "distributions, and measure how sure they are (aleatoric and epistemic uncertainty). "
    "'tfp-bcnn demo' runs every step on the bundled MNIST-5k.")
EPILOG = (
    "Every output path is checked before any work: its folder must exist and be writable "
    "(--mkdir creates it). Progress: a bar on a terminal, one line per epoch when the output "
    "goes to a file or a pipe. TensorFlow's own log lines are hidden; --tf-logs (or "
    "TFP_BCNN_VERBOSE=1) shows them.")
MKDIR_HELP = "create missing folders of the output paths (default: a missing folder is an error)"
VERBOSE_HELP = ("Keras' fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch "
                "(default: 1 on a terminal, 2 when the output goes to a file or a pipe)")


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="train, evaluate, prune, export and run a Bayesian LeNet-5",
                       description="The main job: train, evaluate, prune, export and run a "
                       "Bayesian LeNet-5 and its frequentist twin on MNIST-5k.")
    d.add_argument("--quick", action="store_true",
                   help="a one-minute smoke run (1,000 images, one epoch): checks that every "
                   "step runs; its figures are not results")
    d.add_argument("--out-dir", default=None,
                   help="folder for the models, plots and summary (default: "
                   "runs/<timestamp>/, created with runs/)")
    d.add_argument("--mkdir", action="store_true", help=MKDIR_HELP)
    d.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="training epochs (default: models.RECIPE, 20; 1 with --quick)")
    d.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="global random seed (default: %(default)s)")
    d.set_defaults(func=cmd_demo)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a model and save it as .keras",
                       description="Train a model of the zoo and save it as .keras.")
    t.add_argument("--model", choices=MODELS, default="lenet5",
                   help="architecture (default: %(default)s)")
    t.add_argument("--estimator", choices=ESTIMATORS, default="flipout",
                   help="gradient estimator of the Bayesian layers (default: %(default)s)")
    t.add_argument("--frequentist", action="store_true",
                   help="train the deterministic twin instead (default: Bayesian)")
    t.add_argument("--dataset", type=_dataset, default="mnist_5k",
                   help="mnist_5k, digits, digit_scenes (per-pixel labels, for --model "
                   "unet), a .npz file or a folder of class subfolders (default: %(default)s)")
    # None: the tuned recipe, tfp_bcnn.models.RECIPE (20 epochs, batch 64, Adam 2e-3)
    t.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="training epochs (default: models.RECIPE, 20; mobilenet_v2: "
                   "models.MOBILENET_RECIPE)")
    t.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                   help="batch size (default: models.RECIPE, 64)")
    t.add_argument("--learning-rate", type=POSITIVE_REAL, default=None,
                   help="Adam's learning rate (default: models.RECIPE, 2e-3)")
    t.add_argument("--kl-schedule", choices=("constant", "linear", "blundell"),
                   default="constant",
                   help="weight of the KL term over training (default: %(default)s, "
                   "the recipe's)")
    t.add_argument("--warmup-epochs", type=POSITIVE_INT, default=3,
                   help="epochs of the linear KL warm-up (default: %(default)s)")
    t.add_argument("--dropout", type=DROPOUT_RATE, default=None,
                   help="add MCDropout at this rate before every dense layer (with "
                   "--frequentist: the Monte Carlo dropout baseline; default: none)")
    t.add_argument("--members", type=POSITIVE_INT, default=1,
                   help="train a deep ensemble of this many members (seeds seed, seed+1, "
                   "...), written as <output stem>_<m>.keras (default: %(default)s)")
    t.add_argument("--last", type=POSITIVE_INT, default=None,
                   help="make only the last K convertible layers Bayesian (a partially "
                   "Bayesian net; default: all)")
    t.add_argument("--input-size", type=POSITIVE_INT, default=None,
                   help="pad or resize the images to this size squared (default: as they "
                   "are; mobilenet_v2: at least 32, grey repeated to 3 channels)")
    t.add_argument("--output", type=KERAS_FILE, default="model.keras",
                   help="the .keras file to write (default: %(default)s)")
    t.add_argument("--mkdir", action="store_true", help=MKDIR_HELP)
    t.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="random seed (default: %(default)s)")
    t.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None, help=VERBOSE_HELP)
    t.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="accuracy, calibration, uncertainty, OOD, shift",
                       description="Evaluate a model: accuracy, NLL, Brier, ECE, uncertainty, "
                       "OOD AUROC (letters, noise), rotated digits; tables, plots and a JSON "
                       "report.")
    e.add_argument("model", type=_model_file, nargs="+",
                   help="a .keras file, or several: a deep ensemble (members are samples)")
    e.add_argument("--dataset", type=_dataset, default="mnist_5k",
                   help="test set: mnist_5k, digits, digit_scenes (a segmentation model: "
                   "per-pixel metrics, maps and sparsification curves), a .npz file or a "
                   "folder of class subfolders (default: %(default)s)")
    e.add_argument("--samples", type=POSITIVE_INT, default=32,
                   help="Monte Carlo samples per image (default: %(default)s)")
    e.add_argument("--method", choices=METHODS, default="mc",
                   help="mc: Monte Carlo; moments: one sampling-free pass, logits sampled "
                   "(default: %(default)s)")
    e.add_argument("--out-dir", default="evaluation",
                   help="folder for the plots and <model>_report.json (default: %(default)s)")
    e.add_argument("--mkdir", action="store_true", help=MKDIR_HELP)
    e.set_defaults(func=cmd_evaluate)


def _add_prune(sub) -> None:
    r = sub.add_parser("prune", help="fine-tune with a pruning schedule, save stripped",
                       description="Prune a model while fine-tuning it, and save it stripped.")
    r.add_argument("model", type=_model_file, help="the .keras file to prune")
    r.add_argument("--structured", action="store_true",
                   help="prune whole filters / units and shrink the model; prints channels, "
                   "parameters and FLOPs per layer before and after. With --scope global "
                   "the cheapest filters by score go first, mostly dense units (fewer "
                   "parameters); --scope layer also thins the convolutions (faster inference)")
    r.add_argument("--final-sparsity", type=SPARSITY, default=None,
                   help="fraction of weights (default 0.9), or of filters / units with "
                   "--structured (default 0.5)")
    r.add_argument("--criterion", choices=("magnitude", "snr", "l1"), default="snr",
                   help="|mu| (a filter's L2 norm), |mu|/sigma (a filter's mean SNR), or "
                   "a filter's L1 norm (default: %(default)s)")
    r.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="rank weights across all layers or per layer; per layer, "
                   "90%% of LeNet-5's 150-weight first convolution leaves 15 weights "
                   "(default: %(default)s)")
    r.add_argument("--min-channels", type=POSITIVE_INT, default=None,
                   help="with --structured: every layer / channel group keeps at least this "
                   "many channels (default 1)")
    r.add_argument("--min-fraction", type=SPARSITY, default=None,
                   help="with --structured: ... and at least this fraction of its channels "
                   "(default 0); a floor spares the narrow layers of a thin network")
    r.add_argument("--normalize", choices=("none", "l2", "mean"), default=None,
                   help="with --structured --scope global: rescale each group's filter scores "
                   "before one ranking; l2 prunes wide groups first (default none)")
    r.add_argument("--cost", choices=("flops", "params"), default=None,
                   help="with --structured --scope global: rank channels by score per FLOP "
                   "(or per weight) that removing them saves, so the pruning removes compute "
                   "where it is cheap in accuracy (default: by score alone)")
    r.add_argument("--cost-exponent", type=POSITIVE_REAL, default=None,
                   help="with --cost: divide scores by (cost / mean cost) ** this; below 1 "
                   "tempers the cost toward the plain ranking (default 1)")
    r.add_argument("--epochs", type=POSITIVE_INT, default=3,
                   help="fine-tuning epochs (default: %(default)s)")
    r.add_argument("--batch-size", type=POSITIVE_INT, default=64,
                   help="batch size (default: %(default)s)")
    r.add_argument("--learning-rate", type=POSITIVE_REAL, default=5e-4,
                   help="Adam's learning rate of fine-tuning (default: %(default)s)")
    r.add_argument("--dataset", type=_dataset, default="mnist_5k",
                   help="fine-tuning and test data (default: %(default)s)")
    r.add_argument("--output", type=KERAS_FILE, default=None,
                   help="the .keras file to write (default: <model stem>_pruned.keras "
                   "beside the model)")
    r.add_argument("--mkdir", action="store_true", help=MKDIR_HELP)
    r.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="random seed (default: %(default)s)")
    r.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None, help=VERBOSE_HELP)
    r.set_defaults(func=cmd_prune)


def _add_export(sub) -> None:
    x = sub.add_parser("export", help="SavedModel, TFLite and/or ONNX with MC sampling inside",
                       description="Export a model as a SavedModel, a sparse TFLite file "
                       "and/or an ONNX file with the Monte Carlo sampling inside, and check "
                       "the TFLite / ONNX files against the Keras model.")
    x.add_argument("model", type=_model_file, help="the .keras file to export")
    x.add_argument("--saved-model", default=None,
                   help="SavedModel folder to write (default: none; give it and/or --tflite)")
    x.add_argument("--tflite", type=TFLITE_FILE, default=None,
                   help="TFLite file to write (default: none; give it and/or --saved-model)")
    x.add_argument("--onnx", type=ONNX_FILE, default=None,
                   help="ONNX file to write, run with ONNX Runtime (default: none; needs "
                   "the export extra: tf2onnx, onnxruntime)")
    x.add_argument("--mkdir", action="store_true", help=MKDIR_HELP)
    x.add_argument("--samples", type=POSITIVE_INT, default=32,
                   help="Monte Carlo samples drawn inside each call (default: %(default)s)")
    x.add_argument("--sampling", choices=SAMPLINGS, default="lrt",
                   help="lrt: sampled activations; weights: sampled kernels; moments: one "
                   "pass of propagated moments, logits sampled, fastest (default: %(default)s)")
    x.add_argument("--quantize", choices=("dynamic",), default=None,
                   help="dynamic: int8 weights (default: float32)")
    x.add_argument("--dataset", type=_dataset, default="mnist_5k",
                   help="test images of the agreement check (default: %(default)s)")
    x.add_argument("--check-images", type=POSITIVE_INT, default=200,
                   help="images of the agreement check (default: %(default)s)")
    x.add_argument("--no-check", action="store_true",
                   help="skip the agreement check of the TFLite / ONNX file with the Keras "
                   "model")
    x.set_defaults(func=cmd_export, validate=check_export, parser=x)


def build_parser() -> argparse.ArgumentParser:
    """The ``tfp-bcnn`` parser: one subcommand per step, every option with help.

    Returns:
        An ``argparse.ArgumentParser``; ``parse_args`` gives ``func`` (the
        command), and ``validate`` / ``parser`` for cross-option rules.
    """
    p = argparse.ArgumentParser(prog="tfp-bcnn", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--tf-logs", action="store_true",
                   help="show TensorFlow's and LiteRT's native log lines (default: hidden)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands", help="tfp-bcnn COMMAND --help lists its options")
    for add in (_add_demo, _add_train, _add_evaluate, _add_prune, _add_export):
        add(sub)
    return p


def _quiet_tensorflow(show_logs: bool) -> None:
    """Hide TensorFlow's native and Python log lines unless ``show_logs``.

    Must run before TensorFlow is imported: its C++ log level is read once,
    when it loads. ``tfp_bcnn`` silences the start-up lines itself.
    """
    if show_logs:
        os.environ["TFP_BCNN_VERBOSE"] = "1"
        return
    if os.environ.get("TFP_BCNN_VERBOSE", "").strip() not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    # TensorFlow's and absl's Python loggers ("WARNING:tensorflow:5 out of the last 5
    # calls ... retracing"): errors only.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate = getattr(args, "validate", None)
    message = validate(args) if validate is not None else None
    if message:
        args.parser.error(message)  # exits with status 2, like argparse's own errors
    _quiet_tensorflow(args.tf_logs)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # bad input, or a read-only / full target
        print(f"tfp-bcnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
