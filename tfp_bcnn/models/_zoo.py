"""Model zoo (LeNet-5, AlexNet, 3Conv3FC, MobileNetV2) and conversion of trained Keras models.

Builders
--------
The seed architectures of the Bayesian CNN paper (Shridhar et al. 2019,
https://arxiv.org/abs/1901.02731; reference code kumar-shridhar/PyTorch-BayesianCNN):

* `lenet5`: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc C.
* `alexnet`: the paper's small-image AlexNet, conv 64@11x11/4 -> pool ->
  conv 192@5x5 -> pool -> conv 384@3x3 -> conv 256@3x3 -> conv 128@3x3 ->
  pool -> fc C.
* `three_conv_three_fc`: conv 32@5x5 -> pool -> conv 64@5x5 -> pool ->
  conv 128@5x5 -> pool -> fc 1000 -> fc 1000 -> fc C.

Each architecture is written once, as a function of a layer factory; the
factory makes Bayesian layers (``tfp_bcnn.layers.layer_class(rank, estimator)``)
or their deterministic Keras twins (``bayesian=False``). Both variants share
layer names (``conv1``, ``pool1``, ..., ``fc1``, ...), and with the same
``seed`` the twin's initial kernels equal the Bayesian posterior means.
Classifiers end in a softmax (they output probabilities).

Every Bayesian layer gets ``kl_weight = 1 / num_train_examples``, so the Keras
loss is the per-example negative ELBO::

    loss = mean_batch NLL + (1 / N) * sum_layers KL(q || p)

Conversion
----------
`to_bayesian` turns every ``Dense``, ``ConvND``, ``DepthwiseConvND``,
``ConvNDTranspose`` and ``SeparableConvND`` (as a depthwise + pointwise pair)
of a trained deterministic model (e.g. ``keras.applications.MobileNetV2``)
into its Bayesian twin, with the posterior means
at the trained weights (MOPED, Krishnan et al. 2020,
https://arxiv.org/abs/1906.05323, for the posterior std).
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np

from .. import _validation as check
from .. import kl as kl_lib
from .. import regularizers
from .._annealing import KLAnnealing
from .._compat import all_layers, clone_model, input_layer_name, is_graph_model
from .. import _mobilenet
from .._mobilenet import MOBILENET_RECIPE
from ..layers import ESTIMATORS, MCDropout, layer_class, rank1_class
from ..layers._base import rho_from_sigma

__all__ = [
    "DEFAULT_POSTERIOR_STD_INIT",
    "MOBILENET_RECIPE",
    "MOPED_SIGMA_FLOOR",
    "RECIPE",
    "alexnet",
    "compile_bayesian",
    "lenet5",
    "mobilenet_v2",
    "recipe_callbacks",
    "three_conv_three_fc",
    "to_bayesian",
]

#: Default initial posterior std of the builders.
DEFAULT_POSTERIOR_STD_INIT = 5e-3
#: Smallest posterior std that `to_bayesian` gives a weight with MOPED.
MOPED_SIGMA_FLOOR = 1e-6

#: The training recipe that goes with the builders' defaults, chosen by the
#: screening recorded in BENCHMARKS.md ("Tuning of the Bayesian recipe"):
#: Adam with ``learning_rate``, ``epochs`` passes in batches of
#: ``batch_size``; ``kl_beta`` multiplies the KL term (1: the ELBO; below 1: a
#: tempered, "cold" posterior, see `recipe_callbacks`) after a linear warm-up
#: over ``kl_warmup_epochs`` (0: none). The command line, the main job and the
#: benchmarks train with exactly this.
RECIPE: Mapping = types.MappingProxyType(
    {"learning_rate": 2e-3, "epochs": 20, "batch_size": 64, "kl_beta": 1.0,
     "kl_warmup_epochs": 0}
)


def recipe_callbacks(recipe: Mapping = RECIPE) -> list:
    """The Keras callbacks that train a Bayesian model with a recipe's KL weighting.

    With ``beta = recipe["kl_beta"]`` and ``k = recipe["kl_warmup_epochs"]``,
    every Bayesian layer's KL weight is ``beta_t / N`` (``N`` the training-set
    size the model was built with): ``beta_t = beta`` for ``k = 0``, else the
    linear warm-up ``beta * min(1, (epoch + 1) / k)``. ``beta = 1`` is the
    evidence lower bound; ``beta < 1`` is a tempered posterior
    ``q(w) ~ p(D | w) p(w)^beta`` (the prior counted as ``beta`` of itself),
    which keeps the posterior from being pushed wider than the data allow;
    Wenzel et al. 2020, https://arxiv.org/abs/2002.02405, discuss why
    ``beta < 1`` often predicts better.

    Args:
        recipe: a mapping like `RECIPE` (missing keys: ``kl_beta`` 1,
            ``kl_warmup_epochs`` 0).

    Returns:
        ``[tfp_bcnn.KLAnnealing(...)]``, or ``[]`` for the plain ELBO without
        warm-up.
    """
    beta = float(recipe.get("kl_beta", 1.0))
    warmup = int(recipe.get("kl_warmup_epochs", 0) or 0)
    if warmup > 0:
        return [KLAnnealing("linear", warmup_epochs=warmup, beta=beta)]
    return [KLAnnealing("constant", beta=beta)] if beta != 1.0 else []


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------


def _check_num_train_examples(num_train_examples, required_by):
    if num_train_examples is None:
        raise ValueError(
            f"`num_train_examples` is required {required_by}: every Bayesian layer "
            "scales its KL by 1 / num_train_examples, and without it the KL of the "
            "whole network (summed over all weights) would swamp the per-example "
            "likelihood. Pass the size of the training set. "
            "Received: num_train_examples=None"
        )
    return check.positive_int("num_train_examples", num_train_examples)


def _check_image_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(check.is_int(d) and d > 0 for d in shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _check_num_classes(num_classes):
    return check.integer("num_classes", num_classes, minimum=2)


# --------------------------------------------------------------------------
# Layer factory: the only place where Bayesian and deterministic builds differ
# --------------------------------------------------------------------------


class _LayerFactory:
    """Makes the conv / dense layers of an architecture, Bayesian or not.

    Layer ``i`` (counted in build order) gets the seed ``seed + i`` for its
    kernel initializer (and, when Bayesian, for its random draws), so the
    deterministic twin built with the same seed starts at the same kernels as
    the Bayesian posterior means.
    """

    def __init__(self, bayesian, estimator, prior, posterior_std_init, kl_weight, seed,
                 dropout=None, output_bias_std=None, kernel_regularizer=None,
                 num_components=None):
        self.bayesian = bayesian
        #: None: mean-field layers; K: rank-1 mixture layers with K components.
        self.num_components = num_components
        self.dropout_rate = dropout
        self.output_bias_std = output_bias_std
        self.kernel_regularizer = kernel_regularizer
        self.output_layers = []
        self.estimator = estimator
        self.prior = prior
        self.posterior_std_init = posterior_std_init
        self.kl_weight = kl_weight
        self.seed = seed
        self._count = 0
        self._dropout_count = 0

    def _next_seed(self):
        i = self._count
        self._count += 1
        return None if self.seed is None else int(self.seed) + i

    def _make(self, rank, size, output=False, **kwargs):
        seed = self._next_seed()
        kwargs["kernel_initializer"] = keras.initializers.GlorotUniform(seed=seed)
        # The classifier's units are the classes (never pruned): left unregularized.
        kwargs["kernel_regularizer"] = None if output else self.kernel_regularizer
        if not self.bayesian:
            cls = {0: keras.layers.Dense, 2: keras.layers.Conv2D}[rank]
            return cls(size, **kwargs)
        if self.num_components is not None:
            return _rank1_layer(rank, size, self, seed, **kwargs)
        if output and self.output_bias_std:
            kwargs["bayesian_bias"] = True
        layer = layer_class(rank, self.estimator)(
            size,
            prior=self.prior,
            posterior_std_init=self.posterior_std_init,
            kl_weight=self.kl_weight,
            seed=seed,
            **kwargs,
        )
        if output and self.output_bias_std:
            self.output_layers.append(layer)
        return layer

    def init_output_bias(self):
        """Sets the output biases' posterior std (call once the model is built)."""
        for layer in self.output_layers:
            sigma = np.full(layer.bias_rho.shape, self.output_bias_std, "float32")
            layer.bias_rho.assign(rho_from_sigma(sigma).astype("float32"))

    def conv(self, filters, kernel_size, **kwargs):
        return self._make(2, filters, kernel_size=kernel_size, **kwargs)

    def dense(self, units, **kwargs):
        return self._make(0, units, **kwargs)

    def dropout(self):
        """``[MCDropout]`` when the model has dropout, else ``[]`` (splice with ``*``).

        Dropout layer ``j`` is named ``dropout{j + 1}`` and seeded with
        ``seed + 1000 + j``: its own stream, so adding dropout does not change
        the kernels' initial values.
        """
        if not self.dropout_rate:
            return []
        j = self._dropout_count
        self._dropout_count += 1
        seed = None if self.seed is None else int(self.seed) + 1000 + j
        return [MCDropout(self.dropout_rate, seed=seed, name=f"dropout{j + 1}")]


