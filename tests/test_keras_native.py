"""The layers behave like native Keras 3 layers.

Keras' own layer harness (``keras.src.testing.TestCase.run_layer_test``: config
round trip, symbolic and eager calls, weight / seed-generator / loss counts, a
compiled training step and its mixed-precision check) on all twelve classes;
mixed precision (float16 and bfloat16) trains with float32 variables and a
float32 KL; ``model.export()`` serves a stochastic model;
``tf.lite.TFLiteConverter.from_keras_model`` fails with an error that names
``tfp_bcnn.export.to_tflite``; the KL metric of a reloaded model refuses to
log rather than log 0.
"""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.testing import TestCase

import tfp_bcnn
from tfp_bcnn import layers
from tfp_bcnn.layers._base import DRAW_SCOPE

from _backend import register, result

#: (batch, *spatial, channels) inputs of each rank; small so the harness is fast.
INPUT_SHAPES = {0: (2, 5), 1: (2, 6, 3), 2: (2, 5, 5, 3), 3: (2, 4, 4, 4, 3)}
OUTPUT_SHAPES = {0: (2, 4), 1: (2, 5, 4), 2: (2, 4, 4, 4), 3: (2, 3, 3, 3, 4)}
CLASSES = sorted(layers.LAYER_CLASSES.items(), key=lambda kv: kv[1].__name__)
IDS = [cls.__name__ for _, cls in CLASSES]


def _init_kwargs(rank):
    if rank == 0:
        return {"units": 4, "seed": 1}
    return {"filters": 4, "kernel_size": 2, "seed": 1}


@pytest.fixture
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("key,cls", CLASSES, ids=IDS)
def test_keras_layer_harness(key, cls):
    # One layer of each class through Keras' own checks, including the
    # training step and the mixed_float16 check (float32 weights, outputs in
    # the compute dtype). Weights: loc, rho, bias trainable; mask, kl_weight not.
    rank, _ = key
    TestCase().run_layer_test(
        cls,
        init_kwargs=_init_kwargs(rank),
        input_shape=INPUT_SHAPES[rank],
        expected_output_shape=OUTPUT_SHAPES[rank],
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=2,
        expected_num_seed_generators=1,
        expected_num_losses=1,
        supports_masking=False,
        run_training_check=True,
        run_mixed_precision_check=True,
    )


def _small_model(estimator, bayesian_bias=False):
    make = layers.layer_class
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            make(2, estimator)(4, 3, activation="relu", kl_weight=1 / 64, seed=1,
                               bayesian_bias=bayesian_bias, posterior_std_init=0.05),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            make(0, estimator)(3, kl_weight=1 / 64, seed=2, bayesian_bias=bayesian_bias,
                               posterior_std_init=0.05),
            keras.layers.Activation("softmax", dtype="float32"),
        ]
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
def test_mixed_precision_trains_with_float32_variables_and_kl(policy, estimator, float32_policy):
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    reference = _small_model(estimator, bayesian_bias=True)
    keras.mixed_precision.set_global_policy(policy)
    model = _small_model(estimator, bayesian_bias=True)
    model.set_weights(reference.get_weights())
    compute = policy.split("_")[1]
    bayesian = list(tfp_bcnn.kl.bayesian_layers(model))
    assert all(layer.compute_dtype == compute for layer in bayesian)
    assert {v.dtype for v in model.weights} == {"float32"}

    # The KL from the same weights is the float32 model's, to float32 rounding
    # (it is formed from float32 variables only).
    kl = tfp_bcnn.kl_divergence(model)
    assert keras.backend.standardize_dtype(kl.dtype) == "float32"
    np.testing.assert_allclose(
        float(kl), float(tfp_bcnn.kl_divergence(reference)), rtol=1e-6
    )
    out = bayesian[0](x)
    assert keras.backend.standardize_dtype(out.dtype) == compute
    loss_dtypes = {keras.backend.standardize_dtype(loss.dtype) for loss in bayesian[0].losses}
    assert loss_dtypes == {"float32"}

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=[tfp_bcnn.KLDivergence(model)])
    hist = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert {v.dtype for v in model.weights} == {"float32"}
    p = tfp_bcnn.predict(model, x, num_samples=4)
    np.testing.assert_allclose(p.mean.sum(-1), 1.0, atol=1e-3)  # float16 softmax rounding


