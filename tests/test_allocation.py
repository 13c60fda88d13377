"""Channel allocation of filter pruning (tfp_bcnn/pruning/_allocation.py).

The allocation is plain numpy: scores in, keep-vectors out. Each expected
keep-vector is worked out by hand from the rule in the module docstring.
"""

import json

import numpy as np
import pytest

from tfp_bcnn import pruning
from tfp_bcnn.pruning._allocation import allocate, channel_floor, normalize_scores


@pytest.mark.parametrize("channels, min_channels, min_fraction, want", [
    (16, 1, 0.0, 1), (16, 8, 0.0, 8), (4, 8, 0.0, 4), (16, 1, 0.25, 4),
    (10, 1, 0.25, 3), (12, 1, 0.25, 3), (1280, 8, 0.25, 320),
])
def test_channel_floor(channels, min_channels, min_fraction, want):
    assert channel_floor(channels, min_channels, min_fraction) == want


def test_layer_scope_prunes_the_same_fraction_down_to_the_floor():
    scores = [np.arange(8.0), np.arange(4.0)[::-1].copy()]
    keep = allocate(scores, 0.75, "layer", min_channels=2)
    np.testing.assert_array_equal(keep[0], [0, 0, 0, 0, 0, 0, 1, 1])  # round(6) = 6 of 8
    np.testing.assert_array_equal(keep[1], [1, 1, 0, 0])  # 3 of 4 capped by the floor 2


def test_global_ranking_without_floor_empties_a_weak_narrow_unit():
    """The failure the floor exists for: a narrow unit of small scores loses all
    but its best channel under one global ranking of raw scores."""
    wide = np.linspace(1.0, 2.0, 12)
    narrow = np.array([0.1, 0.2, 0.3, 0.4])
    keep = allocate([wide, narrow], 0.5, "global")  # 8 of 16 channels
    assert keep[1].sum() == 1 and keep[0].sum() == 7
    keep = allocate([wide, narrow], 0.5, "global", min_channels=3)
    np.testing.assert_array_equal(keep[1], [0, 1, 1, 1])  # the floor: its 3 best stay
    assert keep[0].sum() == 5  # the wide unit pays: still 8 pruned in all
    assert sum(int((~k).sum()) for k in keep) == 8


def test_l2_normalisation_prunes_wide_units_first():
    """Equal raw scores: 1/sqrt(C) after the L2 norm, so the 16-wide unit goes
    before the 4-wide one; the result does not depend on the units' scales."""
    wide, narrow = np.ones(16), np.ones(4)
    keep = allocate([wide, 100.0 * narrow], 0.4, "global", normalize="l2")  # 8 of 20
    assert keep[1].all() and keep[0].sum() == 8
    again = allocate([1e-3 * wide, narrow], 0.4, "global", normalize="l2")
    for a, b in zip(keep, again):
        np.testing.assert_array_equal(a, b)
    raw = allocate([wide, 100.0 * narrow], 0.4, "global")
    assert raw[0].sum() == 8  # here the raw scale happens to agree; flip it:
    raw = allocate([100.0 * wide, narrow], 0.4, "global")
    assert raw[1].sum() == 1  # raw scores empty the narrow unit


def test_mean_normalisation_ranks_each_channel_against_its_own_unit():
    a = np.array([1.0, 2.0, 3.0, 6.0])   # mean 3: 1/3, 2/3, 1, 2
    b = np.array([10.0, 10.0, 10.0, 50.0])  # mean 20: 1/2, 1/2, 1/2, 5/2
    keep = allocate([a, b], 0.5, "global", normalize="mean")  # the 4 lowest of 8
    np.testing.assert_array_equal(keep[0], [0, 1, 1, 1])  # 1/3 goes, 2/3 stays
    np.testing.assert_array_equal(keep[1], [0, 0, 0, 1])  # the three 1/2 go
    np.testing.assert_allclose(normalize_scores(a, "mean"), a / 3.0)
    np.testing.assert_allclose(normalize_scores(a, "l2"), a / np.sqrt(50.0))


def test_pruned_channels_stay_pruned_and_count_toward_the_target():
    a = np.array([-np.inf, -np.inf, 5.0, 6.0])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    keep = allocate([a, b], 0.5, "global", normalize="l2")  # 4 of 8, 2 already
    np.testing.assert_array_equal(keep[0][:2], [0, 0])
    assert sum(int((~k).sum()) for k in keep) == 4
    np.testing.assert_array_equal(normalize_scores(a, "l2")[:2], [-np.inf, -np.inf])
    # a target below the pruned count changes nothing (masks only grow)
    keep = allocate([a, b], 0.1, "global", min_channels=3)
    np.testing.assert_array_equal(keep[0], [0, 0, 1, 1])
    assert keep[1].all()


def _model():
    import keras

    from tfp_bcnn import layers

    x = keras.Input((6, 6, 2))
    h = layers.Conv2DFlipout(8, 3, name="wide", seed=0)(x)
    h = layers.Conv2DFlipout(4, 1, name="narrow", seed=1)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, layers.DenseFlipout(3, name="head", seed=2)(h))


@pytest.mark.parametrize("kwargs, match", [
    ({"min_channels": 0}, "min_channels=0"),
    ({"min_fraction": 1.0}, "min_fraction=1.0"),
    ({"normalize": "max"}, "normalize='max'"),
    ({"min_channels": 2, "structure": "weight"}, "structure='filter' only.*min_channels=2"),
    ({"normalize": "l2", "structure": "weight"}, "normalize='l2' with structure='weight'"),
])
def test_bad_allocation_options_name_the_argument(kwargs, match):
    options = {"structure": "filter", **kwargs}
    with pytest.raises(ValueError, match=match):
        pruning.prune_now(_model(), 0.5, **options)
    with pytest.raises(ValueError, match=match):
        pruning.prune(_model(), **options)


def test_prune_now_applies_the_floor_and_the_config_round_trips():
    def kept(model):
        return {name: int((~pruning._masks.pruned_filters(model.get_layer(name))).sum())
                for name in ("wide", "narrow")}

    model = _model()  # round(0.75 * 12) = 9 of the 12 channels
    pruning.prune_now(model, 0.75, criterion="l1", scope="global", structure="filter",
                      normalize="l2")
    assert sum(kept(model).values()) == 3
    model = _model()  # the floor binds: 3 + 3 kept, only 6 pruned
    pruning.prune_now(model, 0.75, criterion="l1", scope="global", structure="filter",
                      min_channels=3, normalize="l2")
    assert kept(model) == {"wide": 3, "narrow": 3}
    pruning.prune(model, pruning.ConstantSparsity(0.5, 0), structure="filter",
                  min_fraction=0.5, normalize="mean")
    config = pruning.pruning_config(model)
    assert config.allocation() == {"min_channels": 1, "min_fraction": 0.5,
                                   "normalize": "mean", "cost": None, "cost_exponent": 1.0}
    assert pruning.PruningConfig.from_config(json.loads(json.dumps(config.get_config()))) \
        == config
