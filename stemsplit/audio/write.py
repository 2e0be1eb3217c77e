"""Writing stems, block by block, to a file or a stream: every audio file write lives here.

:func:`open_stem_writer` returns a :class:`StemWriter`. Samples go to a hidden
temporary file next to the destination (``.<name>.<owner>.part``, the owner being
``stemsplit~HOST~PID~RANDOM``: see ``stemsplit.temporaries``) which is renamed into place
(:func:`os.replace`) by :meth:`StemWriter.commit`; :meth:`StemWriter.abort` (or leaving a
``with`` block by an exception) deletes it, so an interrupted run never leaves a
half-written output under the real name, and a later run removes the file of a process
that was killed (``sweep_destination``).

Clip handling and sample conversion follow the reference separator CLI's ``prevent_clip``
and ``encode_wav`` bit for bit at the model rate (tests/test_audio.py compares them):

* ``rescale``: divide the whole stem by ``max(1.01 * peak, 1)``. The peak is only known
  at the end, so the float32 samples are spooled to an unnamed temporary file in the
  destination's folder (nothing survives the process) and encoded block by block at commit.
* ``clamp``: clip to [-0.99, 0.99]; ``tanh``: ``tanh(x)``; ``none``: unchanged.
* int16 = ``trunc(clip(x, -1, 1) * 32767)``; int24 = ``trunc(clip(x, -1, 1) * 8388607)``;
  float32 = ``clip(x, -1, 1)``.

WAV and FLAC at the model rate are written with soundfile from those integers, so
libsndfile does not re-scale. MP3, and any output resampled to another rate, are
encoded by an ffmpeg subprocess fed float32 (already clip-processed and clipped to
[-1, 1]); resampled outputs are also spooled so their length can be made exact
(``output_frames``, or ``round(frames * output_rate / sample_rate)``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Optional, Union

import numpy as np

from ..errors import OutputError, UsageError
from ..temporaries import owned_name, sweep, unnamed_file
from .ffmpeg import _ffmpeg_reason, _kill, _popen, _signal_reason, _StderrTail, _url, ffmpeg_path
from .formats import MP3_BITRATE_RANGE_KBPS, MP3_SAMPLE_RATES, OUTPUT_FORMATS, PathLike

CLIP_MODES = ("rescale", "clamp", "tanh", "none")

_COPY_BLOCK_FRAMES = 1 << 16


_ERRNO_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (file size limit exceeded)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "folder does not exist",
    errno.ENOTDIR: "folder does not exist",
    errno.ENAMETOOLONG: "file name too long",
    errno.EPIPE: "broken pipe",
    errno.EISDIR: "is a directory",
    errno.EIO: "input/output error",
}
if hasattr(errno, "EDQUOT"):
    _ERRNO_REASONS[errno.EDQUOT] = "disk quota exceeded"


def _output_error(display: str, exc: BaseException) -> OutputError:
    if isinstance(exc, OutputError):
        return exc
    if isinstance(exc, OSError):
        reason = _ERRNO_REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
    else:
        reason = str(exc) or type(exc).__name__
    return OutputError(f"cannot write {display}: {reason}")


def _soundfile_reason(exc: BaseException, handle: object = None) -> str:
    text = getattr(exc, "error_string", None) or str(exc) or "write failed"
    if handle is not None:
        # soundfile reports libsndfile's generic message ("System error"); the
        # handle's own message carries the system reason ("File too large").
        try:
            import soundfile

            detail = soundfile._ffi.string(
                soundfile._snd.sf_strerror(handle._file)  # type: ignore[attr-defined]
            ).decode("utf-8", "replace")
            if detail and not detail.lower().startswith("no error"):
                text = detail
        except Exception:
            pass
    text = re.sub(r"^System error\s*:\s*", "", text.strip()).rstrip(".")
    return _known_reason(text)


def _known_reason(text: str) -> str:
    """Our wording for a message that carries a system error (``No space left on
    device``, ``File too large``...), else the message itself."""
    lowered = text.lower()
    for code, reason in _ERRNO_REASONS.items():
        if os.strerror(code).lower() in lowered:
            return reason
    return text


def _quantize(x: np.ndarray, bits: int, float32: bool) -> np.ndarray:
    """The reference CLI's encode_wav conversion of float32 samples (any shape)."""
    clipped = np.clip(x, np.float32(-1), np.float32(1))
    if float32:
        return clipped.astype(np.float32, copy=False)
    if bits == 16:
        return (clipped * np.float32(2**15 - 1)).astype(np.int16)
    # 24 bits in the top bytes of an int32, so libsndfile keeps them unscaled.
    return (clipped * np.float32(2**23 - 1)).astype(np.int32) << 8


