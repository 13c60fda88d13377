"""Pruning schedules: small callables ``step -> (should_prune, sparsity)``.

The two schedules have tfmot's arguments and formulas
(``tensorflow_model_optimization/.../sparsity/keras/pruning_schedule.py``),
and any tfmot ``PruningSchedule`` object (or another callable returning that
pair, as tensors or python values) is accepted in their place. Steps count
optimizer updates (``optimizer.iterations``). A schedule holds no state, so
one object can serve several models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from .. import _validation as check

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "Schedule",
    "default_schedule",
    "evaluate_schedule",
]


def _check_steps(begin_step, end_step, frequency, allow_forever):
    begin_step = check.integer("begin_step", begin_step, minimum=0)
    forever = allow_forever and check.is_int(end_step) and end_step == -1
    if not check.is_int(end_step) or (not forever and end_step < begin_step):
        allowed = "-1 or an integer" if allow_forever else "an integer"
        raise ValueError(
            f"`end_step` must be {allowed} >= begin_step={begin_step}. "
            f"Received: end_step={end_step!r}"
        )
    frequency = check.integer("frequency", frequency, minimum=1, what="an integer > 0")
    return begin_step, int(end_step), frequency


def _as_step(step) -> int:
    arr = np.asarray(step)
    if arr.ndim != 0 or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and float(arr) == math.floor(float(arr)))
    ):
        raise ValueError(f"`step` must be a scalar integer. Received: step={step!r}")
    return int(arr)


def _should_prune_in_step(step, begin_step, end_step, frequency) -> bool:
    """tfmot's rule: in ``[begin_step, end_step]`` (or beyond if end_step < 0)
    and ``(step - begin_step) % frequency == 0``."""
    in_range = step >= begin_step and (end_step < 0 or step <= end_step)
    return bool(in_range and (step - begin_step) % frequency == 0)


class PruningSchedule:
    """Base of the pruning schedules: a callable ``step -> (should_prune, sparsity)``.

    Subclasses implement ``__call__`` and ``get_config``; ``from_config`` calls
    the constructor with the config. A schedule holds no state, so one object
    can serve several models.
    """

    def __call__(self, step: int) -> tuple[bool, float]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruningSchedule:
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class ConstantSparsity(PruningSchedule):
    """Constant target sparsity, applied every ``frequency`` steps (tfmot's).

    ``should_prune(step) = begin_step <= step <= end_step`` (no upper bound
    when ``end_step == -1``) ``and (step - begin_step) % frequency == 0``;
    ``sparsity(step) = target_sparsity``.

    Args:
        target_sparsity: fraction of kernel weights to prune, in ``[0, 1)``.
        begin_step: first step at which to prune, ``>= 0``.
        end_step: last step at which to prune, ``>= begin_step``, or ``-1``
            (the default) to go on until training ends.
        frequency: prune every ``frequency`` steps, ``> 0``.

    Returns (when called with an integer ``step``): ``(should_prune,
    sparsity)``, a python ``bool`` and ``float``.

    Raises:
        ValueError: a sparsity outside ``[0, 1)``, ``begin_step < 0``,
            ``end_step < begin_step`` (other than -1), ``frequency <= 0``.

    Example:

    >>> ConstantSparsity(0.8, begin_step=10, frequency=5)(15)
    (True, 0.8)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = check.fraction("target_sparsity", target_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=True
        )

    def __call__(self, step):
        step = _as_step(step)
        should = _should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        return should, self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` (tfmot's).

    The sparsity follows the polynomial of Zhu & Gupta 2017
    (https://arxiv.org/abs/1710.01878)::

        p        = clip((step - begin_step) / (end_step - begin_step), 0, 1)
        sparsity = final_sparsity + (initial_sparsity - final_sparsity) * (1 - p) ** power

    so it grows fast at first and levels off at ``final_sparsity``. Pruning
    happens when ``begin_step <= step <= end_step and (step - begin_step) %
    frequency == 0``; choose ``end_step - begin_step`` a multiple of
    ``frequency`` so that the last pruning step reaches ``final_sparsity``.
    With ``end_step == begin_step`` (where tfmot divides 0 by 0) ``p`` is 1
    from ``begin_step`` on: one pruning step, straight to ``final_sparsity``.

    Args:
        initial_sparsity: sparsity at ``begin_step``, in ``[0, 1)``.
        final_sparsity: sparsity from ``end_step`` on, in ``[0, 1)``.
        begin_step: first pruning step, ``>= 0``.
        end_step: last pruning step, ``>= begin_step`` (not -1).
        power: exponent of the decay, a number ``> 0`` (3 by default).
        frequency: prune every ``frequency`` steps, ``> 0``.

    Returns (when called with an integer ``step``): ``(should_prune,
    sparsity)``, a python ``bool`` and ``float``.

    Raises:
        ValueError: a sparsity outside ``[0, 1)``, ``begin_step < 0``,
            ``end_step < begin_step``, ``power <= 0``, ``frequency <= 0``.

    Example:

    >>> schedule = PolynomialDecay(0.5, 0.9, begin_step=0, end_step=1000)
    >>> schedule(0), schedule(1000), schedule(1050)
    ((True, 0.5), (True, 0.9), (False, 0.9))
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        self.initial_sparsity = check.fraction("initial_sparsity", initial_sparsity)
        self.final_sparsity = check.fraction("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=False
        )
        check.finite_float("power", power, minimum=0.0, strict=True, what="a number > 0")
        self.power = int(power) if check.is_int(power) else float(power)

    def __call__(self, step):
        step = _as_step(step)
        span = self.end_step - self.begin_step
        if span == 0:
            p = 1.0 if step >= self.begin_step else 0.0
        else:
            p = min(1.0, max(0.0, (step - self.begin_step) / span))
        sparsity = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            (1.0 - p) ** self.power
        )
        should = _should_prune_in_step(step, self.begin_step, self.end_step, self.frequency)
        return should, float(sparsity)

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


Schedule = PruningSchedule | Callable[[int], Any]


def default_schedule() -> PolynomialDecay:
    """A new ``PolynomialDecay(0.5, 0.9, 0, 1000)``, the default of ``prune``.

    A function, not a shared module-level instance, so that no caller can
    change the default of another.
    """
    return PolynomialDecay(0.5, 0.9, 0, 1000)


def evaluate_schedule(schedule, step: int) -> tuple[bool, float]:
    """``schedule(step)`` as python values; tensors (tfmot schedules) converted.

    Raises:
        ValueError: ``schedule`` is not a callable returning a pair, or it
            returned a sparsity outside ``[0, 1)``.
    """
    try:
        should, value = schedule(step)
    except (TypeError, ValueError) as e:
        raise ValueError(
            "`schedule` must be a callable step -> (should_prune, sparsity), such as "
            f"PolynomialDecay or a tfmot PruningSchedule ({e}). Received: schedule={schedule!r}"
        ) from e
    should = bool(np.asarray(should))
    value = float(np.asarray(value))
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"The schedule returned a sparsity outside [0, 1) at step {step}. "
            f"Received: sparsity={value!r} from schedule={schedule!r}"
        )
    return should, value
