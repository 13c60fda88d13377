"""Filter pruning and `pruning.shrink` through residual Add and depthwise layers.

Exactness is checked like tests/test_shrink.py: the sampling-free moments
(mean and variance of the logits, ordinary posterior stds) of the shrunk
model against the masked model, on the same inputs.
"""

import keras
import numpy as np
import pytest

import tfp_bcnn as bcnn
from tfp_bcnn import layers, models, moments, pruning

L = keras.layers
#: float32 sums in a different order through ~50 layers: ~1e-6 relative.
ATOL = 2e-5


def _calibrate_batchnorm(net, shape, seed=1):
    """Moving statistics from one training-mode call (an untrained net's
    activations vanish in inference mode with the initial moving variance 1)."""
    for layer in net.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.0
    x = np.random.default_rng(seed).random((16, *shape)).astype("float32")
    net(x, training=True)
    rng = np.random.default_rng(seed)
    for layer in net.layers:  # non-trivial affine parameters
        if isinstance(layer, L.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape).astype("float32"))


def _block_net():
    """conv -> BN -> ReLU6 -> [expand -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 ->
    project -> BN] -> Add (residual) -> pool -> dense: one inverted residual block."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="stem")(x)
    h = L.ReLU(6.0, name="stem_relu")(L.BatchNormalization(name="stem_bn")(h))
    e = L.Conv2D(12, 1, use_bias=False, name="expand")(h)
    e = L.ReLU(6.0, name="expand_relu")(L.BatchNormalization(name="expand_bn")(e))
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(e)
    d = L.ReLU(6.0, name="dw_relu")(L.BatchNormalization(name="dw_bn")(d))
    p = L.BatchNormalization(name="project_bn")(L.Conv2D(6, 1, use_bias=False,
                                                        name="project")(d))
    a = L.Add(name="add")([h, p])
    out = L.Dense(4, activation="softmax", name="head")(L.GlobalAveragePooling2D()(a))
    net = keras.Model(x, out)
    _calibrate_batchnorm(net, (8, 8, 3))
    return models.to_bayesian(net, num_train_examples=100, posterior_std_init=0.05, seed=0)


def _pruned(model):
    return {la.name: np.all(la.kernel_mask.numpy().reshape(-1, la.kernel_mask.shape[-1]) == 0,
                            axis=0)
            for la in bcnn.bayesian_layers(model) if "dw" not in la.name}


def _assert_same_moments(model, small, x):
    want, got = moments.propagate(model, x), moments.propagate(small, x)
    np.testing.assert_allclose(np.asarray(got.mean), np.asarray(want.mean), atol=ATOL)
    np.testing.assert_allclose(np.asarray(got.variance), np.asarray(want.variance),
                               rtol=1e-4, atol=ATOL)


def test_add_ties_channels_and_depthwise_follows():
    model = _block_net()
    pruning.prune_now(model, 0.5, criterion="l1", scope="layer", structure="filter")
    pruned = _pruned(model)
    # the Add's two inputs (stem, project) lose the same channels: one group
    np.testing.assert_array_equal(pruned["stem"], pruned["project"])
    assert pruned["stem"].sum() == 3 and pruned["expand"].sum() == 6
    dw = model.get_layer("dw").kernel_mask.numpy()  # (3, 3, 12, 1)
    np.testing.assert_array_equal(np.all(dw == 0, axis=(0, 1, 3)), pruned["expand"])
    for name, producer in [("dw_bn", "expand"), ("expand_bn", "expand"),
                           ("project_bn", "project"), ("stem_bn", "stem")]:
        bn = model.get_layer(name)
        assert np.all(bn.gamma.numpy()[pruned[producer]] == 0)
        assert np.all(bn.beta.numpy()[pruned[producer]] == 0)


def test_shrink_through_add_and_depthwise_keeps_the_function():
    model = _block_net()
    pruning.prune_now(model, 0.5, criterion="snr", scope="global", structure="filter")
    small = pruning.shrink(model)
    assert small.get_layer("expand").kernel_loc.shape[-1] < 12
    assert small.get_layer("dw").kernel_loc.shape[-2] == small.get_layer("expand").units
    assert small.get_layer("stem").units == small.get_layer("project").units < 6
    assert small.count_params() < 0.7 * model.count_params()
    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype("float32")
    _assert_same_moments(model, small, x)


def test_global_allocation_with_a_floor_spares_groups_and_shrinks_exactly():
    """Groups stem+project (6 channels) and expand (12): 9 of the 18 go in one
    L2-normalised ranking, each group keeping at least 4."""
    model = _block_net()
    pruning.prune_now(model, 0.5, criterion="l1", scope="global", structure="filter",
                      min_channels=4, normalize="l2")
    pruned = _pruned(model)
    np.testing.assert_array_equal(pruned["stem"], pruned["project"])
    assert pruned["stem"].sum() + pruned["expand"].sum() == 9
    assert (~pruned["stem"]).sum() >= 4 and (~pruned["expand"]).sum() >= 4
    small = pruning.shrink(model)
    assert small.get_layer("expand").units + small.get_layer("stem").units == 9
    _assert_same_moments(model, small, np.random.default_rng(0).random((3, 8, 8, 3))
                         .astype("float32"))


def test_a_revived_batchnorm_channel_is_kept():
    """A pruned channel whose normalisation is not zero any more (e.g. ``beta``
    moved in training without UpdatePruning) is not exactly 0: it stays."""
    model = _block_net()
    pruning.prune_now(model, 0.5, criterion="l1", scope="layer", structure="filter")
    gone = _pruned(model)["expand"]
    bn = model.get_layer("dw_bn")
    beta = bn.beta.numpy()
    beta[np.flatnonzero(gone)[0]] = 0.3
    bn.beta.assign(beta)
    small = pruning.shrink(model)
    assert small.get_layer("expand").units == 12 - gone.sum() + 1
    _assert_same_moments(model, small, np.random.default_rng(0).random((2, 8, 8, 3))
                         .astype("float32"))


@pytest.mark.slow
def test_update_pruning_holds_grouped_channels_at_zero():
    model = _block_net()
    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 4
    pruning.prune(model, pruning.ConstantSparsity(0.5, 0), criterion="l1", structure="filter")
    models.compile_bayesian(model, 1e-2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[pruning.UpdatePruning()])
    gone = _pruned(model)["expand"]
    assert gone.any()
    assert np.all(model.get_layer("dw_bn").beta.numpy()[gone] == 0)
    small = pruning.shrink(model)
    assert small.get_layer("expand").units == 12 - gone.sum()


def test_concatenate_is_refused_clearly():
    x = keras.Input((4, 4, 2))
    a = layers.Conv2DFlipout(2, 1, name="a")(x)
    b = layers.DepthwiseConv2DFlipout(3, padding="same", name="b")(a)
    c = L.Concatenate(name="cat")([a, b])
    model = keras.Model(x, layers.DenseFlipout(2, name="d")(L.GlobalAveragePooling2D()(c)))
    with pytest.raises(ValueError, match="Concatenate.*Received: layer='cat' \\(Concatenate\\)"):
        pruning.shrink(model)


@pytest.mark.slow
@pytest.mark.parametrize("allocation", [
    {"scope": "layer"},
    {"scope": "global", "normalize": "l2", "min_channels": 8, "min_fraction": 0.25},
])
def test_shrink_rebuilds_mobilenet_v2_smaller_with_the_same_function(allocation):
    from tfp_bcnn.pruning._groups import channel_groups

    det = models.mobilenet_v2(bayesian=False, seed=0)
    _calibrate_batchnorm(det, (32, 32, 3))
    model = models.to_bayesian(det, num_train_examples=100, posterior_std_init=0.01, seed=0)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter", **allocation)
    groups = [g for g in channel_groups(model) if g.prunable()]
    kept = [int((~pruning._masks.pruned_filters(g.producers[0])).sum()) for g in groups]
    total = sum(g.channels for g in groups)
    assert abs(total - sum(kept) - round(0.5 * total)) <= len(groups)  # ~50 % of channels
    if allocation["scope"] == "global":  # the floor: >= 8 and >= a quarter of each group
        assert all(k >= max(8, -(-g.channels // 4)) for k, g in zip(kept, groups))
        assert min(k for k, g in zip(kept, groups) if g.channels == 8) == 8
    small = pruning.shrink(model)
    assert small.count_params() < 0.6 * model.count_params()
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    _assert_same_moments(model, small, x)
