"""Argument checks shared by the whole package (and ``tfp_bcnn.export``).

Each check takes the argument's name and value, returns the value in its
canonical python type, and raises ``ValueError`` with a message that says what
was expected and ends in ``Received: name=value`` (the value's ``repr``).
Booleans are never accepted as numbers (``True`` is an ``int`` in python, but
``num_samples=True`` is a mistake).

``export/runtime.py`` keeps its own one-line check on purpose: it must run on
a device without tfp_bcnn.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = [
    "choice",
    "finite_float",
    "fraction",
    "integer",
    "is_int",
    "positive_float",
    "positive_int",
]


def is_int(value: Any) -> bool:
    """True for python and numpy integers, False for bools (and everything else)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def integer(name: str, value: Any, *, minimum: int | None = None, what: str = "") -> int:
    """``value`` as an ``int``; it must be an integer ``>= minimum``.

    Args:
        name: the argument's name, for the message.
        value: the value received.
        minimum: smallest allowed value (None: no bound).
        what: a phrase replacing the default description (e.g. "an integer >= 0
            or -1").

    Raises:
        ValueError: not an integer (bools excluded) or below ``minimum``.
    """
    if not is_int(value) or (minimum is not None and value < minimum):
        desc = what or ("an integer" if minimum is None else f"an integer >= {minimum}")
        raise ValueError(f"`{name}` must be {desc}. Received: {name}={value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 1``; ValueError otherwise."""
    return integer(name, value, minimum=1, what="a positive integer")


def finite_float(name: str, value: Any, *, minimum: float | None = None,
                 strict: bool = False, what: str = "") -> float:
    """``value`` as a finite ``float``, ``>= minimum`` (``> minimum`` if ``strict``).

    Accepts python and numpy reals and 0-d arrays of them (``float(value)``
    must work and give the same number); rejects bools, strings, NaN and
    infinities.

    Raises:
        ValueError: not a finite real number, or out of range.
    """
    try:
        number = float(value) if not isinstance(value, (bool, np.bool_, str, bytes)) else None
    except (TypeError, ValueError):
        number = None
    ok = number is not None and math.isfinite(number)
    if ok and minimum is not None:
        ok = number > minimum if strict else number >= minimum
    if not ok:
        if not what:
            bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
            what = f"a finite number{bound}"
        raise ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")
    return number


def positive_float(name: str, value: Any) -> float:
    """``value`` as a finite ``float > 0``; ValueError otherwise."""
    return finite_float(name, value, minimum=0.0, strict=True, what="a positive finite number")


def fraction(name: str, value: Any, *, include_zero: bool = True,
             include_one: bool = False) -> float:
    """``value`` as a ``float`` in ``[0, 1)`` by default.

    Args:
        include_zero: 0 allowed (``[0, ...``) or not (``(0, ...``).
        include_one: 1 allowed (``..., 1]``) or not (``..., 1)``).

    Raises:
        ValueError: not a real number (bools excluded) or outside the interval.
    """
    ok = _is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= 0.0 if include_zero else v > 0.0) and (v <= 1.0 if include_one else v < 1.0)
    if not ok:
        interval = ("[" if include_zero else "(") + "0, 1" + ("]" if include_one else ")")
        raise ValueError(f"`{name}` must be a number in {interval}. Received: {name}={value!r}")
    return float(value)


def choice(name: str, value: Any, choices: Collection, *, what: str = "") -> Any:
    """``value`` itself if it is one of ``choices``; ValueError otherwise.

    The message reads ``Unknown `name`; expected one of (...). Received: name=value``.
    """
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set
        ok = False
    if not ok:
        expected = what or f"one of {tuple(choices)}"
        raise ValueError(f"Unknown `{name}`; expected {expected}. Received: {name}={value!r}")
    return value
