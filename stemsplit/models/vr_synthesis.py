"""UVR's VR stems from a mask: per band back to a wave and up to 44.1 kHz (step 5 of
``vr_spectrum``)."""

from __future__ import annotations

import numpy as np

from .vr_resample import resample
from .vr_spectrum import (MIX_RATE, Band, BandConfig, Prepared, decode_spec_wave, decode_wave,
                          highpass_fade, highpass_mask, istft, lowpass_fade, lowpass_mask)

OUTPUT_RESAMPLER = "sinc_fastest"
"""What audio-separator 0.47.1's spec_utils uses between bands on the way back (Linux,
Windows and Intel macOS: ``wav_resolution``)."""
FINAL_RESAMPLER = "soxr_hq"
"""librosa's default, for configs whose rate is not 44.1 kHz."""


def mirror_high_end(spec: np.ndarray, high_end: np.ndarray, config: BandConfig) -> np.ndarray:
    """The mixture's top bins, limited in magnitude by the stem's bins mirrored below the
    model's range (UVR's "mirroring")."""
    height = high_end.shape[1]
    start = config.pre_filter[0]
    mirror = np.flip(np.abs(spec[:, start - 10 - height : start - 10, :]), 1)
    mirror = mirror * np.exp(1.0j * np.angle(high_end))
    return np.where(np.abs(high_end) <= np.abs(mirror), high_end, mirror)


def to_wave(spec: np.ndarray, config: BandConfig, v51: bool, high_end_bins: int = 0,
            high_end: np.ndarray | None = None) -> np.ndarray:
    """A stem's combined spectrogram -> (2, time) float64 at the config's rate."""
    bands = config.bands
    count = len(bands)
    frames = spec.shape[2]
    offset = 0
    wave = None
    for index, band in enumerate(bands):
        part = np.zeros((2, band.n_fft // 2 + 1, frames), dtype=np.complex128)
        height = band.crop[1] - band.crop[0]
        part[:, band.crop[0] : band.crop[1], :] = spec[:, offset : offset + height, :]
        offset += height
        if index == count - 1:
            if high_end_bins:
                top = band.n_fft // 2
                part[:, top - high_end_bins : top, :] = high_end[:, :high_end_bins, :]
            if band.highpass is not None:
                part = _highpass(part, band.highpass, v51)
            band_wave = _band_wave(part, band, config, v51)
            wave = band_wave if count == 1 else wave + band_wave
        else:
            if index > 0:
                part = _highpass(part, band.highpass, v51)
            if band.lowpass is not None:
                part = (part * lowpass_mask(part.shape[1], *band.lowpass) if v51
                        else lowpass_fade(part, *band.lowpass))
            band_wave = _band_wave(part, band, config, v51)
            wave = band_wave if index == 0 else wave + band_wave
            wave = resample(wave, band.sample_rate, bands[index + 1].sample_rate,
                            OUTPUT_RESAMPLER)
    return wave


def _highpass(part: np.ndarray, highpass: tuple[int, int], v51: bool) -> np.ndarray:
    start, stop = highpass[0], highpass[1] - 1
    return part * highpass_mask(part.shape[1], start, stop) if v51 else highpass_fade(part, start, stop)


def _band_wave(part: np.ndarray, band: Band, config: BandConfig, v51: bool) -> np.ndarray:
    wave = istft(part, band.hop)
    return decode_spec_wave(wave, band.convert_channels) if v51 else decode_wave(wave, config.channels)


def stems_from_mask(prepared: Prepared, mask: np.ndarray, config: BandConfig, v51: bool,
                    high_end: bool) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary), each (2, time) float64 at 44.1 kHz."""
    spectrogram = prepared.spectrogram
    magnitude, phase = np.abs(spectrogram), np.angle(spectrogram)
    mixture = magnitude * np.exp(1.0j * phase)
    results = []
    for stem_mask in (mask, 1 - mask):
        spec = np.nan_to_num(stem_mask * mixture, nan=0.0, posinf=0.0, neginf=0.0)
        if high_end and prepared.high_end is not None and prepared.high_end_bins:
            extra = mirror_high_end(spec, prepared.high_end[..., : spec.shape[2]], config)
            wave = to_wave(spec, config, v51, prepared.high_end_bins, extra)
        else:
            wave = to_wave(spec, config, v51)
        if config.sample_rate != MIX_RATE:
            wave = resample(wave, config.sample_rate, MIX_RATE, FINAL_RESAMPLER)
        results.append(wave)
    return results[0], results[1]
