"""Figures for Bayesian classifiers: calibration, uncertainty, rotation, pruning.

Every function draws one figure, writes it as a PNG to ``path`` and returns
``path`` as a :class:`pathlib.Path`. Figures are built with
:class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``: importing or calling this module does not change the user's
matplotlib backend, opens no window, and leaves no figure in pyplot's
registry (so nothing leaks in a loop). The PNG is written to a temporary file
in the destination folder and moved into place (``tfp_bcnn._io.atomic_file``),
so a reader never sees a half-written file; the folder is created if missing.

Functions:

- :func:`reliability_diagram`: accuracy per confidence bin against the
  diagonal, with the ECE (several models can be overlaid).
- :func:`uncertainty_histograms`: aleatoric and epistemic uncertainty of
  in-distribution vs out-of-distribution inputs, with the OOD AUROC.
- :func:`rotation_curve`: accuracy and mean uncertainty against the rotation
  angle of the inputs.
- :func:`sample_predictions`: images with their predictive distribution per
  class (and the spread of the Monte Carlo samples).
- :func:`sparsity_curve`: accuracy against the fraction of pruned weights.

Example:

>>> import numpy as np
>>> from tfp_bcnn import plots
>>> probs = np.full((4, 2), 0.5); labels = np.array([0, 1, 0, 1])
>>> plots.reliability_diagram(probs, labels, "/tmp/rel.png").name
'rel.png'
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as check
from . import metrics
from ._figures import new_figure as _new_figure
from ._figures import save as _save

__all__ = [
    "SCORE_LABELS",
    "reliability_diagram",
    "rotation_curve",
    "sample_predictions",
    "sparsification_plot",
    "sparsity_curve",
    "uncertainty_histograms",
    "uncertainty_maps",
]

PathLike = str | os.PathLike
Series = ArrayLike | Mapping[str, ArrayLike]


#: The one display name of each uncertainty score (keys as in
#: ``tfp_bcnn.predict``'s ``Prediction``), used by the plots, the command
#: line's tables, the main job's summary and the README.
SCORE_LABELS = {
    "predictive_entropy": "predictive entropy",
    "aleatoric": "aleatoric (expected entropy)",
    "epistemic": "epistemic (mutual information)",
}
#: What a figure or table shows for an epistemic score of a deterministic model.
NOT_APPLICABLE = "n/a"


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _as_series(name: str, value: Series) -> dict[str, np.ndarray]:
    """Turns an array or a {name: array} mapping into {name: float array}."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(
                f"`{name}` must not be an empty mapping. Received: {name}={{}}"
            )
        return {str(key): np.asarray(array) for key, array in value.items()}
    return {"": np.asarray(value)}


