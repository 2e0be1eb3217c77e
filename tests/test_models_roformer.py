"""Our Band-Split and Mel-Band RoFormers against the oracles.

audio-separator 0.47.1's classes are the oracle for the network on the same random weights
with zero_dc=False (it accepts zero_dc and skip_connection but ignores both). What it lacks is
checked against ZFTurbo's forward (the authority), derived from the oracle's own computation
(the spectrogram it hands to istft) or restated over its modules (tests/roformer_models.py).
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from tests.oracles import require
from tests.parity import assert_close_to_peak, state_shapes, with_stem_axis
from tests.roformer_models import (
    BS_MODULE,
    KIM_MEL,
    MEL_MODULE,
    VIPERX_BS,
    VIPERX_FREQS_PER_BANDS,
    build_oracle,
    build_pair,
    load_ours,
    oracle_class,
    oracle_masked_spectrogram,
    our_class,
    zfturbo_forward,
)

HOP = 441
SMALL = dict(
    dim=32, depth=2, heads=2, dim_head=16, time_transformer_depth=1, freq_transformer_depth=1
)
SMALL_BS = dict(
    SMALL,
    stereo=True,
    freqs_per_bands=VIPERX_FREQS_PER_BANDS,
    stft_n_fft=2048,
    stft_hop_length=HOP,
    stft_win_length=2048,
    mask_estimator_depth=2,
    mlp_expansion_factor=2,
)
SMALL_MEL = dict(
    SMALL,
    stereo=True,
    num_bands=60,
    sample_rate=44100,
    stft_n_fft=2048,
    stft_hop_length=HOP,
    stft_win_length=2048,
    mask_estimator_depth=2,
)


def mix(channels: int, length: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, length, generator=generator)


def oracle_output(oracle: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return with_stem_axis(oracle(x))


# --- BS-RoFormer -------------------------------------------------------------------------


def test_bs_matches_oracle_viperx_bands_stereo():
    oracle, ours = build_pair("bs", **SMALL_BS)
    x = mix(2, 30 * HOP)  # a whole number of hops: audio-separator's length equals ZFTurbo's
    out = ours(x)
    assert out.shape == (2, 1, 2, 30 * HOP)
    assert_close_to_peak(oracle_output(oracle, x), out)


def test_bs_matches_oracle_linear_transformer_two_stems_mono():
    kwargs = dict(
        SMALL_BS, stereo=False, num_stems=2, linear_transformer_depth=1, mask_estimator_depth=3
    )
    kwargs.update(time_transformer_depth=2)
    oracle, ours = build_pair("bs", **kwargs)
    x = mix(1, 24 * HOP)
    out = ours(x)
    assert out.shape == (2, 2, 1, 24 * HOP)
    assert_close_to_peak(oracle_output(oracle, x), out)


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_short_window_normalized_stft_matches_oracle(kind):
    # ZFTurbo's Mel sizes the window of its probe STFT by n_fft, so only BS can take a
    # win_length other than n_fft there.
    base = SMALL_BS if kind == "bs" else SMALL_MEL
    win_length = 1536 if kind == "bs" else 2048
    kwargs = dict(base, depth=1, stft_win_length=win_length, stft_normalized=True)
    oracle, ours = build_pair(kind, **kwargs)
    x = mix(2, 10 * HOP, batch=1)
    out = ours(x)
    assert_close_to_peak(oracle_output(oracle, x), out)


def test_bs_mask_estimator_depth_one_has_no_hidden_layer():
    oracle, ours = build_pair("bs", **dict(SMALL_BS, depth=1, mask_estimator_depth=1))
    assert not any(".to_freqs.0.0.2." in key for key in ours.state_dict())
    x = mix(2, 12 * HOP, batch=1)
    out = ours(x)
    assert_close_to_peak(oracle_output(oracle, x), out)


def test_zfturbo_restatement_matches_oracle():
    """The restated ZFTurbo forward used below equals the oracle where both apply."""
    oracle = build_oracle("bs", **dict(SMALL_BS, linear_transformer_depth=1))
    x = mix(2, 12 * HOP)
    restated = zfturbo_forward(oracle, x, mel=False, zero_dc=False)
    assert_close_to_peak(oracle_output(oracle, x), restated, rel=1e-6)  # layouts differ: rounding
    oracle = build_oracle("mel", **SMALL_MEL)
    restated = zfturbo_forward(oracle, x, mel=True, zero_dc=False)
    assert_close_to_peak(oracle_output(oracle, x), restated, rel=1e-6)


def test_bs_skip_connection_as_zfturbo():
    # audio-separator stores skip_connection and never reads it: ZFTurbo's forward adds, in
    # each block after the linear transformer, the outputs of all earlier blocks.
    kwargs = dict(SMALL_BS, depth=3, linear_transformer_depth=1)
    oracle, ours = build_pair("bs", ours_extra={"skip_connection": True}, **kwargs)
    x = mix(2, 16 * HOP)
    expected = zfturbo_forward(oracle, x, mel=False, skip_connection=True, zero_dc=False)
    assert_close_to_peak(expected, ours(x))
    assert (expected - oracle_output(oracle, x)).abs().max() > 1e-3  # the option does something


def test_bs_output_length_is_input_length():
    # ZFTurbo's BS iSTFT takes length = input length; audio-separator's takes none and comes
    # out (length // hop) * hop long. Expected: the oracle's masked spectrogram, inverted as
    # ZFTurbo does.
    oracle, ours = build_pair("bs", **SMALL_BS)
    length = 20 * HOP + 123
    x = mix(2, length)
    spec, istft_kwargs = oracle_masked_spectrogram(oracle, x)
    expected = torch.istft(spec, **{**istft_kwargs, "length": length}).view(2, 1, 2, length)
    out = ours(x)
    assert out.shape == (2, 1, 2, length)
    assert_close_to_peak(expected, out)


# --- Mel-Band RoFormer -------------------------------------------------------------------


def test_mel_matches_oracle_60_bands_stereo():
    oracle, ours = build_pair("mel", **SMALL_MEL)
    length = 25 * HOP + 200
    x = mix(2, length)
    out = ours(x)
    assert out.shape == (2, 1, 2, 25 * HOP)  # iSTFT without length, as ZFTurbo
    assert_close_to_peak(oracle_output(oracle, x), out)


def test_mel_matches_oracle_two_stems_mono_matched_length_expansion_factor():
    # audio-separator's MelBandRoformer accepts mlp_expansion_factor but builds its mask
    # estimators with the default 4; ZFTurbo passes it on. Its own MaskEstimator class with
    # the factor stands in, as ZFTurbo builds it.
    mel = require(MEL_MODULE)
    kwargs = dict(SMALL_MEL, stereo=False, num_stems=2, num_bands=48, mask_estimator_depth=1)
    oracle = build_oracle("mel", match_input_audio_length=True, **kwargs)
    dim_inputs = oracle.band_split.dim_inputs
    torch.manual_seed(5)
    oracle.mask_estimators = torch.nn.ModuleList(
        mel.MaskEstimator(dim=kwargs["dim"], dim_inputs=dim_inputs, depth=1, mlp_expansion_factor=3)
        for _ in range(2)
    )
    ours = load_ours(
        "mel",
        oracle,
        zero_dc=False,
        match_input_audio_length=True,
        mlp_expansion_factor=3,
        **kwargs,
    )
    length = 18 * HOP + 77
    x = mix(1, length)
    out = ours(x)
    assert out.shape == (2, 2, 1, length)
    assert_close_to_peak(oracle_output(oracle, x), out)


def test_mel_linear_transformer_and_skip_connection_as_zfturbo():
    # audio-separator's MelBandRoformer has no linear transformer (and ignores
    # skip_connection). ZFTurbo builds it like BS's, from the same transformer arguments, so
    # with the Mel default norm_output=True; it runs first in each block.
    bs = require(BS_MODULE)
    kwargs = dict(SMALL_MEL, depth=3)
    oracle = build_oracle("mel", **kwargs)
    torch.manual_seed(7)
    for block in oracle.layers:
        linear = bs.Transformer(
            dim=kwargs["dim"],
            depth=1,
            dim_head=kwargs["dim_head"],
            heads=kwargs["heads"],
            linear_attn=True,
        )
        block.insert(0, linear)
    ours = load_ours(
        "mel", oracle, zero_dc=False, linear_transformer_depth=1, skip_connection=True, **kwargs
    )
    x = mix(2, 14 * HOP)
    expected = zfturbo_forward(oracle, x, mel=True, skip_connection=True, zero_dc=False)
    assert_close_to_peak(expected, ours(x))


# --- zero_dc -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_zero_dc_zeroes_the_dc_bin_before_the_istft(kind):
    # audio-separator ignores zero_dc. ZFTurbo (default True) zeroes frequency bin 0 of the
    # masked spectrogram, then inverts: the expectation is the oracle's masked spectrogram
    # with bin 0 set to zero, inverted with ZFTurbo's length.
    kwargs = SMALL_BS if kind == "bs" else SMALL_MEL
    oracle, ours = build_pair(kind, ours_extra={"zero_dc": True}, **kwargs)
    assert our_class(kind)(**kwargs).zero_dc is True  # the default, as ZFTurbo
    length = 16 * HOP + 50
    x = mix(2, length)
    spec, istft_kwargs = oracle_masked_spectrogram(oracle, x)
    spec = spec.clone()
    spec[:, 0] = 0
    if kind == "bs":
        istft_kwargs["length"] = length
    expected = torch.istft(spec, **istft_kwargs).view(2, 1, 2, -1)
    out = ours(x)
    assert_close_to_peak(expected, out)
    without = oracle_output(oracle, x)
    assert (out[..., : without.shape[-1]] - without).abs().max() > 1e-4  # it changes the output


# --- state dicts and constructor ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("bs", dict(SMALL_BS, linear_transformer_depth=1, num_stems=2)),
        ("bs", dict(SMALL_BS, stereo=False, time_transformer_depth=2, mask_estimator_depth=1)),
        ("mel", dict(SMALL_MEL, num_stems=3)),
        ("mel", dict(SMALL_MEL, stereo=False, num_bands=64, mask_estimator_depth=1)),
    ],
)
def test_state_dict_keys_and_shapes_equal_the_oracle(kind, kwargs):
    torch.manual_seed(0)
    oracle = oracle_class(kind)(**kwargs)
    ours = our_class(kind)(**kwargs)
    theirs, mine = state_shapes(oracle), state_shapes(ours)
    assert list(mine) == list(theirs)
    assert mine == theirs
    # One rotary table per axis, shared by every layer (the same tensor under many keys).
    state = ours.state_dict()
    rotary = [k for k in state if k.endswith("rotary_embed.freqs")]
    assert len(rotary) == kwargs["depth"] * (
        kwargs["time_transformer_depth"] + kwargs["freq_transformer_depth"]
    )
    assert len({state[k].data_ptr() for k in rotary}) == 2
    assert torch.equal(state[rotary[0]], oracle.state_dict()[rotary[0]])


def test_mel_with_linear_transformer_keys_follow_zfturbo():
    # ZFTurbo's Mel with linear_transformer_depth > 0: blocks [linear, time, freq], the linear
    # transformer ending in an RMSNorm like the others.
    ours = our_class("mel")(**dict(SMALL_MEL, linear_transformer_depth=1, depth=1))
    keys = [k for k in ours.state_dict() if k.startswith("layers.0.0.")]
    assert keys == [
        "layers.0.0.layers.0.0.temperature",
        "layers.0.0.layers.0.0.norm.gamma",
        "layers.0.0.layers.0.0.to_qkv.0.weight",
        "layers.0.0.layers.0.0.to_out.1.weight",
        "layers.0.0.layers.0.1.net.0.gamma",
        "layers.0.0.layers.0.1.net.1.weight",
        "layers.0.0.layers.0.1.net.1.bias",
        "layers.0.0.layers.0.1.net.4.weight",
        "layers.0.0.layers.0.1.net.4.bias",
        "layers.0.0.norm.gamma",
    ]
    assert "layers.0.2.layers.0.0.rotary_embed.freqs" in ours.state_dict()


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_constructor_keywords_cover_the_oracle(kind):
    from stemsplit.models.roformer import INFERENCE_IGNORED_KEYS, UNSUPPORTED_KEYS

    theirs = inspect.signature(oracle_class(kind)).parameters
    mine = inspect.signature(our_class(kind)).parameters
    assert not INFERENCE_IGNORED_KEYS & set(mine)
    # Every oracle argument is ours (same default), ignored at inference, or the window
    # callable (not a config value; ours is always torch.hann_window).
    for name, parameter in theirs.items():
        if name in INFERENCE_IGNORED_KEYS or name == "stft_window_fn":
            continue
        assert name in mine, name
        if parameter.default is not inspect.Parameter.empty:
            assert mine[name].default == parameter.default, name
    assert set(mine) - set(theirs) <= {"use_pope", "linear_transformer_depth"}
    assert UNSUPPORTED_KEYS == {"use_pope": False}
    assert mine["use_pope"].default is False
    assert mine["zero_dc"].default is True
    assert mine["mask_estimator_depth"].default == (2 if kind == "bs" else 1)


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_constructor_rejects_training_and_unknown_keywords(kind):
    kwargs = SMALL_BS if kind == "bs" else SMALL_MEL
    cls = our_class(kind)
    for key in (
        "attn_dropout",
        "flash_attn",
        "dim_freqs_in",
        "use_torch_checkpoint",
        "sage_attention",
        "bogus",
    ):
        with pytest.raises(TypeError):
            cls(**kwargs, **{key: 0})
    with pytest.raises(ValueError, match="use_pope"):
        cls(**kwargs, use_pope=True)


def test_bs_rejects_bands_that_do_not_cover_the_spectrum():
    with pytest.raises(ValueError, match="1025"):
        our_class("bs")(**dict(SMALL_BS, freqs_per_bands=(2, 2, 2)))


def test_forward_rejects_wrong_channel_count():
    ours = our_class("bs")(**SMALL_BS)
    with pytest.raises(ValueError, match="channels|2"):
        ours(torch.zeros(1, 1, 4 * HOP))


def test_weights_given_new_storage_are_still_used():
    # The mask estimators' hidden layers run batched over bands from stacked weights: a copy
    # of the model, or parameters replaced by load_state_dict(assign=True), must still count.
    kwargs = dict(SMALL_MEL, depth=1)
    oracle, ours = build_pair("mel", **kwargs)
    x = mix(2, 8 * HOP, batch=1)
    expected = oracle_output(oracle, x)
    assert_close_to_peak(expected, copy.deepcopy(ours)(x))
    fresh = our_class("mel")(**kwargs, zero_dc=False)
    fresh.load_state_dict(
        {k: v.clone() for k, v in oracle.state_dict().items()}, strict=True, assign=True
    )
    assert_close_to_peak(expected, fresh(x))
    with torch.no_grad():  # and an in-place change of one band's hidden weight shows
        ours.mask_estimators[0].to_freqs[3][0][0].weight.mul_(2)
    assert (ours(x) - expected).abs().max() > 1e-4


def test_rotary_table_is_built_once_per_length():
    ours = our_class("bs")(**dict(SMALL_BS, depth=3))
    rotary = ours.layers[0][0].layers[0][0].rotary_embed
    assert rotary is ours.layers[2][0].layers[0][0].rotary_embed
    calls = []
    original = torch.Tensor.cos
    torch.Tensor.cos = lambda self: calls.append(self.shape) or original(self)
    try:
        ours(mix(2, 8 * HOP, batch=1))
        ours(mix(2, 8 * HOP, batch=1))
    finally:
        torch.Tensor.cos = original
    assert len(calls) == 2  # one time table, one frequency table, for both calls


# --- full size -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_full_size_matches_oracle(kind):
    kwargs = VIPERX_BS if kind == "bs" else KIM_MEL
    oracle, ours = build_pair(kind, **kwargs)
    # Stereo at 44.1 kHz: 0.4 s (41 frames) for viperx, 0.6 s for Kim's lighter Mel (a few
    # seconds per forward on one thread).
    hops = 40 if kind == "bs" else 60
    x = mix(2, hops * HOP, batch=1)
    out = ours(x)
    assert out.shape == (1, 1, 2, hops * HOP)
    assert_close_to_peak(oracle_output(oracle, x), out)
