"""Start-up time of the ``tfp-bcnn`` command: help and argument errors.

The console script parses its arguments in ``_tfp_bcnn_cli`` before anything
imports ``tfp_bcnn`` (whose ``__init__`` imports Keras and TensorFlow
eagerly). Measured side by side, interleaved, in fresh processes:

* baseline, the old order: ``import tfp_bcnn`` first, then parse ``--help``
  (what ``tfp-bcnn --help`` cost when the entry point was ``tfp_bcnn.cli``);
* ``tfp-bcnn --help``;
* ``tfp-bcnn train --epochs -1`` (an argument error: exit status 2).

Each is run ``--repeats`` times; the table gives the medians and the ratio to
the baseline. Run::

    python benchmarks/cli_startup.py [--repeats 5] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys

from _common import Timer, emit, markdown_table

BASELINE = ("import tfp_bcnn, _tfp_bcnn_cli\n"
            "try:\n    _tfp_bcnn_cli.main(['--help'])\nexcept SystemExit:\n    pass\n")


def commands() -> dict[str, list[str]]:
    script = shutil.which("tfp-bcnn", path=os.path.dirname(sys.executable)) or "tfp-bcnn"
    return {
        "baseline: import tfp_bcnn, then parse --help": [sys.executable, "-c", BASELINE],
        "tfp-bcnn --help": [script, "--help"],
        "tfp-bcnn train --epochs -1 (error, exit 2)": [script, "train", "--epochs", "-1"],
    }


def run(repeats: int = 5) -> dict:
    """``{command label: [seconds per run]}``, the commands interleaved, and the
    machine's 1-minute load average before and after (``"load"``)."""
    env = {k: v for k, v in os.environ.items() if k != "TFP_BCNN_VERBOSE"}
    times = {label: [] for label in commands()}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for label, argv in commands().items():
            with Timer() as t:
                subprocess.run(argv, capture_output=True, env=env, check=False)
            times[label].append(t.seconds)
    load.append(os.getloadavg()[0])
    return {"times": times, "load": load}


def markdown(results: dict) -> str:
    times = results["times"]
    labels = list(times)
    base = statistics.median(times[labels[0]])
    repeats = len(times[labels[0]])
    before, after = results["load"]
    lines = [f"Median wall time of {repeats} fresh processes each, run interleaved, on a "
             f"machine shared with other jobs (load average {before:.1f} before, {after:.1f} "
             "after, on 2 cores): the load inflates every figure, the ratio is the result.",
             ""]
    rows = [[label, f"{statistics.median(t):.2f}", f"{min(t):.2f} - {max(t):.2f}",
             f"{statistics.median(t) / base:.3f}"] for label, t in times.items()]
    return "\n".join(lines) + "\n" + markdown_table(
        ["command", "median (s)", "min - max (s)", "time / baseline"], rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    emit(args.markdown, markdown(run(args.repeats)))


if __name__ == "__main__":
    main()
