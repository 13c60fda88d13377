"""KL weighting: find the Bayesian layers, set their KL weight, log the KL.

The Keras loss of a model of Bayesian layers is the per-example negative ELBO::

    loss = NLL(batch mean) + sum_layers kl_weight * KL(q || p)

with ``kl_weight = beta / num_train_examples``: the KL of the whole data set's
posterior is spread over the ``N`` examples, so the batch mean of the NLL and
the KL are on the same scale. ``beta`` is 1 for the ELBO and is annealed by
``KLAnnealing``.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
from keras import ops

from . import _validation as check
from ._compat import all_layers
from .layers import BayesianLayer, Rank1Layer

__all__ = ["bayesian_layers", "variational_layers", "set_kl_weight", "get_kl_weight",
           "kl_divergence", "KLDivergence"]


def bayesian_layers(model) -> Iterator[BayesianLayer]:
    """Every ``BayesianLayer`` of a model, nested models included, in order."""
    seen = set()
    for layer in all_layers(model, include_self=True):
        if isinstance(layer, BayesianLayer) and id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def variational_layers(model) -> Iterator[BayesianLayer | Rank1Layer]:
    """Every layer that adds a weighted KL: ``BayesianLayer`` and rank-1 mixture layers.

    Both have ``kl_weight`` (a non-trainable scalar) and ``kl_divergence()``.
    """
    seen = set()
    for layer in all_layers(model, include_self=True):
        if isinstance(layer, (BayesianLayer, Rank1Layer)) and id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def set_kl_weight(model, value: float) -> None:
    """Set ``kl_weight`` of every Bayesian layer of ``model`` to ``value`` (>= 0).

    Raises:
        ValueError: a negative or non-finite value, or a model with no
            Bayesian layer.
    """
    v = check.finite_float("value", value, minimum=0.0)
    layers = list(variational_layers(model))
    if not layers:
        raise ValueError(f"The model has no Bayesian layer. Received: model={model.name!r}")
    for layer in layers:
        layer.kl_weight.assign(v)


def get_kl_weight(model) -> float:
    """The ``kl_weight`` of the first Bayesian layer (they are usually all equal)."""
    for layer in variational_layers(model):
        return float(ops.convert_to_numpy(layer.kl_weight))
    raise ValueError(f"The model has no Bayesian layer. Received: model={model.name!r}")


def kl_divergence(model, scaled: bool = True):
    """Sum over Bayesian layers of KL(q || p), times ``kl_weight`` when ``scaled``.

    Computed from the current weights (priors with no closed form draw one
    Monte Carlo sample), i.e. the KL term that the next training step adds.
    """
    total = 0.0
    for layer in variational_layers(model):
        kl = layer.kl_divergence()
        total = total + (ops.cast(layer.kl_weight, kl.dtype) * kl if scaled else kl)
    return total


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class KLDivergence(keras.metrics.Mean):
    """Logs the KL term (``sum kl_weight * KL``) apart from the likelihood.

    Pass it to ``compile`` so that ``fit`` shows ``loss`` (the negative ELBO),
    the likelihood metrics and ``kl`` side by side::

        model.compile("adam", "sparse_categorical_crossentropy",
                      metrics=["accuracy", tfp_bcnn.KLDivergence(model)])

    ``loss - kl`` is the NLL term. The value is computed from the model's
    current weights at each step. TensorFlow and PyTorch backends only: JAX's
    compiled step passes the weights as arguments that a metric cannot see,
    so there ``tfp_bcnn.kl_divergence(model)`` after ``fit`` gives the value.

    A metric restored from a file (``keras.saving.load_model`` of a compiled
    model) has no model: a config cannot hold one. It then refuses to log
    rather than log 0; compile the loaded model again with
    ``tfp_bcnn.KLDivergence(model)``.

    Raises:
        ValueError: on the JAX backend; in ``update_state`` (first ``fit``,
            ``evaluate``) when the metric has no model.

    Args:
        model: the model whose Bayesian layers are summed.
        name: name in the logs.
    """

    def __init__(self, model=None, name="kl", dtype=None):
        if model is not None and keras.backend.backend() == "jax":
            raise ValueError(
                "KLDivergence reads the model's weights inside the training step, "
                "which the JAX backend does not allow; use tfp_bcnn.kl_divergence(model) "
                f"after fit. Received: backend={keras.backend.backend()!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self._model_ref = model

    def update_state(self, y_true=None, y_pred=None, sample_weight=None):
        if self._model_ref is None:
            raise ValueError(
                f"The KLDivergence metric {self.name!r} has no model to read the KL from "
                "(a metric restored by keras.saving.load_model loses it: a config cannot "
                "hold a model). Compile the model again with "
                "metrics=[tfp_bcnn.KLDivergence(model)]. Received: model=None"
            )
        return super().update_state(kl_divergence(self._model_ref))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
