"""Channel allocation of filter pruning: how many channels each unit loses.

A *unit* is what filter pruning removes channels from as one: a layer, or a
channel group tied by residual ``Add`` and depthwise layers (``_groups``).
Each unit ``u`` has ``C_u`` channels with scores ``s_u`` (``(C_u,)``, higher
is more important, ``-inf`` for channels already pruned). Given the target
fraction ``t`` of channels to prune:

* ``scope="layer"``: every unit loses its ``min(round(t C_u), C_u - f_u)``
  lowest-scored channels: the same fraction everywhere;
* ``scope="global"``: one ranking over the channels of all the units; the
  ``min(round(t sum_u C_u), sum_u (C_u - f_u))`` lowest are pruned, so wide
  units with weak channels lose more and narrow or strong ones less.

The floor ``f_u = min(C_u, max(min_channels, ceil(min_fraction C_u)))``: the
``f_u`` best channels of every unit are never pruned (``min_channels=1,
min_fraction=0`` keeps only the best one, the behaviour without a floor). A
unit that already has fewer channels left keeps what it has (masks only grow).

Normalisation (global ranking only; a per-unit scale changes no ranking
inside a unit). Filter scores of layers of different scale are not
comparable: behind a BatchNormalization the scale of a convolution's kernel
is arbitrary. ``normalize`` rescales each unit's scores over its live
channels before they are ranked together:

* ``"none"``: as they are (per-weight scores, see ``_masks``);
* ``"l2"``: ``s_u / ||s_u||_2``, Molchanov et al. 2017 ("Pruning
  Convolutional Neural Networks for Resource Efficient Inference",
  https://arxiv.org/abs/1611.06440, section 2.2). A unit of ``C`` equal
  channels scores ``1 / sqrt(C)`` each, so the wide units (MobileNetV2's
  expansions, its 1280-channel last convolution) are pruned first;
* ``"mean"``: ``s_u / mean(s_u)``: each channel against its own unit's
  typical channel, independent of the width.

Cost (global ranking only). A channel's score says what the network loses
without it, not what removing it saves; a global ranking by score alone
removes channels where they are cheap in accuracy, which in MobileNetV2 are
the wide late layers, where the parameters are but few FLOPs (they run at
1x1 or 2x2). ``cost="flops"`` or ``"params"`` ranks by importance per unit of
cost instead (Molchanov et al. 2017, section 2.3, "FLOPs regularization";
Shen et al. 2022, "Structural Pruning via Latency-Saliency Knapsack",
https://arxiv.org/abs/2210.06659): the normalised score of every channel of
unit ``u`` is divided by ``k_u / k_mean``, where

    k_u = (sum of the FLOPs (or weights) of u's producers, depthwise layers
           and consumers) / C_u

is what one channel of ``u`` costs (every channel of a unit costs the same:
it has one filter in each producer, one channel in each depthwise layer and
one input channel, or ``C_in / C_u`` flattened inputs, in each consumer; see
`unit_costs`), and ``k_mean`` is the mean of ``k_u`` over all the live
channels, so the ranking is free of the units of cost. Channels that cost
``k`` times the average are pruned as if their score were ``k`` times
smaller; the floors still hold. ``cost_exponent`` ``e`` tempers this, the
divisor being ``(k_u / k_mean) ** e``: ``e = 1`` is score per unit of cost
(at a fixed fraction of the channels it cuts the most FLOPs, and empties the
expensive early layers down to their floors), ``e -> 0`` the plain ranking.
Costs are taken at the layers' full shapes (the model's input size), not the
shapes left by earlier pruning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import _validation as check

__all__ = ["COSTS", "NORMALIZATIONS", "allocate", "channel_floor", "check_allocation",
           "prune_lowest", "normalize_scores", "unit_costs"]

NORMALIZATIONS = ("none", "l2", "mean")
COSTS = ("flops", "params")


def check_allocation(structure: str, min_channels, min_fraction, normalize, cost=None,
                     cost_exponent=1.0, scope: str = "global"
                     ) -> tuple[int, float, str, str | None, float]:
    """Validate the allocation options of filter pruning.

    Returns:
        ``(min_channels, min_fraction, normalize, cost, cost_exponent)``.

    Raises:
        ValueError: ``min_channels`` not a positive int, ``min_fraction``
            outside ``[0, 1)``, an unknown ``normalize`` or ``cost``, a
            ``cost_exponent`` that is not a positive number or is given
            without a ``cost``, a value
            other than the default with ``structure="weight"`` (where there
            are no channels to allocate), or a ``cost`` with
            ``scope="layer"`` (where it would change nothing).
    """
    min_channels = check.positive_int("min_channels", min_channels)
    min_fraction = check.fraction("min_fraction", min_fraction)
    check.choice("normalize", normalize, NORMALIZATIONS)
    check.choice("cost", cost, (None, *COSTS))
    cost_exponent = check.positive_float("cost_exponent", cost_exponent)
    if cost is None and cost_exponent != 1.0:
        raise ValueError("`cost_exponent` tempers a `cost`; give cost='flops' or 'params' "
                         f"with it. Received: cost_exponent={cost_exponent!r} with cost=None")
    if structure != "filter":
        for name, value, default in (("min_channels", min_channels, 1),
                                     ("min_fraction", min_fraction, 0.0),
                                     ("normalize", normalize, "none"), ("cost", cost, None)):
            if value != default:
                raise ValueError(
                    f"`{name}` applies to structure='filter' only (channel allocation). "
                    f"Received: {name}={value!r} with structure={structure!r}")
    if cost is not None and scope != "global":
        raise ValueError(
            "`cost` weighs channels of different layers against each other: it needs "
            f"scope='global' (per layer every channel costs the same). Received: cost={cost!r} "
            f"with scope={scope!r}")
    return min_channels, min_fraction, normalize, cost, cost_exponent


def channel_floor(channels: int, min_channels: int = 1, min_fraction: float = 0.0) -> int:
    """``min(C, max(min_channels, ceil(min_fraction * C)))``: the channels a unit always keeps."""
    return min(channels, max(min_channels, math.ceil(min_fraction * channels - 1e-9)))


def normalize_scores(scores: np.ndarray, normalize: str) -> np.ndarray:
    """One unit's ``(C,)`` scores rescaled by ``normalize`` (module docstring).

    The norm / mean is taken over the finite scores (live channels); pruned
    channels stay ``-inf``; a unit whose live scores are all 0 is unchanged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    live = scores[np.isfinite(scores)]
    if normalize == "none" or live.size == 0:
        return scores.copy()
    scale = np.sqrt(np.sum(live ** 2)) if normalize == "l2" else np.mean(np.abs(live))
    return scores / scale if scale > 0 else scores.copy()


