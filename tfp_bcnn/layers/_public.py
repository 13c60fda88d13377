"""The public Bayesian layers: a rank and an estimator on the one base.

``BayesianConv`` and ``BayesianDense`` only fix the constructor signature;
``BayesianDepthwiseConv`` and ``BayesianConvTranspose`` also swap the kernel
layout and the linear map (``ops.depthwise_conv`` / ``ops.conv_transpose``);
the classes below only fix ``rank`` and ``estimator``. Read ``BayesianLayer``
for the math: every estimator is written in terms of ``linear(x, kernel)``, so
it holds for any linear map, and the local-reparameterization variance
``linear(x^2, sigma^2)`` is exact for the depthwise and transposed maps too
(each output is still a sum of independent ``x_i w_i`` terms).
"""

from __future__ import annotations

import keras
from keras import ops

from .. import _compat
from .. import _validation as check
from ._base import BayesianLayer


class BayesianConv(BayesianLayer):
    """Bayesian N-D convolution; the rank and estimator come from the subclass.

    Args:
        filters: number of output channels, > 0.
        kernel_size: int or tuple of ``rank`` ints, > 0.
        strides: int or tuple of ``rank`` ints.
        padding: ``"valid"`` or ``"same"``.
        activation: a Keras activation (name or callable) or None.
        prior: a ``tfp_bcnn.priors.Prior`` (default ``Normal(0, 1)``), a prior
            name, or (TensorFlow backend) a ``tfp.distributions`` distribution.
        posterior_std_init: initial posterior std ``sigma`` of every weight, > 0.
        kl_weight: initial scale of the KL added to the loss, >= 0 (use
            ``1 / num_train_examples``).
        seed: int seed of the layer's random draws (keyword-only).
        data_format, dilation_rate: as in ``keras.layers.Conv2D``.
        use_bias: add a bias (deterministic unless ``bayesian_bias``).
        bayesian_bias: give the bias a mean-field normal posterior too.
        kernel_initializer: initializer of the posterior mean ``kernel_loc``.
        centered_prior: centre the prior on the non-trainable
            ``kernel_prior_loc`` (zeros; ``to_bayesian`` sets it to trained weights).
        kernel_regularizer: a Keras regularizer (e.g.
            ``tfp_bcnn.regularizers.GroupL1(1e-3)``) applied to the masked
            posterior means ``kernel_loc * kernel_mask``; its value is added to
            the layer's losses at each call, next to the KL.

    Input shape: ``(batch, *spatial, channels)`` (channels_last).
    Output shape: ``(batch, *new_spatial, filters)``.

    Raises:
        ValueError: filters / kernel_size / strides <= 0, posterior_std_init
            <= 0, kl_weight < 0, an unknown padding or prior, an input of the
            wrong rank.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation=None,
        prior=None,
        posterior_std_init=1e-3,
        kl_weight=1.0,
        *,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            rank=self._rank,
            estimator=self._estimator,
            units=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            activation=activation,
            prior=prior,
            posterior_std_init=posterior_std_init,
            kl_weight=kl_weight,
            seed=seed,
            **kwargs,
        )

    @property
    def filters(self):
        return self.units


class BayesianDense(BayesianLayer):
    """Bayesian densely connected layer; the estimator comes from the subclass.

    Args: ``units`` (> 0) and the same keyword arguments as ``BayesianConv``
    (no kernel_size, strides, padding, data_format, dilation_rate).

    Input shape: ``(batch, ..., features)``. Output shape: ``(batch, ..., units)``.
    """

    _rank = 0

    def __init__(
        self,
        units,
        activation=None,
        prior=None,
        posterior_std_init=1e-3,
        kl_weight=1.0,
        *,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            rank=0,
            estimator=self._estimator,
            units=units,
            activation=activation,
            prior=prior,
            posterior_std_init=posterior_std_init,
            kl_weight=kl_weight,
            seed=seed,
            **kwargs,
        )


class BayesianDepthwiseConv(BayesianLayer):
    """Bayesian depthwise convolution (``keras.layers.DepthwiseConv{1,2}D``'s twin).

    Every input channel is convolved with its own ``depth_multiplier``
    filters: the kernel (``kernel_loc``, ``kernel_rho``, ``kernel_mask``) has
    Keras' depthwise shape ``kernel_size + (in_channels, depth_multiplier)``
    and the output has ``in_channels * depth_multiplier`` channels (output
    channel ``c * depth_multiplier + m`` is input channel ``c`` through
    filter ``m``). The linear map is ``ops.depthwise_conv``; local
    reparameterization's variance is ``depthwise_conv(x^2, sigma^2)``;
    Flipout's input signs run over the ``in_channels`` and its output signs
    over the ``in_channels * depth_multiplier`` outputs.

    Args:
        kernel_size, strides, padding: as in ``keras.layers.DepthwiseConv2D``.
        depth_multiplier: filters per input channel, > 0.
        activation, prior, posterior_std_init, kl_weight, seed, and the keyword
            arguments: as in ``BayesianConv``.

    Input shape: ``(batch, *spatial, channels)`` (channels_last).
    Output shape: ``(batch, *new_spatial, channels * depth_multiplier)``.

    Raises:
        ValueError: depth_multiplier / kernel_size / strides <= 0 and the
            errors of ``BayesianConv``.
    """

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        activation=None,
        prior=None,
        posterior_std_init=1e-3,
        kl_weight=1.0,
        *,
        seed=None,
        **kwargs,
    ):
        depth_multiplier = check.positive_int("depth_multiplier", depth_multiplier)
        super().__init__(
            rank=self._rank,
            estimator=self._estimator,
            units=depth_multiplier,  # becomes in_channels * depth_multiplier in build()
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            activation=activation,
            prior=prior,
            posterior_std_init=posterior_std_init,
            kl_weight=kl_weight,
            seed=seed,
            **kwargs,
        )
        self.depth_multiplier = depth_multiplier

    def build(self, input_shape):
        self._check_input_rank(input_shape)
        in_channels = input_shape[self._channel_axis()]
        if in_channels is not None:
            self.units = int(in_channels) * self.depth_multiplier
        super().build(input_shape)

    def _kernel_shape(self, in_channels):
        return self.kernel_size + (in_channels, self.depth_multiplier)

    def linear(self, inputs, kernel, data_format=None):
        """``ops.depthwise_conv(x, kernel)``, without bias or activation (see
        ``BayesianLayer.linear`` for ``data_format``)."""
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self._data_format(data_format),
            dilation_rate=self.dilation_rate,
        )

    def compute_output_shape(self, input_shape):
        shape = list(super().compute_output_shape(input_shape))
        axis = self._channel_axis()
        channels = input_shape[axis]
        shape[axis] = None if channels is None else channels * self.depth_multiplier
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.pop("filters", None)
        config["depth_multiplier"] = self.depth_multiplier
        return config


def _output_padding(value, rank):
    """None, or a tuple of ``rank`` ints >= 0 (Keras' ``output_padding``)."""
    if value is None:
        return None
    received = value
    if check.is_int(value):
        value = (int(value),) * rank
    try:
        value = tuple(value)
    except TypeError:
        value = ()
    if len(value) != rank or not all(check.is_int(v) and v >= 0 for v in value):
        raise ValueError(
            f"`output_padding` must be None, an int >= 0 or a tuple of {rank} ints >= 0. "
            f"Received: output_padding={received!r}"
        )
    return tuple(int(v) for v in value)


class BayesianConvTranspose(BayesianConv):
    """Bayesian transposed convolution (``keras.layers.Conv{1,2,3}DTranspose``'s twin).

    The kernel has Keras' transposed layout ``kernel_size + (filters,
    in_channels)``; the linear map is ``ops.conv_transpose`` with
    ``strides``, ``padding``, ``output_padding`` and ``dilation_rate``;
    local reparameterization's variance is ``conv_transpose(x^2, sigma^2)``;
    Flipout's input signs run over ``in_channels`` (the kernel's last axis)
    and its output signs over ``filters``.

    Args:
        filters, kernel_size, strides, padding, activation, prior,
            posterior_std_init, kl_weight, seed: as in ``BayesianConv``.
        output_padding: None, or int / tuple of ``rank`` ints >= 0 added to
            the output's spatial size (keyword-only; as in Keras).

    Output shape: Keras' ``Conv2DTranspose`` formula, e.g. ``n * stride`` for
    ``padding="same"`` and no output padding.

    Raises:
        ValueError: an invalid ``output_padding`` and the errors of ``BayesianConv``.
    """

    _kernel_in_axis = -1

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation=None,
        prior=None,
        posterior_std_init=1e-3,
        kl_weight=1.0,
        *,
        output_padding=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, strides, padding, activation, prior,
                         posterior_std_init, kl_weight, seed=seed, **kwargs)
        self.output_padding = _output_padding(output_padding, self._rank)

    def _kernel_shape(self, in_channels):
        return self.kernel_size + (self.units, in_channels)

    def linear(self, inputs, kernel, data_format=None):
        """``ops.conv_transpose(x, kernel)``, without bias or activation (see
        ``BayesianLayer.linear`` for ``data_format``)."""
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            output_padding=self.output_padding,
            data_format=self._data_format(data_format),
            dilation_rate=self.dilation_rate,
        )

    def compute_output_shape(self, input_shape):
        self._check_input_rank(input_shape)
        return tuple(_compat.conv_transpose_output_shape(
            input_shape, self.kernel_size, self.units, strides=self.strides,
            padding=self.padding, output_padding=self.output_padding,
            data_format=self.data_format, dilation_rate=self.dilation_rate,
        ))

    def get_config(self):
        config = super().get_config()
        config["output_padding"] = self.output_padding
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="tfp_bcnn")(cls)


