"""Writing outputs safely: atomically (a reader never sees half a file, a crash never
leaves one), and one writer per run folder at a time."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:  # advisory locks; absent on Windows, where folders are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

#: the lock file a writer holds in its folder
LOCK_NAME = ".rnnkit.lock"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; when the block ends without an
    error the file is flushed to disk and renamed over ``path`` (one atomic step), else
    it is removed and ``path`` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _nearly_full(path.parent)  # measured before the partial file is removed
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and (
                full or "PytorchStreamWriter" in str(e) or "inline_container" in str(e))):
            raise write_error(path, e, full) from e
        raise


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 2 ** 20
    except OSError:
        return False


def write_error(path: Path, error: Exception, full: bool = False) -> OSError:
    """An OSError saying in one line which file could not be written and why (a full
    disk's error from torch's writer names neither), and that what the file held
    before is intact."""
    if full or getattr(error, "errno", None) == errno.ENOSPC:
        reason = "no space left on the device"
    else:
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0][:200]
    kept = "its previous content is intact" if path.exists() else "nothing was written"
    result = OSError(f"could not write {path}: {reason}; {kept}")
    result.errno = errno.ENOSPC if full else getattr(error, "errno", None)
    return result


def writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """``folder``, created if need be, after a test that a file can be made in it: an
    error then comes before the work whose results it would lose."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise type(e)(f"{what} {folder} cannot be written: {e.strerror or e}") from None
    return folder


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class FolderLock:
    """An advisory lock (``flock``) on a folder's lock file, held by the one process that
    writes into the folder: the operating system releases it when that process ends,
    however it ends, so a killed run never leaves a stale lock. A second writer is
    refused with a message naming the holder's pid (after waiting up to ``wait``
    seconds, calling ``waiting(pid)`` once when it starts to wait)."""

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self._file = None
        #: the pid of the process that held the lock when it was last refused
        self.holder = None

    def acquire(self, wait: float = 0.0, waiting=None) -> "FolderLock":
        if fcntl is None or self._file is not None:
            return self
        path = self.folder / LOCK_NAME
        f = open(path, "a+", encoding="utf-8")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                first_try = self.holder is None
                self.holder = f.read().strip() or "unknown"
                if time.monotonic() >= deadline:
                    f.close()
                    raise BlockingIOError(
                        f"{self.folder} is in use by another rnnkit {self.what} (pid "
                        f"{self.holder}); wait for it to end, or choose another --out") from None
                if first_try and waiting is not None:
                    waiting(self.holder)
                time.sleep(0.1)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self):
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
