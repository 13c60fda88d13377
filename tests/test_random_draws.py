"""The sign-flip noise of the Monte Carlo export (`export/_random.py`).

Tolerances: from ``n`` entries, a sample mean of N(0, 1) values has standard
error ``1/sqrt(n)``, a sample variance ``sqrt(2/n)``, the mean of a product of
two uncorrelated unit entries ``sqrt(E[e^4]/n) = sqrt(3/n)``; checks allow 5
standard errors (a correct draw fails with probability < 1e-6 per check).
"""

import numpy as np
import tensorflow as tf

from tfp_bcnn.export import _random

S, N, H, W, C = 8, 2, 16, 16, 4


def _draw(shape=(S * N, H, W, C)):
    return _random.sign_flip_normal(tf.zeros(shape), S).numpy().reshape(S, N, -1)


def test_every_sample_is_standard_normal_and_samples_are_uncorrelated():
    eps = _draw()
    n = N * H * W * C
    for s in range(S):
        assert abs(eps[s].mean()) < 5 / np.sqrt(n)
        assert abs(eps[s].var() - 1) < 5 * np.sqrt(2 / n)
        # normal, not just unit variance: fourth moment 3 (SE sqrt(96 / n))
        assert abs(np.mean(eps[s] ** 4) - 3) < 5 * np.sqrt(96 / n)
    for s in range(1, S):
        assert abs(np.mean(eps[0] * eps[s])) < 5 * np.sqrt(3 / n)
    # within a sample, neighbouring positions and channels are uncorrelated
    flat = eps[0].reshape(N, H * W, C)
    assert abs(np.mean(flat[:, :-1] * flat[:, 1:])) < 5 * np.sqrt(1 / flat[:, 1:].size)
    assert abs(np.mean(flat[..., :-1] * flat[..., 1:])) < 5 * np.sqrt(1 / flat[..., 1:].size)


def test_magnitudes_shared_signs_fresh():
    eps = _draw()
    np.testing.assert_allclose(np.abs(eps), np.broadcast_to(np.abs(eps[:1]), eps.shape),
                               rtol=1e-6)
    # a sign per (sample, position), the same over channels
    signs = np.sign(eps[1] * eps[0]).reshape(N, H * W, C)
    assert np.all(signs == signs[..., :1])
    assert 0.4 < np.mean(signs > 0) < 0.6  # 1,024 fair signs: 6 standard errors
    # every call draws afresh
    assert not np.array_equal(eps, _draw())


def test_small_or_dense_shapes_draw_every_normal():
    for shape in [(S * N, 5), (S * N, 4, 4, 3)]:  # no spatial axes; 16 < MIN_POSITIONS
        eps = _random.sign_flip_normal(tf.zeros(shape), S).numpy().reshape(S, -1)
        assert len(np.unique(np.abs(eps))) == eps.size


def test_few_positions_many_channels_flip_per_position_and_channel():
    shape = (S * N, 3, 3, 64)  # 9 positions < MIN_POSITIONS <= 9 + 64
    eps = _random.sign_flip_normal(tf.zeros(shape), S).numpy().reshape(S, N, 9, 64)
    np.testing.assert_allclose(np.abs(eps), np.broadcast_to(np.abs(eps[:1]), eps.shape),
                               rtol=1e-6)
    # sign of sample s relative to sample 0: a rank-1 pattern u[p] v[c], not constant
    rel = np.sign(eps[1:] * eps[:1])
    assert np.all(rel * rel[..., :1, :] * rel[..., :, :1] * rel[..., :1, :1] == 1)
    assert np.all(rel.reshape(S - 1, N, -1).std(axis=-1) > 0)
    flat = eps.reshape(S, -1)
    n = flat.shape[1]
    for s in range(S):  # each sample N(0, 1); samples uncorrelated (5 standard errors)
        assert abs(flat[s].var() - 1) < 5 * np.sqrt(2 / n)
        assert s == 0 or abs(np.mean(flat[0] * flat[s])) < 5 * np.sqrt(3 / n)
