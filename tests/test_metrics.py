"""Tests for tfp_bcnn.metrics: hand-computed values and independent references."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import log_loss

from tfp_bcnn import metrics


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's per-test Keras seed / clear_session: these tests
    build no Keras state, and clear_session's gc.collect costs ~1-2 s a test
    on a loaded machine."""
    yield


# A small example whose every metric is worked out by hand below.
# predicted classes: 0, 1, 2, 0; correct: yes, yes, no, no.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # label 0, conf 0.7, correct
        [0.1, 0.8, 0.1],  # label 1, conf 0.8, correct
        [0.3, 0.3, 0.4],  # label 0, conf 0.4, wrong
        [0.5, 0.25, 0.25],  # label 2, conf 0.5, wrong
    ]
)
LABELS = np.array([0, 1, 0, 2])


def _random_probs(seed, num_examples=2000, num_classes=10):
    """Softmax of scaled Gaussian logits plus a few one-hot and tied rows."""
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.standard_normal((num_examples, num_classes))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[:20] = np.eye(num_classes)[rng.integers(0, num_classes, 20)]  # conf == 1
    probs[20:30] = 0.0
    probs[20:30, :2] = 0.5  # conf == 0.5 on a bin edge, argmax tie
    # Labels agree with the argmax ~60% of the time so bins hold both outcomes.
    labels = np.where(
        rng.random(num_examples) < 0.6,
        probs.argmax(axis=1),
        rng.integers(0, num_classes, num_examples),
    )
    return probs, labels


class TestHandComputed:
    def test_accuracy(self):
        # 2 of 4 correct.
        assert metrics.accuracy(PROBS, LABELS) == 0.5

    def test_negative_log_likelihood(self):
        # -(ln 0.7 + ln 0.8 + ln 0.3 + ln 0.25) / 4
        # = (0.356675 + 0.223144 + 1.203973 + 1.386294) / 4 = 0.792522
        expected = -(math.log(0.7) + math.log(0.8) + math.log(0.3) + math.log(0.25)) / 4
        assert expected == pytest.approx(0.792522, abs=1e-6)
        assert metrics.negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected)

    def test_brier_score(self):
        # row 0: 0.3^2 + 0.2^2 + 0.1^2           = 0.14
        # row 1: 0.1^2 + 0.2^2 + 0.1^2           = 0.06
        # row 2: 0.7^2 + 0.3^2 + 0.4^2           = 0.74
        # row 3: 0.5^2 + 0.25^2 + 0.75^2         = 0.875
        # mean = 1.815 / 4                       = 0.45375
        assert metrics.brier_score(PROBS, LABELS) == pytest.approx(0.45375)

    def test_ece_one_example_per_bin(self):
        # 10 bins: confidences 0.7, 0.8, 0.4, 0.5 each sit alone in a bin, so
        # ECE = (|1 - 0.7| + |1 - 0.8| + |0 - 0.4| + |0 - 0.5|) / 4 = 0.35
        assert metrics.expected_calibration_error(PROBS, LABELS, 10) == pytest.approx(
            0.35
        )

    def test_ece_bin_edge_convention(self):
        # 2 bins [0, 0.5) and [0.5, 1]: conf 0.5 goes to the upper bin (tfp's rule).
        # bin 0: {0.4 wrong}             acc 0,   conf 0.4  -> 1/4 * 0.4 = 0.1
        # bin 1: {0.7 ok, 0.8 ok, 0.5 no} acc 2/3, conf 2/3 -> 3/4 * 0   = 0
        # ECE = 0.1 (with (lo, hi] bins it would be 0.35 instead)
        assert metrics.expected_calibration_error(PROBS, LABELS, 2) == pytest.approx(
            0.1
        )

    def test_reliability_curve(self):
        curve = metrics.reliability_curve(PROBS, LABELS, num_bins=2)
        np.testing.assert_allclose(curve.bin_edges, [0.0, 0.5, 1.0])
        np.testing.assert_array_equal(curve.counts, [1, 3])
        np.testing.assert_allclose(curve.confidence, [0.4, 2 / 3])
        np.testing.assert_allclose(curve.accuracy, [0.0, 2 / 3])
        assert curve.num_bins == 2
        assert curve.ece == pytest.approx(0.1)

    def test_reliability_curve_empty_bins_are_nan(self):
        curve = metrics.reliability_curve(PROBS, LABELS, num_bins=10)
        empty = curve.counts == 0
        assert empty.sum() == 6
        assert np.isnan(curve.accuracy[empty]).all()
        assert np.isnan(curve.confidence[empty]).all()
        assert curve.counts.sum() == 4

    def test_summary(self):
        result = metrics.summary(PROBS, LABELS, num_bins=10)
        assert result == pytest.approx(
            {"accuracy": 0.5, "nll": 0.7925215, "brier": 0.45375, "ece": 0.35}, abs=1e-6
        )
        assert all(type(value) is float for value in result.values())


