"""Pruning during training: `prune` records a `PruningConfig`, `UpdatePruning` applies it.

State. The only state of pruning lives in two explicit places:

* the masks: the layers' own ``kernel_mask`` variables (saved with the
  model, exported with it);
* the configuration (schedule, criterion, scope, exclude): a frozen
  `PruningConfig`. `prune` records it in `REGISTRY`, a weak mapping
  ``model -> PruningConfig`` (an entry disappears with its model; nothing is
  written onto the model object), and `UpdatePruning` receives it either
  directly (``UpdatePruning(config)``) or by looking the model up there when
  training begins. `strip` removes the entry. The configuration is not saved
  with the model: after ``keras.saving.load_model`` call `prune` again to
  continue a schedule.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._masks import (
    grouped_channel_variables,
    apply_sparsity,
    check_options,
    model_name,
    pruned_filters,
    strip_masks,
)
from ._allocation import check_allocation
from ._schedules import PruningSchedule, Schedule, default_schedule, evaluate_schedule

__all__ = ["REGISTRY", "PruningConfig", "UpdatePruning", "prune", "pruning_config", "strip"]


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """What `prune` records for a model and `UpdatePruning` applies.

    Attributes:
        schedule: the schedule, ``step -> (should_prune, sparsity)``.
        criterion: ``"magnitude"``, ``"snr"`` or ``"l1"``.
        scope: ``"layer"`` or ``"global"``.
        exclude: names of the Bayesian layers left unpruned.
        structure: ``"weight"`` or ``"filter"``.
        min_channels, min_fraction, normalize, cost, cost_exponent: the
            channel allocation of filter pruning (``_allocation``; defaults:
            no floor beyond one channel, raw scores, no cost).
    """

    schedule: Any
    criterion: str
    scope: str
    exclude: tuple[str, ...]
    structure: str = "weight"
    min_channels: int = 1
    min_fraction: float = 0.0
    normalize: str = "none"
    cost: str | None = None
    cost_exponent: float = 1.0

    def allocation(self) -> dict[str, Any]:
        """``{"min_channels", "min_fraction", "normalize", "cost", "cost_exponent"}``."""
        return {"min_channels": self.min_channels, "min_fraction": self.min_fraction,
                "normalize": self.normalize, "cost": self.cost,
                "cost_exponent": self.cost_exponent}

    def get_config(self) -> dict[str, Any]:
        schedule = self.schedule
        if isinstance(schedule, PruningSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "criterion": self.criterion,
            "scope": self.scope,
            "exclude": list(self.exclude),
            "structure": self.structure,
            **self.allocation(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PruningConfig:
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        config["exclude"] = tuple(config.get("exclude", ()))
        return cls(**config)


#: ``model -> PruningConfig`` for the models prepared by `prune`. Weak keys:
#: an entry lives as long as its model and is never saved with it.
REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prune(
    model: keras.Model,
    schedule: Schedule | None = None,
    criterion: str = "magnitude",
    scope: str = "layer",
    exclude: Sequence[str] = (),
    structure: str = "weight",
    *,
    min_channels: int = 1,
    min_fraction: float = 0.0,
    normalize: str = "none",
    cost: str | None = None,
    cost_exponent: float = 1.0,
) -> keras.Model:
    """Prepare ``model`` for pruning during training with `UpdatePruning`.

    Records a `PruningConfig` for the model (see the module docstring); the
    masks change only when the callback runs (at the schedule's steps,
    counted by ``optimizer.iterations``: compile with a fresh optimizer, or
    shift ``begin_step``, when fine-tuning a trained model). Calling `prune`
    again replaces the config; masks already set are kept (they only grow).

    Args:
        model: a built Keras model with at least one Bayesian layer (nested
            models included).
        schedule: a `PolynomialDecay`, a `ConstantSparsity`, a tfmot
            ``PruningSchedule`` or any callable ``step -> (should_prune,
            sparsity)``. None (the default) is ``PolynomialDecay(0.5, 0.9, 0,
            1000)``, made afresh for each call.
        criterion: ``"magnitude"`` (``|mu|``; a filter's L2 norm),
            ``"snr"`` (``|mu| / sigma``; a filter's mean SNR) or ``"l1"``
            (``|mu|``; a filter's L1 norm). Filter scores are per weight of
            the filter (see ``_masks``), so comparable across layers.
        scope: ``"layer"`` (each layer at the scheduled sparsity) or
            ``"global"`` (one threshold over all the layers).
        exclude: names of Bayesian layers never pruned (a single name may be
            given as a string).
        structure: ``"weight"`` (single kernel weights) or ``"filter"``
            (whole output filters / units, mean and std, and their bias: the
            sparsity is then the fraction of filters; the last Bayesian
            layer, the classifier, is never filter-pruned and each layer
            keeps at least one filter). `shrink` removes pruned filters.
        min_channels: (``structure="filter"``) every layer / channel group
            keeps at least this many channels (its best), or all it has.
        min_fraction: (``structure="filter"``) ... and at least
            ``ceil(min_fraction * C)`` of its ``C`` channels, in ``[0, 1)``.
            A floor spares the narrow layers of a thin network (MobileNetV2
            alpha 0.35 has groups of 8 channels) that a global ranking
            would otherwise empty.
        normalize: (``structure="filter"``, ``scope="global"``) how each
            unit's filter scores are rescaled before the global ranking:
            ``"none"``, ``"l2"`` (divided by their L2 norm: Molchanov et al.
            2017, https://arxiv.org/abs/1611.06440; prunes wide units
            first) or ``"mean"`` (divided by their mean). See ``_allocation``.
            No effect with ``scope="layer"`` (a unit's scale does not change
            its own ranking).
        cost: (``structure="filter"``, ``scope="global"``) None (rank by
            score), ``"flops"`` or ``"params"``: rank every channel by its
            normalised score per unit of what removing it saves (the FLOPs
            per image at the model's input size, or the weights, of its
            producers, depthwise layers and consumers, divided by the
            channels of its group), so the pruning removes compute (or
            parameters) where it is cheap in accuracy. See ``_allocation``.
        cost_exponent: ``e > 0``: the score is divided by (the channel's
            cost / the mean cost) ``** e``; 1 (the default) is score per
            unit of cost, smaller values temper it toward the plain ranking.

    Returns:
        ``model`` itself, ready to compile and fit.

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer, an unknown
            criterion or scope, an excluded name that is not a Bayesian
            layer of the model, an unknown structure, a schedule that is
            not such a callable, ``min_channels`` not a positive int,
            ``min_fraction`` outside ``[0, 1)``, an unknown ``normalize`` or
            ``cost``, a ``cost_exponent`` that is not positive or comes
            without a ``cost``, an allocation option with
            ``structure="weight"``, or a ``cost`` with ``scope="layer"``.

    Example:

    >>> model = pruning.prune(model, pruning.PolynomialDecay(0.5, 0.9, 0, 500),
    ...                       criterion="snr")  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[pruning.UpdatePruning()])  # doctest: +SKIP
    """
    _, exclude = check_options(model, criterion, scope, exclude, structure)
    allocation = check_allocation(structure, min_channels, min_fraction, normalize, cost,
                                  cost_exponent, scope)
    if schedule is None:
        schedule = default_schedule()
    if not callable(schedule):
        raise ValueError(
            "`schedule` must be a callable step -> (should_prune, sparsity). "
            f"Received: schedule={schedule!r}"
        )
    evaluate_schedule(schedule, 0)  # fail now, not in the middle of fit
    REGISTRY[model] = PruningConfig(schedule, criterion, scope, exclude, structure, *allocation)
    return model


def pruning_config(model: keras.Model) -> PruningConfig | None:
    """The `PruningConfig` that `prune` recorded for ``model``, or None."""
    return REGISTRY.get(model)


def strip(model: keras.Model) -> keras.Model:
    """Bake the masks into the weights and drop the pruning config.

    At every pruned position ``kernel_loc`` becomes 0 and ``kernel_rho``
    becomes `PRUNED_RHO` (a std of ``~1e-8`` before the mask, exactly 0
    after it); the masks stay, so the posterior moments
    ``layer.kernel_posterior()`` are unchanged, bit for bit. The
    `PruningConfig` recorded by `prune` is removed, leaving a plain tfp_bcnn
    model that saves to ``.keras`` (where the zeros compress well) and
    exports as usual.

    Args:
        model: a built model with at least one Bayesian layer.

    Returns:
        ``model`` itself (modified in place).

    Raises:
        ValueError: a model with no (or an unbuilt) Bayesian layer.
    """
    strip_masks(model)
    REGISTRY.pop(model, None)
    return model


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class UpdatePruning(keras.callbacks.Callback):
    """Keras callback that updates the masks of a model prepared by `prune`.

    Before each training step it evaluates the schedule at the step about to
    run (``optimizer.iterations``, read when training begins and then counted
    here) and, when ``should_prune``, prunes the model to the scheduled
    sparsity with the configured criterion, scope and structure. Masks only
    grow. With ``structure="filter"`` it also resets the bias of every pruned
    filter to 0 after each training step (the optimizer's momentum would
    otherwise move it), so the trained function is that of the smaller
    network. With
    ``steps_per_execution > 1`` a pruning step that falls inside a chunk of
    steps is applied at the start of the next chunk.

    Args:
        config: the `PruningConfig` to apply. None (the default): the one that
            `prune` recorded for the model being trained, looked up when
            training begins.

    Raises:
        ValueError: (when training begins) no config was given and the model
            was not prepared by `prune`, or the model has no optimizer.

    Example:

    >>> model.fit(x, y, callbacks=[pruning.UpdatePruning()])  # doctest: +SKIP
    """

    def __init__(self, config: PruningConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, PruningConfig):
            raise ValueError(
                f"`config` must be a PruningConfig or None. Received: config={config!r}"
            )
        self.config = config
        self._active = None
        self._step = 0
        self._checked = -1
        self._batch = 0
        self._biased = []  # filter pruning: layers whose pruned biases are reset

    def on_train_begin(self, logs=None):
        model = self.model
        config = self.config if self.config is not None else pruning_config(model)
        if config is None:
            raise ValueError(
                "UpdatePruning needs a model prepared by pruning.prune(model, ...) or a "
                f"PruningConfig. Received: model={model_name(model)}"
            )
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                "UpdatePruning needs a compiled model (its optimizer counts the steps). "
                f"Received: model={model_name(model)}"
            )
        self._active = config
        self._step = int(ops.convert_to_numpy(model.optimizer.iterations))
        self._checked = self._step - 1
        self._track_biases(model)

    def _track_biases(self, model):
        config = self._active
        self._biased = []
        if config.structure != "filter":
            return
        layers, _ = check_options(model, config.criterion, config.scope, config.exclude,
                                  config.structure)
        for layer in layers:
            pruned = pruned_filters(layer) if layer.bias is not None else None
            if pruned is not None and pruned.any():
                keep = ops.convert_to_tensor((~pruned).astype("float32"), layer.bias.dtype)
                self._biased.append((layer.bias, keep))
        self._biased += grouped_channel_variables(model, layers)

    def on_train_batch_begin(self, batch, logs=None):
        self._batch = batch
        config = self._active
        due = None
        for step in range(self._checked + 1, self._step + 1):
            should, target = evaluate_schedule(config.schedule, step)
            if should:
                due = target
        self._checked = self._step
        if due is not None:
            # `self.model` syncs the variables on JAX; touch it only when pruning.
            layers, _ = check_options(self.model, config.criterion, config.scope,
                                      config.exclude, config.structure)
            apply_sparsity(layers, due, config.criterion, config.scope, config.structure,
                           self.model, **config.allocation())
            self._track_biases(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self._step += max(1, batch - self._batch + 1)
        for bias, keep in self._biased:
            bias.assign(bias * keep)

    def get_config(self):
        return {} if self.config is None else {"config": self.config.get_config()}

    @classmethod
    def from_config(cls, config):
        inner = config.get("config")
        return cls(None if inner is None else PruningConfig.from_config(inner))
