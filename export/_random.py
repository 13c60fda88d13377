"""Unseeded random draws with TFLite builtin ops (a leaf module: imports only TensorFlow).

Shared by the Monte Carlo forms (`tfp_bcnn.export._inference`) and the
moments form (`tfp_bcnn.export._moments`), which used to import each other.
No seed is traced into the graph (``seed = seed2 = 0``): TensorFlow and
LiteRT seed each kernel from the OS, so two fresh interpreters draw
different samples, and the op's state advances, so every invocation draws
fresh ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["MIN_POSITIONS", "sign_flip_normal", "standard_normal", "uniform"]


def standard_normal(shape):
    """``N(0, 1)`` float32 draw of ``shape`` (TFLite ``RANDOM_STANDARD_NORMAL``, no seed)."""
    return tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)


def uniform(shape):
    """``U[0, 1)`` float32 draw of ``shape`` (TFLite ``RANDOM_UNIFORM``, no seed)."""
    return tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)


def _signs(shape):
    """Independent random signs (+-1, each with probability 1/2) from one uniform draw."""
    return 1.0 - 2.0 * tf.floor(2.0 * uniform(shape))


#: Below this many spatial positions the noise is drawn directly: sign flips
#: per position would give too few distinct sample patterns (and it is cheap).
MIN_POSITIONS = 64


def sign_flip_normal(like, num_samples: int):
    """``N(0, 1)`` noise shaped like ``like``, ``(S * N, *spatial, C)``, from 1/S of the draws.

    The local-reparameterization noise of the Monte Carlo forms, one value
    per pre-activation of ``S`` tiled samples (sample-major). Drawing all
    ``S * N * H * W * C`` normals made ``RANDOM_STANDARD_NORMAL`` most of
    the MC file's time (85 % of MobileNetV2 MC-32 at 32x32). Instead one
    normal ``e`` per pre-activation of each example is shared by the ``S``
    samples, each sample flipping its sign at random per spatial position::

        eps[s, n, p, c] = e[n, p, c] * b[s, n, p]
        e ~ N(0, 1), b = +-1 with probability 1/2, all independent

    Exactness: given the signs, ``eps[s]`` is ``e`` with entries negated,
    and a vector of independent ``N(0, 1)`` is unchanged in law by that, so
    every sample ``s`` is exactly the independent-noise draw, and any two
    entries are uncorrelated (across samples too: the sign products have
    mean 0). What is shared: ``|eps[s, n, p, c]|`` is the same in every
    sample, so the samples are dependent beyond second order; Monte Carlo
    averages stay unbiased and only their spread over calls can differ
    (measured against Keras in ``tests/test_export.py``). Cost: a normal
    draw of ``1/S`` the size, a uniform draw of ``1/C`` the size and one
    broadcast multiply. With fewer than `MIN_POSITIONS` positions (the
    late, wide layers of a MobileNet: 3x3 or 6x6 with hundreds of
    channels, where drawing every normal cost as much as all the large
    layers together) each sample also flips signs per channel,
    ``eps[s, n, p, c] = e[n, p, c] a[s, n, c] b[s, n, p]`` (same argument).
    A Dense output, fewer than `MIN_POSITIONS` positions and channels
    together (a pattern of few signs would repeat across samples) or
    ``S = 1`` draws all the normals directly (they are few).

    Args:
        like: ``(S * N, ..., C)`` float32 tensor (channels last); only its
            shape is used.
        num_samples: ``S``, the tiling factor of the batch.

    Returns:
        float32 tensor of ``like``'s shape.
    """
    inner = [int(d) for d in like.shape[1:]]  # static: only the batch varies
    positions = int(np.prod(inner[:-1])) if len(inner) > 1 else 0
    if num_samples == 1 or positions + inner[-1] < MIN_POSITIONS or positions == 0:
        return standard_normal(tf.shape(like))
    rows = tf.shape(like)[0]  # S * N
    signs = _signs(tf.stack([rows, *inner[:-1], 1]))
    if positions < MIN_POSITIONS:  # few positions, many channels: a sign per channel too
        signs = signs * _signs(tf.stack([rows, *[1] * (len(inner) - 1), inner[-1]]))
        signs = tf.reshape(signs, [num_samples, -1, *inner])
    else:
        signs = tf.reshape(signs, [num_samples, -1, *inner[:-1], 1])
    base = standard_normal(tf.stack([rows // num_samples, *inner]))  # (N, *spatial, C)
    return tf.reshape(signs * base, [-1, *inner])
