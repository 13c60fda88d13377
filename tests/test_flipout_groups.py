"""Flipout in `predict`: the S tiled copies of an example are independent draws.

A Flipout layer draws one kernel noise ``eps`` per call; `predict` tiles a
batch S times into one call, so the layers are called with
``sample_groups=S`` (one ``eps`` per copy, `BayesianLayer.grouped_linear`).
Without it the copies share ``eps`` and differ only by random signs: the
Monte Carlo mean converges to ``E[f | eps]``, not to ``E[f]``, and its
variance over repeated calls stops shrinking like ``1 / S``.
"""

import importlib.util
import inspect

import keras
import numpy as np
import pytest
from _backend import register, result

import tfp_bcnn as bcnn
from tfp_bcnn import _forward_runners, layers, uncertainty

S, REPEATS = 128, 24


def _net(conv: bool):
    """Few units and a wide posterior: ``E[f | eps]`` varies a lot with ``eps``."""
    keras.utils.set_random_seed(3)
    first = (layers.Conv2DFlipout(3, 3, activation="relu", posterior_std_init=0.7, seed=1)
             if conv else layers.DenseFlipout(3, activation="relu", posterior_std_init=0.7,
                                              seed=1))
    return keras.Sequential([
        keras.Input((4, 4, 1) if conv else (4,)), first, keras.layers.Flatten(),
        layers.DenseFlipout(3, activation="softmax", posterior_std_init=0.7, seed=2),
    ])


def _variance_ratio(model, x):
    """Variance over calls of the S-sample mean, over (per-sample variance / S).

    For independent samples it is ~1: each entry's sample variance of
    ``REPEATS`` means is a chi-square with ``REPEATS - 1`` degrees of freedom
    (relative sd ``sqrt(2 / 23) = 0.29``), and the ratio is averaged over
    ``N * C = 48`` entries. The per-sample variance is taken across all
    ``REPEATS * S`` samples (its own error is ~3%).
    """
    runs = np.stack([bcnn.predict(model, x, num_samples=S, return_samples=True).samples
                     for _ in range(REPEATS)])  # (R, S, N, C)
    var_of_mean = runs.mean(axis=1).var(axis=0, ddof=1)
    per_sample = runs.reshape(-1, *runs.shape[2:]).var(axis=0, ddof=1)
    keep = per_sample > 1e-4  # entries that do vary
    return float(np.mean(var_of_mean[keep] / (per_sample[keep] / S)))


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_predict_flipout_samples_are_independent(conv):
    """Tolerance: the ratio lies in [0.6, 1.6] for independent samples (seeds fixed;
    measured 0.93-1.10 over six seeds); copies sharing one ``eps`` give 6.6 (dense) and
    4.0 (conv) with the seeds fixed here (measured on the code before the fix)."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 4, 4, 1) if conv else (16, 4))
    model = _net(conv)
    assert uncertainty._can_tile(model)  # one tiled call, not S calls
    ratio = _variance_ratio(model, x.astype("float32"))
    assert 0.6 < ratio < 1.6, ratio


_KINDS = {
    "dense": (lambda: layers.DenseFlipout(2), (3,)),
    "dense_sequence": (lambda: layers.DenseFlipout(2), (4, 3)),
    "conv": (lambda: layers.Conv2DFlipout(2, 3), (5, 5, 3)),
    "pointwise": (lambda: layers.Conv2DFlipout(4, 1), (5, 5, 3)),
    "depthwise": (lambda: layers.DepthwiseConv2DFlipout(3, depth_multiplier=2), (5, 5, 3)),
    "transpose": (lambda: layers.Conv2DTransposeFlipout(2, 3, strides=2), (5, 5, 3)),
}


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_grouped_linear_is_one_linear_map_per_group(kind):
    """``grouped_linear``: group g of the rows through kernel g (against per-group maps)."""
    make, shape = _KINDS[kind]
    layer = make()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, *shape)).astype("float32")  # G=3 groups of b=2 rows
    layer.build(x.shape)
    kernels = rng.normal(size=(3, *layer.kernel_loc.shape)).astype("float32")
    got = keras.ops.convert_to_numpy(layer.grouped_linear(x, kernels))
    want = np.concatenate([keras.ops.convert_to_numpy(layer.linear(x[2 * g:2 * g + 2],
                                                                   kernels[g]))
                           for g in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sample_groups"):
        layer(x, sample_groups=0)


def test_rebuilt_graph_passes_groups_and_keeps_the_prefix():
    """A Flipout head on a deterministic body: tiled after the prefix, with groups."""
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3, name="body"),
        layers.DenseFlipout(2, activation="softmax", name="head"),
    ])
    late = _forward_runners._tiled_after_prefix(model, 8)
    names = [la.name for la in late.layers]
    assert names.index("tile_0") > names.index("body")
    node = late.get_layer("head")._inbound_nodes[-1]
    assert node.arguments.kwargs.get("sample_groups") == 8


def _jax_script() -> str:
    """The independence check above, run under JAX (the same `_net` / `_variance_ratio`)."""
    head = ("import keras, numpy as np\nimport tfp_bcnn as bcnn\n"
            "from tfp_bcnn import layers, uncertainty\n"
            f"S, REPEATS = {S}, {REPEATS}\n"
            "assert keras.backend.backend() == 'jax'\n")
    body = inspect.getsource(_net) + inspect.getsource(_variance_ratio)
    run = ("ratios = []\n"
           "for conv in (False, True):\n"
           "    keras.utils.set_random_seed(0)\n"
           "    x = np.random.default_rng(0).normal(size=(16, 4, 4, 1) if conv else (16, 4))\n"
           "    model = _net(conv)\n"
           "    assert uncertainty._can_tile(model)\n"
           "    ratios.append(_variance_ratio(model, x.astype('float32')))\n"
           "report(ratios)\n")
    return head + body + run


JAX_INDEPENDENT = register("jax_flipout_groups", _jax_script())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_predict_flipout_samples_are_independent_on_jax():
    """The same check and tolerance as on TensorFlow (the jitted runner of the rebuilt graph)."""
    for ratio in result(JAX_INDEPENDENT):
        assert 0.6 < ratio < 1.6, ratio
