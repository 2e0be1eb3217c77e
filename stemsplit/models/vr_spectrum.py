"""UVR's VR Architecture processing: a multi-band magnitude spectrogram, a mask, two stems.

As audio-separator 0.47.1 (and UVR 5.6) runs it, for a stereo mixture at 44.1 kHz:

1. **Bands.** From the highest band down, the mixture is resampled to each band's rate
   (each band's own resampler, from the band above) and cut into a centred STFT (periodic
   Hann, zeros around the ends). The older nets see the channels reversed or as mid/side
   when the config says so; v5.1 nets convert the channels per band instead.
2. **One spectrogram.** Each band's bins ``crop`` are stacked; the top bins are faded out
   (v5.1: a linear mask; older nets: a gain loop, or a linear fade for one band).
3. **Mask.** Magnitudes are divided by their maximum over the whole track, padded by the
   network's ``offset`` frames in front and to whole windows behind, and cut into windows
   of ``window`` frames every ``window - 2 offset``; the network's masks of the windows'
   middles are joined. TTA averages a second pass whose grid is moved by half a step.
4. **Aggression** raises the mask to 1 + a/3 below band 1's top bin and 1 + a above
   (a = aggression/50, or 1 - that for a primary stem that is not an accompaniment).
   **Post-processing** (optional) pulls the mask to 1 over long runs of frames where it
   stays above a threshold everywhere.
5. **Stems.** mask and 1 - mask times the mixture's spectrogram; per band back to a wave
   (band filters, inverse STFT, added to the lower bands' sum resampled up with
   libsamplerate's sinc_fastest); with high-end mirroring, the top band's bins above the
   model's range come from the mixture, limited by the mirrored stem. Configs at another
   rate than 44.1 kHz are resampled to it last (soxr "HQ").

Steps 1-2 (and the shapes, filters, channel layouts and transforms) are here, 3-4 in
``vr_mask``, 5 in ``vr_synthesis``; ``vr_stream`` runs them chunk by chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .vr_resample import resample

MIX_RATE = 44100


@dataclass(frozen=True)
class Band:
    sample_rate: int
    hop: int
    n_fft: int
    crop: tuple[int, int]
    resampler: str
    lowpass: tuple[int, int] | None = None
    highpass: tuple[int, int] | None = None
    convert_channels: str | None = None


@dataclass(frozen=True)
class BandConfig:
    """One of UVR's band configurations (``modelparams/*.json``)."""

    name: str
    bins: int
    sample_rate: int
    pre_filter: tuple[int, int]
    channels: str
    bands: tuple[Band, ...]
    aggression_correction: tuple[float, float] | None = None


@dataclass(frozen=True)
class Settings:
    """What the user chose (audio-separator's defaults)."""

    window: int = 512
    aggression: int = 5
    tta: bool = False
    post_process: bool = False
    post_process_threshold: float = 0.2
    high_end: bool = False
    batch_size: int = 1


@dataclass
class Prepared:
    """The mixture's combined spectrogram, and the top band's bins kept for mirroring."""

    spectrogram: np.ndarray  # (2, bins + 1, frames) complex64
    high_end: np.ndarray | None = None
    high_end_bins: int = 0
    extra: dict = field(default_factory=dict)


# -- filters ---------------------------------------------------------------------------
def lowpass_mask(bins: int, start: int, stop: int) -> np.ndarray:
    return np.concatenate([np.ones(start - 1), np.linspace(1, 0, stop - start + 1),
                           np.zeros(bins - stop)])[:, None]


def highpass_mask(bins: int, start: int, stop: int) -> np.ndarray:
    return np.concatenate([np.zeros(stop + 1), np.linspace(0, 1, 1 + start - stop),
                           np.ones(bins - start - 2)])[:, None]


def lowpass_fade(spec: np.ndarray, start: int, stop: int) -> np.ndarray:
    gain = 1.0
    for b in range(start, stop):
        gain -= 1 / (stop - start)
        spec[:, b, :] = gain * spec[:, b, :]
    spec[:, stop:, :] *= 0
    return spec


def highpass_fade(spec: np.ndarray, start: int, stop: int) -> np.ndarray:
    gain = 1.0
    for b in range(start, stop, -1):
        gain -= 1 / (start - stop)
        spec[:, b, :] = gain * spec[:, b, :]
    spec[:, 0 : stop + 1, :] *= 0
    return spec


# -- channels --------------------------------------------------------------------------
def _encode_wave(wave: np.ndarray, layout: str) -> np.ndarray:
    left, right = wave[0], wave[1]
    if layout == "reverse":
        return np.stack([left[::-1], right[::-1]])
    if layout == "mid_side":
        return np.stack([(left + right) / 2, left - right])
    if layout == "mid_side_b2":
        return np.stack([right + left * 0.5, left - right * 0.5])
    return wave  # "stereo"; 0.47.1 treats "mid_side_b" and "stereo_w" as stereo too


