"""Atomic writes: a temporary path beside the target, then a rename.

The one atomic-write module of the package: used by the workflow (models,
reports), the main job, the plots and the export subsystem
(``tfp_bcnn.export`` may import from ``tfp_bcnn``, never the reverse).

A failed export leaves the previous artifact intact and no partial file: the
new file (or directory) is complete before it takes the target's name, and the
temporary one is removed on any error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

__all__ = ["atomic_directory", "atomic_file", "write_bytes_atomic"]


def _prepare(path) -> tuple[str, str, str]:
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:
        raise ValueError(f"The export path must name a file or folder. Received: path={path!r}")
    os.makedirs(parent, exist_ok=True)
    return path, parent, name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, data: bytes) -> str:
    """Writes ``data`` to ``path`` through a temporary file and ``os.replace``.

    Returns:
        The absolute path written.

    Raises:
        ValueError: ``path`` is an existing directory.
    """
    path, parent, name = _prepare(path)
    if os.path.isdir(path):
        raise ValueError(f"The export path is an existing directory. Received: path={path!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private (0600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(path):
    """Context manager yielding a temporary directory that replaces ``path`` on success.

    The directory is created beside ``path`` (same file system, so renames are
    atomic). On a clean exit, an existing ``path`` is first renamed aside, the
    new directory renamed into place, then the old one deleted; if the second
    rename fails the old directory is renamed back. On an exception the
    temporary directory is deleted and ``path`` is untouched.

    Raises:
        ValueError: ``path`` exists and is not a directory.
    """
    path, parent, name = _prepare(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"The export path exists and is not a directory. Received: path={path!r}")
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private (0700)
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.rmdir(old)  # keep the unique name, free it for the rename
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path):
    """Context manager yielding a temporary file path that replaces ``path`` on success.

    For writers that take a path (``model.save``, ``Path.write_text``): the
    temporary name keeps the suffix of ``path`` (Keras checks ``.keras``) and
    lives in the same folder. On an exception it is removed and ``path`` is
    left as it was.
    """
    path, parent, name = _prepare(path)
    stem, suffix = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=parent)
    os.close(fd)
    os.remove(tmp)  # writers such as Keras refuse to overwrite or expect no file
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
