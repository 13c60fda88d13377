"""The ``tfp-bcnn`` command: demo, train, evaluate, prune, export.

Every command that writes a model or an artifact writes it to a temporary
path beside the target and renames it into place, so an interrupted run never
leaves a half-written file. Loading ``.keras`` files keeps Keras' safe_mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

MODELS = ("lenet5", "alexnet", "three_conv_three_fc")
ESTIMATORS = ("flipout", "reparameterization", "local_reparameterization")


# ---------------------------------------------------------------- helpers
def _print_table(rows, headers, out=sys.stdout):
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    print(line, file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |", file=out)


def _fmt(v, digits=4):
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _save_model(model, path):
    from ._io import atomic_file

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"The output must end in .keras. Received: output={str(path)!r}")
    with atomic_file(path) as tmp:
        model.save(tmp)
    return path


def _load_model(path):
    import keras

    import tfp_bcnn  # noqa: F401  (registers the layers)

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No such model file. Received: model={str(path)!r}")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # keras raises many types for a corrupt zip
        raise ValueError(
            f"Could not load the Keras model ({type(err).__name__}: {err}). "
            f"Received: model={str(path)!r}"
        ) from err


def _load_data(name):
    from . import datasets

    return datasets.get(name)


def _compile(model, learning_rate):
    from .models import compile_bayesian

    compile_bayesian(model, learning_rate)


def _build(args, input_shape, num_classes, num_train, bayesian=True):
    from . import models

    builder = getattr(models, args.model)
    kwargs = dict(input_shape=input_shape, num_classes=num_classes, bayesian=bayesian)
    if bayesian:
        kwargs.update(estimator=args.estimator, num_train_examples=num_train)
    return builder(**kwargs)


def _fit(model, x, y, *, epochs, batch_size, kl_schedule="constant", warmup_epochs=1,
         verbose=1, extra_callbacks=(), validation=None):
    import keras

    from . import KLAnnealing
    from .kl import bayesian_layers

    callbacks = [keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    if any(True for _ in bayesian_layers(model)) and kl_schedule != "constant":
        callbacks.append(KLAnnealing(schedule=kl_schedule, warmup_epochs=warmup_epochs))
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
                     callbacks=callbacks, validation_data=validation)


def _mc_accuracy(model, x, y, num_samples=16):
    from . import metrics
    from .uncertainty import predict

    return metrics.accuracy(predict(model, x, num_samples=num_samples).mean, y)


# --------------------------------------------------------------- commands
def cmd_train(args):
    import keras

    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = _load_data(args.dataset)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    model = _build(args, x.shape[1:], num_classes, len(x), bayesian=not args.frequentist)
    _compile(model, args.learning_rate)
    t0 = time.time()
    _fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size,
         kl_schedule=args.kl_schedule, warmup_epochs=args.warmup_epochs,
         verbose=args.verbose, validation=(x_test, y_test))
    secs = time.time() - t0
    acc = _mc_accuracy(model, x_test, y_test)
    path = _save_model(model, args.output)
    print(f"trained {args.model} ({'frequentist' if args.frequentist else args.estimator}) "
          f"in {secs:.1f}s; test accuracy {acc:.4f}; wrote {path}")
    return 0


def _evaluate_and_report(model, x_test, y_test, out_dir, *, num_samples, name="model",
                         verbose=1):
    from . import plots
    from .evaluation import evaluate_classifier, json_ready

    report = evaluate_classifier(model, x_test, y_test, num_samples=num_samples,
                                 verbose=verbose)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = report["_predictions"]
    files = {
        "reliability": plots.reliability_diagram(
            preds["test"].mean, y_test, out_dir / f"{name}_reliability.png"),
        "samples": plots.sample_predictions(
            x_test[:8], preds["test"].mean[:8], out_dir / f"{name}_samples.png",
            labels=y_test[:8]),
    }
    if "letters" in preds:
        files["ood_histograms"] = plots.uncertainty_histograms(
            preds["test"], preds["letters"], out_dir / f"{name}_ood_histograms.png")
    if report["rotation"]:
        files["rotation"] = plots.rotation_curve(
            [r["angle"] for r in report["rotation"]],
            [r["accuracy"] for r in report["rotation"]],
            [r["epistemic"] for r in report["rotation"]],
            out_dir / f"{name}_rotation.png")
    report["files"] = {k: str(v) for k, v in files.items()}
    from ._io import atomic_file

    with atomic_file(out_dir / f"{name}_report.json") as tmp:
        Path(tmp).write_text(json.dumps(json_ready(report), indent=2))
    report["files"]["report"] = str(out_dir / f"{name}_report.json")
    return report


def _print_report(report, title):
    print(f"\n{title}")
    rows = [(k, _fmt(report[k])) for k in
            ("accuracy", "nll", "brier", "ece", "aleatoric", "epistemic")]
    for name, r in report["ood"].items():
        rows.append((f"OOD AUROC {name} (epistemic)", _fmt(r["auroc_epistemic"])))
        rows.append((f"OOD AUROC {name} (entropy)", _fmt(r["auroc_entropy"])))
    _print_table(rows, ["metric", "value"])
    if report["rotation"]:
        print("\nrotated test set")
        _print_table([(int(r["angle"]), _fmt(r["accuracy"]), _fmt(r["epistemic"]))
                      for r in report["rotation"]], ["angle", "accuracy", "epistemic"])


def cmd_evaluate(args):
    model = _load_model(args.model)
    (_, _), (x_test, y_test) = _load_data(args.dataset)
    report = _evaluate_and_report(model, x_test, y_test, args.out_dir,
                                  num_samples=args.samples, name=Path(args.model).stem)
    _print_report(report, f"evaluation of {args.model} ({args.samples} samples)")
    print("\nwrote:")
    for k, v in report["files"].items():
        print(f"  {k}: {v}")
    return 0


def _prune_and_finetune(model, x, y, *, final_sparsity, criterion, epochs, batch_size,
                        learning_rate, scope="global", verbose=1):
    import numpy as np

    from . import pruning

    steps = max(1, int(np.ceil(len(x) / batch_size)))
    end = max(1, steps * max(1, epochs - 1))  # reach the target before the last epoch
    schedule = pruning.PolynomialDecay(0.0, final_sparsity, 0, end,
                                       frequency=max(1, steps // 4))
    pruning.prune(model, schedule=schedule, criterion=criterion, scope=scope)
    _compile(model, learning_rate)
    _fit(model, x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
         extra_callbacks=[pruning.UpdatePruning()])
    return pruning.strip(model)


def cmd_prune(args):
    import keras

    keras.utils.set_random_seed(args.seed)
    from . import pruning

    model = _load_model(args.model)
    (x, y), (x_test, y_test) = _load_data(args.dataset)
    before = _mc_accuracy(model, x_test, y_test)
    model = _prune_and_finetune(model, x, y, final_sparsity=args.final_sparsity,
                                criterion=args.criterion, epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                scope=args.scope, verbose=args.verbose)
    after = _mc_accuracy(model, x_test, y_test)
    output = args.output or str(Path(args.model).with_name(Path(args.model).stem + "_pruned.keras"))
    path = _save_model(model, output)
    print("\nsparsity per layer")
    _print_table([(k, f"{v:.3f}") for k, v in pruning.sparsity(model).items()],
                 ["layer", "sparsity"])
    print(f"\naccuracy before {before:.4f}, after {after:.4f}; wrote {path}")
    return 0


def _export_all(model, *, saved_model=None, tflite=None, samples=32, sampling="lrt",
                quantize=None, check_data=None):
    """Export and describe; returns a dict of what was written and measured."""
    import numpy as np

    from . import export, metrics
    from .uncertainty import predict

    out = {}
    if saved_model:
        export.save_saved_model(model, saved_model, num_samples=samples, sampling=sampling)
        info = export.describe(saved_model)
        info["ops"] = sum(info["ops"].values())  # TF op types of every function: just count
        out["saved_model"] = {"path": str(saved_model), **info}
    if tflite:
        export.to_tflite(model, tflite, num_samples=samples, sampling=sampling, sparse=True,
                         quantize=quantize)
        p = Path(tflite)
        out["tflite"] = {"path": str(p), **export.describe(p)}
        if check_data is not None:
            x, y = check_data
            runner = export.runtime.TFLiteBayesianModel(str(p))
            t0 = time.time()
            lite = runner.predict(x)
            secs = time.time() - t0
            keras_pred = predict(model, x, num_samples=samples)
            out["tflite"].update({
                "accuracy": metrics.accuracy(lite.mean, y),
                "keras_accuracy": metrics.accuracy(keras_pred.mean, y),
                "argmax_agreement": float(np.mean(lite.mean.argmax(1)
                                                  == keras_pred.mean.argmax(1))),
                "mean_abs_diff": float(np.mean(np.abs(lite.mean - keras_pred.mean))),
                "ms_per_image": 1000 * secs / len(x),
            })
    return out


def cmd_export(args):
    if not args.saved_model and not args.tflite:
        raise ValueError("Give --saved-model DIR and/or --tflite FILE. Received: neither")
    model = _load_model(args.model)
    check = None
    if not args.no_check:
        (_, _), (x_test, y_test) = _load_data(args.dataset)
        check = (x_test[: args.check_images], y_test[: args.check_images])
    info = _export_all(model, saved_model=args.saved_model, tflite=args.tflite,
                       samples=args.samples, sampling=args.sampling, quantize=args.quantize,
                       check_data=check)
    for kind, d in info.items():
        print(f"\n{kind}: {d['path']}")
        print(f"  size {d['size_bytes'] / 1024:.1f} KiB, gzip {d['gzip_bytes'] / 1024:.1f} KiB")
        for k, v in d.items():
            if k not in ("path", "size_bytes", "gzip_bytes"):
                print(f"  {k}: {_fmt(v) if not isinstance(v, (list, dict)) else v}")
    return 0


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
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--kl-schedule", choices=("constant", "linear", "blundell"),
                   default="constant")
    t.add_argument("--warmup-epochs", type=int, default=3)
    t.add_argument("--output", default="model.keras")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--verbose", type=int, default=1)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy, calibration, uncertainty, OOD, shift")
    e.add_argument("model")
    e.add_argument("--dataset", default="mnist_5k")
    e.add_argument("--samples", type=int, default=32)
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
    x.add_argument("--sampling", choices=("lrt", "weights"), default="lrt")
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
    except ValueError as err:
        print(f"tfp-bcnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