def _apply_clip(x: np.ndarray, mode: str) -> np.ndarray:
    """The reference CLI's prevent_clip for the element-wise modes (rescale is done at commit)."""
    if mode == "clamp":
        return np.clip(x, np.float32(-0.99), np.float32(0.99))
    if mode == "tanh":
        # tanh in float64 rounded to float32 matches torch's float32 tanh far more
        # often than numpy's float32 tanh does (not always bit for bit).
        return np.tanh(x.astype(np.float64)).astype(np.float32)
    return x


class _SoundFileSink:
    """WAV/FLAC at the model rate through libsndfile, from the reference CLI's integers."""

    def __init__(self, tmp: Path, display: str, sample_rate: int, channels: int,
                 fmt: str, bits: int, float32: bool) -> None:
        import soundfile

        self._soundfile = soundfile
        self._display = display
        self._bits = bits
        self._float32 = float32
        self.frames = 0
        subtype = "FLOAT" if float32 else ("PCM_16" if bits == 16 else "PCM_24")
        try:
            self._file = soundfile.SoundFile(
                str(tmp), "w", samplerate=sample_rate, channels=channels,
                subtype=subtype, format=fmt.upper(),
            )
        except Exception as exc:
            raise OutputError(f"cannot write {display}: {_soundfile_reason(exc)}") from None

    def write(self, interleaved: np.ndarray) -> None:
        data = _quantize(interleaved, self._bits, self._float32)
        try:
            self._file.write(data)
        except Exception as exc:  # LibsndfileError, or soundfile's short-write assert
            raise OutputError(
                f"cannot write {self._display}: {_soundfile_reason(exc, self._file)}"
            ) from None
        self.frames += len(data)

    def close(self, tmp: Path) -> None:
        try:
            self._file.close()
        except Exception as exc:
            raise OutputError(f"cannot write {self._display}: {_soundfile_reason(exc)}") from None
        # libsndfile can lose a failed header update on close: check what is on disk.
        try:
            frames = self._soundfile.info(str(tmp)).frames
        except Exception as exc:
            raise OutputError(
                f"cannot write {self._display}: file unreadable after writing "
                f"({_soundfile_reason(exc)})"
            ) from None
        if frames != self.frames:
            raise OutputError(
                f"cannot write {self._display}: only {frames} of {self.frames} frames "
                "were written (disk full?)"
            )

    def abort(self) -> None:
        try:
            self._file.close()
        except Exception:
            pass


class _FFmpegSink:
    """MP3, and resampled outputs: float32 piped into an ffmpeg encoder."""

    def __init__(self, tmp: Path, display: str, sample_rate: int, output_sample_rate: int,
                 channels: int, fmt: str, bits: int, float32: bool, mp3_bitrate: int,
                 output_frames: Optional[int]) -> None:
        self._display = display
        self._tmp = tmp
        cmd = [
            ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0",
        ]
        if output_sample_rate != sample_rate:
            chain = f"aresample={output_sample_rate}"
            if output_frames is not None:
                chain += f",apad=whole_len={output_frames},atrim=end_sample={output_frames}"
            cmd += ["-af", chain]
        cmd += ["-ar", str(output_sample_rate), "-ac", str(channels)]
        if fmt == "mp3":
            # compression_level is LAME's quality setting: 2 as the reference CLI uses
            cmd += ["-c:a", "libmp3lame", "-b:a", f"{int(mp3_bitrate)}k",
                    "-compression_level", "2"]
        elif fmt == "flac":
            cmd += ["-c:a", "flac"]
            cmd += ["-sample_fmt", "s16"] if bits == 16 else ["-sample_fmt", "s32",
                                                              "-bits_per_raw_sample", "24"]
        elif float32:
            cmd += ["-c:a", "pcm_f32le"]
        else:
            cmd += ["-c:a", "pcm_s16le" if bits == 16 else "pcm_s24le"]
        cmd += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
                "-f", fmt, _url(tmp)]
        self._proc = _popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        self._tail = _StderrTail(self._proc.stderr)  # type: ignore[arg-type]

    def _failure(self, exc: Optional[BaseException] = None) -> OutputError:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        returncode = self._proc.wait()
        lines = self._tail.join(timeout=5)
        if returncode < 0:
            reason = _signal_reason(returncode)
        elif returncode != 0:
            reason = _known_reason(_ffmpeg_reason(lines, self._tmp))
        elif exc is not None:
            return _output_error(self._display, exc)
        else:
            reason = "ffmpeg failed"
        return OutputError(f"cannot write {self._display}: {reason}")

    def write(self, interleaved: np.ndarray) -> None:
        data = np.clip(interleaved, np.float32(-1), np.float32(1)).astype("<f4", copy=False)
        try:
            self._proc.stdin.write(data.tobytes())  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as exc:
            raise self._failure(exc) from None

    def close(self, tmp: Path) -> None:
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as exc:
            raise self._failure(exc) from None
        returncode = self._proc.wait()
        lines = self._tail.join(timeout=5)
        if returncode != 0:
            reason = (_signal_reason(returncode) if returncode < 0
                      else _known_reason(_ffmpeg_reason(lines, self._tmp)))
            raise OutputError(f"cannot write {self._display}: {reason}")

    def abort(self) -> None:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        _kill(self._proc)
        self._tail.join(timeout=5)


