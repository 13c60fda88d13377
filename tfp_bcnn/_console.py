"""Progress output that suits where it goes: bars on a terminal, plain lines in logs.

Keras' progress bar (``verbose=1``) redraws itself with carriage returns,
backspaces and ANSI colour codes whenever ``posix`` is loaded, that is
always on Linux, even when stdout is a file or a pipe (CI logs, ``| tee``):
three epochs of ``fit`` leave about 12 KB of control characters there.
``verbose=2`` prints one plain line per epoch instead (and, for
``tfp_bcnn.predict``, one line when done). The command line and the main job
ask `progress_verbosity` which one to use.
"""

from __future__ import annotations

import sys

__all__ = ["interactive", "progress_verbosity"]


def interactive(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stdout``, looked up at call time) is a terminal.

    Returns:
        True for a terminal; False for a file, a pipe, a closed stream or a
        stream without ``isatty``.
    """
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress_verbosity(verbose: int | None = None, stream=None) -> int:
    """The Keras ``verbose`` to use: the one asked for, else one that suits ``stream``.

    Args:
        verbose: 0 (silent), 1 (progress bar) or 2 (one line per epoch), as
            the user asked; None chooses: 1 on a terminal, 2 otherwise.
        stream: where the progress goes; default ``sys.stdout``.

    Returns:
        ``verbose`` when given, else 1 if `interactive` ``(stream)`` else 2.

    Raises:
        ValueError: ``verbose`` is not None, 0, 1 or 2.
    """
    if verbose is None:
        return 1 if interactive(stream) else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be None, 0, 1 or 2. Received: verbose={verbose!r}")
    return int(verbose)