def prune_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-vector: the ``count`` lowest scores (stable order) are False."""
    count = max(count, int(np.sum(scores == -np.inf)))  # masks only grow
    keep = np.ones(scores.shape, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


def _guard(scores: np.ndarray, floor: int) -> tuple[np.ndarray, int]:
    """Scores with the ``floor`` best live channels raised to ``+inf``; how many were raised."""
    guarded = scores.copy()
    live = int(np.sum(np.isfinite(scores)))
    best = np.argsort(-scores, kind="stable")[:min(floor, live)]
    guarded[best] = np.inf
    return guarded, len(best)


def unit_costs(model, units: Sequence, cost: str) -> list[float]:
    """What one channel of every unit costs: ``k_u`` of the module docstring.

    Args:
        model: the built model the units belong to (for the consumers of
            single-layer units: the next convolution / dense layer after the
            unit's producer in model order, as in a chain model).
        units: `_groups.Group` s (a channel group, or one layer as the only
            producer of a group without depthwise layers and consumers).
        cost: ``"flops"`` (multiply-adds per image at the model's input
            size, `pruning.layer_costs`) or ``"params"`` (weights).

    Returns:
        One float per unit, ``> 0``.
    """
    from .._compat import all_layers
    from ._costs import is_costed, layer_cost

    chain = [layer for layer in all_layers(model) if is_costed(layer)]
    position = {id(layer): i for i, layer in enumerate(chain)}
    out = []
    for unit in units:
        consumers = list(unit.consumers)
        if not consumers and not unit.depthwise and len(unit.producers) == 1:
            i = position.get(id(unit.producers[0]), len(chain)) + 1
            consumers = chain[i:i + 1]
        layers = [*unit.producers, *unit.depthwise, *consumers]
        total = sum(layer_cost(layer)[cost] for layer in layers)
        out.append(max(float(total), 1.0) / unit.channels)
    return out


def _weigh_by_cost(scores: Sequence[np.ndarray], costs: Sequence[float],
                   exponent: float) -> list[np.ndarray]:
    """``s_u / (k_u / k_mean) ** exponent``, ``k_mean`` the mean cost over the live channels."""
    live = np.array([np.sum(np.isfinite(s)) for s in scores], dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    mean = np.sum(live * costs) / max(np.sum(live), 1.0)
    return [s * (mean / k) ** exponent for s, k in zip(scores, costs)]


def allocate(scores: Sequence[np.ndarray], target: float, scope: str, *,
             min_channels: int = 1, min_fraction: float = 0.0,
             normalize: str = "none", costs: Sequence[float] | None = None,
             cost_exponent: float = 1.0) -> list[np.ndarray]:
    """Which channels of every unit to keep at the pruned fraction ``target``.

    Args:
        scores: one ``(C_u,)`` float array per unit; ``-inf`` marks channels
            already pruned (they stay pruned and count toward the target).
        target: the fraction of channels to prune, in ``[0, 1)``.
        scope: ``"layer"`` (each unit at ``target``) or ``"global"`` (one
            ranking over all units).
        min_channels, min_fraction: the floor of every unit (module docstring).
        normalize: ``"none"``, ``"l2"`` or ``"mean"`` (global scope only).
        costs: None, or the cost ``k_u > 0`` of one channel of every unit
            (`unit_costs`; global scope only): the normalised scores are
            divided by ``(k_u / k_mean) ** cost_exponent`` before the ranking.
        cost_exponent: ``> 0``, see ``costs``.

    Returns:
        One boolean ``(C_u,)`` keep-vector per unit (False: pruned).
    """
    floors = [channel_floor(s.size, min_channels, min_fraction) for s in scores]
    if scope == "layer":
        return [prune_lowest(s, min(round(target * s.size), s.size - f))
                for s, f in zip(scores, floors)]
    ranked = [normalize_scores(s, normalize) for s in scores]
    if costs is not None:
        ranked = _weigh_by_cost(ranked, costs, cost_exponent)
    guarded, kept = [], 0
    for s, f in zip(ranked, floors):
        g, k = _guard(s, f)
        guarded.append(g)
        kept += k
    flat = np.concatenate(guarded)
    keep = prune_lowest(flat, min(round(target * flat.size), flat.size - kept))
    offsets = np.cumsum([0] + [s.size for s in scores])
    return [keep[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:])]
