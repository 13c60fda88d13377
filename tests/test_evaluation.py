"""evaluation: OOD sets brought to the model's input (a 32x32x3 network on MNIST-like data)."""

import keras
import numpy as np
import pytest

from tfp_bcnn import datasets, evaluation, layers


def test_default_ood_sets_are_fitted_to_the_test_images():
    x = np.zeros((5, 32, 32, 3), "float32")
    sets = evaluation.ood_sets(None, x)
    assert set(sets) == {"letters", "noise"}
    letters = datasets.letters()[0]
    np.testing.assert_array_equal(sets["letters"], datasets.fit_images(letters, 32, 3))
    assert sets["noise"].shape == (5, 32, 32, 3)
    # padded around the centre (2 px at 32), the grey channel repeated
    assert np.all(sets["noise"][:, :2] == 0) and np.all(sets["noise"][:, 2:30, 2:30] > 0)
    np.testing.assert_array_equal(sets["noise"][..., 0], sets["noise"][..., 2])
    # 28x28x1 test images keep the sets as they are; non-square ones get none
    assert evaluation.ood_sets(None, np.zeros((2, 28, 28, 1)))["letters"].shape[1:] == \
        (28, 28, 1)
    assert evaluation.ood_sets(None, np.zeros((2, 32, 40, 3))) == {}


def test_given_ood_sets_are_fitted_or_refused_by_name():
    x = np.zeros((2, 32, 32, 3), "float32")
    own = np.random.default_rng(0).random((4, 64, 64, 3)).astype("float32")
    assert evaluation.ood_sets({"big": own}, x)["big"].shape == (4, 32, 32, 3)  # resized
    same = np.ones((3, 32, 32, 3), "float32")
    assert evaluation.ood_sets({"same": same}, x)["same"] is same
    with pytest.raises(ValueError, match=r"Received: ood\['two'\] with shape \(3, 28, 28, 2\)"):
        evaluation.ood_sets({"two": np.zeros((3, 28, 28, 2))}, x)


def test_evaluate_a_32x32x3_bayesian_classifier_with_the_default_ood_sets():
    inputs = keras.Input((32, 32, 3))
    h = layers.Conv2DFlipout(4, 5, strides=4, activation="relu", seed=0)(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, layers.DenseFlipout(10, activation="softmax", seed=1)(h))
    (_, _), (x, y) = datasets.mnist_5k()
    x32 = datasets.fit_images(x[:40], 32)
    report = evaluation.evaluate_classifier(model, x32, y[:40], num_samples=2, angles=(0, 90))
    assert set(report["ood"]) == {"letters", "noise"}
    assert report["_predictions"]["letters"].mean.shape == (len(datasets.letters()[0]), 10)
    assert 0.0 <= report["ood"]["noise"]["auroc_entropy"] <= 1.0
    assert report["ood"]["letters"]["auroc_epistemic"] is not None
    assert len(report["rotation"]) == 2