#: Posterior families of the builders: mean-field Gaussian weights, or rank-1
#: mixture layers (`tfp_bcnn.layers.Rank1Dense` / `Rank1Conv2D`).
POSTERIOR_FAMILIES = ("mean_field", "rank1")
#: Initial factor scale of rank-1 layers when ``posterior_std_init`` is left at
#: the mean-field default (the layers' own default).
RANK1_FACTOR_STD_INIT = 0.05


def _rank1_layer(rank, size, factory, seed, **kwargs):
    """A rank-1 mixture layer of the factory's K; the prior, if given, on the factors."""
    std = factory.posterior_std_init
    if std == DEFAULT_POSTERIOR_STD_INIT:
        std = RANK1_FACTOR_STD_INIT
    return rank1_class(rank)(
        size, num_components=factory.num_components, prior=factory.prior,
        posterior_std_init=std, kl_weight=factory.kl_weight, seed=seed, **kwargs)


def _check_posterior(posterior, num_components, bayesian, output_bias_std):
    """K for ``posterior="rank1"`` (None for mean-field), checked."""
    check.choice("posterior", posterior, POSTERIOR_FAMILIES)
    k = check.positive_int("num_components", num_components)
    if posterior != "rank1" or not bayesian:
        return None
    if output_bias_std is not None:
        raise ValueError("output_bias_std applies to mean-field models; rank-1 layers have a "
                         f"bias per component. Received: output_bias_std={output_bias_std!r}")
    return k


