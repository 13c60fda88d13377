"""Shift and out-of-distribution image sets of `tfp_bcnn.datasets`.

`shifted_digits` (scikit-learn's digits rendered like MNIST), `rotated`,
`letters` (A-J from matplotlib's fonts) and `noise`: see the module docstring
of `tfp_bcnn.datasets`, which re-exports every public name here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from . import _validation as check
from ._fit_images import _resize

Arrays = tuple[np.ndarray, np.ndarray]

_NOISE_KINDS = ("uniform", "gaussian", "bernoulli")
_LETTERS = "ABCDEFGHIJ"
# Fonts shipped in matplotlib's mpl-data/fonts/ttf that hold Latin capitals.
_LETTER_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)


def _place_by_centre_of_mass(image: np.ndarray, frame: int = 28) -> tuple[int, int]:
    """``(top, left)`` putting the centre of mass of ``image`` at the frame's centre.

    The offsets are rounded and clamped so the whole image fits in the frame.
    """
    h, w = image.shape
    mass = image.sum()
    com_r = (image.sum(axis=1) @ np.arange(h)) / mass
    com_c = (image.sum(axis=0) @ np.arange(w)) / mass
    centre = (frame - 1) / 2.0
    top = min(max(round(float(centre - com_r)), 0), frame - h)
    left = min(max(round(float(centre - com_c)), 0), frame - w)
    return top, left


@functools.lru_cache(maxsize=1)
def _shifted_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images / 16.0  # 0..16 -> [0, 1]
    x = np.zeros((len(images), 28, 28), dtype=np.float32)
    for i, image in enumerate(images):
        rows = np.flatnonzero(image.max(axis=1) > 0)
        cols = np.flatnonzero(image.max(axis=0) > 0)
        ink = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        # The 8x8 pixels are cells of the box: scale the box's longest side to 20 px.
        scale = 20.0 / max(ink.shape)
        size = (max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
        small = np.clip(_resize(ink[None], size)[0], 0.0, 1.0)
        top, left = _place_by_centre_of_mass(small)
        x[i, top : top + size[0], left : left + size[1]] = small
    return x[..., None], bunch.target.astype(np.int64)


def shifted_digits() -> Arrays:
    """scikit-learn's 8x8 digits rendered the way MNIST was made: a shifted test set.

    MNIST's preprocessing (LeCun et al.): each digit's bounding box is scaled,
    keeping its aspect ratio, so that its longest side is 20 pixels
    (anti-aliased), then placed in a 28x28 frame with its centre of mass at
    the centre. This applies the same steps to the 1,797 digits of
    ``sklearn.datasets.load_digits`` (43 writers, 8x8 cells of 0..16, a
    different scanner and writer population): crop to the non-zero pixels,
    bilinear upsampling to 20 px on the long side, centre of mass rounded to
    pixel (13.5, 13.5). Unlike `digits` (the whole 8x8 frame stretched to
    20x20, for training), the digit shapes here have MNIST's scale and
    position, so what differs is the writers and the blocky, low-resolution
    strokes: a covariate shift with the same labels, for evaluating a model
    trained on MNIST. Deterministic (no randomness), cached in-process.

    Returns:
        ``(x, y)``: float32 ``(1797, 28, 28, 1)`` in ``[0, 1]``, white digits
        on black, and int64 ``(1797,)`` labels in ``0..9``, in scikit-learn's
        order. Fresh copies on every call.

    Example:
    >>> x, y = shifted_digits()
    >>> x.shape, y[:5].tolist()
    ((1797, 28, 28, 1), [0, 1, 2, 3, 4])
    """
    x, y = _shifted_digits_arrays()
    return x.copy(), y.copy()


def rotated(x: np.ndarray, degrees: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Rotate images about their centre, counter-clockwise, bilinear, zero fill.

    With ``u = c - cx`` and ``v = cy - r`` the display coordinates (right,
    up) of the output pixel at row ``r``, column ``c``, and the centre
    ``(cy, cx) = ((H - 1) / 2, (W - 1) / 2)``, the output reads the input at
    the inverse rotation by ``t = deg2rad(degrees)``:

        ``c_src = cx + u cos(t) + v sin(t)``,
        ``r_src = cy + u sin(t) - v cos(t)``,

    interpolated bilinearly; neighbours outside the image read 0. ``degrees=90`` on a
    square image matches ``np.rot90(x, axes=(1, 2))`` up to float rounding.
    Bilinear weights are non-negative and sum to at most 1, so values stay
    within ``[min(0, x.min()), x.max()]``.

    Args:
        x: images ``(N, H, W, C)``, any real dtype.
        degrees: one angle for every image, or one angle per image ``(N,)``.
            Positive turns counter-clockwise as displayed (row 0 on top).

    Returns:
        The rotated images, ``(N, H, W, C)``, same dtype as ``x`` (integer
        inputs are rounded).

    Raises:
        ValueError: if ``x`` is not 4-D, or ``degrees`` is neither a scalar
            nor shaped ``(N,)``, or holds a non-finite value.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"`x` must be a batch of images (N, H, W, C). Received: x.shape={x.shape}"
        )
    n, h, w, _ = x.shape
    angles = np.asarray(degrees, dtype=np.float64)
    if angles.ndim not in (0, 1) or (angles.ndim == 1 and angles.shape[0] != n):
        raise ValueError(
            f"`degrees` must be a scalar or have shape ({n},). "
            f"Received: degrees with shape {angles.shape}"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError(f"`degrees` must be finite. Received: degrees={degrees!r}")
    theta = np.deg2rad(np.broadcast_to(angles, (n,)))[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    # Display coordinates (u right, v up) of every output pixel, rotated back.
    u = np.arange(w, dtype=np.float64)[None, None, :] - cx
    v = cy - np.arange(h, dtype=np.float64)[None, :, None]
    src_col = cx + u * cos + v * sin
    src_row = cy - (-u * sin + v * cos)

    work = np.float64 if x.dtype == np.float64 else np.float32
    xf = x.astype(work, copy=False)
    r0 = np.floor(src_row).astype(np.int64)
    c0 = np.floor(src_col).astype(np.int64)
    dr = (src_row - r0).astype(work)
    dc = (src_col - c0).astype(work)
    batch = np.arange(n)[:, None, None]
    out = np.zeros(x.shape, dtype=work)
    for ro, wr in ((0, 1.0 - dr), (1, dr)):
        for co, wc in ((0, 1.0 - dc), (1, dc)):
            rr, cc = r0 + ro, c0 + co
            valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            vals = xf[batch, np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]
            out += vals * (wr * wc * valid)[..., None]
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(x.dtype)


def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=1)
def _glyphs() -> tuple[tuple[np.ndarray, ...], ...]:
    """High-resolution glyphs A-J per font: tuple over fonts of 10 bitmaps."""
    from matplotlib import ft2font

    fonts = []
    for name in _LETTER_FONTS:
        path = os.path.join(_font_dir(), name)
        if not os.path.exists(path):
            continue
        font = ft2font.FT2Font(path)
        if any(font.get_char_index(ord(ch)) == 0 for ch in _LETTERS):
            continue
        bitmaps = []
        for ch in _LETTERS:
            font.clear()
            font.set_size(48, 72)  # 48 px per em: supersampled, downscaled later
            font.set_text(ch, 0.0)
            font.draw_glyphs_to_bitmap(antialiased=True)
            image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
            rows = np.flatnonzero(image.max(axis=1) > 0)
            cols = np.flatnonzero(image.max(axis=0) > 0)
            bitmaps.append(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        fonts.append(tuple(bitmaps))
    if not fonts:
        raise RuntimeError(
            f"No usable font found for `letters()`. Received: font dir {_font_dir()!r}"
        )
    return tuple(fonts)


def _dilate(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a (2r+1)^2 square; the canvas grows by r a side."""
    if radius == 0:
        return image
    h, w = image.shape
    out = np.zeros((h + 2 * radius, w + 2 * radius), dtype=image.dtype)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            np.maximum(
                out[dy : dy + h, dx : dx + w], image, out=out[dy : dy + h, dx : dx + w]
            )
    return out


