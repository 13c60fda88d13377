"""One evaluation of a classifier: accuracy, calibration, uncertainty, OOD, shift.

Shared by ``tfp-bcnn evaluate``, the demo and the benchmarks, so that every
number in a report is computed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from . import datasets, metrics
from .uncertainty import predict

__all__ = ["evaluate_classifier", "is_deterministic", "ood_sets", "DEFAULT_ANGLES"]

DEFAULT_ANGLES = (0, 15, 30, 45, 60, 75, 90)

#: Largest standard deviation of a predicted probability across Monte Carlo
#: samples that still counts as "all samples equal". float32 probabilities
#: carry about 6e-8 of relative rounding, so identical forward passes that
#: differ only in batch position stay well below it, while any sampled
#: posterior or dropout mask moves some probability by far more (a Flipout
#: LeNet-5 at its initial posterior scale: about 1e-4).
DETERMINISTIC_STD = 1e-6


def is_deterministic(pred) -> bool:
    """True when every Monte Carlo sample of ``pred`` gave the same probabilities.

    Then the epistemic (mutual information) figures are rounding noise
    (about 1e-16 nats) rather than results, and a report shows them as
    ``None`` ("n/a"). Criterion: ``max(pred.std) <= DETERMINISTIC_STD``.
    """
    return bool(np.max(pred.std) <= DETERMINISTIC_STD)


def ood_sets(ood: dict | None, x_test: np.ndarray) -> dict[str, np.ndarray]:
    """The out-of-distribution sets of an evaluation, shaped like ``x_test``.

    The default sets (``ood=None``) are ``datasets.letters()`` (letters A-J)
    and ``datasets.noise(len(x_test))`` (uniform), both 28x28x1 like MNIST.
    Every set whose image shape differs from the test images' ``(H, H, C)``
    is brought to it by ``datasets.fit_images``, as the training images of
    a network with a larger input were (e.g. MobileNetV2 at 32x32x3: zero
    padding around the centre, the grey channel repeated; a larger image is
    resized with an antialiased linear filter), so in- and
    out-of-distribution images differ in content only, never in framing.

    Args:
        ood: ``{name: (N_k, h, w, c)}`` images, or None for the defaults;
            ``{}``: none.
        x_test: the test images ``(N, H, W, C)``.

    Returns:
        ``{name: (N_k, H, W, C)}`` float32 arrays (the given arrays when
        their shape already matches). No default sets when ``H != W``
        (``fit_images`` makes square images only).

    Raises:
        ValueError: a set that cannot be fitted (not 4-D, ``c`` neither 1
            nor ``C``, or the test images not square); the message names it.
    """
    from ._fit_images import fit_images

    shape = tuple(x_test.shape[1:])
    if ood is None:
        if shape[0] != shape[1]:
            return {}
        ood = {"letters": datasets.letters()[0],
               "noise": datasets.noise(len(x_test), shape=(28, 28, 1))[0]}
    fitted = {}
    for name, x in ood.items():
        x = np.asarray(x)
        if tuple(x.shape[1:]) != shape:
            if x.ndim != 4 or shape[0] != shape[1] or x.shape[-1] not in (1, shape[-1]):
                raise ValueError(
                    f"The out-of-distribution set {name!r} cannot be brought to the test "
                    f"images' shape {shape} (square images, 1 or {shape[-1]} channels). "
                    f"Received: ood[{name!r}] with shape {x.shape}")
            x = fit_images(x, shape[0], shape[-1])
        fitted[name] = x
    return fitted


def evaluate_classifier(
    model,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_samples: int = 32,
    batch_size: int = 256,
    ood: dict | None = None,
    angles: Sequence[float] | None = DEFAULT_ANGLES,
    num_bins: int = 15,
    verbose: int = 0,
    method: str = "mc",
) -> dict:
    """Evaluate a (Bayesian or deterministic) Keras classifier.

    Args:
        model: a Keras classifier with probability outputs.
        x_test: images ``(N, H, W, C)``; y_test: int labels ``(N,)``.
        num_samples: Monte Carlo samples per image.
        ood: ``{name: images}`` out-of-distribution sets; default letters A-J
            and uniform noise when the images are square (see `ood_sets`:
            brought to the test images' size and channels).
        angles: rotation angles (degrees) for the distribution-shift curve, or
            None to skip it.
        method: ``"mc"`` (Monte Carlo) or ``"moments"`` (one moment pass,
            ``num_samples`` logit draws); see `tfp_bcnn.predict`.
        verbose: with ``verbose >= 1``, a progress bar over the test set and a
            line per stage (test set, each OOD set, the rotations) with its
            elapsed time.

    Returns:
        A JSON-able dict: ``accuracy, nll, brier, ece, aleatoric, epistemic,
        predictive_entropy`` (means over the test set), ``deterministic``
        (`is_deterministic`), ``ood`` (per set: AUROC and AUPR of the
        epistemic (mutual information) and the predictive entropy scores,
        mean epistemic), ``rotation`` (per angle: accuracy, mean epistemic
        and predictive entropy), and ``_predictions`` (the ``Prediction``
        objects, for plots; dropped by ``json_ready``). For a deterministic
        model every epistemic figure is ``None`` (n/a), not rounding noise.
    """
    t0 = time.time()
    pred = predict(model, x_test, num_samples=num_samples, batch_size=batch_size,
                   verbose=verbose, method=method)
    deterministic = is_deterministic(pred)

    def epistemic(value):
        return None if deterministic else float(value)

    def stage(label, start):
        if verbose:
            print(f"  {label}: {time.time() - start:.1f} s", flush=True)

    stage(f"test set, {len(x_test)} images x {num_samples} samples", t0)
    report = {
        "method": method,
        "num_samples": num_samples,
        "num_test": int(len(x_test)),
        "deterministic": deterministic,
        **metrics.summary(pred.mean, y_test, num_bins=num_bins),
        "aleatoric": float(np.mean(pred.aleatoric)),
        "epistemic": epistemic(np.mean(pred.epistemic)),
        "predictive_entropy": float(np.mean(pred.predictive_entropy)),
    }
    predictions = {"test": pred}
    report["ood"] = {}
    for name, x_ood in ood_sets(ood, x_test).items():
        t0 = time.time()
        p_ood = predict(model, x_ood, num_samples=num_samples, batch_size=batch_size,
                        method=method)
        predictions[name] = p_ood
        report["ood"][name] = {
            "auroc_epistemic": epistemic(metrics.ood_auroc(pred.epistemic, p_ood.epistemic)),
            "aupr_epistemic": epistemic(metrics.ood_aupr(pred.epistemic, p_ood.epistemic)),
            "auroc_entropy": metrics.ood_auroc(pred.predictive_entropy,
                                               p_ood.predictive_entropy),
            "aupr_entropy": metrics.ood_aupr(pred.predictive_entropy,
                                             p_ood.predictive_entropy),
            "epistemic": epistemic(np.mean(p_ood.epistemic)),
        }
        stage(f"out-of-distribution set {name!r}, {len(x_ood)} images", t0)
    report["rotation"] = []
    t0 = time.time()
    for angle in angles or ():
        p_rot = predict(model, datasets.rotated(x_test, angle), num_samples=num_samples,
                        batch_size=batch_size, method=method)
        report["rotation"].append({
            "angle": float(angle),
            "accuracy": metrics.accuracy(p_rot.mean, y_test),
            "epistemic": epistemic(np.mean(p_rot.epistemic)),
            "predictive_entropy": float(np.mean(p_rot.predictive_entropy)),
        })
    if angles:
        stage(f"rotated test set, {len(angles)} angles", t0)
    report["_predictions"] = predictions
    return report


def json_ready(report: dict) -> dict:
    """The report without the in-memory predictions, for ``json.dump``."""
    return {k: v for k, v in report.items() if not k.startswith("_")}
