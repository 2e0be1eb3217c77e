"""One lock file per download target: a second stemsplit process waits for the first."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

from .locations import stemsplit_cache_dir

log = logging.getLogger("stemsplit.cache")


@contextlib.contextmanager
def file_lock(target: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on a lock file for ``target`` (under STEMSPLIT_CACHE/locks,
    or beside the checksum store). Waits for another holder, calling ``on_wait`` first. Where
    locking is impossible (read-only cache, no fcntl) it goes on unlocked: downloads stay
    correct through their temporary names, they may just happen twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    absolute = os.path.abspath(target)
    key = hashlib.sha1(absolute.encode()).hexdigest()[:12]
    lock_path = stemsplit_cache_dir() / "locks" / f"{Path(absolute).name}.{key}.lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        log.debug("no lock for %s: %s", target, error)
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


