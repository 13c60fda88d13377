"""Shared scaffolding of the benchmarks: timers, seeds, statistics, markdown, training.

Every benchmark script imports this module (``from _common import ...``: the
scripts run as ``python benchmarks/NAME.py``, so ``benchmarks/`` is on
``sys.path``) instead of writing its own copy:

* `mean_std` formats a figure over seeds one way everywhere: ``mean +- std``
  with the sample standard deviation (``ddof=1``), the value alone for one
  seed; `markdown_table` writes a Markdown table;
* `emit` prints a benchmark's markdown block and writes it atomically
  (``tfp_bcnn._io``) to the file ``run_all.py`` passed with ``--markdown``;
  `write_json` does the same for raw results;
* `Timer` measures wall time with ``time.perf_counter``; `median_time`
  times a callable after a warm-up call;
* `seeds` gives the seeds of a run; `set_seed` fixes Python, NumPy and the
  Keras backend at once;
* `recipe` is ``models.RECIPE`` with a benchmark's departures, and
  `recipe_note` says them in words for the block ("a benchmark that departs
  from the recipe says so"); `train` trains a model through the workflow
  steps (``models.compile_bayesian`` then ``workflow.fit``), as ``tfp-bcnn
  train`` does; `mc_accuracy` and `spearman` are the two small statistics
  several benchmarks need.

TFLite latency is not here: ``benchmarks/_latency.py`` (``time_tflite_files``)
times every file of a table in one interleaved loop.

Importing this module does not import TensorFlow or Keras (the command-line
start-up benchmark measures processes that must not pay for them); the
functions that need them import them when called.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "Timer",
    "emit",
    "log",
    "markdown_table",
    "mc_accuracy",
    "mean_std",
    "median_time",
    "recipe",
    "recipe_note",
    "seeds",
    "set_seed",
    "spearman",
    "train",
    "write_json",
]

#: The symbol between a mean and its standard deviation in every block.
PLUS_MINUS = "+-"


# ----------------------------------------------------------------- statistics
def mean_std(values: Iterable[float], digits: int = 3) -> str:
    """``"mean +- std"`` of ``values`` with the sample standard deviation (ddof=1).

    ``std = sqrt(sum((v - mean)^2) / (n - 1))``: the spread of the figure
    between seeds, an estimate of the population's std (``ddof=0`` would
    understate it for the 3 to 5 seeds a benchmark runs).

    Args:
        values: the figure of each seed (one or more finite numbers).
        digits: decimals of both numbers.

    Returns:
        ``"0.973 +- 0.004"``; the value alone (``"0.973"``) for one value.

    Raises:
        ValueError: if ``values`` is empty.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError(f"mean_std needs at least one value. Received: values={vals!r}")
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {PLUS_MINUS} {statistics.stdev(vals):.{digits}f}"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (ties: by position).

    The Pearson correlation of the ranks ``argsort(argsort(.))``.

    Returns:
        A float in ``[-1, 1]``.

    Raises:
        ValueError: if the lengths differ or are below 2.
    """
    import numpy as np

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError(
            f"spearman needs two sequences of the same length >= 2. Received: "
            f"len(a)={a.size}, len(b)={b.size}"
        )
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def mc_accuracy(model, x, y, num_samples: int) -> float:
    """Accuracy of the Monte Carlo predictive mean (``workflow.mc_accuracy``)."""
    from tfp_bcnn import workflow

    return workflow.mc_accuracy(model, x, y, num_samples=num_samples)


# ------------------------------------------------------------------- markdown
def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub Markdown table; cells are written with ``str``.

    Args:
        header: one title per column.
        rows: sequences of ``len(header)`` cells.

    Returns:
        The table, lines joined by ``"\\n"``, no trailing newline.

    Raises:
        ValueError: if a row has a different number of cells than ``header``.
    """
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                f"Row {i} has {len(row)} cells, the header {len(header)}. Received: row={row!r}"
            )
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def emit(markdown_path, text: str) -> str:
    """Print a benchmark's markdown block and write it (atomically) for ``run_all.py``.

    Args:
        markdown_path: the ``--markdown`` file, or None to print only.
        text: the block.

    Returns:
        ``text`` with exactly one trailing newline, as written.
    """
    text = text.rstrip("\n") + "\n"
    print(text, flush=True)
    if markdown_path:
        from tfp_bcnn._io import write_bytes_atomic

        write_bytes_atomic(markdown_path, text.encode())
    return text


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (no-op for a None path)."""
    if path:
        from tfp_bcnn._io import write_bytes_atomic

        write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def log(*args) -> None:
    """Progress to stderr (``run_all.py`` keeps it out of the report)."""
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- time
class Timer:
    """Wall time of a ``with`` block: ``with Timer() as t: ...; t.seconds``.

    ``seconds`` is ``time.perf_counter()`` at exit minus at entry (while the
    block runs: the time so far).
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._end: float | None = None

    def __enter__(self) -> Timer:
        self._start, self._end = time.perf_counter(), None
        return self

    def __exit__(self, *exc) -> None:
        self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self._start is None:
            return 0.0
        return (self._end if self._end is not None else time.perf_counter()) - self._start


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    For in-process Keras / TensorFlow calls (tracing happens in the warm-up).
    TFLite files are timed with ``_latency.time_tflite_files`` instead, all
    files of a table interleaved in one loop.

    Raises:
        ValueError: if ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"median_time needs repeats >= 1. Received: repeats={repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        times.append(t.seconds)
    return statistics.median(times)


