"""File integrity: sha256 against every digest known for a file, remembered digests.

A file's expected sha256 comes from weights.toml (a full digest, or a prefix its publisher
put in the file name), from its Hugging Face blob name (the Hub names LFS blobs by their
sha256, small git files by their git blob id), or else from ``$STEMSPLIT_CACHE/checksums.json``,
where the digest of every file stemsplit downloaded or checked is remembered with its size
and mtime. At load time a file whose size and mtime still match what was remembered is
trusted without hashing (cheap); anything else is hashed. A file that fails is deleted and
said so (a warning on the ``stemsplit.cache`` logger).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .locations import stemsplit_cache_dir
from .locks import file_lock

CHUNK_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")

log = logging.getLogger("stemsplit.cache")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def digests_of(path: Path, git: bool) -> tuple[str, str | None]:
    """sha256, and with ``git`` the git blob id (sha1 of "blob <size>\\0" + content)."""
    digest = hashlib.sha256()
    blob = None
    with open(path, "rb") as file:
        if git:
            blob = hashlib.sha1(b"blob %d\0" % os.fstat(file.fileno()).st_size)
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return digest.hexdigest(), blob.hexdigest() if blob is not None else None


def hf_blob_digest(path: Path) -> tuple[str, str] | None:
    """For a file in a Hugging Face cache: ("sha256" | "git-sha1", hex) from its blob name.

    The Hub's etag, which huggingface_hub names the blob by, is the sha256 of an LFS file and
    the git blob id of a small one. None when ``path`` is not a link into a ``blobs`` folder.
    """
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        return None
    if real.parent.name != "blobs" or real == Path(os.path.abspath(path)):
        return None
    if _SHA256.fullmatch(real.name):
        return "sha256", real.name
    if _GIT_SHA1.fullmatch(real.name):
        return "git-sha1", real.name
    return None


class ChecksumStore:
    """``$STEMSPLIT_CACHE/checksums.json``: the sha256, size and mtime of each file stemsplit
    downloaded or checked, keyed by its real path. Best effort: an unwritable cache only means
    that files are hashed again next time."""

    VERSION = 1

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or stemsplit_cache_dir() / "checksums.json"
        self._entries: dict[str, dict] | None = None

    def _read(self) -> dict[str, dict]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            entries = document.get("files", {}) if isinstance(document, dict) else {}
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def entries(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    @staticmethod
    def key(path: Path) -> str:
        return os.path.realpath(path)

    def get(self, path: Path) -> dict | None:
        entry = self.entries.get(self.key(path))
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            return entry
        return None

    def _update(self, change: Callable[[dict[str, dict]], None]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(self.path):
                entries = self._read()
                change(entries)
                temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
                try:
                    temporary.write_text(json.dumps({"version": self.VERSION, "files": entries},
                                                    indent=1, sort_keys=True), encoding="utf-8")
                    os.replace(temporary, self.path)
                finally:
                    with contextlib.suppress(OSError):
                        temporary.unlink()
            self._entries = entries
        except OSError as error:
            log.debug("checksum store %s not updated: %s", self.path, error)

    def record(self, path: Path, sha256: str, source: str | None = None) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return
        entry = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                 "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if source:
            entry["source"] = source
        key = self.key(path)
        self._update(lambda entries: entries.__setitem__(key, entry))

    def forget(self, paths: list[Path]) -> None:
        keys = {self.key(path) for path in paths}
        if keys & set(self.entries):
            self._update(lambda entries: [entries.pop(key, None) for key in keys])


@dataclass
class FileCheck:
    """The verdict on one local file."""

    path: Path
    ok: bool
    detail: str  # what was compared, or what is wrong
    sha256: str | None = None  # the file's digest when it was hashed now
    expected: str | None = None
    expected_from: str | None = None
    hashed: bool = False


def expected_digest(path: Path, recorded: str | None, store: ChecksumStore | None = None,
                    recorded_from: str = "weights.toml") -> tuple[str | None, str | None]:
    """The best known sha256 (or prefix) for ``path`` and where it comes from."""
    if recorded is not None and len(recorded) == 64:
        return recorded, recorded_from
    blob = hf_blob_digest(path)
    if blob is not None and blob[0] == "sha256":
        return blob[1], "Hugging Face blob name"
    entry = (store or ChecksumStore()).get(path)
    if entry is not None:
        return entry["sha256"], "remembered at download"
    if recorded is not None:
        return recorded, recorded_from
    return None, None


def check_file(path: Path, recorded: str | None = None, *, store: ChecksumStore | None = None,
               thorough: bool = True, source: str | None = None,
               recorded_from: str = "weights.toml") -> FileCheck:
    """Compare ``path`` with every digest known for it (weights.toml's ``recorded``, its HF blob
    name, the remembered one). ``thorough`` False trusts a file whose size and mtime match the
    remembered ones without hashing it. A file with no known digest is hashed and remembered.
    """
    store = store if store is not None else ChecksumStore()
    try:
        stat = os.stat(path)
    except OSError as error:
        return FileCheck(path, False, f"unreadable ({error.strerror or error})")
    entry = store.get(path)
    blob = hf_blob_digest(path)
    if entry is not None and not thorough:
        consistent = (recorded is None or entry["sha256"].startswith(recorded)) and (
            blob is None or blob[0] != "sha256" or entry["sha256"] == blob[1])
        if consistent and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return FileCheck(path, True, "unchanged since it was last checked",
                             expected=entry["sha256"], expected_from="remembered at download")
        if consistent and entry.get("size") != stat.st_size:
            return FileCheck(path, False, f"size {stat.st_size} bytes, expected {entry.get('size')}",
                             expected=entry["sha256"], expected_from="remembered at download")
    try:
        actual, git_id = digests_of(path, git=blob is not None and blob[0] == "git-sha1")
    except OSError as error:
        return FileCheck(path, False, f"unreadable ({error.strerror or error})")
    expectations: list[tuple[str, str, str]] = []  # (kind, value, origin)
    if recorded is not None:
        origin = recorded_from
        expectations.append(("sha256", recorded, origin))
    if blob is not None:
        expectations.append((blob[0], blob[1], "its Hugging Face blob name"))
    if entry is not None:
        expectations.append(("sha256", entry["sha256"], "the digest remembered at download"))
    for kind, value, origin in expectations:
        got = actual if kind == "sha256" else git_id or ""
        if not got.startswith(value):
            label = "git blob id" if kind == "git-sha1" else "sha256"
            return FileCheck(path, False, f"{label} {_short(got, value)}, expected "
                             f"{_short(value, value)} from {origin}", sha256=actual,
                             expected=value, expected_from=origin, hashed=True)
    if expectations:
        kind, value, origin = expectations[0]
        detail = f"matches {origin}" + (" (a prefix)" if len(value) < 40 else "")
    else:
        detail = "no digest was known; remembered now"
        value, origin = actual, "remembered now"
    store.record(path, actual, source)
    return FileCheck(path, True, detail, sha256=actual, expected=value, expected_from=origin,
                     hashed=True)


def _short(digest: str, expected: str) -> str:
    """A digest as long as the expected one, but at most 16 digits (and "...")."""
    length = min(max(len(expected), 8), 16)
    return digest[:length] + ("..." if len(digest) > length else "")


def discard(path: Path, store: ChecksumStore | None = None) -> bool:
    """Delete a bad cached file (for an HF snapshot entry, its blob too). False if it stays."""
    targets = [path]
    blob = hf_blob_digest(path)
    if blob is not None:
        targets.append(Path(os.path.realpath(path)))
    removed = True
    for target in targets:
        try:
            target.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            removed = False
    (store or ChecksumStore()).forget(targets)
    return removed


def reject(check: FileCheck, store: ChecksumStore, then: str = "") -> str:
    """Delete a file that failed ``check``, say so (a warning), and return that line."""
    deleted = discard(check.path, store)
    text = f"{check.path} fails its checksum ({check.detail}); " + (
        "deleted" if deleted else "could not be deleted")
    log.warning(text + then)
    return text


