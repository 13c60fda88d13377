"""Export forms of rank-1 mixture layers (`tfp_bcnn.layers.Rank1Layer`).

Monte Carlo (``sampling="lrt"`` and ``"weights"``): `Rank1Inference` replaces
each rank-1 layer with the same computation in builtin TFLite ops, every row
of the tiled batch drawing its own factors::

    k_i = floor(i * K / B)                      (RANGE, MUL, FLOOR_DIV, GATHER)
    r_i = mu_r[k_i] + sigma_r[k_i] * eps,  s_i = mu_s[k_i] + sigma_s[k_i] * eps'
    y_i = ((x_i o r_i) (*) (W o mask)) o s_i + b[k_i]

``eps`` standard normal (``RandomStandardNormal``, no seed) or, for Cauchy
factors, the ratio of two such draws. This is the exact posterior predictive
of the mixture (the factors are drawn per example in training too), so
``"lrt"`` and ``"weights"`` give the same graph for these layers: there is no
kernel-sized draw to avoid and no pre-activation approximation to make. With
the batch tiled S times (row ``s * N + n``) and K dividing S, sample ``s``
comes from component ``floor(s * K / S)``, as in ``tfp_bcnn.predict``. The
one-sample ``sample`` signature maps its N rows the same way (row ``n`` to
component ``floor(n * K / N)``; a single image always to component 0).

Moments: `MixtureMomentsForm` tiles the batch K times (row ``k * N + n`` is
component ``k``), runs one moment pass (the layers' ``propagate_moments``
reading their own variables), and draws sample ``s`` from the logit Gaussian
of component ``floor(s * K / S)``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfp_bcnn._compat import all_layers
from tfp_bcnn._mixture import sample_components
from tfp_bcnn.layers import Rank1Layer

from ._random import standard_normal
from ._moments import MomentsForm

__all__ = ["Rank1Inference", "MixtureMomentsForm"]


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)


class Rank1Inference(keras.layers.Layer):
    """Export-only stand-in for a `Rank1Layer` (module docstring), float32.

    Weights (non-trainable, frozen into constants by the converter):
    ``kernel`` ``W o mask`` (pruned entries exactly 0, stored sparse by
    TFLite when pruned enough), ``in_factor_loc`` / ``in_factor_scale`` ``(K,
    in)``, ``out_factor_loc`` / ``out_factor_scale`` ``(K, units)``, ``bias``
    ``(K, units)``. Input and output shapes are those of the source layer.
    """

    def __init__(self, source: Rank1Layer, **kwargs):
        super().__init__(name=f"{source.name}_inference", dtype="float32", **kwargs)
        self.num_components = source.num_components
        self._source_output_shape = source.compute_output_shape
        self._source_sample = source.sample
        self.kernel = self._constant("kernel", _numpy(source.masked_kernel()))
        self.in_factor_loc = self._constant("in_factor_loc", _numpy(source.in_factor_loc))
        self.in_factor_scale = self._constant("in_factor_scale", _numpy(source.in_factor_sigma))
        self.out_factor_loc = self._constant("out_factor_loc", _numpy(source.out_factor_loc))
        self.out_factor_scale = self._constant("out_factor_scale",
                                               _numpy(source.out_factor_sigma))
        self.bias = None if source.bias is None else self._constant("bias", _numpy(source.bias))
        self.built = True

    def _constant(self, name, value):
        return self.add_weight(name=name, shape=value.shape, trainable=False, dtype="float32",
                               initializer=keras.initializers.Constant(value))

    def compute_output_shape(self, input_shape):
        return self._source_output_shape(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        # TFLite's converter drops a TILE that feeds a broadcasting MUL whose
        # other operand has a dynamic batch (then multiplies the untiled batch
        # by the tiled factors); a reshape in between keeps the tile.
        x = tf.reshape(x, [-1, *x.shape[1:]])
        factors = (self.kernel, self.in_factor_loc, self.in_factor_scale,
                   self.out_factor_loc, self.out_factor_scale, self.bias)
        return self._source_sample(x, factors, normal=_normal)


def _normal(shape, dtype):
    """Unseeded ``N(0, 1)`` (`tfp_bcnn.export._random`), float32 like the whole export."""
    del dtype
    return standard_normal(shape)


class MixtureMomentsForm(MomentsForm):
    """`MomentsForm` of a model with rank-1 mixture layers of K components.

    Args:
        num_components: K; the other arguments as `MomentsForm`.

    Raises:
        ValueError: the errors of `MomentsForm`, and Cauchy factors (no variance).
    """

    def __init__(self, model, input_shape, from_logits, max_pool, constants, num_components):
        self.num_components = int(num_components)
        super().__init__(model, input_shape, from_logits, max_pool, constants)

    @property
    def trackables(self):
        """`MomentsForm`'s, plus the rank-1 layers, whose variables their moment rule reads."""
        rank1 = [layer for layer in all_layers(self.model) if isinstance(layer, Rank1Layer)]
        return [*super().trackables, *rank1]

    def probabilities(self, images, num_samples: int):
        """``(num_samples, N, C)``: sample ``s`` from component ``floor(s K / S)``."""
        k = self.num_components
        x = tf.cast(images, tf.float32)
        tiled = tf.tile(x, [k] + [1] * (len(x.shape) - 1))
        tiled = tf.reshape(tiled, [-1, *x.shape[1:]])  # keeps the TILE (`Rank1Inference`)
        out = self.moments(tiled)
        mean = tf.reshape(tf.cast(out.mean, tf.float32), [k, -1, int(out.mean.shape[-1])])
        std = tf.reshape(tf.sqrt(tf.cast(out.variance, tf.float32)), tf.shape(mean))
        comp = tf.constant(sample_components(num_samples, k), tf.int32)
        mean, std = tf.gather(mean, comp), tf.gather(std, comp)
        eps = standard_normal(tf.shape(mean))
        return tf.nn.softmax(mean + std * eps, axis=-1)
