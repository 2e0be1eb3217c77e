"""Turning a model into verified local checkpoint files.

Where the files of a demucs bag can come from, in the order they are tried:

1. ``repo_dir`` (``--repo``, demucs' local repository layout): ``<name>.yaml`` plus
   ``<sig>.safetensors``, ``<sig>.th`` or ``<sig>-<sha8>.th``; nothing else is tried.
2. Already on this machine, no network: the standard Hugging Face cache (``HF_HUB_CACHE``,
   ``HF_HOME``; what ``huggingface_hub`` and ``demucs`` use) holding ``<bag_file>`` and
   ``<sig>.safetensors``; then demucs' legacy cache ``$TORCH_HOME/hub/checkpoints/
   <sig>-<sha8>.th``, checked against its sha256 prefix.
3. Unless offline (``offline=True`` or ``HF_HUB_OFFLINE=1``): a download from the Hugging Face
   Hub into its cache, then from the legacy URLs into the torch hub folder (streamed to a
   unique temporary name, sha256 prefix verified, then renamed into place).

Local copies are preferred to the network so that a cached model never waits on it (demucs
asks the Hub first each time). Each member is resolved on its own, so a bag may mix sources.

No torch import here, and huggingface_hub only inside functions: ``stemsplit models``
calls :func:`is_cached` and must stay fast.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checkpoint import CHECKPOINT_SUFFIXES, BagDescription, read_bag_yaml
from .errors import ChecksumError, ModelError, WeightsUnavailableError
from .registry import ModelSpec

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(filename, bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""

CONNECT_TIMEOUT = 4.0  # seconds to open a connection (DNS included for the Hub probe)
READ_TIMEOUT = 30.0  # seconds without a byte before a download is abandoned
HF_DEFAULT_ENDPOINT = "https://huggingface.co"

_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class ResolvedBag:
    """Local checkpoint files of one bag, with the bag's weights and segment."""

    member_paths: list[Path]
    weights: list[list[float]] | None
    segment: float | None
    origin: str  # where the files came from, for messages ("Hugging Face cache (...)")


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


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def offline_from_environment() -> bool:
    """``HF_HUB_OFFLINE`` set to 1/true/yes/on, as huggingface_hub reads it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


# --------------------------------------------------------------------------- checksums


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_prefix(filename: str) -> str | None:
    """The sha256 prefix in ``<sig>-<hex>.th`` (demucs' naming), if the name carries one."""
    stem = filename[: -len(".th")] if filename.endswith(".th") else None
    if not stem or "-" not in stem:
        return None
    prefix = stem.rsplit("-", 1)[1]
    return prefix if _HEX.fullmatch(prefix) and 8 <= len(prefix) <= 64 else None


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


def _hf_cached(repo_id: str, filename: str, cache_dir: Path) -> Path | None:
    """The file from the local HF cache only (``local_files_only``: never any network)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache_dir), local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, invalid repo ids, unreadable cache
        return None


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


def _hf_failure(error: Exception) -> str:
    name = type(error).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return "repository not found"
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return "file not found"
    text = str(error).strip().splitlines()
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
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if urllib.request.getproxies().get(parts.scheme):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: dict[str, BaseException | bool] = {}

    def attempt() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
            outcome["ok"] = True
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=attempt, name="stemsplit-probe", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT + 0.5)
    if outcome.get("ok"):
        return None
    error = outcome.get("error")
    return _describe_network_error(error) if isinstance(error, BaseException) else "timed out"


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


def download_verified(url: str, destination: Path, expected_prefix: str | None,
                      progress: ProgressCallback | None = None) -> Path:
    """Stream ``url`` to a unique temporary file beside ``destination``, check the sha256
    prefix, then rename into place. Nothing is left behind on failure.

    Raises ChecksumError on a mismatch and _NetworkFailure for network problems.
    """
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
        if expected_prefix is not None and not actual.startswith(expected_prefix):
            raise ChecksumError(
                f"{url}: downloaded file's sha256 starts with {actual[: len(expected_prefix)]}, "
                f"expected {expected_prefix}; nothing was kept",
                hint="retry later; if it persists the server copy or a proxy is corrupting it",
            )
        os.replace(temporary, destination)
        return destination
    except OSError as error:  # the local side: permissions, disk full
        raise ModelError(f"cannot write {destination}: {error.strerror or error}") from None
    finally:
        try:
            temporary.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- demucs bags


def _members_phrase(missing: list[str], members: list[str]) -> str:
    if len(missing) == len(members) == 1:
        return f"member {missing[0]}"
    if len(missing) == len(members):
        return f"all {len(members)} members"
    return f"{len(missing)} of {len(members)} members ({', '.join(missing)})"


def _legacy_cached(spec: ModelSpec, sig: str, torch_dir: Path, problems: list[str]) -> Path | None:
    filename = spec.legacy_file_for(sig)
    if filename is None:
        return None
    path = torch_dir / filename
    if not path.is_file():
        return None
    expected = _expected_prefix(filename)
    if expected is not None:
        actual = _verify(path, expected)
        if actual is not None:
            problems.append(f"{path} fails its checksum ({actual} != {expected})")
            return None
    return path


class _Resolution:
    """The state of one resolve_demucs_model call."""

    def __init__(self, spec: ModelSpec, progress: ProgressCallback | None) -> None:
        self.spec = spec
        self.progress = progress
        self.hub_dir = hf_cache_dir()
        self.torch_dir = torch_hub_checkpoints_dir()
        self.bag: BagDescription | None = None
        self.found: dict[str, tuple[Path, str]] = {}
        self.problems: list[str] = []

    @property
    def members(self) -> list[str]:
        return self.bag.members if self.bag is not None else list(self.spec.members)

    @property
    def missing(self) -> list[str]:
        return [sig for sig in self.members if sig not in self.found]

    def look_locally(self) -> None:
        spec = self.spec
        if self.bag is None and spec.hf_repo and spec.bag_file:
            bag_path = _hf_cached(spec.hf_repo, spec.bag_file, self.hub_dir)
            if bag_path is not None:
                self.bag = read_bag_yaml(bag_path)
        for sig in self.missing:
            if spec.hf_repo:
                path = _hf_cached(spec.hf_repo, f"{sig}.safetensors", self.hub_dir)
                if path is not None:
                    self.found[sig] = (path, f"Hugging Face cache ({spec.hf_repo})")
                    continue
            path = _legacy_cached(spec, sig, self.torch_dir, self.problems)
            if path is not None:
                self.found[sig] = (path, f"torch hub cache ({self.torch_dir})")

    def download_from_hub(self) -> None:
        spec = self.spec
        if not spec.hf_repo:
            return
        host = urllib.parse.urlsplit(hf_endpoint()).hostname or hf_endpoint()
        unreachable = _probe(hf_endpoint())
        if unreachable is not None:
            self.problems.append(f"{host}: {unreachable}")
            return
        try:
            if self.bag is None and spec.bag_file:
                self.bag = read_bag_yaml(_hf_download(spec.hf_repo, spec.bag_file, self.hub_dir, self.progress))
                self.look_locally()  # the bag may name members we have not looked for
            for sig in self.missing:
                path = _hf_download(spec.hf_repo, f"{sig}.safetensors", self.hub_dir, self.progress)
                self.found[sig] = (path, f"Hugging Face ({spec.hf_repo})")
        except ModelError:
            raise
        except Exception as error:  # huggingface_hub's HTTP, network and cache errors
            self.problems.append(f"{host} ({spec.hf_repo}): {_hf_failure(error)}")

    def download_legacy(self) -> None:
        spec = self.spec
        if not spec.legacy_url_root:
            return
        for sig in self.missing:
            filename = spec.legacy_file_for(sig)
            if filename is None:
                continue
            url = spec.legacy_url_root + filename
            try:
                path = download_verified(url, self.torch_dir / filename, _expected_prefix(filename), self.progress)
            except _NetworkFailure as failure:
                host = urllib.parse.urlsplit(url).hostname or url
                self.problems.append(f"{host}: {failure}")
                if not str(failure).startswith("HTTP "):
                    return  # the host is unreachable: the other members would fail the same way
                continue
            self.found[sig] = (path, spec.legacy_url_root)

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
        return ResolvedBag(member_paths=paths, weights=weights, segment=segment, origin=" + ".join(origins))

    def places(self) -> str:
        spec = self.spec
        places = []
        if spec.hf_repo:
            places.append(f"the Hugging Face cache ({self.hub_dir}, {spec.hf_repo})")
        if spec.legacy_files:
            places.append(f"the torch hub cache ({self.torch_dir})")
        return " and ".join(places) if places else "no cache (weights.toml lists no source)"

    def unavailable(self, offline_reason: str) -> WeightsUnavailableError:
        """One line: the model, what is missing, where we looked, why nothing was fetched."""
        spec = self.spec
        parts = [f"{_members_phrase(self.missing, self.members)} missing", f"looked in {self.places()}"]
        parts += self.problems
        if offline_reason:
            parts.append(f"offline: {offline_reason}")
            state = "are not cached"
            hint = (
                f"on a connected machine run `stemsplit models download {spec.name}` and copy its "
                f"Hugging Face cache (HF_HOME) here, or go online ({_online_hint(offline_reason)})"
            )
        else:
            state = "could not be fetched"
            hint = (
                f"check the network, or on a connected machine run `stemsplit models download "
                f"{spec.name}` and copy its Hugging Face cache (HF_HOME) here; "
                "--weights PATH runs a local checkpoint"
            )
        message = f"weights for {spec.name} {state} ({'; '.join(parts)})"
        return WeightsUnavailableError(" ".join(message.split()), hint=hint)


def _online_hint(offline_reason: str) -> str:
    if "HF_HUB_OFFLINE" in offline_reason:
        return "unset HF_HUB_OFFLINE"
    return "drop --offline"


def resolve_demucs_model(
    spec: ModelSpec,
    *,
    offline: bool = False,
    repo_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ResolvedBag:
    """Local, verified checkpoint files for every member of ``spec``'s bag (see module doc)."""
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

    offline_reason = ""
    if offline_from_environment():
        offline_reason = "HF_HUB_OFFLINE is set"
    elif offline:
        offline_reason = "--offline"
    resolution = _Resolution(spec, progress)
    if not resolution.members:
        raise ModelError(f"{spec.name}: weights.toml lists no members for this model")
    resolution.look_locally()
    if resolution.missing and not offline_reason:
        resolution.download_from_hub()
        if resolution.missing:
            resolution.download_legacy()
    if resolution.missing:
        raise resolution.unavailable(offline_reason)
    return resolution.result()


def is_cached(spec: ModelSpec) -> bool:
    """Whether every member of ``spec`` is on this machine (no network, no checksum pass)."""
    if not spec.members:
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
    return True