def test_mixed_precision_keeps_pruned_weights_zero_without_nan(float32_policy):
    # Local reparameterization under float16: sigma^2 is formed in float32
    # (1e-6 is subnormal in float16); a fully pruned unit gets no noise and
    # its gradient stays finite.
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = layers.DenseLocalReparameterization(3, seed=0, posterior_std_init=1e-3)
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    layer(x)
    mask = np.ones((4, 3), "float32")
    mask[:, 0] = 0.0
    layer.kernel_mask.assign(mask)
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out[:, 0], 0.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(x), tf.float32)) + tf.add_n(layer.losses)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    np.testing.assert_array_equal(grads[1].numpy()[:, 0], 0.0)  # pruned rho: no gradient


@pytest.mark.parametrize("estimator", layers.ESTIMATORS)
def test_model_export_serves_a_stochastic_model(estimator, tmp_path):
    model = _small_model(estimator)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    model.export(str(tmp_path / "m"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "m"))
    a, b = served.serve(x).numpy(), served.serve(x).numpy()
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    # posterior std 0.05: two calls differ by far more than rounding.
    assert np.abs(a - b).max() > 1e-4
    # Keras' seeded draws: the seed state is saved, so a fresh load replays
    # the first load's sequence (as the README says).
    reloaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(reloaded.serve(x).numpy(), a)
    # Its mean over calls is the Keras model's predictive mean (up to MC error).
    served_mean = np.mean([served.serve(x).numpy() for _ in range(64)], axis=0)
    keras_mean = tfp_bcnn.predict(model, x, num_samples=64).mean
    assert np.abs(served_mean - keras_mean).max() < 0.05


@pytest.mark.slow
def test_model_export_and_exporters_from_mixed_precision(tmp_path, float32_policy):
    from tfp_bcnn import export

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _small_model("flipout")
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    model.export(str(tmp_path / "keras_export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "keras_export"))
    assert np.all(np.isfinite(served.serve(x).numpy()))
    # Our exporters rebuild every layer in float32 (TFLite has no float16 MaxPool).
    export.save_saved_model(model, tmp_path / "sm", num_samples=4)
    out = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](images=x)
    assert out["mean"].dtype == tf.float32
    path = export.to_tflite(model, tmp_path / "m.tflite", num_samples=4)
    p = export.runtime.TFLiteBayesianModel(path).predict(x)
    np.testing.assert_allclose(p.mean.sum(-1), 1.0, rtol=1e-5)
    assert np.abs(p.mean - tfp_bcnn.predict(model, x, num_samples=32).mean).max() < 0.2


def test_tflite_converter_from_keras_model_names_our_exporter():
    # Keras' seeded draws are stateless random ops, which TFLite runs only
    # with the Flex delegate; the converter reports each by its name scope.
    model = _small_model("flipout")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with pytest.raises(Exception, match=r"tfp_bcnn\.export\.to_tflite") as info:
        converter.convert()
    assert DRAW_SCOPE in str(info.value)
    assert "NoneType" not in str(info.value)


def test_kl_metric_of_a_reloaded_model_refuses_to_log(tmp_path):
    model = _small_model("flipout")
    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=[tfp_bcnn.KLDivergence(model)])
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    y = np.zeros(8, "int64")
    logged = model.evaluate(x, y, verbose=0, return_dict=True)["kl"]
    assert logged == pytest.approx(float(tfp_bcnn.kl_divergence(model)), rel=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"KLDivergence\(model\).*Received: model=None"):
        loaded.evaluate(x, y, verbose=0)
    # Compiled again with the metric bound to it, it logs the right value.
    loaded.compile("adam", "sparse_categorical_crossentropy",
                   metrics=[tfp_bcnn.KLDivergence(loaded)])
    again = loaded.evaluate(x, y, verbose=0, return_dict=True)["kl"]
    assert again == pytest.approx(logged, rel=1e-5)


