"""The cache unpacks published archives atomically (cache.archives)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from stemsplit.cache import archives
from stemsplit.cache.archives import (STAMP_NAME, is_unpacked, unpack_archive, unpacked_folder,
                                      unpacked_name)
from stemsplit.errors import ModelError, StemsplitError

FILES = {"checkpoint": b'model_checkpoint_path: "model"\n', "model.index": b"index" * 100,
         "model.data-00000-of-00001": bytes(range(256)) * 4000}


def _tar(path: Path, files: dict[str, bytes], *, prefix: str = "", extra=None) -> str:
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(bundle)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpacks_into_a_folder_beside_the_archive_once(tmp_path):
    archive = tmp_path / "spleeter-2stems-v1.4.0.tar.gz"
    digest = _tar(archive, FILES, prefix="./")
    folder = unpack_archive(archive, digest)
    assert folder == tmp_path / "spleeter-2stems-v1.4.0" == unpacked_folder(archive)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != STAMP_NAME} == FILES
    assert is_unpacked(folder, digest) and not is_unpacked(folder, "0" * 64)
    before = (folder / STAMP_NAME).stat().st_mtime_ns
    assert unpack_archive(archive, digest) == folder
    assert (folder / STAMP_NAME).stat().st_mtime_ns == before  # reused, not unpacked again
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_different_archive_or_a_missing_file_unpacks_again(tmp_path):
    archive = tmp_path / "m.tgz"
    first = _tar(archive, FILES)
    folder = unpack_archive(archive, first)
    (folder / "model.index").unlink()
    assert not is_unpacked(folder, first)
    unpack_archive(archive, first)
    assert (folder / "model.index").read_bytes() == FILES["model.index"]
    second = _tar(archive, {"only": b"new"})
    unpack_archive(archive, second)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["only", STAMP_NAME])


def test_zip_archives_and_nested_folders(tmp_path):
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("2stems/", "")
        for name, data in FILES.items():
            bundle.writestr(f"2stems/{name}", data)
    folder = unpack_archive(archive, "z" * 64)
    assert (folder / "2stems" / "model.index").read_bytes() == FILES["model.index"]


@pytest.mark.parametrize("member", ["../escape", "/etc/passwd", "a/../../escape"])
def test_members_outside_the_folder_are_refused(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    digest = _tar(archive, {member: b"x"})
    with pytest.raises(ModelError, match="outside"):
        unpack_archive(archive, digest)
    assert not (tmp_path / "escape").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.tar.gz"]


def test_links_and_devices_are_refused(tmp_path):
    def link(bundle):
        info = tarfile.TarInfo("model.meta")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        bundle.addfile(info)

    archive = tmp_path / "links.tar.gz"
    digest = _tar(archive, FILES, extra=link)
    with pytest.raises(ModelError, match="not a regular file"):
        unpack_archive(archive, digest)
    assert not unpacked_folder(archive).exists()


def test_a_corrupt_archive_is_one_clear_error(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    _tar(archive, FILES)
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(ModelError, match="not a readable archive"):
        unpack_archive(archive, "0" * 64)
    assert [p.name for p in tmp_path.iterdir()] == ["broken.tar.gz"]


def test_an_interrupted_or_failed_extraction_leaves_nothing(tmp_path, monkeypatch):
    archive = tmp_path / "m.tar.gz"
    digest = _tar(archive, FILES)
    calls = []

    def copy(source, target, length):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        shutil.copyfileobj(source, target, length)

    monkeypatch.setattr(archives.shutil, "copyfileobj", copy)
    with pytest.raises(KeyboardInterrupt):
        unpack_archive(archive, digest)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tar.gz"]

    def full(source, target, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archives.shutil, "copyfileobj", full)
    with pytest.raises(StemsplitError, match="No space left on device"):
        unpack_archive(archive, digest)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tar.gz"]


def test_names():
    assert unpacked_name("2stems.tar.gz") == "2stems"
    assert unpacked_name("A.TGZ") == "A"
    assert unpacked_name("x.zip") == "x"
    with pytest.raises(ValueError):
        unpacked_name("model.ckpt")
