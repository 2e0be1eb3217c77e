"""Where the files of a demucs bag come from, and local bag folders.

In the order they are tried:

1. ``repo_dir`` (``--repo``, demucs' local repository layout): ``<name>.yaml`` plus
   ``<sig>.safetensors``, ``<sig>.th`` or ``<sig>-<sha8>.th``; nothing else is tried.
2. Already on this machine, no network: the standard Hugging Face cache (``HF_HUB_CACHE``,
   ``HF_HOME``; what ``huggingface_hub`` and ``demucs`` use) holding ``<bag_file>`` and
   ``<sig>.safetensors``; then demucs' legacy cache ``$TORCH_HOME/hub/checkpoints/
   <sig>-<sha8>.th``.
3. Unless offline: a download from the Hugging Face Hub into its cache, then from the legacy
   URLs into the torch hub folder.

A legacy ``<sig>-<sha8>.th`` name carries the first 8 hex digits of the file's sha256
(demucs' ``save_with_checksum``): it is checked on every download and the first time a
cached copy is used. ``--weights`` takes a checkpoint file, a bag ``.yaml`` or a folder.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...cache.http import (NetworkFailure, ProgressCallback, fetch_url_file, host_key,
                          probe_all, unavailable)
from ...cache.hub import hf_cached, hf_failure, hf_fetch
from ...cache.integrity import ChecksumStore, check_file, reject, sha256_of
from ...cache.locations import (OfflinePolicy, as_policy, expand_path, hf_cache_dir, hf_endpoint,
                               torch_hub_checkpoints_dir)
from ...errors import ChecksumError, ModelError, WeightsUnavailableError
from .checkpoint import CHECKPOINT_SUFFIXES, BagDescription, read_bag_yaml

if TYPE_CHECKING:  # pragma: no cover
    from ...specs import ModelSpec
    from .adapter import DemucsConfig

_HEX = re.compile(r"[0-9a-f]{8,64}")


def legacy_name_prefix(filename: str) -> str | None:
    """The sha256 prefix in a demucs ``<sig>-<hex>.th`` name (8+ hex digits), if any."""
    if not filename.endswith(".th"):
        return None
    stem = filename[: -len(".th")]
    if "-" not in stem:
        return None
    prefix = stem.rsplit("-", 1)[1]
    return prefix if _HEX.fullmatch(prefix) else None


def recorded_sha256(spec: "ModelSpec", filename: str) -> tuple[str | None, str]:
    """weights.toml's digest for ``filename``, else the prefix in a legacy name; and who
    recorded it."""
    file = spec.file(filename)
    if file is not None and file.sha256 is not None:
        return file.sha256, file.sha256_from
    prefix = legacy_name_prefix(filename)
    return prefix, "its name"


@dataclass
class ResolvedBag:
    """Local checkpoint files of one bag, with the bag's weights and segment."""

    member_paths: list[Path]
    weights: list[list[float]] | None
    segment: float | None
    origin: str  # where the files came from, for messages ("Hugging Face cache (...)")
    downloaded: list[Path] = field(default_factory=list)  # fetched by this call


def _verify(path: Path, expected: str) -> str | None:
    """None when ``path``'s sha256 starts with ``expected``, else its actual prefix."""
    try:
        actual = sha256_of(path)[: len(expected)]
    except OSError as error:
        raise ModelError(f"{path}: unreadable ({error.strerror or error})") from None
    return None if actual == expected else actual


def _check_named_checksum(path: Path) -> None:
    """A ``<sig>-<sha>.th`` must hash to its name: ChecksumError otherwise."""
    expected = legacy_name_prefix(path.name)
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
            f"several checkpoint files for network {sig} in {folder}: {names}",
            hint="delete all but one"
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
            f"{model}: {_checkpoints_phrase(missing, members)} in {folder}",
            hint=hint,
        )
    return ResolvedBag(member_paths=paths, weights=weights, segment=segment, origin=origin)


_WEIGHTS_HINT = "put the checkpoint files its bag file lists beside it"


def resolve_weights_path(path: Path | str) -> ResolvedBag:
    """``--weights PATH``: a checkpoint file, a bag ``.yaml``, or a folder holding a bag.

    A folder is a bag: the members its single ``*.yaml`` lists, or else every checkpoint in it
    (one per signature, ``.safetensors`` preferred), in name order.
    """
    path = expand_path(str(path))
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