class TestEdgeCases:
    def test_perfect_one_hot(self):
        labels = np.array([2, 0, 1, 1])
        probs = np.eye(3)[labels]
        assert metrics.brier_score(probs, labels) == 0.0
        assert metrics.negative_log_likelihood(probs, labels) == 0.0
        assert metrics.accuracy(probs, labels) == 1.0
        assert metrics.expected_calibration_error(probs, labels) == 0.0

    def test_confidently_wrong(self):
        # Brier reaches its maximum 2; NLL is capped at -log(eps).
        probs = np.array([[1.0, 0.0], [0.0, 1.0]])
        labels = np.array([1, 0])
        assert metrics.brier_score(probs, labels) == 2.0
        assert metrics.negative_log_likelihood(probs, labels) == pytest.approx(
            -math.log(1e-12)
        )
        assert metrics.negative_log_likelihood(
            probs, labels, eps=1e-3
        ) == pytest.approx(-math.log(1e-3))

    def test_accepts_lists_float32_and_int32(self):
        probs = PROBS.astype(np.float32)
        assert metrics.brier_score(probs, LABELS.astype(np.int32)) == pytest.approx(
            0.45375, abs=1e-6
        )
        assert metrics.accuracy(PROBS.tolist(), LABELS.tolist()) == 0.5


class TestAgainstReferences:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_nll_matches_sklearn_and_numpy(self, seed):
        probs, labels = _random_probs(seed)
        probs = 0.98 * probs + 0.002  # no zero probabilities, so no clipping anywhere
        direct = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        reference = log_loss(labels, probs, labels=np.arange(probs.shape[1]))
        ours = metrics.negative_log_likelihood(probs, labels)
        assert ours == pytest.approx(direct, rel=1e-12)
        assert ours == pytest.approx(reference, rel=1e-9)

    @pytest.mark.parametrize("num_bins", [1, 10, 15])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_ece_matches_tfp(self, seed, num_bins):
        tf = pytest.importorskip("tensorflow")
        tfp = pytest.importorskip("tensorflow_probability")
        probs, labels = _random_probs(seed)
        # tfp mixes float32 counts with logits-dtype means, so it needs float32
        # logits; the float32 round trip moves probabilities by ~1e-7, far
        # below the 1e-5 tolerance, and no confidence is that close to an edge
        # except the exact 0.5 and 1.0 rows, which are exact in float32 too.
        with np.errstate(divide="ignore"):
            logits = np.log(probs).astype(np.float32)
        reference = tfp.stats.expected_calibration_error(
            num_bins, logits=logits, labels_true=tf.constant(labels, tf.int64)
        )
        ours = metrics.expected_calibration_error(probs, labels, num_bins)
        assert ours == pytest.approx(float(reference), abs=1e-5)

    def test_ece_matches_tfp_on_hand_example(self):
        tf = pytest.importorskip("tensorflow")
        tfp = pytest.importorskip("tensorflow_probability")
        for num_bins in (2, 10):
            reference = tfp.stats.expected_calibration_error(
                num_bins,
                logits=np.log(PROBS).astype(np.float32),
                labels_true=tf.constant(LABELS, tf.int64),
            )
            ours = metrics.expected_calibration_error(PROBS, LABELS, num_bins)
            assert ours == pytest.approx(float(reference), abs=1e-6)

    def test_brier_is_tfp_brier_plus_one(self):
        tf = pytest.importorskip("tensorflow")
        tfp = pytest.importorskip("tensorflow_probability")
        probs, labels = _random_probs(3, num_examples=300)
        probs = 0.98 * probs + 0.002
        reference = tfp.stats.brier_score(
            labels=tf.constant(labels), logits=tf.constant(np.log(probs))
        )
        ours = metrics.brier_score(probs, labels)
        assert ours == pytest.approx(float(tf.reduce_mean(reference)) + 1.0, abs=1e-9)


