"""Export of rank-1 mixture models: TFLite (builtin ops) and SavedModel agree with Keras.

Two checks per sampling mode (``"lrt"``, ``"weights"``, ``"moments"``):

* with the factor noise switched off (sigma ~ 1e-8) every sample is a
  deterministic function of its component, so the file's samples must equal
  ``tfp_bcnn.predict``'s sample by sample (sample ``s`` from component
  ``floor(s K / S)`` in both) up to float32 rounding;
* with the trained noise the predictive means agree within 5 standard errors
  of the difference of two independent Monte Carlo means.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_bcnn
from tfp_bcnn import export, layers
from tfp_bcnn.export.runtime import TFLiteBayesianModel

pytestmark = pytest.mark.slow

K, S = 2, 8


def _model(std=0.2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.TileComponents(K),  # the builders' training input: identity when exported
        layers.Rank1Conv2D(3, 3, activation="relu", num_components=K, seed=1, kl_weight=0.01,
                           posterior_std_init=std),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        layers.Rank1Dense(4, activation="softmax", num_components=K, seed=2, kl_weight=0.01,
                          posterior_std_init=std),
    ])
    return model


def _x(n=6):
    return np.random.default_rng(0).random((n, 8, 8, 1)).astype("float32")


def _ops(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    return {d["op_name"] for d in interpreter._get_ops_details()}


@pytest.mark.parametrize("sampling", ["lrt", "weights", "moments"])
def test_tflite_zero_noise_equals_keras_sample_by_sample(tmp_path, sampling):
    model = _model(std=1e-8)
    x = _x()
    path = export.to_tflite(model, str(tmp_path / f"{sampling}.tflite"), num_samples=S,
                            sampling=sampling)
    assert not any("Flex" in op for op in _ops(path))
    p = TFLiteBayesianModel(path).predict(x, return_samples=True)
    ref = tfp_bcnn.predict(model, x, num_samples=S, return_samples=True,
                           method="moments" if sampling == "moments" else "mc")
    np.testing.assert_allclose(p.samples, ref.samples, atol=1e-4)
    np.testing.assert_allclose(p.mean, ref.mean, atol=1e-4)
    np.testing.assert_allclose(p.epistemic, ref.epistemic, atol=1e-4)
    assert np.max(ref.epistemic) > 1e-4  # the components do differ


@pytest.mark.parametrize("sampling", ["lrt", "moments"])
def test_tflite_and_saved_model_agree_with_keras_in_distribution(tmp_path, sampling):
    model = _model(std=0.2)
    x = _x(4)
    s_big = 256
    path = export.to_tflite(model, str(tmp_path / "m.tflite"), num_samples=s_big,
                            sampling=sampling)
    p = TFLiteBayesianModel(path).predict(x)
    method = "moments" if sampling == "moments" else "mc"
    ref = tfp_bcnn.predict(model, x, num_samples=s_big, return_samples=True, method=method)
    # SE of each mean: std / sqrt(S); of their difference: sqrt(2) times that.
    se = np.sqrt(2.0) * ref.samples.std(0) / np.sqrt(s_big)
    assert np.all(np.abs(p.mean - ref.mean) < 5 * se + 1e-6)
    saved = export.save_saved_model(model, str(tmp_path / "sm"), num_samples=s_big,
                                    sampling=sampling)
    loaded = tf.saved_model.load(saved)
    mean = loaded.signatures["serving_default"](images=tf.constant(x))["mean"].numpy()
    assert np.all(np.abs(mean - ref.mean) < 5 * se + 1e-6)


def test_num_samples_must_tile_the_components(tmp_path):
    with pytest.raises(ValueError, match="multiple of 2.*Received: num_samples=3"):
        export.to_tflite(_model(), str(tmp_path / "m.tflite"), num_samples=3)
