"""Inference BatchNormalization folded into the preceding linear layer's moments.

At inference a BatchNormalization layer is the per-channel affine map
``y = a x + h`` with ``a = gamma / sqrt(moving_variance + epsilon)`` and
``h = beta - a moving_mean``. Applied to the output of a linear layer with
kernel ``N(M, S^2)`` and bias ``N(b, var(b))`` on inputs ``N(mu, v)``::

    mean = a (mu (*) M + b) + h    = mu (*) (a M) + (a b + h)
    var  = a^2 ((v + mu^2) (*) S^2 + v (*) M^2 + var(b))
         = (v + mu^2) (*) (a^2 S^2) + v (*) (a M)^2 + a^2 var(b)

because ``a`` scales output channels, which every ``(*)`` here (dense,
convolution, depthwise and transposed convolution) keeps apart. So the
moment pass multiplies the constant kernels once (folded into constants by
the TFLite converter) instead of running two full-tensor passes (``a``
times the mean, ``a^2`` times the variance) and a variance floor per
BatchNormalization. Exact up to float rounding (``tests/test_moments.py``).
"""

from __future__ import annotations

import keras
from keras import ops

from .layers import BayesianConvTranspose, BayesianDepthwiseConv

__all__ = ["batch_norm_affine", "can_fold", "fold"]

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, BayesianDepthwiseConv)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose, BayesianConvTranspose)


def batch_norm_affine(bn):
    """``(a, h)``, the per-channel scale and shift of an inference BatchNormalization.

    Args:
        bn: a built ``keras.layers.BatchNormalization``.

    Returns:
        Two ``(channels,)`` tensors with ``bn(x, training=False) = a x + h``.
    """
    a = ops.rsqrt(ops.convert_to_tensor(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        a = a * ops.convert_to_tensor(bn.gamma)
    h = -a * ops.convert_to_tensor(bn.moving_mean)
    if bn.center:
        h = h + ops.convert_to_tensor(bn.beta)
    return a, h


def can_fold(layer, bn, output_rank: int) -> bool:
    """Whether ``bn`` (on ``layer``'s output of rank ``output_rank``) folds into ``layer``.

    It must be a BatchNormalization over the output channel axis of a
    linear layer without activation (``layer.activation`` linear).
    """
    if not isinstance(bn, keras.layers.BatchNormalization):
        return False
    activation = getattr(layer, "activation", None)
    if activation is not None and activation is not keras.activations.linear:
        return False
    channels_first = output_rank > 2 and getattr(layer, "data_format", None) == "channels_first"
    return int(bn.axis) % output_rank == (1 if channels_first else output_rank - 1)


def _scale_outputs(layer, kernel, scale):
    """``kernel`` with every output channel multiplied by ``scale`` (its layout's axis)."""
    scale = ops.cast(scale, kernel.dtype)
    if isinstance(layer, _DEPTHWISE):  # (*k, in, multiplier): output c = i * mult + j
        return kernel * ops.reshape(scale, tuple(kernel.shape[-2:]))
    if isinstance(layer, _TRANSPOSE):  # (*k, out, in)
        return kernel * ops.reshape(scale, (-1, 1))
    return kernel * scale  # (in, out) or (*k, in, out)


def fold(layer, kernel_moments, bn):
    """A layer's ``(kernel, kernel variance, bias, bias variance)`` with ``bn`` folded in.

    Args:
        layer: the linear layer (`can_fold` true).
        kernel_moments: its ``(kernel mean, kernel variance or None, bias
            or None, bias variance or None)``.
        bn: the BatchNormalization that follows it.

    Returns:
        The folded 4-tuple (module docstring): ``a M``, ``a^2 S^2``,
        ``a b + h`` (never None), ``a^2 var(b)``.
    """
    kernel, kernel_var, bias, bias_var = kernel_moments
    a, h = batch_norm_affine(bn)
    kernel = _scale_outputs(layer, kernel, a)
    if kernel_var is not None:
        kernel_var = _scale_outputs(layer, kernel_var, ops.square(a))
    bias = h if bias is None else ops.cast(bias, h.dtype) * a + h
    if bias_var is not None:
        bias_var = ops.cast(bias_var, a.dtype) * ops.square(a)
    return kernel, kernel_var, bias, bias_var
