"""Pruning of Bayesian layers: schedules, criteria, prune / strip, sparsity.

A Bayesian layer prunes a kernel weight by setting its entry of the
non-trainable ``kernel_mask`` to 0. The mask multiplies the posterior mean
``mu`` and the posterior std ``sigma`` wherever the layer uses them, so a
pruned weight is exactly 0 in every sampled kernel (reparameterization,
Flipout) and in both moments of local reparameterization, in training and at
inference; its gradients with respect to ``kernel_loc`` and ``kernel_rho`` are
exactly 0, so training never revives it. The masks are the layers' own
variables: they are saved with ``.keras`` files and exported with the model.

Workflow (the counterpart of tfmot's ``prune_low_magnitude`` /
``UpdatePruningStep`` / ``strip_pruning``)::

    pruning.prune(model, pruning.PolynomialDecay(0.5, 0.9, 0, 1000),
                  criterion="snr")
    model.compile(...)                     # a fresh optimizer: step 0
    model.fit(x, y, callbacks=[pruning.UpdatePruning()])
    pruning.strip(model)                   # bake the masks in
    pruning.sparsity(model)                # {"conv2d": 0.9, ..., "total": 0.9}

or, in one shot, ``pruning.prune_now(model, 0.9, criterion="snr")``.

Schedules. A schedule is a callable ``step -> (should_prune, sparsity)``; the
two here have tfmot's arguments and formulas, and any tfmot
``PruningSchedule`` object (or another callable returning that pair, as
tensors or python values) is accepted in their place. Steps count optimizer
updates (``optimizer.iterations``).

Criteria. ``"magnitude"`` ranks weights by ``|mu|``; ``"snr"`` by the
signal-to-noise ratio ``|mu| / sigma`` (Blundell et al. 2015, "Weight
Uncertainty in Neural Networks", https://arxiv.org/abs/1505.05424, section
5.1). The lowest-ranked weights are pruned. With ``scope="layer"`` each layer
gets exactly ``round(sparsity * n)`` pruned weights out of its ``n`` kernel
weights; with ``scope="global"`` one threshold is taken over the scores of all
(non-excluded) layers together, and exactly ``round(sparsity * total)``
weights are pruned over them. Ties are broken deterministically: a stable
argsort over the kernels flattened in C order (layers in model order), so of
equal scores the earlier weight is pruned first. Only kernels are pruned,
never biases.

Masks only grow. A pruned weight stays pruned: already-pruned weights rank
below every other weight, and when the requested count is smaller than the
number already pruned, nothing changes. A pruning step therefore never lowers
a layer's sparsity (so ``ConstantSparsity`` prunes once, at ``begin_step``, and
then holds the mask). The raw ``kernel_loc`` / ``kernel_rho`` under a zero mask
are never used (an optimizer's momentum may still move them); `strip` sets
them to ``0`` and `PRUNED_RHO`.

KL of a pruned weight. The layer multiplies the elementwise
``KL(q(w) || p(w))`` by the mask, so a pruned weight adds 0 to the KL term of
the loss. Its posterior is the point mass at 0 defined by the mask, and the
KL from a point mass to a prior with a density is infinite; counting the KL of
the Gaussian it had before pruning would instead charge a constant with no
gradient. Treating the weight as removed gives the ELBO of the smaller
network that remains, which is what the pruned model is, and keeps the KL
finite (no ``log(0)``, no NaN gradient).

State. `prune` stores a small `PruningConfig` on the model (the attribute
``model._tfp_bcnn_pruning``; read it with `pruning_config`); `UpdatePruning`
reads it and updates the masks; `strip` deletes it. The config is not saved
with the model, the masks are: after ``keras.saving.load_model`` call `prune`
again to continue a schedule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from .kl import bayesian_layers

__all__ = [
    "CRITERIA",
    "DEFAULT_SCHEDULE",
    "PRUNED_RHO",
    "SCOPES",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningConfig",
    "PruningSchedule",
    "UpdatePruning",
    "prune",
    "prune_now",
    "pruning_config",
    "sparsity",
    "strip",
]

CRITERIA = ("magnitude", "snr")
SCOPES = ("layer", "global")

#: ``kernel_rho`` that `strip` writes at pruned positions: ``softplus(-30)``
#: is about ``1e-13``, so the stored std is the floor ``1e-8`` (and the mask
#: makes the std used anywhere exactly 0).
PRUNED_RHO = -30.0

#: Key of the overall fraction in the dict returned by `sparsity`.
TOTAL_KEY = "total"

_STATE_ATTR = "_tfp_bcnn_pruning"


# ---------------------------------------------------------------- validation
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_sparsity(name, value) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not ok or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def _check_step_args(begin_step, end_step, frequency, allow_forever):
    if not _is_int(begin_step) or begin_step < 0:
        raise ValueError(
            f"`begin_step` must be an integer >= 0. Received: begin_step={begin_step!r}"
        )
    forever = allow_forever and _is_int(end_step) and end_step == -1
    if not _is_int(end_step) or (not forever and end_step < begin_step):
        allowed = "-1 or an integer" if allow_forever else "an integer"
        raise ValueError(
            f"`end_step` must be {allowed} >= begin_step={begin_step}. "
            f"Received: end_step={end_step!r}"
        )
    if not _is_int(frequency) or frequency <= 0:
        raise ValueError(f"`frequency` must be an integer > 0. Received: frequency={frequency!r}")
    return int(begin_step), int(end_step), int(frequency)


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


# ----------------------------------------------------------------- schedules
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
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_step_args(
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
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_step_args(
            begin_step, end_step, frequency, allow_forever=False
        )
        ok = isinstance(power, (int, float, np.integer, np.floating)) and not isinstance(
            power, (bool, np.bool_)
        )
        if not ok or not (math.isfinite(float(power)) and float(power) > 0):
            raise ValueError(f"`power` must be a number > 0. Received: power={power!r}")
        self.power = power if _is_int(power) else float(power)

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

#: The default schedule of `prune`: 50% at step 0 rising to 90% at step 1000.
DEFAULT_SCHEDULE = PolynomialDecay(0.5, 0.9, 0, 1000)


def _evaluate_schedule(schedule, step: int) -> tuple[bool, float]:
    """``schedule(step)`` as python values; tensors (tfmot schedules) converted."""
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


# ------------------------------------------------------------------- helpers
@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """What `prune` stores on a model and `UpdatePruning` applies.

    Attributes:
        schedule: the schedule, ``step -> (should_prune, sparsity)``.
        criterion: ``"magnitude"`` or ``"snr"``.
        scope: ``"layer"`` or ``"global"``.
        exclude: names of the Bayesian layers left unpruned.
    """

    schedule: Any
    criterion: str
    scope: str
    exclude: tuple[str, ...]

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        if isinstance(schedule, PruningSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "criterion": self.criterion,
            "scope": self.scope,
            "exclude": list(self.exclude),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruningConfig:
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        config["exclude"] = tuple(config.get("exclude", ()))
        return cls(**config)


def _model_name(model) -> str:
    return repr(getattr(model, "name", type(model).__name__))


def _layers(model) -> list:
    """The built Bayesian layers of ``model``; ValueError if none or unbuilt."""
    layers = list(bayesian_layers(model))
    if not layers:
        raise ValueError(f"The model has no Bayesian layer. Received: model={_model_name(model)}")
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Bayesian layer names must be unique in the model (nested models "
            f"included). Received: duplicate names {duplicates}"
        )
    unbuilt = [layer.name for layer in layers if not getattr(layer, "built", False)]
    if unbuilt:
        raise ValueError(
            "Build the model (give it an Input or call it on data) before pruning. "
            f"Received: unbuilt layers {unbuilt}"
        )
    if TOTAL_KEY in names:
        raise ValueError(
            f"A Bayesian layer may not be named {TOTAL_KEY!r}: `sparsity` reports the "
            f"overall fraction under that key. Received: layer name {TOTAL_KEY!r}"
        )
    return layers


def _check_options(model, criterion, scope, exclude):
    if criterion not in CRITERIA:
        raise ValueError(
            f"Unknown `criterion`; expected one of {CRITERIA}. Received: criterion={criterion!r}"
        )
    if scope not in SCOPES:
        raise ValueError(f"Unknown `scope`; expected one of {SCOPES}. Received: scope={scope!r}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        exclude = tuple(exclude)
    except TypeError:
        raise ValueError(
            f"`exclude` must be a sequence of layer names. Received: exclude={exclude!r}"
        ) from None
    layers = _layers(model)
    names = [layer.name for layer in layers]
    for name in exclude:
        if name not in names:
            raise ValueError(
                f"`exclude` names a layer that is not a Bayesian layer of the model "
                f"(those are {names}). Received: exclude={name!r}"
            )
    included = [layer for layer in layers if layer.name not in exclude]
    if not included:
        raise ValueError(
            f"`exclude` leaves no Bayesian layer to prune. Received: exclude={exclude!r}"
        )
    return included, exclude


def _scores(layer, criterion) -> np.ndarray:
    """Flat float64 scores of a layer's kernel; pruned weights get -inf."""
    loc = np.abs(ops.convert_to_numpy(layer.kernel_loc).astype("float64"))
    if criterion == "snr":
        loc = loc / ops.convert_to_numpy(layer.kernel_sigma).astype("float64")
    mask = ops.convert_to_numpy(layer.kernel_mask).ravel()
    scores = loc.ravel()
    scores[mask == 0] = -np.inf
    return scores