@functools.lru_cache(maxsize=8)
def _letters_arrays(num_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    glyphs = _glyphs()
    rng = np.random.default_rng(seed)
    n = num_per_class * len(_LETTERS)
    y = rng.permutation(
        np.repeat(np.arange(len(_LETTERS), dtype=np.int64), num_per_class)
    )
    fonts = rng.integers(len(glyphs), size=n)
    boxes = rng.uniform(14.0, 22.0, size=n)  # longest side in pixels (MNIST: 20)
    strokes = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])  # dilation at 48 px/em
    shifts = rng.integers(-2, 3, size=(n, 2))
    angles = rng.uniform(-15.0, 15.0, size=n)
    gains = rng.uniform(0.8, 1.0, size=n)  # peak intensity, like pen pressure
    x = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        glyph = _dilate(glyphs[fonts[i]][y[i]], int(strokes[i]))
        gh, gw = glyph.shape
        scale = boxes[i] / max(gh, gw)
        size = (max(1, round(float(gh * scale))), max(1, round(float(gw * scale))))
        small = _resize(glyph[None], size)[0]
        # Centre by the centre of mass (as MNIST does), then shift.
        mass = small.sum()
        com_r = (small.sum(axis=1) @ np.arange(size[0])) / mass
        com_c = (small.sum(axis=0) @ np.arange(size[1])) / mass
        top = round(float(13.5 - com_r)) + int(shifts[i, 0])
        left = round(float(13.5 - com_c)) + int(shifts[i, 1])
        top = min(max(top, 1), 27 - size[0])  # keep a 1-pixel margin
        left = min(max(left, 1), 27 - size[1])
        x[i, top : top + size[0], left : left + size[1]] = small * gains[i]
    x = rotated(x[..., None], angles)
    return np.clip(x, 0.0, 1.0), y