# --------------------------------------------------------------------- seeds
def seeds(n: int, first: int = 0) -> list[int]:
    """The seeds of a run of ``n`` repetitions: ``[first, ..., first + n - 1]``.

    Raises:
        ValueError: if ``n < 1``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"seeds needs a positive integer count. Received: n={n!r}")
    return list(range(first, first + int(n)))


def set_seed(seed: int) -> None:
    """Fix Python's, NumPy's and the Keras backend's random state (``keras.utils``)."""
    import keras

    keras.utils.set_random_seed(int(seed))


# -------------------------------------------------------------------- recipe
def recipe(**overrides) -> dict:
    """``models.RECIPE`` with a benchmark's departures (None values are ignored).

    Args:
        **overrides: keys of ``RECIPE`` (``learning_rate``, ``epochs``,
            ``batch_size``, ``kl_beta``, ``kl_warmup_epochs``).

    Returns:
        A new dict.

    Raises:
        ValueError: for a key that the recipe does not have.
    """
    from tfp_bcnn.models import RECIPE

    unknown = sorted(set(overrides) - set(RECIPE))
    if unknown:
        raise ValueError(f"Not a key of models.RECIPE: {unknown}. Received: {overrides!r}")
    out = dict(RECIPE)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def recipe_note(used: Mapping, why: str = "") -> str:
    """One sentence for a block: the recipe used, and where it departs from ``RECIPE``.

    Args:
        used: the recipe the benchmark trained with (e.g. from `recipe`).
        why: the reason for the departures (e.g. "fewer epochs: 2 cores").

    Returns:
        e.g. ``"Training: models.RECIPE (Adam 0.002, batch 64, 20 epochs)."``
        or ``"... departs from models.RECIPE: epochs 8 (recipe 20); why."``
    """
    from tfp_bcnn.models import RECIPE

    text = (f"Training: Adam {used['learning_rate']:g}, batch {used['batch_size']}, "
            f"{used['epochs']} epochs")
    diffs = [f"{k} {used[k]:g} (recipe {RECIPE[k]:g})" for k in RECIPE
             if k in used and not _same(used[k], RECIPE[k])]
    if not diffs:
        return text + ": `models.RECIPE`."
    return (text + "; departs from `models.RECIPE`: " + ", ".join(diffs)
            + (f" ({why})" if why else "") + ".")


def _same(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


def train(model, x, y, *, recipe: Mapping | None = None, seed: int | None = None,
          validation=None, verbose: int = 0, extra_callbacks: Sequence = ()):
    """Compile and fit ``model`` through the workflow steps, as ``tfp-bcnn train`` does.

    ``models.compile_bayesian(model, learning_rate)`` (Adam, sparse
    cross-entropy, the ``kl`` metric) unless the model is compiled already,
    then ``fit`` with ``workflow.fit_callbacks`` (``TerminateOnNaN``) and, for
    a Bayesian model, ``models.recipe_callbacks(recipe)`` (the recipe's KL
    weighting, as ``workflow.fit`` does for ``RECIPE``) for ``epochs`` in
    batches of ``batch_size``.

    Args:
        model: a classifier ending in a softmax.
        x, y: training images and integer labels.
        recipe: a mapping like ``models.RECIPE`` (default: it).
        seed: if given, `set_seed` before compiling (fixes the shuffling).
        validation: ``(x_val, y_val)`` or None.
        verbose: Keras' verbosity.
        extra_callbacks: more Keras callbacks.

    Returns:
        ``(model, seconds)``: the trained model and the wall time of ``fit``.
    """
    from tfp_bcnn import models, workflow
    from tfp_bcnn.kl import bayesian_layers

    used = dict(models.RECIPE if recipe is None else recipe)
    if seed is not None:
        set_seed(seed)
    if not getattr(model, "compiled", False):
        models.compile_bayesian(model, used["learning_rate"])
    bayesian = any(True for _ in bayesian_layers(model))
    # the workflow's callbacks, with this recipe's KL weighting (not always RECIPE's)
    callbacks = workflow.fit_callbacks(False, extra_callbacks=extra_callbacks)
    if bayesian:
        callbacks += models.recipe_callbacks(used)
    with Timer() as t:
        model.fit(x, y, epochs=int(used["epochs"]), batch_size=int(used["batch_size"]),
                  verbose=verbose, callbacks=callbacks, validation_data=validation)
    return model, t.seconds
