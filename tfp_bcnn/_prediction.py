"""The predictive-distribution result types and their summaries, in NumPy only.

One home for the maths that turns Monte Carlo samples into a prediction:
`tfp_bcnn.predict` (``uncertainty.py``), `tfp_bcnn.uncertainty.decompose` and
the TF-free runtime of exported files (``export/runtime.py``, which imports
this module when it runs inside the package) all return these types, computed
by these functions. The module imports nothing but ``dataclasses`` and numpy
(no TensorFlow, Keras or other tfp_bcnn module), so the runtime can use it
without TensorFlow. (The exported graph computes the same fields with
TensorFlow ops inside the file: ``export/_inference.summaries``; tests check
the two against each other.)

With ``S`` samples ``p_s`` of the class probabilities (``N`` examples, ``C``
classes), ``pbar = mean_s p_s`` and ``H[p] = -sum_c p_c log p_c`` (nats,
``0 log 0 = 0``)::

    predictive_entropy = H[pbar]                  (total)
    aleatoric          = mean_s H[p_s]            (expected entropy)
    epistemic          = H[pbar] - mean_s H[p_s]  (mutual information, >= 0)

Depeweg et al. 2018 (https://arxiv.org/abs/1710.07283) for the entropy
split, Kwon et al. 2018 (https://arxiv.org/abs/1806.05978) for the
variance split.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "Prediction",
    "RegressionPrediction",
    "concatenate",
    "entropy",
    "summarize",
    "summarize_gaussian",
]


def _shape_repr(obj) -> str:
    parts = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        parts.append(f"{f.name}={'None' if v is None else f'<array {v.shape}>'}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Prediction:
    """Monte Carlo predictive distribution of a classifier and its uncertainty.

    With ``S`` samples ``p_s`` (``N`` examples, ``C`` classes), ``pbar =
    mean_s p_s`` and ``H[p] = -sum_c p_c log p_c`` (nats, ``0 log 0 = 0``).
    A dense (segmentation) model, output ``(N, H, W, C)`` softmax over the
    last axis, gets the same fields per pixel: read ``(N,)`` below as
    ``(N, H, W)`` and ``(N, C)`` as ``(N, H, W, C)`` (samples
    ``(S, N, H, W, C)``); each pixel is summarised on its own.

    Attributes:
        mean: ``(N, C)`` predictive probabilities ``pbar``.
        std: ``(N, C)`` standard deviation of ``p_s`` over samples (ddof=0).
        predictive_entropy: ``(N,)`` total uncertainty ``H[pbar]``.
        aleatoric: ``(N,)`` expected entropy ``mean_s H[p_s]``.
        epistemic: ``(N,)`` mutual information between the label and the
            weights, ``H[pbar] - mean_s H[p_s]`` (>= 0 by Jensen; clipped at
            0 against rounding).
        aleatoric_variance: ``(N, C)`` ``mean_s p_s (1 - p_s)``, the diagonal
            of ``mean_s (diag(p_s) - p_s p_s^T)`` (Kwon et al. 2018).
        epistemic_variance: ``(N, C)`` ``mean_s (p_s - pbar)^2`` (= ``std**2``),
            the diagonal of ``mean_s (p_s - pbar)(p_s - pbar)^T``.
            ``aleatoric_variance + epistemic_variance = pbar (1 - pbar)``.
        samples: ``(S, N, C)`` the sampled probabilities, or None unless
            requested (``return_samples=True``).

    Derived fields are float64 (computed in double precision); ``samples``
    keep the model's output dtype.
    """

    mean: np.ndarray
    std: np.ndarray
    predictive_entropy: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    aleatoric_variance: np.ndarray
    epistemic_variance: np.ndarray
    samples: np.ndarray | None = None

    __repr__ = _shape_repr


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class RegressionPrediction:
    """Monte Carlo predictive distribution of a ``GaussianHead`` regressor.

    Each sample ``s`` predicts ``N(mu_s, sigma_s^2)`` for each of the ``K``
    targets; the predictive distribution is their equal-weight mixture, whose
    variance splits by the law of total variance (Kendall & Gal 2017,
    https://arxiv.org/abs/1703.04977)::

        Var[y] = mean_s sigma_s^2      +  mean_s (mu_s - mean)^2
               = aleatoric_variance    +  epistemic_variance

    A dense regressor (a ``GaussianHead`` applied per pixel, output
    ``(N, H, W, 2K)``) gets the same fields per pixel: read ``(N, K)`` below
    as ``(N, H, W, K)``.

    Attributes:
        mean: ``(N, K)`` predictive mean ``mean_s mu_s``.
        aleatoric_variance: ``(N, K)`` mean of the predicted variances.
        epistemic_variance: ``(N, K)`` variance of the predicted means (ddof=0).
        variance: ``(N, K)`` their sum, the predictive variance.
        std: ``(N, K)`` ``sqrt(variance)``.
        samples: ``(S, N, 2K)`` the raw head outputs ``[mu_s, sigma_s]``, or
            None unless requested.
    """

    mean: np.ndarray
    aleatoric_variance: np.ndarray
    epistemic_variance: np.ndarray
    variance: np.ndarray
    std: np.ndarray
    samples: np.ndarray | None = None

    __repr__ = _shape_repr


def entropy(p: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` over the last axis, in nats, with ``0 log 0 = 0``.

    Args:
        p: ``(..., C)`` probabilities.

    Returns:
        ``(...)``.
    """
    safe = np.where(p > 0, p, 1.0)
    return -np.sum(p * np.log(safe), axis=-1)


def summarize(samples, return_samples: bool = False) -> Prediction:
    """The `Prediction` of ``(S, N, C)`` (or ``(S, N, *spatial, C)``) class probabilities.

    Double-precision maths on the probabilities clipped to ``[0, 1]`` (the
    formulas are in `Prediction`); no check that they are probabilities
    (`tfp_bcnn.uncertainty.decompose` checks). Rank-agnostic: the samples
    axis is 0 and the class axis the last one, every axis between is an
    example axis (a dense model's pixels, e.g. ``(S, N, H, W, C)`` gives a
    ``mean`` of ``(N, H, W, C)`` and entropies of ``(N, H, W)``).

    Args:
        samples: ``(S, N, *spatial, C)`` array, ``spatial`` possibly empty.
        return_samples: keep ``samples`` (unchanged, their dtype) in the result.

    Returns:
        A `Prediction`.

    Raises:
        ValueError: ``samples`` is of rank below 3.
    """
    samples = np.asarray(samples)
    if samples.ndim < 3:
        raise ValueError(
            "`samples` must have shape (S, N, C), or (S, N, *spatial, C) for a dense "
            f"model. Received: samples.shape={samples.shape}"
        )
    p = np.clip(samples.astype(np.float64), 0.0, 1.0)
    mean = p.mean(axis=0)
    epistemic_variance = np.mean(np.square(p - mean), axis=0)
    predictive_entropy = entropy(mean)
    aleatoric = entropy(p).mean(axis=0)
    return Prediction(
        mean=mean,
        std=np.sqrt(epistemic_variance),
        predictive_entropy=predictive_entropy,
        aleatoric=aleatoric,
        epistemic=np.maximum(predictive_entropy - aleatoric, 0.0),
        aleatoric_variance=np.mean(p * (1.0 - p), axis=0),
        epistemic_variance=epistemic_variance,
        samples=samples if return_samples else None,
    )


def summarize_gaussian(samples, return_samples: bool = False) -> RegressionPrediction:
    """The `RegressionPrediction` of ``(S, N, [*spatial,] 2K)`` sampled ``[mu, sigma]``.

    Rank-agnostic like `summarize`: the last axis holds the head outputs
    (a per-pixel ``GaussianHead`` gives ``(S, N, H, W, 2K)`` and fields of
    ``(N, H, W, K)``).

    Args:
        samples: ``(S, N, [*spatial,] 2K)``: the first ``K`` entries of the
            last axis the means, the last ``K`` the standard deviations.
        return_samples: keep ``samples`` in the result.

    Returns:
        A `RegressionPrediction` (float64 fields).
    """
    s = np.asarray(samples).astype(np.float64)
    k = s.shape[-1] // 2
    mu, sigma = s[..., :k], s[..., k:]
    mean = mu.mean(axis=0)
    aleatoric_variance = np.mean(np.square(sigma), axis=0)
    epistemic_variance = np.mean(np.square(mu - mean), axis=0)
    variance = aleatoric_variance + epistemic_variance
    return RegressionPrediction(
        mean=mean,
        aleatoric_variance=aleatoric_variance,
        epistemic_variance=epistemic_variance,
        variance=variance,
        std=np.sqrt(variance),
        samples=samples if return_samples else None,
    )


def concatenate(parts):
    """Join per-batch results (of one type) along the example axis.

    Args:
        parts: non-empty sequence of `Prediction` or of `RegressionPrediction`.

    Returns:
        One result of the same type: fields concatenated on axis 0, ``samples``
        on axis 1 (None stays None).
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    values = {}
    for f in dataclasses.fields(first):
        if getattr(first, f.name) is None:
            values[f.name] = None
        else:
            axis = 1 if f.name == "samples" else 0
            values[f.name] = np.concatenate([getattr(p, f.name) for p in parts], axis=axis)
    return type(first)(**values)
