"""The format facts: which file extensions are audio (or video with an audio track), which
are never audio, and which formats (and MP3 sample rates) stemsplit writes.

Standard library only, and no other stemsplit module: ``plan`` reads these without
importing numpy, and every module of this package can use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions (lower case, with the dot) treated as audio or video input.
AUDIO_EXTENSIONS = frozenset(
    {
        # audio
        ".mp3", ".mp2", ".mpa", ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus",
        ".m4a", ".m4b", ".aac", ".aiff", ".aif", ".aifc", ".wma", ".alac", ".ape",
        ".wv", ".ac3", ".eac3", ".dts", ".amr", ".au", ".snd", ".caf", ".mka",
        ".spx", ".tta", ".w64", ".rf64", ".weba", ".3ga",
        # video containers with an audio track
        ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".flv", ".wmv", ".mpg",
        ".mpeg", ".ts", ".m2ts", ".mts", ".3gp", ".3g2", ".ogv", ".vob", ".asf",
    }
)

# Extensions that are never audio: not probed, silently passed over in folders.
NOT_AUDIO_EXTENSIONS = frozenset({
    ".txt", ".nfo", ".cue", ".log", ".m3u", ".m3u8", ".pls", ".json", ".xml", ".md", ".pdf",
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg", ".ico",
    ".doc", ".docx", ".zip", ".rar", ".7z", ".gz", ".tar", ".exe", ".db", ".ini", ".url",
    ".lrc", ".sfv", ".md5", ".py", ".sh", ".part", ".spool", ".f32", ".accurip", ".toc",
})

OUTPUT_FORMATS = ("wav", "flac", "mp3")
#: The MP3 bitrates the encoder takes, in kbit/s (lowest, highest).
MP3_BITRATE_RANGE_KBPS = (8, 320)
#: Sample rates an MP3 file can have.
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def is_audio_path(path: PathLike) -> bool:
    """True when ``path``'s extension is one of :data:`AUDIO_EXTENSIONS`."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS
