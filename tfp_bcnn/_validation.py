"""Argument checks shared by the whole package (and ``tfp_bcnn.export``).

Each check takes the argument's name and value, returns the value in its
canonical python type, and raises ``ValueError`` with a message that says what
was expected and ends in ``Received: name=value`` (the value's ``repr``).
Booleans are never accepted as numbers (``True`` is an ``int`` in python, but
``num_samples=True`` is a mistake).

`images` is the one place that decides what a batch of images must look like
before a model sees it (`predict`, the data loaders of the CLI):

* NaN or infinity anywhere is refused (``ValueError`` naming the first few
  offending images by index): a model returns finite, confident-looking
  probabilities for a NaN frame, which would be a silently wrong answer.
* images that look unscaled get a ``UserWarning`` (not an error: a model may
  scale its inputs itself, and standardised data legitimately leaves
  ``[0, 1]``). "Unscaled" means ``max |x| > UNSCALED_LIMIT`` (20): images in
  ``[0, 255]`` almost always pass 20, while data scaled to ``[0, 1]`` or
  standardised to zero mean and unit variance stays far below it (20 standard
  deviations). The models of tfp_bcnn are trained on ``[0, 1]``
  (`tfp_bcnn.datasets`).

``export/runtime.py`` keeps its own checks (arguments and images) on purpose:
it must run on a device without tfp_bcnn.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = [
    "UNSCALED_LIMIT",
    "choice",
    "finite_float",
    "fraction",
    "images",
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


#: Largest ``|x|`` that does not look like unscaled (e.g. 0-255) pixel values.
UNSCALED_LIMIT = 20.0
#: How many offending images an error message names.
_SHOWN = 5


def images(
    x: np.ndarray,
    *,
    name: str = "x",
    offset: int = 0,
    warn_unscaled: bool = True,
    stacklevel: int = 2,
) -> None:
    """Refuses non-finite images and warns about unscaled ones.

    Args:
        x: ``(N, ...)`` batch of images (any numeric dtype; N may be 0).
        name: the argument name used in messages.
        offset: index of ``x[0]`` in the whole input (for streamed batches),
            so that messages name images by their position in the user's data.
        warn_unscaled: warn when ``max |x| > UNSCALED_LIMIT``.
        stacklevel: as for `warnings.warn`, counted from this function (2: its
            caller).

    Raises:
        ValueError: some image holds NaN or +-inf; the message gives how many
            and the indices of the first five.

    Warns:
        UserWarning: ``max |x| > UNSCALED_LIMIT`` (images that look like raw
            0-255 pixels).
    """
    x = np.asarray(x)
    if x.size == 0 or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        return
    x = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite) + offset
            shown = ", ".join(str(i) for i in bad[:_SHOWN])
            more = f", ... ({len(bad)} in all)" if len(bad) > _SHOWN else ""
            raise ValueError(
                f"`{name}` contains NaN or infinity in {len(bad)} image(s): a model would "
                f"return a confident-looking answer for them. Fix or drop these images. "
                f"Received: non-finite {name} at indices [{shown}{more}]"
            )
    if warn_unscaled:
        peak = max(abs(float(x.max())), abs(float(x.min())))
        if peak > UNSCALED_LIMIT:
            warnings.warn(
                f"`{name}` looks unscaled: max |{name}| = {peak:g} > {UNSCALED_LIMIT:g} "
                f"(dtype {x.dtype}). tfp_bcnn models are trained on images scaled to "
                f"[0, 1]; divide by 255 unless the model scales its inputs itself.",
                UserWarning,
                stacklevel=stacklevel,
            )
