"""Converting an in-memory array to another sample rate and channel count (:func:`convert`),
with ffmpeg's resampler and down-mix, so arrays and files sound the same.
"""

from __future__ import annotations

import subprocess

import numpy as np

from ..errors import InputError
from .ffmpeg import ffmpeg_path, own_group


def convert(samples: np.ndarray, sample_rate: int, target_sample_rate: int,
            channels: int) -> np.ndarray:
    """An in-memory (channels, frames) float32 array at another rate and channel count.

    Mono is copied onto every channel and extra channels are down-mixed by ffmpeg, as for
    files; resampling uses ffmpeg's resampler, so arrays and files sound the same. The result
    has exactly round(frames * target / source) frames.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    source_channels, frames = samples.shape
    if source_channels == 1 and channels > 1:
        samples = np.repeat(samples, channels, axis=0)
        source_channels = channels
    if source_channels == channels and sample_rate == target_sample_rate:
        return np.ascontiguousarray(samples)
    target_frames = int(round(frames * target_sample_rate / sample_rate))
    cmd = [
        ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "f32le", "-ar", str(sample_rate), "-ac", str(source_channels), "-i", "pipe:0",
        "-ac", str(channels), "-ar", str(target_sample_rate), "-f", "f32le", "pipe:1",
    ]
    completed = subprocess.run(cmd, input=np.ascontiguousarray(samples.T).tobytes(),
                               capture_output=True, **own_group())
    if completed.returncode != 0:
        reason = completed.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"cannot convert audio: {reason[-1] if reason else 'ffmpeg failed'}")
    converted = np.frombuffer(completed.stdout, dtype=np.float32).reshape(-1, channels).T
    if converted.shape[1] < target_frames:
        converted = np.pad(converted, ((0, 0), (0, target_frames - converted.shape[1])))
    return np.ascontiguousarray(converted[:, :target_frames])
