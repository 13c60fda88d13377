"""Dense-output models: a Bayesian U-Net and a super-resolution net, with their twins.

Both output one prediction per pixel: a softmax over classes (segmentation,
``(batch, H, W, C)``) or a per-pixel Gaussian from `tfp_bcnn.layers.GaussianHead`
(``(batch, H, W, 2 C)`` = ``[mean, std]``). ``tfp_bcnn.models`` re-exports
`unet` and `super_resolution`; `compile_bayesian` picks the loss from the head.

KL weight of a dense model: the Keras losses of a dense output (per-pixel
cross-entropy, `tfp_bcnn.gaussian_nll`) are averaged over the ``P = H_out *
W_out`` output pixels as well as the batch, so every Bayesian layer gets
``kl_weight = 1 / (N * P)`` and the training loss is ``1 / P`` times the
per-image negative ELBO::

    loss = mean_{n, pixel} NLL + KL(q || p) / (N * P)
         = (1 / P) * [ (1/N) sum_n sum_pixel NLL + KL(q || p) / N ]

so the likelihood of every pixel counts once against the prior, exactly as in
the ELBO (Kendall & Gal 2017, https://arxiv.org/abs/1703.04977).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from .. import _validation as check
from ..layers import ESTIMATORS, GaussianHead, layer_class
from ._recipe import _check_num_train_examples
from ._zoo import DEFAULT_POSTERIOR_STD_INIT, _check_image_shape, _LayerFactory

__all__ = ["HEADS", "super_resolution", "unet"]

#: Output heads of the dense builders.
HEADS = ("softmax", "gaussian")


class _DenseFactory(_LayerFactory):
    """`_LayerFactory` plus transposed convolutions (seeded in the same build order)."""

    def transpose(self, filters, kernel_size, **kwargs):
        seed = self._next_seed()
        kwargs["kernel_initializer"] = keras.initializers.GlorotUniform(seed=seed)
        if not self.bayesian:
            return keras.layers.Conv2DTranspose(filters, kernel_size, **kwargs)
        return layer_class(2, self.estimator, "transpose")(
            filters, kernel_size, prior=self.prior,
            posterior_std_init=self.posterior_std_init, kl_weight=self.kl_weight,
            seed=seed, **kwargs)


def _factory(bayesian, estimator, num_train_examples, pixels, prior, posterior_std_init,
             seed):
    check.choice("estimator", estimator, ESTIMATORS)
    posterior_std_init = check.positive_float("posterior_std_init", posterior_std_init)
    kl_weight = 1.0
    if bayesian:
        n = _check_num_train_examples(num_train_examples, "when bayesian=True")
        kl_weight = 1.0 / (n * pixels)
    if seed is not None:
        seed = check.integer("seed", seed, minimum=0)
    return _DenseFactory(bool(bayesian), estimator, prior, posterior_std_init, kl_weight,
                         seed)


def _head(make, x, head, channels, name):
    """The output layer: a 1x1 softmax conv (float32) or a per-pixel GaussianHead."""
    if head == "softmax":
        return make.conv(channels, 1, activation="softmax", name=name, dtype="float32")(x)
    return GaussianHead(channels, name=name, dtype="float32")(x)


def _conv_block(make, x, filters, name):
    """Two 3x3 "same" relu convolutions (the U-Net's unit)."""
    x = make.conv(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    return make.conv(filters, 3, padding="same", activation="relu", name=f"{name}_conv2")(x)


def _suffix(bayesian):
    return "" if bayesian else "_deterministic"


def unet(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int = 2,
    base_filters: int = 16,
    *,
    bayesian: bool = True,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    head: str = "softmax",
    prior=None,
    posterior_std_init: float = DEFAULT_POSTERIOR_STD_INIT,
    seed: int | None = None,
    name: str = "unet",
) -> keras.Model:
    """A small U-Net (Ronneberger et al. 2015) with Bayesian convolutions.

    Encoder level ``l = 0..depth-1``: two 3x3 relu convolutions with
    ``base_filters * 2**l`` filters, then 2x2 max pooling; a bottleneck block
    of ``base_filters * 2**depth``; decoder level ``l = depth-1..0``: a 2x2
    stride-2 transposed convolution to ``base_filters * 2**l`` filters,
    concatenation with the encoder's level-``l`` features (skip connection)
    and two 3x3 relu convolutions; then the head. Every convolution and
    transposed convolution is Bayesian (``tfp_bcnn.layers.layer_class(2,
    estimator)`` / its ``"transpose"`` kind) or, with ``bayesian=False``, its
    Keras twin with the same name and, for the same ``seed``, the same
    initial kernels (layer ``i`` in build order is seeded ``seed + i``).
    The ops (Conv2D, MaxPool, TransposeConv, Concatenation, Softmax) are all
    builtin TFLite ops.

    Every Bayesian layer gets ``kl_weight = 1 / (N * H * W)``: the Keras loss
    averages over pixels, so this keeps it proportional to the per-image
    negative ELBO (see the module docstring).

    Args:
        input_shape: ``(H, W, C_in)``; ``H`` and ``W`` divisible by ``2**depth``.
        num_classes: ``C``: classes of the softmax head (>= 2), or regression
            targets per pixel of the Gaussian head (>= 1).
        depth: number of pooling levels, >= 1.
        base_filters: filters of the first level, >= 1.
        bayesian: False builds the deterministic twin.
        estimator: ``"flipout"``, ``"reparameterization"`` or
            ``"local_reparameterization"``.
        num_train_examples: number of training IMAGES ``N``; required when
            ``bayesian=True``.
        head: ``"softmax"``: a 1x1 convolution (Bayesian in the Bayesian
            model) with a per-pixel softmax, output ``(batch, H, W, C)``
            probabilities; ``"gaussian"``: a deterministic
            `tfp_bcnn.layers.GaussianHead` per pixel, output
            ``(batch, H, W, 2 C)`` = ``[mean, std]``.
        prior: prior of every Bayesian layer (None: ``priors.Normal(0, 1)``).
        posterior_std_init: initial posterior std of every weight, > 0.
        seed: int >= 0 seeding the initializers and the layers' draws.
        name: model name (``"_deterministic"`` appended for the twin).

    Returns:
        An uncompiled functional ``keras.Model`` (see `compile_bayesian`).

    Raises:
        ValueError: a bad shape, a size not divisible by ``2**depth``, an
            unknown head or estimator, or ``bayesian=True`` without
            ``num_train_examples`` (the value is quoted).

    Example:
    >>> from tfp_bcnn import models
    >>> models.unet((32, 32, 1), 11, num_train_examples=100).output_shape
    (None, 32, 32, 11)
    """
    shape = _check_image_shape(input_shape)
    depth = check.positive_int("depth", depth)
    base_filters = check.positive_int("base_filters", base_filters)
    check.choice("head", head, HEADS)
    num_classes = check.integer("num_classes", num_classes,
                                minimum=2 if head == "softmax" else 1)
    step = 2**depth
    if shape[0] % step or shape[1] % step:
        raise ValueError(f"`input_shape` height and width must be divisible by 2**depth = "
                         f"{step}. Received: input_shape={input_shape!r}")
    make = _factory(bayesian, estimator, num_train_examples, shape[0] * shape[1], prior,
                    posterior_std_init, seed)
    return _unet_graph(make, shape, depth, base_filters, head, num_classes,
                       name + _suffix(bayesian))


def _unet_graph(make, shape, depth, base_filters, head, num_classes, name):
    inputs = keras.Input(shape=shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = _conv_block(make, x, base_filters * 2**level, f"down{level + 1}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level + 1}")(x)
    x = _conv_block(make, x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = make.transpose(filters, 2, strides=2, padding="same", name=f"up{level + 1}")(x)
        x = keras.layers.Concatenate(name=f"skip{level + 1}")([x, skips[level]])
        x = _conv_block(make, x, filters, f"dec{level + 1}")
    return keras.Model(inputs, _head(make, x, head, num_classes, "head"), name=name)


def super_resolution(
    scale: int = 2,
    input_shape: Sequence[int] = (14, 14, 1),
    *,
    filters: int = 32,
    bayesian: bool = True,
    estimator: str = "flipout",
    num_train_examples: int | None = None,
    prior=None,
    posterior_std_init: float = DEFAULT_POSTERIOR_STD_INIT,
    seed: int | None = None,
    name: str = "super_resolution",
) -> keras.Model:
    """An ESPCN-like super-resolution net with a per-pixel Gaussian head.

    ``x`` (low resolution, ``(H, W, C)``) -> conv 5x5 ``filters`` relu ->
    conv 3x3 ``filters / 2`` relu -> transposed conv ``2 scale`` x ``2 scale``
    with stride ``scale`` (``filters / 2``, relu; the learnt upsampling of
    Shi et al. 2016, https://arxiv.org/abs/1609.05158, written as a
    transposed convolution, a builtin TFLite op) -> concatenated with the
    bilinear upsampling of ``x`` (so the net only has to learn the detail)
    -> conv 3x3 ``filters / 2`` relu -> `tfp_bcnn.layers.GaussianHead`
    (``C`` means and stds per high-resolution pixel). The convolutions are
    Bayesian (or, ``bayesian=False``, their Keras twins); the head is
    deterministic. Train with `compile_bayesian` (Gaussian NLL);
    ``tfp_bcnn.predict`` splits the per-pixel variance into aleatoric and
    epistemic. ``kl_weight = 1 / (N * H * W * scale**2)``, as for `unet`.

    Args:
        scale: upsampling factor, >= 2.
        input_shape: low-resolution ``(H, W, C)``.
        filters: width of the first convolution, >= 2 (keyword-only, as all
            that follow).
        bayesian: False builds the deterministic twin.
        estimator: Bayesian estimator of every convolution.
        num_train_examples: number of training images ``N``; required when
            ``bayesian=True``.
        prior: prior of every Bayesian layer (None: ``priors.Normal(0, 1)``).
        posterior_std_init: initial posterior std of every weight, > 0.
        seed: int >= 0 seeding the initializers and the draws.
        name: model name.

    Returns:
        An uncompiled functional ``keras.Model``: ``(batch, H, W, C)`` ->
        ``(batch, scale H, scale W, 2 C)`` = ``[mean, std]``.

    Raises:
        ValueError: a bad shape, scale or width, or ``bayesian=True`` without
            ``num_train_examples`` (the value is quoted).

    Example:
    >>> from tfp_bcnn import models
    >>> models.super_resolution(2, (14, 14, 1), num_train_examples=100).output_shape
    (None, 28, 28, 2)
    """
    scale = check.integer("scale", scale, minimum=2)
    shape = _check_image_shape(input_shape)
    filters = check.integer("filters", filters, minimum=2)
    pixels = shape[0] * shape[1] * scale**2
    make = _factory(bayesian, estimator, num_train_examples, pixels, prior,
                    posterior_std_init, seed)
    half = filters // 2
    inputs = keras.Input(shape=shape, name="image")
    x = make.conv(filters, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = make.conv(half, 3, padding="same", activation="relu", name="conv2")(x)
    x = make.transpose(half, 2 * scale, strides=scale, padding="same", activation="relu",
                       name="upsample")(x)
    coarse = keras.layers.UpSampling2D(scale, interpolation="bilinear", name="bilinear")(inputs)
    x = keras.layers.Concatenate(name="skip")([x, coarse])
    x = make.conv(half, 3, padding="same", activation="relu", name="conv3")(x)
    outputs = _head(make, x, "gaussian", shape[2], "head")
    return keras.Model(inputs, outputs, name=name + _suffix(bayesian))
