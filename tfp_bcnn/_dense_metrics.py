"""Metrics for dense (per-pixel) predictions: segmentation, regression, uncertainty quality.

``tfp_bcnn.metrics`` re-exports every public name and adds the two that
build on its classifier metrics (``pixel_expected_calibration_error``,
``segmentation_summary``; this module does not import it). Inputs are NumPy-compatible
arrays (``tfp_bcnn.predict(...)`` fields work as is), outputs Python floats or
small NumPy arrays. Notation: ``N`` images of ``H x W`` pixels, ``C`` classes
or regression channels, ``M = N H W`` pixels in all.

- pixel ECE: the expected calibration error of
  `tfp_bcnn.metrics.expected_calibration_error` with every pixel an example.
- mean IoU: per class ``c``, ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` over all
  pixels of the set, averaged over the classes present in the labels or the
  predictions (a class absent from both has no IoU).
- PSNR: per image ``10 log10(max_value^2 / MSE_n)`` in dB, averaged over
  images (the usual super-resolution report).
- Gaussian NLL per pixel: ``mean 0.5 log(2 pi v) + (y - mu)^2 / (2 v)`` with
  ``v`` the predictive variance (aleatoric + epistemic: the moment-matched
  Gaussian of the predictive mixture).
- Sparsification (Ilg et al. 2018, "Uncertainty estimates and
  multi-hypotheses networks for optical flow", https://arxiv.org/abs/1802.07095):
  remove the fraction ``f`` of pixels with the highest uncertainty and take
  the mean error of the rest, for ``f = 0, 1/K, ..., (K-1)/K``. The oracle
  removes by the error itself (the best any ranking can do); a random
  ranking keeps the mean error in expectation (a flat curve). The
  sparsification error is ``curve - oracle``; AUSE is its area over ``f``
  (trapezoid rule), 0 for a perfect ranking; the random ranking's AUSE is
  the area between the flat curve and the oracle.
- Spearman rank correlation between per-pixel uncertainty and per-pixel
  error (ties get average ranks).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as check

__all__ = [
    "Sparsification",
    "ause",
    "gaussian_nll_per_pixel",
    "mean_iou",
    "psnr",
    "regression_summary",
    "sparsification_curve",
    "uncertainty_error_spearman",
]

#: Removal fractions of a sparsification curve (``f = k / K``, ``k < K``).
NUM_FRACTIONS = 50


def _dense_probs_labels(probs: ArrayLike, labels: ArrayLike):
    """``(..., C)`` probabilities and ``(...)`` labels -> ``(M, C)``, ``(M,)``."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim < 2 or labels.shape != probs.shape[:-1]:
        raise ValueError(
            "`labels` must have the shape of `probs` without its last (class) axis, "
            f"e.g. probs (N, H, W, C) and labels (N, H, W). Received: "
            f"probs.shape={probs.shape}, labels.shape={labels.shape}")
    return probs.reshape(-1, probs.shape[-1]), labels.reshape(-1)


def _same_shape(**arrays) -> list[np.ndarray]:
    """Float64 copies of equally shaped, finite, non-empty arrays (named in errors)."""
    out = [np.asarray(a, dtype=np.float64) for a in arrays.values()]
    shapes = {name: a.shape for name, a in zip(arrays, out)}
    if len(set(shapes.values())) != 1:
        got = ", ".join(f"{k}.shape={v}" for k, v in shapes.items())
        raise ValueError(f"{', '.join(f'`{k}`' for k in arrays)} must have the same "
                         f"shape. Received: {got}")
    for name, a in zip(arrays, out):
        if a.size == 0 or not np.isfinite(a).all():
            raise ValueError(f"`{name}` must be non-empty and finite. Received: "
                             f"{name} of shape {a.shape} with "
                             f"{int((~np.isfinite(a)).sum())} NaN/inf")
    return out


