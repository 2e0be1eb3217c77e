"""What this machine has of a model: listing, re-hashing and removing its files.

Only the standard library: ``stemsplit models`` lists every model's state in a blink.

Where a model's files are is asked here by every command (``models``, ``models info``,
``models verify``) the way a family's ``fetch`` looks: stemsplit's caches first, then the
copies a family reuses from outside them (a reference tool's own model folder, the files an
installed package ships), which the family names through ``register_finder``. Those are
listed and re-hashed but never deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ModelError
from .archives import is_archive, remove_unpacked
from .hub import hf_cached, hf_repo_folder
from .integrity import ChecksumStore, FileCheck, check_file, discard
from .locations import hf_cache_dir, url_folder
from .locks import file_lock

if TYPE_CHECKING:  # pragma: no cover
    from ..specs import ModelFile, ModelSpec


@dataclass
class LocalFile:
    """One published file of a model and where (if anywhere) this machine has it."""

    file: "ModelFile"
    path: Path | None
    managed: bool = True
    """False for a copy outside stemsplit's caches (a family reuses it; never deleted)."""

    @property
    def size(self) -> int | None:
        try:
            return self.path.stat().st_size if self.path is not None else None
        except OSError:
            return None


Finder = Callable[["ModelSpec"], "list[LocalFile]"]
_FINDERS: dict[str, Finder] = {}


def register_finder(family: str, finder: Finder) -> None:
    """Let ``family`` name the copies of a model's files it reuses from outside stemsplit's
    caches (``finder(spec)``: LocalFiles with ``managed`` False, whose ModelFiles make one
    complete copy, e.g. ``source`` "local" and one ``member``). Asked only when the caches
    lack the model, as the family's ``fetch`` does."""
    _FINDERS[family] = finder


def local_path(file: "ModelFile") -> Path | None:
    """Where ``file`` is cached on this machine (no hashing, no network), else None."""
    if file.source == "hf":
        return hf_cached(file.location, file.filename, hf_cache_dir())
    path = url_folder(file.folder) / file.filename
    return path if path.is_file() else None


def local_files(spec: "ModelSpec") -> list[LocalFile]:
    """Each of ``spec``'s files and where stemsplit's caches have it; where they lack the
    model, the copy its family reuses from elsewhere (if any) too."""
    files = [LocalFile(file, local_path(file)) for file in spec.files]
    finder = _FINDERS.get(spec.family)
    if finder is not None and not _complete(files):
        files += finder(spec)
    return files


def _complete(files: list[LocalFile]) -> bool:
    """Whether ``files`` hold everything the model needs (see ``is_cached``)."""
    copies: dict[object, dict[object, bool]] = {}  # need -> copy -> all present so far
    for local in files:
        file = local.file
        if file.member is not None:
            need: object = ("member", file.member)
            copy: object = (file.source, file.location)
        elif file.required:
            need = copy = ("file", file.filename)
        else:
            continue
        have = copies.setdefault(need, {})
        have[copy] = have.get(copy, True) and local.path is not None
    return bool(copies) and all(any(have.values()) for have in copies.values())


def is_cached(spec: "ModelSpec") -> bool:
    """Whether everything ``spec`` needs is on this machine (no network, no checksum pass).

    Files that name the same ``member`` are alternatives (a bag member from the Hub or from
    its original URL; a release archive or the files of a wheel): one complete copy is
    enough, a copy being the files of one source (``source`` and ``location``). Every other
    file is needed unless it is marked optional (``required`` False).
    """
    return _complete(local_files(spec))


def verify_model(spec: ModelSpec, *, delete: bool = True) -> list[FileCheck]:
    """Re-hash every cached file of ``spec`` against its known digests. Files that fail are
    deleted (unless ``delete`` is False), so that the next run fetches them again."""
    store = ChecksumStore()
    results = []
    for local in local_files(spec):
        if local.path is None:
            continue
        check = check_file(local.path, local.file.sha256, store=store, thorough=True,
                           source=local.file.location,
                           recorded_from=local.file.sha256_from)
        if not check.ok and not local.managed:
            check.detail += "; kept (not in stemsplit's caches)"
        elif not check.ok and delete:
            check.detail += "; deleted" if discard(local.path, store) else "; could not be deleted"
        results.append(check)
    return results


def _used_elsewhere(spec: ModelSpec, file: ModelFile, others: list[ModelSpec]) -> bool:
    return any(other.name != spec.name and any(
        (f.source, f.location, f.filename) == (file.source, file.location, file.filename)
        for f in other.files) for other in others)


def remove_model(spec: ModelSpec, others: list[ModelSpec] | None = None) -> list[Path]:
    """Delete ``spec``'s files from every cache (for the Hugging Face cache: from every
    snapshot, with their blobs, and the repo folder once nothing is left in it). Files another
    model of ``others`` also lists are kept; an archive goes with the folder it was unpacked
    into. Returns what was deleted."""
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
            path = url_folder(file.folder) / file.filename
            if is_archive(file.filename):
                folder = remove_unpacked(path)
                if folder is not None:
                    removed.append(folder)
            if path.is_file():
                with file_lock(path):
                    _unlink(path, removed)
                store.forget([path])
            if "/" in file.filename:  # a pip file's folders (<project>-<version>/...), if empty
                _prune(path.parent, url_folder(file.folder))
    for repo in repos:
        folder = hf_repo_folder(repo, hub_dir)
        snapshots = folder / "snapshots"
        if folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in snapshots.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(hub_dir / ".locks" / folder.name, ignore_errors=True)
    return removed


def _prune(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents below ``top`` while they are empty."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


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
