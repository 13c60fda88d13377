"""Silence the native (C++) log lines that TensorFlow and LiteRT write to stderr.

TensorFlow writes its start-up notices (oneDNN, "Could not find cuda
drivers", CPU features, ``failed call to cuInit`` on a machine without a GPU
driver) and the TFLite converter's progress lines from C++ straight to file
descriptor 2. ``TF_CPP_MIN_LOG_LEVEL`` cannot hide the first ones (they are
written before absl's logging is initialised), and it is read once, when
TensorFlow loads, so nothing set later can hide the others. The only reliable
switch is to point descriptor 2 at ``/dev/null`` for the few calls that
print: `native_stderr_silenced` does that and restores it afterwards, also on
error (a Python exception still propagates and is printed as usual).

The package uses it around its own eager imports (``tfp_bcnn/__init__.py``,
together with TensorFlow's device discovery, where the cuInit line comes
from) and around the TFLite conversion. Set ``TFP_BCNN_VERBOSE=1`` to see
every line (`verbose` is then True and nothing is silenced).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["native_stderr_silenced", "verbose"]

#: Environment variable that turns the silencing off (any value but "", "0").
VERBOSE_ENV = "TFP_BCNN_VERBOSE"


def verbose() -> bool:
    """True when ``TFP_BCNN_VERBOSE`` is set to something other than ``""``/``"0"``."""
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


@contextlib.contextmanager
def native_stderr_silenced():
    """Within the block, writes to file descriptor 2 go to ``/dev/null``.

    Python's ``sys.stderr`` is flushed first, so nothing written before the
    block is lost. One thread at a time (a lock): others wait. Does nothing
    when `verbose` is True or descriptor 2 cannot be duplicated (e.g. a
    process started without one).
    """
    if verbose():
        yield
        return
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


#: Held while descriptor 2 is redirected: two threads swapping it at once would
#: leave it pointing at /dev/null (the second saves /dev/null as "stderr").
#: Re-entrant, so a silenced block may call another.
_LOCK = threading.RLock()
