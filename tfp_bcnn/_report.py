"""Printing of the steps' results: Markdown tables, figures and evaluation reports.

`print_table`, `fmt`, `metric_rows`, `report_value`, `print_report` and
`accuracy_change`, used by ``tfp_bcnn.workflow`` (which re-exports them under
the same names) and the main job (``demo.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["accuracy_change", "fmt", "metric_rows", "print_report", "print_table", "report_value"]


def print_table(rows: Sequence[Sequence], headers: Sequence[str], out=None) -> None:
    """Print ``rows`` as a Markdown table with columns padded to their widest cell.

    Args:
        rows: sequences of cells (any values; printed with ``str``).
        headers: one header per column.
        out: a text stream; default ``sys.stdout`` (looked up at call time).
    """
    out = sys.stdout if out is None else out
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    print(line, file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |", file=out)


def fmt(value, digits: int = 4) -> str:
    """A float with ``digits`` decimals, None as "n/a"; anything else with ``str``.

    None is what a report holds for a figure that does not apply (the
    epistemic scores of a deterministic model).
    """
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metric_rows(report: dict) -> list[tuple[str, str]]:
    """The ``(label, key)`` rows of a report's table, in the order printed.

    ``key`` is a top-level key of the report or ``"ood/<set>/<key>"``; the
    labels use `tfp_bcnn.plots.SCORE_LABELS`, the one name of each score.
    """
    from .plots import SCORE_LABELS

    rows = [("accuracy", "accuracy"), ("NLL", "nll"), ("Brier", "brier"), ("ECE", "ece"),
            (f"mean {SCORE_LABELS['aleatoric']}, nats", "aleatoric"),
            (f"mean {SCORE_LABELS['epistemic']}, nats", "epistemic")]
    for name in report["ood"]:
        rows.append((f"OOD AUROC {name}, {SCORE_LABELS['epistemic']}",
                     f"ood/{name}/auroc_epistemic"))
        rows.append((f"OOD AUROC {name}, {SCORE_LABELS['predictive_entropy']}",
                     f"ood/{name}/auroc_entropy"))
    return rows


def report_value(report: dict, key: str):
    """``report[key]``, or the nested value for an ``"ood/<set>/<key>"`` key."""
    if key.startswith("ood/"):
        _, name, field = key.split("/", 2)
        return report["ood"][name][field]
    return report[key]


def print_report(report: dict, title: str) -> None:
    """Print the metrics, OOD AUROCs and rotation curve of a report as tables.

    Figures that do not apply (the epistemic scores of a deterministic model)
    read "n/a".
    """
    from .plots import SCORE_LABELS

    print(f"\n{title}")
    print_table([(label, fmt(report_value(report, key))) for label, key in metric_rows(report)],
                ["metric", "value"])
    if report.get("deterministic"):
        print("(deterministic model: every Monte Carlo sample is the same, so its epistemic "
              "figures are n/a)")
    if report["rotation"]:
        print("\nrotated test set")
        print_table([(int(r["angle"]), fmt(r["accuracy"]), fmt(r["epistemic"]))
                     for r in report["rotation"]],
                    ["angle", "accuracy", f"mean {SCORE_LABELS['epistemic']}"])


def accuracy_change(before: float, after: float, what: str) -> str:
    """One sentence on how ``what`` changed the test accuracy, in points.

    A drop of more than one point comes with the two ways to win it back.

    >>> accuracy_change(0.940, 0.863, "pruning to 90%")  # doctest: +NORMALIZE_WHITESPACE
    'pruning to 90% lowered the test accuracy by 7.7 points (0.9400 -> 0.8630); fine-tune
    longer (prune --epochs) or prune less (--final-sparsity) to win it back'
    """
    points = 100 * (after - before)
    change = f"({before:.4f} -> {after:.4f})"
    if abs(points) < 0.05:
        return f"{what} left the test accuracy unchanged {change}"
    if points > 0:
        return f"{what} raised the test accuracy by {points:.1f} points {change}"
    sentence = f"{what} lowered the test accuracy by {-points:.1f} points {change}"
    if points < -1:
        sentence += ("; fine-tune longer (prune --epochs) or prune less (--final-sparsity) "
                     "to win it back")
    return sentence
