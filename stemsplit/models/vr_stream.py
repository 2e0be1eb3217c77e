"""UVR's VR processing (``vr_spectrum``) chunk by chunk, in bounded memory, with the output of
the whole-track computation.

Why it can be exact: every step is local in time once three whole-track facts are known.

* the spectrogram's maximum magnitude: taken in a pre-pass over the same chunks;
* the track's length n, which fixes each band's length (its resampler's output, then cut
  or zero-padded to ceil(n * rate / 44100)) and the frame count l: known before the run;
* the mask's window grid (every ``step`` frames from frame 0): chunks start on it.

A chunk of output frames [a, b) is computed from the input samples [(a - c) H, (b + c) H)
(H: 44.1 kHz samples per frame, c: ``context`` frames, zeros past the track's ends), run
through the whole-track code with the track's maximum, each band's wave zeroed past the
band's whole-track length, and frames cut at l. ``a - c`` is a multiple of ``align`` frames,
chosen so that the segment starts on every resampler's phase and every band's hop; the
context covers the windows' ``offset`` frames, the STFTs and the resampler filters, so the
frames and samples kept are those of the whole track, up to float rounding.

What is not streamed: UVR's post-processing (runs of frames of any length decide the mask)
and the "reverse" channel layout (the whole wave reversed) run on the whole track.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from .vr_mask import aggression_exponents, apply_aggression, mask_of
from .vr_spectrum import MIX_RATE, BandConfig, Prepared, Settings, prepare
from .vr_synthesis import stems_from_mask

SIGNAL_REACH_FRAMES = 16
"""Frames an STFT window or a resampler's filter reaches past a frame (a few, in every band
config), with a margin."""

Reader = Callable[[int, int], np.ndarray]
"""read(start, stop) -> the mixture's samples [start, stop) as (2, stop - start) float32,
zeros outside the track."""


def streamable(config: BandConfig, settings: Settings) -> bool:
    """Whether chunks can give the whole-track output (else: whole track)."""
    return not settings.post_process and config.channels != "reverse"


def frame_hop(config: BandConfig) -> Fraction:
    """H: samples at 44.1 kHz per frame (the same time step in every band; a fraction for
    some configs at other rates)."""
    top = config.bands[-1]
    return Fraction(top.hop * MIX_RATE, top.sample_rate)


def _poly_down(old: int, new: int) -> int:
    return old // math.gcd(old, new)


def alignment(config: BandConfig, step: int) -> int:
    """The smallest multiple of ``step`` frames at which a segment starts on every band's
    resampler phase (in and out), every band's hop, and a whole sample of every rate."""
    hop = frame_hop(config)
    rates = [MIX_RATE] + [band.sample_rate for band in reversed(config.bands)]
    for multiple in range(1, 10_000):
        frames = step * multiple
        start = frames * hop
        if start.denominator != 1:
            continue
        start = int(start)
        if all(start * rate % MIX_RATE == 0 for rate in rates) and all(
                (start * old // MIX_RATE) % _poly_down(old, new) == 0
                for old, new in zip(rates, rates[1:])):
            return frames
    raise ValueError(f"band config {config.name}: no chunk alignment")


@functools.lru_cache(maxsize=64)
def _raw_length(length: int, old: int, new: int, method: str) -> int:
    """How many samples the resampler itself gives for ``length`` (before librosa's cut or
    zero fill to ceil(length * new / old))."""
    if old == new:
        return length
    if method == "polyphase":
        divisor = math.gcd(old, new)
        return -(-length * (new // divisor) // (old // divisor))
    if method in ("kaiser_fast", "kaiser_best"):
        return int(length * new / old)
    if method in ("fft", "scipy"):
        return math.ceil(length * new / old)
    if method.startswith("sinc_") and length * new % old:
        # libsamplerate stops where its next output would read past the end: floor(n r)
        # samples, n r being well away from a whole number (within float rounding of it, its
        # rounding decides, and it is counted below)
        return length * new // old
    return _counted(length, old, new, method)


def _counted(length: int, old: int, new: int, method: str) -> int:
    """The resampler's output length, counted on silence in blocks (bounded memory)."""
    import importlib

    block = np.zeros(1 << 16, dtype=np.float32)
    if method.startswith("soxr"):
        soxr = importlib.import_module("soxr")
        stream = soxr.ResampleStream(old, new, 1, dtype="float32", quality=method)
        count, left = 0, length
        while True:
            take = min(left, block.size)
            left -= take
            count += len(stream.resample_chunk(block[:take], last=left == 0))
            if left == 0:
                return count
    # libsamplerate's callback reader ends a stream as its one-call resample ends it
    converter = importlib.import_module("samplerate")
    left = length

    def produce():
        nonlocal left
        take = min(left, block.size)
        left -= take
        return block[:take] if take else None

    count = 0
    with converter.CallbackResampler(produce, new / old, method, channels=1) as reader:
        while (got := len(reader.read(block.size))) > 0:
            count += got
    return count


@dataclass(frozen=True)
class TrackLayout:
    """Per band (lowest first): its whole-track wave length, and where real samples end
    (the resampler's own output; zeros after, up to the length). ``frames``: l."""

    lengths: tuple[int, ...]
    valid: tuple[int, ...]
    frames: int

    @classmethod
    def of(cls, samples: int, config: BandConfig) -> "TrackLayout":
        lengths, valid = [], []
        length, rate = samples, MIX_RATE
        for band in reversed(config.bands):
            raw = _raw_length(length, rate, band.sample_rate, band.resampler)
            length = math.ceil(length * band.sample_rate / rate) if rate != band.sample_rate else length
            lengths.append(length)
            valid.append(min(raw, length))
            rate = band.sample_rate
        frames = min(1 + n // band.hop for n, band in zip(reversed(lengths), config.bands))
        return cls(tuple(reversed(lengths)), tuple(reversed(valid)), frames)


@dataclass
class ChunkPlan:
    hop: Fraction
    step: int
    align: int
    context: int
    chunk: int

    @classmethod
    def of(cls, config: BandConfig, settings: Settings, offset: int,
           chunk_frames: int | None = None) -> "ChunkPlan":
        step = settings.window - 2 * offset or settings.window
        align = alignment(config, step)
        # context: the windows' offset, a TTA half step, STFT and resampler reach
        reach = offset + step + SIGNAL_REACH_FRAMES
        context = -(-reach // align) * align
        wanted = chunk_frames or 4 * step
        chunk = max(align, -(-wanted // align) * align)
        return cls(frame_hop(config), step, align, context, chunk)


def _prepare_segment(read: Reader, first: int, last: int, layout: TrackLayout,
                     config: BandConfig, v51: bool, high_end: bool, plan: ChunkPlan,
                     ) -> tuple[Prepared, int]:
    """The combined spectrogram of frames [first, last) (first on the alignment grid),
    exact from ``plan.context`` frames inside its ends; and the segment's first frame."""
    start = int(first * plan.hop)  # on the alignment grid: whole
    stop = math.ceil(last * plan.hop)
    segment = read(start, stop)
    prepared = prepare(segment, config, v51, high_end,
                       cut=lambda index, wave, rate: _cut(wave, index, start, rate, layout))
    frames = min(prepared.spectrogram.shape[2], layout.frames - first)
    prepared.spectrogram = prepared.spectrogram[:, :, :frames]
    if prepared.high_end is not None:
        prepared.high_end = prepared.high_end[:, :, :frames]
    return prepared, first


def _cut(wave: np.ndarray, index: int, start: int, rate: int, layout: TrackLayout) -> np.ndarray:
    """Band ``index``'s segment wave with the samples past the band's real end zeroed."""
    offset = start * rate // MIX_RATE
    end = layout.valid[index] - offset
    if end < wave.shape[-1]:
        wave = wave.copy()
        wave[..., max(end, 0):] = 0
    return wave


class ChunkedTrack:
    """One track's chunks: chunk ``a`` (a multiple of ``plan.chunk`` frames) gives the
    whole-track stems' samples [a H, b H) (the last: to ``total``), read from the mixture's
    samples ``input_span(a)``. ``scale`` (the whole track's maximum magnitude) comes from
    ``maximum_of`` over every chunk first. Chunks taken in order reuse the previous one's
    mask at their start."""

    def __init__(self, samples: int, config: BandConfig, v51: bool, settings: Settings,
                 network, offset: int, primary_stem: str, device="cpu",
                 chunk_frames: int | None = None) -> None:
        self.config, self.v51, self.settings = config, v51, settings
        self.network, self.offset, self.device = network, offset, device
        self.layout = TrackLayout.of(samples, config)
        self.plan = ChunkPlan.of(config, settings, offset, chunk_frames)
        self.exponents = aggression_exponents(settings, primary_stem,
                                              config.aggression_correction)
        total = config.bands[-1].hop * (self.layout.frames - 1)
        if config.sample_rate != MIX_RATE:
            total = math.ceil(Fraction(total * MIX_RATE, config.sample_rate))
        self.total = total
        """Where the stems end (samples at 44.1 kHz; zeros after, to the track's length)."""
        self.scale: float | None = None
        self._carried: tuple[int, np.ndarray] | None = None

    @property
    def starts(self) -> range:
        """The first frame of every chunk."""
        return range(0, self.layout.frames, self.plan.chunk)

    def samples_per_chunk(self) -> int:
        return int(self.plan.chunk * self.plan.hop)

    def context_samples(self) -> int:
        """Input samples each side of a chunk's output that its stems depend on."""
        return int(self.plan.context * self.plan.hop)

    def _segment(self, read: Reader, a: int, high_end: bool) -> tuple[Prepared, int, int]:
        frames = self.layout.frames
        b = min(a + self.plan.chunk, frames)
        first = max(0, a - self.plan.context)
        # past the last frame, the mask's windows see zeros (as the whole track's do): only
        # the signal's reach is read there
        last = min(b + self.plan.context, frames + SIGNAL_REACH_FRAMES)
        prepared, _ = _prepare_segment(read, first, last, self.layout, self.config, self.v51,
                                       high_end, self.plan)
        return prepared, first, b

    def maximum_of(self, read: Reader, a: int) -> float:
        """The maximum magnitude of the whole track's spectrogram over chunk ``a``'s frames."""
        prepared, first, b = self._segment(read, a, False)
        kept = np.abs(prepared.spectrogram[:, :, a - first : b - first])
        return float(kept.max()) if kept.size else 0.0

    def stems_of(self, read: Reader, a: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``a``'s (primary, secondary) samples, (2, time) float64."""
        if self.scale is None:
            raise ValueError("the track's maximum is not known yet (maximum_of first)")
        prepared, first, b = self._segment(read, a, self.settings.high_end)
        magnitude = np.abs(prepared.spectrogram)
        # The mask of the chunk's frames and a grid step either side (the inverse STFTs and
        # the resamplers back reach a few frames); the previous chunk, if it was the one
        # before, gave the first two steps' (its windows saw real frames there: exact), so
        # only the rest runs.
        step = self.plan.step
        carried = (self._carried[1] if self._carried is not None and self._carried[0] == a
                   else None)
        lo = a - step if carried is None else a + step
        mask = mask_of(magnitude, self.network, self.offset, self.settings, scale=self.scale,
                       device=self.device, frames=(max(0, lo - first), b + step - first))
        if carried is not None:
            mask[:, :, a - step - first : a + step - first] = carried
        self._carried = (b, mask[:, :, b - step - first : b + step - first].copy())
        mask = apply_aggression(mask, self.config.bands[0].crop[1], self.exponents)
        primary, secondary = stems_from_mask(prepared, mask, self.config, self.v51,
                                             self.settings.high_end)
        hop = self.plan.hop
        begin = int((a - first) * hop)
        end = (self.total if b == self.layout.frames else int(b * hop)) - int(first * hop)
        return primary[:, begin:end], secondary[:, begin:end]