def _check_dropout(dropout):
    """None, or a rate in ``[0, 1)`` (0 means no dropout layer: None)."""
    return None if dropout is None else (check.fraction("dropout", dropout) or None)


def _check_output_bias_std(value):
    return None if value is None else check.positive_float("output_bias_std", value)


#: The output layer computes in float32 under a mixed-precision policy, as
#: Keras advises: float16 probabilities carry ~1e-3 relative rounding, the size
#: of a typical mutual information (epistemic uncertainty) in nats.
_OUTPUT_DTYPE = "float32"


def _build(body, name, input_shape, num_classes, estimator, num_train_examples, bayesian,
           prior, posterior_std_init, seed, dropout=None, output_bias_std=None,
           kernel_regularizer=None, posterior="mean_field", num_components=4,
           **body_kwargs):
    input_shape = _check_image_shape(input_shape)
    k = _check_posterior(posterior, num_components, bayesian, output_bias_std)
    dropout = _check_dropout(dropout)
    output_bias_std = _check_output_bias_std(output_bias_std)
    num_classes = _check_num_classes(num_classes)
    check.choice("estimator", estimator, ESTIMATORS)
    kl_weight = 1.0
    if bayesian:
        n = _check_num_train_examples(num_train_examples, "when bayesian=True")
        kl_weight = 1.0 / n
    factory = _LayerFactory(
        bool(bayesian), estimator, prior, posterior_std_init, kl_weight, seed, dropout,
        output_bias_std, keras.regularizers.get(kernel_regularizer), k,
    )
    layers = [keras.Input(shape=input_shape, name="image")]
    layers += body(factory, input_shape, num_classes, **body_kwargs)
    suffix = "_rank1" if k else ""
    suffix = suffix if bayesian else ("_mc_dropout" if dropout else "_deterministic")
    model = keras.Sequential(layers, name=name + suffix)
    factory.init_output_bias()
    return model