# One line each: rank and estimator are the only things that differ.
@_register
class Conv1DReparameterization(BayesianConv):
    """1-D Bayesian convolution, one kernel draw per call. See ``BayesianConv``."""
    _rank, _estimator = 1, "reparameterization"


@_register
class Conv2DReparameterization(BayesianConv):
    """2-D Bayesian convolution, one kernel draw per call. See ``BayesianConv``."""
    _rank, _estimator = 2, "reparameterization"


@_register
class Conv3DReparameterization(BayesianConv):
    """3-D Bayesian convolution, one kernel draw per call. See ``BayesianConv``."""
    _rank, _estimator = 3, "reparameterization"


@_register
class Conv1DFlipout(BayesianConv):
    """1-D Bayesian convolution with Flipout. See ``BayesianConv``."""
    _rank, _estimator = 1, "flipout"


@_register
class Conv2DFlipout(BayesianConv):
    """2-D Bayesian convolution with Flipout. See ``BayesianConv``.

    Example:
    >>> import keras, tfp_bcnn
    >>> layer = tfp_bcnn.layers.Conv2DFlipout(4, 3, kl_weight=1 / 4000)
    >>> layer(keras.ops.ones((2, 8, 8, 1))).shape
    (2, 6, 6, 4)
    """
    _rank, _estimator = 2, "flipout"


@_register
class Conv3DFlipout(BayesianConv):
    """3-D Bayesian convolution with Flipout. See ``BayesianConv``."""
    _rank, _estimator = 3, "flipout"


@_register
class Conv1DLocalReparameterization(BayesianConv):
    """1-D Bayesian convolution, local reparameterization. See ``BayesianConv``."""
    _rank, _estimator = 1, "local_reparameterization"


@_register
class Conv2DLocalReparameterization(BayesianConv):
    """2-D Bayesian convolution, local reparameterization. See ``BayesianConv``."""
    _rank, _estimator = 2, "local_reparameterization"


@_register
class Conv3DLocalReparameterization(BayesianConv):
    """3-D Bayesian convolution, local reparameterization. See ``BayesianConv``."""
    _rank, _estimator = 3, "local_reparameterization"


@_register
class DenseReparameterization(BayesianDense):
    """Bayesian dense layer, one kernel draw per call. See ``BayesianDense``."""
    _estimator = "reparameterization"


@_register
class DenseFlipout(BayesianDense):
    """Bayesian dense layer with Flipout. See ``BayesianDense``."""
    _estimator = "flipout"


@_register
class DenseLocalReparameterization(BayesianDense):
    """Bayesian dense layer, local reparameterization. See ``BayesianDense``."""
    _estimator = "local_reparameterization"