def _create_hidden(directory: Path, name: str, suffix: str, display: str) -> Path:
    stem = name[:150] or "stem"
    for _ in range(100):
        candidate = directory / owned_name(f".{stem}.", suffix)
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _output_error(display, exc) from None
        os.close(fd)
        return candidate
    raise OutputError(f"cannot write {display}: could not create a temporary file in {directory}")


def sweep_destination(folder: Path) -> list[Path]:
    """Remove the temporaries that killed runs left in ``folder`` (their owner gone: see
    ``stemsplit.temporaries``); a live process's files are kept."""
    return sweep(folder, ".")


def _remove(path: Optional[Path]) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            pass


class StemWriter:
    """Writes one stem, block by block; see :func:`open_stem_writer`.

    ``write(block)`` takes float32 ``(channels, frames)``; ``commit()`` finishes the
    file and moves it into place, returning its path (or None for a stream target);
    ``abort()`` deletes everything written. As a context manager it commits on
    success and aborts on any exception (KeyboardInterrupt included). A writer that is
    garbage-collected without being committed is aborted.

    Attributes: ``path`` (destination, None for a stream), ``frames_written`` (frames
    received at ``sample_rate``), ``nonfinite_samples`` (NaN/Inf samples received and
    replaced by 0), ``output_sample_rate`` (the rate actually written; for MP3 it is
    raised to the nearest rate MP3 supports), ``format``.
    """

    def __init__(
        self,
        target: Union[PathLike, IO[bytes]],
        *,
        sample_rate: int,
        output_sample_rate: Optional[int] = None,
        channels: int = 2,
        format: Optional[str] = None,
        bits: int = 16,
        float32: bool = False,
        mp3_bitrate: int = 320,
        clip_mode: str = "rescale",
        output_frames: Optional[int] = None,
        overwrite: bool = True,
    ) -> None:
        self._state = "new"
        self._tmp: Optional[Path] = None
        self._spool: Optional[IO[bytes]] = None
        self._sink: Union[_SoundFileSink, _FFmpegSink, None] = None

        if isinstance(target, (str, os.PathLike)):
            self.path: Optional[Path] = Path(target)
            self._stream: Optional[IO[bytes]] = None
            self._display = str(self.path)
            directory = self.path.parent
            name = self.path.name
        elif hasattr(target, "write"):
            self.path = None
            self._stream = target  # type: ignore[assignment]
            stream_name = getattr(target, "name", None)
            self._display = (
                "<stdout>" if stream_name in ("<stdout>", 1) else
                str(stream_name) if isinstance(stream_name, str) else "<stream>"
            )
            directory = Path(tempfile.gettempdir())
            name = "stemsplit-stream"
        else:
            raise TypeError(f"cannot write audio to {target!r}")

        if format is None:
            suffix = self.path.suffix.lower().lstrip(".") if self.path is not None else ""
            format = suffix if suffix in OUTPUT_FORMATS else "wav"
        format = format.lower()
        if format not in OUTPUT_FORMATS:
            raise UsageError(f"unknown output format {format!r} (choose wav, flac or mp3)")
        if clip_mode not in CLIP_MODES:
            raise UsageError(f"unknown clip mode {clip_mode!r} (choose {', '.join(CLIP_MODES)})")
        if format != "mp3" and not float32 and bits not in (16, 24):
            raise UsageError(f"unsupported bit depth {bits!r} (choose 16 or 24)")
        if float32 and format != "wav":
            raise UsageError(f"{format.upper()} cannot store float32 samples (only WAV can)")
        if int(sample_rate) <= 0 or int(channels) <= 0:
            raise ValueError("sample_rate and channels must be positive")
        low, high = MP3_BITRATE_RANGE_KBPS
        if format == "mp3" and not low <= int(mp3_bitrate) <= high:
            raise UsageError(f"unsupported MP3 bitrate {mp3_bitrate!r} kbit/s ({low} to {high})")

        self.format = format
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.bits = int(bits)
        self.float32 = bool(float32)
        self.mp3_bitrate = int(mp3_bitrate)
        self.clip_mode = clip_mode
        self.frames_written = 0
        self.nonfinite_samples = 0
        self._peak = np.float32(0)

        out_rate = int(output_sample_rate) if output_sample_rate else self.sample_rate
        if out_rate <= 0:
            raise ValueError("output_sample_rate must be positive")
        if format == "mp3" and out_rate not in MP3_SAMPLE_RATES:
            higher = [r for r in MP3_SAMPLE_RATES if r >= out_rate]
            new_rate = higher[0] if higher else MP3_SAMPLE_RATES[-1]
            if output_frames is not None:
                output_frames = (output_frames * new_rate + out_rate // 2) // out_rate
            out_rate = new_rate
        self.output_sample_rate = out_rate
        self._output_frames = None if output_frames is None else int(output_frames)
        self._resample = out_rate != self.sample_rate
        self._use_ffmpeg = format == "mp3" or self._resample
        self._needs_spool = clip_mode == "rescale" or self._resample

        if not directory.is_dir():
            if directory.exists():
                raise OutputError(f"cannot write {self._display}: {directory} is not a folder")
            raise OutputError(f"cannot write {self._display}: folder {directory} does not exist")
        if self.path is not None:
            if self.path.is_dir():
                raise OutputError(f"cannot write {self._display}: is a directory")
            if not overwrite and self.path.exists():
                raise OutputError(f"cannot write {self._display}: file already exists")
        self._overwrite = overwrite

        if self.path is not None:
            sweep_destination(directory)
        self._tmp = _create_hidden(directory, name, ".part", self._display)
        self._state = "open"
        try:
            if self._needs_spool:
                self._spool = unnamed_file(directory, what=f"a spool for {self._display}")
            else:
                self._sink = self._open_sink()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _output_error(self._display, exc) from None
            raise

    # -- internals

    def _open_sink(self) -> Union[_SoundFileSink, _FFmpegSink]:
        assert self._tmp is not None
        if self._use_ffmpeg:
            out_frames = self._output_frames
            if self._resample and out_frames is None:
                out_frames = (
                    self.frames_written * self.output_sample_rate + self.sample_rate // 2
                ) // self.sample_rate
            return _FFmpegSink(
                self._tmp, self._display, self.sample_rate, self.output_sample_rate,
                self.channels, self.format, self.bits, self.float32, self.mp3_bitrate,
                out_frames if self._resample else None,
            )
        return _SoundFileSink(
            self._tmp, self._display, self.sample_rate, self.channels, self.format,
            self.bits, self.float32,
        )

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"stem writer for {self._display} is {self._state}")

    # -- public

    def write(self, block: np.ndarray) -> None:
        """Append float32 samples shaped ``(channels, frames)`` (1-D allowed for mono)."""
        self._check_open()
        a = np.asarray(block, dtype=np.float32)
        if a.ndim == 1 and self.channels == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[0] != self.channels:
            raise ValueError(
                f"expected a block shaped ({self.channels}, frames), got {tuple(a.shape)}"
            )
        if a.shape[1] == 0:
            return
        interleaved = np.ascontiguousarray(a.T)
        finite = np.isfinite(interleaved)
        if not finite.all():
            # a new array: never modify the caller's block in place
            self.nonfinite_samples += int(finite.size - np.count_nonzero(finite))
            interleaved = np.where(finite, interleaved, np.float32(0))
        try:
            if self._spool is not None:
                peak = np.abs(interleaved).max()
                if peak > self._peak:
                    self._peak = np.float32(peak)
                self._spool.write(interleaved.astype("<f4", copy=False).tobytes())
            else:
                assert self._sink is not None
                self._sink.write(_apply_clip(interleaved, self.clip_mode))
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _output_error(self._display, exc) from None
            raise
        self.frames_written += interleaved.shape[0]

    def commit(self) -> Optional[Path]:
        """Finish the file and move it into place; return its path (None for a
        stream). On failure everything is removed and OutputError raised."""
        self._check_open()
        try:
            if self._spool is not None:
                spool = self._spool
                spool.flush()
                spool.seek(0)
                self._sink = self._open_sink()
                divisor = None
                if self.clip_mode == "rescale":
                    scaled = np.float32(1.01) * self._peak
                    if not np.float32(1) > scaled:  # max(1.01 * peak, 1), as the reference CLI
                        divisor = np.float32(scaled)
                with spool:
                    while True:
                        chunk = np.fromfile(
                            spool, dtype="<f4", count=_COPY_BLOCK_FRAMES * self.channels
                        )
                        if chunk.size == 0:
                            break
                        frames = chunk.astype(np.float32, copy=False).reshape(-1, self.channels)
                        if divisor is not None:
                            frames = frames / divisor
                        else:
                            frames = _apply_clip(frames, self.clip_mode)
                        self._sink.write(frames)
                self._spool = None
            elif self._sink is None:
                self._sink = self._open_sink()
            assert self._tmp is not None
            self._sink.close(self._tmp)
            self._sink = None
            if self._stream is not None:
                with open(self._tmp, "rb") as src:
                    shutil.copyfileobj(src, self._stream, 1 << 20)
                self._stream.flush()
                _remove(self._tmp)
                self._tmp = None
                result = None
            else:
                assert self.path is not None
                if not self._overwrite and self.path.exists():
                    raise OutputError(f"cannot write {self._display}: file already exists")
                os.replace(self._tmp, self.path)
                self._tmp = None
                result = self.path
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _output_error(self._display, exc) from None
            raise
        self._state = "committed"
        return result

    def abort(self) -> None:
        """Delete the temporary and spool files; the destination is left untouched."""
        if self._state in ("aborted", "committed"):
            return
        self._state = "aborted"
        if self._spool is not None:
            try:
                self._spool.close()
            except OSError:
                pass
            self._spool = None
        if self._sink is not None:
            try:
                self._sink.abort()
            finally:
                self._sink = None
        _remove(self._tmp)
        self._tmp = None

    def __enter__(self) -> "StemWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.commit()

    def __del__(self) -> None:
        try:
            if getattr(self, "_state", None) == "open":
                self.abort()
        except Exception:
            pass


def open_stem_writer(
    path: Union[PathLike, IO[bytes]],
    *,
    sample_rate: int,
    output_sample_rate: Optional[int] = None,
    channels: int = 2,
    format: Optional[str] = None,
    bits: int = 16,
    float32: bool = False,
    mp3_bitrate: int = 320,
    clip_mode: str = "rescale",
    output_frames: Optional[int] = None,
    overwrite: bool = True,
) -> StemWriter:
    """Open a streaming writer for one stem.

    ``path``: destination file, or an open binary stream (e.g. ``sys.stdout.buffer``;
    the file is then built in the system temp folder and copied into the stream at
    commit, so WAV/FLAC headers are exact). ``sample_rate``: rate of the blocks given
    to ``write``. ``output_sample_rate``: rate to write (resampled by ffmpeg when it
    differs); ``output_frames``: exact output length at that rate when resampling
    (default ``round(frames * output_sample_rate / sample_rate)``). ``format``: wav,
    flac or mp3 (default: from the suffix, else wav). ``bits``: 16 or 24 (wav, flac);
    ``float32``: 32-bit float wav. ``clip_mode``: rescale, clamp, tanh or none.
    ``overwrite=False`` refuses an existing destination (OutputError).
    """
    return StemWriter(
        path, sample_rate=sample_rate, output_sample_rate=output_sample_rate,
        channels=channels, format=format, bits=bits, float32=float32,
        mp3_bitrate=mp3_bitrate, clip_mode=clip_mode, output_frames=output_frames,
        overwrite=overwrite,
    )
