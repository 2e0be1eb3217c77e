"""slaney_mel_filterbank against librosa.filters.mel, and the Mel-Band RoFormer's bands
against audio-separator's (which builds them with librosa, as ZFTurbo does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemsplit.models.mel import slaney_mel_filterbank
from tests.oracles import require
from tests.roformer_models import oracle_class

CASES = [
    (44100, 2048, 60),
    (44100, 2048, 64),
    (44100, 2048, 128),
    (48000, 2048, 60),
    (44100, 2047, 60),  # odd n_fft
    (22050, 1023, 40),
    (44100, 4096, 60),
]


def zfturbo_bands(filterbank: np.ndarray) -> np.ndarray:
    """ZFTurbo's two fixes (DC bin into the first band, Nyquist into the last), then > 0."""
    fixed = filterbank.copy()
    fixed[0, 0] = 1.0
    fixed[-1, -1] = 1.0
    return fixed > 0


@pytest.mark.parametrize("sample_rate, n_fft, n_mels", CASES)
def test_filterbank_equals_librosa(sample_rate, n_fft, n_mels):
    librosa = require("librosa")
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    ours = slaney_mel_filterbank(sample_rate, n_fft, n_mels)
    assert ours.dtype == np.float32
    assert ours.shape == (n_mels, n_fft // 2 + 1) == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(zfturbo_bands(ours), zfturbo_bands(expected))
    np.testing.assert_array_equal(ours > 0, expected > 0)


def test_filterbank_limits_equal_librosa():
    librosa = require("librosa")
    expected = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=48, fmin=30.0, fmax=16000.0)
    ours = slaney_mel_filterbank(44100, 2048, 48, fmin=30.0, fmax=16000.0)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours > 0, expected > 0)


@pytest.mark.parametrize(
    "sample_rate, n_fft, num_bands, stereo",
    [
        (44100, 2048, 60, True),
        (44100, 2048, 60, False),
        (48000, 2048, 64, True),
        (44100, 4096, 60, True),
    ],
)
def test_mel_band_roformer_bands_equal_the_oracle(sample_rate, n_fft, num_bands, stereo):
    from stemsplit.models.mel_band_roformer import MelBandRoformer

    kwargs = dict(
        dim=8,
        depth=1,
        heads=1,
        dim_head=8,
        time_transformer_depth=1,
        freq_transformer_depth=1,
        mask_estimator_depth=0,
        stereo=stereo,
        num_bands=num_bands,
        sample_rate=sample_rate,
        stft_n_fft=n_fft,
        stft_win_length=n_fft,
    )
    oracle = oracle_class("mel")(**kwargs)
    ours = MelBandRoformer(**kwargs)
    for name in ("freq_indices", "num_bands_per_freq", "num_freqs_per_band", "freqs_per_band"):
        theirs, mine = getattr(oracle, name), getattr(ours, name)
        assert mine.dtype == theirs.dtype, name
        assert torch.equal(mine, theirs), name
    assert ours.band_split.dim_inputs == oracle.band_split.dim_inputs
    assert not any(key in ours.state_dict() for key in ("freq_indices", "num_bands_per_freq"))
