"""Audio input and output: every ffmpeg call and every audio file write lives here.

Conventions
-----------
* Audio in memory is ``float32`` numpy arrays shaped ``(channels, frames)``.
* ffmpeg is run with an argv list (never a shell), ``-nostdin -hide_banner``, and
  input paths are passed as ``file:<absolute path>`` so a file named ``-x.mp3`` is
  never taken for an option. Its stderr is captured; the last meaningful line goes
  into the error message.
* Errors a user can cause raise :class:`~stemsplit.errors.InputError` (missing,
  unreadable, undecodable input) or :class:`~stemsplit.errors.OutputError` (an output
  that cannot be written), each naming the file. Invalid option values raise
  :class:`~stemsplit.errors.UsageError`. Nothing here prints.
* numpy only: this module never imports torch.

Reading
-------
:func:`probe` describes a file; :func:`decode_blocks` streams it through an ffmpeg
pipe as fixed-size blocks at the model's sample rate (memory does not grow with the
track's length); :func:`decode` concatenates those blocks.

Mono sources are decoded as mono and duplicated onto every output channel in numpy
(ffmpeg's own mono -> stereo upmix lowers the level by 3 dB; the reference tools duplicate).
Sources with more channels than asked for are down-mixed by ffmpeg (``-ac``).

Non-finite samples (NaN, +-Inf) in decoded data are replaced by 0; the decoder object
returned by :func:`decode_blocks` counts them in ``nonfinite_samples``.

Writing
-------
:func:`open_stem_writer` returns a :class:`StemWriter`. Samples go to a hidden
temporary file next to the destination (``.<name>.<random>.part``) which is renamed
into place (:func:`os.replace`) by :meth:`StemWriter.commit`; :meth:`StemWriter.abort`
(or leaving a ``with`` block by an exception) deletes it, so an interrupted run never
leaves a half-written output under the real name.

Clip handling and sample conversion follow the reference separator CLI's ``prevent_clip``
and ``encode_wav`` bit for bit at the model rate (tests/test_audio.py compares them):

* ``rescale``: divide the whole stem by ``max(1.01 * peak, 1)``. The peak is only known
  at the end, so the float32 samples are spooled to a hidden raw file next to the
  destination (``.<name>.<random>.spool``) and encoded block by block at commit.
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

import collections
import dataclasses
import errno
import functools
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator, Optional, Union

import numpy as np

from .errors import InputError, OutputError, StemsplitError, UsageError
from .plan import AUDIO_EXTENSIONS, is_audio_path  # noqa: F401 (kept here too)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "Decoder",
    "StemWriter",
    "decode",
    "decode_blocks",
    "ffmpeg_path",
    "ffprobe_path",
    "is_audio_path",
    "open_stem_writer",
    "probe",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Default block size of :func:`decode_blocks`, in frames (about 3 s at 44.1 kHz).
DEFAULT_BLOCK_FRAMES = 1 << 17

CLIP_MODES = ("rescale", "clamp", "tanh", "none")
OUTPUT_FORMATS = ("wav", "flac", "mp3")
#: Sample rates an MP3 file can have.
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

_STDERR_TAIL_LINES = 200
_COPY_BLOCK_FRAMES = 1 << 16


# --------------------------------------------------------------------------- ffmpeg


FFMPEG_VARIABLE = "STEMSPLIT_FFMPEG"
"""Which ffmpeg to run: a path, or ``bundled`` for imageio-ffmpeg's; unset: PATH's, else
the bundled one."""


def _bundled_ffmpeg() -> Optional[str]:
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found]

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or no binary for this platform
        return None
    return exe if exe and os.path.isfile(exe) else None


@functools.lru_cache(maxsize=None)
def _ffmpeg_path(choice: str) -> str:
    if choice == "bundled":
        exe = _bundled_ffmpeg()
        if exe is None:
            raise StemsplitError(f"{FFMPEG_VARIABLE}=bundled, but imageio-ffmpeg has no binary here",
                                 hint="pip install imageio-ffmpeg, or unset the variable")
        return exe
    if choice:
        exe = shutil.which(os.path.expanduser(choice))
        if exe is None:
            raise StemsplitError(f"{FFMPEG_VARIABLE}={choice}: no such executable")
        return exe
    exe = shutil.which("ffmpeg") or _bundled_ffmpeg()
    if exe is None:
        raise StemsplitError(
            "ffmpeg was not found",
            hint="install ffmpeg (it must be on PATH), or `pip install imageio-ffmpeg`",
        )
    return exe


def ffmpeg_path() -> str:
    """The ffmpeg executable: ``$STEMSPLIT_FFMPEG`` (a path, or ``bundled``), else the one
    on PATH, else imageio-ffmpeg's (cached)."""
    return _ffmpeg_path(os.environ.get(FFMPEG_VARIABLE, "").strip())