def _checkpoints_phrase(missing: list[str], members: list[str]) -> str:
    """The bag members (networks) ``missing`` of ``members`` in words, with the file names
    looked for: "no checkpoint file for network 955717e8 (955717e8.safetensors, ...)"."""
    if len(missing) == 1:
        sig = missing[0]
        of = f" (1 of {len(members)})" if len(members) > 1 else ""
        return (f"no checkpoint file for network {sig}{of} ({sig}.safetensors, {sig}.th or "
                f"{sig}-<sha256 prefix>.th)")
    which = (f"its {len(members)} networks" if len(missing) == len(members)
             else f"{len(missing)} of its {len(members)} networks")
    return (f"no checkpoint files for {which} ({', '.join(missing)}; each as <name>.safetensors, "
            "<name>.th or <name>-<sha256 prefix>.th)")


def _missing_files(spec: ModelSpec, missing: list[str], members: list[str]) -> str:
    """The files of the bag members ``missing`` (of ``members``) in words, as the first
    source names them: "the model's file 955717e8.safetensors", "2 of the model's 4 files
    (...)"."""
    names: dict[str, str] = {}
    for file in spec.files:
        if file.member is not None:
            names.setdefault(file.member, file.filename)
    listed = ", ".join(names.get(sig, sig) for sig in missing)
    if len(missing) == 1 and len(members) == 1:
        return f"the model's file {listed}"
    if len(missing) == len(members):
        return f"the model's {len(members)} files ({listed})"
    return f"{len(missing)} of the model's {len(members)} files ({listed})"


class _Resolution:
    """The state of one resolve_demucs_model call."""

    def __init__(self, spec: ModelSpec, progress: ProgressCallback | None) -> None:
        self.spec = spec
        self.config: DemucsConfig = spec.config
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
        return self.bag.members if self.bag is not None else list(self.config.members)

    @property
    def missing(self) -> list[str]:
        return [sig for sig in self.members if sig not in self.found]

    def _checked(self, path: Path | None) -> Path | None:
        """``path`` if it passes the cheap check; a failing file is deleted and noted."""
        if path is None:
            return None
        digest, origin = recorded_sha256(self.spec, path.name)
        check = check_file(path, digest, store=self.store, thorough=False,
                           source=self._source_of(path), recorded_from=origin)
        if check.ok:
            return path
        self.problems.append(reject(check, self.store))
        return None

    def _source_of(self, path: Path) -> str:
        if path.suffix == ".th" and self.config.legacy_url_root:
            return self.config.legacy_url_root + path.name
        return f"hf:{self.config.hf_repo}/{path.name}"

    def look_locally(self) -> None:
        config = self.config
        if self.bag is None and config.hf_repo and config.bag_file:
            bag_path = self._checked(hf_cached(config.hf_repo, config.bag_file, self.hub_dir))
            if bag_path is not None:
                self.bag = read_bag_yaml(bag_path)
        for sig in self.missing:
            if config.hf_repo:
                path = self._checked(hf_cached(config.hf_repo, f"{sig}.safetensors", self.hub_dir))
                if path is not None:
                    self.found[sig] = (path, f"Hugging Face cache ({config.hf_repo})")
                    continue
            filename = config.legacy_file_for(sig)
            if filename is not None and (self.torch_dir / filename).is_file():
                path = self._checked(self.torch_dir / filename)
                if path is not None:
                    self.found[sig] = (path, f"torch hub cache ({self.torch_dir})")

    def probe(self) -> None:
        urls = []
        if self.config.hf_repo:
            urls.append(hf_endpoint())
        if self.config.legacy_url_root and self.config.legacy_files:
            urls.append(self.config.legacy_url_root)
        self.unreachable = probe_all(urls)

    def _host_down(self, url: str) -> bool:
        reason = self.unreachable.get(host_key(url))
        if reason is None:
            return False
        host = urllib.parse.urlsplit(url).hostname or url
        self.problems.append(f"{host}: {reason}")
        return True

    def download_from_hub(self) -> None:
        spec, config = self.spec, self.spec.config
        if not config.hf_repo or self._host_down(hf_endpoint()):
            return
        host = urllib.parse.urlsplit(hf_endpoint()).hostname or hf_endpoint()
        try:
            if self.bag is None and config.bag_file:
                path = hf_fetch(config.hf_repo, config.bag_file, recorded_sha256(spec, config.bag_file)[0],
                                 self.hub_dir, self.progress, self.store)
                self.downloaded.append(path)
                self.bag = read_bag_yaml(path)
                self.look_locally()  # the bag may name members we have not looked for
            for sig in self.missing:
                name = f"{sig}.safetensors"
                path = hf_fetch(config.hf_repo, name, recorded_sha256(spec, name)[0], self.hub_dir,
                                 self.progress, self.store)
                self.downloaded.append(path)
                self.found[sig] = (path, f"Hugging Face ({config.hf_repo})")
        except ModelError:
            raise
        except Exception as error:  # huggingface_hub's HTTP, network and cache errors
            self.problems.append(f"{host} ({config.hf_repo}): {hf_failure(error)}")

    def download_legacy(self) -> None:
        spec, config = self.spec, self.spec.config
        if not config.legacy_url_root or self._host_down(config.legacy_url_root):
            return
        for sig in self.missing:
            filename = config.legacy_file_for(sig)
            if filename is None:
                continue
            url = config.legacy_url_root + filename
            try:
                path, fetched = fetch_url_file(url, self.torch_dir / filename,
                                               recorded_sha256(spec, filename)[0],
                                               progress=self.progress, store=self.store)
            except NetworkFailure as failure:
                host = urllib.parse.urlsplit(url).hostname or url
                self.problems.append(f"{host}: {failure}")
                if not str(failure).startswith("HTTP "):
                    return  # the host is unreachable: the other members would fail the same way
                continue
            if fetched:
                self.downloaded.append(path)
            self.found[sig] = (path, config.legacy_url_root if fetched else f"torch hub cache ({self.torch_dir})")

    def result(self) -> ResolvedBag:
        config = self.config
        paths = [self.found[sig][0] for sig in self.members]
        origins: list[str] = []
        for sig in self.members:
            if self.found[sig][1] not in origins:
                origins.append(self.found[sig][1])
        if self.bag is not None:
            weights, segment = self.bag.weights, self.bag.segment
        else:
            weights = [list(row) for row in config.bag_weights] if config.bag_weights is not None else None
            segment = float(config.segment_seconds) if config.segment_seconds is not None else None
        return ResolvedBag(member_paths=paths, weights=weights, segment=segment,
                           origin=" + ".join(origins), downloaded=list(self.downloaded))

    def places(self) -> str:
        config = self.config
        places = []
        if config.hf_repo:
            places.append(f"the Hugging Face cache ({self.hub_dir}, {config.hf_repo})")
        if config.legacy_files:
            places.append(f"the torch hub cache ({self.torch_dir})")
        return " and ".join(places) if places else "no cache (weights.toml lists no source)"

    def unavailable(self, policy: OfflinePolicy) -> WeightsUnavailableError:
        return unavailable(self.spec.name, _missing_files(self.spec, self.missing, self.members),
                           self.places(), self.problems, policy)