def _vector(name: str, value: ArrayLike, length: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D array. Received: {name}.shape={array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise ValueError(
            f"`{name}` must hold real numbers. Received: {name}.dtype={array.dtype}"
        )
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"`{name}` must have length {length}. Received: {name}.shape={array.shape}"
        )
    return array.astype(np.float64)


def _field(name: str, source: Any, key: str) -> np.ndarray:
    """Reads ``key`` from a mapping or an attribute of ``source``."""
    if isinstance(source, Mapping):
        if key not in source:
            raise ValueError(
                f"`{name}` must have keys 'aleatoric' and 'epistemic'. "
                f"Received: a mapping with keys {sorted(map(str, source))}"
            )
        value = source[key]
    elif hasattr(source, key):
        value = getattr(source, key)
    else:
        raise ValueError(
            f"`{name}` must be a mapping or an object (e.g. the Prediction of "
            "tfp_bcnn.predict) with 'aleatoric' and 'epistemic' arrays. "
            f"Received: {type(source).__name__} without '{key}'"
        )
    array = _vector(f"{name}.{key}", value)
    if not np.isfinite(array).all():
        raise ValueError(
            f"`{name}.{key}` must be finite. "
            f"Received: {int((~np.isfinite(array)).sum())} NaN/inf values"
        )
    return array


def _legend_name(key: str, fallback: str) -> str:
    return key if key else fallback


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
def _reliability_curves(probs: Series, labels: ArrayLike, num_bins: int) -> dict:
    """``{model name: metrics.reliability_curve(...)}``; errors name the model."""
    curves = {}
    for name, array in _as_series("probs", probs).items():
        try:
            curves[name] = metrics.reliability_curve(array, labels, num_bins)
        except ValueError as error:
            if name:
                raise ValueError(f"probs[{name!r}]: {error}") from None
            raise
    return curves


def _draw_calibration_bars(ax, curve, color: str) -> None:
    """One model: accuracy bars per bin and the hatched gap to the mean confidence."""
    edges = curve.bin_edges
    width = np.diff(edges)
    acc = np.nan_to_num(curve.accuracy)
    full = curve.counts > 0
    ax.bar(edges[:-1], acc, width=width, align="edge", color=color, edgecolor="black",
           linewidth=0.6, label="accuracy")
    conf = np.where(full, curve.confidence, 0.0)
    ax.bar(edges[:-1][full], (conf - acc)[full], bottom=acc[full], width=width[full],
           align="edge", color="tab:red", alpha=0.25, hatch="//", edgecolor="tab:red",
           linewidth=0.6, label="gap to confidence")


def _draw_calibration_outline(ax, curve, name: str, color: str) -> None:
    """One of several models: outlined accuracy steps, ECE in the legend, and
    a dot at (mean confidence, accuracy) of each non-empty bin."""
    acc = np.nan_to_num(curve.accuracy)
    full = curve.counts > 0
    ax.stairs(acc, curve.bin_edges, color=color, linewidth=2,
              label=f"{name} (ECE {curve.ece:.3f})")
    ax.stairs(acc, curve.bin_edges, color=color, fill=True, alpha=0.08)
    ax.plot(curve.confidence[full], curve.accuracy[full], "o", color=color, markersize=4)


def _draw_bin_counts(ax, curve, color: str, annotate: bool) -> None:
    """Examples per bin (filled when ``annotate``: one model, each count written)."""
    edges = curve.bin_edges
    ax.stairs(curve.counts, edges, color=color, fill=annotate,
              alpha=0.6 if annotate else 1.0, linewidth=1.5)
    if annotate:  # the count of each non-empty bin, readable however skewed
        for left, right, count in zip(edges[:-1], edges[1:], curve.counts):
            if count > 0:
                ax.annotate(f"{int(count)}", ((left + right) / 2, count), ha="center",
                            va="bottom", fontsize=7)


def _style_reliability_axes(top, bottom, curves: dict) -> None:
    """Limits, labels, grid and legend of the two panels (log-scale counts)."""
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    bottom.set_xlabel("confidence (max predicted probability)")
    bottom.set_yscale("log")
    bottom.set_ylim(bottom=0.8, top=max(int(c.counts.max()) for c in curves.values()) * 4)
    bottom.set_ylabel("examples\n(log scale)")
    bottom.grid(alpha=0.3)


def reliability_diagram(
    probs: Series,
    labels: ArrayLike,
    path: PathLike,
    num_bins: int = 15,
    title: str | None = None,
) -> pathlib.Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal.

    The top panel shows, for each of ``num_bins`` equal-width bins of the
    confidence ``max_c p_c``, the accuracy of the examples in it (bars) and
    the gap to their mean confidence (hatched); a calibrated model follows
    the diagonal. The bottom panel shows the number of examples per bin on a
    log scale (a trained model puts most of them in the top bin), each count
    written above its bin when one model is drawn. Bins follow
    :func:`tfp_bcnn.metrics.reliability_curve`. Several models (e.g.
    ``{"Bayesian": p_bayes, "frequentist": p_freq}``) are overlaid as
    outlined bars, each with its ECE in the legend.

    Args:
        probs: Predictive probabilities ``(N, C)``, or a mapping from model
            name to such an array (all scored against the same ``labels``);
            a one-entry mapping names the model in the title.
        labels: True classes, integers in ``[0, C)``, shape ``(N,)``.
        path: Where to write the PNG.
        num_bins: Number of confidence bins, ``> 0``.
        title: Figure title; default "Reliability diagram". With a single
            model the ECE is appended.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: If ``probs`` / ``labels`` are malformed (see
            :mod:`tfp_bcnn.metrics`) or ``num_bins <= 0``.
    """
    curves = _reliability_curves(probs, labels, num_bins)
    figure = _new_figure(6.0, 6.5)
    top, bottom = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1,
             label="perfect calibration")
    single = len(curves) == 1
    for i, (name, curve) in enumerate(curves.items()):
        if single:
            _draw_calibration_bars(top, curve, f"C{i}")
        else:
            _draw_calibration_outline(top, curve, name, f"C{i}")
        _draw_bin_counts(bottom, curve, f"C{i}", annotate=single)
    _style_reliability_axes(top, bottom, curves)
    heading = title if title is not None else "Reliability diagram"
    if single and next(iter(curves)):
        heading = f"{heading}: {next(iter(curves))}"
    if single:
        heading = f"{heading} (ECE = {next(iter(curves.values())).ece:.4f})"
    top.set_title(heading)
    return _save(figure, path)


def _draw_not_applicable(ax, label: str) -> None:
    """An epistemic panel of a deterministic model: "n/a" and why, no histogram."""
    ax.set_title(f"{label}\nOOD AUROC = {NOT_APPLICABLE}", fontsize=10)
    ax.text(0.5, 0.5, f"{NOT_APPLICABLE}: deterministic model\n(every Monte Carlo "
            "sample is the same,\nso there is no epistemic uncertainty)",
            ha="center", va="center", transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_histogram_panel(ax, values_in, values_out, names, bins: int, label: str) -> None:
    """Normalised histograms of one score, in vs out, on shared bins; means
    dashed; the score's OOD AUROC (``metrics.ood_auroc``) in the title."""
    edges = np.histogram_bin_edges(np.concatenate([values_in, values_out]), bins=bins)
    for values, name, color in ((values_in, names[0], "C0"), (values_out, names[1], "C3")):
        weights = np.full(values.shape, 1.0 / values.shape[0])
        ax.hist(values, bins=edges, weights=weights, color=color, alpha=0.5,
                label=f"{name} (n={values.shape[0]})")
        ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1,
                   label=f"mean, {name}")
    auroc = metrics.ood_auroc(values_in, values_out)
    ax.set_title(f"{label}\nOOD AUROC = {auroc:.3f}", fontsize=10)
    ax.set_xlabel("nats")
    ax.set_ylabel("fraction of examples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def uncertainty_histograms(
    in_dist: Any,
    out_dist: Any,
    path: PathLike,
    bins: int = 30,
    names: tuple[str, str] = ("in-distribution", "out-of-distribution"),
    title: str | None = None,
    deterministic: bool = False,
) -> pathlib.Path:
    """Histograms of aleatoric and epistemic uncertainty, in vs out of distribution.

    Two panels (aleatoric: expected entropy; epistemic: mutual information),
    each overlaying the normalised histograms of the in-distribution and OOD
    examples on shared bins, with the AUROC of the score for OOD detection
    (:func:`tfp_bcnn.metrics.ood_auroc`) in the panel title and a dashed
    line at the mean of each set (named in the legend).

    Args:
        in_dist: In-distribution uncertainties: an object with ``aleatoric``
            and ``epistemic`` attributes (e.g. the ``Prediction`` returned by
            ``tfp_bcnn.predict``) or a mapping with those keys; each ``(N_in,)``.
        out_dist: The same for the OOD inputs, each ``(N_out,)``.
        path: Where to write the PNG.
        bins: Number of histogram bins per panel, ``> 0``.
        names: Legend names of the two sets, e.g. ``("MNIST test digits",
            "letters")``.
        title: Figure title; default "Predictive uncertainty".
        deterministic: the model is deterministic (every Monte Carlo sample
            equal): the epistemic panel says "n/a" instead of drawing
            rounding noise.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: If a field is missing, not 1-D, empty or not finite, or
            ``bins <= 0``.
    """
    check.positive_int("bins", bins)
    if len(names) != 2:
        raise ValueError(
            f"`names` must hold two names (in, out). Received: names={names!r}"
        )
    figure = _new_figure(10.0, 4.2)
    axes = figure.subplots(1, 2)
    for ax, key in zip(axes, ("aleatoric", "epistemic")):
        values_in = _field("in_dist", in_dist, key)
        values_out = _field("out_dist", out_dist, key)
        if deterministic and key == "epistemic":
            _draw_not_applicable(ax, SCORE_LABELS[key])
        else:
            _draw_histogram_panel(ax, values_in, values_out, names, int(bins),
                                  SCORE_LABELS[key])
    figure.suptitle(title if title is not None else "Predictive uncertainty")
    return _save(figure, path)


