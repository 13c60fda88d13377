"""The PyTorch backend (``KERAS_BACKEND=torch``, CPU): layers, training, inference, pruning.

A process has one Keras backend, so the checks run in one torch subprocess
(``tests/_backend.py``) as two scripts, each reporting a dict of results that
the tests below read:

* ``torch_layers``: Keras' own ``run_layer_test`` (config round trip, symbolic
  and eager calls, weight / seed-generator / loss counts, a training step,
  its mixed-precision check) on every layer class: the twelve
  {Conv1D,2D,3D,Dense} x estimator classes, the fifteen edge classes
  (depthwise, transposed), the four rank-1 classes, `GaussianHead` and
  `MCDropout`; the noise of every estimator differs between calls and
  between rows; mixed-precision training keeps float32 variables and KL; and
  the moment rule of a Bayesian linear layer (every rank) against Monte
  Carlo samples of the same layer drawn by torch (tolerance: 5 / 6 standard
  errors of the sample mean / variance, as in ``test_moments.py``: a correct
  rule fails with probability below 1e-6 per element).
* ``torch_workflow``: a Flipout LeNet-5 on the scikit-learn digits trained
  with the ``kl`` metric (loss falls; the KL is counted once); ``predict``
  with ``method="mc"`` and ``"moments"``; rank-1 and MC-dropout LeNet-5s;
  ``prune`` / ``UpdatePruning`` / ``strip`` / ``prune_now`` / ``shrink``;
  ``to_bayesian``; ``.keras`` save and load.

The subprocess runs torch with one OpenMP thread (``tests/_backend.py``):
on the shared 2-core machine, torch's spinning worker threads made an
epoch ~30x slower under load (measured 17 s against 0.56 s for a
frequentist LeNet-5 epoch on the digits).
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
from _backend import register, result

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="torch is not installed (the dev extra)"),
]

LAYERS = register("torch_layers", textwrap.dedent(
    """
    import traceback
    import keras, numpy as np
    from keras.src.testing import TestCase
    import tfp_bcnn
    from tfp_bcnn import layers, moments
    assert keras.backend.backend() == "torch"
    out = {"harness": {}}
    SHAPES = {0: (2, 5), 1: (2, 6, 3), 2: (2, 5, 5, 3), 3: (2, 4, 4, 4, 3)}

    def harness(cls, **kwargs):
        try:
            TestCase().run_layer_test(cls, **kwargs)
            out["harness"][cls.__name__] = "ok"
        except Exception:
            out["harness"][cls.__name__] = traceback.format_exc()[-1500:]

    for (rank, _), cls in layers.LAYER_CLASSES.items():
        kw = {"units": 4} if rank == 0 else {"filters": 4, "kernel_size": 2}
        harness(cls, init_kwargs={**kw, "seed": 1}, input_shape=SHAPES[rank],
                expected_num_trainable_weights=3, expected_num_non_trainable_weights=2,
                expected_num_losses=1, expected_num_seed_generators=1,
                supports_masking=False, run_mixed_precision_check=True)
    for (rank, _), cls in layers.DEPTHWISE_CLASSES.items():
        harness(cls, init_kwargs={"kernel_size": 2, "seed": 1}, input_shape=SHAPES[rank],
                expected_num_losses=1, expected_num_seed_generators=1, supports_masking=False)
    for (rank, _), cls in layers.TRANSPOSE_CLASSES.items():
        harness(cls, init_kwargs={"filters": 4, "kernel_size": 2, "seed": 1},
                input_shape=SHAPES[rank], expected_num_losses=1,
                expected_num_seed_generators=1, supports_masking=False)
    for rank in range(4):
        kw = {"units": 3} if rank == 0 else {"filters": 2, "kernel_size": 2}
        harness(layers.rank1_class(rank),
                init_kwargs={**kw, "num_components": 2, "seed": 1, "kl_weight": 0.01},
                input_shape=(4, *SHAPES[rank][1:]), expected_num_trainable_weights=6,
                expected_num_non_trainable_weights=2, expected_num_seed_generators=1,
                expected_num_losses=1, supports_masking=False, run_mixed_precision_check=True)
    harness(layers.GaussianHead, init_kwargs={"units": 2}, input_shape=(3, 5),
            expected_output_shape=(3, 4), expected_num_trainable_weights=2,
            supports_masking=False)
    harness(layers.MCDropout, init_kwargs={"rate": 0.3, "seed": 1}, input_shape=(3, 5),
            expected_output_shape=(3, 5), expected_num_seed_generators=1)

    # Noise: two calls differ, and two equal rows of one call differ.
    x = np.repeat(np.random.default_rng(0).random((1, 6, 6, 2), dtype=np.float32), 4, 0)
    out["noise"] = {}
    for est in layers.ESTIMATORS:
        layer = layers.layer_class(2, est)(3, 3, posterior_std_init=0.1, seed=3)
        a, b = (keras.ops.convert_to_numpy(layer(x)) for _ in range(2))
        out["noise"][est] = [float(np.abs(a - b).max()), float(np.abs(a[0] - a[1]).max())]

    # Mixed precision: float32 variables and KL, finite losses.
    out["mixed"] = {}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        for est in layers.ESTIMATORS:
            model = keras.Sequential([
                keras.Input((8, 8, 1)),
                layers.layer_class(2, est)(4, 3, activation="relu", kl_weight=1 / 64, seed=1),
                keras.layers.Flatten(),
                layers.layer_class(0, est)(3, kl_weight=1 / 64, seed=2),
                keras.layers.Activation("softmax", dtype="float32"),
            ])
            xm = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
            model.compile("adam", "sparse_categorical_crossentropy")
            loss = model.fit(xm, np.arange(16) % 3, epochs=2, verbose=0).history["loss"]
            out["mixed"][policy + "/" + est] = [
                bool(np.all(np.isfinite(loss))), sorted({v.dtype for v in model.weights}),
                str(tfp_bcnn.kl_divergence(model).dtype)]
    keras.mixed_precision.set_global_policy("float32")

    # Moments of a Bayesian linear layer (local reparameterization: every
    # output row is an exact joint sample) against 20,000 torch draws.
    SH = {0: ((5,), {}), 1: ((8, 3), {"kernel_size": 3}), 2: ((6, 6, 2), {"kernel_size": 3}),
          3: ((4, 4, 4, 2), {"kernel_size": 2})}
    out["moments"] = {}
    rng = np.random.default_rng(0)
    for rank, (shape, kw) in SH.items():
        layer = layers.layer_class(rank, "local_reparameterization")(
            3, posterior_std_init=0.3, seed=rank, bayesian_bias=True,
            bias_initializer="random_normal", **kw)
        layer.build((None, *shape))
        layer.kernel_mask.assign((rng.random(layer.kernel_mask.shape) > 0.3).astype("f4"))
        mu, var = rng.normal(size=(1, *shape)), rng.uniform(0.05, 0.5, size=(1, *shape))
        prop = moments._Propagator("separate", moments.default_kernel_moments)
        g = moments._Gaussian(keras.ops.convert_to_tensor(mu, "float32"),
                              keras.ops.convert_to_tensor(var, "float32"), positive=True)
        res = prop._apply_pending(prop.layer(layer, [g], final=False))
        m_rule = np.asarray(keras.ops.convert_to_numpy(res.mean), np.float64)[0]
        v_rule = np.asarray(keras.ops.convert_to_numpy(res.var), np.float64)[0]
        n = 20000
        xs = (mu + np.sqrt(var) * rng.standard_normal((n, *shape))).astype("float32")
        y = np.asarray(keras.ops.convert_to_numpy(layer(xs, training=False)), np.float64)
        m = y.mean(0); c = y - m; v = (c ** 2).mean(0); m4 = (c ** 4).mean(0)
        se_m, se_v = np.sqrt(v / n), np.sqrt(np.maximum(m4 - v ** 2, 0) / n)
        out["moments"][rank] = [float(np.max(np.abs(m_rule - m) / (5 * se_m + 1e-5))),
                                float(np.max(np.abs(v_rule - v) / (6 * se_v + 1e-7)))]
    report(out)
    """
), backend="torch")


@pytest.fixture(scope="module")
def torch_layers():
    return result(LAYERS, backend="torch", timeout=400)


def test_keras_layer_harness_on_every_class(torch_layers):
    harness = torch_layers["harness"]
    failed = {name: err for name, err in harness.items() if err != "ok"}
    assert not failed, failed
    # 12 mean-field + 6 depthwise + 9 transposed + 4 rank-1 + head + dropout
    assert len(harness) == 33, sorted(harness)


def test_noise_differs_between_calls_and_rows(torch_layers):
    for est, (between_calls, between_rows) in torch_layers["noise"].items():
        assert between_calls > 1e-4, est
        if est != "reparameterization":  # one kernel per call: equal rows agree
            assert between_rows > 1e-4, est


def test_mixed_precision_keeps_float32_variables_and_kl(torch_layers):
    assert len(torch_layers["mixed"]) == 6
    for key, (finite, dtypes, kl_dtype) in torch_layers["mixed"].items():
        assert finite, key
        assert dtypes == ["float32"], key
        assert kl_dtype == "torch.float32", key


def test_layer_moments_match_torch_samples(torch_layers):
    # Each figure is the largest |rule - MC| over the allowed deviation (5 SE
    # for the mean, 6 SE for the variance): <= 1 passes.
    assert len(torch_layers["moments"]) == 4
    for rank, (mean_ratio, var_ratio) in torch_layers["moments"].items():
        assert mean_ratio <= 1.0, (rank, mean_ratio)
        assert var_ratio <= 1.0, (rank, var_ratio)
