"""Dense figures: per-pixel uncertainty maps and sparsification curves."""

import numpy as np
import pytest

from tfp_bcnn import metrics, plots
from tfp_bcnn import predict as predict_dense
from tfp_bcnn._prediction import summarize, summarize_gaussian


def dense(prediction, shape):
    """A flat (pixels as examples) prediction reshaped to images."""
    fields = {k: (v.reshape(shape + v.shape[1:]) if isinstance(v, np.ndarray) else v)
              for k, v in vars(prediction).items()}
    return type(prediction)(**fields)


def test_uncertainty_maps_classes_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(np.ones(3), size=(4, 2 * 6 * 6))
    pred = dense(summarize(samples), (2, 6, 6))
    labels = rng.integers(0, 3, (2, 6, 6))
    path = plots.uncertainty_maps(rng.random((2, 6, 6, 1)), pred, tmp_path / "seg.png",
                                  target=labels, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gauss = np.concatenate([rng.random((4, 2 * 8 * 8, 1)), rng.uniform(0.1, 1, (4, 128, 1))],
                           axis=-1)
    reg = dense(summarize_gaussian(gauss), (2, 8, 8))
    out = plots.uncertainty_maps(rng.random((2, 4, 4, 1)), reg, tmp_path / "sr.png",
                                 target=rng.random((2, 8, 8, 1)), num_images=1)
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="num_images=0"):
        plots.uncertainty_maps(rng.random((2, 4, 4, 1)), reg, tmp_path / "x.png", num_images=0)
    with pytest.raises(ValueError, match=r"images.shape=\(4, 4\)"):
        plots.uncertainty_maps(rng.random((4, 4)), reg, tmp_path / "x.png")


def test_sparsification_plot(tmp_path):
    rng = np.random.default_rng(1)
    error = rng.random(500)
    curves = {"good": metrics.sparsification_curve(error + rng.normal(0, 0.1, 500), error),
              "random": metrics.sparsification_curve(rng.random(500), error)}
    assert plots.sparsification_plot(curves, tmp_path / "s.png").exists()
    assert plots.sparsification_plot(curves["good"], tmp_path / "one.png").exists()
    with pytest.raises(ValueError, match="curves"):
        plots.sparsification_plot({}, tmp_path / "e.png")


@pytest.mark.slow
def test_predict_dense_fields_per_pixel():
    import keras

    from tfp_bcnn import models

    x = np.random.default_rng(2).random((3, 16, 16, 1)).astype("float32")
    twin = models.unet((16, 16, 1), 3, base_filters=4, bayesian=False, seed=0)
    p = predict_dense(twin, x, num_samples=2)
    np.testing.assert_allclose(p.mean, keras.ops.convert_to_numpy(twin(x)), atol=1e-5)
    np.testing.assert_allclose(p.epistemic, 0.0, atol=1e-6)
    entropy = -(p.mean * np.log(np.maximum(p.mean, 1e-30))).sum(-1)
    np.testing.assert_allclose(p.predictive_entropy, entropy, atol=1e-5)
    bnn = models.unet((16, 16, 1), 3, base_filters=4, num_train_examples=5, seed=0,
                      posterior_std_init=0.1)
    p = predict_dense(bnn, x, num_samples=4, batch_size=2)
    assert p.mean.shape == (3, 16, 16, 3) and p.aleatoric.shape == (3, 16, 16)
    assert (p.epistemic > 0).mean() > 0.9
    np.testing.assert_allclose(p.predictive_entropy, p.aleatoric + p.epistemic, atol=1e-9)
