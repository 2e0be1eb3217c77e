"""Temporary files that cannot outlive their process, or name it so a later run can sweep them.

Two kinds:

* **Unnamed** (``unnamed_file``): scratch data nobody else opens by name (the decoded mix,
  an ensemble's stems, a stem spooled before encoding). On POSIX the file is unlinked as it
  is opened; on Windows it is opened delete-on-close. Either way the OS reclaims it when the
  process ends, even by SIGKILL or a crash.
* **Owned** (``owned_name``): a file that must have a name, because ffmpeg writes it or it is
  renamed into place at the end (``.vocals.wav.<owner>.part``, a copy of stdin). Its name
  carries its owner: ``stemsplit~HOST~PID~RANDOM``. ``sweep`` removes such files when their
  owner is gone: the same host and that process no longer running, or another host's file
  older than ``FOREIGN_AGE_SECONDS`` (on shared storage, another machine's live run must not
  lose its work). A run never removes a live process's files.

Standard library only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import OutputError

_SEEK_LOCK = threading.Lock()

OWNER_MARK = "stemsplit~"
FOREIGN_AGE_SECONDS = 24 * 3600
"""Another host's temporary is swept only once it is this old (no run takes a day per file)."""

_OWNED = re.compile(r"stemsplit~([^~/\\]+)~(\d+)~[0-9a-f]+")


def host_name() -> str:
    """This machine's name as owner names carry it (no ``~`` or path separators)."""
    name = socket.gethostname() or "localhost"
    return re.sub(r"[~/\\\s]", "_", name)[:64]


def owner_tag() -> str:
    """``stemsplit~HOST~PID~RANDOM``: a new tag naming this process."""
    return f"{OWNER_MARK}{host_name()}~{os.getpid()}~{secrets.token_hex(4)}"


def owned_name(prefix: str, suffix: str = "") -> str:
    """A file name holding a fresh owner tag: ``PREFIX<owner>SUFFIX``."""
    return f"{prefix}{owner_tag()}{suffix}"


def owner_of(name: str) -> tuple[str, int] | None:
    """(host, pid) from a name holding an owner tag, or None."""
    match = _OWNED.search(name)
    return (match.group(1), int(match.group(2))) if match else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when unsure)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its files
    return True


def _windows_process_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    # os.kill(pid, 0) would terminate the process on Windows.
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    except Exception:
        return True


def is_abandoned(path: Path, *, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary whose owner is gone (see the module's rule)."""
    owner = owner_of(path.name)
    if owner is None:
        return False
    host, pid = owner
    if host == host_name():
        return not process_alive(pid)
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > FOREIGN_AGE_SECONDS


def abandoned_in(folder: Path, prefix: str = "") -> Iterator[Path]:
    """The abandoned temporaries directly in ``folder`` whose names start with ``prefix``."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and OWNER_MARK in entry.name:
            path = Path(entry.path)
            if is_abandoned(path):
                yield path


def sweep(folder: Path, prefix: str = "") -> list[Path]:
    """Remove the abandoned temporaries directly in ``folder`` (see ``abandoned_in``);
    returns what was removed. Never raises."""
    removed = []
    for path in abandoned_in(folder, prefix):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def temporary_folder() -> Path:
    """Where unnamed scratch files and owned TMPDIR files go (``TMPDIR``)."""
    return Path(tempfile.gettempdir())


def sweep_temporary_folder() -> list[Path]:
    """Remove this tool's abandoned files from ``TMPDIR`` (a copy of stdin, the hidden
    ``.part`` of a stem written to stdout)."""
    return sweep(temporary_folder())


def unnamed_file(directory: str | Path | None = None, *, what: str = "a temporary file"
                 ) -> BinaryIO:
    """A read-write binary file with no name (see the module's text), in ``directory`` or
    ``TMPDIR``."""
    try:
        return tempfile.TemporaryFile(prefix="stemsplit-", dir=directory)  # type: ignore[return-value]
    except OSError as error:
        where = directory if directory is not None else temporary_folder()
        raise OutputError(f"cannot create {what} in {where}: {error.strerror}",
                          hint="set TMPDIR to a writable folder with room") from None


class PositionedReader:
    """Reads a file from ``start`` in order, with a position of its own, so that several
    readers (and a writer that has finished) can share one open file."""

    def __init__(self, file: BinaryIO, start: int = 0) -> None:
        self._file, self._position = file, start
        self._fd = file.fileno()

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the file)."""
        parts, wanted = [], size
        while wanted > 0:
            if hasattr(os, "pread"):
                data = os.pread(self._fd, wanted, self._position)
            else:  # pragma: no cover - Windows: one shared file position
                with _SEEK_LOCK:
                    self._file.seek(self._position)
                    data = self._file.read(wanted)
            if not data:
                break
            parts.append(data)
            self._position += len(data)
            wanted -= len(data)
        return b"".join(parts)