def letters(num_per_class: int = 100, *, seed: int = 0) -> Arrays:
    """Out-of-distribution letters A-J rendered from matplotlib's fonts.

    A notMNIST-like set made offline: each image draws one of the DejaVu
    (Sans, Serif, Mono), STIX and Computer Modern faces shipped with
    matplotlib (upright, bold, italic), renders the capital at 48 px/em with
    FreeType, optionally thickens the strokes, scales it so its longest side
    is 14-22 px, centres it by its centre of mass in a 28x28 frame (as MNIST
    does), shifts it by up to 2 px, dims it to a peak of 0.8-1.0 and rotates
    it by up to 15 degrees. White on black, like MNIST.

    Args:
        num_per_class: images per letter; ``N = 10 * num_per_class``.
        seed: seed of every random choice (keyword-only). The same seed gives
            the same images (cached in-process).

    Returns:
        ``(x, y)``: float32 ``(N, 28, 28, 1)`` in ``[0, 1]``, and int64 ``(N,)``
        with 0..9 for A..J, in a shuffled order. Fresh copies on every call.

    Raises:
        ValueError: if ``num_per_class`` is not a positive integer.
    """
    check.positive_int("num_per_class", num_per_class)
    x, y = _letters_arrays(int(num_per_class), int(seed))
    return x.copy(), y.copy()


def noise(
    n: int = 1000,
    shape: tuple[int, ...] = (28, 28, 1),
    *,
    seed: int = 0,
    kind: str = "uniform",
) -> Arrays:
    """Pure-noise images, the crudest out-of-distribution check.

    Kinds: ``"uniform"`` draws every pixel from U(0, 1); ``"gaussian"`` from
    N(0.5, 0.25^2) clipped to ``[0, 1]``; ``"bernoulli"`` sets each pixel to 0
    or 1 with probability 1/2.

    Args:
        n: number of images.
        shape: shape of one image, e.g. ``(H, W, C)``.
        seed: seed of ``numpy.random.default_rng`` (keyword-only).
        kind: ``"uniform"``, ``"gaussian"`` or ``"bernoulli"``.

    Returns:
        ``(x, y)``: float32 ``(n, *shape)`` in ``[0, 1]``, and int64 ``(n,)``
        filled with -1 (no class), so it has the same form as `letters`.

    Raises:
        ValueError: for an unknown ``kind`` or a negative ``n``.
    """
    check.choice("kind", kind, _NOISE_KINDS)
    check.integer("n", n, minimum=0, what="a non-negative integer")
    rng = np.random.default_rng(seed)
    size = (int(n), *tuple(shape))
    if kind == "uniform":
        x = rng.uniform(0.0, 1.0, size=size)
    elif kind == "gaussian":
        x = np.clip(rng.normal(0.5, 0.25, size=size), 0.0, 1.0)
    else:
        x = rng.integers(0, 2, size=size)
    return x.astype(np.float32), np.full((int(n),), -1, dtype=np.int64)