def _named_series(name: str, value: Series, labels, num_angles: int) -> dict[str, np.ndarray]:
    """``{series name: (A,)}`` from ``(A,)``, ``(K, A)`` (named by ``labels``) or a mapping."""
    if isinstance(value, Mapping):
        series = _as_series(name, value)
        return {key: _vector(f"{name}[{key!r}]", array, num_angles)
                for key, array in series.items()}
    array = np.asarray(value)
    if array.ndim == 1:
        rows = [array]
    elif array.ndim == 2:
        rows = list(array)
    else:
        raise ValueError(
            f"`{name}` must be (A,), (K, A) or a mapping. Received: {name}.shape={array.shape}"
        )
    if labels is None:
        names = [f"series {i}" if len(rows) > 1 else "" for i in range(len(rows))]
    else:
        names = [labels] if isinstance(labels, str) else [str(label) for label in labels]
        if len(names) != len(rows):
            raise ValueError(
                f"`labels` must name the {len(rows)} series of `{name}`. "
                f"Received: labels={labels!r}"
            )
    return {key: _vector(name if len(rows) == 1 else f"{name}[{i}]", row, num_angles)
            for i, (key, row) in enumerate(zip(names, rows))}


def _draw_rotation_lines(ax, twin, angles, acc_series: dict, unc_series: dict,
                         uncertainty_label: str) -> list:
    """Accuracy (solid, circles) on ``ax`` and uncertainty (dashed, squares) on
    ``twin``; one series in two colours, several in one colour each. Returns
    the line handles for the legend."""
    single = len(acc_series) == 1
    handles = []
    for i, (name, acc) in enumerate(acc_series.items()):
        acc_color, unc_color = ("C0", "C3") if single else (f"C{i}", f"C{i}")
        (line,) = ax.plot(angles, acc, "-o", color=acc_color, markersize=4,
                          label=f"{_legend_name(name, '')} accuracy".strip())
        handles.append(line)
        if twin is not None:
            (line,) = twin.plot(angles, unc_series[name], "--s", color=unc_color, markersize=4,
                                alpha=0.8,
                                label=f"{_legend_name(name, '')} {uncertainty_label}".strip())
            handles.append(line)
    return handles


