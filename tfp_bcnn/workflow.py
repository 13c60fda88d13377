"""Train, evaluate, prune and export: the steps of the command line and the main job.

Each step is a function with its policy written here once, so that
``tfp-bcnn`` (``cli.py``, argument parsing only) and the main job
(``demo.py``) compute every number the same way:

* training: ``models.compile_bayesian`` (Adam, sparse cross-entropy, the ``kl`` metric)
  then ``fit`` (``TerminateOnNaN``, the KL weighting of ``models.RECIPE``,
  optional KL annealing); ``run_train``'s epochs, batch size and learning
  rate default to ``models.RECIPE`` too, so ``tfp-bcnn train`` and the main
  job train with exactly the recipe the benchmarks measured;
* evaluation: ``evaluate_and_report`` (metrics, OOD, rotation, plots, JSON);
* pruning: ``finetune_schedule`` (a polynomial schedule that reaches the target
  sparsity one epoch before the end of fine-tuning, pruning four times an
  epoch), ``prune_and_finetune`` (prune, fit, strip), ``print_costs``
  (channels, parameters and FLOPs per layer, before and after shrinking);
* export: ``export_all`` (SavedModel and sparse TFLite) and
  ``tflite_agreement`` (the TFLite file against the Keras model on held-out
  images: accuracies, argmax agreement, mean absolute difference of the
  predictive means, latency).

Models and reports are written atomically (``tfp_bcnn._io``). This is the only
module of the library that imports ``tfp_bcnn.export``; nothing here imports
``cli`` or ``demo``.

The ``run_*`` functions are the commands of ``tfp-bcnn``: they take plain
values, print what the command prints and return 0.

The tables and reports they print are formatted by ``tfp_bcnn._report``
(`print_table`, `fmt`, `print_report`, ...), re-exported here.
"""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

from ._report import (accuracy_change, fmt, metric_rows, print_report, print_table,
                      report_value)

__all__ = [
    "accuracy_change",
    "build_model",
    "evaluate_and_report",
    "export_all",
    "FINETUNE",
    "finetune_schedule",
    "fit",
    "fit_callbacks",
    "fmt",
    "load_model",
    "member_paths",
    "mc_accuracy",
    "metric_rows",
    "print_report",
    "print_costs",
    "print_table",
    "prune_and_finetune",
    "report_value",
    "run_evaluate",
    "run_export",
    "run_prune",
    "run_train",
    "save_model",
    "tflite_agreement",
]

#: Builders of ``tfp_bcnn.models`` that the commands can train.
MODELS = ("lenet5", "alexnet", "three_conv_three_fc", "mobilenet_v2", "unet")


# ------------------------------------------------------------ files and data
def save_model(model, path) -> Path:
    """Save ``model`` to a ``.keras`` file atomically; returns the path.

    Raises:
        ValueError: ``path`` does not end in ``.keras``.
    """
    from ._io import atomic_file

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"The output must end in .keras. Received: output={str(path)!r}")
    with atomic_file(path) as tmp:
        model.save(tmp)
    return path


def load_model(path):
    """Load a ``.keras`` file with Keras' safe mode (tfp_bcnn layers registered).

    The archive is checked before Keras reads it (member names and sizes,
    ``config.json`` and the HDF5 signature: ``tfp_bcnn._untrusted``), and
    the loaded weights must be finite.

    Raises:
        ValueError: no such file; a file that is not a ``.keras`` archive (a
            ``.keras`` file is the zip archive that ``model.save`` writes); a
            crafted or damaged archive; an archive Keras cannot load (the
            message gives Keras' error); NaN or infinite weights.
    """
    import zipfile

    import keras

    import tfp_bcnn  # noqa: F401  (registers the layers)

    from . import _untrusted

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No such model file. Received: model={str(path)!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "Not a valid .keras file: a .keras file is the zip archive written by "
            f"model.save(...), this one is not a zip archive. Received: model={str(path)!r}"
        )
    _untrusted.check_keras_archive(str(path), arg="model")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # keras raises many types for a corrupt archive
        raise ValueError(
            f"Not a valid .keras file, or one that holds layers this version cannot load "
            f"({type(err).__name__}: {_first_line(err)}). Received: model={str(path)!r}"
        ) from err
    _untrusted.check_finite_weights(model, str(path), arg="model")
    return model


