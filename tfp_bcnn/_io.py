"""Atomic writes: a temporary path beside the target, then a rename.

The one atomic-write module of the package: used by the workflow (models,
reports), the main job, the plots and the export subsystem
(``tfp_bcnn.export`` may import from ``tfp_bcnn``, never the reverse).

What a writer killed at any point (even by SIGKILL) leaves behind:

* the target as it was before, complete and loadable, or the new one,
  complete: the new file (or directory) is written and flushed to disk
  (``fsync``) under a temporary name before it takes the target's name by one
  ``rename``. A directory that replaces an existing one is swapped in by one
  atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``); where that call is
  missing (other systems, some file systems) the old directory is renamed
  aside first, a window of two renames in which the target is absent.
* possibly a temporary file or directory beside the target, named
  ``.<target name>.<pid>-<random>.tmp[<suffix>]`` (or ``.old``). The next
  successful write of the same target removes those of writers that are no
  longer running (by pid); those of live processes, this one included, are
  left alone, so concurrent writers do not delete each other's work.

A failed write (an exception) removes its temporary path and leaves the
target untouched. A target folder that is read-only, or a full disk, gives an
``OSError`` of the same type and errno whose message names the path and the
cause in words ("the folder is not writable", "no space left on the device");
an error about a temporary name names the target instead (``/proc`` refuses
new files with "No such file or directory").

`check_output_path` is the check before the work: the commands call it for
every output before they load data or train, so a missing or read-only
folder stops them at once (the writers above still create missing parent
folders for library callers).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile

__all__ = [
    "atomic_directory",
    "atomic_file",
    "check_output_path",
    "refuse_directory",
    "remove_stale_temporaries",
    "write_bytes_atomic",
]

#: errno -> what it means for the user, for the errors a target can cause.
_TARGET_ERRORS = {
    errno.EACCES: "the folder is not writable (permission denied)",
    errno.EPERM: "the folder is not writable (operation not permitted)",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for the file system",
}
_STALE = re.compile(r"(?P<pid>\d+)-[A-Za-z0-9_]+\.(tmp|old)")


def _prepare(path) -> tuple[str, str, str]:
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:
        raise ValueError(f"The export path must name a file or folder. Received: path={path!r}")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise _clear_error(err, path) from err
    return path, parent, name


def _prefix(name: str) -> str:
    """Temporary names: ``.<name>.<pid>-<random>.tmp`` (see `remove_stale_temporaries`)."""
    return f".{name}.{os.getpid()}-"


def _names_target(err: OSError, path: str) -> bool:
    """Whether ``err`` is about ``path`` or one of its temporary names (see `_prefix`)."""
    name = os.path.basename(path)
    for filename in (err.filename, err.filename2):
        if filename is None:
            continue
        filename = os.path.abspath(os.fsdecode(filename))
        if filename == path or os.path.basename(filename).startswith(f".{name}."):
            return True
    return False


def _clear_error(err: OSError, path: str, label: str = "path") -> OSError:
    """``err`` reworded for the user when the target caused it, else ``err`` itself.

    The message names the target, never a temporary name: an error of an
    unlisted kind about a temporary path (``/proc`` refuses new files with
    "No such file or directory") keeps its errno and says the cause in words.
    """
    cause = _TARGET_ERRORS.get(err.errno)
    if cause is None:
        if not _names_target(err, path):
            return err
        cause = f"the folder does not accept new files ({(err.strerror or str(err)).lower()})"
    return type(err)(
        err.errno,
        f"Could not write {path!r}: {cause}; what was there is unchanged. "
        f"Received: {label}={path!r}",
    )


@contextlib.contextmanager
def _target_errors(path):
    """Rewords OSErrors that the target causes (read-only, full) with `_clear_error`."""
    try:
        yield
    except OSError as err:
        clear = _clear_error(err, path)
        if clear is err:
            raise
        raise clear from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    """Flushes a file, or a directory tree (files and folders), to disk."""
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                _fsync(os.path.join(root, name))
            _fsync_dir(root)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Makes a rename in ``path`` durable (not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path) -> list[str]:
    """Removes the temporary paths that dead writers left beside ``path``.

    Those are ``.<name>.<pid>-<random>.tmp*`` and ``.old`` entries of the
    target's folder whose ``pid`` is not a running process (a writer killed
    before it could clean up). Called after every successful atomic write.

    Returns:
        The paths removed.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    head = f".{name}."
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        if not entry.startswith(head):
            continue
        match = _STALE.match(entry[len(head) :])
        if match is None:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        full = os.path.join(parent, entry)
        with contextlib.suppress(OSError):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
            removed.append(full)
    return removed


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two paths (``renameat2(RENAME_EXCHANGE)``).

    Returns False where the call is unavailable (not Linux, an old C library,
    or a file system that does not support it); raises other errors.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), a, None, b)


def refuse_directory(path) -> None:
    """``ValueError`` naming ``path`` when it is an existing directory (an
    exporter calls it before a slow conversion whose bytes go to ``path``)."""
    if os.path.isdir(os.fspath(path)):
        raise ValueError(
            f"The export path is an existing directory. Received: path={os.fspath(path)!r}")


def write_bytes_atomic(path, data: bytes) -> str:
    """Writes ``data`` to ``path`` through a temporary file and ``os.replace``.

    Returns:
        The absolute path written.

    Raises:
        ValueError: ``path`` is an existing directory.
        OSError: the folder is read-only or the disk full (see the module
            docstring); ``path`` is left as it was.
    """
    path, parent, name = _prepare(path)
    refuse_directory(path)
    with _target_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=_prefix(name), suffix=".tmp", dir=parent)
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
    _fsync_dir(parent)
    remove_stale_temporaries(path)
    return path


