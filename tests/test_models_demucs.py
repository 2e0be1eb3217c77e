"""Parity of stemsplit.models.demucs.Demucs with demucs 4.1.0 (the test oracle)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from stemsplit.models import layers
from stemsplit.models.demucs import Demucs, center_trim
from tests import parity
from tests.parity import assert_close, load_half_state, perturb, run_pair

reference = pytest.importorskip("demucs.demucs")

SOURCES = ["drums", "bass", "other", "vocals"]

CONFIGS = {
    # the layout of the mdx bag's time-domain members, scaled down
    "mdx_like": dict(channels=8, depth=4),
    "no_resample_no_normalize": dict(channels=8, depth=4, resample=False, normalize=False),
    "relu_no_glu_lstm": dict(channels=8, depth=4, glu=False, gelu=False, lstm_layers=2),
    "dconv_attn_lstm_norm": dict(channels=16, depth=3, dconv_mode=3, dconv_attn=2, dconv_lstm=1,
                                 norm_starts=1, norm_groups=2, growth=3, context=2),
    "no_rewrite": dict(channels=8, depth=3, rewrite=False, dconv_mode=2, kernel_size=6,
                       stride=3),
    "mono": dict(channels=8, depth=3, audio_channels=1),
}

LENGTHS = [57330, 44100, 1001]


def build_pair(kwargs: dict, seed: int = 0):
    """demucs' model with random weights (the DConv LayerScales from U(0.2, 1), so that the
    branches matter), and ours with the same state."""
    return parity.build_pair(partial(reference.Demucs, SOURCES, **kwargs),
                             partial(Demucs, SOURCES, **kwargs), seed=seed,
                             randomize=partial(perturb, scales=(0.2, 1.0)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_demucs(name):
    kwargs = CONFIGS[name]
    ref, ours = build_pair(kwargs)
    channels = kwargs.get("audio_channels", 2)
    # attention and LSTMs on long sequences are slow (in demucs too): keep those short
    lengths = LENGTHS if kwargs.get("dconv_attn", 4) >= kwargs["depth"] else [6001, 1001]
    for length in lengths:
        assert ours.valid_length(length) == ref.valid_length(length)
        mix = torch.randn(2 if length < 5000 else 1, channels, length)
        expected, got = run_pair(ref, ours, mix)
        assert got.shape == (mix.shape[0], len(SOURCES), channels, length)
        assert_close(expected, got)


@pytest.mark.parametrize("length", [1, 8, 100, 343980, 1234567])
def test_valid_length(length):
    for kwargs in CONFIGS.values():
        ref = reference.Demucs(SOURCES, **kwargs)
        ours = Demucs(SOURCES, **kwargs)
        assert ours.valid_length(length) == ref.valid_length(length)


def test_half_precision_state():
    ref, ours = build_pair(CONFIGS["dconv_attn_lstm_norm"], seed=1)
    load_half_state(ref, ours)
    mix = torch.randn(1, 2, 6000)
    assert_close(*run_pair(ref, ours, mix))


def test_legacy_key_names():
    """Pre-DConv checkpoints kept the 1x1 conv at index 2 of each layer."""
    kwargs = dict(channels=8, depth=3, dconv_mode=0, norm_starts=10)
    ref, ours = build_pair(kwargs)
    state = ref.state_dict()
    old = {}
    for key, value in state.items():
        part, index, pos, leaf = key.split(".")
        if pos == "3":
            pos = "2"
        old[f"{part}.{index}.{pos}.{leaf}"] = value
    assert old.keys() != state.keys()
    fresh = Demucs(SOURCES, **kwargs).eval()
    fresh.load_state_dict(old, strict=True)
    mix = torch.randn(1, 2, 5000)
    with torch.no_grad():
        assert_close(ref(mix), fresh(mix))


def test_metadata_and_center_trim():
    model = Demucs(SOURCES, segment=7.8, channels=8, depth=2)
    assert (model.sources, model.samplerate, model.audio_channels) == (SOURCES, 44100, 2)
    assert model.segment == 7.8
    model.segment = 44
    assert model.segment == 44
    x = torch.arange(10.0)
    assert center_trim(x, 7).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert center_trim(x, torch.zeros(10)).tolist() == x.tolist()
    with pytest.raises(ValueError):
        center_trim(x, 11)


def _plain_dconv(dconv: layers.DConv, x: torch.Tensor) -> torch.Tensor:
    """DConv evaluated the plain way: ``x = x + branch(x)`` with every module as is."""
    for branch in dconv.layers:
        x = x + branch(x)
    return x


@pytest.mark.parametrize("channels,compress,batch,length", [(16, 4, 3, 50), (8, 2, 5, 17)])
def test_dconv_pointwise_matches_plain(monkeypatch, channels, compress, batch, length):
    """With a BLSTM / LocalState in the branches and B > 1 the 1x1 convs go through
    pointwise_conv1d; the result is unchanged."""
    torch.manual_seed(0)
    dconv = layers.DConv(channels, compress=compress, init=0.5, lstm=True, attn=True).eval()
    assert not dconv.banded
    calls = []
    original = layers.pointwise_conv1d

    def spy(x, conv):
        calls.append(tuple(x.shape))
        return original(x, conv)

    monkeypatch.setattr(layers, "pointwise_conv1d", spy)
    x = torch.randn(batch, channels, length)
    with torch.no_grad():
        expected = _plain_dconv(dconv, x)
        out = dconv(x)
        assert len(calls) == dconv.depth  # one 1x1 conv per branch
        assert_close(expected, out)
        assert_close(expected - x, out - x)  # the branches themselves, not only the residual
        calls.clear()
        one = x[:1]
        assert torch.equal(dconv(one), _plain_dconv(dconv, one))  # B == 1: the plain path
        assert not calls


@pytest.mark.parametrize("channels,compress,batch,freqs,length,extra", [
    (48, 8, 1, 24, 84, {}),  # an HTDemucs frequency-branch layer: (B, C, Fr, T)
    (96, 8, 2, 7, 21, {}),
    (16, 4, 1, 1, 300, {}),  # a time-branch layer: one "band"
    (16, 4, 2, 5, 40, dict(norm=False)),  # no norms: the 1x1 conv's bias added alone
    (16, 4, 2, 5, 40, dict(gelu=False, depth=-2)),  # ReLU, no dilation
])
def test_dconv_bands_match_the_per_band_dconv(channels, compress, batch, freqs, length, extra):
    """A DConv without BLSTM / attention runs on (B, C, Fr, T) in that layout, and on
    (B, C, T) as one band: the same as the plain DConv on every band (B * Fr, C, T)."""
    torch.manual_seed(0)
    dconv = layers.DConv(channels, compress=compress, init=0.5, **extra).eval()
    with torch.no_grad():
        for parameter in dconv.parameters():  # norms and scales away from their constants
            parameter.add_(0.2 * torch.randn(parameter.shape))
    assert dconv.banded
    x = torch.randn(batch, channels, freqs, length) + 0.3
    per_band = x.permute(0, 2, 1, 3).reshape(batch * freqs, channels, length)
    with torch.no_grad():
        expected = _plain_dconv(dconv, per_band).view(batch, freqs, channels, length)
        expected = expected.permute(0, 2, 1, 3)
        out = layers._apply_dconv_per_band(dconv, x)
        assert_close(expected, out)
        assert_close(expected - x, out - x)  # the branches themselves, not only the residual
        flat = x[:, :, 0]
        assert_close(_plain_dconv(dconv, flat), dconv(flat))  # (B, C, T): one band
    assert torch.equal(x[:, :, 0], flat)  # inputs are not written to


def test_pointwise_conv1d_matches_conv():
    torch.manual_seed(0)
    for bias in (True, False):
        conv = torch.nn.Conv1d(6, 96, 1, bias=bias)
        x = torch.randn(32, 6, 336)
        with torch.no_grad():
            assert_close(conv(x), layers.pointwise_conv1d(x, conv))
