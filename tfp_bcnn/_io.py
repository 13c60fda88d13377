"""Atomic file writes: a failed write never leaves a partial or missing file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path, *, directory: bool = False):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary file (or directory) keeps the suffix of ``path`` (Keras
    checks ``.keras``) and lives in the same folder, so the final
    ``os.replace`` is atomic. On any exception it is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp",
                               dir=path.parent)
    os.close(fd)
    os.remove(tmp)
    tmp = Path(tmp + path.suffix) if path.suffix else Path(tmp)
    try:
        yield tmp
        if directory and path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
