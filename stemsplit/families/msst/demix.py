"""How ZFTurbo's ``utils.model_utils.demix`` cuts a track into chunks and joins them, as
engine ``Chunking``s: one function per mode of demix, named by a type's row (``types.py``).

Both modes take chunks of ``chunk`` samples every ``step`` samples from the start of the
track, until a chunk would start at or past its end, and batch them; they differ in the rest:

- **generic** (every type but ``htdemucs``): when the track is longer than twice
  ``border = chunk - step`` it is reflect-padded by ``border`` at both ends (and the stems
  cut back); chunks are overlap-added with linear fades of ``chunk // 10`` samples, without
  a fade-in on the first chunk or a fade-out on the last; a short last chunk is
  reflect-padded when it is longer than half a chunk, zero-padded otherwise; samples no
  chunk weights (a fade's zeros, only without overlap) are 0.
- **demucs** (``htdemucs``): no border, no fades: overlapping chunks are plain averages;
  every chunk shorter than ``chunk`` is zero-padded to it and fed whole.

``inference.normalize: true`` (applied by ZFTurbo's ``inference.py`` around demix, in both
modes) is the whole mixture by the mean and population std of its mono mix, the stems
scaled back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Chunking
    from .config import MSSTConfig


def _normalisation(config: "MSSTConfig"):
    from ...engine import Normalisation

    return Normalisation(unbiased=False, epsilon=0.0) if config.normalize else None


def generic_chunking(config: "MSSTConfig", chunk: int, step: int) -> "Chunking":
    """demix's generic mode."""
    from ...engine import Chunking, Window

    border = chunk - step

    def reflect_border(frames: int, border: int = border) -> tuple[int, int]:
        return (border, border) if border > 0 and frames > 2 * border else (0, 0)

    fade = chunk // 10
    return Chunking(
        length=chunk, stride=step,
        window=Window("linear_fade", fade=fade) if fade else Window("rectangular"),
        border=reflect_border, border_mode="reflect", last_chunk="pad", fill="reflect",
        normalise=_normalisation(config))


def demucs_chunking(config: "MSSTConfig", chunk: int, step: int) -> "Chunking":
    """demix's demucs mode."""
    from ...engine import Chunking, Window

    return Chunking(length=chunk, stride=step, window=Window("rectangular"), border=None,
                    last_chunk="pad", fill="zeros", normalise=_normalisation(config))
