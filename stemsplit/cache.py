"""Turning a model into verified local files, and keeping those files healthy.

Where the files of a demucs bag can come from, in the order they are tried:

1. ``repo_dir`` (``--repo``, demucs' local repository layout): ``<name>.yaml`` plus
   ``<sig>.safetensors``, ``<sig>.th`` or ``<sig>-<sha8>.th``; nothing else is tried.
2. Already on this machine, no network: the standard Hugging Face cache (``HF_HUB_CACHE``,
   ``HF_HOME``; what ``huggingface_hub`` and ``demucs`` use) holding ``<bag_file>`` and
   ``<sig>.safetensors``; then demucs' legacy cache ``$TORCH_HOME/hub/checkpoints/
   <sig>-<sha8>.th``.
3. Unless offline (``--offline``, ``STEMSPLIT_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): a download
   from the Hugging Face Hub into its cache, then from the legacy URLs into the torch hub folder.

Plain URL files (``[[models.X.files]]`` in weights.toml, for families without a Hub repo) live in
``$STEMSPLIT_CACHE/weights`` (default ``$XDG_CACHE_HOME/stemsplit``).

Integrity. A file's expected sha256 comes from weights.toml (a full digest, or the 8-digit prefix
in a legacy name), from its Hugging Face blob name (the Hub names LFS blobs by their sha256, small
git files by their git blob id), or else from ``$STEMSPLIT_CACHE/checksums.json``, where the
digest of every file stemsplit downloaded or checked is remembered with its size and mtime. At
load time a file whose size and mtime still match what was remembered is trusted without hashing
(cheap); anything else is hashed. ``verify_model`` always re-hashes. A file that fails is
deleted and said so (a warning on the ``stemsplit`` logger) and fetched again when online.
Downloads stream to a unique temporary name and are renamed into place only once verified; a
lock file per target (``fcntl.flock``, under ``$STEMSPLIT_CACHE/locks``) makes a second process
wait for the first instead of downloading the same file again (huggingface_hub locks its own).

No torch import here, and huggingface_hub only when downloading: ``stemsplit models`` and its
subcommands use the stdlib-only lookups below and must stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .checkpoint import CHECKPOINT_SUFFIXES, BagDescription, read_bag_yaml
from .errors import ChecksumError, ModelError, WeightsUnavailableError
from .registry import ModelFile, ModelSpec, legacy_name_prefix

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(filename, bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""
DownloadProgress = ProgressCallback

CONNECT_TIMEOUT = 4.0  # seconds to open a connection (DNS included for the probes)
READ_TIMEOUT = 30.0  # seconds without a byte before a download is abandoned
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
DOWNLOAD_ATTEMPTS = 2  # a download that fails its checksum is fetched once more

_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")

log = logging.getLogger("stemsplit.cache")


@dataclass
class ResolvedBag:
    """Local checkpoint files of one bag, with the bag's weights and segment."""

    member_paths: list[Path]
    weights: list[list[float]] | None
    segment: float | None
    origin: str  # where the files came from, for messages ("Hugging Face cache (...)")
    downloaded: list[Path] = field(default_factory=list)  # fetched by this call


# --------------------------------------------------------------------------- locations


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _xdg_cache() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(variable)
        if value:
            return _expand(value)
    home = os.environ.get("HF_HOME") or os.path.join(_xdg_cache(), "huggingface")
    return _expand(home) / "hub"


