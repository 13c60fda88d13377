"""Gaussian output head for heteroscedastic regression."""

from __future__ import annotations

import keras
from keras import ops

from .. import _validation as check


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class GaussianHead(keras.layers.Layer):
    """Predicts a mean and a standard deviation per target (aleatoric noise).

    A deterministic dense map to ``2 * units`` values; the first ``units`` are
    the mean, the last ``units`` go through ``softplus(.) + min_std`` to give
    the standard deviation. Train with ``tfp_bcnn.gaussian_nll``;
    ``tfp_bcnn.predict`` then splits the predictive variance into aleatoric
    (mean of predicted variances) and epistemic (variance of predicted means).

    Any input rank >= 2: the dense map acts on the last axis only, so on a
    feature map ``(batch, H, W, features)`` the head is a 1x1 convolution,
    one Gaussian per pixel and target (dense regression: super-resolution,
    depth); ``tfp_bcnn.predict`` then returns every field per pixel.

    Args:
        units: number of regression targets (per pixel for a dense input), > 0.
        min_std: floor added to the std, > 0.
        kernel_initializer: of the dense map.

    Input shape: ``(batch, *spatial, features)``, ``spatial`` possibly empty
    (``(batch, features)``). Output shape: ``(batch, *spatial, 2 * units)``,
    ``[mean, std]`` concatenated on the last axis.

    Raises:
        ValueError: ``units`` or ``min_std`` not positive; an input of rank
            below 2 or with an unknown last axis (at build).

    Example:

    >>> head = GaussianHead(1)
    >>> head(np.zeros((2, 8, 8, 4), "float32")).shape   # per pixel
    (2, 8, 8, 2)
    """

    def __init__(self, units, min_std=1e-3, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        units = check.positive_int("units", units)
        min_std = check.positive_float("min_std", min_std)
        self.units = units
        self.min_std = float(min_std)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "GaussianHead needs inputs of shape (batch, *spatial, features) with a known "
                f"last axis. Received: input_shape={tuple(input_shape)}"
            )
        self.dense = keras.layers.Dense(
            2 * self.units,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,  # the head's policy, mixed precision included
            name="dense",
        )
        self.dense.build(input_shape)

    def call(self, inputs):
        shape = tuple(inputs.shape)
        if len(shape) > 2 and None not in shape[1:]:
            # a feature map: one matmul over the flattened pixels between static
            # reshapes (TFLite FULLY_CONNECTED, not a dynamic-shape tensordot)
            out = self.dense(ops.reshape(inputs, (-1, shape[-1])))
            out = ops.reshape(out, (-1, *shape[1:-1], 2 * self.units))
        else:
            out = self.dense(inputs)
        mean = out[..., : self.units]
        std = ops.softplus(out[..., self.units :]) + self.min_std
        return ops.concatenate([mean, std], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "min_std": self.min_std,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfp_bcnn")
def gaussian_nll(y_true, y_pred):
    """Negative log-likelihood of ``y_true`` under ``N(mean, std^2)`` from a GaussianHead.

    ``y_pred`` is ``[mean, std]`` concatenated on the last axis (``2 * units``),
    ``y_true`` the targets, ``(batch, *spatial, units)`` (any shape with as
    many entries). Returns the NLL summed over targets (the last axis), shape
    ``(batch,)``, or ``(batch, *spatial)`` per pixel for a dense head (Keras'
    loss reduction then averages over the pixels and the batch)::

        NLL = sum_k 0.5 * log(2 pi std_k^2) + (y_k - mean_k)^2 / (2 std_k^2)

    A float16 / bfloat16 ``y_pred`` (mixed precision) is cast to float32 first:
    the squared residual overflows float16 above 256 standard deviations.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if keras.backend.standardize_dtype(y_pred.dtype) in ("float16", "bfloat16"):
        y_pred = ops.cast(y_pred, "float32")
    units = y_pred.shape[-1] // 2
    mean, std = y_pred[..., :units], y_pred[..., units:]
    y_true = ops.reshape(ops.cast(y_true, mean.dtype), ops.shape(mean))
    z = (y_true - mean) / std
    nll = 0.5 * ops.square(z) + ops.log(std) + 0.9189385332046727
    return ops.sum(nll, axis=-1)