class TestOOD:
    def test_perfectly_separable(self):
        scores_in = np.array([0.0, 0.1, 0.2])
        scores_out = np.array([0.5, 0.9])
        assert metrics.ood_auroc(scores_in, scores_out) == 1.0
        assert metrics.ood_aupr(scores_in, scores_out) == 1.0
        # The score ranks the wrong way round: AUROC 0.
        assert metrics.ood_auroc(scores_out, scores_in) == 0.0

    def test_identical_distributions(self):
        # Under the null, the AUROC of n = 2000 vs 2000 has standard error
        # sqrt((n1 + n2 + 1) / (12 n1 n2)) ~= 0.0091; 0.04 is ~4.4 sigma.
        rng = np.random.default_rng(0)
        scores_in = rng.standard_normal(2000)
        scores_out = rng.standard_normal(2000)
        assert metrics.ood_auroc(scores_in, scores_out) == pytest.approx(0.5, abs=0.04)
        # Chance-level AUPR is the OOD fraction, here 0.5.
        assert metrics.ood_aupr(scores_in, scores_out) == pytest.approx(0.5, abs=0.04)

    def test_all_tied_scores(self):
        assert metrics.ood_auroc(np.zeros(5), np.zeros(3)) == 0.5

    def test_auroc_is_mann_whitney_u(self):
        # AUROC = U / (n_in * n_out), ties counted 1/2 (integer scores make ties).
        rng = np.random.default_rng(1)
        scores_in = rng.integers(0, 10, 300)
        scores_out = rng.integers(3, 13, 200)
        u = stats.mannwhitneyu(scores_out, scores_in).statistic
        assert metrics.ood_auroc(scores_in, scores_out) == pytest.approx(
            u / (300 * 200)
        )


BAD_PROBS_LABELS = [
    pytest.param(PROBS[0], LABELS[:1], r"probs\.shape=\(3,\)", id="probs-1d"),
    pytest.param(PROBS[None], LABELS, r"probs\.shape=\(1, 4, 3\)", id="probs-3d"),
    pytest.param(
        np.zeros((0, 3)), np.zeros(0, int), r"probs\.shape=\(0, 3\)", id="empty"
    ),
    pytest.param(PROBS, LABELS[:, None], r"labels\.shape=\(4, 1\)", id="labels-2d"),
    pytest.param(
        PROBS, np.eye(3)[[0, 1, 0, 2]], r"labels\.shape=\(4, 3\)", id="one-hot"
    ),
    pytest.param(
        PROBS, LABELS.astype(float), r"labels\.dtype=float64", id="float-labels"
    ),
    pytest.param(
        PROBS, LABELS[:3], r"probs\.shape=\(4, 3\), labels\.shape=\(3,\)", id="length"
    ),
    pytest.param(PROBS, np.array([0, 1, 3, 2]), r"\[0, 3\).*\[3\]", id="label-too-big"),
    pytest.param(PROBS, np.array([0, -1, 0, 2]), r"\[-1\]", id="label-negative"),
    pytest.param(
        np.where(PROBS == 0.8, np.nan, PROBS), LABELS, r"probs\[1, 1\]=nan", id="nan"
    ),
    pytest.param(
        np.where(PROBS == 0.8, np.inf, PROBS), LABELS, r"probs\[1, 1\]=inf", id="inf"
    ),
    pytest.param(
        np.array([[1.2, -0.2], [0.5, 0.5]]),
        np.array([0, 1]),
        r"probs\[0, 1\]=-0\.2",
        id="neg",
    ),
    pytest.param(
        np.array([[0.5, 0.5], [0.6, 0.5], [0.5, 0.4999]]),
        np.array([0, 1, 0]),
        r"probs\[1\]\.sum\(\)=1\.1",
        id="row-sum",
    ),
    pytest.param(
        np.array([[2.0, -1.0], [0.5, 0.5]]), np.array([0, 1]), r"logits", id="logits"
    ),
]


