"""The ``sampling="moments"`` inference form: one moment pass, sampled logits.

The graph propagates the mean and variance of every activation through the
model in one pass (`tfp_bcnn.moments.propagate`, the same code as
``tfp_bcnn.predict(method="moments")``), reading each Bayesian layer's masked
posterior from `_PosteriorConstants` (``mu * mask`` and ``(sigma * mask)^2``,
the constant kernels of ``"lrt"``: stored sparse when pruned, int8 with
dynamic-range quantization), and then draws the ``S`` Monte Carlo samples of
the logits only::

    z_s = mean + sqrt(var) * eps_s,   eps_s ~ N(0, I) (RandomStandardNormal, no seed)
    p_s = softmax(z_s)

so the tiled batch of the Monte Carlo forms is not needed: the cost is one
pass of about three times the deterministic network's arithmetic, whatever
``S``. All ops are TFLite builtins (the normal cdf is ``LOGISTIC``, see
`tfp_bcnn.moments`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfp_bcnn import moments
from tfp_bcnn._compat import all_layers
from tfp_bcnn.kl import bayesian_layers
from tfp_bcnn.layers import BayesianLayer

from ._random import standard_normal

__all__ = ["MomentsForm"]


class MomentsForm:
    """Sampled class probabilities of a classifier from its propagated moments.

    Args:
        model: built Sequential or functional classifier.
        input_shape: ``(None, *example_shape)``.
        from_logits: the model outputs logits (no final softmax).
        max_pool: ``"separate"`` or ``"clark"`` (`tfp_bcnn.moments`).
        constants: ``BayesianLayer -> _PosteriorConstants`` factory (the
            ``"lrt"`` constants of `tfp_bcnn.export._inference`).

    Raises:
        ValueError: a layer without a moment rule (named), or an output that
            is neither a softmax nor logits with ``from_logits=True``.
    """

    def __init__(self, model, input_shape, from_logits, max_pool, constants):
        self.model = model
        self.max_pool = max_pool
        self._constants = {id(layer): constants(layer) for layer in bayesian_layers(model)}
        probe = self.moments(np.zeros((1, *input_shape[1:]), np.float32))
        self.head = probe.head  # a GaussianHead output: sample its pre-activations
        if probe.output == "linear" and not from_logits:
            raise ValueError(
                "sampling='moments' needs a classifier whose output is a softmax (or logits, "
                f"with from_logits=True); the last layer of {model.name!r} has no softmax. "
                f"Received: from_logits={from_logits!r}"
            )

    @property
    def trackables(self):
        """The constants and the other layers whose variables the pass reads.

        Only the Keras layers whose weights a moment rule reads (Dense, Conv,
        BatchNormalization): not the model itself, whose seed generators
        (never used here) would be saved too, under names a SavedModel
        refuses.
        """
        plain = [
            layer
            for layer in all_layers(self.model)
            if isinstance(layer, moments.PARAMETRIC_LAYERS)
        ]
        return [*self._constants.values(), *plain]

    def _kernel_moments(self, layer):
        if not isinstance(layer, BayesianLayer):
            return moments.default_kernel_moments(layer)
        return self._constants[id(layer)].moments()

    def moments(self, x) -> moments.OutputMoments:
        return moments.propagate(
            self.model, x, max_pool=self.max_pool, kernel_moments=self._kernel_moments
        )

    def probabilities(self, images, num_samples: int):
        """``(num_samples, N, [*spatial,] C)`` sampled class probabilities of ``images``.

        A ``GaussianHead`` regressor: ``[mean, softplus(.) + min_std]`` of the
        sampled ``2K`` pre-activations, ``(num_samples, N, [*spatial,] 2K)``.
        """
        return self.draw(self.moments(tf.cast(images, tf.float32)), num_samples)

    def draw(self, out: moments.OutputMoments, num_samples: int):
        """`probabilities` from the output moments ``out`` of one moment pass."""
        mean = tf.cast(out.mean, tf.float32)
        std = tf.sqrt(tf.cast(out.variance, tf.float32))
        eps = standard_normal(tf.concat([[num_samples], tf.shape(mean)], 0))
        z = mean[None] + std[None] * eps
        if self.head is not None:
            k = self.head.units
            return tf.concat([z[..., :k], tf.nn.softplus(z[..., k:]) + self.head.min_std], -1)
        return tf.nn.softmax(z, axis=-1)
