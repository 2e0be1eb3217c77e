"""Audio parked on disk as raw float32 while a track is separated: the one spool format.

A spool file holds (frames, channels) float32 samples, frames interleaved, with no header.
``RawWriter`` appends (channels, m) blocks, ``RawReader`` reads them back in order. Two
users:

* ``MixtureSpool``: the decoded mixture, written once while its statistics are measured,
  then read as often as the models need it (once per model, and again for a complement made
  with ``--other-method minus``). ``ArrayMixture`` is the same interface over an array in
  memory, for the Python API.
* ``StemSpool``: a temporary folder with one file per model and stem, where an ensemble
  keeps its earlier models' stems until the last model that gives a stem runs.

Every temporary file or folder is made in ``TMPDIR`` (or ``directory``) and removed by
``close``, whatever state it is in. numpy only; no torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .errors import OutputError

BLOCK_FRAMES = 1 << 18
"""Frames per block read back from a mixture (~6 s at 44.1 kHz)."""

ROOM_HINT = "free some space, or set TMPDIR to a disk with room"


def _temporary_file(prefix: str, suffix: str, directory: str | None) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    except OSError as error:
        raise OutputError(f"cannot create a temporary file: {error.strerror}",
                          hint="set TMPDIR to a writable folder") from None


class RawWriter:
    """Appends (channels, m) float32 blocks to a raw spool file."""

    def __init__(self, path: str | Path, channels: int, *, what: str,
                 file: BinaryIO | None = None) -> None:
        """``what`` names the contents in error messages ("the decoded audio"); ``file`` is
        an already open binary file for ``path``."""
        self.path, self.channels, self.what = Path(path), channels, what
        self.frames = 0
        try:
            self._file = file if file is not None else open(path, "wb")
        except OSError as error:
            raise self._error(error) from None

    def write(self, block: np.ndarray) -> None:
        try:
            self._file.write(np.ascontiguousarray(np.asarray(block, np.float32).T).tobytes())
        except OSError as error:
            raise self._error(error) from None
        self.frames += block.shape[-1]

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as error:
            raise self._error(error) from None

    def _error(self, error: OSError) -> OutputError:
        return OutputError(f"cannot spool {self.what} to {self.path}: {error.strerror}",
                           hint=ROOM_HINT)


class RawReader:
    """Reads a raw spool file in order."""

    def __init__(self, path: str | Path, channels: int) -> None:
        self.path, self.channels = Path(path), channels
        self._file = open(path, "rb")

    def read(self, frames: int) -> np.ndarray:
        """Exactly the next ``frames`` frames, (channels, frames)."""
        data = self._file.read(frames * 4 * self.channels)
        if len(data) != frames * 4 * self.channels:
            raise AssertionError(f"{self.path} ended early")
        return np.frombuffer(data, dtype=np.float32).reshape(frames, self.channels).T

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """(channels, frames) blocks of up to ``block_frames`` until the end."""
        frame_bytes = 4 * self.channels
        while True:
            data = self._file.read(block_frames * frame_bytes)
            if not data:
                return
            yield np.frombuffer(data, dtype=np.float32).reshape(-1, self.channels).T

    def close(self) -> None:
        self._file.close()


# -- the mixture ---------------------------------------------------------------------------
class MixtureSpool:
    """A decoded mixture on disk: ``blocks`` (channels, m) float32 are written as they come
    (the caller measures what it needs of them on the way), then read back as often as
    needed."""

    def __init__(self, blocks: Iterable[np.ndarray], channels: int,
                 directory: str | None = None) -> None:
        self.channels = channels
        handle, name = _temporary_file("stemsplit-", ".f32", directory)
        self.path = Path(name)
        self._readers: list[RawReader] = []
        try:
            writer = RawWriter(self.path, channels, what="the decoded audio",
                               file=os.fdopen(handle, "wb"))
            try:
                for block in blocks:
                    writer.write(block)
            finally:
                writer.close()
        except BaseException:
            self.close()
            raise
        self.frames = writer.frames

    def reader(self) -> RawReader:
        """A reader from the first frame (closed with the spool)."""
        reader = RawReader(self.path, self.channels)
        self._readers.append(reader)
        return reader

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """The whole mixture again, in blocks."""
        reader = self.reader()
        try:
            yield from reader.blocks(block_frames)
        finally:
            reader.close()

    def close(self) -> None:
        for reader in self._readers:
            try:
                reader.close()
            except OSError:
                pass
        self._readers = []
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _ArrayReader:
    def __init__(self, array: np.ndarray) -> None:
        self.array, self.position = array, 0

    def read(self, frames: int) -> np.ndarray:
        block = self.array[:, self.position:self.position + frames]
        if block.shape[-1] != frames:
            raise AssertionError("the mixture ended early")
        self.position += frames
        return block

    def close(self) -> None:
        pass


class ArrayMixture:
    """A mixture already in memory, (channels, frames) float32, with ``MixtureSpool``'s
    interface."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.channels, self.frames = self.array.shape

    def reader(self) -> _ArrayReader:
        return _ArrayReader(self.array)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        yield self.array

    def close(self) -> None:
        pass


# -- an ensemble's stems -------------------------------------------------------------------
class StemSpool:
    """A temporary folder (in TMPDIR, or ``directory``) holding one raw float32 file per
    model and stem; ``close`` deletes it, whatever state it is in."""

    def __init__(self, directory: str | None = None) -> None:
        try:
            self.path = Path(tempfile.mkdtemp(prefix="stemsplit-ensemble-", dir=directory))
        except OSError as error:
            raise OutputError(f"cannot create a temporary folder: {error.strerror}",
                              hint="set TMPDIR to a writable folder") from None
        self._open: list[RawWriter | RawReader] = []

    def file(self, member: int, stem: str) -> Path:
        return self.path / f"{member}-{stem}.f32"

    def writer(self, member: int, stem: str, channels: int) -> RawWriter:
        writer = RawWriter(self.file(member, stem), channels, what="an ensemble's stems")
        self._open.append(writer)
        return writer

    def reader(self, member: int, stem: str, channels: int) -> RawReader:
        reader = RawReader(self.file(member, stem), channels)
        self._open.append(reader)
        return reader

    def remove(self, member: int, stem: str) -> None:
        try:
            os.unlink(self.file(member, stem))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        for handle in self._open:
            try:
                handle._file.close()
            except OSError:
                pass
        self._open = []
        shutil.rmtree(self.path, ignore_errors=True)
