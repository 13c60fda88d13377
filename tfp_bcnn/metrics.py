"""Metrics for probabilistic classifiers: accuracy, NLL, Brier, calibration, OOD.

Every function takes NumPy-compatible arrays (a ``tf.Tensor`` or a
``bcnn.predict(...).mean`` works as is) and returns Python floats, so the
numbers can go straight into a log, a table or ``json.dumps``. Nothing here
imports TensorFlow.

Notation: ``N`` examples, ``C`` classes, ``probs[n, c] = p(y = c | x_n)`` (each
row sums to 1 within ``1e-3``), ``labels[n] = y_n`` in ``[0, C)``,
``conf_n = max_c probs[n, c]`` and ``pred_n = argmax_c probs[n, c]`` (the first
index on ties, like ``np.argmax`` and ``tf.argmax``).

Formulas:

- accuracy: ``mean_n [pred_n == y_n]``.
- negative log-likelihood (nats): ``mean_n -log(max(probs[n, y_n], eps))``.
- Brier score (multi-class, Brier 1950):
  ``mean_n sum_c (probs[n, c] - onehot(y_n)[c])^2``, in ``[0, 2]``; 0 is a
  perfect one-hot prediction. ``tfp.stats.brier_score`` drops the constant 1
  and returns ``sum_c p_c^2 - 2 p_y`` per example, i.e. this value minus 1.
- expected calibration error (Guo et al. 2017, eq. 3, arXiv:1706.04599), with
  ``B`` equal-width bins over the confidence ``conf_n``:
  ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``, where ``acc`` and
  ``conf`` are the mean correctness and the mean confidence in the bin. The
  bin of ``conf`` is ``min(floor(B * conf), B - 1)``: bins are half-open
  ``[b/B, (b+1)/B)`` and the last one also holds ``conf = 1``. This is
  exactly the rule of ``tfp.stats.expected_calibration_error`` (through
  ``tf.histogram_fixed_width_bins``), so the two agree to float precision.
  Empty bins contribute nothing.
- OOD detection: a score per example, higher meaning "more out of
  distribution" (e.g. ``Prediction.epistemic`` or ``predictive_entropy``);
  out-of-distribution examples are the positive class. AUROC is the
  probability that a random OOD example scores above a random in-distribution
  one (ties count 1/2); AUPR is the average precision with OOD as positive.
- temperature scaling (Guo et al. 2017): ``softmax(z / T)`` with ``z`` the
  logits (``log probs``); `fit_temperature` finds the ``T`` minimising the
  NLL on a validation split, `apply_temperature` applies it.

Example:

>>> import numpy as np
>>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
>>> labels = np.array([0, 1, 1])
>>> round(accuracy(probs, labels), 4)
0.6667
>>> round(brier_score(probs, labels), 4)
0.2733
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score

from . import _validation as check

__all__ = [
    "TEMPERATURE_BOUNDS",
    "ReliabilityCurve",
    "accuracy",
    "apply_temperature",
    "brier_score",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "ood_aupr",
    "ood_auroc",
    "reliability_curve",
    "summary",
    # dense (per-pixel) metrics, from ``_dense_metrics`` (imported at the end)
    "Sparsification",
    "ause",
    "gaussian_nll_per_pixel",
    "mean_iou",
    "pixel_expected_calibration_error",
    "psnr",
    "regression_summary",
    "segmentation_summary",
    "sparsification_curve",
    "uncertainty_error_spearman",
]

_SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #
def _check_probs_labels(
    probs: ArrayLike, labels: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Validates a (probs, labels) pair and returns float64 / int64 copies."""
    probs = _check_matrix(probs)
    labels = _check_labels(labels, probs.shape)
    return _check_probability_values(probs), labels


def _check_matrix(probs: ArrayLike, name: str = "probs") -> np.ndarray:
    """A non-empty 2-D real array ``(N, C)``, as float64."""
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D with shape (num_examples, num_classes). "
            f"Received: {name}.shape={probs.shape}"
        )
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(
            f"`{name}` must have at least one example and one class. "
            f"Received: {name}.shape={probs.shape}"
        )
    if not (
        np.issubdtype(probs.dtype, np.floating)
        or np.issubdtype(probs.dtype, np.integer)
    ):
        raise ValueError(
            f"`{name}` must be real numbers. Received: {name}.dtype={probs.dtype}"
        )
    return probs.astype(np.float64)


