"""Property tests: the public array functions raise only their documented errors.

Hypothesis generates arrays of random shapes (empty included), dtypes (bool,
integers, floats, complex, strings, objects) and values (NaN, +-inf, huge,
negative) and arguments of random types; each function must either return a
result of the documented kind (finite where documented) or raise
``ValueError`` / ``TypeError``, never anything else (IndexError,
ZeroDivisionError, FloatingPointError, a numpy internal error). Seeded
(``derandomize=True``) so that a run is reproducible; the example counts
keep the file to a few seconds.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfp_bcnn import metrics, predict
from tfp_bcnn.pruning import ConstantSparsity, PolynomialDecay
from tfp_bcnn.pruning._schedules import evaluate_schedule

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8,
                          np.bool_, np.complex64])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


def arrays(max_dims=3, max_side=5):
    """Arrays of any of `DTYPES`, 0-``max_dims`` dimensions, sides 0-``max_side``."""
    shapes = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)
    return DTYPES.flatmap(lambda d: hnp.arrays(d, shapes, elements=_elements(d)))


def _elements(dtype):
    if np.issubdtype(dtype, np.floating):
        return st.floats(allow_nan=True, allow_infinity=True, width=16 if dtype == np.float16
                         else 32)
    if np.issubdtype(dtype, np.complexfloating):
        return st.complex_numbers(allow_nan=True, allow_infinity=True, width=64)
    return None


def probabilities():
    """Mostly valid ``(N, C)`` probability rows (so the functions get past their checks)."""
    return st.tuples(st.integers(0, 6), st.integers(1, 5), st.integers(0, 2**32 - 1)).map(
        lambda t: np.random.default_rng(t[2]).dirichlet(np.ones(t[1]), size=t[0]))


ANY = st.one_of(arrays(), probabilities(), st.lists(FLOATS, max_size=4), st.none(),
                st.text(max_size=3), st.integers(-3, 3), FLOATS)
LABELS = st.one_of(arrays(max_dims=2), st.lists(st.integers(-2, 6), max_size=7),
                   hnp.arrays(np.int64, st.integers(0, 6), elements=st.integers(0, 4)))


@st.composite
def pairs(draw):
    """``(probs, labels)``: half unrelated anything, half valid pairs with one flaw or none."""
    if draw(st.booleans()):
        return draw(ANY), draw(LABELS)
    n, c, seed = draw(st.integers(0, 6)), draw(st.integers(1, 5)), draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    probs, labels = rng.dirichlet(np.ones(c), size=n), rng.integers(0, c, n)
    flaw = draw(st.sampled_from([None, None, None, "nan", "inf", "negative", "label", "float32",
                                 "short", "big"]))
    if flaw in ("nan", "inf", "negative", "big") and n:
        probs[draw(st.integers(0, n - 1)), 0] = {"nan": np.nan, "inf": np.inf, "negative": -0.1,
                                                 "big": 1e300}[flaw]
    elif flaw == "label" and n:
        labels[0] = draw(st.sampled_from([-1, c, 2**40]))
    elif flaw == "float32":
        probs = probs.astype(np.float32)
    elif flaw == "short":
        labels = labels[:-1]
    return probs, labels


SCORES = st.one_of(ANY, hnp.arrays(np.float64, st.integers(0, 6), elements=FLOATS),
                   hnp.arrays(np.float64, st.integers(1, 6),
                              elements=st.floats(-5, 5, allow_nan=False)))


@st.composite
def schedule_args(draw, decay: bool):
    """Valid arguments of a schedule (sparsities, steps), half the time one replaced."""
    sparsity, begin = draw(st.floats(0, 0.99)), draw(st.integers(0, 50))
    end, frequency = draw(st.integers(50, 500)), draw(st.integers(1, 20))
    args = ([draw(st.floats(0, 0.5)), sparsity, begin, end, draw(st.floats(0.5, 5)), frequency]
            if decay else [sparsity, begin, end, frequency])
    if draw(st.booleans()):
        args[draw(st.integers(0, len(args) - 1))] = draw(NUMBERS)
    return args


def _call(fn, *args, **kwargs):
    """``fn(*args)`` with warnings silenced; documented errors count as a pass (None)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = fn(*args, **kwargs)
    except DOCUMENTED as err:
        event(f"{getattr(fn, '__name__', 'call')}: {type(err).__name__}")
        return None
    event(f"{getattr(fn, '__name__', 'call')}: returned")  # --hypothesis-show-statistics
    return result


