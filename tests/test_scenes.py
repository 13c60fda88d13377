"""Offline dense data: `datasets.digit_scenes` and `datasets.superres_digits`."""

import numpy as np
import pytest

from tfp_bcnn import datasets
from tfp_bcnn._scenes import OCCLUDER_LEVEL, STROKE_THRESHOLD


def test_digit_scenes_shapes_labels_and_masks():
    x, y, ambiguous, foreign = datasets.digit_scenes(12, size=32, max_digits=3, seed=0)
    assert x.shape == (12, 32, 32, 1) and x.dtype == np.float32
    assert y.shape == ambiguous.shape == foreign.shape == (12, 32, 32)
    assert y.dtype == np.int64 and 0 <= y.min() and y.max() <= 10
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert not foreign.any()  # no letters asked for
    # Every scene has at least one digit; most pixels are background.
    assert ((y > 0).reshape(12, -1).any(axis=1)).all()
    assert 0.5 < (y == 0).mean() < 0.99
    # Digit pixels are bright: without noise and bars, a labelled pixel's intensity
    # is above the stroke threshold (labels come from the strokes).
    clean = datasets.digit_scenes(12, noise_std=0.0, occlusion=0.0, seed=0)
    assert (clean.x[..., 0][clean.y > 0] > STROKE_THRESHOLD).all()
    # Ambiguous pixels are the minority but exist (rims at least).
    assert 0.0 < clean.ambiguous.mean() < 0.3


def test_digit_scenes_bars_and_letters():
    scenes = datasets.digit_scenes(20, occlusion=1.0, noise_std=0.0, letters=1, seed=3)
    # Every scene has a bar: a full row or column at the occluder level, ambiguous.
    for image, amb in zip(scenes.x[..., 0], scenes.ambiguous):
        rows = np.flatnonzero((image == OCCLUDER_LEVEL).all(axis=1))
        cols = np.flatnonzero((image == OCCLUDER_LEVEL).all(axis=0))
        assert len(rows) + len(cols) >= 2
        assert amb[rows].all() and amb[:, cols].all()
    # Letters are labelled background and marked foreign; foreign is never ambiguous.
    assert scenes.foreign.any(axis=(1, 2)).mean() > 0.8
    assert (scenes.y[scenes.foreign] == 0).all()
    assert not (scenes.foreign & scenes.ambiguous).any()


def test_digit_scenes_deterministic_and_splits_differ():
    a = datasets.digit_scenes(5, seed=7)
    b = datasets.digit_scenes(5, seed=7)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = datasets.digit_scenes(5, seed=8)
    assert not np.array_equal(a.x, c.x)
    t = datasets.digit_scenes(5, seed=7, split="test")
    assert not np.array_equal(a.x, t.x)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_scenes": 0}, "num_scenes=0"),
    ({"size": 8}, "size=8"),
    ({"split": "val"}, "split='val'"),
    ({"noise_std": -1.0}, "noise_std=-1.0"),
    ({"occlusion": 2}, "occlusion=2"),
    ({"letters": -1}, "letters=-1"),
])
def test_digit_scenes_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.digit_scenes(**{"num_scenes": 2, **kwargs})


def test_superres_digits_pairs():
    (lo, hi), (lo_t, hi_t) = datasets.superres_digits(2)
    assert lo.shape == (4000, 14, 14, 1) and hi.shape == (4000, 28, 28, 1)
    assert lo_t.shape == (1000, 14, 14, 1) and hi_t.shape == (1000, 28, 28, 1)
    # Box downsampling against a direct numpy computation on one image.
    np.testing.assert_allclose(lo[3, 5, 6, 0], hi[3, 10:12, 12:14, 0].mean(), rtol=1e-6)
    (lo3, hi3), _ = datasets.superres_digits(3, source="digits")
    assert lo3.shape == (1438, 9, 9, 1) and hi3.shape == (1438, 27, 27, 1)
    (noisy, _), _ = datasets.superres_digits(2, noise_std=0.1, seed=1)
    (again, _), _ = datasets.superres_digits(2, noise_std=0.1, seed=1)
    np.testing.assert_array_equal(noisy, again)
    assert 0.05 < np.std(noisy - lo) < 0.1  # noise, clipped at 0 and 1


@pytest.mark.parametrize("kwargs,match", [
    ({"scale": 1}, "scale=1"), ({"scale": 15}, "scale=15"),
    ({"source": "cifar"}, "source='cifar'"), ({"noise_std": -0.5}, "noise_std=-0.5"),
])
def test_superres_digits_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.superres_digits(**kwargs)


def test_get_digit_scenes():
    (x, y), (xt, yt) = datasets.get("digit_scenes")
    sizes = datasets.DIGIT_SCENES_SIZES
    assert x.shape == (sizes["train"], 32, 32, 1) and y.shape == (sizes["train"], 32, 32)
    assert xt.shape[0] == sizes["test"]