def _first_line(err: Exception) -> str:
    """The first non-empty line of an error's message (the CLI prints one line)."""
    return next((line for line in str(err).splitlines() if line.strip()), "")


# ------------------------------------------------------------------ training
def build_model(name: str, input_shape, num_classes: int, num_train: int, *,
                estimator: str = "flipout", bayesian: bool = True, dropout=None, seed=None,
                last=None):
    """A model of the zoo by builder name, Bayesian (``kl_weight = 1/num_train``) or not.

    ``dropout`` (a rate, or None) adds the builder's ``MCDropout`` layers:
    with ``bayesian=False`` that is the Monte Carlo dropout baseline.
    ``last``: only the last ``last`` convertible layers Bayesian (the
    builder's ``last``, else ``to_bayesian`` of the deterministic twin).
    """
    from . import models

    builder = getattr(models, name)
    kwargs = dict(input_shape=input_shape, num_classes=num_classes, bayesian=bayesian,
                  dropout=dropout, seed=seed)
    if bayesian and last is not None and name != "mobilenet_v2":
        twin = builder(**dict(kwargs, bayesian=False))
        return models.to_bayesian(twin, estimator, num_train, last=last, seed=seed,
                                  posterior_std_init=models.DEFAULT_POSTERIOR_STD_INIT)
    if bayesian:
        kwargs.update(estimator=estimator, num_train_examples=num_train)
        if last is not None:
            kwargs["last"] = last
    return builder(**kwargs)


def recipe_of(name: str):
    """The training recipe of a zoo model: ``models.MOBILENET_RECIPE`` or ``models.RECIPE``."""
    from .models import MOBILENET_RECIPE, RECIPE

    return MOBILENET_RECIPE if name == "mobilenet_v2" else RECIPE


def fit(model, x, y, *, epochs, batch_size, kl_schedule="constant", warmup_epochs=1,
        verbose=1, extra_callbacks=(), validation=None):
    """``model.fit`` with ``TerminateOnNaN`` and, for a Bayesian model, the KL
    weighting of ``models.RECIPE``: ``models.recipe_callbacks()`` with the
    constant schedule, else ``KLAnnealing(kl_schedule, warmup_epochs,
    beta=RECIPE["kl_beta"])``.

    Returns:
        The Keras ``History``.
    """
    from .kl import variational_layers

    bayesian = any(True for _ in variational_layers(model))
    callbacks = fit_callbacks(bayesian, kl_schedule, warmup_epochs, extra_callbacks)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
                     callbacks=callbacks, validation_data=validation)


