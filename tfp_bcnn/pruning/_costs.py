"""What a convolution or dense layer costs: channels, weights and FLOPs per image.

A leaf of `tfp_bcnn.pruning`: `_shrink` (``layer_costs``, the FLOPs report of
``shrink``) and `_allocation` (the cost-aware channel ranking) both read it,
so neither imports the other.
"""

from __future__ import annotations

import math

import keras

from ..layers import BayesianLayer, Rank1Layer

__all__ = ["is_costed", "layer_cost"]

_LINEAR_KERAS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                 keras.layers.Dense)
#: Layers with a ``kernel_mask`` whose filters shrink removes.
_MASKED = (BayesianLayer, Rank1Layer)


def _channel_axis(layer, ndim: int) -> int:
    """Positive channel axis of the output of a linear layer."""
    if ndim > 2 and getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return ndim - 1


def is_costed(layer) -> bool:
    """Whether `layer_costs` counts ``layer``: a masked layer or a plain Keras Conv / Dense."""
    return isinstance(layer, _MASKED) or isinstance(layer, _LINEAR_KERAS)


def layer_cost(layer) -> dict:
    """One row of `layer_costs`: ``{"layer", "channels", "params", "flops"}`` of a built layer."""
    kernel = layer.kernel_loc if isinstance(layer, BayesianLayer) else layer.kernel
    shape = tuple(int(d) for d in kernel.shape)
    out_shape = layer.output.shape
    if len(shape) > 2:
        axis = _channel_axis(layer, len(out_shape))
        positions = math.prod(int(d) for i, d in enumerate(out_shape) if i not in (0, axis))
    else:
        positions = math.prod(int(d) for d in out_shape[1:-1])
    depthwise = "depthwise" in type(layer).__name__.lower()  # (k..., in, multiplier)
    return {
        "layer": layer.name,
        "channels": shape[-2] * shape[-1] if depthwise else shape[-1],
        "params": int(sum(math.prod(v.shape) for v in layer.weights)),
        "flops": 2 * math.prod(shape) * positions,
    }
