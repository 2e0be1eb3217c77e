"""Reference and estimate folders for the tests of ``stemsplit eval``, and the whole-array
formulas their scores are checked against.

Audio is written as 32-bit float wav, which ffmpeg decodes back to the very same float32
samples, so a score computed from the files can be compared with one computed from the
arrays written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile

STEMS = ("vocals", "drums", "bass", "other")
EPS = 1e-8


def synthetic_stems(seconds: float, rate: int, seed: int = 0, channels: int = 2,
                    stems: Sequence[str] = STEMS) -> dict[str, np.ndarray]:
    """Distinct (channels, frames) float32 stems: a tone per stem with a slow envelope and a
    little noise, each channel a little different (level and phase)."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    t = np.arange(frames) / rate
    result = {}
    for index, stem in enumerate(stems):
        frequency = 110.0 * (index + 1) * (1.0 + 0.1 * rng.random())
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.2 * index) * t + rng.random() * 6)
        channels_ = []
        for channel in range(channels):
            tone = np.sin(2 * np.pi * frequency * t + 0.3 * channel)
            noise = 0.05 * rng.standard_normal(frames)
            channels_.append((0.2 - 0.03 * channel) * envelope * tone + noise)
        result[stem] = np.asarray(channels_, dtype=np.float32)
    return result


def estimates_of(stems: Mapping[str, np.ndarray], seed: int = 1, leak: float = 0.1,
                 noise: float = 0.03) -> dict[str, np.ndarray]:
    """Imperfect estimates: each stem plus a little of the others and some noise."""
    rng = np.random.default_rng(seed)
    result = {}
    for stem, audio in stems.items():
        others = sum(other for name, other in stems.items() if name != stem)
        estimate = audio + leak * others + noise * rng.standard_normal(audio.shape)
        result[stem] = estimate.astype(np.float32)
    return result


def write_audio(path: Path, audio: np.ndarray, rate: int) -> Path:
    """A (channels, frames) array as a 32-bit float wav (or flac, as 24-bit, by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "FLOAT" if path.suffix == ".wav" else "PCM_24"
    soundfile.write(path, np.asarray(audio).T, rate, subtype=subtype)
    return path


def read_audio(path: Path) -> np.ndarray:
    """A file as float32 (channels, frames)."""
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T)


def write_track(folder: Path, stems: Mapping[str, np.ndarray], rate: int, *,
                mixture: bool = False, ext: str = "wav") -> Path:
    """``folder/<stem>.<ext>`` for each stem (and ``mixture.wav``, their sum)."""
    for stem, audio in stems.items():
        write_audio(folder / f"{stem}.{ext}", audio, rate)
    if mixture:
        write_audio(folder / "mixture.wav", sum(stems.values()).astype(np.float32), rate)
    return folder


def direct_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Global SDR over the whole array, in one numpy expression."""
    s = np.asarray(reference, dtype=np.float64)
    e = np.asarray(estimate, dtype=np.float64) - s
    return float(10 * np.log10((np.sum(s ** 2) + EPS) / (np.sum(e ** 2) + EPS)))


def direct_si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SI-SDR over the whole (flattened) array, with torchmetrics' eps placement."""
    s = np.asarray(reference, dtype=np.float64).ravel()
    x = np.asarray(estimate, dtype=np.float64).ravel()
    alpha = (np.sum(s * x) + EPS) / (np.sum(s ** 2) + EPS)
    target = alpha * s
    return float(10 * np.log10((np.sum(target ** 2) + EPS) / (np.sum((target - x) ** 2) + EPS)))
