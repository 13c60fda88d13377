"""Channel groups of a functional graph: what filter pruning must remove together.

In a network with residual ``Add`` layers and depthwise convolutions (e.g.
MobileNetV2) a channel is not owned by one layer:

* every tensor feeding an ``Add`` and its output share their channels: the
  channel ``c`` of the sum is 0 only if channel ``c`` of every input is 0,
  so it is pruned as one group, in every layer that produces one of them;
* a depthwise convolution (``depth_multiplier = 1``) maps channel ``c`` to
  channel ``c``: its channels go with those of the layer before it, and so
  do a ``BatchNormalization``'s and every per-channel layer's.

`channel_groups` walks the graph once and returns these groups: for each,
the linear layers that write its channels (``producers``: Conv / Dense,
Bayesian or not), the depthwise and batch-normalisation layers that carry
them (``depthwise``, ``batchnorms``), the per-channel layers in between
(``others``) and the linear layers that read them (``consumers``). A group
that holds the model's input or output is never pruned.
"""

from __future__ import annotations

import dataclasses

import keras

from .._compat import calls_in_model, is_graph_model
from ..layers import BayesianDepthwiseConv, BayesianLayer

__all__ = ["Group", "channel_groups", "is_depthwise", "mixing_activation", "needs_groups",
           "per_channel"]

#: Layers that act channel by channel (channel c of the output from channel c
#: of the input), as `shrink` slices them.
PER_CHANNEL = (
    keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
    keras.layers.Dropout,  # SpatialDropout1D/2D/3D included
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D, keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D, keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.BatchNormalization,
)
MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def per_channel(layer) -> bool:
    """Whether ``layer`` acts channel by channel (`PER_CHANNEL`, or an ``MCDropout``)."""
    return type(layer).__name__ == "MCDropout" or isinstance(layer, PER_CHANNEL)


def mixing_activation(layer) -> str | None:
    """The name of an ``Activation`` layer's function that mixes channels (softmax), or None."""
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        if name in MIXING_ACTIVATIONS:
            return name
    return None


_DEPTHWISE_KERAS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def is_depthwise(layer) -> bool:
    return isinstance(layer, (BayesianDepthwiseConv, *_DEPTHWISE_KERAS))


def needs_groups(model) -> bool:
    """True for a functional model with a merge layer or a depthwise convolution."""
    if not is_graph_model(model) or isinstance(model, keras.Sequential):
        return False
    merges = (keras.layers.Add, keras.layers.Concatenate)
    return any(isinstance(layer, merges) or is_depthwise(layer) for layer in model.layers)


@dataclasses.dataclass
class Group:
    """One set of channels that filter pruning removes together (see the module)."""

    channels: int
    producers: list = dataclasses.field(default_factory=list)
    depthwise: list = dataclasses.field(default_factory=list)
    batchnorms: list = dataclasses.field(default_factory=list)
    others: list = dataclasses.field(default_factory=list)
    consumers: list = dataclasses.field(default_factory=list)
    fixed: bool = False  # holds the model's input or output: never pruned

    def prunable(self) -> bool:
        """No input/output, and every producer is a Bayesian layer without a Bayesian bias."""
        return (not self.fixed and bool(self.producers) and all(
            isinstance(p, BayesianLayer) and p.bias_loc is None for p in self.producers))


def _unsupported(layer, why: str) -> ValueError:
    return ValueError(
        f"Filter pruning through this layer is not supported: {why}. "
        f"Received: layer={layer.name!r} ({type(layer).__name__})"
    )


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, key):
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def _is_linear(layer) -> bool:
    if isinstance(layer, BayesianLayer):
        return not isinstance(layer, BayesianDepthwiseConv)
    return isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                              keras.layers.Dense)) and not is_depthwise(layer)


def _classify(layer) -> str:
    """``"linear"``, ``"depthwise"``, ``"batchnorm"``, ``"add"`` or ``"other"`` (1:1)."""
    if isinstance(layer, keras.layers.Concatenate):
        raise _unsupported(layer, "a Concatenate joins channel sets (only a residual Add "
                                  "ties them); prune or shrink the branches apart")
    if isinstance(layer, keras.layers.Add):
        return "add"
    if _is_linear(layer):
        if getattr(layer, "groups", 1) != 1:
            raise _unsupported(layer, "a grouped convolution")
        return "linear"
    if is_depthwise(layer):
        if int(getattr(layer, "depth_multiplier", 1)) != 1:
            raise _unsupported(layer, "a depthwise convolution with depth_multiplier > 1")
        return "depthwise"
    if isinstance(layer, keras.layers.BatchNormalization):
        if int(layer.axis) % len(layer.input.shape) != len(layer.input.shape) - 1:
            raise _unsupported(layer, "it normalises an axis that is not the last one")
        return "batchnorm"
    if per_channel(layer) and not mixing_activation(layer):
        return "other"
    raise _unsupported(layer, "a layer that is not known to treat channels one by one")


def channel_groups(model) -> list[Group]:
    """The channel groups of a functional, channels-last ``model``.

    Args:
        model: a built functional model, one input and one output, every
            layer used once.

    Returns:
        The groups, in the order their first tensor appears.

    Raises:
        ValueError: a ``Concatenate`` or another layer that mixes or
            reorders channels, a shared layer, a nested model, a depthwise
            convolution with ``depth_multiplier > 1``; the message names it.
    """
    uf, size, roles = _UnionFind(), {}, []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            raise _unsupported(layer, "a nested model")
        if calls_in_model(model, layer) != 1:
            raise _unsupported(layer, "a layer used at several places (shared)")
        kind = _classify(layer)
        inputs = keras.tree.flatten(layer.input)
        out = id(layer.output)
        size[out] = int(layer.output.shape[-1])
        for t in inputs:
            size.setdefault(id(t), int(t.shape[-1]))
        if kind != "linear":
            for t in inputs:
                uf.union(id(t), out)
        roles.append((layer, kind, [id(t) for t in inputs], out))
    groups: dict = {}

    def group(key):
        root = uf.find(key)
        if root not in groups:
            groups[root] = Group(size[key])
        return groups[root]

    for t in model.inputs + model.outputs:
        group(id(t)).fixed = True
    for layer, kind, inputs, out in roles:
        if kind == "linear":
            group(out).producers.append(layer)
            for t in inputs:
                group(t).consumers.append(layer)
        elif kind == "depthwise":
            group(out).depthwise.append(layer)
        elif kind == "batchnorm":
            group(out).batchnorms.append(layer)
        elif kind == "other":
            group(out).others.append(layer)
    return list(groups.values())
