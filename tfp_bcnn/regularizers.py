"""Sparsity-inducing regularizers on the posterior means, and their loss metric.

The L1 norm is the convex, differentiable-almost-everywhere stand-in for the
L0 "number of non-zero weights": its gradient ``l1 * sign(mu)`` pulls every
mean towards 0 at a constant rate, so unimportant weights reach (near) zero
and a magnitude criterion can prune them (Tibshirani 1996). Its group form,
the group lasso (Yuan & Lin 2006; Wen et al. 2016, "Learning Structured
Sparsity in Deep Neural Networks", https://arxiv.org/abs/1608.03665), sums
the L2 norms of groups of weights, here the weights of one output filter or
unit, and drives whole filters to zero together, which is what filter pruning
(``pruning.prune(..., structure="filter")``) then removes.

Both are ordinary serializable Keras regularizers: a Bayesian layer given
``kernel_regularizer=`` adds ``regularizer(kernel_loc * kernel_mask)`` to its
losses at each call (so a pruned weight adds nothing), and a plain Keras
``Conv2D`` / ``Dense`` accepts them on its kernel the same way. The penalty is
part of the Keras loss like any regularizer; `RegularizationLoss` logs it apart
from the likelihood and the KL (``kl`` of ``tfp_bcnn.KLDivergence``)::

    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=["accuracy", tfp_bcnn.KLDivergence(model),
                           tfp_bcnn.RegularizationLoss(model)])

``loss - kl - reg`` is then the NLL term.

Scale. The Keras loss is per example (the batch mean of the NLL) while the
penalty is a sum over weights, so ``l1`` is the strength per example: with
``N`` training examples it corresponds to a Laplace prior of scale
``1 / (l1 * N)`` on the means. Values around ``1e-5``-``1e-4`` (``L1``) and
``1e-4``-``1e-3`` (``GroupL1``) suit LeNet-5 on MNIST-5k.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from . import _validation as check
from ._compat import all_layers
from .layers import BayesianLayer

__all__ = ["GroupL1", "L1", "RegularizationLoss", "has_regularizer", "regularization_loss"]

#: Added under the square root of each group norm of `GroupL1`: the norm of an
#: all-zero (pruned) filter is then exactly 0 with a zero gradient instead of
#: NaN; elsewhere it shifts a norm by at most ``sqrt(_GROUP_EPS) = 1e-6``.
_GROUP_EPS = 1e-12


def _strength(l1) -> float:
    return check.finite_float("l1", l1, minimum=0.0)


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class L1(keras.regularizers.Regularizer):
    """``l1 * sum_i |w_i|``: the lasso on every weight.

    Args:
        l1: strength, a finite number >= 0 (per example: see the module
            docstring).

    Returns (when called on a tensor ``w`` of any shape): a scalar,
    ``l1 * sum(|w|)``. Its gradient is ``l1 * sign(w)`` (0 at 0).

    Raises:
        ValueError: a negative, non-finite or non-numeric ``l1``.

    Example:

    >>> import numpy as np
    >>> float(L1(0.5)(np.array([1.0, -2.0], "float32")))
    1.5
    """

    def __init__(self, l1: float = 1e-4):
        self.l1 = _strength(l1)

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        return ops.cast(self.l1, x.dtype) * ops.sum(ops.abs(x))

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class GroupL1(keras.regularizers.Regularizer):
    """``l1 * sum_f ||w[..., f]||_2``: the group lasso over output filters / units.

    The filter axis is the last one, as in every Keras kernel: a convolution
    kernel is ``(k_1, ..., k_r, in_channels, filters)`` and a Dense kernel
    ``(in_features, units)``, so group ``f`` is ``w[..., f]``, all the weights
    that make output channel ``f``. With ``n_f = ||w[..., f]||_2`` the
    penalty is ``l1 * sum_f n_f`` and its gradient ``l1 * w[..., f] / n_f``: a
    pull of constant length ``l1`` on each filter's vector towards 0, which
    zeroes whole filters. The norm is computed as
    ``sqrt(sum w^2 + 1e-12) - sqrt(1e-12)``, so an all-zero (pruned) filter
    adds exactly 0 with gradient 0 (never NaN); elsewhere the shift is below
    ``1e-6`` per filter.

    Args:
        l1: strength, a finite number >= 0 (per example).

    Returns (when called on a kernel ``w`` of rank >= 1): a scalar. A rank-1
    tensor is one group.

    Raises:
        ValueError: a negative, non-finite or non-numeric ``l1``.

    Example:

    >>> import numpy as np
    >>> w = np.array([[3.0, 0.0], [4.0, 1.0]], "float32")   # (in=2, units=2)
    >>> round(float(GroupL1(1.0)(w)), 4)                     # 5 + 1
    6.0
    """

    def __init__(self, l1: float = 1e-3):
        self.l1 = _strength(l1)

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        groups = ops.reshape(x, (-1, ops.shape(x)[-1]))
        eps = ops.convert_to_tensor(_GROUP_EPS, dtype=x.dtype)
        norms = ops.sqrt(ops.sum(ops.square(groups), axis=0) + eps) - ops.sqrt(eps)
        return ops.cast(self.l1, x.dtype) * ops.sum(norms)

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


def _terms(model):
    """``(regularizer, tensor)`` of every kernel / bias regularizer of the model."""
    for layer in all_layers(model, include_self=True):
        if isinstance(layer, BayesianLayer):
            if layer.kernel_regularizer is not None:
                yield layer.kernel_regularizer, layer.kernel_posterior()[0]
            continue
        for attr, var in (("kernel_regularizer", "kernel"), ("bias_regularizer", "bias")):
            reg, value = getattr(layer, attr, None), getattr(layer, var, None)
            if reg is not None and value is not None:
                yield reg, value


def has_regularizer(model) -> bool:
    """True when a layer of ``model`` has a kernel (or, Keras layers, bias) regularizer."""
    return any(True for _ in _terms(model))


def regularization_loss(model):
    """The kernel-regularization term that the model's layers add to the loss.

    Sums, over every layer of ``model`` (nested models included), the
    Bayesian layers' ``kernel_regularizer(kernel_loc * kernel_mask)`` and
    plain Keras layers' ``kernel_regularizer(kernel)`` /
    ``bias_regularizer(bias)``, from the current weights.

    Returns:
        A scalar tensor (``0.0`` when no layer has a regularizer).
    """
    total = 0.0
    for reg, value in _terms(model):
        total = total + reg(value)
    return ops.convert_to_tensor(total, dtype="float32")


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class RegularizationLoss(keras.metrics.Mean):
    """Logs the regularization term (`regularization_loss`) apart from NLL and KL.

    Pass it to ``compile`` next to ``tfp_bcnn.KLDivergence(model)``; ``fit``
    then shows ``loss``, ``kl`` and ``reg`` side by side (``loss - kl - reg``
    is the NLL). Computed from the model's current weights at each step.
    TensorFlow and PyTorch backends only, as ``KLDivergence`` (JAX's compiled
    step hides the weights from a metric).

    Args:
        model: the model whose regularizers are summed.
        name: name in the logs.

    Raises:
        ValueError: on the JAX backend.
    """

    def __init__(self, model=None, name="reg", dtype=None):
        if model is not None and keras.backend.backend() == "jax":
            raise ValueError(
                "RegularizationLoss reads the model's weights inside the training step, "
                "which the JAX backend does not allow; use "
                "tfp_bcnn.regularizers.regularization_loss(model) after fit. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self._model_ref = model

    def update_state(self, y_true=None, y_pred=None, sample_weight=None):
        if self._model_ref is None:
            return super().update_state(0.0)
        return super().update_state(regularization_loss(self._model_ref))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
