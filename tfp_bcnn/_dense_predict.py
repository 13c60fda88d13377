"""Monte Carlo prediction of dense models, until ``tfp_bcnn.predict`` takes them.

A bridge: `predict_dense` calls ``tfp_bcnn.predict`` and, when that refuses a
per-pixel output (the releases before dense predict), draws the Monte Carlo
samples itself and summarises them with the same per-example formulas,
every pixel an example. Once ``tfp_bcnn.predict`` handles dense outputs this
module is one call and can be replaced by it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from . import _prediction
from . import _validation as check
from .layers import GaussianHead

__all__ = ["predict_dense"]


def _samples(model, x, num_samples, batch_size):
    """``(S, N, *output)`` outputs of ``S`` stochastic forward passes (chunked)."""
    chunks = []
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        chunks.append(np.stack([ops.convert_to_numpy(model(part, training=False))
                                for _ in range(num_samples)]))
    return np.concatenate(chunks, axis=1)


def predict_dense(model, x, num_samples: int = 16, batch_size: int = 64):
    """Per-pixel Monte Carlo `Prediction` / `RegressionPrediction` of a dense model.

    Args:
        model: a Keras model with ``(N, H, W, C)`` softmax outputs or a
            per-pixel `tfp_bcnn.layers.GaussianHead` (``(N, H, W, 2 C)``).
        x: ``(N, H_in, W_in, C_in)`` float32 images.
        num_samples: Monte Carlo samples ``S`` >= 1.
        batch_size: images per forward pass.

    Returns:
        ``tfp_bcnn.predict(model, x, num_samples)`` when it accepts the model;
        else the same fields computed from the samples: ``mean (N, H, W, C)``,
        ``predictive_entropy / aleatoric / epistemic (N, H, W)`` (classes) or
        ``mean / aleatoric_variance / epistemic_variance (N, H, W, C)``
        (Gaussian head).

    Raises:
        ValueError: ``num_samples`` or ``batch_size`` below 1.
    """
    from . import uncertainty

    num_samples = check.positive_int("num_samples", num_samples)
    batch_size = check.positive_int("batch_size", batch_size)
    try:
        return uncertainty.predict(model, x, num_samples=num_samples, batch_size=batch_size)
    except ValueError as err:
        if "Received: outputs of shape" not in str(err):
            raise
    x = np.asarray(x, dtype="float32")
    samples = _samples(model, x, num_samples, batch_size)
    flat = samples.reshape(samples.shape[0], -1, samples.shape[-1])
    regression = isinstance(model.layers[-1], GaussianHead)
    pred = (_prediction.summarize_gaussian if regression else _prediction.summarize)(flat)
    pixels = samples.shape[1:-1]
    fields = {}
    for field in dataclasses.fields(pred):
        value = getattr(pred, field.name)
        if value is not None and field.name != "samples":
            value = value.reshape(pixels + value.shape[1:])
        fields[field.name] = value
    return type(pred)(**fields)