def rotation_curve(
    angles: ArrayLike,
    accuracy: Series,
    uncertainty: Series | None,
    path: PathLike,
    labels: str | Sequence[str] | None = None,
    uncertainty_label: str = "mean uncertainty (nats)",
    title: str | None = None,
) -> pathlib.Path:
    """Accuracy (left axis) and mean uncertainty (right axis) against rotation.

    Accuracy is a solid line with circles, uncertainty a dashed line with
    squares on the twin axis. One series: accuracy in blue and uncertainty in
    red, each axis coloured like its line; several series: one colour per
    series. The legend sits below the axes, where it hides no point.

    Args:
        angles: Rotation angles in degrees, shape ``(A,)``.
        accuracy: Accuracy at each angle: ``(A,)`` for one series, ``(K, A)``
            for ``K`` series, or a mapping ``{series name: (A,)}``.
        uncertainty: Mean uncertainty at each angle, in the same form as
            ``accuracy`` (with the same names), or None to draw accuracy only.
        path: Where to write the PNG.
        labels: Series names when ``accuracy`` is an array: one name for
            ``(A,)`` or ``K`` names for ``(K, A)``. Ignored for mappings.
        uncertainty_label: Label of the right axis, e.g. "mean epistemic
            uncertainty (nats)".
        title: Figure title; default "Accuracy and uncertainty under rotation".

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: If a series does not have the length of ``angles``, the
            names of ``accuracy`` and ``uncertainty`` differ, or ``labels``
            does not match the number of series.
    """
    angles = _vector("angles", angles)
    num_angles = angles.shape[0]

    acc_series = _named_series("accuracy", accuracy, labels, num_angles)
    unc_series = (_named_series("uncertainty", uncertainty, labels, num_angles)
                  if uncertainty is not None else {})
    if unc_series and list(unc_series) != list(acc_series):
        raise ValueError(
            "`accuracy` and `uncertainty` must name the same series in the same order. "
            f"Received: {list(acc_series)} and {list(unc_series)}"
        )

    figure = _new_figure(7.0, 4.5)
    ax = figure.subplots()
    twin = ax.twinx() if unc_series else None
    single = len(acc_series) == 1
    # one series: accuracy and uncertainty in two colours, matched by their axes;
    # several: a colour per series, accuracy solid and uncertainty dashed
    acc_axis_color, unc_axis_color = ("C0", "C3") if single else ("black", "black")
    handles = _draw_rotation_lines(ax, twin, angles, acc_series, unc_series,
                                   uncertainty_label)
    ax.set_xlabel("rotation angle (degrees)")
    ax.set_ylabel("accuracy", color=acc_axis_color)
    ax.tick_params(axis="y", colors=acc_axis_color)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if twin is not None:
        twin.set_ylabel(uncertainty_label, color=unc_axis_color)
        twin.tick_params(axis="y", colors=unc_axis_color)
        twin.set_ylim(bottom=0)
    # below the axes, so that it never hides a point (the 90-degree end included)
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
                  fontsize=8)
    ax.set_title(
        title if title is not None else "Accuracy and uncertainty under rotation"
    )
    return _save(figure, path)