def fit_callbacks(bayesian: bool, kl_schedule="constant", warmup_epochs=1,
                  extra_callbacks=()) -> list:
    """The callbacks of `fit`: ``TerminateOnNaN``, the extras, and for a
    Bayesian model the recipe's KL weighting (see `fit`)."""
    import keras

    from ._annealing import KLAnnealing
    from .models import RECIPE, recipe_callbacks

    callbacks = [keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    if bayesian and kl_schedule == "constant":
        callbacks += recipe_callbacks(RECIPE)
    elif bayesian:
        callbacks.append(KLAnnealing(schedule=kl_schedule, warmup_epochs=warmup_epochs,
                                     beta=RECIPE["kl_beta"]))
    return callbacks


def mc_accuracy(model, x, y, num_samples: int = 16) -> float:
    """Accuracy of the Monte Carlo predictive mean (``num_samples`` samples).

    ``model`` may be a list of models (a deep ensemble, see ``predict``).
    """
    from . import metrics
    from .uncertainty import predict

    return metrics.accuracy(predict(model, x, num_samples=num_samples).mean, y)


# ---------------------------------------------------------------- evaluation
def evaluate_and_report(model, x_test, y_test, out_dir, *, num_samples, name="model",
                        verbose=1, method="mc", label=None) -> dict:
    """``evaluation.evaluate_classifier`` plus its plots and a JSON report.

    ``method``: ``"mc"`` (Monte Carlo) or ``"moments"`` (one sampling-free
    pass, ``num_samples`` logit draws), as in ``tfp_bcnn.predict``.

    Writes ``<name>_reliability.png``, ``<name>_samples.png``,
    ``<name>_ood_histograms.png`` (when the letters set applies),
    ``<name>_rotation.png`` (when rotations were evaluated) and
    ``<name>_report.json`` into ``out_dir``. The plots' titles and legends
    name the model ``label`` (a display name such as "Bayesian LeNet-5
    (Flipout)"; default ``name``).

    Returns:
        The report of ``evaluate_classifier`` with ``files``: ``{kind: path}``.
    """
    from . import plots
    from ._io import atomic_file
    from .evaluation import evaluate_classifier, json_ready

    report = evaluate_classifier(model, x_test, y_test, num_samples=num_samples,
                                 verbose=verbose, method=method)
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = report["_predictions"]
    deterministic = report["deterministic"]
    label = name if label is None else label
    files = {
        "reliability": plots.reliability_diagram(
            {label: preds["test"].mean}, y_test, out_dir / f"{name}_reliability.png"),
        "samples": plots.sample_predictions(
            x_test[:8], preds["test"].mean[:8], out_dir / f"{name}_samples.png",
            labels=y_test[:8], title=f"Predictive distributions: {label}"),
    }
    if "letters" in preds:
        files["ood_histograms"] = plots.uncertainty_histograms(
            preds["test"], preds["letters"], out_dir / f"{name}_ood_histograms.png",
            names=("test digits", "letters A-J"),
            title=f"Uncertainty of {label}: test digits vs letters A-J (out of distribution)",
            deterministic=deterministic)
    if report["rotation"]:
        axis = f"mean {plots.SCORE_LABELS['epistemic']}, nats"
        files["rotation"] = plots.rotation_curve(
            [r["angle"] for r in report["rotation"]],
            {label: [r["accuracy"] for r in report["rotation"]]},
            None if deterministic else {label: [r["epistemic"] for r in report["rotation"]]},
            out_dir / f"{name}_rotation.png", uncertainty_label=axis,
            title=f"{label} under rotation" + (
                f" (epistemic: {plots.NOT_APPLICABLE}, deterministic model)"
                if deterministic else ""))
    report["files"] = {k: str(v) for k, v in files.items()}
    with atomic_file(out_dir / f"{name}_report.json") as tmp:
        Path(tmp).write_text(json.dumps(json_ready(report), indent=2))
    report["files"]["report"] = str(out_dir / f"{name}_report.json")
    if verbose:
        print(f"  plots and report: {time.time() - t0:.1f} s", flush=True)
    return report


# ------------------------------------------------------------------- pruning
#: Fine-tuning under pruning (``tfp-bcnn prune``, the pruning benchmarks):
#: a smaller learning rate than ``models.RECIPE``'s, because it starts from
#: trained weights, and a few epochs in batches of the recipe's size.
FINETUNE = types.MappingProxyType({"learning_rate": 5e-4, "epochs": 3, "batch_size": 64})


def finetune_schedule(num_examples: int, batch_size: int, epochs: int,
                      final_sparsity: float):
    """The pruning schedule of fine-tuning: 0 to ``final_sparsity`` by
    ``PolynomialDecay``, ending one epoch before the last (so the last epoch
    trains the final mask), pruning four times an epoch.

    With ``s = ceil(num_examples / batch_size)`` steps an epoch:
    ``end_step = s * max(1, epochs - 1)`` and ``frequency = max(1, s // 4)``.

    Returns:
        A ``pruning.PolynomialDecay``.
    """
    import math

    from . import pruning

    steps = max(1, math.ceil(num_examples / batch_size))
    end = max(1, steps * max(1, epochs - 1))
    return pruning.PolynomialDecay(0.0, final_sparsity, 0, end, frequency=max(1, steps // 4))


def prune_and_finetune(model, x, y, *, final_sparsity, criterion, epochs, batch_size,
                       learning_rate, scope="global", structure="weight", verbose=1,
                       **allocation):
    """Prune ``model`` while fine-tuning it on ``(x, y)``; returns it stripped.

    The schedule is `finetune_schedule`; the model is recompiled (a fresh
    optimizer, so steps count from 0) with ``learning_rate``. With
    ``structure="filter"`` whole filters are pruned (``final_sparsity`` is
    then the fraction of filters); ``pruning.shrink`` removes them after.
    ``allocation``: ``min_channels``, ``min_fraction``, ``normalize``,
    ``cost`` of ``pruning.prune`` (filter pruning's channel allocation).
    """
    from . import pruning

    schedule = finetune_schedule(len(x), batch_size, epochs, final_sparsity)
    pruning.prune(model, schedule=schedule, criterion=criterion, scope=scope,
                  structure=structure, **allocation)
    from .models import compile_bayesian

    compile_bayesian(model, learning_rate)
    fit(model, x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
        extra_callbacks=[pruning.UpdatePruning()])
    return pruning.strip(model)


def print_costs(before, after) -> dict:
    """Print channels, parameters and FLOPs per layer of two models side by side.

    FLOPs are those of ``pruning.layer_costs`` (the mean path, per image);
    parameters are ``count_params()`` of the whole models (a Bayesian kernel
    counts its mean, std and mask).

    Returns:
        ``{"params": (before, after), "flops": (before, after)}``.
    """
    from . import pruning

    old, new = pruning.layer_costs(before), {r["layer"]: r for r in pruning.layer_costs(after)}
    rows = []
    for r in old:
        n = new.get(r["layer"], {"channels": "-", "flops": 0})
        rows.append((r["layer"], r["channels"], n["channels"], r["flops"], n["flops"]))
    flops = (sum(r["flops"] for r in old), sum(r["flops"] for r in new.values()))
    params = (before.count_params(), after.count_params())
    rows.append(("total", "", "", flops[0], flops[1]))
    print_table(rows, ["layer", "channels before", "channels after", "FLOPs before",
                       "FLOPs after"])
    print(f"\nparameters {params[0]:,} -> {params[1]:,} ({params[1] / params[0]:.2f}x); "
          f"FLOPs per image {flops[0]:,} -> {flops[1]:,} ({flops[1] / flops[0]:.2f}x)")
    return {"params": params, "flops": flops}


# -------------------------------------------------------------------- export
def tflite_agreement(model, tflite_path, x, y, *, num_samples, method="mc",
                     x_ood=None) -> dict:
    """Run the TFLite file with LiteRT (an ``.onnx`` file with ONNX Runtime)
    and the Keras model on ``(x, y)``.

    Args:
        method: how the Keras reference predicts (``"moments"`` for a file
            exported with ``sampling="moments"``).
        x_ood: out-of-distribution images; when given, the TFLite file's OOD
            AUROC by mutual information (``x`` in, ``x_ood`` out) is added.

    Returns:
        ``accuracy`` (TFLite), ``keras_accuracy``, ``argmax_agreement`` (the
        fraction of images whose predicted class is the same),
        ``mean_abs_diff`` (mean ``|p_tflite - p_keras|`` over images and
        classes; both are Monte Carlo means, so it is Monte Carlo error when
        the export is right), ``ms_per_image`` of the TFLite runner and, with
        ``x_ood``, ``ood_auroc_epistemic``.
    """
    import numpy as np

    from . import export, metrics
    from .uncertainty import predict

    onnx = str(tflite_path).lower().endswith(".onnx")
    runner = (export.runtime.OnnxBayesianModel if onnx else
              export.runtime.TFLiteBayesianModel)(str(tflite_path))
    t0 = time.time()
    lite = runner.predict(x)
    secs = time.time() - t0
    keras_pred = predict(model, x, num_samples=num_samples, method=method)
    out = {
        "accuracy": metrics.accuracy(lite.mean, y),
        "keras_accuracy": metrics.accuracy(keras_pred.mean, y),
        "argmax_agreement": float(np.mean(lite.mean.argmax(1) == keras_pred.mean.argmax(1))),
        "mean_abs_diff": float(np.mean(np.abs(lite.mean - keras_pred.mean))),
        "ms_per_image": 1000 * secs / len(x),
    }
    if x_ood is not None:
        lite_ood = runner.predict(x_ood)
        out["ood_auroc_epistemic"] = metrics.ood_auroc(lite.epistemic, lite_ood.epistemic)
    return out


def export_all(model, *, saved_model=None, tflite=None, samples=32, sampling="lrt",
               quantize=None, check_data=None, x_ood=None, verbose=0, onnx=None) -> dict:
    """Export a SavedModel, a sparse TFLite file and/or an ONNX file and describe them.

    Args:
        saved_model, tflite, onnx: output paths (None: skip that format;
            ``onnx`` needs the ``export`` extra: tf2onnx, onnxruntime).
        samples, sampling, quantize: as in ``export.to_tflite`` (``sampling``
            ``"lrt"``, ``"weights"`` or ``"moments"``).
        check_data: ``(x, y)`` for `tflite_agreement` (against Keras
            ``predict`` with ``method="moments"`` for a moments file), or None.
        x_ood: OOD images for `tflite_agreement`'s AUROC, or None.
        verbose: with ``verbose >= 1``, a line per stage with its elapsed time.

    Returns:
        ``{"saved_model": {...}, "tflite": {...}, "onnx": {...}}`` for the formats written:
        the path, ``export.describe``'s sizes and op counts and, with
        ``check_data``, the agreement figures.
    """
    from . import export

    def stage(label, start):
        if verbose:
            print(f"  {label}: {time.time() - start:.1f} s", flush=True)

    out = {}
    if saved_model:
        t0 = time.time()
        export.save_saved_model(model, saved_model, num_samples=samples, sampling=sampling)
        info = export.describe(saved_model)
        info["ops"] = sum(info["ops"].values())  # TF op types of every function: just count
        out["saved_model"] = {"path": str(saved_model), **info}
        stage(f"SavedModel {saved_model}", t0)
    if tflite:
        t0 = time.time()
        export.to_tflite(model, tflite, num_samples=samples, sampling=sampling, sparse=True,
                         quantize=quantize)
        out["tflite"] = {"path": str(Path(tflite)), **export.describe(Path(tflite))}
        stage(f"TFLite {tflite}", t0)
        if check_data is not None:
            t0 = time.time()
            x, y = check_data
            method = "moments" if sampling == "moments" else "mc"
            out["tflite"].update(tflite_agreement(model, tflite, x, y, num_samples=samples,
                                                  method=method, x_ood=x_ood))
            stage(f"TFLite file against the Keras model on {len(x)} images", t0)
    if onnx:
        out["onnx"] = _export_onnx(model, onnx, samples, sampling, check_data, x_ood, stage)
    return out


def _export_onnx(model, path, samples, sampling, check_data, x_ood, stage) -> dict:
    """The ONNX part of `export_all`: write, describe, check against Keras."""
    from . import export

    t0 = time.time()
    export.to_onnx(model, path, num_samples=samples, sampling=sampling)
    info = {"path": str(Path(path)), **export.describe(Path(path))}
    stage(f"ONNX {path}", t0)
    if check_data is not None:
        t0 = time.time()
        x, y = check_data
        method = "moments" if sampling == "moments" else "mc"
        info.update(tflite_agreement(model, path, x, y, num_samples=samples, method=method,
                                     x_ood=x_ood))
        stage(f"ONNX file against the Keras model on {len(x)} images", t0)
    return info


def onnx_available() -> bool:
    """Whether ONNX export and its runner can run (tf2onnx, onnx, onnxruntime installed)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))


# ------------------------------------------------------------------ commands
def member_paths(output, members: int) -> list[Path]:
    """Where ``run_train`` writes ``members`` ensemble members: ``<stem>_<m>.keras``."""
    output = Path(output)
    if members == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{m}{output.suffix}") for m in range(members)]


def run_train(*, model="lenet5", estimator="flipout", frequentist=False, dataset="mnist_5k",
              epochs=None, batch_size=None, learning_rate=None, kl_schedule="constant",
              warmup_epochs=3, dropout=None, members=1, output="model.keras", seed=0,
              verbose=None, mkdir=False, last=None, input_size=None) -> int:
    """``tfp-bcnn train``: build, fit, report the MC accuracy, save.

    ``epochs``, ``batch_size`` and ``learning_rate`` default (None) to
    ``models.RECIPE`` (``MOBILENET_RECIPE`` for ``mobilenet_v2``). ``last``: see
    `build_model`; ``input_size``: images padded / resized to it (mobilenet_v2: >= 32, RGB).
    ``dropout`` adds ``MCDropout`` layers (with ``frequentist`` the
    MC-dropout baseline). ``members > 1`` trains a deep
    ensemble (``ensemble.train_ensemble``, member ``m`` from seed
    ``seed + m``) and writes ``member_paths(output, members)``; evaluate them
    together with ``tfp-bcnn evaluate m_0.keras m_1.keras ...``. Outputs are
    checked before any work (``_io.check_output_path``; ``mkdir`` creates
    missing folders); ``verbose`` None: bars on a terminal, else a line an epoch.
    """
    from . import _validation as check
    from . import datasets
    from ._console import progress_verbosity
    from ._io import check_output_path
    from .ensemble import train_ensemble
    from .models import compile_bayesian
    members = check.positive_int("members", members)
    RECIPE = recipe_of(model)
    epochs = RECIPE["epochs"] if epochs is None else epochs
    batch_size = RECIPE["batch_size"] if batch_size is None else batch_size
    learning_rate = RECIPE["learning_rate"] if learning_rate is None else learning_rate
    paths = member_paths(output, members)
    for path in paths:
        if path.suffix != ".keras":
            raise ValueError(f"The output must end in .keras. Received: output={str(path)!r}")
        check_output_path(path, name="output", mkdir=mkdir)
    verbose = progress_verbosity(verbose)
    if model == "unet":  # per-pixel labels: the dense steps (_dense_workflow)
        from ._dense_workflow import train_unet

        return train_unet(dataset=dataset, frequentist=frequentist, estimator=estimator,
                          epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          kl_schedule=kl_schedule, warmup_epochs=warmup_epochs, seed=seed,
                          verbose=verbose, output=paths[0], fit=fit, save=save_model)
    (x, y), (x_test, y_test) = datasets.get(dataset)
    if model == "mobilenet_v2" or input_size is not None:
        from .datasets import fit_images

        size = input_size or max(32, x.shape[1], x.shape[2])
        channels = 3 if model == "mobilenet_v2" else x.shape[-1]
        x, x_test = fit_images(x, size, channels), fit_images(x_test, size, channels)
    num_classes = int(max(y.max(), y_test.max()) + 1)

    def build(member_seed):
        net = build_model(model, x.shape[1:], num_classes, len(x), estimator=estimator,
                          bayesian=not frequentist, dropout=dropout, seed=member_seed,
                          last=last)
        return compile_bayesian(net, learning_rate)

    kind = "frequentist" if frequentist else estimator
    if dropout:
        kind += f", MC dropout {dropout:g}"
    if members > 1:
        kind += f", ensemble of {members}"
    print(f"training {model} ({kind}) on {len(x):,} images for {epochs} epoch(s)",
          flush=True)
    t0 = time.time()
    nets = train_ensemble(
        build, x, y, num_members=members, seed=seed, epochs=epochs, batch_size=batch_size,
        verbose=verbose, validation_data=(x_test, y_test),
        callbacks=fit_callbacks(not frequentist, kl_schedule, warmup_epochs))
    secs = time.time() - t0
    acc = mc_accuracy(nets if members > 1 else nets[0], x_test, y_test)
    written = [save_model(net, path) for net, path in zip(nets, paths)]
    print(f"trained {model} ({kind}) in {secs:.1f} s; test accuracy {acc:.4f}; wrote "
          f"{', '.join(str(p) for p in written)}")
    return 0


def run_evaluate(*, model, dataset="mnist_5k", samples=32, out_dir="evaluation",
                 method="mc", mkdir=False) -> int:
    """``tfp-bcnn evaluate``: the report, its tables and the files written.

    ``model`` is one ``.keras`` path, or a list of them: a deep ensemble whose
    members count as samples of one predictive distribution
    (``tfp_bcnn.predict`` on the list). ``out_dir``, ``mkdir``: as in `run_train`.
    """
    from . import _fit_images, datasets
    from ._console import progress_verbosity
    from ._io import check_output_path
    check_output_path(out_dir, name="out_dir", kind="files_in", mkdir=mkdir)
    paths = [model] if isinstance(model, (str, Path)) else list(model)
    nets = [load_model(p) for p in paths]
    from ._dense_workflow import evaluate_dense, is_dense

    if len(nets) == 1 and is_dense(nets[0]):  # per-pixel outputs: dense metrics
        return evaluate_dense(nets[0], paths[0], dataset, samples, out_dir)
    (_, _), (x_test, y_test) = datasets.get(dataset)
    (x_test,) = _fit_images.fit_to_model(nets[0], x_test)  # e.g. 28x28x1 -> 32x32x3
    what = paths[0] if len(paths) == 1 else f"an ensemble of {len(paths)} models"
    how = "one moment pass, " if method == "moments" else ""
    print(f"evaluating {what} on {len(x_test):,} test images ({how}{samples} samples), "
          "letters and noise (out of distribution), rotated digits", flush=True)
    name = Path(paths[0]).stem + ("_ensemble" if len(nets) > 1 else "")
    report = evaluate_and_report(nets[0] if len(nets) == 1 else nets, x_test, y_test, out_dir,
                                 num_samples=samples, name=name, method=method,
                                 verbose=progress_verbosity())
    how = "moments, " if method == "moments" else ""
    print_report(report, f"evaluation of {what} ({how}{samples} samples)")
    print("\nwrote:")
    for k, v in report["files"].items():
        print(f"  {k}: {v}")
    return 0


def run_prune(*, model, final_sparsity=None, criterion="snr", scope="global",
              epochs=FINETUNE["epochs"], batch_size=FINETUNE["batch_size"],
              learning_rate=FINETUNE["learning_rate"], dataset="mnist_5k", output=None, seed=0,
              structured=False, verbose=None, mkdir=False, **allocation) -> int:
    """``tfp-bcnn prune``: fine-tune with `finetune_schedule`, save stripped.

    With ``structured`` whole filters / units are pruned (``final_sparsity``,
    default 0.5, is the fraction of filters; default 0.9 of weights
    otherwise), the model is shrunk by ``pruning.shrink`` and the channels,
    parameters and FLOPs of each layer are printed before and after.
    ``output`` (default ``<model stem>_pruned.keras``), ``verbose``, ``mkdir``: as in `run_train`.
    ``allocation``: ``min_channels``, ``min_fraction``, ``normalize``, ``cost`` of
    ``pruning.prune``.
    """
    import keras

    from . import _fit_images, datasets, pruning
    from ._console import progress_verbosity
    from ._io import check_output_path
    if final_sparsity is None:
        final_sparsity = 0.5 if structured else 0.9
    output = output or str(Path(model).with_name(Path(model).stem + "_pruned.keras"))
    check_output_path(output, name="output", mkdir=mkdir)
    verbose = progress_verbosity(verbose)
    what = (f"{final_sparsity:.0%} of the filters / units" if structured
            else f"{final_sparsity:.0%} of the weights")
    keras.utils.set_random_seed(seed)
    net = load_model(model)
    (x, y), (x_test, y_test) = datasets.get(dataset)
    x, x_test = _fit_images.fit_to_model(net, x, x_test)
    before = mc_accuracy(net, x_test, y_test)
    original = load_model(model) if structured else None
    print(f"pruning {what} of {model} by {criterion} while fine-tuning for "
          f"{epochs} epoch(s); test accuracy before: {before:.4f}", flush=True)
    net = prune_and_finetune(net, x, y, final_sparsity=final_sparsity, criterion=criterion,
                             epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             scope=scope, structure="filter" if structured else "weight",
                             verbose=verbose, **allocation)
    print("\nsparsity per layer (the fraction of weights that are 0)")
    print_table([(k, f"{v:.3f}") for k, v in pruning.sparsity(net).items()],
                ["layer", "sparsity"])
    if structured:
        net = pruning.shrink(net)
        print("\nshrunk: filters removed")
        print_costs(original, net)
    after = mc_accuracy(net, x_test, y_test)
    path = save_model(net, output)
    print("\n" + accuracy_change(before, after, f"pruning {what}"))
    print(f"wrote {path}")
    return 0


def run_export(*, model, saved_model=None, tflite=None, samples=32, sampling="lrt",
               quantize=None, dataset="mnist_5k", check_images=200, check=True,
               mkdir=False, onnx=None) -> int:
    """``tfp-bcnn export``: write the artifacts, print sizes and the agreement check.

    The outputs are checked first, as in `run_train`.

    Raises:
        ValueError: none of ``saved_model``, ``tflite``, ``onnx`` given; a bad
            output path (see ``_io.check_output_path``, also for ``OSError``).
        ImportError: ``onnx`` given without tf2onnx / onnxruntime installed.
    """
    from . import _fit_images, datasets
    from ._io import check_output_path
    if not saved_model and not tflite and not onnx:
        raise ValueError("Give --saved-model DIR, --tflite FILE and/or --onnx FILE. "
                         "Received: none")
    if onnx and not onnx_available():
        raise ImportError("--onnx needs tf2onnx, onnx and onnxruntime: "
                          "pip install 'tfp_bcnn[export]'")
    if saved_model:
        check_output_path(saved_model, name="saved_model", kind="folder", mkdir=mkdir)
    if tflite:
        check_output_path(tflite, name="tflite", mkdir=mkdir)
    if onnx:
        check_output_path(onnx, name="onnx", mkdir=mkdir)
    net = load_model(model)
    check_data = None
    if check:
        (_, _), (x_test, y_test) = datasets.get(dataset)
        (x_test,) = _fit_images.fit_to_model(net, x_test[:check_images])
        check_data = (x_test, y_test[:check_images])
    print(f"exporting {model} ({samples} Monte Carlo samples inside, {sampling} sampling)",
          flush=True)
    info = export_all(net, saved_model=saved_model, tflite=tflite, samples=samples,
                      sampling=sampling, quantize=quantize, check_data=check_data, verbose=1,
                      onnx=onnx)
    for kind, d in info.items():
        print(f"\n{kind}: {d['path']}")
        print(f"  size {d['size_bytes'] / 1024:.1f} KiB, gzip {d['gzip_bytes'] / 1024:.1f} KiB")
        for k, v in d.items():
            if k not in ("path", "size_bytes", "gzip_bytes"):
                print(f"  {k}: {fmt(v) if not isinstance(v, (list, dict)) else v}")
    return 0