@pytest.mark.parametrize("name", ["accuracy", "negative_log_likelihood", "brier_score",
                                  "expected_calibration_error", "summary"])
@SETTINGS
@given(pair=pairs())
def test_probability_metrics(name, pair):
    probs, labels = pair
    result = _call(getattr(metrics, name), probs, labels)
    values = list(result.values()) if isinstance(result, dict) else [result]
    for value in values:
        assert value is None or math.isfinite(value), (probs, labels, result)


@SETTINGS
@given(pair=pairs(), num_bins=st.one_of(st.integers(-2, 20), FLOATS, st.none()))
def test_reliability_curve(pair, num_bins):
    probs, labels = pair
    curve = _call(metrics.reliability_curve, probs, labels, num_bins)
    assert curve is None or 0.0 <= curve.ece <= 1.0


@pytest.mark.parametrize("name", ["ood_auroc", "ood_aupr"])
@SETTINGS
@given(a=SCORES, b=SCORES)
def test_ood_scores(name, a, b):
    value = _call(getattr(metrics, name), a, b)
    assert value is None or 0.0 <= value <= 1.0


@SETTINGS
@given(pair=pairs(), temperature=st.one_of(FLOATS, st.integers(-2, 5), st.none()),
       from_logits=st.one_of(st.booleans(), st.integers(0, 2), st.none()))
def test_temperature(pair, temperature, from_logits):
    probs, labels = pair
    t = _call(metrics.fit_temperature, probs, labels, from_logits=from_logits)
    assert t is None or (math.isfinite(t) and t > 0)
    scaled = _call(metrics.apply_temperature, probs, temperature, from_logits=from_logits)
    assert scaled is None or np.isfinite(scaled).all()


NUMBERS = st.one_of(FLOATS, st.integers(-5, 2000), st.booleans(), st.none(), st.text(max_size=2))


@SETTINGS
@given(constant=schedule_args(False), decay=schedule_args(True),
       step=st.one_of(st.integers(-10, 3000), FLOATS, st.none()))
def test_pruning_schedules(constant, decay, step):
    for make in (lambda: ConstantSparsity(*constant), lambda: PolynomialDecay(*decay)):
        schedule = _call(make)
        if schedule is None:
            continue
        result = _call(evaluate_schedule, schedule, step)
        if result is not None:
            should, sparsity = result
            assert isinstance(should, bool) and 0.0 <= sparsity < 1.0


@pytest.fixture(scope="module")
def tiny():
    from tfp_bcnn import layers

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(),
                             layers.DenseFlipout(2, activation="softmax", seed=1)])


@st.composite
def predict_args(draw):
    """``(x, num_samples, batch_size)``: valid ones, half the time one replaced by anything."""
    n = draw(st.integers(0, 3))
    x = np.random.default_rng(draw(st.integers(0, 99))).random((n, 3, 3, 1), dtype=np.float32)
    args = [x, draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    replacements = [st.one_of(arrays(max_dims=5, max_side=3), st.just(x * np.nan),
                              st.just(x.astype(np.float16)), st.just(x[..., 0])),
                    st.one_of(st.integers(-1, 0), FLOATS, st.booleans(), st.none()),
                    st.one_of(st.integers(-1, 0), FLOATS, st.none())]
    if draw(st.booleans()):
        k = draw(st.integers(0, 2))
        args[k] = draw(replacements[k])
    return args


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(args=predict_args())
def test_predict_argument_checks(tiny, args):
    """`predict` on any input: a Prediction of finite fields, or a documented error."""
    x, num_samples, batch_size = args
    p = _call(predict, tiny, x, num_samples=num_samples, batch_size=batch_size)
    if p is not None:
        assert p.mean.shape == (len(x), 2) and np.isfinite(p.mean).all()