@pytest.mark.parametrize(
    "fn",
    [
        metrics.accuracy,
        metrics.negative_log_likelihood,
        metrics.brier_score,
        metrics.expected_calibration_error,
        metrics.reliability_curve,
        metrics.summary,
    ],
    ids=lambda fn: fn.__name__,
)
@pytest.mark.parametrize("probs, labels, match", BAD_PROBS_LABELS)
def test_bad_probs_labels_raise(fn, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, labels)


def test_row_sum_within_tolerance_is_accepted():
    probs = np.array([[0.5, 0.5005], [0.3, 0.6995]])
    assert metrics.accuracy(probs, np.array([1, 1])) == 1.0


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True, None])
def test_bad_num_bins_raise(num_bins):
    with pytest.raises(ValueError, match=rf"num_bins={num_bins!r}"):
        metrics.expected_calibration_error(PROBS, LABELS, num_bins=num_bins)
    with pytest.raises(ValueError, match=rf"num_bins={num_bins!r}"):
        metrics.reliability_curve(PROBS, LABELS, num_bins=num_bins)


def test_bad_eps_raises():
    with pytest.raises(ValueError, match=r"eps=0\.0"):
        metrics.negative_log_likelihood(PROBS, LABELS, eps=0.0)


@pytest.mark.parametrize(
    "fn", [metrics.ood_auroc, metrics.ood_aupr], ids=lambda f: f.__name__
)
@pytest.mark.parametrize(
    "scores_in, scores_out, match",
    [
        pytest.param([], [1.0], r"scores_in.*shape=\(0,\)", id="empty-in"),
        pytest.param([1.0], [], r"scores_out.*shape=\(0,\)", id="empty-out"),
        pytest.param([0.1, np.nan], [1.0], r"scores_in\[1\]=nan", id="nan-in"),
        pytest.param([0.1], [np.inf, 1.0], r"scores_out\[0\]=inf", id="inf-out"),
        pytest.param([[0.1, 0.2]], [1.0], r"scores_in\.shape=\(1, 2\)", id="2d"),
        pytest.param(["a"], [1.0], r"scores_in\.dtype=<U1", id="strings"),
    ],
)
def test_bad_scores_raise(fn, scores_in, scores_out, match):
    with pytest.raises(ValueError, match=match):
        fn(scores_in, scores_out)


