"""MobileNetV2 (Keras Applications) as a Bayesian, MC-dropout or deterministic classifier.

`deterministic` builds ``keras.applications.MobileNetV2(weights=None)`` with
its own classifier; ``models.mobilenet_v2`` makes it Bayesian with
``models.to_bayesian`` (all of it, or only the last ``k`` convertible
layers). `MOBILENET_RECIPE` is the training recipe that goes with it; the
reasoning behind it (measured) is in `DOC` (``models.mobilenet_v2``'s
docstring) and in BENCHMARKS.md ("Deep networks").
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import keras

from . import _validation as check
from .layers import MCDropout

__all__ = ["DOC", "MOBILENET_RECIPE", "check_arguments", "deterministic"]

#: The recipe of `mobilenet_v2` (the keys of ``models.RECIPE`` plus
#: ``bn_momentum``, ``posterior_std_init`` and ``prior_scale``, which the
#: builder reads): Adam with ``learning_rate`` for ``epochs`` passes in
#: batches of ``batch_size``; ``kl_beta`` multiplies the KL (1: the ELBO)
#: after a linear warm-up of ``kl_warmup_epochs``. See `mobilenet_v2` for why.
MOBILENET_RECIPE: Mapping = types.MappingProxyType(
    {"learning_rate": 2e-3, "epochs": 12, "batch_size": 64, "kl_beta": 1.0,
     "kl_warmup_epochs": 0, "bn_momentum": 0.9, "posterior_std_init": 1e-3,
     "prior_scale": 1.0}
)


def _reinitialize(model, seed: int | None) -> None:
    """Kernel ``i`` (graph order) redrawn from Glorot-uniform with ``seed + i``.

    Keras Applications draw their kernels from the global random state; this
    makes a build with ``seed`` repeatable without touching that state. The
    distribution is Keras' default one (``glorot_uniform``) for every Conv2D,
    DepthwiseConv2D and Dense kernel.
    """
    if seed is None:
        return
    kernels = [layer for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                     keras.layers.Dense))]
    for i, layer in enumerate(kernels):
        init = keras.initializers.GlorotUniform(seed=int(seed) + i)
        layer.kernel.assign(init(tuple(layer.kernel.shape), dtype=layer.kernel.dtype))


def deterministic(input_shape, num_classes, alpha, dropout, seed, bn_momentum, name):
    """The Keras MobileNetV2 body, global average pooling, [MCDropout], Dense softmax.

    BatchNormalization momentum ``bn_momentum``; kernels re-drawn with
    ``seed`` (`_reinitialize`).
    """
    base = keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=None,
        pooling="avg",
    )
    x = base.output
    if dropout:
        x = MCDropout(dropout, seed=None if seed is None else int(seed) + 1000,
                      name="dropout1")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                             dtype="float32")(x)
    model = keras.Model(base.input, out, name=name)
    for layer in model.layers:  # Keras Applications use 0.999 (see the docstring)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    _reinitialize(model, seed)
    return model


#: The docstring of ``models.mobilenet_v2`` (kept here, beside the recipe it explains).
DOC = """MobileNetV2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381), Bayesian or not.

    The network is ``keras.applications.MobileNetV2(weights=None,
    include_top=False, pooling="avg")`` -- 17 inverted-residual blocks (1x1
    expand Conv2D, 3x3 DepthwiseConv2D, 1x1 project Conv2D, BatchNormalization
    and ReLU6 between them, a residual ``Add`` where shapes allow), the 1x1
    ``Conv_1`` to ``1280 * max(1, alpha)`` channels and global average pooling
    -- followed by an optional `tfp_bcnn.layers.MCDropout` (``dropout1``) and
    ``Dense(num_classes, softmax)`` named ``predictions``. With alpha 0.35
    that is 53 convertible layers (52 convolutions, one Dense) and about
    0.4 million weights.

    With ``bayesian=True`` the deterministic network is passed through
    ``to_bayesian(..., posterior_std_init=..., prior=..., last=last)``: every
    (or the last ``last``) Conv2D / DepthwiseConv2D / Dense becomes the
    ``estimator`` layer with ``kl_weight = 1 / num_train_examples``, the
    posterior means at the twin's initial kernels; BatchNormalization, ReLU6,
    ``Add`` and pooling stay deterministic. ``last=1`` is a Bayesian head,
    ``last=5`` the last block (expand, depthwise, project), ``Conv_1`` and the
    head.

    Training (`MOBILENET_RECIPE`): from scratch, Adam 2e-3, batch 64, 12
    epochs, the plain ELBO (prior ``N(0, 1)``, ``kl_weight = 1 / N``),
    posterior std starting at 1e-3, BatchNormalization momentum 0.9 (Keras'
    0.999 keeps 94 % of the initial moving statistics after 64 steps, so a
    short run evaluates with the statistics of the untrained network).
    Screened on MNIST-5k padded to 32x32x3 (4,000 train / 1,000 test
    digits, letters A-J as OOD; ONE seed, 12 epochs in all, 16 samples; 2
    CPU cores shared with five other jobs, so the times are loaded ones):

    =========================================  =====  =====  =====  =======  ======  =====
    configuration                              acc    NLL    ECE    AUROC H  AUROC   time
                                                                    letters  MI      (s)
    =========================================  =====  =====  =====  =======  ======  =====
    deterministic twin                         0.928  0.256  0.034  0.851    --      119
    Bayesian from scratch (this recipe)        0.933  0.266  0.021  0.845    0.837   339
    same, std 5e-3, tempered KL (beta 0.1)     0.934  0.231  0.017  0.848    0.831   487
    9 deterministic epochs, MOPED 0.1 +        0.912  0.253  0.027  0.875    0.854   433
    centred prior, 3 Bayesian epochs
    Bayesian last 5 layers from scratch        0.890  0.408  0.049  0.798    0.753   203
    =========================================  =====  =====  =====  =======  ======  =====

    So a deep Bayesian net does not need the convert-then-fine-tune detour
    here: trained from scratch it matches its twin's accuracy with a lower
    calibration error. The KL of ~400,000 weights (about 500 nats per
    example at N = 4,000) dominates the loss value, but its gradient on a
    mean is ``mu / N`` and it widens ``sigma`` only at Adam's step size, so
    with a 1e-3 start the posterior stays narrow enough for 50 layers of
    noise. Converting a trained net (MOPED, centred prior;
    `examples/mobilenet_uncertainty.py` did that) gave the best OOD AUROC
    but lower accuracy and a longer run, and a tempered KL (beta 0.1) the
    best NLL / ECE; with one seed both differences are within what seeds
    move (about 0.01 in accuracy), so the plain ELBO stays the recipe. A
    Bayesian last block + head trained from scratch was worse on every
    column in this short run (``last=k`` is meant for converting a trained
    network: its deterministic body then already works).

    Args:
        input_shape: ``(height, width, 3)``, height and width >= 32.
        num_classes: classes ``C`` (>= 2).
        alpha: MobileNetV2's width multiplier (> 0; Keras: 0.35, 0.5, 0.75,
            1.0, 1.3 or 1.4 have weights, any positive value builds).
        bayesian: False builds the deterministic twin (same layer names);
            with ``dropout`` it is the MC-dropout twin.
        estimator: estimator of the Bayesian layers.
        num_train_examples: training-set size ``N`` (required when Bayesian).
        last: None (fully Bayesian) or ``k``: only the last ``k`` convertible
            layers are Bayesian (see ``to_bayesian``).
        dropout: None, or the rate of an `MCDropout` before the classifier.
        seed: int; kernel ``i`` is initialised with ``seed + i`` and Bayesian
            layer ``i`` draws with ``seed + i``.
        prior: prior of the Bayesian layers (None: ``Normal(0,
            MOBILENET_RECIPE["prior_scale"])``).
        posterior_std_init: initial posterior std (None: the recipe's).
        bn_momentum: BatchNormalization momentum (None: the recipe's 0.9).

    Returns:
        A built functional ``keras.Model`` ``(batch, H, W, 3) -> (batch, C)``
        probabilities, named ``mobilenet_v2`` (``_deterministic`` /
        ``_mc_dropout`` appended when not Bayesian), uncompiled.

    Raises:
        ValueError: an invalid shape, class count, alpha, dropout rate,
            estimator, ``last`` out of range, or ``bayesian=True`` without
            ``num_train_examples`` (the value received is quoted).

    Example:
    >>> from tfp_bcnn import models
    >>> net = models.mobilenet_v2(num_train_examples=4000, last=1)
    >>> type(net.get_layer("predictions")).__name__
    'DenseFlipout'
"""


def check_arguments(input_shape, alpha, bn_momentum) -> tuple:
    """``(input_shape, alpha, bn_momentum)`` checked (``bn_momentum`` None: the recipe's)."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    if (len(shape) != 3 or not all(check.is_int(d) for d in shape)
            or min(shape[:2]) < 32 or shape[2] != 3):
        raise ValueError(
            "`input_shape` must be (height, width, 3) with height and width >= 32 "
            f"(MobileNetV2 halves the size five times). Received: input_shape={input_shape!r}"
        )
    alpha = check.positive_float("alpha", alpha)
    momentum = MOBILENET_RECIPE["bn_momentum"] if bn_momentum is None else bn_momentum
    return tuple(int(d) for d in shape), alpha, check.fraction("bn_momentum", momentum)