def torch_hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where demucs (torch.hub) keeps the legacy ``.th`` files."""
    home = os.environ.get("TORCH_HOME") or os.path.join(_xdg_cache(), "torch")
    return _expand(home) / "hub" / "checkpoints"


def stemsplit_cache_dir() -> Path:
    """``$STEMSPLIT_CACHE``, default ``$XDG_CACHE_HOME/stemsplit``: everything not on the Hub."""
    value = os.environ.get("STEMSPLIT_CACHE")
    return _expand(value) if value else _expand(_xdg_cache()) / "stemsplit"


def url_files_dir() -> Path:
    """Where plain URL downloads (``[[models.X.files]]``) are kept."""
    return stemsplit_cache_dir() / "weights"


def cache_locations() -> dict[str, Path]:
    """Every folder stemsplit reads weights from or writes them to, by role."""
    return {
        "huggingface": hf_cache_dir(),
        "stemsplit": stemsplit_cache_dir(),
        "torch_hub": torch_hub_checkpoints_dir(),
    }


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def _truthy(variable: str) -> bool:
    return os.environ.get(variable, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_from_environment() -> bool:
    """``HF_HUB_OFFLINE`` set to 1/true/yes/on, as huggingface_hub reads it."""
    return _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")


def offline_reason(offline: bool | None = None) -> str:
    """Why the network is off, for messages ("" when it is not).

    ``HF_HUB_OFFLINE`` always wins (huggingface_hub would refuse anyway); ``offline`` True is
    ``--offline`` unless STEMSPLIT_OFFLINE explains it; None consults STEMSPLIT_OFFLINE.
    """
    if offline_from_environment():
        return "HF_HUB_OFFLINE is set"
    if offline is False:
        return ""
    if _truthy("STEMSPLIT_OFFLINE"):
        return "STEMSPLIT_OFFLINE is set"
    return "--offline" if offline else ""


def _online_hint(reason: str) -> str:
    if "HF_HUB_OFFLINE" in reason:
        return "unset HF_HUB_OFFLINE"
    if "STEMSPLIT_OFFLINE" in reason:
        return "unset STEMSPLIT_OFFLINE"
    return "drop --offline"


# --------------------------------------------------------------------------- checksums


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digests_of(path: Path, git: bool) -> tuple[str, str | None]:
    """sha256, and with ``git`` the git blob id (sha1 of "blob <size>\\0" + content)."""
    digest = hashlib.sha256()
    blob = None
    with open(path, "rb") as file:
        if git:
            blob = hashlib.sha1(b"blob %d\0" % os.fstat(file.fileno()).st_size)
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return digest.hexdigest(), blob.hexdigest() if blob is not None else None


def _expected_prefix(filename: str) -> str | None:
    """The sha256 prefix in ``<sig>-<hex>.th`` (demucs' naming), if the name carries one."""
    return legacy_name_prefix(filename)


def _verify(path: Path, expected: str) -> str | None:
    """None when ``path``'s sha256 starts with ``expected``, else its actual prefix."""
    try:
        actual = sha256_of(path)[: len(expected)]
    except OSError as error:
        raise ModelError(f"{path}: unreadable ({error.strerror or error})") from None
    return None if actual == expected else actual


def _check_named_checksum(path: Path) -> None:
    """A ``<sig>-<sha>.th`` must hash to its name: ChecksumError otherwise."""
    expected = _expected_prefix(path.name)
    if expected is None:
        return
    actual = _verify(path, expected)
    if actual is not None:
        raise ChecksumError(
            f"{path}: sha256 starts with {actual}, not {expected} as its name says",
            hint="the file is damaged or was modified; fetch it again",
        )


def _sig_of(path: Path) -> str:
    if path.suffix == ".th" and "-" in path.stem:
        return path.stem.rsplit("-", 1)[0]
    return path.stem


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


def expected_digest(path: Path, recorded: str | None,
                    store: ChecksumStore | None = None) -> tuple[str | None, str | None]:
    """The best known sha256 (or prefix) for ``path`` and where it comes from."""
    if recorded is not None and len(recorded) == 64:
        return recorded, "weights.toml"
    blob = hf_blob_digest(path)
    if blob is not None and blob[0] == "sha256":
        return blob[1], "Hugging Face blob name"
    entry = (store or ChecksumStore()).get(path)
    if entry is not None:
        return entry["sha256"], "remembered at download"
    if recorded is not None:
        return recorded, "weights.toml" if not legacy_name_prefix(path.name) else "file name"
    return None, None


def check_file(path: Path, recorded: str | None = None, *, store: ChecksumStore | None = None,
               thorough: bool = True, source: str | None = None) -> FileCheck:
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
        actual, git_id = _digests_of(path, git=blob is not None and blob[0] == "git-sha1")
    except OSError as error:
        return FileCheck(path, False, f"unreadable ({error.strerror or error})")
    expectations: list[tuple[str, str, str]] = []  # (kind, value, origin)
    if recorded is not None:
        origin = "its name" if recorded == legacy_name_prefix(path.name) else "weights.toml"
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


def _discard(path: Path, store: ChecksumStore | None = None) -> bool:
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


def _reject(check: FileCheck, store: ChecksumStore, then: str = "") -> str:
    """Delete a file that failed ``check``, say so (a warning), and return that line."""
    deleted = _discard(check.path, store)
    text = f"{check.path} fails its checksum ({check.detail}); " + (
        "deleted" if deleted else "could not be deleted")
    log.warning(text + then)
    return text


# --------------------------------------------------------------------------- locks


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


# --------------------------------------------------------------------------- local folders


def _find_in_folder(folder: Path, sig: str) -> Path | None:
    """``<sig>.safetensors``, ``<sig>.th`` or ``<sig>-<sha>.th`` in ``folder`` (sha checked)."""
    safetensors = folder / f"{sig}.safetensors"
    if safetensors.is_file():
        return safetensors
    candidates = [folder / f"{sig}.th"] if (folder / f"{sig}.th").is_file() else []
    candidates += [
        path
        for path in sorted(folder.glob(f"{_glob_escape(sig)}-*.th"))
        if path.is_file() and "-" not in path.stem[len(sig) + 1:]
    ]
    if not candidates:
        return None
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise ModelError(
            f"several checkpoints for {sig} in {folder}: {names}", hint="delete all but one"
        )
    path = candidates[0]
    _check_named_checksum(path)
    return path


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _bag_from_folder(folder: Path, bag_file: Path | None, members: list[str], origin: str,
                     weights: list[list[float]] | None, segment: float | None,
                     model: str, hint: str) -> ResolvedBag:
    if bag_file is not None:
        bag = read_bag_yaml(bag_file)
        members, weights, segment = bag.members, bag.weights, bag.segment
    paths, missing = [], []
    for sig in members:
        path = _find_in_folder(folder, sig)
        if path is None:
            missing.append(sig)
        else:
            paths.append(path)
    if missing:
        raise WeightsUnavailableError(
            f"{model}: {_members_phrase(missing, members)} not found in {folder} "
            f"(looked for <sig>.safetensors, <sig>.th and <sig>-<sha256 prefix>.th)",
            hint=hint,
        )
    return ResolvedBag(member_paths=paths, weights=weights, segment=segment, origin=origin)


_WEIGHTS_HINT = "put the members the bag file lists beside it"


def resolve_weights_path(path: Path | str) -> ResolvedBag:
    """``--weights PATH``: a checkpoint file, a bag ``.yaml``, or a folder holding a bag.

    A folder is a bag: the members its single ``*.yaml`` lists, or else every checkpoint in it
    (one per signature, ``.safetensors`` preferred), in name order.
    """
    path = _expand(str(path))
    if not path.exists():
        raise ModelError(f"--weights {path}: no such file or folder")
    if path.is_file():
        if path.suffix in (".yaml", ".yml"):
            return _bag_from_folder(path.parent, path, [], str(path), None, None, path.stem, _WEIGHTS_HINT)
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise ModelError(
                f"--weights {path}: expected a .safetensors or .th checkpoint, a bag .yaml, or a folder"
            )
        _check_named_checksum(path)
        return ResolvedBag(member_paths=[path], weights=None, segment=None, origin=str(path))
    bag_files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(bag_files) > 1:
        names = ", ".join(p.name for p in bag_files)
        raise ModelError(
            f"--weights {path}: several bag files ({names})",
            hint=f"pass one of them, e.g. --weights {bag_files[0]}",
        )
    if bag_files:
        return _bag_from_folder(path, bag_files[0], [], str(path), None, None, path.name, _WEIGHTS_HINT)
    sigs: list[str] = []
    for checkpoint in sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()):
        if _sig_of(checkpoint) not in sigs:
            sigs.append(_sig_of(checkpoint))
    if not sigs:
        raise ModelError(f"--weights {path}: the folder holds no .safetensors or .th checkpoint")
    return _bag_from_folder(path, None, sigs, str(path), None, None, path.name, _WEIGHTS_HINT)


