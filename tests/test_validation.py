"""The shared argument checks: accepted values, canonical types, messages."""

import numpy as np
import pytest

from tfp_bcnn import _validation as check


def test_integer_checks():
    assert check.positive_int("n", np.int64(3)) == 3 and type(check.positive_int("n", 3)) is int
    assert check.integer("n", 0, minimum=0) == 0
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(ValueError, match=rf"`n` must be a positive integer\. Received: "
                                             rf"n={bad!r}"):
            check.positive_int("n", bad)
    with pytest.raises(ValueError, match=r"`k` must be an integer >= 2\. Received: k=1$"):
        check.integer("k", 1, minimum=2)


def test_float_checks():
    assert check.positive_float("s", np.float32(0.5)) == 0.5
    assert check.finite_float("w", 0, minimum=0.0) == 0.0
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "1.0", None):
        with pytest.raises(ValueError, match=r"Received: s="):
            check.positive_float("s", bad)
    with pytest.raises(ValueError, match=r"`w` must be a finite number >= 0\. Received: w=-0.5"):
        check.finite_float("w", -0.5, minimum=0.0)


def test_fraction():
    assert check.fraction("p", 0) == 0.0 and check.fraction("p", 0.999) == 0.999
    assert check.fraction("mix", 1.0, include_zero=False, include_one=True) == 1.0
    for bad in (1.0, -0.1, float("nan"), False, "0.5"):
        with pytest.raises(ValueError, match=r"in \[0, 1\)\. Received: p="):
            check.fraction("p", bad)
    with pytest.raises(ValueError, match=r"in \(0, 1\]\. Received: mix=0.0"):
        check.fraction("mix", 0.0, include_zero=False, include_one=True)


def test_choice():
    assert check.choice("scope", "layer", ("layer", "global")) == "layer"
    with pytest.raises(ValueError, match=r"expected one of \('layer', 'global'\)\. "
                                         r"Received: scope='all'"):
        check.choice("scope", "all", ("layer", "global"))
    with pytest.raises(ValueError, match=r"Received: scope=\['layer'\]"):
        check.choice("scope", ["layer"], {"layer"})  # unhashable: a clear error, no TypeError