# --------------------------------------------------------------------------
# Architectures: one body each, parameterized by the factory
# --------------------------------------------------------------------------


def _lenet5_body(make, input_shape, num_classes, activation):
    # LeCun's LeNet-5 expects 32x32 inputs; MNIST's 28x28 digits were padded
    # to 32x32 by 2 pixels, which is what padding="same" does for a 5x5 kernel.
    first_padding = "same" if min(input_shape[:2]) < 32 else "valid"
    L = keras.layers
    return [
        make.conv(6, 5, padding=first_padding, activation=activation, name="conv1"),
        L.MaxPooling2D(2, name="pool1"),
        make.conv(16, 5, activation=activation, name="conv2"),
        L.MaxPooling2D(2, name="pool2"),
        L.Flatten(name="flatten"),
        *make.dropout(),
        make.dense(120, activation=activation, name="fc1"),
        *make.dropout(),
        make.dense(84, activation=activation, name="fc2"),
        *make.dropout(),
        make.dense(num_classes, activation="softmax", name="fc3", output=True,
                   dtype=_OUTPUT_DTYPE),
    ]


def _alexnet_body(make, input_shape, num_classes, activation):
    L = keras.layers
    return [
        make.conv(64, 11, strides=4, padding="same", activation=activation, name="conv1"),
        L.MaxPooling2D(2, padding="same", name="pool1"),
        make.conv(192, 5, padding="same", activation=activation, name="conv2"),
        L.MaxPooling2D(2, padding="same", name="pool2"),
        make.conv(384, 3, padding="same", activation=activation, name="conv3"),
        make.conv(256, 3, padding="same", activation=activation, name="conv4"),
        make.conv(128, 3, padding="same", activation=activation, name="conv5"),
        L.MaxPooling2D(2, padding="same", name="pool3"),
        L.Flatten(name="flatten"),
        *make.dropout(),
        make.dense(num_classes, activation="softmax", name="fc1", output=True,
                   dtype=_OUTPUT_DTYPE),
    ]


def _three_conv_three_fc_body(make, input_shape, num_classes, activation):
    L = keras.layers
    return [
        make.conv(32, 5, padding="same", activation=activation, name="conv1"),
        L.MaxPooling2D(3, strides=2, name="pool1"),
        make.conv(64, 5, padding="same", activation=activation, name="conv2"),
        L.MaxPooling2D(3, strides=2, name="pool2"),
        # The reference pads this 5x5 convolution by 1 pixel (not "same").
        L.ZeroPadding2D(1, name="pad3"),
        make.conv(128, 5, activation=activation, name="conv3"),
        L.MaxPooling2D(3, strides=2, name="pool3"),
        L.Flatten(name="flatten"),
        *make.dropout(),
        make.dense(1000, activation=activation, name="fc1"),
        *make.dropout(),
        make.dense(1000, activation=activation, name="fc2"),
        *make.dropout(),
        make.dense(num_classes, activation="softmax", name="fc3", output=True,
                   dtype=_OUTPUT_DTYPE),
    ]


