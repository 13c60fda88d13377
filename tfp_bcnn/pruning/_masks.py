"""Mask maths: which kernel weights to prune, and the masks' read-outs.

A Bayesian layer prunes a kernel weight by setting its entry of the
non-trainable ``kernel_mask`` to 0 (the mask multiplies ``mu`` and ``sigma``
wherever the layer uses them). Everything here works on those variables and
nothing else: no state is kept outside the layers.

Criteria. ``"magnitude"`` ranks weights by ``|mu|``; ``"snr"`` by the
signal-to-noise ratio ``|mu| / sigma`` (Blundell et al. 2015,
https://arxiv.org/abs/1505.05424, section 5.1). The lowest-ranked weights are
pruned. With ``scope="layer"`` each layer gets exactly ``round(sparsity * n)``
pruned weights out of its ``n`` kernel weights; with ``scope="global"`` one
threshold is taken over the scores of all the given layers together, and
exactly ``round(sparsity * total)`` weights are pruned over them. Ties are
broken deterministically: a stable argsort over the kernels flattened in C
order (layers in model order). Masks only grow: already-pruned weights score
``-inf`` and are counted in the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from .. import _validation as check
from ..kl import bayesian_layers

__all__ = [
    "CRITERIA",
    "PRUNED_RHO",
    "SCOPES",
    "TOTAL_KEY",
    "apply_sparsity",
    "check_options",
    "model_name",
    "prunable_layers",
    "prune_now",
    "sparsity",
    "strip_masks",
]

CRITERIA = ("magnitude", "snr")
SCOPES = ("layer", "global")

#: ``kernel_rho`` that `strip` writes at pruned positions: ``softplus(-30)``
#: is about ``1e-13``, so the stored std is the floor ``1e-8`` (and the mask
#: makes the std used anywhere exactly 0).
PRUNED_RHO = -30.0

#: Key of the overall fraction in the dict returned by `sparsity`.
TOTAL_KEY = "total"


def model_name(model) -> str:
    """``repr`` of the model's name, for messages."""
    return repr(getattr(model, "name", type(model).__name__))


def prunable_layers(model) -> list:
    """The built Bayesian layers of ``model`` (nested models included).

    Raises:
        ValueError: no Bayesian layer, duplicate names, an unbuilt layer, or
            a layer named ``"total"``.
    """
    layers = list(bayesian_layers(model))
    if not layers:
        raise ValueError(f"The model has no Bayesian layer. Received: model={model_name(model)}")
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Bayesian layer names must be unique in the model (nested models "
            f"included). Received: duplicate names {duplicates}"
        )
    unbuilt = [layer.name for layer in layers if not getattr(layer, "built", False)]
    if unbuilt:
        raise ValueError(
            "Build the model (give it an Input or call it on data) before pruning. "
            f"Received: unbuilt layers {unbuilt}"
        )
    if TOTAL_KEY in names:
        raise ValueError(
            f"A Bayesian layer may not be named {TOTAL_KEY!r}: `sparsity` reports the "
            f"overall fraction under that key. Received: layer name {TOTAL_KEY!r}"
        )
    return layers


def check_options(model, criterion, scope, exclude) -> tuple[list, tuple[str, ...]]:
    """Validate ``criterion``, ``scope`` and ``exclude`` against ``model``.

    Returns:
        ``(layers, exclude)``: the Bayesian layers to prune and the excluded
        names as a tuple.

    Raises:
        ValueError: an unknown criterion or scope, an excluded name that is not
            a Bayesian layer of the model, or nothing left to prune.
    """
    check.choice("criterion", criterion, CRITERIA)
    check.choice("scope", scope, SCOPES)
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        exclude = tuple(exclude)
    except TypeError:
        raise ValueError(
            f"`exclude` must be a sequence of layer names. Received: exclude={exclude!r}"
        ) from None
    layers = prunable_layers(model)
    names = [layer.name for layer in layers]
    for name in exclude:
        if name not in names:
            raise ValueError(
                f"`exclude` names a layer that is not a Bayesian layer of the model "
                f"(those are {names}). Received: exclude={name!r}"
            )
    included = [layer for layer in layers if layer.name not in exclude]
    if not included:
        raise ValueError(
            f"`exclude` leaves no Bayesian layer to prune. Received: exclude={exclude!r}"
        )
    return included, exclude