JAX_HARNESS = register("keras_native_harness_mixed", textwrap.dedent(
        """
        import keras, numpy as np
        from keras.src.testing import TestCase
        import tfp_bcnn
        from tfp_bcnn import layers
        shapes = {0: (2, 5), 1: (2, 6, 3), 2: (2, 5, 5, 3), 3: (2, 4, 4, 4, 3)}
        for (rank, _), cls in layers.LAYER_CLASSES.items():
            kwargs = {"units": 4} if rank == 0 else {"filters": 4, "kernel_size": 2}
            TestCase().run_layer_test(cls, init_kwargs={**kwargs, "seed": 1},
                                      input_shape=shapes[rank], expected_num_losses=1,
                                      expected_num_seed_generators=1)
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
                x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
                y = np.arange(16) % 3
                model.compile("adam", "sparse_categorical_crossentropy")
                loss = model.fit(x, y, epochs=2, verbose=0).history["loss"]
                assert np.all(np.isfinite(loss)), (policy, est, loss)
                assert {v.dtype for v in model.weights} == {"float32"}, policy
                kl = tfp_bcnn.kl_divergence(model)
                assert str(kl.dtype) == "float32", kl.dtype
                p = model.predict(x, verbose=0)
                assert np.all(np.isfinite(p))
        report("OK")
        """
))


@pytest.mark.slow
def test_jax_layer_harness_and_mixed_precision_subprocess():
    # The same on the JAX backend: Keras' layer harness on the twelve
    # classes, then fit under both mixed policies.
    pytest.importorskip("jax")
    assert result(JAX_HARNESS) == "OK"


def test_gaussian_head_keras_harness_and_mixed_precision(float32_policy):
    TestCase().run_layer_test(
        layers.GaussianHead,
        init_kwargs={"units": 2},
        input_shape=(3, 5),
        expected_output_shape=(3, 4),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        supports_masking=False,
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    rng = np.random.default_rng(0)
    x = rng.random((32, 4)).astype("float32")
    y = (x @ np.ones((4, 1)) + 0.1 * rng.standard_normal((32, 1))).astype("float32")
    model = keras.Sequential([
        keras.Input((4,)),
        layers.DenseFlipout(8, activation="relu", kl_weight=1 / 32, seed=0),
        layers.GaussianHead(1),
    ])
    assert model.layers[-1].compute_dtype == "float16"
    # The NLL is formed in float32 (a float16 square overflows at 256 std).
    far = np.array([[0.0, 1e-3]], "float16")
    nll = tfp_bcnn.gaussian_nll(np.array([[1.0]], "float32"), far)
    assert np.isfinite(float(nll[0])) and float(nll[0]) > 4e5
    model.compile(keras.optimizers.Adam(1e-2), tfp_bcnn.gaussian_nll)
    loss = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
    p = tfp_bcnn.predict(model, x, num_samples=4)
    assert np.all(np.isfinite(p.mean))


def test_replica_seed_generator_default_name_is_a_valid_root_scope():
    # model.export() opens each generator's name as a root name scope; the
    # class-derived default ("__replica_seed_generator_N") was rejected.
    from tfp_bcnn.layers._base import _ReplicaSeedGenerator

    gen = _ReplicaSeedGenerator(0)
    assert not gen.name.startswith("_")
    with tf.name_scope(gen.name):
        pass


def test_model_builders_keep_the_output_in_float32(float32_policy):
    from tfp_bcnn import models

    keras.mixed_precision.set_global_policy("mixed_float16")
    for bayesian in (True, False):
        model = models.lenet5(num_train_examples=100, bayesian=bayesian)
        assert model.layers[0].compute_dtype == "float16"
        assert model.layers[-1].compute_dtype == "float32"
        out = model(np.zeros((2, 28, 28, 1), "float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"


@pytest.mark.slow
def test_moments_predict_and_export_from_mixed_precision(tmp_path, float32_policy):
    # The moment pass runs in float32 (the input's dtype) even where the
    # layers compute in float16: variances of 1e-6 are subnormal there.
    from tfp_bcnn import export

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _small_model("flipout")
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    p = tfp_bcnn.predict(model, x, num_samples=8, method="moments")
    np.testing.assert_allclose(p.mean.sum(-1), 1.0, rtol=1e-5)
    keras.mixed_precision.set_global_policy("float32")
    reference = _small_model("flipout")
    reference.set_weights(model.get_weights())
    out = tfp_bcnn.moments.propagate(model, x)
    ref = tfp_bcnn.moments.propagate(reference, x)
    assert keras.backend.standardize_dtype(out.mean.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out.variance),
                               keras.ops.convert_to_numpy(ref.variance), rtol=1e-5)
    path = export.to_tflite(model, tmp_path / "m.tflite", sampling="moments", num_samples=8)
    lite = export.runtime.TFLiteBayesianModel(path).predict(x)
    np.testing.assert_allclose(lite.mean.sum(-1), 1.0, rtol=1e-5)
