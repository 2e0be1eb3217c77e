"""Parity of stemsplit.models.hdemucs.HDemucs with demucs 4.1.0 (the test oracle)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from stemsplit.models.hdemucs import HDemucs
from tests import parity
from tests.parity import assert_close, load_half_state, perturb, run_pair, state_shapes

reference = pytest.importorskip("demucs.hdemucs")

SOURCES = ["drums", "bass", "other", "vocals"]

# With nfft=1024 (hop 256) the frequency branch has 512 -> 128 -> 32 -> 8 -> 1 bins:
# the branches merge at layer 3 and depth 5 leaves one shared time layer.
SMALL = dict(channels=8, depth=5, nfft=1024)

CONFIGS = {
    "cac": dict(SMALL),
    "mix_phase": dict(SMALL, cac=False),
    "mask": dict(SMALL, cac=False, wiener_iters=-1, end_iters=-1),
    "wiener": dict(SMALL, cac=False, wiener_iters=1, end_iters=1),
    "wiener_residual": dict(SMALL, cac=False, wiener_iters=2, end_iters=2, wiener_residual=True),
    "attn_lstm_norm": dict(SMALL, dconv_mode=3, dconv_attn=1, dconv_lstm=2, norm_starts=1,
                           norm_groups=2, context_enc=1, channels=16, channels_time=8),
    "multi_freqs": dict(SMALL, multi_freqs=[0.25, 0.5], multi_freqs_depth=2, freq_emb=0.3),
    "no_freq_emb_no_rewrite": dict(SMALL, freq_emb=0, rewrite=False),
    "hybrid_old": dict(SMALL, hybrid_old=True),
    "spectrogram_only": dict(SMALL, hybrid=False),
    "mono": dict(SMALL, audio_channels=1),
}

LENGTHS = [57330, 256 * 40, 3001]  # 1.3 s at 44.1 kHz, a multiple of the hop, a short one


def build_pair(kwargs: dict, seed: int = 0):
    """demucs' model with random weights, and ours with the same state. The LayerScales
    (1e-4 at init) are drawn from U(0.2, 1), so that the residual branches matter."""
    return parity.build_pair(partial(reference.HDemucs, SOURCES, **kwargs),
                             partial(HDemucs, SOURCES, **kwargs), seed=seed,
                             randomize=partial(perturb, scales=(0.2, 1.0)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_demucs(name):
    kwargs = CONFIGS[name]
    ref, ours = build_pair(kwargs)
    channels = kwargs.get("audio_channels", 2)
    lengths = LENGTHS if name in ("cac", "mix_phase", "multi_freqs") else LENGTHS[1:]
    for length in lengths:
        mix = torch.randn(2 if length < 5000 else 1, channels, length)
        expected, got = run_pair(ref, ours, mix)
        assert got.shape == (mix.shape[0], len(SOURCES), channels, length)
        assert_close(expected, got)


def test_silence_and_valid_length():
    ref, ours = build_pair(CONFIGS["cac"])
    assert ours.valid_length(12345) == 12345
    mix = torch.zeros(1, 2, 4000)
    mix[..., 2000:] = torch.randn(1, 2, 2000)
    assert_close(*run_pair(ref, ours, mix))


def test_half_precision_state():
    ref, ours = build_pair(CONFIGS["attn_lstm_norm"], seed=1)
    load_half_state(ref, ours)
    mix = torch.randn(1, 2, 9000)
    assert_close(*run_pair(ref, ours, mix))


def test_metadata():
    model = HDemucs(SOURCES, segment=7.8, samplerate=32000, **SMALL)
    assert model.sources == SOURCES
    assert model.samplerate == 32000
    assert model.audio_channels == 2
    assert model.segment == 7.8
    model.segment = 44
    assert model.segment == 44


def test_full_size_hdemucs_mmi():
    """The hdemucs_mmi architecture at its real size, on a short input."""
    kwargs = dict(channels=48, depth=6, dconv_mode=1, dconv_comp=4, dconv_attn=4,
                  dconv_lstm=4, cac=True, hybrid=True)
    ref, ours = build_pair(kwargs)
    assert state_shapes(ours) == state_shapes(ref)
    mix = torch.randn(1, 2, 44100)
    assert_close(*run_pair(ref, ours, mix))


@pytest.mark.parametrize("channels,iters,residual", [(2, 1, False), (2, 2, True), (1, 1, True),
                                                     (2, 0, True)])
def test_wiener_filter_windows_and_silence(channels, iters, residual):
    """Excerpts of 300 frames, several items, exactly silent bins, mono and stereo."""
    kwargs = dict(SMALL, cac=False, wiener_iters=iters, end_iters=iters,
                  wiener_residual=residual, audio_channels=channels)
    ref, ours = build_pair(kwargs)
    torch.manual_seed(3)
    shape = (2, channels, 40, 650)
    mix = torch.complex(torch.randn(shape), torch.randn(shape))
    mix[:, :, :, 100:120] = 0  # silence, as in zero-padded chunks
    mags = torch.rand(2, len(SOURCES), channels, 40, 650) * 3
    expected = ref._mask(mix.clone(), mags.clone())
    got = ours._mask(mix.clone(), mags.clone())
    assert_close(expected, got, dtype=expected.dtype)
