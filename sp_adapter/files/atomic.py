"""Atomic file writes: readers see the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from sp_adapter.errors import DiskFullError


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an error it was raised from is ENOSPC (torch.save reports a
    failed write as a ``RuntimeError`` whose context is the ``OSError``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        current = current.__cause__ or current.__context__
    return False


def _disk_full_error(path: Path) -> DiskFullError:
    error = DiskFullError(f"no space left on device while writing {path}: free some space "
                          f"on {path.parent} and run again")
    error.errno = errno.ENOSPC
    return error


def _mode_for(path: Path) -> int:
    """The permissions the written file gets: those of the file it replaces, else those
    ``open()`` gives a new file (0o666 less the umask; the temporary file is 0o600)."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary handle to a temporary file beside ``path``; on success it is flushed,
    synced and renamed over ``path`` (with the permissions of the file it replaces, or of
    a newly created file); on failure it is removed and ``path`` is untouched. A full disk
    raises :class:`~sp_adapter.errors.DiskFullError` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _disk_full(err):
            raise _disk_full_error(path) from err
        raise


def write_atomic(path: str | os.PathLike, content: bytes | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``content`` (bytes, or a function that writes to a handle) atomically."""
    with atomic_open(path) as handle:
        if isinstance(content, bytes):
            handle.write(content)
        else:
            content(handle)
    return Path(path)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (a log), flushed before returning; a full disk raises
    :class:`~sp_adapter.errors.DiskFullError` naming ``path``."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
    except OSError as err:
        if _disk_full(err):
            raise _disk_full_error(path) from err
        raise
