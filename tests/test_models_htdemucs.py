"""Parity of stemsplit.models.htdemucs.HTDemucs with demucs 4.1.0 (the test oracle)."""

from __future__ import annotations

import ast
from fractions import Fraction
from functools import partial
from pathlib import Path

import pytest
import torch

from stemsplit.errors import ModelError
from stemsplit.models.htdemucs import HTDemucs
from tests import parity
from tests.parity import assert_close, load_half_state, perturb, run_pair, state_shapes
from tests.parity import one_thread  # noqa: F401  (autouse: one compute thread)

reference = pytest.importorskip("demucs.htdemucs")

SOURCES_4 = ["drums", "bass", "other", "vocals"]
SOURCES_6 = SOURCES_4 + ["guitar", "piano"]

# 8000 samples per segment. With nfft=512 (hop 128) the spectrogram branch goes
# 256 -> 64 -> 16 -> 4 bins over depth 3; the time branch ends with 125 steps and the
# spectrogram branch with 4 x 63 tokens.
SMALL = dict(
    channels=8, depth=3, nfft=512, samplerate=8000, segment=Fraction(1, 1),
    dconv_mode=3, t_layers=2, t_heads=2, bottom_channels=0,
)
# nfft=256 (hop 64 = 4**3): the last layer folds the 8 remaining bins, so the time
# branch is injected into the spectrogram branch and the transformer sees 1 bin.
MERGED = dict(SMALL, nfft=256, segment=Fraction(1, 2))

CONFIGS = {
    "small": (SMALL, SOURCES_4),
    "bottom_cross_first_6s": (
        dict(SMALL, bottom_channels=16, t_cross_first=True, t_layers=3), SOURCES_6
    ),
    "merged_norms": (
        dict(MERGED, norm_starts=1, norm_groups=2, context_enc=1, t_norm_first=False,
             t_layer_scale=False, t_emb="scaled", t_max_positions=200),
        SOURCES_4,
    ),
    "multi_freqs_cape": (
        dict(MERGED, multi_freqs=[0.4], multi_freqs_depth=2, norm_starts=2, t_emb="cape",
             t_gelu=False, t_group_norm=1, t_norm_in=False, t_norm_in_group=1),
        SOURCES_4,
    ),
    "no_rewrite_no_freq_emb_depth4": (
        dict(SMALL, depth=4, nfft=1024, rewrite=False, freq_emb=0, dconv_mode=1,
             t_layers=1, t_norm_out=False),
        SOURCES_4,
    ),
    "mono_no_transformer": (dict(SMALL, audio_channels=1, t_layers=0), SOURCES_4),
    "cac_false_phase": (dict(SMALL, cac=False, segment=Fraction(1, 2)), SOURCES_4),
    "cac_false_mask": (
        dict(SMALL, cac=False, wiener_iters=-1, end_iters=-1, segment=Fraction(1, 2)), SOURCES_4
    ),
    "cac_false_wiener": (
        dict(SMALL, cac=False, wiener_iters=1, end_iters=1, wiener_residual=True,
             segment=Fraction(1, 2)),
        SOURCES_4,
    ),
}

FULL = dict(
    channels=48, growth=2, nfft=4096, cac=True, wiener_iters=0, depth=4, rewrite=True,
    multi_freqs=[], freq_emb=0.2, emb_scale=10, emb_smooth=True, kernel_size=8, stride=4,
    time_stride=2, context=1, context_enc=0, norm_starts=4, norm_groups=4, dconv_mode=3,
    dconv_depth=2, dconv_comp=8, dconv_init=1e-3, bottom_channels=512, t_layers=5,
    t_hidden_scale=4.0, t_heads=8, t_dropout=0.02, t_layer_scale=True, t_gelu=True,
    t_emb="sin", t_max_period=1e4, t_weight_pos_embed=1.0, t_sin_random_shift=0,
    t_norm_in=True, t_norm_in_group=False, t_group_norm=False, t_norm_first=True,
    t_norm_out=True, t_cross_first=False, samplerate=44100, segment=Fraction(39, 5),
)


