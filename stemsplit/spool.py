"""Audio parked on disk as raw float32 while a track is separated: the one spool format.

A spool file holds (frames, channels) float32 samples, frames interleaved, with no header.
``RawWriter`` appends (channels, m) blocks, ``RawReader`` reads them back in order. Two
users:

* ``MixtureSpool``: the decoded mixture, written once while its statistics are measured,
  then read as often as the models need it (once per model, and again for a complement made
  with ``--other-method minus``). ``ArrayMixture`` is the same interface over an array in
  memory, for the Python API.
* ``StemSpool``: one file per model and stem, where an ensemble keeps its earlier models'
  stems until the last model that gives a stem runs.

Every spool file is an unnamed temporary (``temporaries.unnamed_file``) in ``TMPDIR`` (or
``directory``): nothing is left behind however the process ends, SIGKILL included. numpy
only; no torch.
"""

from __future__ import annotations

from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .errors import OutputError
from .temporaries import PositionedReader, unnamed_file

BLOCK_FRAMES = 1 << 18
"""Frames per block read back from a mixture (~6 s at 44.1 kHz)."""

ROOM_HINT = "free some space, or set TMPDIR to a disk with room"


class RawWriter:
    """Appends (channels, m) float32 blocks to an open raw spool file (left open: its owner
    closes it)."""

    def __init__(self, file: BinaryIO, channels: int, *, what: str) -> None:
        """``what`` names the contents in error messages ("the decoded audio")."""
        self.channels, self.what = channels, what
        self.frames = 0
        self._file = file

    def write(self, block: np.ndarray) -> None:
        try:
            self._file.write(np.ascontiguousarray(np.asarray(block, np.float32).T).tobytes())
        except OSError as error:
            raise self._error(error) from None
        self.frames += block.shape[-1]

    def close(self) -> None:
        """Push what is buffered to the file (which stays open for reading)."""
        try:
            self._file.flush()
        except OSError as error:
            raise self._error(error) from None

    def _error(self, error: OSError) -> OutputError:
        return OutputError(f"cannot spool {self.what} to a temporary file: {error.strerror}",
                           hint=ROOM_HINT)


class RawReader:
    """Reads a raw spool file in order from its start, with a position of its own."""

    def __init__(self, file: BinaryIO, channels: int) -> None:
        self.channels = channels
        self._file = PositionedReader(file)

    def read(self, frames: int) -> np.ndarray:
        """Exactly the next ``frames`` frames, (channels, frames)."""
        data = self._file.read(frames * 4 * self.channels)
        if len(data) != frames * 4 * self.channels:
            raise AssertionError("a spool file ended early")
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
        """Nothing to release: the file belongs to the spool."""


# -- the mixture ---------------------------------------------------------------------------
class MixtureSpool:
    """A decoded mixture on disk: ``blocks`` (channels, m) float32 are written as they come
    (the caller measures what it needs of them on the way), then read back as often as
    needed."""

    def __init__(self, blocks: Iterable[np.ndarray], channels: int,
                 directory: str | None = None) -> None:
        self.channels = channels
        self._file: BinaryIO | None = unnamed_file(directory, what="a spool for the decoded audio")
        try:
            writer = RawWriter(self._file, channels, what="the decoded audio")
            for block in blocks:
                writer.write(block)
            writer.close()
        except BaseException:
            self.close()
            raise
        self.frames = writer.frames

    def reader(self) -> RawReader:
        """A reader from the first frame."""
        assert self._file is not None, "the spool is closed"
        return RawReader(self._file, self.channels)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """The whole mixture again, in blocks."""
        reader = self.reader()
        try:
            yield from reader.blocks(block_frames)
        finally:
            reader.close()

    def close(self) -> None:
        """Release the file (its space is freed at once: it has no name)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


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
    """One unnamed temporary file (in TMPDIR, or ``directory``) per model and stem; ``close``
    releases them all, whatever state they are in."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self._files: dict[tuple[int, str], BinaryIO] = {}

    def writer(self, member: int, stem: str, channels: int) -> RawWriter:
        self.remove(member, stem)
        file = unnamed_file(self.directory, what="a spool for an ensemble's stems")
        self._files[(member, stem)] = file
        return RawWriter(file, channels, what="an ensemble's stems")

    def reader(self, member: int, stem: str, channels: int) -> RawReader:
        return RawReader(self._files[(member, stem)], channels)

    @property
    def held(self) -> int:
        """How many stems the spool holds now."""
        return len(self._files)

    def remove(self, member: int, stem: str) -> None:
        file = self._files.pop((member, stem), None)
        if file is not None:
            try:
                file.close()
            except OSError:
                pass

    def close(self) -> None:
        for key in list(self._files):
            self.remove(*key)
