"""Compiled forward runners of `tfp_bcnn.predict`: ``chunk -> samples``.

One runner per (model, backend, samples, from_logits), cached weakly per
model (`_forward`): a ``tf.function`` on TensorFlow (tiling after the
deterministic prefix where that pays, `tfp_bcnn._tiling`), a ``jax.jit`` of
``stateless_call`` on JAX, an eager call elsewhere.
"""

from __future__ import annotations

import copy
import threading
import weakref

import keras
import numpy as np
from keras import ops

from . import _mixture
from ._compat import all_layers
from .kl import bayesian_layers
from .layers import BayesianLayer, MCDropout, Rank1Layer


def _is_stochastic(model) -> bool:
    """Whether two forward passes can differ (Bayesian or ``MCDropout`` layers)."""
    if any(True for _ in bayesian_layers(model)) or _mixture.num_components(model):
        return True
    return any(
        isinstance(layer, MCDropout) and layer.rate > 0
        for layer in all_layers(model)
    )


def _forward_body(call, x, reps: int, from_logits: bool, reps_out: int | None = None):
    """Tile ``x`` (b, ...) ``reps`` times, run ``call``, return (reps_out, b, ...).

    ``reps_out`` (default ``reps``) is the number of samples ``call`` returns:
    a model that tiles inside (`_tiled_after_prefix`) gets ``reps = 1``.
    """
    if reps > 1:
        x = ops.tile(x, (reps,) + (1,) * (len(x.shape) - 1))
    reps = reps if reps_out is None else reps_out
    y = call(x)
    if not hasattr(y, "shape") or isinstance(y, (list, tuple, dict)):
        raise ValueError(
            f"predict() needs a model with one output tensor. Received: outputs of type {type(y)}"
        )
    y = ops.reshape(y, (reps, -1) + tuple(y.shape[1:]))
    if from_logits:
        y = ops.softmax(y, axis=-1)
    return y


class _Forward:
    """``chunk (b, ...) -> samples (reps, b, ...)`` as NumPy; ``finish()`` at the end."""

    def __init__(self, model, reps, from_logits):
        # Cached per model (weakly): nothing here may hold the model strongly.
        self._ref = weakref.ref(model)
        self._fn = self._compile(self._ref, reps, from_logits)

    def _compile(self, ref, reps, from_logits):  # eager fallback (e.g. torch)
        def fn(x):
            return _forward_body(lambda t: ref()(t, training=False), x, reps, from_logits)

        return fn

    def start(self):
        return self

    def __call__(self, x):
        if keras.backend.backend() == "torch":
            import torch

            with torch.no_grad():
                return ops.convert_to_numpy(self._fn(x))
        return ops.convert_to_numpy(self._fn(x))

    def finish(self):
        pass


class _TFForward(_Forward):
    def _compile(self, ref, reps, from_logits):
        import tensorflow as tf

        late = _tiled_after_prefix(ref(), reps)
        if late is not None:  # the model tiles inside, after its deterministic prefix

            @tf.function(reduce_retracing=True)
            def fn(x):
                return _forward_body(lambda t: late(t, training=False), x, 1, from_logits,
                                     reps_out=reps)
        else:

            @tf.function(reduce_retracing=True)
            def fn(x):
                return _forward_body(lambda t: ref()(t, training=False), x, reps, from_logits)

        return lambda x: fn(tf.convert_to_tensor(x))


def _stochastic_layer(layer) -> bool:
    """Whether ``layer`` is, or holds, a layer that draws noise when called."""
    return isinstance(layer, (BayesianLayer, Rank1Layer)) or (
        isinstance(layer, MCDropout) and layer.rate > 0
    ) or (isinstance(layer, keras.Model) and _is_stochastic(layer))


def _tiled_after_prefix(model, reps: int):
    """``model`` rebuilt to tile after its deterministic prefix, or None where it does not pay.

    None when ``reps == 1``, when the model is not a one-input one-output
    graph model, or when its first layer already samples (nothing to save).
    See `tfp_bcnn._tiling.tile_after_prefix`.
    """
    from ._compat import is_graph_model
    from ._tiling import tile_after_prefix

    if reps == 1 or not is_graph_model(model) or not model.built:
        return None
    try:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            return None
    except (AttributeError, ValueError):
        return None
    body = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if not body or _stochastic_layer(body[0]):
        return None
    return tile_after_prefix(model, reps, _stochastic_layer)


class _JAXForward(_Forward):
    """``jax.jit`` of ``stateless_call``; the RNG state is threaded and written back."""

    def _compile(self, ref, reps, from_logits):
        import jax

        def pure(trainable, non_trainable, x):
            state = {}

            def call(t):
                y, state["nt"] = ref().stateless_call(trainable, non_trainable, t, training=False)
                return y

            return _forward_body(call, x, reps, from_logits), state["nt"]

        return jax.jit(pure)

    def start(self):
        # A copy per predict() call: concurrent calls must not share the state.
        run = copy.copy(self)
        model = self._ref()
        run._trainable = [v.value for v in model.trainable_variables]
        run._non_trainable = [v.value for v in model.non_trainable_variables]
        return run

    def __call__(self, x):
        y, self._non_trainable = self._fn(self._trainable, self._non_trainable, x)
        return np.asarray(y)

    def finish(self):
        for variable, value in zip(self._ref().non_trainable_variables, self._non_trainable):
            variable.assign(value)
        self._trainable = self._non_trainable = None


_FORWARD_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FORWARD_CACHE_LOCK = threading.Lock()  # predict() may run in several threads


def _forward(model, reps: int, from_logits: bool) -> _Forward:
    backend = keras.backend.backend()
    cls = {"tensorflow": _TFForward, "jax": _JAXForward}.get(backend, _Forward)
    try:
        with _FORWARD_CACHE_LOCK:
            per_model = _FORWARD_CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        per_model = {}
    key = (backend, reps, from_logits)
    with _FORWARD_CACHE_LOCK:
        if key not in per_model:
            per_model[key] = cls(model, reps, from_logits)
        return per_model[key]