# --------------------------------------------------------------------------- Hugging Face


def hf_repo_folder(repo_id: str, hub_dir: Path | None = None) -> Path:
    """``<hub cache>/models--<owner>--<name>``."""
    return (hub_dir or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def _hf_cached(repo_id: str, filename: str, cache_dir: Path) -> Path | None:
    """The file at revision main in the local HF cache, read the way huggingface_hub's
    ``try_to_load_from_cache`` does (``refs/main`` -> ``snapshots/<commit>/<file>``), with the
    standard library only: no network, and fast enough for ``stemsplit models``."""
    folder = hf_repo_folder(repo_id, cache_dir)
    try:
        commit = (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not commit or "/" in commit or commit.startswith("."):
        return None
    path = folder / "snapshots" / commit / filename
    return path if path.is_file() else None


def _progress_bar_class(filename: str, progress: ProgressCallback | None) -> type | None:
    """A tqdm class for huggingface_hub that reports to ``progress`` and draws nothing.

    Without a callback huggingface_hub draws its own bar, and only on a terminal.
    """
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Forward(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            kwargs["disable"] = True
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")
            super().__init__(*args, **kwargs)
            progress(filename, self._done, self._total)

        def update(self, n=1):  # noqa: ANN001
            self._done += int(n or 0)
            progress(filename, self._done, self._total)
            return super().update(n)

    return _Forward


def _hf_download(repo_id: str, filename: str, cache_dir: Path, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import hf_hub_download

    # huggingface_hub logs each retry ("Trying to resume download...") on stderr; the
    # outcome is ours to report, in one line.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.CRITICAL)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                cache_dir=str(cache_dir),
                endpoint=hf_endpoint(),
                etag_timeout=max(CONNECT_TIMEOUT, 10.0),
                tqdm_class=_progress_bar_class(filename, progress),
            )
        )
    finally:
        hub_logger.setLevel(level)


def _hf_fetch(repo_id: str, filename: str, recorded: str | None, cache_dir: Path,
              progress: ProgressCallback | None, store: ChecksumStore) -> Path:
    """Download one file into the HF cache and check it against its blob name (the Hub's
    etag) and weights.toml; a bad copy is deleted and fetched once more."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        path = _hf_download(repo_id, filename, cache_dir, progress)
        check = check_file(path, recorded, store=store, thorough=True, source=f"hf:{repo_id}/{filename}")
        if check.ok:
            return path
        last = attempt == DOWNLOAD_ATTEMPTS
        _reject(check, store, then="" if last else "; fetching it again")
        if last:
            raise ChecksumError(
                f"{repo_id}/{filename}: the download fails its checksum twice ({check.detail}); "
                "nothing was kept",
                hint="retry later; if it persists the server copy or a proxy is corrupting it",
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _hf_failure(error: Exception) -> str:
    name = type(error).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return "repository not found"
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return "file not found"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int) and status >= 400:
        return f"HTTP {status}"
    text = str(error).strip().splitlines()
    if name in ("RemoteProtocolError", "ReadError", "ProtocolError", "IncompleteRead",
                "ChunkedEncodingError", "WriteError") or "peer closed" in str(error):
        return "connection lost during the download"
    if "Timeout" in name:
        return "timed out"
    if name in ("ConnectError", "ConnectionError"):
        return "cannot connect"
    return f"{name}: {text[0][:160]}" if text else name


# --------------------------------------------------------------------------- network


def _describe_network_error(error: BaseException) -> str:
    import http.client
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return _describe_network_error(error.reason)
    if isinstance(error, socket.gaierror):
        return "cannot resolve the host name (no network?)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, (ConnectionError, http.client.HTTPException)):
        return "connection lost during the download"
    text = str(getattr(error, "reason", None) or error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def _probe(url: str) -> str | None:
    """None if a TCP connection to ``url``'s host opens within CONNECT_TIMEOUT, else why not.

    Runs in a thread so that a slow DNS lookup cannot hold us longer than the timeout. Skipped
    (None) when a proxy is configured: the direct route says nothing then.
    """
    return _probe_all([url])[_host_key(url)]


def _host_key(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_PROBE_MEMORY_SECONDS = 30.0
_probed: dict[str, tuple[float, str | None]] = {}  # host -> (when, why unreachable)


def _probe_all(urls: list[str]) -> dict[str, str | None]:
    """Probe every distinct host of ``urls`` at once: {scheme://host: None or why not}.
    A slow failure (no DNS, a time-out) is remembered for 30 s, so that `models download
    --all` without a network waits once, not once per model."""
    import urllib.request

    proxies = urllib.request.getproxies()
    outcomes: dict[str, dict] = {}
    threads = []
    now = time.monotonic()
    for url in urls:
        key = _host_key(url)
        if key in outcomes:
            continue
        if key in _probed and now - _probed[key][0] < _PROBE_MEMORY_SECONDS:
            outcomes[key] = {"reason": _probed[key][1]}
            continue
        outcome: dict = {}
        outcomes[key] = outcome
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or proxies.get(parts.scheme):
            outcome["ok"] = True
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)

        def attempt(host: str = parts.hostname, port: int = port, outcome: dict = outcome) -> None:
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
                outcome["ok"] = True
            except OSError as error:
                outcome["error"] = error

        thread = threading.Thread(target=attempt, name="stemsplit-probe", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + CONNECT_TIMEOUT + 0.5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    result: dict[str, str | None] = {}
    for key, outcome in outcomes.items():
        if outcome.get("ok"):
            result[key] = None
        elif "reason" in outcome:
            result[key] = outcome["reason"]
            continue
        elif isinstance(outcome.get("error"), BaseException):
            result[key] = _describe_network_error(outcome["error"])
        else:
            result[key] = "timed out"
        if result[key] is not None and result[key] != "connection refused":
            _probed[key] = (time.monotonic(), result[key])  # only the slow answers
    return result


@functools.lru_cache(maxsize=None)
def _opener():  # noqa: ANN202
    """A urllib opener with a short connect timeout and a longer one between bytes."""
    import http.client
    import urllib.request

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.timeout = CONNECT_TIMEOUT
            super().connect()
            self.sock.settimeout(READ_TIMEOUT)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            self.timeout = CONNECT_TIMEOUT
            super().connect()
            self.sock.settimeout(READ_TIMEOUT)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):  # noqa: ANN001, ANN201
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):  # noqa: ANN001, ANN201
            return self.do_open(SecureConnection, req, context=self._context)

    return urllib.request.build_opener(Handler, SecureHandler)


def _open_url(url: str):  # noqa: ANN202
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "stemsplit"})
    return _opener().open(request, timeout=READ_TIMEOUT)


class _NetworkFailure(Exception):
    """A download that failed for a network reason (described in ``str``)."""


def _download(url: str, destination: Path, expected: str | None,
              progress: ProgressCallback | None = None) -> str:
    """Stream ``url`` to a unique temporary file beside ``destination``, check the sha256
    (``expected``: a digest or a prefix of one), then rename into place; the full digest.
    Nothing is left behind on failure (a network error, a mismatch, Ctrl-C)."""
    import http.client

    temporary = destination.parent / f".{destination.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part"
    digest = hashlib.sha256()
    try:
        try:
            response = _open_url(url)
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise _NetworkFailure(_describe_network_error(error)) from None
        try:  # folders are made only once the server answered
            destination.parent.mkdir(parents=True, exist_ok=True)
            output = open(temporary, "wb")
        except OSError:
            response.close()
            raise
        with response, output:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress is not None:
                progress(destination.name, done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise _NetworkFailure(_describe_network_error(error)) from None
                if not chunk:
                    break
                output.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(destination.name, done, total)
            if total is not None and done != total:
                raise _NetworkFailure(f"connection lost after {done} of {total} bytes")
            output.flush()
            os.fsync(output.fileno())
        actual = digest.hexdigest()
        if expected is not None and not actual.startswith(expected):
            raise ChecksumError(
                f"{url}: downloaded file's sha256 starts with {actual[: max(len(expected), 12)]}, "
                f"expected {expected}; nothing was kept",
                hint="retry later; if it persists the server copy or a proxy is corrupting it",
            )
        os.replace(temporary, destination)
        return actual
    except OSError as error:  # the local side: permissions, disk full
        raise ModelError(f"cannot write {destination}: {error.strerror or error}") from None
    finally:
        try:
            temporary.unlink()
        except FileNotFoundError:
            pass


def download_verified(url: str, destination: Path, expected_prefix: str | None,
                      progress: ProgressCallback | None = None) -> Path:
    """Stream ``url`` to a unique temporary file beside ``destination``, check the sha256
    prefix, then rename into place. Nothing is left behind on failure.

    Raises ChecksumError on a mismatch and _NetworkFailure for network problems.
    """
    _download(url, destination, expected_prefix, progress)
    return destination


def _waiting(filename: str) -> Callable[[], None]:
    return lambda: log.info("waiting for another stemsplit process downloading %s", filename)


def fetch_url_file(url: str, destination: Path, expected: str | None, *,
                   progress: ProgressCallback | None = None,
                   store: ChecksumStore | None = None) -> tuple[Path, bool]:
    """``destination``, downloading it from ``url`` unless a good copy is there; (path,
    whether it was downloaded now). Holds the target's lock throughout, so that a second
    process waits for the first and then finds its file. A copy that fails ``expected`` (or
    the digest remembered for it) is deleted; a download that fails it is fetched once more.
    Raises _NetworkFailure, ChecksumError or ModelError."""
    store = store if store is not None else ChecksumStore()
    with file_lock(destination, on_wait=_waiting(destination.name)):
        if destination.is_file():  # perhaps another process fetched it while we waited
            check = check_file(destination, expected, store=store, thorough=False, source=url)
            if check.ok:
                return destination, False
            _reject(check, store)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                digest = _download(url, destination, expected, progress)
            except ChecksumError as error:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                log.warning("%s; fetching it again", error.message.replace("; nothing was kept", ""))
                continue
            store.record(destination, digest, url)
            return destination, True
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- demucs bags


def _members_phrase(missing: list[str], members: list[str]) -> str:
    if len(missing) == len(members) == 1:
        return f"member {missing[0]}"
    if len(missing) == len(members):
        return f"all {len(members)} members"
    return f"{len(missing)} of {len(members)} members ({', '.join(missing)})"


def _fetch_command(name: str) -> str:
    return f"on a connected machine run `stemsplit models download {name}` and copy the caches here"


class _Resolution:
    """The state of one resolve_demucs_model call."""

    def __init__(self, spec: ModelSpec, progress: ProgressCallback | None) -> None:
        self.spec = spec
        self.progress = progress
        self.hub_dir = hf_cache_dir()
        self.torch_dir = torch_hub_checkpoints_dir()
        self.store = ChecksumStore()
        self.bag: BagDescription | None = None
        self.found: dict[str, tuple[Path, str]] = {}
        self.problems: list[str] = []
        self.downloaded: list[Path] = []
        self.unreachable: dict[str, str | None] = {}

    @property
    def members(self) -> list[str]:
        return self.bag.members if self.bag is not None else list(self.spec.members)

    @property
    def missing(self) -> list[str]:
        return [sig for sig in self.members if sig not in self.found]

    def _checked(self, path: Path | None) -> Path | None:
        """``path`` if it passes the cheap check; a failing file is deleted and noted."""
        if path is None:
            return None
        check = check_file(path, self.spec.recorded_sha256(path.name), store=self.store,
                           thorough=False, source=self._source_of(path))
        if check.ok:
            return path
        self.problems.append(_reject(check, self.store))
        return None

    def _source_of(self, path: Path) -> str:
        if path.suffix == ".th" and self.spec.legacy_url_root:
            return self.spec.legacy_url_root + path.name
        return f"hf:{self.spec.hf_repo}/{path.name}"

    def look_locally(self) -> None:
        spec = self.spec
        if self.bag is None and spec.hf_repo and spec.bag_file:
            bag_path = self._checked(_hf_cached(spec.hf_repo, spec.bag_file, self.hub_dir))
            if bag_path is not None:
                self.bag = read_bag_yaml(bag_path)
        for sig in self.missing:
            if spec.hf_repo:
                path = self._checked(_hf_cached(spec.hf_repo, f"{sig}.safetensors", self.hub_dir))
                if path is not None:
                    self.found[sig] = (path, f"Hugging Face cache ({spec.hf_repo})")
                    continue
            filename = spec.legacy_file_for(sig)
            if filename is not None and (self.torch_dir / filename).is_file():
                path = self._checked(self.torch_dir / filename)
                if path is not None:
                    self.found[sig] = (path, f"torch hub cache ({self.torch_dir})")

    def probe(self) -> None:
        urls = []
        if self.spec.hf_repo:
            urls.append(hf_endpoint())
        if self.spec.legacy_url_root and self.spec.legacy_files:
            urls.append(self.spec.legacy_url_root)
        self.unreachable = _probe_all(urls)

    def _host_down(self, url: str) -> bool:
        reason = self.unreachable.get(_host_key(url))
        if reason is None:
            return False
        host = urllib.parse.urlsplit(url).hostname or url
        self.problems.append(f"{host}: {reason}")
        return True

    def download_from_hub(self) -> None:
        spec = self.spec
        if not spec.hf_repo or self._host_down(hf_endpoint()):
            return
        host = urllib.parse.urlsplit(hf_endpoint()).hostname or hf_endpoint()
        try:
            if self.bag is None and spec.bag_file:
                path = _hf_fetch(spec.hf_repo, spec.bag_file, spec.recorded_sha256(spec.bag_file),
                                 self.hub_dir, self.progress, self.store)
                self.downloaded.append(path)
                self.bag = read_bag_yaml(path)
                self.look_locally()  # the bag may name members we have not looked for
            for sig in self.missing:
                name = f"{sig}.safetensors"
                path = _hf_fetch(spec.hf_repo, name, spec.recorded_sha256(name), self.hub_dir,
                                 self.progress, self.store)
                self.downloaded.append(path)
                self.found[sig] = (path, f"Hugging Face ({spec.hf_repo})")
        except ModelError:
            raise
        except Exception as error:  # huggingface_hub's HTTP, network and cache errors
            self.problems.append(f"{host} ({spec.hf_repo}): {_hf_failure(error)}")

    def download_legacy(self) -> None:
        spec = self.spec
        if not spec.legacy_url_root or self._host_down(spec.legacy_url_root):
            return
        for sig in self.missing:
            filename = spec.legacy_file_for(sig)
            if filename is None:
                continue
            url = spec.legacy_url_root + filename
            try:
                path, fetched = fetch_url_file(url, self.torch_dir / filename,
                                               spec.recorded_sha256(filename),
                                               progress=self.progress, store=self.store)
            except _NetworkFailure as failure:
                host = urllib.parse.urlsplit(url).hostname or url
                self.problems.append(f"{host}: {failure}")
                if not str(failure).startswith("HTTP "):
                    return  # the host is unreachable: the other members would fail the same way
                continue
            if fetched:
                self.downloaded.append(path)
            self.found[sig] = (path, spec.legacy_url_root if fetched else f"torch hub cache ({self.torch_dir})")

    def result(self) -> ResolvedBag:
        spec = self.spec
        paths = [self.found[sig][0] for sig in self.members]
        origins: list[str] = []
        for sig in self.members:
            if self.found[sig][1] not in origins:
                origins.append(self.found[sig][1])
        if self.bag is not None:
            weights, segment = self.bag.weights, self.bag.segment
        else:
            weights = [list(row) for row in spec.bag_weights] if spec.bag_weights is not None else None
            segment = float(spec.segment_seconds) if spec.segment_seconds is not None else None
        return ResolvedBag(member_paths=paths, weights=weights, segment=segment,
                           origin=" + ".join(origins), downloaded=list(self.downloaded))

    def places(self) -> str:
        spec = self.spec
        places = []
        if spec.hf_repo:
            places.append(f"the Hugging Face cache ({self.hub_dir}, {spec.hf_repo})")
        if spec.legacy_files:
            places.append(f"the torch hub cache ({self.torch_dir})")
        return " and ".join(places) if places else "no cache (weights.toml lists no source)"

    def unavailable(self, reason: str) -> WeightsUnavailableError:
        """One line: the model, what is missing, where we looked, why nothing was fetched,
        and the command that fetches it."""
        spec = self.spec
        parts = [f"{_members_phrase(self.missing, self.members)} missing", f"looked in {self.places()}"]
        parts += self.problems
        if reason:
            parts.append(f"offline: {reason}")
            state = "are not cached"
            hint = f"or {_online_hint(reason)} to download them now"
        else:
            state = "could not be fetched"
            hint = ("check the network; `stemsplit models path` shows the cache folders; "
                    "--weights PATH runs a local checkpoint")
        message = f"weights for {spec.name} {state} ({'; '.join(parts)}); {_fetch_command(spec.name)}"
        return WeightsUnavailableError(" ".join(message.split()), hint=hint)


def resolve_demucs_model(
    spec: ModelSpec,
    *,
    offline: bool | None = False,
    repo_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ResolvedBag:
    """Local, verified checkpoint files for every member of ``spec``'s bag (see module doc).

    ``offline`` None consults STEMSPLIT_OFFLINE; HF_HUB_OFFLINE=1 is always honoured.
    """
    if spec.unsupported:
        raise ModelError(f"{spec.name}: {spec.unsupported}")
    if repo_dir is not None:
        folder = _expand(str(repo_dir))
        if not folder.is_dir():
            raise ModelError(f"--repo {folder}: not a folder")
        bag_file = None
        for name in (spec.bag_file, f"{spec.name}.yaml"):
            if name and (folder / name).is_file():
                bag_file = folder / name
                break
        weights = [list(row) for row in spec.bag_weights] if spec.bag_weights is not None else None
        segment = float(spec.segment_seconds) if spec.segment_seconds is not None else None
        return _bag_from_folder(folder, bag_file, list(spec.members), f"repo folder {folder}",
                                weights, segment, spec.name,
                                "copy the missing files there, or drop --repo to use the caches and downloads")

    reason = offline_reason(offline)
    resolution = _Resolution(spec, progress)
    if not resolution.members:
        raise ModelError(f"{spec.name}: weights.toml lists no members for this model")
    resolution.look_locally()
    if resolution.missing and not reason:
        resolution.probe()
        resolution.download_from_hub()
        if resolution.missing:
            resolution.download_legacy()
    if resolution.missing:
        raise resolution.unavailable(reason)
    return resolution.result()


def resolve_url_files(spec: ModelSpec, *, offline: bool | None = False,
                      progress: ProgressCallback | None = None) -> list[Path]:
    """Local, verified copies of ``spec``'s plain URL files (``[[models.X.files]]``), in
    order, downloaded into ``$STEMSPLIT_CACHE/weights`` when missing (for families without a
    Hugging Face repo). Same integrity rules and one-line errors as the demucs bags."""
    files = [file for file in spec.files if file.source == "url"]
    if not files:
        raise ModelError(f"{spec.name}: weights.toml lists no files for this model")
    store = ChecksumStore()
    folder = url_files_dir()
    paths: dict[str, Path] = {}
    problems: list[str] = []
    for file in files:
        path = folder / file.filename
        if path.is_file():
            check = check_file(path, file.sha256, store=store, thorough=False, source=file.location)
            if check.ok:
                paths[file.filename] = path
            else:
                problems.append(_reject(check, store))
    reason = offline_reason(offline)
    missing = [file for file in files if file.filename not in paths]
    if missing and not reason:
        unreachable = _probe_all([file.location for file in missing])
        for file in missing:
            host = urllib.parse.urlsplit(file.location).hostname or file.location
            down = unreachable.get(_host_key(file.location))
            if down is not None:
                if f"{host}: {down}" not in problems:
                    problems.append(f"{host}: {down}")
                continue
            try:
                paths[file.filename] = fetch_url_file(file.location, folder / file.filename,
                                                      file.sha256, progress=progress, store=store)[0]
            except _NetworkFailure as failure:
                problems.append(f"{host}: {failure}")
    missing = [file for file in files if file.filename not in paths]
    if missing:
        names = ", ".join(file.filename for file in missing)
        parts = [f"{names} missing", f"looked in {folder}", *problems]
        if reason:
            parts.append(f"offline: {reason}")
        state = "are not cached" if reason else "could not be fetched"
        hint = f"or {_online_hint(reason)} to download them now" if reason else "check the network"
        raise WeightsUnavailableError(
            " ".join(f"weights for {spec.name} {state} ({'; '.join(parts)}); "
                     f"{_fetch_command(spec.name)}".split()), hint=hint)
    return [paths[file.filename] for file in files]


# --------------------------------------------------------------------------- inventory


@dataclass
class LocalFile:
    """One published file of a model and where (if anywhere) this machine has it."""

    file: ModelFile
    path: Path | None

    @property
    def size(self) -> int | None:
        try:
            return self.path.stat().st_size if self.path is not None else None
        except OSError:
            return None


def local_path(spec: ModelSpec, file: ModelFile) -> Path | None:
    """Where ``file`` is cached on this machine (no hashing, no network), else None."""
    if file.source == "hf":
        return _hf_cached(file.location, file.filename, hf_cache_dir())
    folder = torch_hub_checkpoints_dir() if file.source == "legacy" else url_files_dir()
    path = folder / file.filename
    return path if path.is_file() else None


def local_files(spec: ModelSpec) -> list[LocalFile]:
    return [LocalFile(file, local_path(spec, file)) for file in spec.files]


def is_cached(spec: ModelSpec) -> bool:
    """Whether everything ``spec`` needs is on this machine (no network, no checksum pass):
    each bag member from the HF cache or the torch hub cache, and every plain URL file."""
    if not spec.members and not spec.extra_files:
        return False
    hub_dir = hf_cache_dir()
    torch_dir = torch_hub_checkpoints_dir()
    for sig in spec.members:
        if spec.hf_repo and _hf_cached(spec.hf_repo, f"{sig}.safetensors", hub_dir) is not None:
            continue
        filename = spec.legacy_file_for(sig)
        if filename is not None and (torch_dir / filename).is_file():
            continue
        return False
    return all((url_files_dir() / file.filename).is_file() for file in spec.extra_files)


def verify_model(spec: ModelSpec, *, delete: bool = True) -> list[FileCheck]:
    """Re-hash every cached file of ``spec`` against its known digests. Files that fail are
    deleted (unless ``delete`` is False), so that the next run fetches them again."""
    store = ChecksumStore()
    results = []
    for local in local_files(spec):
        if local.path is None:
            continue
        check = check_file(local.path, local.file.sha256, store=store, thorough=True,
                           source=local.file.location)
        if not check.ok and delete:
            check.detail += "; deleted" if _discard(local.path, store) else "; could not be deleted"
        results.append(check)
    return results


def _used_elsewhere(spec: ModelSpec, file: ModelFile, others: list[ModelSpec]) -> bool:
    return any(other.name != spec.name and any(
        (f.source, f.location, f.filename) == (file.source, file.location, file.filename)
        for f in other.files) for other in others)


def remove_model(spec: ModelSpec, others: list[ModelSpec] | None = None) -> list[Path]:
    """Delete ``spec``'s files from every cache (for the Hugging Face cache: from every
    snapshot, with their blobs, and the repo folder once nothing is left in it). Files another
    model of ``others`` also lists are kept. Returns what was deleted."""
    store = ChecksumStore()
    removed: list[Path] = []
    hub_dir = hf_cache_dir()
    repos: set[str] = set()
    for file in spec.files:
        if others and _used_elsewhere(spec, file, others):
            continue
        if file.source == "hf":
            repos.add(file.location)
            folder = hf_repo_folder(file.location, hub_dir)
            for snapshot in sorted((folder / "snapshots").glob("*")):
                entry = snapshot / file.filename
                if not (entry.is_symlink() or entry.exists()):
                    continue
                blob = Path(os.path.realpath(entry)) if entry.is_symlink() else None
                _unlink(entry, removed)
                if blob is not None and blob.parent == folder / "blobs" and not _blob_in_use(folder, blob):
                    _unlink(blob, removed, report=False)
                    store.forget([blob])
        else:
            folder = torch_hub_checkpoints_dir() if file.source == "legacy" else url_files_dir()
            path = folder / file.filename
            if path.is_file():
                with file_lock(path):
                    _unlink(path, removed)
                store.forget([path])
    for repo in repos:
        folder = hf_repo_folder(repo, hub_dir)
        snapshots = folder / "snapshots"
        if folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in snapshots.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(hub_dir / ".locks" / folder.name, ignore_errors=True)
    return removed


def _blob_in_use(folder: Path, blob: Path) -> bool:
    for entry in (folder / "snapshots").rglob("*"):
        if entry.is_symlink() and Path(os.path.realpath(entry)) == blob:
            return True
    return False


def _unlink(path: Path, removed: list[Path], report: bool = True) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as error:
        raise ModelError(f"cannot delete {path}: {error.strerror or error}") from None
    if report:
        removed.append(path)