def decode_wave(wave: np.ndarray, layout: str) -> np.ndarray:
    left, right = wave[0], wave[1]
    if layout == "reverse":
        return np.stack([left[::-1], right[::-1]])
    if layout == "mid_side":
        return np.stack([left + right / 2, left - right / 2])
    if layout == "mid_side_b2":
        return np.stack([right / 1.25 + 0.4 * left, left / 1.25 - 0.4 * right])
    return wave


def _encode_spec(spec: np.ndarray, kind: str | None) -> np.ndarray:
    a, b = spec[0], spec[1]
    if kind == "mid_side_c":
        return np.stack([a + b * 0.25, b - a * 0.25])
    if kind == "mid_side":
        return np.stack([(a + b) / 2, a - b])
    if kind == "stereo_n":
        return np.stack([(a + b * 0.25) / 0.9375, (b + a * 0.25) / 0.9375])
    return spec


def decode_spec_wave(wave: np.ndarray, kind: str | None) -> np.ndarray:
    left, right = wave[0], wave[1]
    if kind == "mid_side_c":
        return np.stack([left / 1.0625 - right / 4.25, right / 1.0625 + left / 4.25])
    if kind == "mid_side":
        return np.stack([left + right / 2, left - right / 2])
    if kind == "stereo_n":
        return np.stack([left - right * 0.25, right - left * 0.25])
    return wave


# -- transforms ------------------------------------------------------------------------
def stft(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(2, time) float -> (2, n_fft/2 + 1, frames) complex64: centred, zeros around the
    ends, periodic Hann, computed in float64 (as librosa)."""
    signal = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float64))
    signal = torch.nn.functional.pad(signal[None], (n_fft // 2, n_fft // 2))[0]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    spec = torch.stft(signal, n_fft, hop, window=window, center=False, return_complex=True)
    return spec.numpy().astype(np.complex64)


def istft(spec: np.ndarray, hop: int) -> np.ndarray:
    """(2, bins, frames) complex -> (2, hop * (frames - 1)) float64."""
    n_fft = 2 * (spec.shape[1] - 1)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    tensor = torch.from_numpy(np.ascontiguousarray(spec, dtype=np.complex128))
    return torch.istft(tensor, n_fft, hop, window=window, center=True).numpy()


# -- analysis --------------------------------------------------------------------------
def prepare(mix: np.ndarray, config: BandConfig, v51: bool, high_end: bool,
            cut: Callable[[int, np.ndarray, int], np.ndarray] | None = None) -> Prepared:
    """The combined spectrogram of ``mix`` (2, time) float32 at 44.1 kHz. ``cut(index,
    wave, rate)``, if given, sees each band's wave after its resampling (a piece of a track
    is cut where the whole track's band ends)."""
    bands = config.bands
    count = len(bands)
    specs: list[np.ndarray] = [None] * count  # type: ignore[list-item]
    wave = mix
    rate = MIX_RATE
    prepared = Prepared(spectrogram=None)  # type: ignore[arg-type]
    for index in range(count - 1, -1, -1):
        band = bands[index]
        wave = resample(wave, rate, band.sample_rate, band.resampler)
        rate = band.sample_rate
        if cut is not None:
            wave = cut(index, wave, rate)
        if v51:
            spec = _encode_spec(stft(wave, band.n_fft, band.hop), band.convert_channels)
        else:
            spec = stft(_encode_wave(wave, config.channels), band.n_fft, band.hop)
        specs[index] = spec
        if index == count - 1 and high_end:
            half = band.n_fft // 2
            prepared.high_end_bins = (half - band.crop[1]) + (config.pre_filter[1]
                                                              - config.pre_filter[0])
            prepared.high_end = spec[:, half - prepared.high_end_bins : half, :]
    frames = min(spec.shape[2] for spec in specs)
    combined = np.zeros((2, config.bins + 1, frames), dtype=np.complex64)
    offset = 0
    for band, spec in zip(bands, specs):
        height = band.crop[1] - band.crop[0]
        combined[:, offset : offset + height, :] = spec[:, band.crop[0] : band.crop[1], :frames]
        offset += height
    if offset > config.bins:
        raise ValueError(f"band config {config.name}: its bands give more than {config.bins} bins")
    start, stop = config.pre_filter
    if start > 0:
        if v51:
            combined *= lowpass_mask(combined.shape[1], start, stop)
        elif count == 1:
            combined = lowpass_fade(combined, start, stop)
        else:
            gain_before = 1.0
            for b in range(start + 1, stop):
                gain = math.pow(10, -(b - start) * (3.5 - gain_before) / 20.0)
                gain_before = gain
                combined[:, b, :] *= gain
    prepared.spectrogram = combined
    return prepared
