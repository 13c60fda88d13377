"""The command line's steps for dense models: train a U-Net, evaluate per-pixel uncertainty.

``tfp_bcnn.workflow.run_train`` hands ``--model unet`` here and
``run_evaluate`` a model with a per-pixel output; kept apart so the
classifier workflow stays one screen per step. Imports no workflow (the
workflow imports this module).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["evaluate_dense", "is_dense", "train_unet"]

#: Monte Carlo samples of the accuracy printed after training.
_TRAIN_REPORT_SAMPLES = 8


def is_dense(model) -> bool:
    """True for a model whose output has spatial axes (``(batch, H, W, C)``)."""
    shape = model.output_shape
    return not isinstance(shape, list) and len(shape) == 4


def _segmentation_data(dataset):
    from . import datasets

    (x, y), (x_test, y_test) = datasets.get(dataset)
    if y.ndim != 3 or y.shape != x.shape[:3]:
        raise ValueError(
            "A U-Net needs per-pixel labels (N, H, W) matching the images, e.g. "
            f"--dataset digit_scenes. Received: dataset={dataset!r} with images "
            f"{x.shape} and labels {y.shape}")
    return (x, y), (x_test, y_test)


def train_unet(*, dataset, frequentist, estimator, epochs, batch_size, learning_rate,
               kl_schedule, warmup_epochs, seed, verbose, output, fit, save) -> int:
    """``tfp-bcnn train --model unet``: build, fit, print pixel accuracy and mIoU, save.

    ``fit`` and ``save`` are the workflow's ``fit`` (the recipe's callbacks)
    and ``save_model`` (passed in: this module does not import the workflow).

    Returns:
        0 (the exit status).

    Raises:
        ValueError: a data set without per-pixel labels.
    """
    import keras

    from . import metrics, models
    from .uncertainty import predict as predict_dense

    (x, y), (x_test, y_test) = _segmentation_data(dataset)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    keras.utils.set_random_seed(seed)
    net = models.unet(x.shape[1:], num_classes, bayesian=not frequentist, estimator=estimator,
                      num_train_examples=len(x), seed=seed)
    models.compile_bayesian(net, learning_rate)
    kind = "frequentist" if frequentist else estimator
    print(f"training unet ({kind}) on {len(x):,} scenes {x.shape[1]}x{x.shape[2]}, "
          f"{num_classes} classes per pixel, for {epochs} epoch(s)", flush=True)
    t0 = time.time()
    fit(net, x, y, epochs=epochs, batch_size=batch_size, kl_schedule=kl_schedule,
        warmup_epochs=warmup_epochs, verbose=verbose, validation=(x_test, y_test))
    secs = time.time() - t0
    p = predict_dense(net, x_test, _TRAIN_REPORT_SAMPLES)
    acc = float(np.mean(p.mean.argmax(-1) == y_test))
    path = save(net, output)
    print(f"trained unet ({kind}) in {secs:.1f} s; test pixel accuracy {acc:.4f}, mean IoU "
          f"{metrics.mean_iou(p.mean, y_test):.4f}; wrote {path}")
    return 0


def evaluate_dense(model, path, dataset, samples, out_dir) -> int:
    """``tfp-bcnn evaluate`` of a segmentation model: dense metrics, maps, curves, JSON.

    Prints pixel accuracy, mean IoU, NLL, pixel ECE and, per uncertainty
    (predictive entropy, aleatoric, epistemic), the AUSE, its ratio to a
    random ranking's and the Spearman correlation with the misclassification;
    writes ``<name>_maps.png`` (`tfp_bcnn.plots.uncertainty_maps`),
    ``<name>_sparsification.png`` and ``<name>_report.json`` into ``out_dir``.

    Returns:
        0 (the exit status).
    """
    from . import metrics, plots
    from .uncertainty import predict as predict_dense
    from ._io import atomic_file
    from ._report import fmt, print_table

    _, (x_test, y_test) = _segmentation_data(dataset)
    name = Path(path).stem
    print(f"evaluating {path} on {len(x_test):,} test scenes ({samples} samples), per pixel",
          flush=True)
    p = predict_dense(model, x_test, samples)
    scores = {"entropy": p.predictive_entropy, "aleatoric": p.aleatoric,
              "epistemic": p.epistemic}
    report = metrics.segmentation_summary(p.mean, y_test, scores)
    wrong = p.mean.argmax(-1) != y_test
    print_table([(k, fmt(report[k])) for k in ("pixel_accuracy", "mean_iou", "nll",
                                               "pixel_ece")], ["metric", "value"])
    print()
    print_table([(u, fmt(report[f"ause_{u}"]), fmt(report[f"ause_ratio_{u}"]),
                  fmt(report[f"spearman_{u}"])) for u in scores],
                ["uncertainty", "AUSE", "AUSE / random", "Spearman vs error"])
    out = Path(out_dir)
    files = {
        "maps": plots.uncertainty_maps(x_test, p, out / f"{name}_maps.png", target=y_test,
                                       title=f"{name}: per-pixel uncertainty"),
        "sparsification": plots.sparsification_plot(
            {u: metrics.sparsification_curve(v, wrong) for u, v in scores.items()},
            out / f"{name}_sparsification.png", title=f"{name}: sparsification"),
    }
    with atomic_file(out / f"{name}_report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    files["report"] = out / f"{name}_report.json"
    print("\nwrote:")
    for k, v in files.items():
        print(f"  {k}: {v}")
    return 0
