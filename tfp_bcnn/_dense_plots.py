"""Figures for dense (per-pixel) predictions: uncertainty maps and sparsification curves.

``tfp_bcnn.plots`` re-exports `uncertainty_maps` and `sparsification_plot`;
like every figure there they are drawn on an Agg canvas (no pyplot), written
atomically as a PNG and return the path.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as check
from ._dense_metrics import Sparsification
from ._figures import new_figure, save

__all__ = ["sparsification_plot", "uncertainty_maps"]


def _maps(prediction, target) -> list[tuple[str, np.ndarray, str]]:
    """``[(title, (N, H, W) values, colormap, vmax)]``: prediction, error, aleatoric,
    epistemic (vmax None: the largest value shown)."""
    mean = np.asarray(prediction.mean)
    if hasattr(prediction, "predictive_entropy"):  # classes: argmax and entropies
        pred = mean.argmax(-1)
        # classes on one fixed colour scale (0 .. C-1), whatever the images show
        maps = [("prediction", pred, "tab20", mean.shape[-1] - 1)]
        if target is not None:
            maps.append(("error", (pred != np.asarray(target)).astype(float), "Reds", 1.0))
        return maps + [("aleatoric (nats)", np.asarray(prediction.aleatoric), "magma", None),
                       ("epistemic (nats)", np.asarray(prediction.epistemic), "magma", None)]
    maps = [("prediction", mean[..., 0], "gray", 1.0)]
    if target is not None:
        maps.append(("|error|", np.abs(np.asarray(target) - mean)[..., 0], "Reds", None))
    return maps + [
        ("aleatoric std", np.sqrt(prediction.aleatoric_variance)[..., 0], "magma", None),
        ("epistemic std", np.sqrt(prediction.epistemic_variance)[..., 0], "magma", None)]


def uncertainty_maps(images: ArrayLike, prediction, path, target: ArrayLike | None = None,
                     num_images: int = 4, title: str | None = None) -> pathlib.Path:
    """Image / prediction / error / aleatoric / epistemic maps side by side, one row an image.

    Args:
        images: ``(N, H_in, W_in, C_in)`` inputs (the first channel is shown).
        prediction: a dense ``Prediction`` (``mean (N, H, W, C)``,
            ``aleatoric`` and ``epistemic`` ``(N, H, W)``: segmentation) or
            ``RegressionPrediction`` (``mean``, ``aleatoric_variance``,
            ``epistemic_variance`` ``(N, H, W, C)``: the first channel shown
            as stds).
        path: where to write the PNG.
        target: optional ``(N, H, W)`` labels or ``(N, H, W, C)`` true values:
            adds the error map.
        num_images: rows, the first ``num_images`` images (>= 1).
        title: figure title.

    Returns:
        ``path`` as a `pathlib.Path`.

    Raises:
        ValueError: ``num_images`` below 1 or ``images`` not ``(N, H, W, C)``.
    """
    num_images = check.positive_int("num_images", num_images)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError("`images` must be (N, H, W, C). Received: "
                         f"images.shape={images.shape}")
    maps = _maps(prediction, target)
    rows = min(num_images, len(images))
    cols = 1 + len(maps)
    figure = new_figure(2.2 * cols, 2.2 * rows + (0.4 if title else 0))
    axes = np.asarray(figure.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        axes[r, 0].imshow(images[r, ..., 0], cmap="gray", vmin=0, vmax=1)
        for c, (name, values, cmap, vmax) in enumerate(maps, start=1):
            vmax = vmax if vmax is not None else (float(np.max(values[:rows])) or 1.0)
            shown = axes[r, c].imshow(values[r], cmap=cmap, vmin=0, vmax=vmax,
                                      interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
                figure.colorbar(shown, ax=axes[:, c], shrink=0.6)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        figure.suptitle(title)
    return save(figure, path)


def sparsification_plot(curves: Sparsification | Mapping[str, Sparsification], path,
                        title: str | None = None) -> pathlib.Path:
    """Sparsification curves with the oracle and the random ranking (Ilg et al. 2018).

    Args:
        curves: one `tfp_bcnn.metrics.Sparsification` or ``{name: curve}``
            (e.g. entropy, aleatoric, epistemic of one model: they share the
            oracle and the random line, drawn from the first).
        path: where to write the PNG.
        title: figure title; default "Sparsification".

    Returns:
        ``path`` as a `pathlib.Path`; the legend gives each curve's AUSE.

    Raises:
        ValueError: an empty mapping or an entry that is not a `Sparsification`.
    """
    if isinstance(curves, Sparsification):
        curves = {"uncertainty": curves}
    if not curves or not all(isinstance(c, Sparsification) for c in curves.values()):
        raise ValueError("`curves` must be a Sparsification or a non-empty mapping of them. "
                         f"Received: curves={curves!r}"[:300])
    figure = new_figure(6.5, 4.5)
    ax = figure.subplots()
    first = next(iter(curves.values()))
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(100 * c.fractions, c.curve, "-", color=f"C{i}",
                label=f"{name} (AUSE {c.ause:.4f})")
    ax.plot(100 * first.fractions, first.oracle, "k--", label="oracle (by error)")
    ax.plot(100 * first.fractions, first.random, ":", color="0.4",
            label=f"random (AUSE {first.ause_random:.4f})")
    ax.set_xlabel("pixels removed, most uncertain first (%)")
    ax.set_ylabel("mean error of the remaining pixels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title if title is not None else "Sparsification")
    return save(figure, path)
