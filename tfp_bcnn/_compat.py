"""The private Keras APIs the package relies on, in one place.

Keras 3 has no public way to list every layer of a model recursively, to
tell a graph (Sequential / functional) model from a subclassed one, to name
the layer behind a symbolic tensor, or to share one clone cache across nested
``clone_model`` calls. Each use below is one line over a private name; when a
Keras upgrade moves one, this is the only file to change, and
``tests/test_compat.py`` fails first, naming the API that broke (one test per
API; it also checks ``keras.src.testing``, which the tests use to run Keras'
own layer harness). Checked on Keras 3.15.
"""

from __future__ import annotations

import keras

__all__ = ["TORCH_SWAPPED_OPTIMIZERS", "all_layers", "calls_in_model", "clone_model",
           "conv_transpose_output_shape", "functional_class", "input_layer_name",
           "is_graph_model", "register_portable_optimizers"]

#: The optimizers that Keras' torch backend replaces by classes of its own
#: (``TorchOptimizer.__new__`` returns ``keras.src.backend.torch.optimizers.
#: torch_adam.Adam`` for ``keras.optimizers.Adam``, ...).
TORCH_SWAPPED_OPTIMIZERS = ("Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "Lion", "Nadam",
                            "RMSprop", "SGD")


def all_layers(model, *, include_self: bool = False) -> list:
    """Every layer of ``model``, nested models' layers included, in model order.

    Uses ``Layer._flatten_layers(include_self, recursive=True)``.
    """
    return list(model._flatten_layers(include_self=include_self, recursive=True))


def is_graph_model(model) -> bool:
    """True for ``keras.Sequential`` and functional models (a graph to rebuild).

    Uses ``keras.src.models.functional.Functional`` (``keras.Model(inputs,
    outputs)`` returns an instance of it; it is not exported publicly).
    """
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def functional_class() -> type:
    """``keras.src.models.functional.Functional``, the class of ``keras.Model(inputs, outputs)``.

    For a subclass that keeps the functional constructor and config (Keras
    revives a config as functional only for classes with its ``__init__``).
    """
    from keras.src.models.functional import Functional

    return Functional


def calls_in_model(model, layer) -> int:
    """How often ``layer`` is called in the graph of the functional ``model``.

    Calls of the same layer in other graphs (another model sharing it) do not
    count. Uses ``Function._nodes``, the set of node keys
    ``f"{id(layer)}_ib-{i}"`` of the model's graph, and ``_inbound_nodes``.
    """
    return sum(f"{id(layer)}_ib-{i}" in model._nodes
               for i in range(len(layer._inbound_nodes)))


def input_layer_name(tensor) -> str:
    """Name of the layer that made the symbolic ``tensor`` (``_keras_history``)."""
    return tensor._keras_history.operation.name


def clone_model(model, *, input_tensors, clone_function, cache: dict):
    """``keras.models.clone_model`` with the private ``cache`` argument.

    One ``cache`` dict across nested calls keeps a layer shared between
    nested models shared in the clone.
    """
    return keras.models.clone_model(
        model, input_tensors=input_tensors, clone_function=clone_function, cache=cache
    )


def conv_transpose_output_shape(input_shape, kernel_size, filters, *, strides, padding,
                                output_padding, data_format, dilation_rate):
    """Output shape of a transposed convolution, Keras' own formula.

    Uses ``keras.src.backend.common.backend_utils.compute_conv_transpose_output_shape``
    (what ``keras.layers.Conv2DTranspose.compute_output_shape`` calls).
    """
    from keras.src.backend.common.backend_utils import compute_conv_transpose_output_shape

    return compute_conv_transpose_output_shape(
        input_shape, kernel_size, filters, strides=strides, padding=padding,
        output_padding=output_padding, data_format=data_format, dilation_rate=dilation_rate,
    )


def register_portable_optimizers() -> None:
    """Let a ``.keras`` file compiled on the torch backend load on any backend.

    A model compiled on torch saves its optimizer with the module of the torch
    class (``"module": "keras.src.backend.torch.optimizers.torch_adam"``).
    Loading it elsewhere imports Keras' torch backend: without torch that
    fails, and in a TensorFlow process with torch 2.14 installed the import
    (torch._dynamo, triton) crashed the interpreter (segmentation fault).
    Keras looks a config's ``registered_name`` up among the global custom
    objects before it imports the module, so registering the public
    ``keras.optimizers`` classes under their plain names makes every backend
    build its own class of the same optimizer (on torch, ``keras.optimizers.Adam``
    still becomes the torch class). Saving is unchanged: that uses the names
    of ``register_keras_serializable``, not this table. Names the user
    registered already are left alone.
    """
    objects = keras.saving.get_custom_objects()
    for name in TORCH_SWAPPED_OPTIMIZERS:
        objects.setdefault(name, getattr(keras.optimizers, name))