@functools.lru_cache(maxsize=None)
def _ffprobe_path(choice: str) -> Optional[str]:
    if choice == "bundled":
        return None  # imageio-ffmpeg ships no ffprobe: probe with ffmpeg itself
    if choice:
        beside = Path(_ffmpeg_path(choice)).with_name("ffprobe")
        return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None
    return shutil.which("ffprobe")


def ffprobe_path() -> Optional[str]:
    """The ffprobe that goes with ``ffmpeg_path()``: PATH's, the one beside
    ``$STEMSPLIT_FFMPEG``, or None (then ffmpeg itself probes)."""
    return _ffprobe_path(os.environ.get(FFMPEG_VARIABLE, "").strip())


def _url(path: Path) -> str:
    """An ffmpeg input/output URL that can never be mistaken for an option."""
    return "file:" + os.path.abspath(path)


_NOISE_PATTERNS = (
    re.compile(r"^At least one output file must be specified"),
    re.compile(r"^Conversion failed!?$"),
    re.compile(r"^Press \[q\]"),
    re.compile(r"^Exiting normally"),
    re.compile(r"^Error opening (input|output) file "),
    re.compile(r"detected only with low score"),
    re.compile(r"^Guessed Channel Layout"),
    re.compile(r"^Error closing logfile"),
    re.compile(r"^Terminating thread with return code"),
    re.compile(r"^Nothing was written into output file"),
)
_PREFIX_RE = re.compile(r"^(\[[^\]]*\]\s*)+")
_GENERIC_RE = re.compile(r"^Error opening (?:input|output)s?(?: files?)?: (.*)$")
_ERRNO_TEXTS = ("Invalid data found when processing input", "Invalid argument", "End of file",
                "Input/output error", "Operation not permitted", "Immediate exit requested")
"""Bare error texts ffmpeg ends with (av_strerror's); older builds (5.x) print them alone
after the file name, newer ones after "Error opening input:". The line before says more."""


def _ffmpeg_reason(lines: list[str], path: Optional[Path] = None) -> str:
    """The last meaningful line of ffmpeg's stderr, with a more specific earlier
    line added in parentheses when the last one is generic."""
    cleaned: list[str] = []
    prefixes = []
    if path is not None:
        prefixes = [_url(path) + ": ", os.path.abspath(path) + ": ", str(path) + ": "]
    for raw in lines:
        line = _PREFIX_RE.sub("", raw.strip()).strip()
        if not line or any(p.search(line) for p in _NOISE_PATTERNS):
            continue
        for prefix in prefixes:
            if line.startswith(prefix):
                line = line[len(prefix):]
                break
        if line and (not cleaned or cleaned[-1] != line):
            cleaned.append(line)
    if not cleaned:
        return "ffmpeg failed without a message"
    last = cleaned[-1]
    match = _GENERIC_RE.match(last)
    if match or last.rstrip(".") in _ERRNO_TEXTS:
        reason = (match.group(1) if match else last).rstrip(".")
        details = [
            line for line in cleaned[:-1]
            if not _GENERIC_RE.match(line) and reason not in line
        ]
        if details:
            return f"{reason}: {details[-1].rstrip('.')}"
        return reason
    return last.rstrip(".")


def _signal_reason(returncode: int) -> str:
    signum = -returncode
    if signum == getattr(signal, "SIGXFSZ", None):
        return "file size limit exceeded"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"ffmpeg was killed by {name}"


