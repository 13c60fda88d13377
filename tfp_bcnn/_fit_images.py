"""Bring images to a network's input size: zero-pad or resize, repeat grey to RGB."""

from __future__ import annotations

import numpy as np

from . import _validation as check

__all__ = ["fit_images", "fit_to_model"]


def _resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) linear-interpolation matrix, half-pixel centres.

    Upsampling is plain bilinear (edge values repeated); downsampling widens
    the triangle filter by the scale factor (antialiased, like PIL). Rows are
    non-negative and sum to 1, so values stay within the input range.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    t = ((np.arange(in_size) + 0.5)[None, :] - centres[:, None]) / support
    w = np.maximum(0.0, 1.0 - np.abs(t))
    return w / w.sum(axis=1, keepdims=True)


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (N, H, W) images to (N, *size) with `_resize_matrix`."""
    rows = _resize_matrix(images.shape[1], size[0])
    cols = _resize_matrix(images.shape[2], size[1])
    return np.einsum("oh,nhw,pw->nop", rows, images, cols)


def fit_images(x: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """``(N, H, W, C)`` images -> ``(N, size, size, channels)`` float32.

    An image smaller than ``size`` is zero-padded around its centre (MNIST's
    28x28 digits get 2 px of border at 32: the digit keeps its pixels, as in
    LeNet-5's padding); a larger one is resized with the antialiased linear
    filter `_resize` (also used by `tfp_bcnn.datasets`). One channel is repeated ``channels``
    times (grey to RGB, what ImageNet-shaped networks such as MobileNetV2
    expect); otherwise the channel count must already match.

    Args:
        x: ``(N, H, W, C)`` images (channels last), values kept as they are.
        size: the output height and width (>= 1).
        channels: output channels (>= 1).

    Returns:
        ``(N, size, size, channels)`` float32 array (a new array).

    Raises:
        ValueError: ``x`` is not 4-D, ``size`` or ``channels`` is not a
            positive int, or ``C`` is neither 1 nor ``channels``.
    """
    size = check.positive_int("size", size)
    channels = check.positive_int("channels", channels)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, channels):
        raise ValueError(
            f"`x` must be (N, H, W, C) images with C = 1 or {channels}. "
            f"Received: x with shape {x.shape}"
        )
    n, h, w, c = x.shape
    if h > size or w > size:
        x = np.stack([_resize(x[..., k], (size, size)) for k in range(c)], -1)
    else:
        top, left = (size - h) // 2, (size - w) // 2
        x = np.pad(x, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))
    if c != channels:
        x = np.repeat(x, channels, axis=-1)
    return x.astype(np.float32)


def fit_to_model(model, *images):
    """Each image array brought to ``model``'s input (``datasets.fit_images``) if it differs.

    E.g. MNIST's ``(N, 28, 28, 1)`` digits for a MobileNetV2 with input
    ``(32, 32, 3)``: zero-padded to 32x32, the grey channel repeated.
    """
    shape = tuple(model.input_shape[1:])
    return tuple(x if tuple(x.shape[1:]) == shape else fit_images(x, shape[0], shape[-1])
                 for x in images)
