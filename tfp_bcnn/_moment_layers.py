"""Layer tables and layer-parameter helpers of `tfp_bcnn.moments`.

Which Keras layer classes each moment rule covers, how a layer's weights are
read as moments (`default_kernel_moments`), the refusal message for an
unsupported layer, and the window counts of an average pool. Re-exported from
`tfp_bcnn.moments`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .layers import BayesianLayer, TileComponents


def default_kernel_moments(layer):
    """``(kernel mean, kernel variance or None, bias mean or None, bias variance or None)``.

    From the layer's variables: a Bayesian layer's masked posterior mean and
    variance ``(mu * mask, (sigma * mask)^2)`` (and its bias posterior); a
    Keras Dense / Conv layer's ``kernel`` with no variance.
    """
    if isinstance(layer, BayesianLayer):
        loc, sigma = layer.kernel_posterior()
        if layer.bias_loc is not None:
            return loc, ops.square(sigma), layer.bias_loc, ops.square(layer.bias_sigma)
        return loc, ops.square(sigma), layer.bias, None
    bias = layer.bias if getattr(layer, "use_bias", False) else None
    return layer.kernel, None, bias, None


def _unsupported(layer, why: str) -> ValueError:
    return ValueError(
        f"method='moments' cannot propagate moments through layer {layer.name!r} "
        f"({type(layer).__name__}): {why}. Use method='mc' (Monte Carlo) for this model. "
        f"Received: layer={layer.name!r}"
    )


def _activation_name(layer, activation) -> str:
    if activation is None or activation is keras.activations.linear:
        return "linear"
    for name in ("relu", "relu6", "softmax"):
        if activation is getattr(keras.activations, name):
            return name
    label = getattr(activation, "__name__", repr(activation))
    raise _unsupported(
        layer, f"activation {label!r} is not supported (only relu, relu6, linear, and "
        "softmax as the output)"
    )


_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_DENSE_CONV = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    *_DEPTHWISE,
    *_TRANSPOSE,
)
_SHAPE_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.Identity,
)
#: Upsampling layers: ``UpSampling1D`` / ``3D`` and nearest ``UpSampling2D`` repeat
#: (both moments through the layer itself); bilinear ``UpSampling2D`` is linear.
_UPSAMPLING = (keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D)
_MAX_POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
_GLOBAL_MAX = (
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)
_AVG_POOLS = (
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
)
_GLOBAL_AVG = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)
#: Non-Bayesian layers whose weights a moment rule reads.
PARAMETRIC_LAYERS = (*_DENSE_CONV, keras.layers.BatchNormalization)
#: Layers that are the identity at inference (``training=False``).
_INFERENCE_IDENTITY = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    TileComponents,  # tiles only in training (rank-1 mixture models)
)


#: Merge the two variance maps of a Dense / Conv layer into one on concatenated
#: channels (`tfp_bcnn._moment_rules.linear_variance`). Off: measured in
#: ``benchmarks/mobilenet.py`` (interleaved, CPU time) it removes ops and
#: convolutions but not time (the concatenation costs about the pass it
#: saves; LeNet-5 0.129 vs 0.121 ms, MobileNetV2 0.35 within a few per cent).
CONCAT_VARIANCE_MAPS = False


def _concat(layer, rank: int) -> bool:
    """``layer``'s map sums over the last input axis against kernel axis -2
    (Dense, channels_last Conv: `linear_variance` may concatenate)."""
    if not CONCAT_VARIANCE_MAPS or isinstance(layer, _DEPTHWISE + _TRANSPOSE):
        return False
    if isinstance(layer, BayesianLayer):
        if type(layer).linear is not BayesianLayer.linear:  # depthwise, transposed
            return False
    return rank == 0 or layer.data_format == "channels_last"


def _window_counts(pool, spatial_shape):
    """Inputs per window of an average pool, ``(*out_spatial, 1)`` (channels_last)."""
    counts = np.ones((), np.float32)
    for size, k, s in zip(spatial_shape, pool.pool_size, pool.strides):
        if pool.padding == "valid":
            out = (size - k) // s + 1
            per_dim = np.full(out, k, np.float32)
        else:
            out = -(-size // s)
            pad = max((out - 1) * s + k - size, 0) // 2
            start = np.arange(out) * s - pad
            per_dim = (np.minimum(start + k, size) - np.maximum(start, 0)).astype(np.float32)
        counts = np.multiply.outer(counts, per_dim)
    return counts[..., None]


def bilinear_matrix(size: int, factor: int) -> np.ndarray:
    """``(size * factor, size)`` weights of a 1-D bilinear upsampling by ``factor``.

    Half-pixel centres, as ``keras.ops.image.resize(..., "bilinear")`` on every
    backend (``tf.image.resize``, ``jax.image.resize``, torch's
    ``interpolate(align_corners=False)``): output ``p`` reads the input at
    ``t = (p + 0.5) / factor - 0.5``, weight ``1 - (t - floor t)`` on
    ``floor t`` and ``t - floor t`` on ``floor t + 1``, indices clamped to
    ``[0, size - 1]`` (weights of a clamped pair add up). Bilinear upsampling of
    a ``(H, W)`` map is ``A x B^T`` with ``A = bilinear_matrix(H, fh)`` and
    ``B = bilinear_matrix(W, fw)``, so independent inputs of variance ``v``
    give ``var = A^2 v (B^2)^T`` (squared weights).
    """
    out = np.zeros((size * factor, size), np.float64)
    for p in range(size * factor):
        t = (p + 0.5) / factor - 0.5
        lo = int(np.floor(t))
        frac = t - lo
        out[p, min(max(lo, 0), size - 1)] += 1.0 - frac
        out[p, min(max(lo + 1, 0), size - 1)] += frac
    return out