def mean_iou(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean intersection over union of the argmax prediction, over classes.

    Args:
        probs: ``(N, H, W, C)`` per-pixel probabilities (or scores).
        labels: ``(N, H, W)`` integer classes in ``[0, C)``.

    Returns:
        ``mean_c TP_c / (TP_c + FP_c + FN_c)`` over the classes present in the
        labels or the predictions, in ``[0, 1]``.

    Raises:
        ValueError: mismatched shapes or labels outside ``[0, C)``.
    """
    probs, labels = _dense_probs_labels(probs, labels)
    c = probs.shape[1]
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"`labels` must lie in [0, {c}). Received: labels in "
                         f"[{labels.min()}, {labels.max()}]")
    pred = probs.argmax(axis=1)
    confusion = np.bincount(labels * c + pred, minlength=c * c).reshape(c, c)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def psnr(prediction: ArrayLike, target: ArrayLike, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, averaged over images.

    Args:
        prediction: ``(N, H, W, C)`` predicted images (e.g. the predictive mean).
        target: the true images, same shape.
        max_value: the peak value of the pixel range (1 for ``[0, 1]``), > 0.

    Returns:
        ``mean_n 10 log10(max_value^2 / mean_{pixels} (pred - target)^2)``; an
        exact image counts as 100 dB (MSE floored at ``1e-10 max_value^2``).

    Raises:
        ValueError: mismatched shapes or non-finite values.
    """
    max_value = check.positive_float("max_value", max_value)
    prediction, target = _same_shape(prediction=prediction, target=target)
    mse = np.square(prediction - target).reshape(len(target), -1).mean(axis=1)
    mse = np.maximum(mse, 1e-10 * max_value**2)
    return float(np.mean(10.0 * np.log10(max_value**2 / mse)))


def gaussian_nll_per_pixel(mean: ArrayLike, variance: ArrayLike, target: ArrayLike) -> float:
    """Mean Gaussian negative log-likelihood of the targets, per pixel and channel, in nats.

    Args:
        mean: ``(N, H, W, C)`` predictive means.
        variance: predictive variances, same shape, > 0 (e.g.
            ``aleatoric_variance + epistemic_variance``).
        target: the true values, same shape.

    Returns:
        ``mean 0.5 log(2 pi v) + (y - mu)^2 / (2 v)``.

    Raises:
        ValueError: mismatched shapes, non-finite values or a variance <= 0.
    """
    mean, variance, target = _same_shape(mean=mean, variance=variance, target=target)
    if (variance <= 0).any():
        raise ValueError("`variance` must be positive. Received: min(variance)="
                         f"{variance.min()!r}")
    nll = 0.5 * np.log(2 * np.pi * variance) + np.square(target - mean) / (2 * variance)
    return float(nll.mean())


class Sparsification(NamedTuple):
    """A sparsification curve with its oracle and random references.

    Attributes:
        fractions: ``(K,)`` removed fractions ``k / K``.
        curve: ``(K,)`` mean error of the pixels kept, removing by uncertainty.
        oracle: ``(K,)`` the same, removing by the error itself.
        random: ``(K,)`` the expected curve of a random ranking (the mean error).
    """

    fractions: np.ndarray
    curve: np.ndarray
    oracle: np.ndarray
    random: np.ndarray

    @property
    def ause(self) -> float:
        """Area under ``curve - oracle`` (trapezoid rule over ``fractions``)."""
        return float(np.trapezoid(self.curve - self.oracle, self.fractions))

    @property
    def ause_random(self) -> float:
        """Area under ``random - oracle``: the AUSE a random ranking has on average."""
        return float(np.trapezoid(self.random - self.oracle, self.fractions))


def _kept_means(error_sorted: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean of ``error_sorted[r:]`` with ``r = floor(f M)`` removed, for each ``f``."""
    m = len(error_sorted)
    tail = np.concatenate([np.cumsum(error_sorted[::-1])[::-1], [0.0]])
    removed = np.floor(fractions * m).astype(np.int64)
    return tail[removed] / (m - removed)


def sparsification_curve(uncertainty: ArrayLike, error: ArrayLike,
                         num_fractions: int = NUM_FRACTIONS, *, seed: int = 0
                         ) -> Sparsification:
    """Sparsification curve of an uncertainty against a per-pixel error (Ilg et al. 2018).

    Pixels are removed in order of decreasing ``uncertainty`` (ties broken
    at random with ``seed``, so a constant uncertainty behaves like a random
    ranking rather than like the pixels' storage order); after removing the
    fraction ``f`` (``floor(f M)`` pixels), the curve is the mean ``error``
    of the remaining ones. ``.ause`` is the area between the curve and the
    oracle, ``.ause_random`` a random ranking's.

    Args:
        uncertainty: per-pixel uncertainty, any shape (e.g. ``(N, H, W)``
            predictive entropy).
        error: per-pixel error, the same shape (e.g. 0/1 misclassification,
            squared error); lower is better.
        num_fractions: ``K`` >= 2.
        seed: seed of the tie-breaking (keyword-only).

    Returns:
        A `Sparsification` ``(fractions, curve, oracle, random)``.

    Raises:
        ValueError: mismatched shapes, non-finite values, or ``K < 2``.
    """
    k = check.integer("num_fractions", num_fractions, minimum=2)
    uncertainty, error = _same_shape(uncertainty=uncertainty, error=error)
    uncertainty, error = uncertainty.ravel(), error.ravel()
    fractions = np.arange(k) / k
    ties = np.random.default_rng(seed).random(len(error))
    by_uncertainty = error[np.lexsort((ties, -uncertainty))]
    oracle = _kept_means(np.sort(error)[::-1], fractions)
    curve = _kept_means(by_uncertainty, fractions)
    return Sparsification(fractions, curve, oracle, np.full(k, error.mean()))


def ause(uncertainty: ArrayLike, error: ArrayLike, num_fractions: int = NUM_FRACTIONS) -> float:
    """Area under the sparsification error: ``sparsification_curve(...).ause``.

    Args:
        uncertainty: per-pixel uncertainty, any shape.
        error: per-pixel error, the same shape.
        num_fractions: ``K`` >= 2 removal fractions.

    Returns:
        AUSE >= 0 (0: the uncertainty ranks pixels exactly as their errors).
    """
    return sparsification_curve(uncertainty, error, num_fractions).ause


def uncertainty_error_spearman(uncertainty: ArrayLike, error: ArrayLike) -> float:
    """Spearman rank correlation between per-pixel uncertainty and error.

    Args:
        uncertainty: per-pixel uncertainty, any shape.
        error: per-pixel error, the same shape.

    Returns:
        The Pearson correlation of the average ranks, in ``[-1, 1]``; NaN when
        either is constant.
    """
    from scipy.stats import rankdata

    uncertainty, error = _same_shape(uncertainty=uncertainty, error=error)
    a, b = rankdata(uncertainty.ravel()), rankdata(error.ravel())
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denominator) if denominator > 0 else float("nan")


def _uncertainty_rows(error: np.ndarray, uncertainties: dict) -> dict:
    """AUSE, its ratio to a random ranking's, and Spearman for each named uncertainty."""
    out = {}
    for name, values in uncertainties.items():
        curve = sparsification_curve(values, error)
        out[f"ause_{name}"] = curve.ause
        random = curve.ause_random
        out[f"ause_ratio_{name}"] = curve.ause / random if random > 0 else float("nan")
        out[f"spearman_{name}"] = uncertainty_error_spearman(values, error)
    if uncertainties:
        out["ause_random"] = curve.ause_random
    return out


def regression_summary(mean: ArrayLike, aleatoric_variance: ArrayLike,
                       epistemic_variance: ArrayLike, target: ArrayLike,
                       max_value: float = 1.0) -> dict:
    """The dense regression metrics in one dict (super-resolution, depth, ...).

    The per-pixel error of the uncertainty measures is the absolute error
    ``|target - mean|`` (the end-point error of Ilg et al. in one dimension).

    Args:
        mean: ``(N, H, W, C)`` predictive means.
        aleatoric_variance: ``(N, H, W, C)`` mean of the predicted variances.
        epistemic_variance: ``(N, H, W, C)`` variance of the predicted means.
        target: ``(N, H, W, C)`` true values.
        max_value: PSNR's peak value.

    Returns:
        ``{"psnr", "rmse", "nll"}`` (NLL under ``N(mean, aleatoric +
        epistemic)``) plus ``ause_u``, ``ause_ratio_u``, ``spearman_u`` for
        ``u`` in ``total``, ``aleatoric``, ``epistemic``, and ``ause_random``.

    Raises:
        ValueError: mismatched shapes, non-finite values (quoted).
    """
    mean, alea, epi, target = _same_shape(mean=mean, aleatoric_variance=aleatoric_variance,
                                          epistemic_variance=epistemic_variance,
                                          target=target)
    total = alea + epi
    out = {"psnr": psnr(mean, target, max_value),
           "rmse": float(np.sqrt(np.mean(np.square(mean - target)))),
           "nll": gaussian_nll_per_pixel(mean, total, target)}
    named = {"total": total, "aleatoric": alea, "epistemic": epi}
    return out | _uncertainty_rows(np.abs(target - mean), named)