def resolve_demucs_model(
    spec: ModelSpec,
    *,
    offline: "bool | None | OfflinePolicy" = False,
    repo_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ResolvedBag:
    """Local, verified checkpoint files for every member of ``spec``'s bag (see module doc).

    ``offline`` None consults STEMSPLIT_OFFLINE; HF_HUB_OFFLINE=1 is always honoured.
    """
    config: DemucsConfig = spec.config
    if spec.unsupported:
        raise ModelError(f"{spec.name}: {spec.unsupported}")
    if repo_dir is not None:
        folder = expand_path(str(repo_dir))
        if not folder.is_dir():
            raise ModelError(f"--repo {folder}: not a folder")
        bag_file = None
        for name in (config.bag_file, f"{spec.name}.yaml"):
            if name and (folder / name).is_file():
                bag_file = folder / name
                break
        weights = [list(row) for row in config.bag_weights] if config.bag_weights is not None else None
        segment = float(config.segment_seconds) if config.segment_seconds is not None else None
        return _bag_from_folder(folder, bag_file, list(config.members), f"repo folder {folder}",
                                weights, segment, spec.name,
                                "copy the missing files there, or drop --repo to use the caches and downloads")

    policy = as_policy(offline)
    resolution = _Resolution(spec, progress)
    if not resolution.members:
        raise ModelError(f"{spec.name}: weights.toml lists no members for this model")
    resolution.look_locally()
    if resolution.missing and not policy.offline:
        resolution.probe()
        resolution.download_from_hub()
        if resolution.missing:
            resolution.download_legacy()
    if resolution.missing:
        raise resolution.unavailable(policy)
    return resolution.result()


