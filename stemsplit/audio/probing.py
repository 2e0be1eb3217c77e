"""Probing: :func:`probe` describes the first audio stream of a file (:class:`AudioInfo`).

It reads ffprobe's JSON when there is an ffprobe (on PATH, or beside ``$STEMSPLIT_FFMPEG``),
else parses ``ffmpeg -i``'s stderr. :func:`_check_input` makes the cheap checks (missing,
a folder, empty, unreadable) before ffmpeg sees a file, for clear messages.

Standard library only (no numpy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Optional

from ..errors import InputError, StemsplitError
from .ffmpeg import _ffmpeg_reason, _url, ffmpeg_path, ffprobe_path, own_group
from .formats import PathLike


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
            timeout=_PROBE_TIMEOUT_S, **own_group(),
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
