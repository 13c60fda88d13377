"""Training a rank-1 mixture model with the batch tiled over its components.

`tfp_bcnn.layers.TileComponents` makes the ``B`` examples of a training batch
``K * B`` rows (row ``k * B + n`` is example ``n`` in component ``k``). The
labels stay ``B`` rows, so the loss and the metrics see ``K`` predictions per
label:

* `MixtureLoss` wraps a per-example loss ``l`` and returns, per example,
  the average over the copies, ``(1 / K) sum_k l(y_n, f_k(x_n))``; Keras then
  weights and averages it over the batch as usual, so with the KL the loss is
  ``mean_n (1 / K) sum_k NLL_k(n) + kl_weight * KL``: the K-sample estimate of
  the expected log-likelihood under the mixture posterior (one sample per
  component, each component weighted 1 / K), the KL counted once. This is the
  objective of Dusenberry et al. 2020 (https://arxiv.org/abs/2005.07186).
* `MixtureMetric` wraps a metric and updates it with the mixture's predictive
  mean ``(1 / K) sum_k f_k(x_n)`` (probabilities: the equal-weight mixture).

``K`` is read from the shapes (``rows of y_pred / rows of y_true``), so both
also take ``K = 1``: at evaluation (``model.evaluate``, ``validation_data``)
the tiling layer is the identity and the wrappers are the wrapped loss and
metric.

The builders (``posterior="rank1"``) and ``to_bayesian(posterior="rank1")``
return a `Rank1Sequential` / `Rank1Functional`: a Keras Sequential /
functional model whose ``compile`` wraps a plain loss and plain metrics in
these two (`mixture_loss`, `mixture_metrics`), so ``model.compile(loss=
"sparse_categorical_crossentropy", metrics=["accuracy"])`` trains the same
objective as ``models.compile_bayesian`` instead of failing with a shape error
(``K * B`` predictions for ``B`` labels). A hand-built model with a
`TileComponents` input (a plain ``keras.Sequential``) must be compiled with
``compile_bayesian`` or an explicit `MixtureLoss`.
"""

from __future__ import annotations

import keras
from keras import ops

from ._compat import functional_class

__all__ = ["MixtureLoss", "MixtureMetric", "Rank1Functional", "Rank1Sequential",
           "mixture_loss", "mixture_metrics", "split_copies"]


