"""One lock file per download target: a second stemsplit process waits for the first.

Three ways to hold it, the first the platform has:

* POSIX: ``fcntl.flock`` on the lock file;
* Windows: ``msvcrt.locking`` on its first byte (no ``fcntl`` there);
* elsewhere: creating the lock file with ``O_CREAT | O_EXCL`` holds it, removing it lets
  go; the file names its owner (``temporaries.owner_tag``), and a lock left by a process
  that is gone (same host, that pid no longer running; another host's after
  ``FOREIGN_AGE_SECONDS``) is taken over.

The OS drops the first two when their process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

from .. import temporaries
from .locations import stemsplit_cache_dir

log = logging.getLogger("stemsplit.cache")

POLL_SECONDS = (0.05, 0.5)
"""Where the lock cannot be waited on (msvcrt, lock files): first and longest pause
between tries."""

ORPHAN_SECONDS = 30.0
"""A lock file whose owner cannot be read (its creator stopped before writing it) is taken
over once it is this old."""


def lock_path_for(target: Path) -> Path:
    """``$STEMSPLIT_CACHE/locks/<name>.<hash of the absolute path>.lock``."""
    absolute = os.path.abspath(target)
    key = hashlib.sha1(absolute.encode()).hexdigest()[:12]
    return stemsplit_cache_dir() / "locks" / f"{Path(absolute).name}.{key}.lock"


@contextlib.contextmanager
def file_lock(target: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock for ``target`` (a lock file under STEMSPLIT_CACHE/locks).
    Waits for another holder, calling ``on_wait`` first. Where locking is impossible (a
    read-only cache, a file system without locks) it goes on unlocked: downloads stay
    correct through their temporary names, they may just happen twice."""
    lock_path = lock_path_for(target)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.debug("no lock for %s: %s", target, error)
        yield
        return
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        holder = _flock(fcntl, lock_path, on_wait)
    else:
        try:
            import msvcrt
        except ImportError:
            msvcrt = None  # type: ignore[assignment]
        holder = (_msvcrt_lock(msvcrt, lock_path, on_wait) if msvcrt is not None
                  else _exclusive_file(lock_path.with_name(lock_path.name + "ed"), on_wait))
    with holder:
        yield


def _open(lock_path: Path) -> int | None:
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        log.debug("no lock %s: %s", lock_path, error)
        return None


@contextlib.contextmanager
def _flock(fcntl: ModuleType, lock_path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    descriptor = _open(lock_path)
    if descriptor is None:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _pauses() -> Iterator[float]:
    pause, longest = POLL_SECONDS
    while True:
        yield pause
        pause = min(longest, pause * 2)


_BUSY = (errno.EACCES, errno.EAGAIN, getattr(errno, "EDEADLOCK", errno.EDEADLK), errno.EDEADLK)
"""What ``msvcrt.locking(LK_NBLCK)`` raises while another handle holds the byte."""


@contextlib.contextmanager
def _msvcrt_lock(msvcrt: ModuleType, lock_path: Path,
                 on_wait: Callable[[], None] | None) -> Iterator[None]:
    """The first byte of the lock file, locked with ``msvcrt.locking``. Its blocking mode
    gives up after ten seconds, so this polls the non-blocking one instead."""
    descriptor = _open(lock_path)
    if descriptor is None:
        yield
        return
    locked = False
    try:
        pauses = _pauses()
        while True:
            os.lseek(descriptor, 0, os.SEEK_SET)  # the region starts at the file position
            try:
                msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
                locked = True
                break
            except OSError as error:
                if error.errno not in _BUSY:
                    log.debug("no lock %s: %s", lock_path, error)
                    break
            if on_wait is not None:
                on_wait()
                on_wait = None
            time.sleep(next(pauses))
        yield
    finally:
        if locked:
            with contextlib.suppress(OSError):
                os.lseek(descriptor, 0, os.SEEK_SET)
                msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        os.close(descriptor)


def _abandoned(lock_path: Path) -> bool:
    """Whether the lock file's owner is gone (see the module's text)."""
    try:
        owner = temporaries.owner_of(lock_path.read_text(encoding="utf-8", errors="replace"))
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return False  # let go just now: the next try takes it
    except OSError:
        return False
    if owner is None:
        return age > ORPHAN_SECONDS
    host, pid = owner
    if host == temporaries.host_name():
        return not temporaries.process_alive(pid)
    return age > temporaries.FOREIGN_AGE_SECONDS


@contextlib.contextmanager
def _exclusive_file(lock_path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """The lock is the file itself: made with O_EXCL, holding its owner, removed at the end."""
    tag = temporaries.owner_tag()
    pauses = _pauses()
    held = False
    while True:
        try:
            descriptor = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _abandoned(lock_path):
                # Rename before removing, so that of two processes that both found it
                # abandoned only one removes it (the other's rename fails). A process
                # slow enough to rename its successor's fresh lock instead costs a second
                # download at worst, never a wrong file.
                stale = lock_path.with_name(f"{lock_path.name}.{tag}.stale")
                with contextlib.suppress(OSError):
                    os.replace(lock_path, stale)
                    os.unlink(stale)
                    log.info("took over %s from a process that is gone", lock_path.name)
                continue
            if on_wait is not None:
                on_wait()
                on_wait = None
            time.sleep(next(pauses))
            continue
        except OSError as error:  # read-only, or no such file system feature
            log.debug("no lock %s: %s", lock_path, error)
            break
        try:
            os.write(descriptor, tag.encode())
        finally:
            os.close(descriptor)
        held = True
        break
    try:
        yield
    finally:
        if held:
            with contextlib.suppress(OSError):
                if lock_path.read_text(encoding="utf-8", errors="replace") == tag:
                    lock_path.unlink()
