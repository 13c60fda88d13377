"""The rank-1 mixture side of `to_bayesian` (``posterior="rank1"``).

A trained ``Dense`` / ``Conv1D/2D/3D`` becomes the rank-1 mixture layer of
the same rank (`tfp_bcnn.layers.rank1_class`) whose shared kernel ``W`` is
the trained kernel and whose K biases are the trained bias; the factors start
at the layers' own initialisation (means ``N(1, 0.5^2)``, scale
``posterior_std_init``), so each component starts as a multiplicative
perturbation of the trained network, in its own mode. The converted model
gets a `tfp_bcnn.layers.TileComponents` on each input (training batches
tiled K times, as the builders do).
"""

from __future__ import annotations

import keras
import numpy as np

from .._compat import input_layer_name
from .._mixture_fit import Rank1Functional, Rank1Sequential
from ..layers import TileComponents, rank1_class

__all__ = ["RANK1_CONVERTIBLE", "RANK1_FACTOR_STD_INIT", "options", "rank1_twin",
           "init_rank1", "add_training_tile"]

#: Initial factor scale of rank-1 layers when the builders' / `to_bayesian`'s
#: mean-field default ``posterior_std_init`` is left as it is (the layers' own
#: default).
RANK1_FACTOR_STD_INIT = 0.05

#: Keras classes (exact type) with a rank-1 twin -> rank (0 is Dense).
RANK1_CONVERTIBLE = {
    keras.layers.Dense: 0,
    keras.layers.Conv1D: 1,
    keras.layers.Conv2D: 2,
    keras.layers.Conv3D: 3,
}


def options(num_components: int, prior, posterior_std_init: float, kl_weight: float) -> dict:
    """The rank-1 layers' arguments; the mean-field default std 1e-3 becomes 0.05."""
    std = RANK1_FACTOR_STD_INIT if posterior_std_init == 1e-3 else posterior_std_init
    return {"num_components": num_components, "prior": prior, "posterior_std_init": std,
            "kl_weight": kl_weight}


def rank1_twin(layer, options: dict, seed: int | None):
    """The rank-1 mixture layer of ``layer``'s rank, with its hyper-parameters.

    Args:
        layer: a layer whose exact type is in `RANK1_CONVERTIBLE`.
        options: ``num_components, prior, posterior_std_init, kl_weight``.
        seed: the new layer's seed.

    Returns:
        An unbuilt `tfp_bcnn.layers.Rank1Layer` with the same name, units /
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        activation, use_bias and dtype policy.
    """
    cfg = layer.get_config()
    rank = RANK1_CONVERTIBLE[type(layer)]
    kwargs = dict(options, activation=cfg["activation"], use_bias=cfg["use_bias"],
                  name=layer.name, dtype=layer.dtype_policy, seed=seed)
    if rank == 0:
        return rank1_class(0)(cfg["units"], **kwargs)
    return rank1_class(rank)(cfg["filters"], cfg["kernel_size"], strides=cfg["strides"],
                             padding=cfg["padding"], data_format=cfg["data_format"],
                             dilation_rate=cfg["dilation_rate"], **kwargs)


def init_rank1(old, new) -> None:
    """``W`` = the trained kernel; every component's bias = the trained bias."""
    new.kernel.assign(keras.ops.convert_to_numpy(old.kernel))
    if new.bias is not None:
        bias = keras.ops.convert_to_numpy(old.bias)
        new.bias.assign(np.tile(bias[None], (new.num_components, 1)))


def add_training_tile(model: keras.Model, num_components: int) -> keras.Model:
    """``model`` with a `TileComponents` on each input, its layers reused.

    A Sequential model stays Sequential (the tiling layer first); a
    functional one is rebuilt on new inputs (same names), each tiled once
    and the tiled tensor given to every layer that read the input.

    Returns:
        A `tfp_bcnn._mixture_fit.Rank1Sequential` (for a Sequential ``model``) or
        `Rank1Functional`, with ``model``'s name and layers; its ``compile``
        wraps plain losses for the K tiled copies.
    """
    if isinstance(model, keras.Sequential):
        first = model.inputs[0]
        return Rank1Sequential(
            [keras.Input(batch_shape=first.shape, dtype=first.dtype, name=input_layer_name(first)),
             TileComponents(num_components, name="tile_components"), *model.layers],
            name=model.name)
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=input_layer_name(t)),
        model.input)
    flat = keras.tree.flatten(inputs)
    tiles = {id(t): TileComponents(num_components, name=f"tile_components_{i}")(t)
             for i, t in enumerate(flat)}

    def call(layer, *args, **kwargs):
        args, kwargs = keras.tree.map_structure(
            lambda t: tiles.get(id(t), t) if isinstance(t, keras.KerasTensor) else t,
            (args, kwargs))
        return layer(*args, **kwargs)

    rebuilt = keras.models.clone_model(model, input_tensors=inputs,
                                       clone_function=lambda la: la, call_function=call)
    return Rank1Functional(inputs, rebuilt.output, name=model.name)
