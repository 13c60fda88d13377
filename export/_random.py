"""Unseeded random draws with TFLite builtin ops (a leaf module: imports only TensorFlow).

Shared by the Monte Carlo forms (`tfp_bcnn.export._inference`) and the
moments form (`tfp_bcnn.export._moments`), which used to import each other.
No seed is traced into the graph (``seed = seed2 = 0``): TensorFlow and
LiteRT seed each kernel from the OS, so two fresh interpreters draw
different samples, and the op's state advances, so every invocation draws
fresh ones.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["standard_normal", "uniform"]


def standard_normal(shape):
    """``N(0, 1)`` float32 draw of ``shape`` (TFLite ``RANDOM_STANDARD_NORMAL``, no seed)."""
    return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)


def uniform(shape):
    """``U[0, 1)`` float32 draw of ``shape`` (TFLite ``RANDOM_UNIFORM``, no seed)."""
    return tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)
