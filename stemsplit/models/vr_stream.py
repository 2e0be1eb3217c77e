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

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np

from .vr_mask import aggression_exponents, apply_aggression, mask_of
from .vr_spectrum import MIX_RATE, BandConfig, Prepared, Settings, prepare
from .vr_synthesis import stems_from_mask

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
    # libsamplerate and soxr: their own rounding; run them on silence (one channel)
    zeros = np.zeros((1, length), dtype=np.float32)
    return _unpadded(zeros, old, new, method)


def _unpadded(signal: np.ndarray, old: int, new: int, method: str) -> int:
    import importlib

    if method.startswith("soxr"):
        soxr = importlib.import_module("soxr")
        return len(soxr.resample(signal[0], old, new, quality=method))
    converter = importlib.import_module("samplerate")
    return len(converter.resample(signal[0], new / old, converter_type=method))


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
        reach = offset + step + 16
        context = -(-reach // align) * align
        wanted = chunk_frames or 8 * step
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


def spectrum_maximum(read: Reader, layout: TrackLayout, config: BandConfig, v51: bool,
                     plan: ChunkPlan) -> float:
    """The pre-pass: the maximum magnitude of the whole track's combined spectrogram."""
    maximum = 0.0
    for a in range(0, layout.frames, plan.chunk):
        b = min(a + plan.chunk, layout.frames)
        first = max(0, a - plan.context)
        prepared, _ = _prepare_segment(read, first, b + plan.context, layout, config, v51,
                                       False, plan)
        kept = np.abs(prepared.spectrogram[:, :, a - first : b - first])
        if kept.size:
            maximum = max(maximum, float(kept.max()))
    return maximum


def separate_chunks(read: Reader, samples: int, config: BandConfig, v51: bool,
                    settings: Settings, network, offset: int, primary_stem: str,
                    device="cpu", chunk_frames: int | None = None,
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(primary, secondary) blocks, (2, time) float64 at 44.1 kHz, in order: the
    whole-track stems (which end ``hop * (l - 1)`` samples in, resampled for configs at
    another rate) block by block."""
    layout = TrackLayout.of(samples, config)
    plan = ChunkPlan.of(config, settings, offset, chunk_frames)
    scale = spectrum_maximum(read, layout, config, v51, plan)
    exponents = aggression_exponents(settings, primary_stem, config.aggression_correction)
    top = config.bands[-1]
    total = top.hop * (layout.frames - 1)
    if config.sample_rate != MIX_RATE:
        total = math.ceil(Fraction(total * MIX_RATE, config.sample_rate))
    carried = None
    for a in range(0, layout.frames, plan.chunk):
        b = min(a + plan.chunk, layout.frames)
        first = max(0, a - plan.context)
        prepared, _ = _prepare_segment(read, first, b + plan.context, layout, config, v51,
                                       settings.high_end, plan)
        magnitude = np.abs(prepared.spectrogram)
        # The mask of the chunk's frames and a grid step either side (the inverse STFTs and
        # the resamplers back reach a few frames); the previous chunk gave the first two
        # steps' (its windows saw real frames there: exact), so only the rest runs.
        step = plan.step
        lo = a - step if carried is None else a + step
        mask = mask_of(magnitude, network, offset, settings, scale=scale, device=device,
                       frames=(max(0, lo - first), b + step - first))
        if carried is not None:
            mask[:, :, a - step - first : a + step - first] = carried
        carried = mask[:, :, b - step - first : b + step - first].copy()
        mask = apply_aggression(mask, config.bands[0].crop[1], exponents)
        primary, secondary = stems_from_mask(prepared, mask, config, v51, settings.high_end)
        begin = int((a - first) * plan.hop)
        end = (total if b == layout.frames else int(b * plan.hop)) - int(first * plan.hop)
        yield primary[:, begin:end], secondary[:, begin:end]