def _scores(layer, criterion) -> np.ndarray:
    """Flat float64 scores of a layer's kernel; pruned weights get -inf."""
    loc = np.abs(ops.convert_to_numpy(layer.kernel_loc).astype("float64"))
    if criterion == "snr":
        loc = loc / ops.convert_to_numpy(layer.kernel_sigma).astype("float64")
    mask = ops.convert_to_numpy(layer.kernel_mask).ravel()
    scores = loc.ravel()
    scores[mask == 0] = -np.inf
    return scores


def _prune_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-vector: the ``count`` lowest scores (stable order) are False."""
    count = max(count, int(np.sum(scores == -np.inf)))  # masks only grow
    keep = np.ones(scores.shape, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


def _assign_mask(layer, keep: np.ndarray) -> None:
    mask = ops.convert_to_numpy(layer.kernel_mask)
    new = np.where(keep.reshape(mask.shape), mask, 0.0).astype(mask.dtype)
    layer.kernel_mask.assign(new)


def apply_sparsity(layers: Sequence, target: float, criterion: str, scope: str) -> None:
    """Grow the masks of ``layers`` to ``target`` sparsity (see the module docstring)."""
    scores = [_scores(layer, criterion) for layer in layers]
    if scope == "layer":
        for layer, s in zip(layers, scores):
            _assign_mask(layer, _prune_lowest(s, round(target * s.size)))
        return
    flat = np.concatenate(scores)
    keep = _prune_lowest(flat, round(target * flat.size))
    offsets = np.cumsum([0] + [s.size for s in scores])
    for layer, lo, hi in zip(layers, offsets[:-1], offsets[1:]):
        _assign_mask(layer, keep[lo:hi])


def strip_masks(model: keras.Model) -> None:
    """``kernel_loc = 0`` and ``kernel_rho = PRUNED_RHO`` wherever the mask is 0."""
    for layer in prunable_layers(model):
        pruned = ops.convert_to_numpy(layer.kernel_mask) == 0
        if not pruned.any():
            continue
        loc = ops.convert_to_numpy(layer.kernel_loc)
        rho = ops.convert_to_numpy(layer.kernel_rho)
        layer.kernel_loc.assign(np.where(pruned, 0.0, loc).astype(loc.dtype))
        layer.kernel_rho.assign(np.where(pruned, PRUNED_RHO, rho).astype(rho.dtype))


def sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of pruned kernel weights (mask 0) of each Bayesian layer.

    Returns:
        ``{layer_name: fraction, ..., "total": fraction}`` with the layers in
        model order; ``"total"`` is the fraction over all the Bayesian
        kernels together (pruned weights / kernel weights, so large layers
        weigh more). Biases are not counted.

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer, or one
            with a Bayesian layer named "total".
    """
    report = {}
    pruned = total = 0
    for layer in prunable_layers(model):
        mask = ops.convert_to_numpy(layer.kernel_mask)
        zeros = int(np.sum(mask == 0))
        report[layer.name] = zeros / mask.size
        pruned += zeros
        total += mask.size
    report[TOTAL_KEY] = pruned / total
    return report


def prune_now(
    model: keras.Model,
    sparsity: float,
    criterion: str = "magnitude",
    scope: str = "layer",
    exclude: Sequence[str] = (),
) -> keras.Model:
    """Set the masks of ``model`` to ``sparsity`` at once (one-shot pruning).

    Per layer (``scope="layer"``) exactly ``round(sparsity * n)`` of the ``n``
    kernel weights of each non-excluded layer are pruned; globally exactly
    ``round(sparsity * total)`` over them. Already-pruned weights stay pruned
    (a target below the current sparsity changes nothing).

    Args:
        model: a built model with at least one Bayesian layer.
        sparsity: fraction in ``[0, 1)``.
        criterion, scope, exclude: as in `prune`.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``sparsity`` outside ``[0, 1)``, and the errors of `prune`.
    """
    target = check.fraction("sparsity", sparsity)
    layers, _ = check_options(model, criterion, scope, exclude)
    apply_sparsity(layers, target, criterion, scope)
    return model