def _checked_predictions(images, probs, labels, samples, class_names):
    """The arguments of `sample_predictions` as arrays, checked against each other.

    Returns:
        ``(images (N, H, W[, 3|4]), probs (N, C) float64, labels or None,
        samples (S, N, C) float64 or None, class_names (C,))``.
    """
    images = np.asarray(images)
    probs = np.asarray(probs, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (3, 4))):
        raise ValueError(
            "`images` must have shape (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4). "
            f"Received: images.shape={np.shape(images)}"
        )
    if probs.ndim != 2 or probs.shape[0] != images.shape[0] or probs.shape[1] == 0:
        raise ValueError(
            "`probs` must have shape (N, C) with N the number of images. "
            f"Received: probs.shape={probs.shape}, images.shape={images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"`images` must not be empty. Received: images.shape={images.shape}")
    num_classes = probs.shape[1]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"`labels` must be integers of shape ({images.shape[0]},). "
                f"Received: labels.shape={labels.shape}, labels.dtype={labels.dtype}"
            )
    if samples is not None:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 3 or samples.shape[1:] != probs.shape or samples.shape[0] == 0:
            raise ValueError(
                f"`samples` must have shape (S, {probs.shape[0]}, {num_classes}) to match probs. "
                f"Received: samples.shape={samples.shape}"
            )
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must hold {num_classes} names. Received: {len(class_names)} names"
        )
    return images, probs, labels, samples, class_names


def _bar_colors(prob, label, num_classes: int) -> list:
    """Grey bars; the predicted class blue (red when wrong), the true class green."""
    predicted = int(np.argmax(prob))
    colors = ["0.65"] * num_classes
    colors[predicted] = "C0"
    if label is not None and 0 <= label < num_classes:
        if int(label) != predicted:
            colors[predicted] = "C3"  # wrong prediction in red
        colors[int(label)] = "C2"  # true class in green
    return colors


def _draw_image(ax, image, prob, label, class_names) -> None:
    """One image, titled with the predicted class (its probability) and the true one."""
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    predicted = int(np.argmax(prob))
    heading = f"pred {class_names[predicted]} ({prob[predicted]:.2f})"
    if label is not None and 0 <= label < len(class_names):
        heading += f"\ntrue {class_names[int(label)]}"
    ax.set_title(heading, fontsize=8)


def _draw_distribution(ax, prob, label, draws, class_names, rng, first: bool) -> None:
    """Mean probability bars; with ``draws`` (S, C) up to 200 jittered sample
    dots and a 5-95 percentile line per class."""
    num_classes = len(class_names)
    positions = np.arange(num_classes)
    ax.bar(positions, prob, color=_bar_colors(prob, label, num_classes), width=0.8)
    if draws is not None:
        shown = draws[: min(draws.shape[0], 200)]
        jitter = rng.uniform(-0.25, 0.25, size=shown.shape)
        ax.scatter((positions + jitter).ravel(), shown.ravel(), s=3, color="black",
                   alpha=0.25, linewidths=0)
        low, high = np.percentile(draws, [5, 95], axis=0)
        ax.vlines(positions, low, high, color="black", linewidth=1)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(positions)
    ax.set_xticklabels(class_names, fontsize=6 if num_classes > 10 else 7)
    ax.tick_params(axis="y", labelsize=7)
    if first:
        ax.set_ylabel("probability", fontsize=8)
    else:
        ax.set_yticklabels([])


