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

__all__ = ["all_layers", "clone_model", "input_layer_name", "is_graph_model"]


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