def split_copies(y_true, y_pred):
    """``y_pred`` ``(K * B, ...)`` as ``(K, B, ...)``, with ``B`` the rows of ``y_true``.

    Args:
        y_true: labels, ``(B, ...)``.
        y_pred: predictions, ``(K * B, ...)`` (row ``k * B + n``: copy ``k`` of
            example ``n``), K >= 1.

    Returns:
        ``(K, B, ...)`` tensor.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    batch = ops.shape(y_true)[0]
    return ops.reshape(y_pred, (-1, batch, *y_pred.shape[1:]))


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class MixtureLoss(keras.losses.Loss):
    """A per-example loss averaged over the K component copies of each example.

    ``loss_n = (1 / K) sum_k l(y_n, yhat_{k B + n})`` for ``n < B``, ``K =
    rows(y_pred) / rows(y_true)`` (module docstring); then Keras' reduction
    and sample weights ``(B,)``, as for the wrapped loss.

    Args:
        loss: a Keras loss name, function or `keras.losses.Loss` (default
            ``"sparse_categorical_crossentropy"``: integer labels, softmax
            outputs).
        name, reduction, dtype: as `keras.losses.Loss`.

    Raises:
        ValueError: ``loss`` is not a Keras loss.
    """

    def __init__(self, loss="sparse_categorical_crossentropy", name="mixture_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        try:
            self.loss = keras.losses.get(loss)
        except ValueError:
            self.loss = None
        if self.loss is None:
            raise ValueError("`loss` must be a Keras loss (name, function or Loss). "
                             f"Received: loss={loss!r}")

    def _per_example(self, y_true, y_pred):
        if isinstance(self.loss, keras.losses.Loss):
            return self.loss.call(y_true, y_pred)
        return self.loss(y_true, y_pred)

    def call(self, y_true, y_pred):
        copies = split_copies(y_true, y_pred)
        k = ops.shape(copies)[0]
        labels = ops.tile(y_true, (k,) + (1,) * (len(y_true.shape) - 1))
        flat = ops.reshape(copies, (-1, *copies.shape[2:]))
        values = self._per_example(labels, flat)
        values = ops.reshape(values, (k, -1, *values.shape[1:]))
        return ops.mean(values, axis=0)

    def get_config(self):
        return {**super().get_config(), "loss": keras.losses.serialize(self.loss)}


def _resolve_metric(metric):
    """A metric object; ``"accuracy"`` / ``"acc"`` is sparse categorical accuracy."""
    if metric in ("accuracy", "acc"):
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    metric = keras.metrics.get(metric)
    if not isinstance(metric, keras.metrics.Metric):
        metric = keras.metrics.MeanMetricWrapper(metric, name=getattr(metric, "__name__", None))
    return metric


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class MixtureMetric(keras.metrics.Metric):
    """A metric of the mixture's predictive mean over the K component copies.

    ``update_state(y_true (B, ...), y_pred (K * B, ...))`` updates the wrapped
    metric with ``(1 / K) sum_k yhat_{k B + n}`` (module docstring); its
    result and name are those of the wrapped metric.

    Args:
        metric: a Keras metric name, function or `keras.metrics.Metric`
            (``"accuracy"``: ``SparseCategoricalAccuracy``, integer labels).
        name: default: the wrapped metric's name.
        dtype: as `keras.metrics.Metric`.
    """

    def __init__(self, metric="accuracy", name=None, dtype=None):
        inner = _resolve_metric(metric)
        super().__init__(name=name or inner.name, dtype=dtype)
        self.metric = inner

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        mean = ops.mean(split_copies(y_true, y_pred), axis=0)
        return self.metric.update_state(y_true, mean, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    @property
    def variables(self):
        return self.metric.variables

    def get_config(self):
        return {"metric": keras.metrics.serialize(self.metric), "name": self.name,
                "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["metric"] = keras.metrics.deserialize(config["metric"])
        return cls(**config)


def mixture_loss(loss):
    """``loss`` wrapped in `MixtureLoss` (each entry of a list or dict); None and
    `MixtureLoss` objects unchanged.

    Args:
        loss: what ``keras.Model.compile`` takes as ``loss``.

    Returns:
        The same structure with every loss a `MixtureLoss`.

    Raises:
        ValueError: an entry that is not a Keras loss (quoted: ``Received: loss=...``).
    """
    if loss is None or isinstance(loss, MixtureLoss):
        return loss
    if isinstance(loss, dict):
        return {key: mixture_loss(value) for key, value in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [mixture_loss(value) for value in loss]
    return MixtureLoss(loss)


def _reads_model(metric) -> bool:
    """True for the metrics that read the model's KL / penalty, not the predictions."""
    from .kl import KLDivergence
    from .regularizers import RegularizationLoss

    return isinstance(metric, (MixtureMetric, KLDivergence, RegularizationLoss))


def mixture_metrics(metrics):
    """Every metric of ``metrics`` (a metric, list or dict of them) as a `MixtureMetric`.

    Metrics already wrapped, and `tfp_bcnn.KLDivergence` /
    `tfp_bcnn.RegularizationLoss` (they ignore the predictions), are kept.

    Args:
        metrics: what ``keras.Model.compile`` takes as ``metrics``, or None.

    Returns:
        The same structure (a list for a single metric).
    """
    if metrics is None:
        return None
    if isinstance(metrics, dict):
        return {key: mixture_metrics(value) for key, value in metrics.items()}
    if not isinstance(metrics, (list, tuple)):
        metrics = [metrics]
    return [mixture_metrics(m) if isinstance(m, (list, tuple)) else
            m if m is None or _reads_model(m) else MixtureMetric(m) for m in metrics]


class _MixtureCompile:
    """``compile`` with the loss and metrics wrapped for K tiled copies (module docstring)."""

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        """``keras.Model.compile`` with `mixture_loss` (loss) and `mixture_metrics`
        (metrics, weighted_metrics) applied first; the other arguments as Keras'."""
        super().compile(optimizer=optimizer, loss=mixture_loss(loss),
                        loss_weights=loss_weights, metrics=mixture_metrics(metrics),
                        weighted_metrics=mixture_metrics(weighted_metrics), **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded model (Keras skips models that override ``compile``)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class Rank1Sequential(_MixtureCompile, keras.Sequential):
    """A ``keras.Sequential`` rank-1 mixture model whose ``compile`` wraps plain losses.

    Everything else is ``keras.Sequential``'s (config, saving, ``fit``). See
    the module docstring.
    """


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class Rank1Functional(_MixtureCompile, functional_class()):
    """A functional (``keras.Model(inputs, outputs)``) rank-1 mixture model whose
    ``compile`` wraps plain losses; built as ``Rank1Functional(inputs, outputs, name=...)``.
    """
