"""Archives a model is published in (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``), unpacked
atomically into a folder beside them.

The archive itself is an ordinary cached file: fetched and sha256-verified like any other
(``cache.http``). Unpacking then goes: take the lock of the target folder; extract every
member into a temporary folder beside it (regular files and folders only: an absolute path,
``..``, a link or a device is refused, so nothing lands outside the folder); write a stamp
naming the archive's digest and the files; rename the temporary folder into place. A
folder is used only when its stamp names the archive it came from; a half-done extraction
(disk full, Ctrl-C, a second process) leaves only a temporary folder, which the next attempt
removes. The folder is deleted with its archive (``inventory.remove_model``).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from ..errors import ModelError, StemsplitError
from .locks import file_lock

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
STAMP_NAME = ".stemsplit-unpacked.json"
COPY_BYTES = 1 << 20


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def unpacked_name(filename: str) -> str:
    """The folder an archive unpacks into: its name without the archive suffix."""
    lowered = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return filename[: -len(suffix)]
    raise ValueError(f"{filename} is not an archive")


def unpacked_folder(archive: Path) -> Path:
    return archive.parent / unpacked_name(archive.name)


def read_stamp(folder: Path) -> dict | None:
    """What a complete unpacked folder says of itself, None for anything else."""
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def is_unpacked(folder: Path, sha256: str | None = None) -> bool:
    """Whether ``folder`` holds a complete extraction (of the archive with digest ``sha256``
    when given) with every file it listed still there."""
    stamp = read_stamp(folder)
    if stamp is None or (sha256 is not None and stamp.get("sha256") != sha256):
        return False
    files = stamp.get("files")
    return isinstance(files, list) and all((folder / name).is_file() for name in files)


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    """A member's path relative to the folder, None for the folder itself; refuses escapes."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("", ".")]
    if path.is_absolute() or ".." in parts or (parts and ":" in parts[0]):
        raise ModelError(f"{archive.name}: refusing a file outside the archive's folder: {name!r}")
    return PurePosixPath(*parts) if parts else None


def _members(archive: Path) -> Iterator[tuple[PurePosixPath, bool, "IO[bytes] | None"]]:
    """(relative path, is a folder, contents) for each member, checked for safety."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                relative = _safe_name(info.filename, archive)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):
                    raise ModelError(f"{archive.name}: refusing {info.filename!r}: not a "
                                     "regular file or folder")
                if relative is None:
                    continue
                if info.is_dir():
                    yield relative, True, None
                else:
                    with bundle.open(info) as contents:
                        yield relative, False, contents
        return
    with tarfile.open(archive, "r:*") as bundle:
        for member in bundle:
            relative = _safe_name(member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise ModelError(f"{archive.name}: refusing {member.name!r}: not a regular "
                                 "file or folder (links and devices are not unpacked)")
            if relative is None:
                continue
            if member.isdir():
                yield relative, True, None
            else:
                contents = bundle.extractfile(member)
                assert contents is not None
                with contents:
                    yield relative, False, contents


def unpack_archive(archive: Path, sha256: str, folder: Path | None = None) -> Path:
    """``archive`` (already verified to have digest ``sha256``) unpacked into ``folder``
    (default: beside it, named without the suffix), atomically; an existing complete
    extraction of the same archive is returned as it is."""
    folder = folder if folder is not None else unpacked_folder(archive)
    if is_unpacked(folder, sha256):
        return folder
    with file_lock(folder):
        if is_unpacked(folder, sha256):  # another process did it while we waited
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            files = _extract(archive, temporary)
            stamp = {"archive": archive.name, "sha256": sha256, "files": files}
            (temporary / STAMP_NAME).write_text(json.dumps(stamp, indent=1))
            if folder.exists() or folder.is_symlink():
                _remove(folder)
            os.replace(temporary, folder)
        except BaseException as error:
            shutil.rmtree(temporary, ignore_errors=True)
            if isinstance(error, OSError):
                raise StemsplitError(f"cannot unpack {archive.name} into {folder.parent}: "
                                     f"{error.strerror or error}") from None
            if isinstance(error, (tarfile.TarError, zipfile.BadZipFile, EOFError)):
                raise ModelError(f"{archive}: not a readable archive ({error or type(error).__name__})",
                                 hint="delete it and run again to download it anew") from None
            raise
    return folder


def _extract(archive: Path, target: Path) -> list[str]:
    target.mkdir(parents=True)
    files: list[str] = []
    for relative, is_folder, contents in _members(archive):
        destination = target.joinpath(*relative.parts)
        if is_folder:
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as output:
            shutil.copyfileobj(contents, output, COPY_BYTES)
        files.append(relative.as_posix())
    if not files:
        raise ModelError(f"{archive.name}: the archive holds no files")
    return files


def _remove(path: Path) -> None:
    """Move an old or incomplete folder out of the way, then delete it."""
    trash = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_unpacked(archive: Path) -> Path | None:
    """Delete the folder ``archive`` was unpacked into, if any (returns it)."""
    folder = unpacked_folder(archive)
    if not folder.is_dir() or read_stamp(folder) is None:
        return None
    with file_lock(folder):
        _remove(folder)
    return folder
