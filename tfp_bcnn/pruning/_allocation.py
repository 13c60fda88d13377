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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import _validation as check

__all__ = ["NORMALIZATIONS", "allocate", "channel_floor", "check_allocation", "prune_lowest",
           "normalize_scores"]

NORMALIZATIONS = ("none", "l2", "mean")


def check_allocation(structure: str, min_channels, min_fraction,
                     normalize) -> tuple[int, float, str]:
    """Validate the allocation options of filter pruning.

    Returns:
        ``(min_channels, min_fraction, normalize)`` as int, float, str.

    Raises:
        ValueError: ``min_channels`` not a positive int, ``min_fraction``
            outside ``[0, 1)``, an unknown ``normalize``, or a value other
            than the default with ``structure="weight"`` (where there are no
            channels to allocate).
    """
    min_channels = check.positive_int("min_channels", min_channels)
    min_fraction = check.fraction("min_fraction", min_fraction)
    check.choice("normalize", normalize, NORMALIZATIONS)
    if structure != "filter":
        for name, value, default in (("min_channels", min_channels, 1),
                                     ("min_fraction", min_fraction, 0.0),
                                     ("normalize", normalize, "none")):
            if value != default:
                raise ValueError(
                    f"`{name}` applies to structure='filter' only (channel allocation). "
                    f"Received: {name}={value!r} with structure={structure!r}")
    return min_channels, min_fraction, normalize


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


def allocate(scores: Sequence[np.ndarray], target: float, scope: str, *,
             min_channels: int = 1, min_fraction: float = 0.0,
             normalize: str = "none") -> list[np.ndarray]:
    """Which channels of every unit to keep at the pruned fraction ``target``.

    Args:
        scores: one ``(C_u,)`` float array per unit; ``-inf`` marks channels
            already pruned (they stay pruned and count toward the target).
        target: the fraction of channels to prune, in ``[0, 1)``.
        scope: ``"layer"`` (each unit at ``target``) or ``"global"`` (one
            ranking over all units).
        min_channels, min_fraction: the floor of every unit (module docstring).
        normalize: ``"none"``, ``"l2"`` or ``"mean"`` (global scope only).

    Returns:
        One boolean ``(C_u,)`` keep-vector per unit (False: pruned).
    """
    floors = [channel_floor(s.size, min_channels, min_fraction) for s in scores]
    if scope == "layer":
        return [prune_lowest(s, min(round(target * s.size), s.size - f))
                for s, f in zip(scores, floors)]
    guarded, kept = [], 0
    for s, f in zip(scores, floors):
        g, k = _guard(normalize_scores(s, normalize), f)
        guarded.append(g)
        kept += k
    flat = np.concatenate(guarded)
    keep = prune_lowest(flat, min(round(target * flat.size), flat.size - kept))
    offsets = np.cumsum([0] + [s.size for s in scores])
    return [keep[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:])]
