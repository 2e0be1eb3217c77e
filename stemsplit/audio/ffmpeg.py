"""Running ffmpeg: which executable (and ffprobe) to run, starting and killing its processes,
and turning its stderr into a one-line reason for an error message.

ffmpeg is run with an argv list (never a shell), ``-nostdin -hide_banner``, and input
paths are passed as ``file:<absolute path>`` (:func:`_url`) so a file named ``-x.mp3`` is
never taken for an option. Its stderr is captured (:class:`_StderrTail` drains it on a
thread); the last meaningful line goes into the error message (:func:`_ffmpeg_reason`).

``STEMSPLIT_FFMPEG`` is read through :mod:`stemsplit.settings` on every call, not at import.
Standard library only.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Optional

from .. import settings
from ..errors import StemsplitError

_STDERR_TAIL_LINES = 200


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
    return _ffmpeg_path(settings.ffmpeg())


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
    return _ffprobe_path(settings.ffmpeg())


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


def own_group() -> dict:
    """``subprocess`` arguments that keep a child out of the terminal's process group: a
    Ctrl-C (or a signal sent to stemsplit's group) reaches stemsplit alone, which then stops
    its children itself, after it has decided how the run ends. A child that outlives a
    killed stemsplit ends on its own (its pipe closes)."""
    if os.name == "nt":  # pragma: no cover - Windows
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    return {"start_new_session": True}


def _popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    try:
        return subprocess.Popen(cmd, **own_group(), **kwargs)
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