@contextlib.contextmanager
def atomic_directory(path):
    """Context manager yielding a temporary directory that replaces ``path`` on success.

    The directory is created beside ``path`` (same file system, so renames are
    atomic). On a clean exit its files are flushed to disk, then it is
    swapped with an existing ``path`` in one atomic exchange and the old
    directory deleted (where the exchange is unavailable: ``path`` is renamed
    aside, the new directory renamed into place, the old one deleted; if the
    second rename fails the old directory is renamed back). On an exception
    the temporary directory is deleted and ``path`` is untouched.

    Raises:
        ValueError: ``path`` exists and is not a directory.
        OSError: the folder is read-only or the disk full (see the module
            docstring); ``path`` is left as it was.
    """
    path, parent, name = _prepare(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"The export path exists and is not a directory. Received: path={path!r}")
    with _target_errors(path):
        tmp = tempfile.mkdtemp(prefix=_prefix(name), suffix=".tmp", dir=parent)
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private (0700)
            _fsync(tmp)
            if os.path.isdir(path) and _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
            elif os.path.isdir(path):
                old = tempfile.mkdtemp(prefix=_prefix(name), suffix=".old", dir=parent)
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
    _fsync_dir(parent)
    remove_stale_temporaries(path)


@contextlib.contextmanager
def atomic_file(path):
    """Context manager yielding a temporary file path that replaces ``path`` on success.

    For writers that take a path (``model.save``, ``Path.write_text``): the
    temporary name keeps the suffix of ``path`` (Keras checks ``.keras``) and
    lives in the same folder. On a clean exit the file is flushed to disk and
    renamed over ``path``; on an exception it is removed and ``path`` is left
    as it was.

    Raises:
        OSError: the folder is read-only or the disk full (see the module
            docstring); ``path`` is left as it was.
    """
    path, parent, name = _prepare(path)
    suffix = os.path.splitext(name)[1]
    with _target_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=_prefix(name), suffix=f".tmp{suffix}", dir=parent)
        os.close(fd)
        os.remove(tmp)  # writers such as Keras refuse to overwrite or expect no file
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            _fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp)
                else:
                    os.remove(tmp)
            raise
    _fsync_dir(parent)
    remove_stale_temporaries(path)


#: What `check_output_path` checks, by the kind of output.
_KINDS = ("file", "folder", "files_in")


def _folder_of(path: str, kind: str, label: str) -> str:
    """The folder a write of ``path`` creates its temporary entries in (see `check_output_path`)."""
    if kind == "file" and os.path.isdir(path):
        raise ValueError(
            f"The output is an existing folder, not a file. Received: {label}={path!r}")
    if kind != "file" and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"The output exists and is not a folder. Received: {label}={path!r}")
    if kind == "files_in" and os.path.isdir(path):
        return path  # files are written into it
    return os.path.dirname(path)


def check_output_path(path, *, name: str = "path", kind: str = "file",
                      mkdir: bool = False) -> str:
    """Checks, before any work, that an output can be written at ``path``.

    A command that trains for minutes and then cannot save has wasted them:
    the commands call this for every output first. The folder the write
    creates its temporary entry in (the target's parent; for
    ``kind="files_in"``, ``path`` itself when it exists) must exist and accept
    a new file: a probe file is created there under the temporary naming of
    this module and removed at once. Nothing else is written, and nothing at
    all when the check fails.

    Args:
        path: the output path (str or ``os.PathLike``).
        name: the argument's name, for the message (``Received: name=...``).
        kind: ``"file"`` (a file that replaces ``path``), ``"folder"`` (a
            folder that replaces ``path`` whole, as a SavedModel) or
            ``"files_in"`` (a folder that files are written into, created if
            missing, as a report folder).
        mkdir: create the missing parent folders (the only thing written).

    Returns:
        The absolute path.

    Raises:
        ValueError: ``path`` is empty or names no file; a file output is an
            existing folder, or a folder output an existing file; the parent
            folder is missing (and ``mkdir`` is False) or is not a folder;
            ``kind`` is unknown.
        OSError: the folder is not writable (read-only, a special file
            system, full); the message names ``path``, never the probe.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}. Received: kind={kind!r}")
    text = os.fspath(path) if path is not None else ""
    if not text or not os.path.basename(os.path.abspath(text)):
        raise ValueError(f"The output must name a file or folder. Received: {name}={path!r}")
    full = os.path.abspath(text)
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        if os.path.exists(parent):
            raise ValueError(f"The folder of the output, {parent!r}, is a file. "
                             f"Received: {name}={text!r}")
        if not mkdir:
            raise ValueError(
                f"The folder of the output, {parent!r}, does not exist: create it first, or "
                f"ask for it to be created (--mkdir on the command line, mkdir=True in "
                f"Python). Received: {name}={text!r}")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as err:
            raise _clear_error(err, full, name) from err
    where = _folder_of(full, kind, name)
    try:
        fd, probe = tempfile.mkstemp(prefix=_prefix(os.path.basename(full)), suffix=".tmp",
                                     dir=where)
    except OSError as err:
        clear = _clear_error(err, full, name)
        if clear is err:  # an error about something else: still name the target
            clear = type(err)(err.errno, f"Could not write {full!r}: {err.strerror or err}. "
                                         f"Received: {name}={text!r}")
        raise clear from err
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(probe)
    return full
