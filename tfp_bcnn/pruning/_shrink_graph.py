"""`shrink` for functional graphs with residual ``Add`` and depthwise layers.

Channels are removed by the channel groups of `_groups`: channel ``c`` of a
group goes when every producer's filter ``c`` is pruned and channel ``c``
is then exactly 0 on every tensor of the group -- each producer outputs
``activation(bias_c) = 0``, and every layer that carries the group
(depthwise convolution, batch normalisation, activation, padding, pooling,
dropout) maps an all-zero channel to an all-zero channel, which is checked
by calling it on zeros in inference mode (`prune` with
``structure="filter"`` makes it so: it zeroes the producers' biases, the
depthwise channels and the normalisations' ``gamma`` and ``beta``). A zero
channel adds nothing to a sum, and contributes exactly 0 to the layers that
read it (Bayesian or not: ``0 * W = 0`` for every draw of ``W``), so the
rebuilt model computes the same function up to float rounding. A channel
that is not exactly zero somewhere stays (masked). Every group keeps at
least one channel.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ._groups import Group, channel_groups
from ._masks import pruned_filters

__all__ = ["shrink_graph"]


def _zero_channels(layer) -> np.ndarray:
    """Boolean ``(C,)``: output channels that are all 0 when the input is all 0."""
    shape = (1, *(int(d) for d in layer.input.shape[1:]))
    y = ops.convert_to_numpy(layer(ops.zeros(shape), training=False))
    return np.all(y.reshape(-1, y.shape[-1]) == 0, axis=0)


def _removable(group: Group) -> np.ndarray:
    removed = np.all([pruned_filters(p) for p in group.producers], axis=0)
    for p in group.producers:
        bias = np.zeros(group.channels, "float32")
        if getattr(p, "bias", None) is not None:
            bias = ops.convert_to_numpy(p.bias).astype("float32")
        removed &= ops.convert_to_numpy(p.activation(ops.convert_to_tensor(bias))) == 0
    if removed.any():
        for layer in group.depthwise + group.batchnorms + group.others:
            removed &= _zero_channels(layer)
    if removed.all():  # never remove a whole group
        removed[0] = False
    return removed


def _plan(model) -> tuple[dict, dict]:
    """``(in_keep, out_keep)``: kept channel indices by layer id."""
    in_keep, out_keep = {}, {}
    for group in channel_groups(model):
        if not group.prunable():
            continue
        removed = _removable(group)
        if not removed.any():
            continue
        keep = np.flatnonzero(~removed)
        for layer in group.producers + group.batchnorms:
            out_keep[id(layer)] = keep
        for layer in group.depthwise:
            in_keep[id(layer)] = out_keep[id(layer)] = keep
        for layer in group.consumers:
            in_keep[id(layer)] = keep
    return in_keep, out_keep


def _sliced(value: np.ndarray, in_keep, out_keep, depthwise: bool) -> np.ndarray:
    if value.ndim >= 2:
        if in_keep is not None:
            value = np.take(value, in_keep, axis=-2)
        if out_keep is not None and not depthwise:
            value = np.take(value, out_keep, axis=-1)
    elif value.ndim == 1 and out_keep is not None:
        value = value[out_keep]
    return value


def shrink_graph(model: keras.Model) -> keras.Model:
    """A physically smaller copy of a filter-pruned functional model (module docstring).

    Args:
        model: a built functional model with ``Add`` / depthwise layers.

    Returns:
        A new functional model, same name, input and output shapes.

    Raises:
        ValueError: a ``Concatenate`` or another unsupported layer (see
            `_groups.channel_groups`).
    """
    from ._groups import is_depthwise

    in_keep, out_keep = _plan(model)

    def clone(layer):
        config = layer.get_config()
        keep = out_keep.get(id(layer))
        if keep is not None and ("filters" in config or "units" in config):
            config["units" if "units" in config else "filters"] = int(keep.size)
        return type(layer).from_config(config)

    small = keras.models.clone_model(model, clone_function=clone)
    for old in model.layers:
        if isinstance(old, keras.layers.InputLayer):
            continue
        new = small.get_layer(old.name)
        values = {v.name: ops.convert_to_numpy(v) for v in old.weights}
        depthwise = is_depthwise(old)
        for var in new.weights:
            var.assign(_sliced(values[var.name], in_keep.get(id(old)), out_keep.get(id(old)),
                               depthwise))
    return small
