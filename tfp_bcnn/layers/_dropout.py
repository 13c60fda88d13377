"""Monte Carlo dropout: a dropout layer that stays on at inference."""

from __future__ import annotations

import numbers

import keras

from .. import _validation as check
from ._base import _ReplicaSeedGenerator

__all__ = ["MCDropout"]


def _check_noise_shape(noise_shape):
    if noise_shape is None:
        return None
    try:
        shape = tuple(noise_shape)
    except TypeError:
        shape = None
    if isinstance(noise_shape, str) or shape is None or not all(
        d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0)
        for d in shape
    ):
        raise ValueError(
            "`noise_shape` must be a tuple of positive ints or None, one entry per "
            f"input axis (batch first). Received: noise_shape={noise_shape!r}"
        )
    return tuple(None if d is None else int(d) for d in shape)


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class MCDropout(keras.layers.Layer):
    """Dropout that is applied at every call, in training and at inference.

    Monte Carlo dropout (Gal & Ghahramani 2016, https://arxiv.org/abs/1506.02142)
    reads a network trained with dropout as a variational approximation: each
    weight row of the next layer is kept with probability ``1 - rate``, and
    averaging ``S`` stochastic forward passes approximates the predictive
    distribution. Every call, whatever ``training`` is, computes::

        y = x * m / (1 - rate),   m ~ Bernoulli(1 - rate)   (elementwise)

    so ``E[y] = x``. ``keras.layers.Dropout`` is the identity at inference;
    this layer is not: ``model.predict``, ``tfp_bcnn.predict`` (which then
    gives a nonzero epistemic part) and the exported SavedModel / TFLite files
    (``tfp_bcnn.export`` replaces it by the same mask drawn with builtin ops)
    all sample. ``rate=0`` makes it the identity (a deterministic model).

    Masks are drawn independently for every example (unless ``noise_shape``
    fixes the batch axis to 1), so ``tfp_bcnn.predict`` draws its samples by
    tiling the batch, as for Flipout layers; under ``tf.distribute`` every
    replica draws its own masks.

    Args:
        rate: probability of dropping a unit, in ``[0, 1)``.
        noise_shape: shape of the mask, broadcast against the input, one entry
            per input axis (batch first); ``None`` entries take the input's
            size. E.g. ``(None, 1, 1, None)`` drops whole feature maps of an
            NHWC tensor. ``None`` (default): the input's shape.
        seed: int seed of the mask stream (None: random).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        Any. Output shape: the input's.

    Raises:
        ValueError: ``rate`` outside ``[0, 1)`` or a malformed ``noise_shape``
            (the value is quoted).

    Example:
    >>> import numpy as np
    >>> layer = MCDropout(0.5, seed=0)
    >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 4)), training=False))
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    """

    def __init__(self, rate: float, noise_shape=None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check.fraction("rate", rate)
        self.noise_shape = _check_noise_shape(noise_shape)
        self.seed = seed
        self.seed_generator = _ReplicaSeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        # `training` is ignored on purpose: the mask is drawn at every call.
        if self.rate == 0.0:
            return inputs
        return keras.random.dropout(
            inputs, self.rate, noise_shape=self.mask_shape(inputs), seed=self.seed_generator
        )

    def mask_shape(self, inputs):
        """Shape of the mask drawn for ``inputs``: ``noise_shape`` with its None entries
        taken from ``inputs`` (dynamic ones as scalar tensors); None when ``noise_shape``
        is None (the input's own shape). Also used by the exported form."""
        if self.noise_shape is None:
            return None
        shape = keras.ops.shape(inputs)
        return tuple(shape[i] if d is None else d for i, d in enumerate(self.noise_shape))

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def shares_mask_across_batch(self) -> bool:
        """True when ``noise_shape`` fixes the batch axis to 1 (one mask per call)."""
        return self.noise_shape is not None and self.noise_shape[0] == 1

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed})
        return config