def _prune_lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-vector: the ``count`` lowest scores (stable order) are False."""
    count = max(count, int(np.sum(scores == -np.inf)))  # masks only grow
    keep = np.ones(scores.shape, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:count]] = False
    return keep


def _assign_mask(layer, keep: np.ndarray) -> None:
    mask = ops.convert_to_numpy(layer.kernel_mask)
    new = np.where(keep.reshape(mask.shape), mask, 0.0).astype(mask.dtype)
    layer.kernel_mask.assign(new)


def _apply(layers, target: float, criterion: str, scope: str) -> None:
    scores = [_scores(layer, criterion) for layer in layers]
    if scope == "layer":
        for layer, s in zip(layers, scores):
            _assign_mask(layer, _prune_lowest(s, round(target * s.size)))
        return
    flat = np.concatenate(scores)
    keep = _prune_lowest(flat, round(target * flat.size))
    offsets = np.cumsum([0] + [s.size for s in scores])
    for layer, lo, hi in zip(layers, offsets[:-1], offsets[1:]):
        _assign_mask(layer, keep[lo:hi])


# ---------------------------------------------------------------- public API
def prune(
    model: keras.Model,
    schedule: Schedule = DEFAULT_SCHEDULE,
    criterion: str = "magnitude",
    scope: str = "layer",
    exclude: Sequence[str] = (),
) -> keras.Model:
    """Prepare ``model`` for pruning during training with `UpdatePruning`.

    Stores a `PruningConfig` on the model; the masks change only when the
    callback runs (at the schedule's steps, counted by
    ``optimizer.iterations``: compile with a fresh optimizer, or shift
    ``begin_step``, when fine-tuning a trained model). Calling `prune` again
    replaces the config; masks already set are kept (they only grow).

    Args:
        model: a built Keras model with at least one Bayesian layer (nested
            models included).
        schedule: a `PolynomialDecay`, a `ConstantSparsity`, a tfmot
            ``PruningSchedule`` or any callable ``step -> (should_prune,
            sparsity)``. Default ``PolynomialDecay(0.5, 0.9, 0, 1000)``.
        criterion: ``"magnitude"`` (``|mu|``) or ``"snr"`` (``|mu| / sigma``).
        scope: ``"layer"`` (each layer at the scheduled sparsity) or
            ``"global"`` (one threshold over all the layers).
        exclude: names of Bayesian layers never pruned (a single name may be
            given as a string).

    Returns:
        ``model`` itself, ready to compile and fit.

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer, an unknown
            criterion or scope, an excluded name that is not a Bayesian
            layer of the model, or a schedule that is not such a callable.

    Example:

    >>> model = pruning.prune(model, pruning.PolynomialDecay(0.5, 0.9, 0, 500),
    ...                       criterion="snr")  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[pruning.UpdatePruning()])  # doctest: +SKIP
    """
    _, exclude = _check_options(model, criterion, scope, exclude)
    if not callable(schedule):
        raise ValueError(
            "`schedule` must be a callable step -> (should_prune, sparsity). "
            f"Received: schedule={schedule!r}"
        )
    _evaluate_schedule(schedule, 0)  # fail now, not in the middle of fit
    setattr(model, _STATE_ATTR, PruningConfig(schedule, criterion, scope, exclude))
    return model


def pruning_config(model: keras.Model) -> PruningConfig | None:
    """The `PruningConfig` that `prune` stored on ``model``, or None."""
    return getattr(model, _STATE_ATTR, None)


def prune_now(
    model: keras.Model,
    sparsity: float,
    criterion: str = "magnitude",
    scope: str = "layer",
    exclude: Sequence[str] = (),
) -> keras.Model:
    """Set the masks of ``model`` to ``sparsity`` at once (one-shot pruning).

    Per layer (``scope="layer"``) exactly ``round(sparsity * n)`` of the ``n``
    kernel weights of each non-excluded layer are pruned; globally exactly
    ``round(sparsity * total)`` over them. Already-pruned weights stay pruned
    (a target below the current sparsity changes nothing).

    Args:
        model: a built model with at least one Bayesian layer.
        sparsity: fraction in ``[0, 1)``.
        criterion, scope, exclude: as in `prune`.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``sparsity`` outside ``[0, 1)``, and the errors of `prune`.
    """
    target = _check_sparsity("sparsity", sparsity)
    layers, _ = _check_options(model, criterion, scope, exclude)
    _apply(layers, target, criterion, scope)
    return model


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class UpdatePruning(keras.callbacks.Callback):
    """Keras callback that updates the masks of a model prepared by `prune`.

    Before each training step it evaluates the model's schedule at the step
    about to run (``optimizer.iterations``, read when training begins and then
    counted here) and, when ``should_prune``, prunes the model to the
    scheduled sparsity with the configured criterion and scope. Masks only
    grow. With ``steps_per_execution > 1`` a pruning step that falls inside a
    chunk of steps is applied at the start of the next chunk.

    Raises:
        ValueError: (when training begins) the model was not prepared by
            `prune`, or has no optimizer.

    Example:

    >>> model.fit(x, y, callbacks=[pruning.UpdatePruning()])  # doctest: +SKIP
    """

    def __init__(self):
        super().__init__()
        self._step = 0
        self._checked = -1
        self._batch = 0
        self._config = None

    def on_train_begin(self, logs=None):
        model = self.model
        config = pruning_config(model)
        if config is None:
            raise ValueError(
                "UpdatePruning needs a model prepared by pruning.prune(model, ...). "
                f"Received: model={_model_name(model)}"
            )
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                "UpdatePruning needs a compiled model (its optimizer counts the steps). "
                f"Received: model={_model_name(model)}"
            )
        self._config = config
        self._step = int(ops.convert_to_numpy(model.optimizer.iterations))
        self._checked = self._step - 1

    def on_train_batch_begin(self, batch, logs=None):
        self._batch = batch
        config = self._config
        due = None
        for step in range(self._checked + 1, self._step + 1):
            should, target = _evaluate_schedule(config.schedule, step)
            if should:
                due = target
        self._checked = self._step
        if due is not None:
            # `self.model` syncs the variables on JAX; touch it only when pruning.
            layers, _ = _check_options(self.model, config.criterion, config.scope, config.exclude)
            _apply(layers, due, config.criterion, config.scope)

    def on_train_batch_end(self, batch, logs=None):
        self._step += max(1, batch - self._batch + 1)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def strip(model: keras.Model) -> keras.Model:
    """Bake the masks into the weights and drop the pruning state.

    At every pruned position ``kernel_loc`` becomes 0 and ``kernel_rho``
    becomes `PRUNED_RHO` (a std of ``~1e-8`` before the mask, exactly 0
    after it); the masks stay, so the posterior moments
    ``layer.kernel_posterior()`` are unchanged, bit for bit. The `PruningConfig`
    set by `prune` is removed, leaving a plain tfp_bcnn model that saves to
    ``.keras`` (where the zeros compress well) and exports as usual.

    Args:
        model: a built model with at least one Bayesian layer.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer.
    """
    for layer in _layers(model):
        pruned = ops.convert_to_numpy(layer.kernel_mask) == 0
        if not pruned.any():
            continue
        loc = ops.convert_to_numpy(layer.kernel_loc)
        rho = ops.convert_to_numpy(layer.kernel_rho)
        layer.kernel_loc.assign(np.where(pruned, 0.0, loc).astype(loc.dtype))
        layer.kernel_rho.assign(np.where(pruned, PRUNED_RHO, rho).astype(rho.dtype))
    if _STATE_ATTR in getattr(model, "__dict__", {}):
        delattr(model, _STATE_ATTR)
    return model


def sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of pruned kernel weights (mask 0) of each Bayesian layer.

    Returns:
        ``{layer_name: fraction, ..., "total": fraction}`` with the layers in
        model order; ``"total"`` is the fraction over all the Bayesian
        kernels together (pruned weights / kernel weights, so large layers
        weigh more). Biases are not counted.

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer, or one
            with a Bayesian layer named "total".
    """
    report = {}
    pruned = total = 0
    for layer in _layers(model):
        mask = ops.convert_to_numpy(layer.kernel_mask)
        zeros = int(np.sum(mask == 0))
        report[layer.name] = zeros / mask.size
        pruned += zeros
        total += mask.size
    report[TOTAL_KEY] = pruned / total
    return report