def sample_predictions(
    images: ArrayLike,
    probs: ArrayLike,
    path: PathLike,
    labels: ArrayLike | None = None,
    samples: ArrayLike | None = None,
    max_images: int = 8,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> pathlib.Path:
    """Images above the bar chart of their predictive distribution per class.

    One column per image (the first ``max_images``). The bars are the mean
    probabilities ``probs``; the predicted class is highlighted and, if
    ``labels`` is given, the true class is marked. With ``samples`` the
    individual Monte Carlo draws are scattered over the bars (jittered dots)
    and a line spans their 5th to 95th percentile, so a confident and a
    merely averaged prediction look different (as in the MNIST vs notMNIST
    figures of Bayesian CNN papers).

    Args:
        images: Shape ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``;
            floats in ``[0, 1]`` or integers in ``[0, 255]`` for colour.
        probs: Predictive probabilities, shape ``(N, C)``.
        path: Where to write the PNG.
        labels: Optional true classes, shape ``(N,)``; use -1 for inputs
            without a class (e.g. OOD images).
        samples: Optional per-sample probabilities, shape ``(S, N, C)``.
        max_images: Number of images to draw, ``> 0``.
        class_names: Optional ``C`` tick labels; default ``0 .. C-1``.
        title: Figure title; default "Predictive distributions".

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: If the shapes disagree, an array has the wrong rank, or
            ``max_images <= 0``.
    """
    check.positive_int("max_images", max_images)
    images, probs, labels, samples, class_names = _checked_predictions(
        images, probs, labels, samples, class_names)
    count = min(int(max_images), images.shape[0])
    figure = _new_figure(max(2.0 * count, 4.0), 4.6)
    axes = figure.subplots(
        2, count, squeeze=False, gridspec_kw={"height_ratios": [1, 1]}
    )
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    for i in range(count):
        _draw_image(axes[0, i], images[i], probs[i], None if labels is None else labels[i],
                    class_names)
        _draw_distribution(axes[1, i], probs[i], None if labels is None else labels[i],
                           None if samples is None else samples[:, i, :], class_names, rng,
                           first=i == 0)
    figure.suptitle(title if title is not None else "Predictive distributions")
    return _save(figure, path)


def sparsity_curve(
    sparsities: ArrayLike,
    accuracies: Series,
    path: PathLike,
    baseline: float | None = None,
    title: str | None = None,
) -> pathlib.Path:
    """Accuracy against the fraction of pruned weights, one line per criterion.

    Args:
        sparsities: Fractions of weights pruned, in ``[0, 1]``, shape ``(K,)``.
        accuracies: Accuracy at each sparsity: ``(K,)``, or a mapping
            ``{criterion: (K,)}`` such as ``{"magnitude": ..., "snr": ...}``.
        path: Where to write the PNG.
        baseline: Optional accuracy of the unpruned model, drawn as a
            horizontal dotted line.
        title: Figure title; default "Accuracy under pruning".

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: If a series does not have the length of ``sparsities`` or
            a sparsity lies outside ``[0, 1]``.
    """
    sparsities = _vector("sparsities", sparsities)
    if (sparsities < 0).any() or (sparsities > 1).any() or not np.isfinite(sparsities).all():
        raise ValueError(
            "`sparsities` must be fractions in [0, 1] (not percentages). "
            f"Received: sparsities={sparsities.tolist()}"
        )
    series = {name: _vector(f"accuracies[{name!r}]" if name else "accuracies", values,
                            sparsities.shape[0])
              for name, values in _as_series("accuracies", accuracies).items()}
    order = np.argsort(sparsities, kind="stable")
    figure = _new_figure(6.5, 4.5)
    ax = figure.subplots()
    for i, (name, values) in enumerate(series.items()):
        ax.plot(100 * sparsities[order], values[order], "-o", color=f"C{i}", markersize=4,
                label=_legend_name(name, "accuracy"))
    if baseline is not None:
        ax.axhline(float(baseline), color="0.3", linestyle=":", linewidth=1.2,
                   label=f"unpruned ({float(baseline):.3f})")
    ax.set_xlabel("sparsity (% of weights pruned)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    ax.set_title(title if title is not None else "Accuracy under pruning")
    return _save(figure, path)


# Dense figures (per-pixel maps, sparsification), drawn with the helpers above.
from ._dense_plots import sparsification_plot, uncertainty_maps  # noqa: E402