def _check_labels(labels: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """1-D integer labels in ``[0, C)`` for an ``(N, C)`` matrix, as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            "`labels` must be 1-D integer class indices with shape (num_examples,) "
            "(not one-hot; use labels.argmax(-1) or labels.ravel()). "
            f"Received: labels.shape={labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "`labels` must be integer class indices "
            f"(convert with labels.astype(int)). Received: labels.dtype={labels.dtype}"
        )
    if labels.shape[0] != shape[0]:
        raise ValueError(
            "`probs` and `labels` must have the same number of examples. "
            f"Received: probs.shape={shape}, labels.shape={labels.shape}"
        )
    num_classes = shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}) for probs with {num_classes} "
            f"classes. Received: labels with values {sorted(set(bad.tolist()))[:10]}"
        )
    return labels.astype(np.int64)


def _check_finite(values: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"`{name}` must be finite; found {int((~finite).sum())} NaN/inf entries. "
            f"Received: {name}[{row}, {col}]={values[row, col]}"
        )
    return values


def _check_probability_values(probs: np.ndarray) -> np.ndarray:
    """Finite, non-negative rows summing to 1 (within ``_SUM_TOLERANCE``)."""
    _check_finite(probs, "probs")
    if (probs < 0).any():
        row, col = np.unravel_index(np.argmin(probs), probs.shape)
        raise ValueError(
            "`probs` must be non-negative probabilities (pass softmax outputs, "
            f"not logits). Received: probs[{row}, {col}]={probs[row, col]}"
        )
    sums = probs.sum(axis=1)
    deviation = np.abs(sums - 1.0)
    worst = int(np.argmax(deviation))
    if deviation[worst] > _SUM_TOLERANCE:
        raise ValueError(
            f"Each row of `probs` must sum to 1 (tolerance {_SUM_TOLERANCE}); "
            f"{int((deviation > _SUM_TOLERANCE).sum())} rows do not (pass softmax "
            f"outputs, not logits). Received: probs[{worst}].sum()={float(sums[worst])!r}"
        )
    return probs


def _check_scores(name: str, scores: ArrayLike) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(
            f"`{name}` must be 1-D, one score per example. Received: {name}.shape={scores.shape}"
        )
    if scores.shape[0] == 0:
        raise ValueError(
            f"`{name}` must not be empty. Received: {name}.shape={scores.shape}"
        )
    if not (
        np.issubdtype(scores.dtype, np.floating)
        or np.issubdtype(scores.dtype, np.integer)
    ):
        raise ValueError(
            f"`{name}` must be real numbers. Received: {name}.dtype={scores.dtype}"
        )
    scores = scores.astype(np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"`{name}` must be finite; found {int(bad.sum())} NaN/inf entries. "
            f"Received: {name}[{index}]={scores[index]}"
        )
    return scores


def _ood_targets(
    scores_in: ArrayLike, scores_out: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    scores_in = _check_scores("scores_in", scores_in)
    scores_out = _check_scores("scores_out", scores_out)
    y_true = np.concatenate(
        [np.zeros(scores_in.shape[0]), np.ones(scores_out.shape[0])]
    )
    return y_true, np.concatenate([scores_in, scores_out])


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #
def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose most probable class is the label.

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.

    Returns:
        ``mean_n [argmax_c probs[n, c] == labels[n]]``, in ``[0, 1]``.

    Raises:
        ValueError: If the inputs are malformed (see the module docstring).
    """
    probs, labels = _check_probs_labels(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def negative_log_likelihood(
    probs: ArrayLike, labels: ArrayLike, eps: float = 1e-12
) -> float:
    """Mean negative log-likelihood of the labels, in nats.

    ``NLL = mean_n -log(max(probs[n, labels[n]], eps))``; the clip at ``eps``
    keeps a confidently wrong zero probability finite (``-log(1e-12)`` is
    about 27.6 nats).

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.
        eps: Floor on the probability of the true class, ``> 0``.

    Returns:
        The mean NLL, ``>= 0``; lower is better.

    Raises:
        ValueError: If the inputs are malformed or ``eps <= 0``.
    """
    probs, labels = _check_probs_labels(probs, labels)
    if not eps > 0:
        raise ValueError(f"`eps` must be positive. Received: eps={eps!r}")
    p_true = probs[np.arange(labels.shape[0]), labels]
    return float(np.mean(-np.log(np.maximum(p_true, eps))))


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot label.

    ``Brier = mean_n sum_c (probs[n, c] - onehot(labels[n])[c])^2``, in
    ``[0, 2]`` (0 for a perfect one-hot prediction, 2 for a confident wrong
    one). This is Brier's original multi-class definition, summed over classes
    and not divided by ``C``. ``tfp.stats.brier_score`` returns the same
    quantity minus 1 per example (``sum_c p_c^2 - 2 p_y``).

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.

    Returns:
        The mean Brier score; lower is better.

    Raises:
        ValueError: If the inputs are malformed.
    """
    probs, labels = _check_probs_labels(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(labels.shape[0]), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclasses.dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration statistics over the confidence ``max_c p_c``.

    Attributes:
        bin_edges: Shape ``(B + 1,)``, ``linspace(0, 1, B + 1)``. Bin ``b``
            is ``[bin_edges[b], bin_edges[b + 1])``; the last also holds 1.
        confidence: Shape ``(B,)``, mean confidence of the examples in each
            bin; NaN for an empty bin.
        accuracy: Shape ``(B,)``, fraction of correct predictions in each
            bin; NaN for an empty bin.
        counts: Shape ``(B,)``, int64, number of examples in each bin.
    """

    bin_edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def num_bins(self) -> int:
        """Number of bins ``B``."""
        return int(self.counts.shape[0])

    @property
    def ece(self) -> float:
        """Expected calibration error, ``sum_b counts_b / N * |acc_b - conf_b|``."""
        full = self.counts > 0
        weights = self.counts[full] / self.counts.sum()
        return float(
            np.sum(weights * np.abs(self.accuracy[full] - self.confidence[full]))
        )


def reliability_curve(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> ReliabilityCurve:
    """Bins examples by confidence and measures accuracy in each bin.

    The confidence of example ``n`` is ``conf_n = max_c probs[n, c]``; it falls
    in bin ``min(floor(num_bins * conf_n), num_bins - 1)`` (the binning of
    ``tfp.stats.expected_calibration_error``). A perfectly calibrated model
    has ``accuracy == confidence`` in every bin.

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.
        num_bins: Number ``B`` of equal-width bins over ``[0, 1]``, ``> 0``.

    Returns:
        A :class:`ReliabilityCurve` with ``bin_edges`` ``(B + 1,)`` and
        ``confidence``, ``accuracy``, ``counts`` each ``(B,)``.

    Raises:
        ValueError: If the inputs are malformed or ``num_bins <= 0``.
    """
    probs, labels = _check_probs_labels(probs, labels)
    num_bins = check.positive_int("num_bins", num_bins)
    predicted = np.argmax(probs, axis=1)
    confidence = probs[np.arange(probs.shape[0]), predicted]
    correct = (predicted == labels).astype(np.float64)
    bins = np.clip(np.floor(num_bins * confidence), 0, num_bins - 1).astype(np.int64)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
        mean_acc = np.bincount(bins, weights=correct, minlength=num_bins) / counts
    return ReliabilityCurve(
        bin_edges=np.linspace(0.0, 1.0, num_bins + 1),
        confidence=mean_conf,
        accuracy=mean_acc,
        counts=counts.astype(np.int64),
    )


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> float:
    """Expected calibration error over equal-width confidence bins.

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` (Guo et al. 2017,
    arXiv:1706.04599), with the bins of :func:`reliability_curve`. Matches
    ``tfp.stats.expected_calibration_error(num_bins, logits=log(probs),
    labels_true=labels)``.

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.
        num_bins: Number of equal-width bins over ``[0, 1]``, ``> 0``.

    Returns:
        The ECE, in ``[0, 1]``; lower is better calibrated.

    Raises:
        ValueError: If the inputs are malformed or ``num_bins <= 0``.
    """
    return reliability_curve(probs, labels, num_bins).ece


def ood_auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve for telling OOD from in-distribution examples.

    Out-of-distribution examples are the positive class and a higher score
    means "more OOD". 1.0 separates perfectly, 0.5 is chance, below 0.5 means
    the score ranks the wrong way.

    Args:
        scores_in: Scores of in-distribution examples, shape ``(N_in,)``.
        scores_out: Scores of OOD examples, shape ``(N_out,)``.

    Returns:
        ``sklearn.metrics.roc_auc_score`` of the pooled scores.

    Raises:
        ValueError: If either array is not 1-D, is empty, or holds NaN/inf.
    """
    y_true, scores = _ood_targets(scores_in, scores_out)
    return float(roc_auc_score(y_true, scores))


def ood_aupr(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the precision-recall curve with OOD as the positive class.

    Computed as average precision; chance level is the OOD fraction
    ``N_out / (N_in + N_out)``, not 0.5.

    Args:
        scores_in: Scores of in-distribution examples, shape ``(N_in,)``.
        scores_out: Scores of OOD examples, shape ``(N_out,)``.

    Returns:
        ``sklearn.metrics.average_precision_score`` of the pooled scores.

    Raises:
        ValueError: If either array is not 1-D, is empty, or holds NaN/inf.
    """
    y_true, scores = _ood_targets(scores_in, scores_out)
    return float(average_precision_score(y_true, scores))


def summary(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> dict[str, float]:
    """Every classification metric of this module in one dict.

    Args:
        probs: Predictive probabilities, shape ``(N, C)``, rows summing to 1.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.
        num_bins: Number of bins for the ECE.

    Returns:
        ``{"accuracy", "nll", "brier", "ece"}`` mapped to Python floats.

    Raises:
        ValueError: If the inputs are malformed or ``num_bins <= 0``.
    """
    probs, labels = _check_probs_labels(probs, labels)
    return {
        "accuracy": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, num_bins),
    }


# --------------------------------------------------------------------------- #
# Temperature scaling
# --------------------------------------------------------------------------- #
#: Search interval of `fit_temperature`, ``T`` in ``[1e-2, 1e2]``.
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def _check_from_logits(from_logits: object) -> bool:
    if not isinstance(from_logits, (bool, np.bool_)):
        raise ValueError(
            f"`from_logits` must be True or False. Received: from_logits={from_logits!r}"
        )
    return bool(from_logits)


def _as_logits(values: ArrayLike, from_logits: bool, name: str) -> np.ndarray:
    """``(N, C)`` float64 logits: the input itself, or ``log(max(probs, tiny))``."""
    values = _check_matrix(values, name)
    if from_logits:
        return _check_finite(values, name)
    probs = _check_probability_values(values)
    # A zero probability becomes log(tiny) ~ -708: finite, so T can still scale it.
    return np.log(np.maximum(probs, np.finfo(np.float64).tiny))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tempered_nll(log_t: float, logits: np.ndarray, labels: np.ndarray) -> float:
    """``mean_n logsumexp(z_n / T) - z_{n, y_n} / T`` with ``T = exp(log_t)``."""
    z = logits * np.exp(-log_t)
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def fit_temperature(
    probs: ArrayLike, labels: ArrayLike, *, from_logits: bool = False
) -> float:
    """The temperature ``T > 0`` that minimises the NLL of ``softmax(z / T)``.

    Temperature scaling (Guo et al. 2017, arXiv:1706.04599) divides the logits
    ``z`` of a trained classifier by one scalar ``T`` fitted on held-out data:
    ``T > 1`` softens over-confident predictions, ``T < 1`` sharpens
    under-confident ones; the argmax (so the accuracy) never changes. With
    probabilities as input, ``z = log p`` (zeros clipped to the smallest
    float64), which is the logit vector up to a per-row constant that the
    softmax ignores.

    The NLL ``L(b) = mean_n [logsumexp(b z_n) - b z_{n, y_n}]`` is convex in
    ``b = 1 / T`` (a log-sum-exp of linear functions minus a linear one), so
    as a function of ``log T`` it has a single minimum, found by bounded
    Brent search (``scipy.optimize.minimize_scalar``) over
    ``log T in log(TEMPERATURE_BOUNDS)``. When the NLL still decreases
    towards a bound (e.g. every example correct: sharper is always better),
    the result is near that bound, where the NLL is flat to rounding.

    Fit ``T`` on a validation split that the model was not trained on, never
    on the test set that it is then evaluated on.

    Args:
        probs: ``(N, C)`` predictive probabilities (rows summing to 1), or
            logits with ``from_logits=True``.
        labels: ``(N,)`` integer classes in ``[0, C)``.
        from_logits: ``probs`` holds logits (keyword-only).

    Returns:
        ``T`` as a Python float in ``[1e-2, 1e2]``.

    Raises:
        ValueError: malformed ``probs`` / ``labels`` (see the module
            docstring; logits need only be finite), or a non-bool
            ``from_logits``.

    Example:
    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> labels = np.array([0, 1, 1, 0])   # one confident mistake in four
    >>> t = fit_temperature(logits, labels, from_logits=True)
    >>> t > 1.0
    True
    """
    from scipy.optimize import minimize_scalar

    from_logits = _check_from_logits(from_logits)
    name = "logits" if from_logits else "probs"
    logits = _as_logits(probs, from_logits, name)
    labels = _check_labels(labels, logits.shape)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        _tempered_nll, bounds=(lo, hi), args=(logits, labels), method="bounded",
        options={"xatol": 1e-5},
    )
    best = min((result.x, lo, hi), key=lambda t: _tempered_nll(t, logits, labels))
    return float(np.exp(best))


def apply_temperature(
    probs: ArrayLike, temperature: float, *, from_logits: bool = False
) -> np.ndarray:
    """Temperature-scaled probabilities ``softmax(z / T)``.

    ``z = log p`` for probabilities (so ``T = 1`` returns ``probs`` up to
    rounding), or the logits themselves with ``from_logits=True``.

    Args:
        probs: ``(N, C)`` probabilities (rows summing to 1), or logits with
            ``from_logits=True``.
        temperature: ``T``, a finite number > 0 (e.g. from `fit_temperature`).
        from_logits: ``probs`` holds logits (keyword-only).

    Returns:
        ``(N, C)`` probabilities, the input's float dtype (float64 for
        integer input).

    Raises:
        ValueError: a ``temperature`` that is not a finite number > 0, a
            non-bool ``from_logits``, or malformed ``probs``.

    Example:
    >>> import numpy as np
    >>> apply_temperature(np.array([[0.8, 0.2]]), 2.0).round(4)
    array([[0.6667, 0.3333]])
    """
    from_logits = _check_from_logits(from_logits)
    temperature = check.positive_float("temperature", temperature)
    dtype = np.asarray(probs).dtype
    logits = _as_logits(probs, from_logits, "logits" if from_logits else "probs")
    out = _softmax(logits / float(temperature))
    return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


# Dense (per-pixel) metrics: the module ``_dense_metrics`` and the two below,
# which build on the classifier metrics above (``_dense_metrics`` does not
# import this module).
from . import _dense_metrics as _dense  # noqa: E402
from ._dense_metrics import (  # noqa: E402
    Sparsification,
    ause,
    gaussian_nll_per_pixel,
    mean_iou,
    psnr,
    regression_summary,
    sparsification_curve,
    uncertainty_error_spearman,
)


def pixel_expected_calibration_error(probs: ArrayLike, labels: ArrayLike,
                                     num_bins: int = 15) -> float:
    """ECE with every pixel an example.

    Args:
        probs: ``(N, H, W, C)`` per-pixel probabilities (any leading shape).
        labels: ``(N, H, W)`` integer classes in ``[0, C)``.
        num_bins: equal-width confidence bins, > 0.

    Returns:
        ``sum_b |B_b| / M * |acc(B_b) - conf(B_b)|`` over the ``M`` pixels.

    Raises:
        ValueError: mismatched shapes or invalid probabilities (quoted).
    """
    probs, labels = _dense._dense_probs_labels(probs, labels)
    return expected_calibration_error(probs, labels, num_bins)


def segmentation_summary(probs: ArrayLike, labels: ArrayLike,
                         uncertainties: dict | None = None, num_bins: int = 15) -> dict:
    """The dense classification metrics in one dict (what the CLI and benchmark print).

    The per-pixel error of the uncertainty measures is the misclassification
    ``[argmax probs != label]`` (0 or 1).

    Args:
        probs: ``(N, H, W, C)`` predictive probabilities.
        labels: ``(N, H, W)`` integer classes.
        uncertainties: ``{name: (N, H, W) values}``, e.g. ``{"entropy":
            p.predictive_entropy, "aleatoric": p.aleatoric, "epistemic":
            p.epistemic}``.
        num_bins: ECE bins.

    Returns:
        ``{"pixel_accuracy", "mean_iou", "nll", "pixel_ece"}`` plus, for each
        uncertainty ``u``, ``ause_u``, ``ause_ratio_u`` (AUSE over a random
        ranking's: below 1 is better than random) and ``spearman_u``, and
        ``ause_random``; floats.

    Raises:
        ValueError: mismatched shapes or invalid probabilities (quoted).
    """
    flat_probs, flat_labels = _dense._dense_probs_labels(probs, labels)
    wrong = (flat_probs.argmax(axis=1) != flat_labels).astype(np.float64)
    out = {
        "pixel_accuracy": float(1.0 - wrong.mean()),
        "mean_iou": _dense.mean_iou(probs, labels),
        "nll": negative_log_likelihood(flat_probs, flat_labels),
        "pixel_ece": expected_calibration_error(flat_probs, flat_labels, num_bins),
    }
    shape = np.asarray(labels).shape
    return out | _dense._uncertainty_rows(wrong.reshape(shape), dict(uncertainties or {}))
