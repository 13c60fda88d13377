"""Cost-aware channel allocation (``cost="flops" | "params"``, tfp_bcnn/pruning/_allocation.py).

The expected keep-vectors and per-channel costs are worked out by hand from
the rules in the module docstring (score / (k_u / k_mean) ** e, k_u the FLOPs
of a unit's producers, depthwise layers and consumers over its channels).
"""

import json

import numpy as np
import pytest
from test_shrink_groups import _assert_same_moments, _block_net, _pruned

from tfp_bcnn import pruning
from tfp_bcnn.pruning._allocation import allocate, unit_costs
from tfp_bcnn.pruning._masks import filter_units, prunable_layers


def test_cost_moves_the_pruning_to_the_expensive_unit_and_the_exponent_tempers_it():
    """Equal scores [1, 2, 3, 4] in two units; unit b costs 5x unit a per channel,
    k_mean = 3. e = 1: a's scores x3, b's x0.6, so b goes down to its floor (1)
    and a loses its weakest; e = 0.2 (5 ** 0.2 = 1.38): a's channels 1.38x b's,
    the same 2 + 2 as without a cost."""
    a, b = np.arange(1.0, 5.0), np.arange(1.0, 5.0)
    plain = allocate([a, b], 0.5, "global")
    for keep in plain:
        np.testing.assert_array_equal(keep, [0, 0, 1, 1])
    cost = allocate([a, b], 0.5, "global", costs=[1.0, 5.0])
    np.testing.assert_array_equal(cost[0], [0, 1, 1, 1])
    np.testing.assert_array_equal(cost[1], [0, 0, 0, 1])
    tempered = allocate([a, b], 0.5, "global", costs=[1.0, 5.0], cost_exponent=0.2)
    for keep in tempered:
        np.testing.assert_array_equal(keep, [0, 0, 1, 1])
    # the units of cost do not matter (k / k_mean), the floor still holds
    scaled = allocate([a, b], 0.5, "global", costs=[1e6, 5e6], min_channels=2)
    np.testing.assert_array_equal(scaled[1], [0, 0, 1, 1])
    assert sum(int((~k).sum()) for k in scaled) == 4


def test_unit_costs_of_channel_groups_and_of_a_chain():
    """Block net at 8x8 ('same'): stem 3x3 3->6 = 2*9*3*6*64 = 20736 FLOPs, expand
    1x1 6->12 = 9216, depthwise 3x3 x12 = 13824, project 12->6 = 9216, head 6->4
    = 48. Group stem+project (6 channels; read by expand and the head):
    (20736 + 9216 + 9216 + 48) / 6 = 6536; group expand (12; depthwise, read by
    project): (9216 + 13824 + 9216) / 12 = 2688."""
    model = _block_net()
    units = filter_units(model, prunable_layers(model)[:-1])
    costs = {tuple(p.name for p in u.producers): k
             for u, k in zip(units, unit_costs(model, units, "flops"))}
    assert costs == {("stem", "project"): 6536.0, ("expand",): 2688.0}
    # a chain: each layer's consumer is the next linear layer (the 1x1 after the 3x3)
    import keras

    from tfp_bcnn import layers

    x = keras.Input((6, 6, 2))  # wide: 2*9*2*8*16 = 4608, narrow 2*8*4*16 = 1024, head 24
    h = layers.Conv2DFlipout(8, 3, name="wide", seed=0)(x)
    h = layers.Conv2DFlipout(4, 1, name="narrow", seed=1)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    chain = keras.Model(x, layers.DenseFlipout(3, name="head", seed=2)(h))
    units = filter_units(chain, prunable_layers(chain)[:-1])
    assert unit_costs(chain, units, "flops") == [(4608 + 1024) / 8, (1024 + 24) / 4]
    weights = unit_costs(chain, units, "params")  # mean, std, mask of each kernel + biases
    assert weights[1] > 0 and weights[0] > weights[1]


def _flops(model) -> int:
    return sum(r["flops"] for r in pruning.layer_costs(model))


def test_flops_cost_removes_more_compute_keeps_the_floor_and_shrinks_exactly():
    """9 of the 18 channels, floor 2: the FLOPs-aware ranking takes the stem
    group (6536 FLOPs a channel) down to its floor, plain L2 does not, so the
    shrunk net is cheaper for the same number of channels removed."""
    options = {"criterion": "l1", "scope": "global", "structure": "filter",
               "min_channels": 2, "normalize": "l2"}
    plain, costed = _block_net(), _block_net()
    pruning.prune_now(plain, 0.5, **options)
    pruning.prune_now(costed, 0.5, cost="flops", **options)
    gone = _pruned(costed)
    np.testing.assert_array_equal(gone["stem"], gone["project"])
    assert gone["stem"].sum() == 4 and gone["expand"].sum() == 5  # stem group at its floor
    assert _pruned(plain)["stem"].sum() < 4
    small, small_plain = pruning.shrink(costed), pruning.shrink(plain)
    assert _flops(small) < _flops(small_plain) < _flops(costed)
    _assert_same_moments(costed, small, np.random.default_rng(0).random((3, 8, 8, 3))
                         .astype("float32"))


@pytest.mark.parametrize("kwargs, match", [
    ({"cost": "latency"}, "Unknown `cost`.*cost='latency'"),
    ({"cost": "flops", "structure": "weight"}, "cost='flops' with structure='weight'"),
    ({"cost": "flops", "scope": "layer"}, "needs scope='global'.*cost='flops' with scope='layer'"),
    ({"cost_exponent": 0.5}, "cost_exponent=0.5 with cost=None"),
    ({"cost": "flops", "cost_exponent": 0.0}, "cost_exponent=0.0"),
    ({"cost": "flops", "cost_exponent": float("nan")}, "cost_exponent=nan"),
])
def test_bad_cost_options_name_the_argument(kwargs, match):
    options = {"structure": "filter", "scope": "global", **kwargs}
    with pytest.raises(ValueError, match=match):
        pruning.prune_now(_block_net(), 0.5, **options)
    with pytest.raises(ValueError, match=match):
        pruning.prune(_block_net(), **options)


def test_the_cost_is_recorded_in_the_config_and_round_trips():
    model = _block_net()
    pruning.prune(model, pruning.ConstantSparsity(0.5, 0), scope="global", structure="filter",
                  cost="params", cost_exponent=0.5)
    config = pruning.pruning_config(model)
    assert config.allocation() == {"min_channels": 1, "min_fraction": 0.0, "normalize": "none",
                                   "cost": "params", "cost_exponent": 0.5}
    assert pruning.PruningConfig.from_config(json.loads(json.dumps(config.get_config()))) \
        == config
