"""`to_bayesian`: a trained deterministic Keras model converted into a Bayesian one.

The conversion runs in three named steps: `_check_convertible` (arguments
and layers), `_TwinCloner` (the graph rebuilt with a Bayesian twin for every
convertible layer) and `_init_posterior` (posterior means, stds, centred
priors and biases from the trained weights). ``tfp_bcnn.models``
re-exports `to_bayesian` and `MOPED_SIGMA_FLOOR`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable

import keras
import numpy as np

from .. import _validation as check
from .._compat import all_layers, clone_model, input_layer_name, is_graph_model
from ..layers import ESTIMATORS, Rank1Layer, layer_class
from ..layers._base import rho_from_sigma
from . import _rank1_conversion as rank1
from ._recipe import _check_num_train_examples

#: Smallest posterior std that `to_bayesian` gives a weight with MOPED.
MOPED_SIGMA_FLOOR = 1e-6


# --------------------------------------------------------------------------
# to_bayesian
# --------------------------------------------------------------------------

#: Keras class (exact type) -> (kind, rank) of its Bayesian twin
#: (``layer_class(rank, estimator, kind)``); rank 0 is Dense.
_CONVERTIBLE = {
    keras.layers.Dense: ("conv", 0),
    keras.layers.Conv1D: ("conv", 1),
    keras.layers.Conv2D: ("conv", 2),
    keras.layers.Conv3D: ("conv", 3),
    keras.layers.DepthwiseConv1D: ("depthwise", 1),
    keras.layers.DepthwiseConv2D: ("depthwise", 2),
    keras.layers.Conv1DTranspose: ("transpose", 1),
    keras.layers.Conv2DTranspose: ("transpose", 2),
    keras.layers.Conv3DTranspose: ("transpose", 3),
    # two Bayesian layers each: depthwise then pointwise (`_separable_twin`)
    keras.layers.SeparableConv1D: ("separable", 1),
    keras.layers.SeparableConv2D: ("separable", 2),
}

#: Linear layers with a kernel that have no Bayesian twin here.
_LINEAR_WITHOUT_TWIN = (keras.layers.EinsumDense,)


def _blocker(layer) -> str | None:
    """Why a linear layer cannot be converted, or None (it converts, or is not linear).

    Not linear maps (pooling, normalisation, activations, ...) return None:
    they are cloned as they are.
    """
    cls = type(layer)
    if cls in _CONVERTIBLE:
        cfg = layer.get_config()
        if cfg.get("groups", 1) != 1:
            return f"grouped convolution (groups={cfg['groups']})"
        if cfg.get("padding") == "causal":
            return "causal padding"
        if getattr(layer, "quantization_mode", None):
            return f"quantized ({layer.quantization_mode})"
        if getattr(layer, "lora_enabled", False):
            return "LoRA enabled"
        return None
    if isinstance(layer, tuple(_CONVERTIBLE)):
        base = next(c.__name__ for c in _CONVERTIBLE if isinstance(layer, c))
        return f"a subclass of {base}"
    if isinstance(layer, _LINEAR_WITHOUT_TWIN):
        return "no Bayesian twin"
    if isinstance(layer, keras.Model) and not is_graph_model(layer):
        inner = [
            sub for sub in all_layers(layer)
            if type(sub) in _CONVERTIBLE or isinstance(sub, _LINEAR_WITHOUT_TWIN)
        ]
        if inner:
            return "a subclassed model holding convertible layers (only Sequential and " \
                "functional models can be rebuilt)"
    return None


def _converts(layer) -> bool:
    """True when ``layer`` is exactly a type of `_CONVERTIBLE` and has no `_blocker`."""
    return type(layer) in _CONVERTIBLE and _blocker(layer) is None


def _clone_graph(model, clone_layer, cache):
    """``keras.models.clone_model`` that recurses into nested graph models.

    Unlike ``clone_model(recursive=True)`` it keeps the names of the input
    layers of functional models (``clone_model`` names them after the
    symbolic tensors), and one ``cache`` across levels keeps shared layers
    shared.
    """
    input_tensors = None
    if not isinstance(model, keras.Sequential):
        input_tensors = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=input_layer_name(t)),
            model.input,
        )

    def clone_function(layer):
        if is_graph_model(layer):
            return _clone_graph(layer, clone_layer, cache)
        return clone_layer(layer)

    return clone_model(model, input_tensors=input_tensors, clone_function=clone_function,
                       cache=cache)


@dataclasses.dataclass(frozen=True)
class _SkipRule:
    """Which layers `to_bayesian` keeps deterministic.

    Attributes:
        names: layer names given in ``skip``.
        classes: layer classes given in ``skip`` (matched with ``isinstance``).
        nested: ids of the layers inside a skipped nested model (a skipped
            nested model keeps every layer inside it deterministic).
    """

    names: frozenset
    classes: tuple
    nested: frozenset

    def __contains__(self, layer) -> bool:
        return (layer.name in self.names or isinstance(layer, self.classes)
                or id(layer) in self.nested)


def _skip_rule(model, skip) -> _SkipRule:
    """Parse ``skip`` against the layers of ``model``.

    Raises:
        TypeError: an entry that is neither a str nor a Layer class.
        ValueError: a name that is not a layer of the model.
    """
    items = (skip,) if isinstance(skip, (str, type)) else tuple(skip)
    names, classes = set(), []
    for item in items:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            classes.append(item)
        else:
            raise TypeError(
                "`skip` must hold layer names (str) or keras.layers.Layer classes. "
                f"Received: skip={skip!r}"
            )
    layers = all_layers(model)
    missing = names - {layer.name for layer in layers}
    if missing:
        raise ValueError(
            f"`skip` names layers that the model does not have: {sorted(missing)}. "
            f"Received: skip={skip!r}"
        )
    classes = tuple(classes)
    nested = frozenset(
        id(sub)
        for layer in layers
        if isinstance(layer, keras.Model) and (layer.name in names or isinstance(layer, classes))
        for sub in all_layers(layer)
    )
    return _SkipRule(frozenset(names), classes, nested)


def _check_convertible(model, estimator, num_train_examples, moped_delta, skip,
                       last=None) -> _SkipRule:
    """Step 1 of `to_bayesian`: check the arguments and that every layer converts.

    Returns:
        The `_SkipRule` of ``skip`` (and of ``last``: see `_last_rule`).

    Raises:
        ValueError, TypeError: as listed in `to_bayesian`.
    """
    check.choice("estimator", estimator, ESTIMATORS)
    _check_num_train_examples(num_train_examples, "by to_bayesian")
    if moped_delta is not None:
        check.finite_float("moped_delta", moped_delta, minimum=0.0, strict=True,
                           what="a positive number or None")
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise ValueError(
            "`to_bayesian` rebuilds Sequential and functional models only (a subclassed "
            "model has no graph to rebuild). Received: "
            f"model={getattr(model, 'name', model)!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "The model must be built (called on data or given an Input) so that its "
            f"weights can be copied. Received: model={model.name!r} (not built)"
        )
    rule = _skip_rule(model, skip)
    bad = [
        f"{layer.name!r} ({type(layer).__name__}: {_blocker(layer)})"
        for layer in all_layers(model)
        if layer not in rule and _blocker(layer) is not None
    ]
    if bad:
        raise ValueError(
            "These layers have no Bayesian conversion: " + ", ".join(bad) + ". Pass their "
            "names or classes in `skip=` to keep them deterministic. Received: "
            f"skip={skip!r}"
        )
    return rule if last is None else _last_rule(model, rule, last)


def _last_rule(model, rule: _SkipRule, last) -> _SkipRule:
    """``rule`` extended so that only the last ``last`` convertible layers convert.

    The convertible layers (exact `_CONVERTIBLE` types without a `_blocker`,
    not already skipped) are counted in graph order (``all_layers``: a
    functional model's topological order, nested models in place; a
    separable convolution counts once); all but the last ``last`` are added
    to the skipped names.

    Raises:
        ValueError: ``last`` is not an int in ``[1, count]``; the message
            gives the count.
    """
    names = [layer.name for layer in all_layers(model) if layer not in rule and _converts(layer)]
    if not check.is_int(last) or not 1 <= int(last) <= len(names):
        raise ValueError(
            f"`last` must be an int from 1 to the number of convertible layers "
            f"({len(names)} in model {model.name!r}, after `skip`). Received: last={last!r}"
        )
    keep = names[: len(names) - int(last)]
    return dataclasses.replace(rule, names=rule.names | frozenset(keep))


def _check_rank1(model, rule: _SkipRule, posterior, num_components, moped_delta,
                 centered_prior) -> int | None:
    """K for ``posterior="rank1"`` (None for ``"mean_field"``), checked.

    Raises:
        ValueError: an unknown ``posterior``, a bad ``num_components``,
            ``moped_delta`` or ``centered_prior`` with rank-1 (they set a
            weight's own posterior / prior, which rank-1 layers do not have),
            or converted layers without a rank-1 twin (all named).
    """
    check.choice("posterior", posterior, ("mean_field", "rank1"))
    k = check.positive_int("num_components", num_components)
    if posterior != "rank1":
        return None
    for name, value in (("moped_delta", moped_delta), ("centered_prior", centered_prior)):
        if value not in (None, False):
            raise ValueError(
                f"`{name}` sets a per-weight posterior or prior: posterior='rank1' keeps the "
                f"trained kernel as the shared W and puts the posterior on rank-1 factors. "
                f"Received: {name}={value!r}")
    bad = [f"{layer.name!r} ({type(layer).__name__})" for layer in all_layers(model)
           if layer not in rule and _converts(layer)
           and type(layer) not in rank1.RANK1_CONVERTIBLE]
    if bad:
        raise ValueError(
            "posterior='rank1' converts Dense and Conv1D/2D/3D layers; these have no rank-1 "
            "mixture twin: " + ", ".join(bad) + ". Pass them in `skip=` to keep them "
            "deterministic. Received: posterior='rank1'")
    return k


_PENALTIES = (
    "kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint",
    "depthwise_regularizer", "depthwise_constraint",
    "pointwise_regularizer", "pointwise_constraint",
)


def _bayesian_twin(layer, estimator: str, options: dict, seed: int | None):
    """The Bayesian layer of ``layer``'s kind, rank and ``estimator``, same hyper-parameters.

    Args:
        layer: a layer whose exact type is in `_CONVERTIBLE`, not separable.
        options: ``prior, posterior_std_init, kl_weight, centered_prior``.
        seed: the new layer's seed.
    """
    cfg = layer.get_config()
    kind, rank = _CONVERTIBLE[type(layer)]
    kwargs = dict(options, activation=cfg["activation"], use_bias=cfg["use_bias"],
                  name=layer.name, dtype=layer.dtype_policy, seed=seed)
    if cfg.get("activity_regularizer") is not None:
        kwargs["activity_regularizer"] = cfg["activity_regularizer"]
    cls = layer_class(rank, estimator, kind=kind)
    if rank == 0:
        return cls(cfg["units"], **kwargs)
    spatial = dict(strides=cfg["strides"], padding=cfg["padding"],
                   data_format=cfg["data_format"], dilation_rate=cfg["dilation_rate"])
    if kind == "depthwise":
        return cls(cfg["kernel_size"], depth_multiplier=cfg["depth_multiplier"], **spatial,
                   **kwargs)
    if kind == "transpose":
        kwargs["output_padding"] = cfg["output_padding"]
    return cls(cfg["filters"], cfg["kernel_size"], **spatial, **kwargs)


def _separable_twin(layer, estimator: str, options: dict, seed: int | None):
    """A ``SeparableConvND`` as a Sequential of two Bayesian layers, named like it.

    ``SeparableConvND(x) = act(pointwise(depthwise(x)) + b)``: the twin is
    ``DepthwiseConvND`` (``<name>_depthwise``: kernel_size, strides, padding,
    dilation, depth_multiplier; no bias, no activation) followed by a 1x1
    ``ConvND`` (``<name>_pointwise``: filters, the bias and the activation),
    each with its own mean-field posterior; their seeds are ``seed`` and
    ``seed + 1``.
    """
    cfg = layer.get_config()
    _, rank = _CONVERTIBLE[type(layer)]
    common = dict(options, dtype=layer.dtype_policy)
    depthwise = layer_class(rank, estimator, kind="depthwise")(
        cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
        depth_multiplier=cfg["depth_multiplier"], data_format=cfg["data_format"],
        dilation_rate=cfg["dilation_rate"], use_bias=False, name=f"{layer.name}_depthwise",
        seed=seed, **common,
    )
    pointwise = layer_class(rank, estimator)(
        cfg["filters"], 1, activation=cfg["activation"], use_bias=cfg["use_bias"],
        data_format=cfg["data_format"], name=f"{layer.name}_pointwise",
        seed=None if seed is None else seed + 1, **common,
    )
    return keras.Sequential([depthwise, pointwise], name=layer.name)


class _TwinCloner:
    """Step 2 of `to_bayesian`: the ``clone_function`` that makes the twins.

    Called once per layer by ``clone_model``; converted layer ``i`` (in call
    order) gets the seed ``seed + i``. It records, as its own attributes,

    * ``pairs``: ``(old, new, converted)`` for every cloned layer, which
      `_init_posterior` reads;
    * ``dropped``: names of converted layers whose regularizers /
      constraints were dropped.
    """

    def __init__(self, rule: _SkipRule, estimator: str, options: dict, seed: int | None):
        self.rule = rule
        self.estimator = estimator
        self.options = options
        self.seed = seed
        self.pairs: list[tuple[keras.layers.Layer, keras.layers.Layer, bool]] = []
        self.dropped: list[str] = []
        self.next_seed_offset = 0

    def __call__(self, layer):
        if layer in self.rule or not _converts(layer):
            new = layer.__class__.from_config(layer.get_config())
            self.pairs.append((layer, new, False))
            return new
        if any(layer.get_config().get(k) is not None for k in _PENALTIES):
            self.dropped.append(layer.name)
        index = self.next_seed_offset
        seed = None if self.seed is None else int(self.seed) + index
        if "num_components" in self.options:  # posterior="rank1"
            new = rank1.rank1_twin(layer, self.options, seed)
            self.next_seed_offset += 1
        elif _CONVERTIBLE[type(layer)][0] == "separable":
            new = _separable_twin(layer, self.estimator, self.options, seed)
            self.next_seed_offset += 2
        else:
            new = _bayesian_twin(layer, self.estimator, self.options, seed)
            self.next_seed_offset += 1
        self.pairs.append((layer, new, True))
        return new


def _init_kernel(new, w, moped_delta: float | None) -> None:
    """``new``'s posterior from the trained kernel ``w`` (same layout)."""
    new.kernel_loc.assign(w)
    if moped_delta is not None:
        sigma = np.maximum(float(moped_delta) * np.abs(w), MOPED_SIGMA_FLOOR)
        new.kernel_rho.assign(rho_from_sigma(sigma).astype(w.dtype))
    if new.kernel_prior_loc is not None:
        new.kernel_prior_loc.assign(w)


def _init_posterior(old, new, moped_delta: float | None) -> None:
    """Step 3 of `to_bayesian`: the twin's posterior from the trained layer.

    ``kernel_loc = w``; with MOPED ``sigma = max(delta * |w|, MOPED_SIGMA_FLOOR)``
    (else the layer's ``posterior_std_init``); a centred prior's location is
    ``w``; the bias is copied. The Bayesian kernels have Keras' layouts
    (depthwise ``(k..., in, multiplier)``, transposed ``(k..., out, in)``), so
    ``w`` is copied as it is; a separable layer's depthwise and pointwise
    kernels go to the two layers of its twin.
    """
    to_numpy = keras.ops.convert_to_numpy
    if isinstance(new, Rank1Layer):
        rank1.init_rank1(old, new)
        return
    if isinstance(new, keras.Sequential):  # a separable convolution's twin
        depthwise, pointwise = new.layers
        _init_kernel(depthwise, to_numpy(old.depthwise_kernel), moped_delta)
        _init_kernel(pointwise, to_numpy(old.pointwise_kernel), moped_delta)
        new = pointwise
    else:
        _init_kernel(new, to_numpy(old.kernel), moped_delta)
    if new.bias is not None:
        new.bias.assign(to_numpy(old.bias))


def to_bayesian(
    model: keras.Model,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    moped_delta: float | None = None,
    prior=None,
    centered_prior: bool = False,
    skip: Iterable = (),
    *,
    posterior_std_init: float = 1e-3,
    seed: int | None = None,
    center_prior: bool | None = None,
    last: int | None = None,
    posterior: str = "mean_field",
    num_components: int = 4,
) -> keras.Model:
    """Convert a trained deterministic Keras model into a Bayesian one.

    Every layer whose type is exactly ``keras.layers.Dense``, ``Conv1D``,
    ``Conv2D``, ``Conv3D``, ``DepthwiseConv1D``, ``DepthwiseConv2D``,
    ``Conv1DTranspose``, ``Conv2DTranspose`` or ``Conv3DTranspose`` becomes
    the Bayesian layer of the same kind, rank and ``estimator``
    (``tfp_bcnn.layers.layer_class(rank, estimator, kind)``) with the same
    filters / units / depth_multiplier, kernel_size, strides, padding,
    output_padding, data_format, dilation_rate, activation, use_bias, name
    and dtype policy. A ``SeparableConv1D`` / ``SeparableConv2D`` becomes a
    nested ``keras.Sequential`` with its name holding a Bayesian depthwise
    convolution (``<name>_depthwise``, no bias) and a Bayesian 1x1
    convolution (``<name>_pointwise``, the bias and activation): the same
    function, a posterior on each of its two kernels. Normalisation,
    activations (``ReLU(max_value=6)`` included), ``Add``, pooling and
    padding layers are cloned as they are, so ``keras.applications``
    networks such as ``MobileNetV2(weights=None)`` convert whole. Its posterior starts at the
    trained weights:

    * mean ``kernel_loc = w`` (the trained kernel); the bias stays a
      deterministic bias with the trained value;
    * std ``sigma = max(moped_delta * |w|, MOPED_SIGMA_FLOOR)`` with MOPED
      (Krishnan et al. 2020, https://arxiv.org/abs/1906.05323), else
      ``sigma = posterior_std_init`` for every weight. The floor keeps ``rho``
      finite and trainable where ``w == 0``;
    * ``kl_weight = 1 / num_train_examples``;
    * with ``centered_prior=True`` the prior is centred on the trained kernel
      (``kernel_prior_loc = w``; the KL is ``KL(N(mu, sigma) || p(. - w))``),
      an empirical-Bayes prior that pulls the posterior towards the
      pretrained solution rather than towards 0.

    Every other layer is cloned with its weights (a copy: training the result
    never changes ``model``). Sequential and functional graphs (skip
    connections, shared layers, several inputs/outputs) and nested Sequential
    / functional models keep their structure and layer names. Existing
    Bayesian layers are copied as they are.

    Kernel and bias regularizers and constraints of converted layers are
    dropped with a warning: the prior's KL is the Bayesian counterpart of a
    weight penalty, and a constraint on a weight has no meaning for its
    posterior.

    Args:
        model: a built Sequential or functional ``keras.Model``.
        estimator: estimator of the new layers.
        num_train_examples: training-set size ``N`` (required; sets
            ``kl_weight = 1 / N``).
        moped_delta: MOPED's relative std ``delta`` (> 0), e.g. 0.1; None
            uses ``posterior_std_init``.
        prior: prior of the new layers (None: ``priors.Normal(0, 1)``).
        centered_prior: centre the prior on the trained kernels (the layers'
            ``centered_prior``).
        skip: layer names (str) and/or layer classes (matched with
            ``isinstance``) to keep deterministic; names and classes of layers
            inside nested models match too, and a skipped nested model keeps
            all of its layers.
        posterior_std_init: std of every weight without MOPED (keyword-only; the
            layers' default 1e-3, so the converted model starts at the trained one).
        seed: int; converted layer ``i`` (in graph order) draws with
            ``seed + i`` (keyword-only).
        center_prior: deprecated alias of ``centered_prior`` (keyword-only;
            emits a ``DeprecationWarning``).
        last: None (every convertible layer), or an int ``k >= 1``: only the
            last ``k`` convertible layers in graph order become Bayesian, the
            rest stay deterministic -- a partially Bayesian network (Sharma et
            al. 2023, https://arxiv.org/abs/2211.06291); with ``skip``, the
            count is over the layers not skipped (keyword-only).
        posterior: ``"mean_field"`` (the above) or ``"rank1"``: every
            converted ``Dense`` / ``ConvND`` becomes the rank-1 mixture layer of
            its rank (`tfp_bcnn.layers.rank1_class`) with the trained kernel as
            its shared ``W``, the trained bias in every component, factors at
            the layers' initialisation with scale ``posterior_std_init`` (0.05
            when left at 1e-3) and ``prior`` on the factors; each input gets a
            `tfp_bcnn.layers.TileComponents` (train with
            `compile_bayesian`). ``estimator`` does not apply; ``moped_delta``
            and ``centered_prior`` are refused (keyword-only).
        num_components: K of ``posterior="rank1"`` (keyword-only).

    Returns:
        A new ``keras.Model`` (same class of graph, same name), uncompiled.

    Raises:
        ValueError: an unbuilt or subclassed model, a missing or invalid
            ``num_train_examples``, an invalid ``moped_delta`` or estimator, a
            ``last`` outside ``[1, number of convertible layers]``, a
            ``skip`` name that is not a layer of the model (a ``skip`` entry
            that is neither a str nor a layer class is a TypeError), or layers that
            cannot be converted (grouped or causal convolutions,
            EinsumDense, subclasses of the converted classes, quantized or
            LoRA layers) and are not in ``skip``;
            the message names all of them.

    The conversion runs in three steps: `_check_convertible` (arguments and
    layers), `_TwinCloner` (the graph rebuilt with a Bayesian twin for every
    convertible layer) and `_init_posterior` (posterior means, stds, centred
    priors and biases from the trained weights).

    Example:
    >>> import keras
    >>> from tfp_bcnn import models
    >>> net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="out")])
    >>> bnn = models.to_bayesian(net, num_train_examples=100, moped_delta=0.1)
    >>> type(bnn.get_layer("out")).__name__
    'DenseFlipout'
    """
    if center_prior is not None:
        warnings.warn(
            "`center_prior` is deprecated; use `centered_prior` (the layers' name).",
            DeprecationWarning,
            stacklevel=2,
        )
        centered_prior = center_prior
    rule = _check_convertible(model, estimator, num_train_examples, moped_delta, skip, last)
    k = _check_rank1(model, rule, posterior, num_components, moped_delta, centered_prior)
    options = {
        "prior": prior,
        "posterior_std_init": posterior_std_init,
        "kl_weight": 1.0 / num_train_examples,
        "centered_prior": bool(centered_prior),
    }
    if k:
        options = rank1.options(k, prior, posterior_std_init, 1.0 / num_train_examples)
    cloner = _TwinCloner(rule, estimator, options, seed)
    new_model = _clone_graph(model, cloner, cache={})
    if not new_model.built:
        new_model.build(model.input_shape)
    if cloner.dropped:
        warnings.warn(
            "to_bayesian dropped the kernel/bias regularizers and constraints of "
            f"{cloner.dropped}: the prior's KL replaces a weight penalty.",
            stacklevel=2,
        )
    for old, new, converted in cloner.pairs:
        if converted:
            _init_posterior(old, new, moped_delta)
        else:
            new.set_weights(old.get_weights())
    return rank1.add_training_tile(new_model, k) if k else new_model
