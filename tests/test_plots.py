"""Tests for tfp_bcnn.plots: every figure is a real PNG, written atomically."""

import os
import pathlib
import types

import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from tfp_bcnn import plots


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's per-test Keras seed / clear_session: these tests
    build no Keras state, and clear_session's gc.collect costs ~1-2 s a test
    on a loaded machine."""
    yield


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 60
    logits = 2.0 * rng.standard_normal((n, NUM_CLASSES))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.where(
        rng.random(n) < 0.7, probs.argmax(1), rng.integers(0, NUM_CLASSES, n)
    )
    samples = rng.dirichlet(np.ones(NUM_CLASSES), size=(5, n))
    images = rng.random((n, 12, 12))
    return types.SimpleNamespace(
        probs=probs, labels=labels, samples=samples, images=images, rng=rng
    )


def _check_png(path, directory, width, height):
    """A non-empty PNG of width x height pixels, and nothing else in the folder."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 1000
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert image.shape[2] in (3, 4)
    assert sorted(os.listdir(directory)) == [os.path.basename(path)]


def test_reliability_diagram(data, tmp_path):
    out = plots.reliability_diagram(
        data.probs, data.labels, tmp_path / "rel.png", num_bins=10
    )
    assert out == tmp_path / "rel.png"
    _check_png(out, tmp_path, 600, 650)


def test_reliability_diagram_overlay(data, tmp_path):
    sharp = data.probs**3 / (data.probs**3).sum(1, keepdims=True)
    out = plots.reliability_diagram(
        {"bayesian": data.probs, "frequentist": sharp},
        data.labels,
        str(tmp_path / "rel.png"),
        title="MNIST",
    )
    _check_png(out, tmp_path, 600, 650)


def test_uncertainty_histograms_dicts_and_objects(data, tmp_path):
    rng = np.random.default_rng(1)
    # An object with attributes, like tfp_bcnn.predict's Prediction...
    in_dist = types.SimpleNamespace(
        aleatoric=rng.gamma(1.0, 0.2, 200), epistemic=rng.gamma(1.0, 0.02, 200)
    )
    # ...and a dict; a deterministic model's epistemic is all zeros.
    out_dist = {"aleatoric": rng.gamma(3.0, 0.3, 100), "epistemic": np.zeros(100)}
    out = plots.uncertainty_histograms(in_dist, out_dist, tmp_path / "unc.png")
    _check_png(out, tmp_path, 1000, 420)


def test_rotation_curve_single_and_several(data, tmp_path):
    angles = np.arange(0, 181, 15)
    acc = np.linspace(0.98, 0.1, angles.size)
    unc = np.linspace(0.05, 0.9, angles.size)
    out = plots.rotation_curve(
        angles, acc, unc, tmp_path / "rot.png", labels="Bayesian"
    )
    _check_png(out, tmp_path, 700, 450)
    out = plots.rotation_curve(
        angles,
        {"Bayesian": acc, "frequentist": acc**1.2},
        {"Bayesian": unc, "frequentist": 0.5 * unc},
        tmp_path / "rot.png",
        uncertainty_label="mean epistemic (nats)",
    )
    _check_png(out, tmp_path, 700, 450)
    out = plots.rotation_curve(
        angles, np.stack([acc, acc / 2]), None, tmp_path / "rot.png"
    )
    _check_png(out, tmp_path, 700, 450)


@pytest.mark.parametrize("with_samples", [False, True])
def test_sample_predictions(data, tmp_path, with_samples):
    samples = data.samples if with_samples else None
    images = data.images[..., None]  # (N, H, W, 1) is accepted too
    out = plots.sample_predictions(
        images,
        data.probs,
        tmp_path / "samples.png",
        labels=data.labels,
        samples=samples,
        max_images=5,
    )
    _check_png(out, tmp_path, 1000, 460)


def test_sample_predictions_rgb_and_fewer_images(data, tmp_path):
    images = data.rng.random((3, 8, 8, 3))
    out = plots.sample_predictions(images, data.probs[:3], tmp_path / "rgb.png")
    _check_png(out, tmp_path, 600, 460)  # 3 columns x 2 inches