_COMMON_ARGS = """
    Args:
        input_shape: ``(height, width, channels)`` of the images (channels_last).
        num_classes: number of classes ``C`` (>= 2).
        estimator: ``"flipout"``, ``"reparameterization"`` or
            ``"local_reparameterization"`` (see ``tfp_bcnn.layers.BayesianLayer``).
        num_train_examples: training-set size ``N``; every Bayesian layer gets
            ``kl_weight = 1 / N``. Required when ``bayesian=True``.
        bayesian: False builds the deterministic twin (``keras.layers.Conv2D``
            / ``Dense``, same layer names, same code) and ignores
            ``num_train_examples``, ``prior`` and ``posterior_std_init``.
        prior: weight prior of every Bayesian layer (a ``tfp_bcnn.priors``
            prior, a name, or a TFP distribution); None means
            ``priors.Normal(0, 1)``.
        posterior_std_init: initial posterior std of every kernel weight.
        activation: hidden activation (the output is always a softmax).
        output_bias_std: None, or give the output layer a Bayesian bias whose
            posterior std starts at this value (e.g. the prior's scale:
            additive logit noise that, unlike weight noise, does not vanish
            for inputs with small activations; screened in BENCHMARKS.md).
            Keyword-only; Bayesian models only.
        dropout: None, or the rate of a `tfp_bcnn.layers.MCDropout` placed
            before every fully connected layer (after the convolutional blocks
            and between the fc layers, where the reference MC-dropout LeNet /
            AlexNet put it; Gal & Ghahramani 2016). It stays on at inference,
            so ``bayesian=False, dropout=0.25`` is the Monte Carlo dropout
            baseline (keyword-only; combines with ``bayesian=True`` too).
        seed: int; layer ``i`` uses ``seed + i`` for its kernel initializer and
            its random draws (keyword-only).
        kernel_regularizer: a regularizer of every hidden convolution / dense
            kernel (the posterior means when Bayesian), e.g.
            ``tfp_bcnn.regularizers.GroupL1(1e-3)`` for filter pruning; the
            output layer is left unregularized (keyword-only).
        posterior: ``"mean_field"`` (the layers above) or ``"rank1"``: rank-1
            mixture layers (`tfp_bcnn.layers.Rank1Conv2D` / `Rank1Dense`, one
            shared kernel and ``num_components`` components of rank-1
            factors); ``prior`` and ``posterior_std_init`` then apply to the
            factors (the mean-field default std becomes 0.05, a None prior
            the layers' ``Normal(1, 1)``). ``tfp_bcnn.predict`` spreads its
            samples over the components (``num_samples`` a multiple of K).
            Keyword-only; Bayesian models only.
        num_components: K of ``posterior="rank1"``, >= 1 (keyword-only).
        name: model name (``"_deterministic"``, or ``"_mc_dropout"`` with
            dropout, is appended when not Bayesian).

    Returns:
        A built ``keras.Sequential`` mapping ``(batch, H, W, C_in)`` images to
        ``(batch, num_classes)`` probabilities. Uncompiled (see
        `compile_bayesian`).

    Raises:
        ValueError: ``bayesian=True`` without ``num_train_examples``, or an
            invalid shape, class count, estimator or dropout rate (the value
            is quoted).
"""


def lenet5(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    bayesian: bool = True,
    prior=None,
    posterior_std_init: float = DEFAULT_POSTERIOR_STD_INIT,
    activation: str = "relu",
    *,
    dropout: float | None = None,
    output_bias_std: float | None = None,
    seed: int | None = None,
    kernel_regularizer=None,
    posterior: str = "mean_field",
    num_components: int = 4,
    name: str = "lenet5",
) -> keras.Model:
    return _build(
        _lenet5_body, name, input_shape, num_classes, estimator, num_train_examples,
        bayesian, prior, posterior_std_init, seed, dropout, output_bias_std,
        kernel_regularizer, posterior, num_components,
        activation=activation,
    )


