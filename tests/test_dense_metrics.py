"""Dense metrics against hand computations and independent references (sklearn, scipy)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import jaccard_score

from tfp_bcnn import metrics


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def random_segmentation(seed=0, shape=(3, 8, 8), classes=4):
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(0, 2, shape + (classes,)))
    labels = rng.integers(0, classes, shape)
    return probs, labels


# --------------------------------------------------------------------------
# Sparsification and AUSE
# --------------------------------------------------------------------------


def test_sparsification_by_hand():
    error = np.array([4.0, 3.0, 2.0, 1.0])
    # A perfect ranking follows the oracle: AUSE 0.
    perfect = metrics.sparsification_curve(error, error, num_fractions=4)
    np.testing.assert_allclose(perfect.fractions, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(perfect.oracle, [2.5, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(perfect.curve, perfect.oracle)
    assert perfect.ause == 0.0
    # The worst ranking removes the smallest errors first:
    # kept means 2.5, 3, 3.5, 4 -> sparsification error 0, 1, 2, 3, whose
    # trapezoid area with step 1/4 is 0.25 * (0/2 + 1 + 2 + 3/2) = 1.125.
    worst = metrics.sparsification_curve(-error, error, num_fractions=4)
    np.testing.assert_allclose(worst.curve, [2.5, 3.0, 3.5, 4.0])
    assert worst.ause == pytest.approx(1.125)
    # Random: flat at the mean 2.5 -> 0, 0.5, 1, 1.5 -> 0.25 * 2.25 = 0.5625.
    np.testing.assert_allclose(worst.random, 2.5)
    assert worst.ause_random == pytest.approx(0.5625)
    assert metrics.ause(error, error, num_fractions=4) == 0.0


def test_random_ranking_has_about_the_random_area():
    # 20,000 uniform errors ranked by an independent uniform "uncertainty": the
    # kept mean at every fraction has std <= 0.29 / sqrt(400) = 0.015 (at least
    # 400 pixels kept), and the area averages 50 such errors: 0.01 absolute
    # (4% of the 0.24 area) is several standard errors.
    rng = np.random.default_rng(0)
    error = rng.random(20_000)
    curve = metrics.sparsification_curve(rng.random(20_000), error)
    assert curve.ause_random == pytest.approx(0.24, abs=0.01)
    assert curve.ause == pytest.approx(curve.ause_random, abs=0.01)


def test_constant_uncertainty_is_a_random_ranking():
    # Ties are broken at random, not by storage order (errors sorted here).
    error = np.sort(np.random.default_rng(1).random(10_000))[::-1]
    curve = metrics.sparsification_curve(np.zeros_like(error), error)
    assert curve.ause == pytest.approx(curve.ause_random, abs=0.01)


# --------------------------------------------------------------------------
# Definitions against references
# --------------------------------------------------------------------------


def test_pixel_ece_is_the_ece_over_pixels():
    probs, labels = random_segmentation()
    flat = metrics.expected_calibration_error(probs.reshape(-1, 4), labels.ravel(), 10)
    assert metrics.pixel_expected_calibration_error(probs, labels, 10) == flat


def test_mean_iou_against_sklearn():
    probs, labels = random_segmentation(seed=2, classes=5)
    pred = probs.argmax(-1).ravel()
    present = np.union1d(pred, labels.ravel())
    reference = jaccard_score(labels.ravel(), pred, labels=present, average="macro")
    assert metrics.mean_iou(probs, labels) == pytest.approx(reference)
    onehot = np.eye(5)[labels]
    assert metrics.mean_iou(onehot, labels) == 1.0


def test_psnr_and_gaussian_nll_against_numpy_and_scipy():
    rng = np.random.default_rng(3)
    target = rng.random((4, 6, 6, 1))
    pred = target + 0.1 * np.sign(rng.normal(size=target.shape))  # MSE exactly 0.01
    assert metrics.psnr(pred, target) == pytest.approx(20.0)
    assert metrics.psnr(2 * pred, 2 * target, max_value=2.0) == pytest.approx(20.0)
    var = rng.uniform(0.01, 0.1, target.shape)
    reference = -stats.norm.logpdf(target, pred, np.sqrt(var)).mean()
    assert metrics.gaussian_nll_per_pixel(pred, var, target) == pytest.approx(reference)


def test_spearman_against_scipy():
    rng = np.random.default_rng(4)
    u = rng.random((2, 5, 5))
    e = np.round(u + rng.normal(0, 0.3, u.shape), 1)  # ties in the error
    reference = stats.spearmanr(u.ravel(), e.ravel()).statistic
    assert metrics.uncertainty_error_spearman(u, e) == pytest.approx(reference)


def test_summaries():
    probs, labels = random_segmentation(seed=5)
    entropy = -(probs * np.log(probs)).sum(-1)
    out = metrics.segmentation_summary(probs, labels, {"entropy": entropy})
    assert {"pixel_accuracy", "mean_iou", "nll", "pixel_ece", "ause_entropy",
            "ause_ratio_entropy", "spearman_entropy", "ause_random"} <= set(out)
    assert out["ause_ratio_entropy"] == pytest.approx(out["ause_entropy"] / out["ause_random"])
    rng = np.random.default_rng(6)
    target = rng.random((2, 4, 4, 1))
    mean = target + rng.normal(0, 0.1, target.shape)
    alea = np.full(target.shape, 0.01)
    epi = np.square(mean - target)  # an epistemic variance that ranks perfectly
    out = metrics.regression_summary(mean, alea, epi, target)
    assert out["ause_epistemic"] == pytest.approx(0.0, abs=1e-12)
    assert out["ause_ratio_total"] == pytest.approx(0.0, abs=1e-12)
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(epi)))


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.mean_iou(np.ones((2, 4, 4, 3)) / 3, np.zeros((2, 4)))
     , r"probs.shape=\(2, 4, 4, 3\), labels.shape=\(2, 4\)"),
    (lambda: metrics.sparsification_curve(np.ones(3), np.ones(4)),
     r"uncertainty.shape=\(3,\), error.shape=\(4,\)"),
    (lambda: metrics.sparsification_curve(np.ones(3), np.ones(3), num_fractions=1),
     "num_fractions=1"),
    (lambda: metrics.psnr(np.ones(3), np.ones(3), max_value=0), "max_value=0"),
    (lambda: metrics.gaussian_nll_per_pixel(np.ones(3), np.zeros(3), np.ones(3)),
     "variance"),
    (lambda: metrics.uncertainty_error_spearman(np.array([np.nan, 1.0]), np.ones(2)),
     "uncertainty"),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