def test_sparsity_curve(tmp_path):
    sparsity = np.array([0.0, 0.5, 0.8, 0.9, 0.95])
    out = plots.sparsity_curve(
        sparsity,
        {
            "magnitude": [0.98, 0.98, 0.97, 0.9, 0.7],
            "snr": [0.98, 0.98, 0.98, 0.96, 0.9],
        },
        tmp_path / "sp.png",
        baseline=0.98,
    )
    _check_png(out, tmp_path, 650, 450)


def test_creates_parent_folder(data, tmp_path):
    out = plots.sparsity_curve([0.0, 0.5], [0.9, 0.8], tmp_path / "a" / "b" / "sp.png")
    assert out.is_file()


def test_failed_write_leaves_old_file_and_no_temp(data, tmp_path, monkeypatch):
    target = tmp_path / "rel.png"
    target.write_bytes(b"old")

    def broken_savefig(self, *args, **kwargs):
        args[0].write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.reliability_diagram(data.probs, data.labels, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["rel.png"]


def test_no_global_matplotlib_side_effects(data, tmp_path):
    backend = matplotlib.get_backend()
    pyplot = __import__("matplotlib.pyplot").pyplot
    figures = pyplot.get_fignums()
    plots.reliability_diagram(data.probs, data.labels, tmp_path / "rel.png")
    assert matplotlib.get_backend() == backend
    assert pyplot.get_fignums() == figures


class TestBadInputs:
    def test_reliability_diagram(self, data, tmp_path):
        path = tmp_path / "x.png"
        with pytest.raises(ValueError, match=r"probs\.shape=\(60,\)"):
            plots.reliability_diagram(data.probs[:, 0], data.labels, path)
        with pytest.raises(ValueError, match=r"probs\['b'\].*probs\.shape=\(59, 4\)"):
            plots.reliability_diagram(
                {"a": data.probs, "b": data.probs[:59]}, data.labels, path
            )
        with pytest.raises(ValueError, match=r"num_bins=0"):
            plots.reliability_diagram(data.probs, data.labels, path, num_bins=0)
        with pytest.raises(ValueError, match=r"probs=\{\}"):
            plots.reliability_diagram({}, data.labels, path)
        assert os.listdir(tmp_path) == []

    def test_uncertainty_histograms(self, tmp_path):
        path = tmp_path / "x.png"
        good = {"aleatoric": np.ones(5), "epistemic": np.ones(5)}
        with pytest.raises(ValueError, match=r"keys \['aleatoric'\]"):
            plots.uncertainty_histograms({"aleatoric": np.ones(5)}, good, path)
        with pytest.raises(ValueError, match=r"list without 'aleatoric'"):
            plots.uncertainty_histograms(good, [1, 2], path)
        with pytest.raises(ValueError, match=r"out_dist\.epistemic\.shape=\(5, 2\)"):
            plots.uncertainty_histograms(
                good, {"aleatoric": np.ones(5), "epistemic": np.ones((5, 2))}, path
            )
        with pytest.raises(ValueError, match=r"in_dist\.aleatoric.*1 NaN"):
            plots.uncertainty_histograms(
                {"aleatoric": np.array([1.0, np.nan]), "epistemic": np.ones(2)},
                good,
                path,
            )
        with pytest.raises(ValueError, match=r"bins=0"):
            plots.uncertainty_histograms(good, good, path, bins=0)
        assert os.listdir(tmp_path) == []

    def test_rotation_curve(self, tmp_path):
        path = tmp_path / "x.png"
        angles = np.arange(5)
        with pytest.raises(ValueError, match=r"accuracy.*length 5.*shape=\(4,\)"):
            plots.rotation_curve(angles, np.ones(4), np.ones(5), path)
        with pytest.raises(ValueError, match=r"same series.*\['a'\] and \['b'\]"):
            plots.rotation_curve(angles, {"a": np.ones(5)}, {"b": np.ones(5)}, path)
        with pytest.raises(ValueError, match=r"labels=\['x'\]"):
            plots.rotation_curve(angles, np.ones((2, 5)), None, path, labels=["x"])
        with pytest.raises(ValueError, match=r"accuracy\.shape=\(1, 1, 5\)"):
            plots.rotation_curve(angles, np.ones((1, 1, 5)), None, path)
        assert os.listdir(tmp_path) == []

    def test_sample_predictions(self, data, tmp_path):
        path = tmp_path / "x.png"
        with pytest.raises(ValueError, match=r"images\.shape=\(60, 12\)"):
            plots.sample_predictions(data.images[:, 0], data.probs, path)
        with pytest.raises(ValueError, match=r"probs\.shape=\(59, 4\), images\.shape"):
            plots.sample_predictions(data.images, data.probs[:59], path)
        with pytest.raises(ValueError, match=r"samples\.shape=\(5, 60, 3\)"):
            plots.sample_predictions(
                data.images, data.probs, path, samples=data.samples[..., :3]
            )
        with pytest.raises(ValueError, match=r"labels\.shape=\(3,\)"):
            plots.sample_predictions(data.images, data.probs, path, labels=[0, 1, 2])
        with pytest.raises(ValueError, match=r"max_images=0"):
            plots.sample_predictions(data.images, data.probs, path, max_images=0)
        with pytest.raises(ValueError, match=r"4 names\. Received: 2"):
            plots.sample_predictions(
                data.images, data.probs, path, class_names=["a", "b"]
            )
        assert os.listdir(tmp_path) == []

    def test_sparsity_curve(self, tmp_path):
        path = tmp_path / "x.png"
        with pytest.raises(ValueError, match=r"not percentages.*50\.0"):
            plots.sparsity_curve([0.0, 50.0], [0.9, 0.8], path)
        with pytest.raises(ValueError, match=r"accuracies\['snr'\].*length 2"):
            plots.sparsity_curve([0.0, 0.5], {"mag": [0.9, 0.8], "snr": [0.9]}, path)
        with pytest.raises(ValueError, match=r"sparsities\.shape=\(1, 2\)"):
            plots.sparsity_curve([[0.0, 0.5]], [0.9, 0.8], path)
        assert os.listdir(tmp_path) == []


def test_uncertainty_histograms_deterministic_panel(tmp_path):
    """A deterministic model: the epistemic panel says n/a, whatever its (noise) values."""
    rng = np.random.default_rng(2)
    in_dist = {"aleatoric": rng.gamma(1.0, 0.2, 50), "epistemic": np.full(50, 1e-16)}
    out_dist = {"aleatoric": rng.gamma(3.0, 0.3, 40), "epistemic": np.full(40, 2e-16)}
    out = plots.uncertainty_histograms(in_dist, out_dist, tmp_path / "unc.png",
                                       names=("test digits", "letters"), deterministic=True)
    _check_png(out, tmp_path, 1000, 420)


def test_reliability_diagram_named_model(data, tmp_path):
    out = plots.reliability_diagram({"Bayesian": data.probs}, data.labels, tmp_path / "r.png")
    _check_png(out, tmp_path, 600, 650)


def test_histogram_panels_are_titled_with_the_score_labels(tmp_path, monkeypatch):
    """What a reader sees: each panel named by its score, the OOD AUROC or n/a."""
    seen = {}
    save = plots._save

    def capture(figure, path):
        seen[pathlib.Path(path).name] = [ax.get_title() for ax in figure.axes]
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", capture)
    rng = np.random.default_rng(0)
    scores = {k: rng.gamma(2.0, 0.1, 30) for k in ("aleatoric", "epistemic")}
    shifted = {k: v + 1.0 for k, v in scores.items()}  # every OOD score above: AUROC 1
    plots.uncertainty_histograms(scores, shifted, tmp_path / "b.png")
    plots.uncertainty_histograms(scores, shifted, tmp_path / "d.png", deterministic=True)
    assert seen["b.png"] == ["aleatoric (expected entropy)\nOOD AUROC = 1.000",
                             "epistemic (mutual information)\nOOD AUROC = 1.000"]
    assert seen["d.png"][1] == f"{plots.SCORE_LABELS['epistemic']}\nOOD AUROC = n/a"