lenet5.__doc__ = (
    """LeNet-5: conv 6@5x5 -> max-pool 2 -> conv 16@5x5 -> max-pool 2 -> fc 120 -> fc 84 -> fc C.

    For inputs smaller than 32x32 the first convolution uses ``"same"``
    padding, which on 28x28 MNIST is LeCun's padding of the digits to 32x32
    (28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 = 400 features, 61,706
    parameters in the twin); from 32x32 on it is ``"valid"``, as in the
    reference code.

    The defaults (prior ``Normal(0, 1)``, posterior std 5e-3, relu) were
    chosen on MNIST-5k (4,000 training images, Adam 2e-3, batch 64, 20
    epochs, 32 Monte Carlo samples, seed 0, 2 CPU cores, about 30-70 s):

    ============  =====  =====  ======  ================  ==================
    posterior std  acc    NLL    ECE    epistemic (nats)  OOD AUROC letters
    ============  =====  =====  ======  ================  ==================
    1e-3 (12 ep)  0.970  0.104  0.0146  0.001             0.866
    5e-3          0.979  0.076  0.0117  0.037             0.898
    1e-2          0.969  0.104  0.0240  0.075             0.900
    2e-2          0.980  0.092  0.0378  0.093             0.917
    frequentist   0.975  0.111  0.0163  0                 (entropy) 0.902
    ============  =====  =====  ======  ================  ==================

    A larger initial std gives more epistemic uncertainty (better OOD
    detection) but an under-confident mean (higher ECE); 1e-3 leaves the
    posterior nearly a point mass after a few hundred steps, since Adam moves
    ``rho`` by about the learning rate per step. A narrower prior
    ``Normal(0, 0.1)`` under-fits (95.7% after 15 epochs): its pull on the
    means, ``mu / (scale^2 N)``, is 100 times stronger.

    A second screening (3 seeds; ``benchmarks/tuning.py``, table in
    BENCHMARKS.md) tried wider initial posteriors, priors ``N(0, 0.3)``, a
    tempered KL, longer training, local reparameterization,
    Bayesian biases, augmentation and MOPED: none beat these defaults (with
    `RECIPE`) beyond seed noise on accuracy, NLL, ECE and OOD AUROC at once,
    so they stay.
"""
    + _COMMON_ARGS
    + """
    Example:
    >>> from tfp_bcnn import models
    >>> model = models.lenet5(num_train_examples=4000)
    >>> model.output_shape
    (None, 10)
    """
)


def alexnet(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    bayesian: bool = True,
    prior=None,
    posterior_std_init: float = DEFAULT_POSTERIOR_STD_INIT,
    activation: str = "relu",
    *,
    dropout: float | None = None,
    output_bias_std: float | None = None,
    seed: int | None = None,
    kernel_regularizer=None,
    posterior: str = "mean_field",
    num_components: int = 4,
    name: str = "alexnet",
) -> keras.Model:
    return _build(
        _alexnet_body, name, input_shape, num_classes, estimator, num_train_examples,
        bayesian, prior, posterior_std_init, seed, dropout, output_bias_std,
        kernel_regularizer, posterior, num_components,
        activation=activation,
    )


alexnet.__doc__ = (
    """The small-image AlexNet of Shridhar et al.: 5 convolutions, 3 max-pools, fc C.

    conv 64@11x11 stride 4 -> pool -> conv 192@5x5 -> pool -> conv 384@3x3 ->
    conv 256@3x3 -> conv 128@3x3 -> pool -> fc C. Every convolution and pool
    uses ``"same"`` padding, so any input size works: 32x32 gives the
    reference's 8 -> 4 -> 2 -> 1 spatial sizes (1x1x128 features; the
    reference pads conv1 by 5 on both sides, Keras by 3 / 4, same output
    size), and 28x28 MNIST gives 7 -> 4 -> 2 -> 1 (with "valid" pools it would
    shrink to zero).
"""
    + _COMMON_ARGS
)


def three_conv_three_fc(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    bayesian: bool = True,
    prior=None,
    posterior_std_init: float = DEFAULT_POSTERIOR_STD_INIT,
    activation: str = "relu",
    *,
    dropout: float | None = None,
    output_bias_std: float | None = None,
    seed: int | None = None,
    kernel_regularizer=None,
    posterior: str = "mean_field",
    num_components: int = 4,
    name: str = "three_conv_three_fc",
) -> keras.Model:
    return _build(
        _three_conv_three_fc_body, name, input_shape, num_classes, estimator,
        num_train_examples, bayesian, prior, posterior_std_init, seed, dropout,
        output_bias_std, kernel_regularizer, posterior, num_components,
        activation=activation,
    )


