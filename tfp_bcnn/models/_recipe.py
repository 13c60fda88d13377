"""The training recipe of the model zoo: `RECIPE`, `recipe_callbacks`, `compile_bayesian`.

``tfp_bcnn.models`` re-exports every public name; `MOBILENET_RECIPE` is
``tfp_bcnn._mobilenet``'s, re-exported here next to the recipe it departs from.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping

import keras

from .. import _validation as check
from .. import kl as kl_lib
from .. import regularizers
from .._annealing import KLAnnealing
from .._mixture_fit import MixtureLoss, MixtureMetric
from .._mobilenet import MOBILENET_RECIPE
from ..layers import GaussianHead, Rank1Layer, gaussian_nll

__all__ = ["MOBILENET_RECIPE", "RECIPE", "compile_bayesian", "loss_for", "recipe_callbacks"]

#: The training recipe that goes with the builders' defaults, chosen by the
#: screening recorded in BENCHMARKS.md ("Tuning of the Bayesian recipe"):
#: Adam with ``learning_rate``, ``epochs`` passes in batches of
#: ``batch_size``; ``kl_beta`` multiplies the KL term (1: the ELBO; below 1: a
#: tempered, "cold" posterior, see `recipe_callbacks`) after a linear warm-up
#: over ``kl_warmup_epochs`` (0: none). The command line, the main job and the
#: benchmarks train with exactly this.
RECIPE: Mapping = types.MappingProxyType(
    {"learning_rate": 2e-3, "epochs": 20, "batch_size": 64, "kl_beta": 1.0,
     "kl_warmup_epochs": 0}
)


def recipe_callbacks(recipe: Mapping = RECIPE) -> list:
    """The Keras callbacks that train a Bayesian model with a recipe's KL weighting.

    With ``beta = recipe["kl_beta"]`` and ``k = recipe["kl_warmup_epochs"]``,
    every Bayesian layer's KL weight is ``beta_t / N`` (``N`` the training-set
    size the model was built with): ``beta_t = beta`` for ``k = 0``, else the
    linear warm-up ``beta * min(1, (epoch + 1) / k)``. ``beta = 1`` is the
    evidence lower bound; ``beta < 1`` is a tempered posterior
    ``q(w) ~ p(D | w) p(w)^beta`` (the prior counted as ``beta`` of itself),
    which keeps the posterior from being pushed wider than the data allow;
    Wenzel et al. 2020, https://arxiv.org/abs/2002.02405, discuss why
    ``beta < 1`` often predicts better.

    Args:
        recipe: a mapping like `RECIPE` (missing keys: ``kl_beta`` 1,
            ``kl_warmup_epochs`` 0).

    Returns:
        ``[tfp_bcnn.KLAnnealing(...)]``, or ``[]`` for the plain ELBO without
        warm-up.
    """
    beta = float(recipe.get("kl_beta", 1.0))
    warmup = int(recipe.get("kl_warmup_epochs", 0) or 0)
    if warmup > 0:
        return [KLAnnealing("linear", warmup_epochs=warmup, beta=beta)]
    return [KLAnnealing("constant", beta=beta)] if beta != 1.0 else []


def compile_bayesian(
    model: keras.Model,
    learning_rate: float = RECIPE["learning_rate"],
    *,
    metrics: Iterable | None = None,
    **compile_kwargs,
) -> keras.Model:
    """Compile a classifier with the recommended settings; returns the same model.

    Adam with ``learning_rate``, the loss of the model's head (`loss_for`):
    ``sparse_categorical_crossentropy`` on softmax outputs (integer labels;
    per pixel for a segmentation model, labels ``(batch, H, W)``) or
    ``tfp_bcnn.gaussian_nll`` when the output layer is a
    `tfp_bcnn.layers.GaussianHead` (per pixel on a dense model), the given
    metrics and, when the model
    has Bayesian layers, ``tfp_bcnn.KLDivergence(model)`` logged as ``kl``
    (and, when a layer has a kernel regularizer,
    ``tfp_bcnn.RegularizationLoss(model)`` logged as ``reg``)
    (``loss - kl`` is the likelihood term; not on the JAX backend, where
    ``tfp_bcnn.kl_divergence(model)`` gives it after ``fit``).

    A model with rank-1 mixture layers (``posterior="rank1"``) gets the
    loss wrapped in `MixtureLoss` and each metric in `MixtureMetric`: its
    `tfp_bcnn.layers.TileComponents` input tiles every training batch K times,
    and the wrappers average the likelihood over the K copies and score the
    mixture's mean (the identity when nothing is tiled, as at evaluation).

    Args:
        model: a classifier ending in a softmax (e.g. from `lenet5` or
            `unet`) or a regression model ending in a GaussianHead (e.g. from
            `super_resolution`).
        learning_rate: Adam's learning rate (default: ``RECIPE["learning_rate"]``).
        metrics: metrics before ``kl`` (keyword-only); None: ``("accuracy",)``
            for a softmax head, none for a Gaussian head.
        **compile_kwargs: passed to ``model.compile`` (e.g. ``jit_compile``).

    Returns:
        ``model``, compiled.
    """
    loss = loss_for(model)
    if metrics is None:
        metrics = ("accuracy",) if loss == "sparse_categorical_crossentropy" else ()
    metrics = list(metrics)
    if _has_rank1(model):  # K predictions per label in training: average them
        loss = MixtureLoss(loss)
        metrics = [MixtureMetric(m) for m in metrics]
    # The kl metric reads the weights inside the step, which JAX's compiled step hides.
    if any(True for _ in kl_lib.variational_layers(model)) and keras.backend.backend() != "jax":
        metrics.append(kl_lib.KLDivergence(model))
        if regularizers.has_regularizer(model):
            metrics.append(regularizers.RegularizationLoss(model))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=metrics,
        **compile_kwargs,
    )
    return model


def _has_rank1(model) -> bool:
    return any(isinstance(layer, Rank1Layer) for layer in kl_lib.variational_layers(model))


def loss_for(model: keras.Model):
    """The training loss of a model's head: Gaussian NLL or sparse cross-entropy.

    Args:
        model: a Keras model.

    Returns:
        ``tfp_bcnn.gaussian_nll`` when the model's last layer is a
        `tfp_bcnn.layers.GaussianHead`, else the name
        ``"sparse_categorical_crossentropy"`` (softmax probabilities and
        integer labels; Keras applies it per pixel to ``(batch, H, W, C)``
        outputs with ``(batch, H, W)`` labels and averages over pixels).
    """
    last = model.layers[-1] if model.layers else None
    return gaussian_nll if isinstance(last, GaussianHead) else "sparse_categorical_crossentropy"


# The size of the training set that sets every Bayesian layer's KL weight: checked
# alike by the builders (`_zoo`) and by `to_bayesian` (`_conversion`).
def _check_num_train_examples(num_train_examples, required_by):
    if num_train_examples is None:
        raise ValueError(
            f"`num_train_examples` is required {required_by}: every Bayesian layer "
            "scales its KL by 1 / num_train_examples, and without it the KL of the "
            "whole network (summed over all weights) would swamp the per-example "
            "likelihood. Pass the size of the training set. "
            "Received: num_train_examples=None"
        )
    return check.positive_int("num_train_examples", num_train_examples)
