"""Shrinking: remove filter-pruned channels physically, and count what is left.

`shrink` rebuilds a chain model (``keras.Sequential``, or a functional model
whose layers form one chain) with every removable pruned filter taken out of
its layer -- its slice ``[..., f]`` of ``kernel_loc``, ``kernel_rho``,
``kernel_mask`` (and ``kernel_prior_loc``) and its bias -- and the matching
input channels taken out of the next linear layer (a Bayesian layer of any
rank and estimator, or a plain Keras ``Conv1D/2D/3D`` / ``Dense``), through
per-channel layers in between: activations, ``Dropout`` (and ``MCDropout``),
pooling (max, average, global), zero padding, ``BatchNormalization`` (its
``gamma``, ``beta`` and moving statistics are sliced too) and ``Flatten``
(in ``channels_last`` and ``channels_first``: the flattened features of a
channel are found by applying Flatten's own transposition to a map of channel
ids).

Exactness. A pruned filter has mean and std 0 (the mask), so in every
estimator it outputs exactly ``a = activation(b)`` at every position, ``b``
its bias (0 after filter pruning, which zeroes it; see ``_masks``). That
constant is propagated through the layers in between (each is called on a
constant input in inference mode), and at the next linear layer a removed
channel whose value there is

* exactly 0 (relu / tanh / linear of a zero bias; max / average pooling of
  0): is dropped, with no change at all;
* a non-zero constant (e.g. ``BatchNormalization`` of 0, or a sigmoid): is
  folded into the next layer's bias, ``b'_o += sum_c a_c sum_taps W[.., c, o]``,
  when that layer is a plain Keras layer with a bias and ``"valid"`` padding
  (exact: its weights are fixed); a Bayesian next layer has random weights,
  whose contribution ``a_c W`` has a variance that no bias can carry, so
  there the channel is kept;
* not constant (zero padding of a non-zero constant, a Bayesian bias,
  dropout that stays on at inference): is kept.

So the shrunk model computes the same function as the masked one (the same
distribution of outputs; a kept-because-inexact channel stays masked), up to
float rounding from the changed order of sums. The last linear layer keeps
all its units (they are the model's outputs); so does a plain Keras layer
(it has no mask).

Functional models with a residual ``Add`` or a depthwise convolution (e.g.
MobileNetV2) are shrunk by channel groups instead (`_groups`,
`_shrink_graph`): channels tied by an ``Add`` go together, a depthwise
layer's channels go with those of the layer before it.

Rank-1 mixture layers (`tfp_bcnn.layers.Rank1Layer`) shrink like Bayesian
ones: a removed filter leaves ``W[..., f]``, its output factors and its K
biases; the next layer loses the input channel from ``W`` and its input
factors (a channel is removed only if its K biases agree, 0 after filter
pruning; a rank-1 consumer never folds a constant, its factors are random);
`tfp_bcnn.layers.TileComponents` (the identity at inference) may open the chain.

Unsupported (a ``ValueError`` naming the layer, the masked model left as it
is): ``Concatenate`` and other merges but ``Add``, branching without a merge
in a chain model, shared layers, nested models, subclassed models, grouped /
separable / transposed convolutions and any layer not listed above.
"""

from __future__ import annotations


import keras
import numpy as np
from keras import ops

from .._compat import is_graph_model
from .._mixture_fit import Rank1Functional, Rank1Sequential
from ..layers import Rank1Layer, TileComponents
from ._costs import _LINEAR_KERAS, _MASKED, _channel_axis, is_costed, layer_cost
from ._groups import mixing_activation, per_channel

__all__ = ["is_costed", "layer_cost", "layer_costs", "shrink"]

