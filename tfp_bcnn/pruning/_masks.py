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

Structure. ``structure="weight"`` prunes single kernel weights, as above.
``structure="filter"`` prunes whole output filters (convolutions) or units
(Dense): the slices ``kernel[..., f]`` (the filter axis is the last one of
every kernel, ``(k_1, ..., k_r, in, out)`` or ``(in, out)``), so that
`shrink` can then remove them from the model. A filter ``f`` with the ``n_f``
masked means ``mu_f`` and stds ``sigma_f`` scores

* ``"l1"``: ``||mu_f||_1 / n_f``, the mean ``|mu|`` (L1 norm of the filter);
* ``"magnitude"``: ``||mu_f||_2 / sqrt(n_f)``, the root mean square (L2 norm);
* ``"snr"``: ``mean(|mu_f| / sigma_f)``, the filter's mean signal-to-noise ratio.

Within a layer the division by ``n_f`` changes no ranking (its filters have
the same size); it makes the scores of layers of different fan-in comparable
under ``scope="global"``. ``sparsity`` is then the fraction of filters: per
layer ``round(sparsity * F)`` of its ``F`` filters, globally
``round(sparsity * total)`` filters over the layers; every layer keeps at
least one filter (its best), or the floor ``min_channels`` /
``min_fraction`` asks more, and global ranking may rescale each layer's or
group's scores first (``normalize``): see ``_allocation``. The last Bayesian
layer of the model (the classifier, whose units are the classes) is never
filter-pruned. Pruning a
filter also sets its (deterministic) bias to 0 -- the filter is removed,
bias included -- and `UpdatePruning` keeps it at 0 during training, so a
pruned filter outputs ``activation(0)`` (0 for relu / tanh / linear), which
`shrink` can drop exactly. For weight pruning, ``"l1"`` ranks by ``|mu|``, as
``"magnitude"`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from .. import _validation as check
from ..kl import variational_layers
from ..layers import BayesianLayer, Rank1Layer
from ._allocation import allocate, check_allocation, prune_lowest, unit_costs

__all__ = [
    "CRITERIA",
    "PRUNED_RHO",
    "SCOPES",
    "TOTAL_KEY",
    "STRUCTURES",
    "apply_sparsity",
    "check_options",
    "kernel_means",
    "pruned_filters",
    "zero_pruned_biases",
    "model_name",
    "prunable_layers",
    "prune_now",
    "sparsity",
    "strip_masks",
]

CRITERIA = ("magnitude", "snr", "l1")
SCOPES = ("layer", "global")
STRUCTURES = ("weight", "filter")

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

    Rank-1 mixture layers (`tfp_bcnn.layers.Rank1Layer`) count: their mask
    is on the shared kernel ``W``, so a pruned weight is 0 in every component.

    Raises:
        ValueError: no Bayesian layer, duplicate names, an unbuilt layer, or
            a layer named ``"total"``.
    """
    layers = list(variational_layers(model))
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


def check_options(model, criterion, scope, exclude,
                  structure="weight") -> tuple[list, tuple[str, ...]]:
    """Validate ``criterion``, ``scope``, ``exclude`` and ``structure`` against ``model``.

    Returns:
        ``(layers, exclude)``: the Bayesian layers to prune and the excluded
        names as a tuple (with ``structure="filter"`` the last Bayesian
        layer is left out of ``layers`` but not added to ``exclude``).

    Raises:
        ValueError: an unknown criterion, scope or structure, an excluded name
            that is not a Bayesian layer of the model, or nothing left to prune.
    """
    check.choice("criterion", criterion, CRITERIA)
    check.choice("scope", scope, SCOPES)
    check.choice("structure", structure, STRUCTURES)
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
    rank1 = [n for layer, n in zip(layers, names) if isinstance(layer, Rank1Layer)]
    if criterion == "snr" and rank1:
        raise ValueError(
            "criterion='snr' needs a posterior std per weight; the rank-1 mixture layers "
            f"{rank1} have a point-estimate kernel (their noise is on rank-1 factors). Use "
            "criterion='magnitude' or 'l1'. Received: criterion='snr'")
    for name in exclude:
        if name not in names:
            raise ValueError(
                f"`exclude` names a layer that is not a Bayesian layer of the model "
                f"(those are {names}). Received: exclude={name!r}"
            )
    included = [layer for layer in layers if layer.name not in exclude]
    if structure == "filter":  # the classifier's units are the classes
        included = [layer for layer in included if layer is not layers[-1]]
    if not included:
        extra = (f" (structure='filter' never prunes the last Bayesian layer, "
                 f"{layers[-1].name!r})" if structure == "filter" else "")
        raise ValueError(
            f"`exclude` leaves no Bayesian layer to prune{extra}. Received: exclude={exclude!r}"
        )
    return included, exclude


def kernel_means(layer) -> np.ndarray:
    """float64 kernel means: ``kernel_loc``, or a rank-1 layer's shared ``W``.

    ``W`` is the point estimate that every component scales by its factors
    (``W_io r_ki s_ko``): its magnitude is the weight's magnitude up to the
    factors, which are ~1 in every component and are not pruned.
    """
    kernel = layer.kernel if isinstance(layer, Rank1Layer) else layer.kernel_loc
    return ops.convert_to_numpy(kernel).astype("float64")


def _scores(layer, criterion) -> np.ndarray:
    """Flat float64 scores of a layer's kernel; pruned weights get -inf."""
    loc = np.abs(kernel_means(layer))
    if criterion == "snr":
        loc = loc / ops.convert_to_numpy(layer.kernel_sigma).astype("float64")
    mask = ops.convert_to_numpy(layer.kernel_mask).ravel()
    scores = loc.ravel()
    scores[mask == 0] = -np.inf
    return scores


def _masked_moments(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(|mu| * mask, sigma, mask)`` as float64 ``(n_f, F)`` arrays (filters last)."""
    mask = ops.convert_to_numpy(layer.kernel_mask).astype("float64")
    loc = np.abs(kernel_means(layer)) * mask
    sigma = (np.ones_like(loc) if isinstance(layer, Rank1Layer)  # snr refused for them
             else ops.convert_to_numpy(layer.kernel_sigma).astype("float64"))
    units = mask.shape[-1]
    return loc.reshape(-1, units), sigma.reshape(-1, units), mask.reshape(-1, units)


def pruned_filters(layer) -> np.ndarray:
    """Boolean ``(F,)``: True where the whole filter ``kernel_mask[..., f]`` is 0."""
    mask = ops.convert_to_numpy(layer.kernel_mask)
    return np.all(mask.reshape(-1, mask.shape[-1]) == 0, axis=0)


def _filter_scores(layer, criterion) -> np.ndarray:
    """``(F,)`` float64 filter scores (module docstring); pruned filters -inf."""
    loc, sigma, _ = _masked_moments(layer)
    if criterion == "l1":
        scores = np.mean(loc, axis=0)
    elif criterion == "magnitude":
        scores = np.sqrt(np.mean(np.square(loc), axis=0))
    else:
        scores = np.mean(loc / sigma, axis=0)
    scores[pruned_filters(layer)] = -np.inf
    return scores


def _assign_mask(layer, keep: np.ndarray) -> None:
    mask = ops.convert_to_numpy(layer.kernel_mask)
    new = np.where(keep.reshape(mask.shape), mask, 0.0).astype(mask.dtype)
    layer.kernel_mask.assign(new)


def _assign_filters(layer, keep: np.ndarray) -> None:
    """Zero the mask (and the deterministic bias) of every filter not in ``keep``."""
    mask = ops.convert_to_numpy(layer.kernel_mask)
    layer.kernel_mask.assign(np.where(keep, mask, 0.0).astype(mask.dtype))
    zero_pruned_biases([layer])


def zero_pruned_biases(layers: Sequence) -> None:
    """Set the deterministic bias of every fully pruned filter of ``layers`` to 0.

    A rank-1 layer's ``(K, units)`` biases: the filter's bias in every component.
    """
    for layer in layers:
        if layer.bias is None:
            continue
        pruned = pruned_filters(layer)
        if pruned.any():
            bias = ops.convert_to_numpy(layer.bias)
            layer.bias.assign(np.where(pruned, 0.0, bias).astype(bias.dtype))


def _assign_channels(unit, keep: np.ndarray) -> None:
    """Prune the channels not in ``keep`` from every layer of a channel group.

    Producers lose their filters (mask and deterministic bias), Bayesian
    depthwise followers their channel (``kernel_mask[..., c, :]``), and
    batch normalisations get ``gamma_c = beta_c = 0``, so the channel is
    exactly 0 on every tensor of the group (see ``_groups``).
    """
    for layer in unit.producers:
        _assign_filters(layer, keep)
    for layer in unit.depthwise:
        if isinstance(layer, BayesianLayer):
            mask = ops.convert_to_numpy(layer.kernel_mask)
            layer.kernel_mask.assign(np.where(keep[:, None], mask, 0.0).astype(mask.dtype))
        if getattr(layer, "bias", None) is not None:
            bias = ops.convert_to_numpy(layer.bias)
            layer.bias.assign(np.where(keep, bias, 0.0).astype(bias.dtype))
    for layer in unit.batchnorms:
        for var in (layer.gamma, layer.beta):
            if var is not None:
                value = ops.convert_to_numpy(var)
                var.assign(np.where(keep, value, 0.0).astype(value.dtype))


def filter_units(model, layers: Sequence) -> list:
    """The units that filter pruning scores: channel groups, or single layers.

    A functional model with an ``Add`` or a depthwise convolution prunes by
    `_groups.channel_groups` (a group is pruned only if all its producers
    are among ``layers``); any other model prunes each layer's filters.
    """
    from ._groups import Group, channel_groups, is_depthwise, needs_groups

    if model is None or not needs_groups(model):
        return [Group(int(layer.kernel_mask.shape[-1]), producers=[layer]) for layer in layers]
    chosen = {id(layer) for layer in layers if not is_depthwise(layer)}
    return [g for g in channel_groups(model)
            if g.prunable() and all(id(p) in chosen for p in g.producers)]


def grouped_channel_variables(model, layers: Sequence) -> list:
    """``(variable, keep)`` pairs that hold pruned channels of groups at 0 in training.

    For a model pruned by channel groups: the ``gamma`` and ``beta`` of the
    batch normalisations and the biases of the depthwise layers of every
    group, with ``keep`` 0 at its pruned channels (all its producers' filters
    pruned); `UpdatePruning` multiplies them by ``keep`` after every batch,
    as it does the producers' biases, so fine-tuning does not revive them.
    """
    from ._groups import needs_groups

    if not needs_groups(model):
        return []
    pairs = []
    for unit in filter_units(model, layers):
        pruned = np.all([pruned_filters(p) for p in unit.producers], axis=0)
        if not pruned.any():
            continue
        variables = [v for bn in unit.batchnorms for v in (bn.gamma, bn.beta) if v is not None]
        variables += [d.bias for d in unit.depthwise if getattr(d, "bias", None) is not None]
        for var in variables:
            pairs.append((var, ops.convert_to_tensor((~pruned).astype("float32"), var.dtype)))
    return pairs


def _apply_filter_sparsity(layers: Sequence, target: float, criterion: str, scope: str,
                           model=None, *, cost: str | None = None,
                           cost_exponent: float = 1.0, **allocation) -> None:
    """Filter pruning of the units (layers or channel groups) by `_allocation.allocate`.

    A group's score of channel ``c`` is the mean of its producers' filter
    scores; ``allocation``: ``min_channels``, ``min_fraction``, ``normalize``;
    ``cost`` (needs ``model``): scores per unit of `_allocation.unit_costs`.
    """
    units = filter_units(model, layers)
    if not units:
        return
    scores = [np.mean([_filter_scores(p, criterion) for p in unit.producers], axis=0)
              for unit in units]
    costs = unit_costs(model, units, cost) if cost is not None and model is not None else None
    keeps = allocate(scores, target, scope, costs=costs, cost_exponent=cost_exponent,
                     **allocation)
    for unit, keep in zip(units, keeps):
        _assign_channels(unit, keep)


def apply_sparsity(layers: Sequence, target: float, criterion: str, scope: str,
                   structure: str = "weight", model=None, **allocation) -> None:
    """Grow the masks of ``layers`` to ``target`` sparsity (see the module docstring).

    With ``structure="filter"``, ``model`` (when given) lets channels tied by
    a residual ``Add`` or a depthwise convolution be pruned as one group, and
    ``allocation`` (``min_channels``, ``min_fraction``, ``normalize``,
    ``cost``, ``cost_exponent``) sets how many channels each unit loses (``_allocation``).
    """
    if structure == "filter":
        return _apply_filter_sparsity(layers, target, criterion, scope, model, **allocation)
    scores = [_scores(layer, criterion) for layer in layers]
    if scope == "layer":
        for layer, s in zip(layers, scores):
            _assign_mask(layer, prune_lowest(s, round(target * s.size)))
        return
    flat = np.concatenate(scores)
    keep = prune_lowest(flat, round(target * flat.size))
    offsets = np.cumsum([0] + [s.size for s in scores])
    for layer, lo, hi in zip(layers, offsets[:-1], offsets[1:]):
        _assign_mask(layer, keep[lo:hi])


def strip_masks(model: keras.Model) -> None:
    """``kernel_loc = 0`` and ``kernel_rho = PRUNED_RHO`` wherever the mask is 0.

    Rank-1 mixture layers: their shared ``kernel`` is set to 0 there.
    """
    for layer in prunable_layers(model):
        pruned = ops.convert_to_numpy(layer.kernel_mask) == 0
        if not pruned.any():
            continue
        if isinstance(layer, Rank1Layer):  # a point estimate: W = 0 there
            w = ops.convert_to_numpy(layer.kernel)
            layer.kernel.assign(np.where(pruned, 0.0, w).astype(w.dtype))
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
    structure: str = "weight",
    *,
    min_channels: int = 1,
    min_fraction: float = 0.0,
    normalize: str = "none",
    cost: str | None = None,
    cost_exponent: float = 1.0,
) -> keras.Model:
    """Set the masks of ``model`` to ``sparsity`` at once (one-shot pruning).

    Per layer (``scope="layer"``) exactly ``round(sparsity * n)`` of the ``n``
    kernel weights of each non-excluded layer are pruned; globally exactly
    ``round(sparsity * total)`` over them. Already-pruned weights stay pruned
    (a target below the current sparsity changes nothing).

    Args:
        model: a built model with at least one Bayesian layer.
        sparsity: fraction in ``[0, 1)``.
        criterion, scope, exclude, structure: as in `prune` (with
            ``structure="filter"``, ``sparsity`` is the fraction of filters).
        min_channels, min_fraction, normalize, cost, cost_exponent: the
            channel allocation of filter pruning, as in `prune` (``_allocation``).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``sparsity`` outside ``[0, 1)``, and the errors of `prune`.
    """
    target = check.fraction("sparsity", sparsity)
    layers, _ = check_options(model, criterion, scope, exclude, structure)
    min_channels, min_fraction, normalize, cost, cost_exponent = check_allocation(
        structure, min_channels, min_fraction, normalize, cost, cost_exponent, scope)
    apply_sparsity(layers, target, criterion, scope, structure, model,
                   min_channels=min_channels, min_fraction=min_fraction, normalize=normalize,
                   cost=cost, cost_exponent=cost_exponent)
    return model
