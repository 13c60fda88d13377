"""Pruning of rank-1 mixture layers: masks on the shared W, zero in every component.

* ``prune_now`` (magnitude, weight): exactly ``round(s n)`` weights, the
  smallest ``|W|``, masked; every component's effective kernel is 0 there
  (outputs of the tiled training pass equal those of a model with W zeroed);
* ``prune`` + ``UpdatePruning`` inside ``fit`` with the tiled batch;
  ``strip`` writes W = 0 and changes no output;
* filter pruning zeroes the filter's bias in all K components; ``shrink``
  removes it (W, out factors, biases; the next layer's in factors) and the
  shrunk model computes the same function (factor noise off: exactly);
* ``criterion="snr"`` is refused (W has no posterior std).
"""

import keras
import numpy as np
import pytest

from tfp_bcnn import layers, models, pruning

K = 2
RHO_ZERO = -40.0


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.TileComponents(K),
        layers.Rank1Conv2D(6, 3, activation="relu", num_components=K, seed=1, kl_weight=0.01,
                           name="conv"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        layers.Rank1Dense(5, activation="relu", num_components=K, seed=2, kl_weight=0.01,
                          name="fc"),
        layers.Rank1Dense(3, activation="softmax", num_components=K, seed=3, kl_weight=0.01,
                          name="out"),
    ])


def _silence(model):
    for layer in model.layers:
        if isinstance(layer, layers.Rank1Layer):
            for v in (layer.in_factor_rho, layer.out_factor_rho):
                v.assign(np.full(v.shape, RHO_ZERO, "float32"))


def _x(n=4):
    return np.random.default_rng(0).random((n, 8, 8, 1)).astype("float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_magnitude_masks_smallest_shared_weights_in_every_component():
    model = _model()
    _silence(model)
    w = {la.name: _np(la.kernel).copy() for la in model.layers if hasattr(la, "kernel")}
    pruning.prune_now(model, 0.5, criterion="magnitude")
    for layer in model.layers:
        if not isinstance(layer, layers.Rank1Layer):
            continue
        mask = _np(layer.kernel_mask)
        n = mask.size
        assert int(np.sum(mask == 0)) == round(0.5 * n)
        order = np.argsort(np.abs(w[layer.name]).ravel(), kind="stable")
        assert np.all(mask.ravel()[order[:round(0.5 * n)]] == 0)
    report = pruning.sparsity(model)
    assert report["conv"] == pytest.approx(0.5, abs=1 / 54)
    # Reference: the same model with W zeroed where masked, masks removed.
    ref = _model()
    _silence(ref)
    ref.set_weights(model.get_weights())
    for a, b in zip(ref.layers, model.layers):
        if isinstance(a, layers.Rank1Layer):
            a.kernel.assign(_np(b.kernel) * _np(b.kernel_mask))
            a.kernel_mask.assign(np.ones(a.kernel_mask.shape, "float32"))
    x = _x()
    got, want = _np(model(x, training=True)), _np(ref(x, training=True))  # K copies each
    assert got.shape[0] == K * len(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_prune_in_fit_then_strip_changes_nothing():
    model = _model()
    pruning.prune(model, pruning.ConstantSparsity(0.6, begin_step=0), criterion="magnitude")
    models.compile_bayesian(model)
    x = _x(8)
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0,
              callbacks=[pruning.UpdatePruning()])
    assert pruning.sparsity(model)["total"] == pytest.approx(0.6, abs=0.01)
    _silence(model)
    before = _np(model(x))
    pruning.strip(model)
    for layer in model.layers:
        if isinstance(layer, layers.Rank1Layer):
            assert np.all(_np(layer.kernel)[_np(layer.kernel_mask) == 0] == 0)
    np.testing.assert_allclose(_np(model(x)), before, rtol=1e-6, atol=1e-7)


def test_filter_pruning_and_shrink_keep_the_function():
    model = _model()
    _silence(model)
    for layer in model.layers:  # distinct per-component biases, to see them zeroed
        if isinstance(layer, layers.Rank1Layer):
            layer.bias.assign(np.random.default_rng(1).normal(size=layer.bias.shape) * 0.1)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter")
    conv = model.get_layer("conv")
    gone = pruning._masks.pruned_filters(conv)
    assert gone.sum() == 3 and np.all(_np(conv.bias)[:, gone] == 0)  # all K components
    x = _x()
    before = _np(model(x, training=True))
    small = pruning.shrink(model)
    assert small.get_layer("conv").filters == 3 and small.get_layer("fc").units == 3
    assert small.get_layer("fc").in_factor_loc.shape == (K, 3 * 3 * 3)
    assert isinstance(small.layers[0], layers.TileComponents)
    np.testing.assert_allclose(_np(small(x, training=True)), before, rtol=1e-5, atol=1e-6)


def test_shrink_keeps_the_rank1_model_class():
    # the builders' Rank1Sequential wraps a plain loss for the K tiled copies; a shrunk
    # copy that fell back to keras.Sequential would fail on compile(loss=...) + fit
    model = models.lenet5(posterior="rank1", num_components=2, num_train_examples=100)
    pruning.prune_now(model, 0.5, criterion="l1", structure="filter")
    small = pruning.shrink(model)
    assert isinstance(small, models.Rank1Sequential)
    small.compile("adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, *model.input_shape[1:])).astype("float32")
    assert np.isfinite(small.train_on_batch(x, np.arange(4) % 10))


def test_snr_refused_for_rank1_layers():
    with pytest.raises(ValueError, match="Received: criterion='snr'"):
        pruning.prune_now(_model(), 0.5, criterion="snr")