def _describe(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


def _unsupported(layer, why: str) -> ValueError:
    return ValueError(
        f"pruning.shrink cannot shrink through this layer: {why}; the masked model is "
        f"unchanged and still usable. Received: layer={_describe(layer)}"
    )


def _is_linear(layer) -> bool:
    if isinstance(layer, _MASKED):
        return True
    if isinstance(layer, _LINEAR_KERAS):
        if getattr(layer, "groups", 1) != 1:
            raise _unsupported(layer, "a grouped convolution")
        return True
    return False


def _is_per_channel(layer) -> bool:
    if not per_channel(layer):
        return False
    name = mixing_activation(layer)
    if name:
        raise _unsupported(layer, f"the activation {name!r} mixes channels")
    return True


def _chain(model) -> list:
    """The layers of a chain model, in order (InputLayer excluded).

    Raises:
        ValueError: a subclassed model, several inputs / outputs, a merge, a
            branch, a shared layer or a nested model (naming the layer).
    """
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise ValueError(
            "pruning.shrink needs a keras.Sequential or functional model (a graph to "
            f"rebuild). Received: model={getattr(model, 'name', model)!r} "
            f"({type(model).__name__})"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "pruning.shrink needs a model with one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    sequential = isinstance(model, keras.Sequential)
    previous = model.inputs[0]
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise _unsupported(layer, "a nested model (flatten it into one chain first)")
        if sequential:
            continue
        try:
            inputs = layer.input
        except (AttributeError, ValueError):
            raise _unsupported(layer, "a layer used at several places (shared)") from None
        if isinstance(inputs, (list, tuple, dict)):
            raise _unsupported(layer, "it merges several tensors (e.g. a residual Add or a "
                                      "Concatenate)")
        if inputs is not previous:
            raise _unsupported(layer, "its input is not the output of the layer before it "
                                      "(a branch or a skip connection)")
        previous = layer.output
    if not sequential and previous is not model.outputs[0]:
        raise ValueError(
            "pruning.shrink needs a chain model whose last layer makes the output. "
            f"Received: model={model.name!r}"
        )
    return layers


def _removable(layer, last: bool) -> np.ndarray:
    """Boolean ``(F,)``: the filters of ``layer`` that may be removed."""
    units = int(layer.kernel_mask.shape[-1]) if isinstance(layer, _MASKED) else None
    if units is None or last or getattr(layer, "bias_loc", None) is not None:
        return np.zeros(int(_out_channels(layer)), dtype=bool)
    mask = ops.convert_to_numpy(layer.kernel_mask)
    return np.all(mask.reshape(-1, units) == 0, axis=0)


def _out_channels(layer) -> int:
    return int(layer.units if isinstance(layer, _MASKED) else
               getattr(layer, "filters", None) or layer.units)


def _filter_constants(layer, removed: np.ndarray) -> np.ndarray:
    """``activation(bias)`` of every output channel (nan where not removed)."""
    bias = np.zeros(removed.shape, "float32")
    if getattr(layer, "bias", None) is not None:
        bias = ops.convert_to_numpy(layer.bias).astype("float32")
    same = np.ones(removed.shape, dtype=bool)
    if bias.ndim == 2:  # a rank-1 layer's bias per component: constant if all agree
        same = np.all(bias == bias[:1], axis=0)
        bias = bias[0]
    act = ops.convert_to_numpy(layer.activation(ops.convert_to_tensor(bias)))
    act = np.where(same, act, np.inf)  # +inf: not constant, kept (see _propagate)
    return np.where(removed, act, np.nan)


def _propagate(layer, const: np.ndarray, axis: int, in_shape) -> tuple[np.ndarray, int]:
    """Values of the removed features after ``layer``, from a constant input.

    Returns ``(const', axis')``: nan where a feature is kept or not constant.
    """
    shape = [1] + [int(d) for d in in_shape[1:]]
    ndim = len(shape)
    view = [1] * ndim
    view[axis] = -1
    x = np.broadcast_to(np.nan_to_num(const, nan=0.0).reshape(view), shape).astype("float32")
    y = ops.convert_to_numpy(layer(ops.convert_to_tensor(x), training=False))
    out_axis = 1 if y.ndim == 2 else axis
    if y.shape[out_axis] != const.shape[0]:
        raise _unsupported(layer, "it changes the number of channels")
    moved = np.moveaxis(y, out_axis, 0).reshape(const.shape[0], -1)
    constant = np.all(moved == moved[:, :1], axis=1)
    out = np.where(constant & ~np.isnan(const), moved[:, 0], np.nan)
    # a removed feature that stopped being constant is marked with +inf
    out = np.where(~constant & ~np.isnan(const), np.inf, out)
    return out, out_axis


def _flatten_channels(layer, in_shape, axis: int) -> np.ndarray:
    """Channel id (along ``axis``) of every feature of ``Flatten``'s output."""
    dims = [int(d) for d in in_shape[1:]]
    ids = np.broadcast_to(
        np.arange(dims[axis - 1]).reshape([-1 if i == axis - 1 else 1 for i in range(len(dims))]),
        dims,
    )
    if getattr(layer, "data_format", "channels_last") == "channels_first" and len(dims) > 1:
        ids = np.moveaxis(ids, 0, -1)
    return ids.reshape(-1)


class _Plan:
    """What to keep of every layer: ``in_keep`` / ``out_keep`` index arrays and
    ``bias_shift`` (the folded constants) by layer id."""

    def __init__(self):
        self.in_keep, self.out_keep, self.bias_shift = {}, {}, {}


def _plan(layers) -> _Plan:
    """Decide, segment by segment (linear layer -> ... -> next linear layer),
    which channels go (see the module docstring)."""
    plan = _Plan()
    linear = [i for i, layer in enumerate(layers) if _is_linear(layer)]
    for layer in layers:
        if not (_is_linear(layer) or _is_per_channel(layer)
                or isinstance(layer, (keras.layers.Flatten, TileComponents))):
            raise _unsupported(layer, "a layer that shrink does not know how to slice")
    for n, start in enumerate(linear):
        producer = layers[start]
        end = linear[n + 1] if n + 1 < len(linear) else None
        removed = _removable(producer, end is None)
        if not removed.any():
            continue
        if removed.all():  # never remove a whole layer
            removed[0] = False
        const = _filter_constants(producer, removed)
        axis = _channel_axis(producer, len(producer.output.shape))
        chan = np.arange(removed.size)  # feature -> producer channel
        for layer in layers[start + 1:end]:
            if isinstance(layer, keras.layers.Flatten):
                chan_of = _flatten_channels(layer, layer.input.shape, axis)
                chan, const, axis = chan[chan_of], const[chan_of], 1
                continue
            if isinstance(layer, keras.layers.BatchNormalization):
                ndim = len(layer.input.shape)
                if int(layer.axis) % ndim != axis % ndim:
                    raise _unsupported(layer, "it normalises an axis that is not the channels")
            const, axis = _propagate(layer, const, axis, layer.input.shape)
        consumer = layers[end]
        in_ndim = len(consumer.input.shape)
        if _channel_axis(consumer, in_ndim) != axis % in_ndim:
            raise _unsupported(consumer, "its channel axis is not the one of the channels "
                                         "coming in")
        foldable = (not isinstance(consumer, _MASKED)
                    and getattr(consumer, "bias", None) is not None
                    and getattr(consumer, "padding", "valid") == "valid")
        exact = (const == 0) | (np.isfinite(const) & foldable)
        bad = np.unique(chan[~np.isnan(const) & ~exact])
        removed[bad] = False
        gone = removed[chan]
        plan.out_keep[id(producer)] = np.flatnonzero(~removed)
        for layer in layers[start + 1:end]:
            if isinstance(layer, keras.layers.BatchNormalization):
                plan.out_keep[id(layer)] = np.flatnonzero(~removed)
        plan.in_keep[id(consumer)] = np.flatnonzero(~gone)
        shift = np.where(gone, const, 0.0)
        if np.any(shift != 0):  # only where `foldable`: a plain Keras layer
            kernel = ops.convert_to_numpy(consumer.kernel)
            taps = kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)  # (in, out)
            plan.bias_shift[id(consumer)] = shift @ taps
    return plan


def _slice(value: np.ndarray, in_keep, out_keep) -> np.ndarray:
    if value.ndim >= 2:
        if in_keep is not None:
            value = np.take(value, in_keep, axis=-2)
        if out_keep is not None:
            value = np.take(value, out_keep, axis=-1)
    elif value.ndim == 1 and out_keep is not None:
        value = value[out_keep]
    return value


def _new_layer(layer, plan: _Plan):
    config = layer.get_config()
    out_keep = plan.out_keep.get(id(layer))
    if out_keep is not None and not isinstance(layer, keras.layers.BatchNormalization):
        key = "units" if "units" in config else "filters"
        config[key] = int(out_keep.size)
    return type(layer).from_config(config)


#: Rank-1 variables ``(K, channels)``: sliced along the last axis by the
#: input (``in_factor_*``) or output (``out_factor_*``, ``bias``) channels.
_RANK1_IN, _RANK1_OUT = ("in_factor_loc", "in_factor_rho"), (
    "out_factor_loc", "out_factor_rho", "bias")


def _slice_variable(layer, name: str, value: np.ndarray, in_keep, out_keep) -> np.ndarray:
    if isinstance(layer, Rank1Layer) and name in _RANK1_IN + _RANK1_OUT:
        keep = in_keep if name in _RANK1_IN else out_keep
        return value if keep is None else np.take(value, keep, axis=-1)
    return _slice(value, in_keep, out_keep)


def _copy_weights(old, new, plan: _Plan) -> None:
    in_keep, out_keep = plan.in_keep.get(id(old)), plan.out_keep.get(id(old))
    old_vars = {v.name: v for v in old.weights}
    for var in new.weights:
        value = _slice_variable(old, var.name, ops.convert_to_numpy(old_vars[var.name]),
                                in_keep, out_keep)
        if var.name == "bias" and id(old) in plan.bias_shift:
            value = value + plan.bias_shift[id(old)].astype(value.dtype)
        var.assign(value)


def shrink(model: keras.Model) -> keras.Model:
    """A physically smaller copy of a filter-pruned chain model.

    Every removable pruned filter (whole ``kernel_mask[..., f] == 0``) is
    taken out of its layer and the matching input channels out of the next
    linear layer, through the per-channel layers in between (see the module
    docstring for what is supported and why the function is unchanged).
    Weight-level zeros inside kept filters stay as masked weights.

    Args:
        model: a built ``keras.Sequential`` or single-chain functional model,
            typically after ``pruning.prune(..., structure="filter")`` and
            training, or `pruning.prune_now` with ``structure="filter"``.

    Returns:
        A new, uncompiled model of the same class (Sequential or functional),
        name, input and output shapes; the given model is not modified. It
        trains, saves to ``.keras`` and exports like any tfp_bcnn model.

    Raises:
        ValueError: a topology that cannot be shrunk (a ``Concatenate``, a
            branch without a merge, a shared layer, a nested or subclassed
            model, an unknown layer); the message names the layer.

    Example:

    >>> pruning.prune_now(model, 0.5, criterion="l1", structure="filter")  # doctest: +SKIP
    >>> small = pruning.shrink(model)  # doctest: +SKIP
    """
    from ._groups import needs_groups

    if needs_groups(model):  # residual Add / depthwise: channel groups
        from ._shrink_graph import shrink_graph

        return shrink_graph(model)
    layers = _chain(model)
    plan = _plan(layers)
    new_layers = [_new_layer(layer, plan) for layer in layers]
    source = model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype,
                         name=getattr(source, "name", None))
    # a rank-1 model keeps its class (its compile wraps plain losses for the K copies)
    if isinstance(model, keras.Sequential):
        cls = Rank1Sequential if isinstance(model, Rank1Sequential) else keras.Sequential
        small = cls([inputs, *new_layers], name=model.name)
    else:
        x = inputs
        for layer in new_layers:
            x = layer(x)
        cls = Rank1Functional if isinstance(model, Rank1Functional) else keras.Model
        small = cls(inputs, x, name=model.name)
    for old, new in zip(layers, new_layers):
        _copy_weights(old, new, plan)
    return small


def layer_costs(model: keras.Model) -> list[dict]:
    """Channels, parameters and FLOPs of each convolution / dense layer, per image.

    FLOPs count the multiply-adds of the mean path, ``2 * prod(kernel_size) *
    in * out * output_positions`` (Dense: ``2 * in * out``), the cost of one
    deterministic pass; a Monte Carlo pass of a Bayesian layer costs about
    twice that (local reparameterization and Flipout: a second convolution).

    Returns:
        ``[{"layer", "channels", "params", "flops"}, ...]`` in model order, for
        the Bayesian layers and plain Keras ``Conv*D`` / ``Dense``;
        ``params`` counts the layer's weights (mean, std and mask of a
        Bayesian kernel each count; the non-trainable ``kl_weight`` too).
    """
    from .._compat import all_layers

    return [layer_cost(layer) for layer in all_layers(model) if is_costed(layer)]
