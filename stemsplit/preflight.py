"""What a run checks before any slow work: option ranges, and every input probed.

A typo in a path or an option must be answered in a fraction of a second, before weights
are fetched (maybe over a network that is down) or torch is imported. ``check_options``
applies the ranges every family shares; ``probe_inputs`` runs ffprobe over the inputs a
run will separate, a few at a time, and keeps what it learnt so that the tracks do not
probe again. No torch, no numpy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .audio.formats import MP3_BITRATE_RANGE_KBPS
from .errors import InputError, StemsplitError, UsageError
from .plan import BatchItem

if TYPE_CHECKING:  # pragma: no cover
    from .audio import AudioInfo

MAX_SAMPLE_RATE = 768_000
"""The highest output rate accepted (ffmpeg's resampler goes well beyond any audio
interface)."""

PROBES_AT_ONCE = 4


def check_overlap(overlap: float) -> None:
    """A fraction in [0, 1) or a whole number >= 2 of chunks per sample (each family may
    narrow this further when it loads)."""
    if not (0 <= overlap < 1 or (overlap >= 2 and float(overlap).is_integer())):
        raise UsageError(f"--overlap {overlap:g}: give a fraction from 0 to below 1 (0.25), or a "
                         "whole number of chunks per sample from 2 up")


def check_options(*, segment_seconds: float | None, overlap: float | None, shifts: int,
                  batch_size: int, mp3: bool, mp3_bitrate: int, sample_rate: int | None,
                  jobs: int) -> None:
    """Raise UsageError for a value no model could take."""
    if segment_seconds is not None and not segment_seconds > 0:
        raise UsageError(f"--segment {segment_seconds:g}: must be a positive number of seconds")
    if overlap is not None:
        check_overlap(overlap)
    if shifts < 0:
        raise UsageError(f"--shifts {shifts}: must be 0 or more")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be 1 or more")
    if jobs < 0:
        raise UsageError(f"--jobs {jobs}: must be 0 (all cores) or more")
    low, high = MP3_BITRATE_RANGE_KBPS
    if mp3 and not low <= mp3_bitrate <= high:
        raise UsageError(f"--mp3-bitrate {mp3_bitrate}: MP3 takes {low} to {high} kbit/s",
                         hint="320 is the highest quality; 192 and 128 are common")
    if sample_rate is not None and not 1000 <= sample_rate <= MAX_SAMPLE_RATE:
        raise UsageError(f"--sample-rate {sample_rate}: give a rate in Hz from 1000 to "
                         f"{MAX_SAMPLE_RATE} (44100, 48000, ...)")


def probe_path(path: Path) -> "AudioInfo":
    """The input's AudioInfo; InputError when it is missing, a folder, or not audio."""
    from . import audio

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory", hint="use `stemsplit batch DIR` for folders")
    return audio.probe(path)


def probe_inputs(items: Sequence[BatchItem], *, workers: int = PROBES_AT_ONCE
                 ) -> dict[Path, object]:
    """Each path's ``AudioInfo``, or the StemsplitError that says why it cannot be read
    (no such file, a folder, no audio, ...). Paths are probed ``workers`` at a time; "-"
    (stdin) is left out."""
    paths = [item.path for item in items if str(item.path) != "-"]

    def probe(path: Path) -> object:
        try:
            return probe_path(path)
        except StemsplitError as error:
            return error

    if len(paths) <= 1:
        return {path: probe(path) for path in paths}
    with ThreadPoolExecutor(min(workers, len(paths)), thread_name_prefix="stemsplit-probe") as pool:
        return dict(zip(paths, pool.map(probe, paths)))