@_register
class DepthwiseConv1DReparameterization(BayesianDepthwiseConv):
    """1-D Bayesian depthwise convolution, one kernel draw per call (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 1, "reparameterization"


@_register
class DepthwiseConv1DFlipout(BayesianDepthwiseConv):
    """1-D Bayesian depthwise convolution, with Flipout (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 1, "flipout"


@_register
class DepthwiseConv1DLocalReparameterization(BayesianDepthwiseConv):
    """1-D Bayesian depthwise convolution, local reparameterization (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 1, "local_reparameterization"


@_register
class DepthwiseConv2DReparameterization(BayesianDepthwiseConv):
    """2-D Bayesian depthwise convolution, one kernel draw per call (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 2, "reparameterization"


@_register
class DepthwiseConv2DFlipout(BayesianDepthwiseConv):
    """2-D Bayesian depthwise convolution, with Flipout (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 2, "flipout"


@_register
class DepthwiseConv2DLocalReparameterization(BayesianDepthwiseConv):
    """2-D Bayesian depthwise convolution, local reparameterization (``BayesianDepthwiseConv``)."""
    _rank, _estimator = 2, "local_reparameterization"


@_register
class Conv1DTransposeReparameterization(BayesianConvTranspose):
    """1-D Bayesian transposed convolution, one kernel draw per call (``BayesianConvTranspose``)."""
    _rank, _estimator = 1, "reparameterization"


@_register
class Conv1DTransposeFlipout(BayesianConvTranspose):
    """1-D Bayesian transposed convolution, with Flipout (``BayesianConvTranspose``)."""
    _rank, _estimator = 1, "flipout"


@_register
class Conv1DTransposeLocalReparameterization(BayesianConvTranspose):
    """1-D Bayesian transposed convolution, local reparameterization (``BayesianConvTranspose``)."""
    _rank, _estimator = 1, "local_reparameterization"


@_register
class Conv2DTransposeReparameterization(BayesianConvTranspose):
    """2-D Bayesian transposed convolution, one kernel draw per call (``BayesianConvTranspose``)."""
    _rank, _estimator = 2, "reparameterization"


@_register
class Conv2DTransposeFlipout(BayesianConvTranspose):
    """2-D Bayesian transposed convolution, with Flipout (``BayesianConvTranspose``)."""
    _rank, _estimator = 2, "flipout"


@_register
class Conv2DTransposeLocalReparameterization(BayesianConvTranspose):
    """2-D Bayesian transposed convolution, local reparameterization (``BayesianConvTranspose``)."""
    _rank, _estimator = 2, "local_reparameterization"


@_register
class Conv3DTransposeReparameterization(BayesianConvTranspose):
    """3-D Bayesian transposed convolution, one kernel draw per call (``BayesianConvTranspose``)."""
    _rank, _estimator = 3, "reparameterization"


@_register
class Conv3DTransposeFlipout(BayesianConvTranspose):
    """3-D Bayesian transposed convolution, with Flipout (``BayesianConvTranspose``)."""
    _rank, _estimator = 3, "flipout"


@_register
class Conv3DTransposeLocalReparameterization(BayesianConvTranspose):
    """3-D Bayesian transposed convolution, local reparameterization (``BayesianConvTranspose``)."""
    _rank, _estimator = 3, "local_reparameterization"


#: (rank, estimator) -> class; rank 0 is Dense.
LAYER_CLASSES = {
    (cls._rank, cls._estimator): cls
    for cls in (
        Conv1DReparameterization, Conv2DReparameterization, Conv3DReparameterization,
        Conv1DFlipout, Conv2DFlipout, Conv3DFlipout,
        Conv1DLocalReparameterization, Conv2DLocalReparameterization,
        Conv3DLocalReparameterization,
        DenseReparameterization, DenseFlipout, DenseLocalReparameterization,
    )
}


#: (rank, estimator) -> Bayesian depthwise convolution class (ranks 1, 2).
DEPTHWISE_CLASSES = {
    (cls._rank, cls._estimator): cls
    for cls in (
        DepthwiseConv1DReparameterization, DepthwiseConv1DFlipout,
        DepthwiseConv1DLocalReparameterization,
        DepthwiseConv2DReparameterization, DepthwiseConv2DFlipout,
        DepthwiseConv2DLocalReparameterization,
    )
}

#: (rank, estimator) -> Bayesian transposed convolution class (ranks 1-3).
TRANSPOSE_CLASSES = {
    (cls._rank, cls._estimator): cls
    for cls in (
        Conv1DTransposeReparameterization, Conv1DTransposeFlipout,
        Conv1DTransposeLocalReparameterization,
        Conv2DTransposeReparameterization, Conv2DTransposeFlipout,
        Conv2DTransposeLocalReparameterization,
        Conv3DTransposeReparameterization, Conv3DTransposeFlipout,
        Conv3DTransposeLocalReparameterization,
    )
}

_KINDS = {"conv": LAYER_CLASSES, "depthwise": DEPTHWISE_CLASSES, "transpose": TRANSPOSE_CLASSES}
_RANKS = {"conv": "0 (Dense), 1, 2 or 3", "depthwise": "1 or 2", "transpose": "1, 2 or 3"}


def layer_class(rank: int, estimator: str, kind: str = "conv"):
    """The public class for a rank, an estimator and a kind of linear map.

    Args:
        rank: 0 = Dense (kind "conv" only), 1-3 = the spatial rank.
        estimator: one of ``ESTIMATORS``.
        kind: ``"conv"`` (Dense / ConvND), ``"depthwise"`` (DepthwiseConvND)
            or ``"transpose"`` (ConvNDTranspose).

    Raises:
        ValueError: an unknown estimator or kind, or a rank the kind lacks.
    """
    from ._base import ESTIMATORS

    check.choice("estimator", estimator, ESTIMATORS)
    check.choice("kind", kind, tuple(_KINDS))
    classes = _KINDS[kind]
    if (rank, estimator) not in classes:
        raise ValueError(
            f"`rank` must be {_RANKS[kind]} for kind={kind!r}. Received: rank={rank!r}"
        )
    return classes[(rank, estimator)]
