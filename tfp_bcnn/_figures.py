"""The two helpers every figure of `tfp_bcnn.plots` is made with: a canvas and a save.

A `matplotlib.figure.Figure` on its own Agg canvas (never pyplot: no backend
change, no window, nothing left in pyplot's registry) and an atomic PNG write
(``tfp_bcnn._io.atomic_file``). Shared by ``plots`` and ``_dense_plots``.
"""

from __future__ import annotations

import os
import pathlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._io import atomic_file

__all__ = ["DPI", "new_figure", "save"]

#: Resolution of every PNG.
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width x height`` inches on an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | os.PathLike) -> pathlib.Path:
    """Writes ``figure`` as a PNG to ``path`` atomically and returns the path."""
    path = pathlib.Path(os.fspath(path))
    with atomic_file(path) as tmp, open(tmp, "xb") as handle:
        figure.savefig(handle, format="png", dpi=DPI)
    return path
