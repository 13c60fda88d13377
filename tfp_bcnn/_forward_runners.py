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


def _flipout_layers(model) -> list:
    return [la for la in bayesian_layers(model) if la.estimator == "flipout"]


def _rebuildable(model) -> bool:
    """A built graph model with one input and one output (`tfp_bcnn._tiling`)."""
    from ._compat import is_graph_model

    if not is_graph_model(model) or not model.built:
        return False
    try:
        return len(model.inputs) == 1 and len(model.outputs) == 1
    except (AttributeError, ValueError):
        return False


def groups_flipout(model) -> bool:
    """Whether a tiled forward call of ``model`` gives independent Flipout samples.

    A Flipout layer draws one kernel noise ``eps`` per call: the ``S`` tiled
    copies of an example would share it (only Flipout's random signs would
    differ). The compiled runners rebuild the graph (`_tiled_after_prefix`)
    so that every Flipout layer is called with ``sample_groups=S`` and draws
    one ``eps`` per copy. That needs a graph model whose Flipout layers are
    all top-level layers (not inside a nested model) on a backend with a
    compiled runner (TensorFlow, JAX); True as well when there is no Flipout
    layer.
    """
    flipout = _flipout_layers(model)
    if not flipout:
        return True
    if keras.backend.backend() not in ("tensorflow", "jax") or not _rebuildable(model):
        return False
    top = {id(la) for la in model.layers}
    return all(id(la) in top for la in flipout)


def _tiled_after_prefix(model, reps: int):
    """``model`` rebuilt to tile after its deterministic prefix, or None where it does not pay.

    Every Flipout layer of the rebuilt graph is called with
    ``sample_groups=reps`` (one kernel noise per tiled copy, see
    `groups_flipout`); a model with Flipout layers is rebuilt even when its
    first layer samples. Otherwise None when ``reps == 1``, when the model is
    not a one-input one-output graph model, or when its first layer already
    samples (nothing to save). See `tfp_bcnn._tiling.tile_after_prefix`.
    """
    from ._tiling import tile_after_prefix

    if reps == 1 or not _rebuildable(model):
        return None
    flipout = {id(la) for la in _flipout_layers(model)}
    if flipout:
        if not groups_flipout(model):
            return None
        return tile_after_prefix(
            model, reps, _stochastic_layer,
            lambda la: {"sample_groups": reps} if id(la) in flipout else {})
    body = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if not body or _stochastic_layer(body[0]):
        return None
    return tile_after_prefix(model, reps, _stochastic_layer)


class _JAXForward(_Forward):
    """``jax.jit`` of ``stateless_call``; the RNG state is threaded and written back."""

    def _compile(self, ref, reps, from_logits):
        import jax

        # the rebuilt graph (Flipout groups, late tiling) shares the model's layers
        # and variables; it holds no reference to the model itself
        self._late = _tiled_after_prefix(ref(), reps)
        late = self._late
        tiles, model = (1, lambda: late) if late is not None else (reps, ref)

        def pure(trainable, non_trainable, x):
            state = {}

            def call(t):
                y, state["nt"] = model().stateless_call(trainable, non_trainable, t,
                                                        training=False)
                return y

            return _forward_body(call, x, tiles, from_logits, reps_out=reps), state["nt"]

        return jax.jit(pure)

    def _model(self):
        return self._late if self._late is not None else self._ref()

    def start(self):
        # A copy per predict() call: concurrent calls must not share the state.
        run = copy.copy(self)
        model = self._model()
        run._trainable = [v.value for v in model.trainable_variables]
        run._non_trainable = [v.value for v in model.non_trainable_variables]
        return run

    def __call__(self, x):
        y, self._non_trainable = self._fn(self._trainable, self._non_trainable, x)
        return np.asarray(y)

    def finish(self):
        for variable, value in zip(self._model().non_trainable_variables, self._non_trainable):
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
