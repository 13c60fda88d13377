"""The twelve public Bayesian layers: a rank and an estimator on the one base.

``BayesianConv`` and ``BayesianDense`` only fix the constructor signature; the
classes below only fix ``rank`` and ``estimator``. Read ``BayesianLayer`` for
the math.
"""

from __future__ import annotations

import keras

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


def layer_class(rank: int, estimator: str):
    """The public class for a rank (0 = Dense, 1-3 = ConvND) and an estimator."""
    from ._base import ESTIMATORS

    check.choice("estimator", estimator, ESTIMATORS)
    if (rank, estimator) not in LAYER_CLASSES:
        raise ValueError(f"`rank` must be 0 (Dense), 1, 2 or 3. Received: rank={rank!r}")
    return LAYER_CLASSES[(rank, estimator)]