# --------------------------------------------------------------------------- #
# Temperature scaling
# --------------------------------------------------------------------------- #
def _overconfident_toy(n, seed, sharpen=3.0, num_classes=5):
    """Labels drawn from softmax(z); the 'model' reports softmax(sharpen * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, num_classes))
    p_true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(num_classes, p=p) for p in p_true])
    return sharpen * z, labels


def test_fit_temperature_recovers_the_sharpening_and_lowers_held_out_nll():
    val_logits, val_labels = _overconfident_toy(3000, seed=0)
    test_logits, test_labels = _overconfident_toy(3000, seed=1)
    t = metrics.fit_temperature(val_logits, val_labels, from_logits=True)
    assert isinstance(t, float) and t > 0
    # the data were generated at T = 3; with 3,000 examples the maximum
    # likelihood estimate is within about 5 % of it (its std is ~2 %)
    assert abs(t - 3.0) < 0.15
    # independent reference: a brute-force grid of the NLL over T
    grid = np.linspace(1.0, 6.0, 2001)
    nll = [metrics.negative_log_likelihood(
        metrics.apply_temperature(val_logits, g, from_logits=True), val_labels) for g in grid]
    assert abs(t - grid[int(np.argmin(nll))]) < 5e-3
    # fitted on the validation half, it lowers the NLL of the held-out half
    before = metrics.negative_log_likelihood(
        metrics.apply_temperature(test_logits, 1.0, from_logits=True), test_labels)
    after = metrics.negative_log_likelihood(
        metrics.apply_temperature(test_logits, t, from_logits=True), test_labels)
    assert after < before - 0.1
    # the same from probabilities (log p differs from z by a per-row constant)
    probs = metrics.apply_temperature(val_logits, 1.0, from_logits=True)
    assert abs(metrics.fit_temperature(probs, val_labels) - t) < 1e-3


def test_apply_temperature_identity_argmax_and_dtype():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=50).astype("float32")
    out = metrics.apply_temperature(probs, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, probs, rtol=1e-5, atol=1e-7)
    for t in (0.3, 2.5):
        scaled = metrics.apply_temperature(probs, t)
        np.testing.assert_array_equal(scaled.argmax(1), probs.argmax(1))
        np.testing.assert_allclose(scaled.sum(1), 1.0, rtol=1e-5)
    # T > 1 flattens: the confidence never rises
    assert np.all(metrics.apply_temperature(probs, 2.5).max(1) <= probs.max(1) + 1e-6)
    # zero probabilities stay finite and at the bottom
    hard = np.array([[1.0, 0.0], [0.3, 0.7]])
    np.testing.assert_allclose(metrics.apply_temperature(hard, 1.0), hard, atol=1e-12)


def test_fit_temperature_on_separable_data_goes_to_the_lower_bound():
    # every example correct: the NLL falls monotonically as T -> 0, so the
    # search ends near the lower bound, where the NLL is 0 to rounding
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    t = metrics.fit_temperature(logits, np.array([0, 1]), from_logits=True)
    assert metrics.TEMPERATURE_BOUNDS[0] <= t < 0.1
    scaled = metrics.apply_temperature(logits, t, from_logits=True)
    assert metrics.negative_log_likelihood(scaled, np.array([0, 1])) < 1e-10


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        pytest.param((PROBS[0], LABELS), {}, r"probs\.shape=", id="1d"),
        pytest.param((PROBS, LABELS[:-1]), {}, r"labels\.shape=", id="length"),
        pytest.param((np.array([[0.5, np.nan]]), [0]), {}, r"probs\[0, 1\]=nan", id="nan"),
        pytest.param((np.array([[2.0, -1.0]]), [0]), {}, r"probs\[0, 1\]=-1", id="logits"),
        pytest.param((np.array([[1.0, np.inf]]), [0]), {"from_logits": True},
                     r"logits\[0, 1\]=inf", id="inf-logits"),
        pytest.param((PROBS, LABELS), {"from_logits": "yes"}, "from_logits='yes'",
                     id="from-logits"),
        pytest.param((PROBS, LABELS + 10), {}, "labels", id="label-range"),
    ],
)
def test_fit_temperature_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.fit_temperature(*args, **kwargs)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), True, "2", None])
def test_apply_temperature_rejects_bad_temperature(t):
    with pytest.raises(ValueError, match=r"temperature="):
        metrics.apply_temperature(PROBS, t)
