"""Decoding: :func:`decode_blocks` streams a file through an ffmpeg pipe as fixed-size
float32 blocks at the model's sample rate (memory does not grow with the track's length);
:func:`decode` concatenates those blocks.

Mono sources are decoded as mono and duplicated onto every output channel in numpy
(ffmpeg's own mono -> stereo upmix lowers the level by 3 dB; the reference tools duplicate).
Sources with more channels than asked for are down-mixed by ffmpeg (``-ac``).

Non-finite samples (NaN, +-Inf) in decoded data are replaced by 0; the decoder object
returned by :func:`decode_blocks` counts them in ``nonfinite_samples``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO, Iterator, Optional

import numpy as np

from ..errors import InputError
from .ffmpeg import _ffmpeg_reason, _kill, _popen, _signal_reason, _StderrTail, _url, ffmpeg_path
from .formats import PathLike
from .probing import AudioInfo, _check_input, probe

#: Default block size of :func:`decode_blocks`, in frames (about 3 s at 44.1 kHz).
DEFAULT_BLOCK_FRAMES = 1 << 17


class _DecodeState:
    """Shared between a :class:`Decoder` and its generator (no reference cycle, so
    dropping the decoder finalizes the generator, which kills ffmpeg)."""

    def __init__(self) -> None:
        self.frames = 0
        self.nonfinite_samples = 0
        self.warnings: list[str] = []
        self.info: Optional[AudioInfo] = None
        self.proc: Optional[subprocess.Popen] = None


def _read_full(stream: IO[bytes], nbytes: int) -> bytes:
    chunks = []
    got = 0
    while got < nbytes:
        chunk = stream.read(nbytes - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def _decode_gen(
    path: Path,
    sample_rate: int,
    channels: int,
    block_frames: int,
    info: Optional[AudioInfo],
    state: _DecodeState,
) -> Iterator[np.ndarray]:
    p = _check_input(path)
    if info is None:
        info = probe(p)
    state.info = info
    # ffmpeg's mono upmix attenuates by 3 dB: decode mono as mono, duplicate here.
    src_channels = 1 if (info.channels == 1 and channels > 1) else channels
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", _url(p),
        "-map", "0:a:0",
        "-ac", str(src_channels), "-ar", str(sample_rate),
        "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]
    proc = _popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state.proc = proc
    tail = _StderrTail(proc.stderr)  # type: ignore[arg-type]
    frame_bytes = 4 * src_channels
    try:
        assert proc.stdout is not None
        while True:
            data = _read_full(proc.stdout, block_frames * frame_bytes)
            usable = len(data) - len(data) % frame_bytes
            if usable == 0:
                break
            block = np.frombuffer(data, dtype="<f4", count=usable // 4)
            block = block.reshape(-1, src_channels).T.astype(np.float32, order="C")
            if not np.isfinite(block).all():
                bad = ~np.isfinite(block)
                state.nonfinite_samples += int(np.count_nonzero(bad))
                block[bad] = 0.0
            if src_channels != channels:
                block = np.repeat(block, channels, axis=0)
            state.frames += block.shape[1]
            yield block
        returncode = proc.wait()
        lines = tail.join()
        if returncode != 0:
            if returncode < 0:
                reason = _signal_reason(returncode)
            elif any("matches no streams" in line for line in lines):
                reason = "contains no audio stream"
            else:
                reason = _ffmpeg_reason(lines, p)
            raise InputError(f"{p}: cannot decode audio ({reason})")
        state.warnings = [line for line in lines if line.strip()]
        if state.frames == 0:
            raise InputError(f"{p}: no audio samples could be decoded")
    finally:
        _kill(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        tail.join(timeout=5)


class Decoder:
    """Iterator over float32 blocks shaped ``(channels, frames)`` decoded by ffmpeg.

    Returned by :func:`decode_blocks`. ffmpeg starts on the first ``next()``. Every
    block holds ``block_frames`` frames except the last. Calling :meth:`close` (or
    leaving a ``with`` block, or dropping the last reference) kills ffmpeg if it is
    still running.

    Attributes, updated as blocks are produced:
      ``frames``: frames yielded so far;
      ``nonfinite_samples``: NaN/Inf samples replaced by 0 so far;
      ``warnings``: ffmpeg's stderr lines after a successful run (e.g. corrupt frames
      it skipped);
      ``info``: the :class:`AudioInfo` of the source (after the first ``next()``).
    """

    def __init__(
        self,
        path: PathLike,
        sample_rate: int,
        channels: int = 2,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        *,
        info: Optional[AudioInfo] = None,
    ) -> None:
        if int(sample_rate) <= 0:
            raise ValueError(f"invalid sample rate {sample_rate!r}")
        if int(channels) <= 0:
            raise ValueError(f"invalid channel count {channels!r}")
        if int(block_frames) <= 0:
            raise ValueError(f"invalid block size {block_frames!r}")
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_frames = int(block_frames)
        self._state = _DecodeState()
        self._gen = _decode_gen(
            self.path, self.sample_rate, self.channels, self.block_frames, info, self._state
        )

    @property
    def frames(self) -> int:
        return self._state.frames

    @property
    def nonfinite_samples(self) -> int:
        return self._state.nonfinite_samples

    @property
    def warnings(self) -> list[str]:
        return list(self._state.warnings)

    @property
    def info(self) -> Optional[AudioInfo]:
        return self._state.info

    @property
    def process(self) -> Optional[subprocess.Popen]:
        """The ffmpeg subprocess, once started (for diagnostics and tests)."""
        return self._state.proc

    def __iter__(self) -> "Decoder":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._gen)

    def close(self) -> None:
        """Stop decoding; kills ffmpeg if it is still running."""
        self._gen.close()

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def decode_blocks(
    path: PathLike,
    sample_rate: int,
    channels: int = 2,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    *,
    info: Optional[AudioInfo] = None,
) -> Decoder:
    """Stream ``path`` as float32 blocks ``(channels, frames)`` at ``sample_rate``.

    Pass ``info`` (from :func:`probe`) to skip probing the file a second time. Raises
    InputError (on the first ``next()`` or when ffmpeg fails) for inputs that cannot
    be decoded; see :class:`Decoder` for the counters it keeps.
    """
    return Decoder(path, sample_rate, channels, block_frames, info=info)


def decode(path: PathLike, sample_rate: int, channels: int = 2) -> np.ndarray:
    """Decode the whole of ``path``: float32 ``(channels, frames)``. Non-finite
    samples are replaced by 0 (use :func:`decode_blocks` to learn how many)."""
    with decode_blocks(path, sample_rate, channels) as decoder:
        blocks = list(decoder)
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks, axis=1)
