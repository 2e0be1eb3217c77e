"""Audio input and output: every ffmpeg call and every audio file write lives in this package.

One module per job; each imports only the ones listed before it (never ``plan`` or
anything above this package):

* :mod:`~stemsplit.audio.formats`: the format facts (audio extensions, output formats);
  standard library only.
* :mod:`~stemsplit.audio.ffmpeg`: which ffmpeg/ffprobe to run, starting and killing its
  processes, and its stderr turned into one-line reasons.
* :mod:`~stemsplit.audio.probing`: :func:`probe` and :class:`AudioInfo`.
* :mod:`~stemsplit.audio.decoding`: :func:`decode_blocks` (streamed), :func:`decode`.
* :mod:`~stemsplit.audio.write`: :func:`open_stem_writer` and :class:`StemWriter`.
* :mod:`~stemsplit.audio.resample`: :func:`convert`, an in-memory array to another rate
  and channel count.

Conventions
-----------
* Audio in memory is ``float32`` numpy arrays shaped ``(channels, frames)``.
* ffmpeg is run with an argv list (never a shell), ``-nostdin -hide_banner``, and input
  paths are passed as ``file:<absolute path>`` so a file named ``-x.mp3`` is never taken
  for an option. Its stderr is captured; the last meaningful line goes into the error
  message.
* Errors a user can cause raise :class:`~stemsplit.errors.InputError` (missing,
  unreadable, undecodable input) or :class:`~stemsplit.errors.OutputError` (an output
  that cannot be written), each naming the file. Invalid option values raise
  :class:`~stemsplit.errors.UsageError`. Nothing here prints.
* numpy only: this package never imports torch (formats, ffmpeg and probing not even numpy).

The names in ``__all__`` are the package's API, used as ``audio.X``. Only the format facts
are imported with the package; every other name loads its module on first use, so
``import stemsplit.audio.formats`` (as ``plan`` does) imports no numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .formats import AUDIO_EXTENSIONS, NOT_AUDIO_EXTENSIONS, OUTPUT_FORMATS, is_audio_path

if TYPE_CHECKING:  # pragma: no cover
    from .decoding import DEFAULT_BLOCK_FRAMES, Decoder, decode, decode_blocks
    from .ffmpeg import ffmpeg_path, ffprobe_path
    from .probing import AudioInfo, probe
    from .resample import convert
    from .write import StemWriter, open_stem_writer

#: Each name loaded on first use, and the module it lives in.
_LAZY = {
    "ffmpeg_path": "ffmpeg",
    "ffprobe_path": "ffmpeg",
    "AudioInfo": "probing",
    "probe": "probing",
    "DEFAULT_BLOCK_FRAMES": "decoding",
    "Decoder": "decoding",
    "decode": "decoding",
    "decode_blocks": "decoding",
    "StemWriter": "write",
    "open_stem_writer": "write",
    "convert": "resample",
}

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "DEFAULT_BLOCK_FRAMES",
    "Decoder",
    "NOT_AUDIO_EXTENSIONS",
    "OUTPUT_FORMATS",
    "StemWriter",
    "convert",
    "decode",
    "decode_blocks",
    "ffmpeg_path",
    "ffprobe_path",
    "is_audio_path",
    "open_stem_writer",
    "probe",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