class _StderrTail:
    """Drains a subprocess' stderr on a thread (so it can never fill up and block
    ffmpeg) and keeps its last lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass

    def join(self, timeout: Optional[float] = None) -> list[str]:
        self._thread.join(timeout)
        return list(self.lines)


def _popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    try:
        return subprocess.Popen(cmd, **kwargs)
    except FileNotFoundError:
        raise StemsplitError(
            f"ffmpeg could not be started ({cmd[0]} not found)",
            hint="install ffmpeg (it must be on PATH), or `pip install imageio-ffmpeg`",
        ) from None
    except PermissionError:
        raise StemsplitError(f"ffmpeg could not be started ({cmd[0]}: permission denied)") from None


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    proc.wait()


# --------------------------------------------------------------------------- probing


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns about the first audio stream of a file.

    ``channels`` is None only when ffprobe is missing and ffmpeg printed a channel
    layout this module cannot count; ``duration_seconds`` is None when the container
    does not say.
    """

    sample_rate: int
    channels: Optional[int]
    duration_seconds: Optional[float]
    codec: str


def _check_input(path: PathLike) -> Path:
    """Cheap checks before ffmpeg sees the file, for clear messages."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, not an audio file")
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise InputError(f"{p}: file is empty")
        try:
            with open(p, "rb"):
                pass
        except PermissionError:
            raise InputError(f"{p}: permission denied") from None
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
    return p


_CHANNELS_BY_NAME = {
    "mono": 1,
    "stereo": 2,
    "downmix": 2,
    "binaural": 2,
    "quad": 4,
    "hexagonal": 6,
    "octagonal": 8,
    "cube": 8,
    "hexadecagonal": 16,
}


def _channels_from_layout(text: str) -> Optional[int]:
    """Channel count from a channel layout as ``ffmpeg -i`` prints it."""
    text = text.strip()
    m = re.match(r"^(\d+) channels?\b", text)
    if m:
        return int(m.group(1))
    base = re.sub(r"\(.*\)$", "", text).strip()
    if base in _CHANNELS_BY_NAME:
        return _CHANNELS_BY_NAME[base]
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?$", base)
    if m:
        return sum(int(g) for g in m.groups() if g)
    m = re.match(r"^ambisonic (\d+)", base)
    if m:
        return (int(m.group(1)) + 1) ** 2
    if "+" in base:
        return len(base.split("+"))
    return None


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


_AUDIO_STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+\S*: Audio: (.*)$")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def _info_from_ffmpeg_stderr(p: Path, lines: list[str]) -> AudioInfo:
    if not any(line.startswith("Input #0") for line in lines):
        raise InputError(f"{p}: not a readable audio file ({_ffmpeg_reason(lines, p)})")
    duration = None
    for line in lines:
        m = _DURATION_RE.search(line)
        if m:
            h, mi, s = m.groups()
            duration = int(h) * 3600 + int(mi) * 60 + float(s)
            break
    for line in lines:
        m = _AUDIO_STREAM_RE.match(line)
        if not m:
            continue
        fields = _split_top_level(m.group(1))
        codec = fields[0].split(" ")[0] if fields and fields[0] else "unknown"
        sample_rate = None
        channels = None
        for i, field in enumerate(fields):
            hz = re.match(r"^(\d+) Hz$", field)
            if hz:
                sample_rate = int(hz.group(1))
                if i + 1 < len(fields):
                    channels = _channels_from_layout(fields[i + 1])
                break
        if not sample_rate:
            raise InputError(f"{p}: cannot determine the sample rate of its audio stream")
        return AudioInfo(sample_rate, channels, duration, codec)
    raise InputError(f"{p}: contains no audio stream")


def _info_from_ffprobe_json(p: Path, data: dict) -> AudioInfo:
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise InputError(f"{p}: contains no audio stream")
    s = streams[0]
    try:
        sample_rate = int(s["sample_rate"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{p}: cannot determine the sample rate of its audio stream") from None
    channels: Optional[int]
    try:
        channels = int(s["channels"])
    except (KeyError, TypeError, ValueError):
        channels = _channels_from_layout(str(s.get("channel_layout", "")))
    duration = None
    for source in (data.get("format", {}), s):
        try:
            duration = float(source["duration"])
            break
        except (KeyError, TypeError, ValueError):
            continue
    return AudioInfo(sample_rate, channels, duration, str(s.get("codec_name", "unknown")))


_PROBE_TIMEOUT_S = 120


def probe(path: PathLike) -> AudioInfo:
    """Describe the first audio stream of ``path``.

    Uses ffprobe's JSON when ffprobe is on PATH, else parses ``ffmpeg -i``'s stderr.
    Raises InputError for a missing path, a directory, an empty or unreadable file,
    a file ffmpeg cannot open, or one without an audio stream.
    """
    p = _check_input(path)
    probe_exe = ffprobe_path()
    if probe_exe:
        cmd = [probe_exe, "-v", "error", "-hide_banner", "-print_format", "json",
               "-show_format", "-show_streams", _url(p)]
    else:
        cmd = [ffmpeg_path(), "-nostdin", "-hide_banner", "-i", _url(p)]
    try:
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=_PROBE_TIMEOUT_S,
        )
    except FileNotFoundError:
        raise StemsplitError(f"could not start {cmd[0]}") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"{p}: timed out reading the file") from None
    lines = res.stderr.decode("utf-8", "replace").splitlines()
    if not probe_exe:
        return _info_from_ffmpeg_stderr(p, lines)
    if res.returncode != 0:
        raise InputError(f"{p}: not a readable audio file ({_ffmpeg_reason(lines, p)})")
    try:
        data = json.loads(res.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        raise InputError(f"{p}: ffprobe gave unreadable output") from None
    return _info_from_ffprobe_json(p, data)


# --------------------------------------------------------------------------- decoding


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


# --------------------------------------------------------------------------- writing

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
        candidate = directory / f".{stem}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _output_error(display, exc) from None
        os.close(fd)
        return candidate
    raise OutputError(f"cannot write {display}: could not create a temporary file in {directory}")


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
        self._spool_path: Optional[Path] = None
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
        if format == "mp3" and not 8 <= int(mp3_bitrate) <= 320:
            raise UsageError(f"unsupported MP3 bitrate {mp3_bitrate!r} kbit/s (8 to 320)")

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

        self._tmp = _create_hidden(directory, name, ".part", self._display)
        self._state = "open"
        try:
            if self._needs_spool:
                self._spool_path = _create_hidden(directory, name, ".spool", self._display)
                self._spool = open(self._spool_path, "wb")
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
                self._spool.close()
                self._spool = None
                self._sink = self._open_sink()
                divisor = None
                if self.clip_mode == "rescale":
                    scaled = np.float32(1.01) * self._peak
                    if not np.float32(1) > scaled:  # max(1.01 * peak, 1), as the reference CLI
                        divisor = np.float32(scaled)
                assert self._spool_path is not None
                with open(self._spool_path, "rb") as spool:
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
                _remove(self._spool_path)
                self._spool_path = None
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
        _remove(self._spool_path)
        _remove(self._tmp)
        self._spool_path = None
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


def convert(samples: np.ndarray, sample_rate: int, target_sample_rate: int,
            channels: int) -> np.ndarray:
    """An in-memory (channels, frames) float32 array at another rate and channel count.

    Mono is copied onto every channel and extra channels are down-mixed by ffmpeg, as for
    files; resampling uses ffmpeg's resampler, so arrays and files sound the same. The result
    has exactly round(frames * target / source) frames.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    source_channels, frames = samples.shape
    if source_channels == 1 and channels > 1:
        samples = np.repeat(samples, channels, axis=0)
        source_channels = channels
    if source_channels == channels and sample_rate == target_sample_rate:
        return np.ascontiguousarray(samples)
    target_frames = int(round(frames * target_sample_rate / sample_rate))
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "f32le", "-ar", str(sample_rate), "-ac", str(source_channels), "-i", "pipe:0",
        "-ac", str(channels), "-ar", str(target_sample_rate), "-f", "f32le", "pipe:1",
    ]
    completed = subprocess.run(cmd, input=np.ascontiguousarray(samples.T).tobytes(),
                               capture_output=True)
    if completed.returncode != 0:
        reason = completed.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"cannot convert audio: {reason[-1] if reason else 'ffmpeg failed'}")
    converted = np.frombuffer(completed.stdout, dtype=np.float32).reshape(-1, channels).T
    if converted.shape[1] < target_frames:
        converted = np.pad(converted, ((0, 0), (0, target_frames - converted.shape[1])))
    return np.ascontiguousarray(converted[:, :target_frames])
