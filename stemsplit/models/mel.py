"""Slaney-style mel filterbank, numpy only.

``slaney_mel_filterbank(sr, n_fft, n_mels)`` equals ``librosa.filters.mel(sr=sr, n_fft=n_fft,
n_mels=n_mels)`` with librosa's defaults (``htk=False``, ``norm="slaney"``, float32): the
Mel-Band RoFormer derives its (overlapping) bands from it, so the same float64 steps are
followed and the result is cast to float32 at the same points.
"""

from __future__ import annotations

import numpy as np

# Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above. numpy's log and
# exp throughout (not the math module), so every float64 step rounds as librosa's does.
_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    if hz >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP
    return hz / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _F_SP * mels
    log_part = mels >= _MIN_LOG_MEL
    hz[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_part] - _MIN_LOG_MEL))
    return hz


def slaney_mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32, Slaney area norm."""
    if fmax is None:
        fmax = float(sample_rate) / 2
    n_mels = int(n_mels)
    n_bins = 1 + int(n_fft) // 2
    weights = np.zeros((n_mels, n_bins), dtype=np.float32)

    bin_hz = np.fft.rfftfreq(n=int(n_fft), d=1.0 / sample_rate)
    edges_mel = np.linspace(_hz_to_mel(float(fmin)), _hz_to_mel(float(fmax)), n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)

    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, bin_hz)
    for band in range(n_mels):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0, np.minimum(rising, falling))

    # Constant energy per channel (the float32 array is scaled by float64 factors in place).
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, np.newaxis]
    return weights