three_conv_three_fc.__doc__ = (
    """3Conv3FC: conv 32@5 -> pool -> conv 64@5 -> pool -> conv 128@5 -> pool -> fc 1000 x2 -> fc C.

    As in the reference: the first two convolutions are "same" (pad 2), the
    third pads by 1 pixel, pools are 3x3 with stride 2 ("valid"). 32x32 gives
    2x2x128 features, 28x28 gives 1x1x128; inputs must be at least 22x22.
"""
    + _COMMON_ARGS
)


def mobilenet_v2(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    alpha: float = 0.35,
    *,
    bayesian: bool = True,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    last: int | None = None,
    dropout: float | None = None,
    seed: int | None = None,
    prior=None,
    posterior_std_init: float | None = None,
    bn_momentum: float | None = None,
) -> keras.Model:
    input_shape, alpha, momentum = _mobilenet.check_arguments(input_shape, alpha, bn_momentum)
    num_classes = _check_num_classes(num_classes)
    dropout = _check_dropout(dropout)
    check.choice("estimator", estimator, ESTIMATORS)
    if bayesian:
        _check_num_train_examples(num_train_examples, "when bayesian=True")
    suffix = "" if bayesian else ("_mc_dropout" if dropout else "_deterministic")
    net = _mobilenet.deterministic(input_shape, num_classes, alpha, dropout, seed, momentum,
                                   "mobilenet_v2" + suffix)
    if not bayesian:
        return net
    recipe = MOBILENET_RECIPE
    if prior is None:
        from ..priors import Normal

        prior = Normal(0.0, recipe["prior_scale"])
    std = recipe["posterior_std_init"] if posterior_std_init is None else posterior_std_init
    return to_bayesian(net, estimator, num_train_examples, prior=prior, seed=seed, last=last,
                       posterior_std_init=check.positive_float("posterior_std_init", std))


mobilenet_v2.__doc__ = _mobilenet.DOC


def compile_bayesian(
    model: keras.Model,
    learning_rate: float = RECIPE["learning_rate"],
    *,
    metrics: Iterable = ("accuracy",),
    **compile_kwargs,
) -> keras.Model:
    """Compile a classifier with the recommended settings; returns the same model.

    Adam with ``learning_rate``, ``sparse_categorical_crossentropy`` on the
    softmax outputs (integer labels), the given metrics and, when the model
    has Bayesian layers, ``tfp_bcnn.KLDivergence(model)`` logged as ``kl``
    (and, when a layer has a kernel regularizer,
    ``tfp_bcnn.RegularizationLoss(model)`` logged as ``reg``)
    (``loss - kl`` is the likelihood term; not on the JAX backend, where
    ``tfp_bcnn.kl_divergence(model)`` gives it after ``fit``).

    Args:
        model: a classifier ending in a softmax (e.g. from `lenet5`).
        learning_rate: Adam's learning rate (default: ``RECIPE["learning_rate"]``).
        metrics: metrics before ``kl`` (keyword-only).
        **compile_kwargs: passed to ``model.compile`` (e.g. ``jit_compile``).

    Returns:
        ``model``, compiled.
    """
    metrics = list(metrics)
    # The kl metric reads the weights inside the step, which JAX's compiled step hides.
    if any(True for _ in kl_lib.variational_layers(model)) and keras.backend.backend() != "jax":
        metrics.append(kl_lib.KLDivergence(model))
        if regularizers.has_regularizer(model):
            metrics.append(regularizers.RegularizationLoss(model))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=metrics,
        **compile_kwargs,
    )
    return model


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
        if _CONVERTIBLE[type(layer)][0] == "separable":
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
    options = {
        "prior": prior,
        "posterior_std_init": posterior_std_init,
        "kl_weight": 1.0 / num_train_examples,
        "centered_prior": bool(centered_prior),
    }
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
    return new_model