def build_pair(kwargs: dict, sources: list, seed: int = 0, noise: float = 0.05):
    """demucs' model with random weights (LayerScales from U(0.1, 0.5), so that the residual
    branches matter; ``noise`` x N(0, 1) on every other parameter), and ours with its state."""
    return parity.build_pair(lambda: reference.HTDemucs(list(sources), **kwargs),
                             lambda: HTDemucs(list(sources), **kwargs), seed=seed,
                             randomize=partial(perturb, scales=(0.1, 0.5), noise=noise))


def training_length(kwargs: dict) -> int:
    return int(kwargs["segment"] * kwargs["samplerate"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_demucs(name):
    kwargs, sources = CONFIGS[name]
    ref, ours = build_pair(kwargs, sources)
    channels = kwargs.get("audio_channels", 2)
    full = training_length(kwargs)
    for batch, length in ((1, full), (2, full // 3 + 5)):  # the short one gets padded
        mix = torch.randn(batch, channels, length)
        expected, got = run_pair(ref, ours, mix)
        assert got.shape == (batch, len(sources), channels, length)
        assert_close(expected, got)


def test_fp16_state_as_stored_on_disk():
    kwargs, sources = CONFIGS["bottom_cross_first_6s"]
    ref, ours = build_pair(kwargs, sources, seed=1)
    load_half_state(ref, ours)
    mix = torch.randn(1, 2, training_length(kwargs))
    assert_close(*run_pair(ref, ours, mix))


def test_batch_items_are_independent_and_segment_is_writable():
    ref, ours = build_pair(SMALL, SOURCES_4, seed=2)
    mix = torch.randn(2, 2, 3000)
    with torch.no_grad():
        both = ours(mix)
        assert_close(both[:1], ours(mix[:1]))
        assert_close(both[1:], ours(mix[1:]))
        # A bag may lower the segment: the padding length follows.
        ref.segment = ours.segment = Fraction(1, 2)
        assert ours.valid_length(3000) == 4000
        assert_close(ref(mix.clone()), ours(mix))


def test_valid_length_and_attributes():
    ours = HTDemucs(SOURCES_4, **SMALL)
    assert ours.sources == SOURCES_4
    assert ours.samplerate == 8000 and ours.audio_channels == 2
    assert ours.segment == Fraction(1, 1) and ours.use_train_segment
    assert ours.valid_length(10) == 8000
    assert ours.valid_length(8000) == 8000
    with pytest.raises(ValueError):
        ours.valid_length(8001)
    with pytest.raises(ValueError):
        ours(torch.zeros(1, 2, 8001))
    free = HTDemucs(SOURCES_4, **dict(SMALL, use_train_segment=False))
    assert free.valid_length(12345) == 12345


def test_state_dict_matches_published_layout():
    for kwargs, sources in (({**FULL}, SOURCES_4), ({**FULL}, SOURCES_6)):
        ref = reference.HTDemucs(sources, **kwargs)
        ours = HTDemucs(sources, **kwargs)
        assert state_shapes(ours) == state_shapes(ref)


def test_sparse_attention_is_refused():
    with pytest.raises(ModelError, match="sparse attention is not supported"):
        HTDemucs(SOURCES_4, **dict(SMALL, t_sparse_self_attn=True))


def test_model_code_imports_only_torch_numpy_stdlib():
    forbidden = {"demucs", "einops", "julius", "torchaudio"}
    package = Path(__file__).resolve().parent.parent / "stemsplit" / "models"
    for filename in ("htdemucs.py", "transformer.py"):
        tree = ast.parse((package / filename).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, (filename, name)


def test_full_size_one_segment_matches_demucs():
    """The published htdemucs architecture on one 7.8 s segment (about 10-20 s)."""
    ref, ours = build_pair(FULL, SOURCES_4, noise=0.0)
    mix = torch.randn(1, 2, training_length(FULL))
    assert_close(*run_pair(ref, ours, mix))
