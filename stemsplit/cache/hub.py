"""The Hugging Face hub: its local cache read with the standard library, and downloads.

Files are looked up the way huggingface_hub's ``try_to_load_from_cache`` does (``refs/main``
-> ``snapshots/<commit>/<file>``) without importing it, so that ``stemsplit models`` stays
fast; downloads go through ``huggingface_hub.hf_hub_download`` into the standard cache,
and are checked against their blob name (the Hub's etag) and weights.toml.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..errors import ChecksumError
from .http import DOWNLOAD_ATTEMPTS, connect_timeout
from .integrity import ChecksumStore, check_file, reject
from .locations import hf_cache_dir, hf_endpoint

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(filename, bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""


def hf_repo_folder(repo_id: str, hub_dir: Path | None = None) -> Path:
    """``<hub cache>/models--<owner>--<name>``."""
    return (hub_dir or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def hf_cached(repo_id: str, filename: str, cache_dir: Path) -> Path | None:
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


RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Answers huggingface_hub's download tries again (a server that answered, but busy)."""


def _etag_timeout() -> float:
    """Seconds for the metadata request: ``HF_HUB_ETAG_TIMEOUT`` where the user set it (as
    huggingface_hub does), else at least 10 s, more with a longer connect timeout."""
    from huggingface_hub import constants

    default = getattr(constants, "DEFAULT_ETAG_TIMEOUT", 10)
    chosen = getattr(constants, "HF_HUB_ETAG_TIMEOUT", default)
    return float(chosen) if chosen != default else max(connect_timeout(), 10.0)


def _ask_first(repo_id: str, filename: str) -> None:
    """One HEAD request for the file, with no retries, before ``hf_hub_download``.

    When nothing answers (refused, timed out, a proxy that cannot connect, no route) this
    raises at once. ``hf_hub_download`` would, for a file not in the cache, try five times
    more, 1+2+4+8+8 s apart, each with a 60 s timeout: 24 s to say that a proxy refuses,
    minutes for a host that drops packets. A server that answers with an error it retries
    (429, 5xx) is left to ``hf_hub_download``'s own retries; its other errors (404, 401)
    are raised here, as the download would raise them."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, endpoint=hf_endpoint()),
                             timeout=_etag_timeout())
    except Exception as error:
        if _status(error) not in RETRIED_STATUSES:
            raise


def _status(error: BaseException) -> int | None:
    """The HTTP status a huggingface_hub error carries; None when no server answered."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _hf_download(repo_id: str, filename: str, cache_dir: Path, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import hf_hub_download

    # huggingface_hub logs each retry ("Trying to resume download...") on stderr; the
    # outcome is ours to report, in one line.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.CRITICAL)
    try:
        _ask_first(repo_id, filename)
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                cache_dir=str(cache_dir),
                endpoint=hf_endpoint(),
                etag_timeout=_etag_timeout(),
                tqdm_class=_progress_bar_class(filename, progress),
            )
        )
    finally:
        hub_logger.setLevel(level)


def hf_fetch(repo_id: str, filename: str, recorded: str | None, cache_dir: Path,
              progress: ProgressCallback | None, store: ChecksumStore) -> Path:
    """Download one file into the HF cache and check it against its blob name (the Hub's
    etag) and weights.toml; a bad copy is deleted and fetched once more."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        path = _hf_download(repo_id, filename, cache_dir, progress)
        check = check_file(path, recorded, store=store, thorough=True, source=f"hf:{repo_id}/{filename}")
        if check.ok:
            return path
        last = attempt == DOWNLOAD_ATTEMPTS
        reject(check, store, then="" if last else "; fetching it again")
        if last:
            raise ChecksumError(
                f"{repo_id}/{filename}: the download fails its checksum twice ({check.detail}); "
                "nothing was kept",
                hint="retry later; if it persists the server copy or a proxy is corrupting it",
            )
    raise AssertionError("unreachable")  # pragma: no cover


def hf_failure(error: BaseException) -> str:
    """Why a huggingface_hub call failed, in a few words."""
    name = type(error).__name__
    if name == "LocalEntryNotFoundError" and error.__cause__ is not None:
        return hf_failure(error.__cause__)  # "cannot find the requested files ...": why
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return "repository not found"
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return "file not found"
    status = _status(error)
    if status is not None and status >= 400:
        return f"HTTP {status}"
    text = str(error).strip().splitlines()
    if name in ("RemoteProtocolError", "ReadError", "ProtocolError", "IncompleteRead",
                "ChunkedEncodingError", "WriteError") or "peer closed" in str(error):
        return "connection lost during the download"
    if "Timeout" in name or isinstance(error, TimeoutError):
        return "timed out"
    if name == "ProxyError":
        return f"the proxy failed ({text[0][:120]})" if text else "the proxy failed"
    if name in ("ConnectError", "ConnectionError") or isinstance(error, ConnectionError):
        return "connection refused" if "refused" in str(error).lower() else "cannot connect"
    return f"{name}: {text[0][:160]}" if text else name


