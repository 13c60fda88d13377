"""Monte Carlo with a deterministic prefix: tile the batch at the first stochastic layer.

Monte Carlo prediction runs a batch of ``N`` inputs ``S`` times by tiling it
to ``S * N`` rows (sample-major: row ``s * N + n`` is sample ``s`` of example
``n``). In a partially Bayesian network (only the last layers stochastic)
every layer before the first stochastic one computes the same value for the
``S`` copies of an example; `tile_after_prefix` rebuilds the model's graph so
that those layers run once on the ``N`` rows and the batch is tiled where it
first meets a stochastic layer (or a tensor that is already tiled, e.g. the
other input of a residual ``Add``). The function is unchanged: a
deterministic layer in inference mode treats each row on its own, so
computing it once and copying the result gives exactly the rows that tiling
the input would give.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from ._compat import is_graph_model

__all__ = ["Tile", "tile_after_prefix"]


class Tile(keras.layers.Layer):
    """``(N, ...) -> (reps * N, ...)``: the batch repeated ``reps`` times, sample-major."""

    def __init__(self, reps: int, **kwargs):
        super().__init__(**kwargs)
        self.reps = int(reps)
        # copies keep the dtype they receive: under a mixed policy an autocast
        # to float16 would put a float16 CONCATENATION (a Flex op) into the
        # float32 export graphs
        self.autocast = False

    def call(self, x):
        # a concatenation, not TILE: LiteRT's XNNPack delegate fails to resize a
        # TILE inside the graph when the batch changes (measured on LeNet + MC dropout)
        return x if self.reps == 1 else keras.ops.concatenate([x] * self.reps, axis=0)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return (None if batch is None else batch * self.reps, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "reps": self.reps}


def _is_symbolic(x) -> bool:
    return isinstance(x, keras.KerasTensor)


def tile_after_prefix(model: keras.Model, reps: int,
                      is_stochastic: Callable[[keras.layers.Layer], bool],
                      layer_kwargs: Callable[[keras.layers.Layer], dict] | None = None,
                      ) -> keras.Model:
    """A functional model ``(N, ...) -> (reps * N, ...)`` that tiles as late as it can.

    The layers of ``model`` are reused (shared weights and random state),
    called in graph order; a layer's symbolic inputs are tiled (one `Tile`
    per tensor, reused by every consumer) when ``is_stochastic(layer)`` or
    when another of its inputs is already tiled, and its outputs are then
    tiled. If no layer is stochastic, the output is tiled at the end. A
    nested model is one layer here: it gets tiled inputs if it holds a
    stochastic layer.

    Args:
        model: a built Sequential or functional model with one input and
            one output.
        reps: the number of copies ``S`` (>= 1).
        is_stochastic: whether a layer draws noise (needs ``S`` copies).
        layer_kwargs: extra call arguments of a layer that receives tiled
            inputs (e.g. ``{"sample_groups": S}`` for a Flipout layer), kept
            in the rebuilt graph; None: none.

    Returns:
        A functional ``keras.Model`` whose output equals ``model(tile(x,
        S))``: the same rows, sample-major; its prefix runs on ``N`` rows.

    Raises:
        ValueError: ``model`` is not a Sequential or functional model, or has
            several inputs or outputs.
    """
    if not is_graph_model(model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Tiling after the deterministic prefix needs a Sequential or functional model "
            f"with one input and one output. Received: model={model.name!r} "
            f"({type(model).__name__})"
        )
    tiled = {}  # id(symbolic tensor) -> (tensor, its tiled version); kept alive

    def tile(t):
        if id(t) not in tiled:
            tiled[id(t)] = (t, Tile(reps, name=f"tile_{len(tiled)}")(t))
        return tiled[id(t)][1]

    made = set()  # ids of tensors that already hold reps * N rows

    def call(layer, *args, **kwargs):
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if _is_symbolic(t)]
        if not (is_stochastic(layer) or any(id(t) in made for t in inputs)):
            return layer(*args, **kwargs)
        args, kwargs = keras.tree.map_structure(
            lambda t: tile(t) if _is_symbolic(t) and id(t) not in made else t, (args, kwargs)
        )
        out = layer(*args, **kwargs, **(layer_kwargs(layer) if layer_kwargs else {}))
        for t in keras.tree.flatten(out):
            made.add(id(t))
            tiled[id(t)] = (t, t)
        return out

    x = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype,
                    name="images")
    if isinstance(model, keras.Sequential):
        y = x
        for layer in model.layers:
            y = call(layer, y)
    else:
        y = keras.models.clone_model(model, input_tensors=x, clone_function=lambda la: la,
                                     call_function=call).output
    if id(y) not in made:
        y = tile(y)
    return keras.Model(x, y, name=f"{model.name}_tiled_after_prefix")
