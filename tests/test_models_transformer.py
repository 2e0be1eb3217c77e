"""Parity of stemsplit.models.transformer with demucs 4.1.0's CrossTransformerEncoder."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from stemsplit.errors import ModelError
from stemsplit.models.transformer import (
    CrossTransformerEncoder,
    sin_embedding_1d,
    sin_embedding_2d,
)
from tests import parity
from tests.parity import assert_close, load_half_state, perturb, run_pair, state_shapes
from tests.parity import one_thread  # noqa: F401  (autouse: one compute thread)

reference = pytest.importorskip("demucs.transformer")

DIM = 32

CONFIGS = {
    # The published setting: pre-norm, output group norm, layer scale, GELU, sine.
    "published": dict(norm_first=True, norm_out=True, layer_scale=True),
    "cross_first": dict(norm_first=True, norm_out=True, layer_scale=True, cross_first=True),
    "post_norm_relu_scaled": dict(emb="scaled", gelu=False, norm_in=False, max_positions=50),
    "cape_group_norms": dict(
        emb="cape", norm_first=True, group_norm=1, norm_in=False, norm_in_group=1,
        layer_scale=True, cross_first=True,
    ),
    "post_norm_group2": dict(group_norm=2, norm_in=False, norm_in_group=2, weight_pos_embed=0.5),
    # An even norm_out means "no output norm" in demucs (bitwise `norm_first & norm_out`).
    "even_norm_out_cape_no_mean": dict(
        emb="cape", cape_mean_normalize=False, norm_first=True, norm_out=2, hidden_scale=2.0
    ),
}


def build_pair(kwargs: dict, num_layers: int = 3, seed: int = 0):
    """demucs' encoder with 0.3 x N(0, 1) added to every parameter, and ours with its state."""
    arguments = dict(num_heads=4, num_layers=num_layers, **kwargs)
    return parity.build_pair(partial(reference.CrossTransformerEncoder, DIM, **arguments),
                             partial(CrossTransformerEncoder, DIM, **arguments), seed=seed,
                             randomize=partial(perturb, noise=0.3))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_demucs(name):
    ref, ours = build_pair(CONFIGS[name])
    x = torch.randn(2, DIM, 5, 7)  # (batch, channels, freqs, frames)
    xt = torch.randn(2, DIM, 11)  # (batch, channels, steps)
    (expected, expected_t), (got, got_t) = run_pair(ref, ours, x, xt)
    assert_close(expected, got)
    assert_close(expected_t, got_t)


def test_fp16_state_and_batch_independence():
    ref, ours = build_pair(CONFIGS["published"], num_layers=2)
    load_half_state(ref, ours)
    x = torch.randn(2, DIM, 4, 6)
    xt = torch.randn(2, DIM, 9)
    with torch.no_grad():
        expected, expected_t = ref(x, xt)
        got, got_t = ours(x, xt)
        single, single_t = ours(x[1:], xt[1:])
    assert_close(expected, got)
    assert_close(expected_t, got_t)
    assert_close(got[1:], single)
    assert_close(got_t[1:], single_t)


def test_embeddings_match_demucs():
    expected_2d = reference.create_2d_sin_embedding(DIM, 5, 7)  # (1, C, Fr, T)
    got_2d = sin_embedding_2d(DIM, 5, 7)  # (T, Fr, C)
    assert torch.equal(got_2d.permute(2, 1, 0)[None], expected_2d)
    expected_1d = reference.create_sin_embedding(13, DIM, max_period=1000.0)  # (T, 1, C)
    assert torch.equal(sin_embedding_1d(13, DIM, max_period=1000.0), expected_1d[:, 0])


def test_state_dict_keys_match_demucs():
    for kwargs in CONFIGS.values():
        ref = reference.CrossTransformerEncoder(DIM, num_heads=4, num_layers=2, **kwargs)
        ours = CrossTransformerEncoder(DIM, num_heads=4, num_layers=2, **kwargs)
        assert state_shapes(ours) == state_shapes(ref)


@pytest.mark.parametrize("flag", ["sparse_self_attn", "sparse_cross_attn"])
def test_sparse_attention_is_refused(flag):
    with pytest.raises(ModelError, match="sparse attention is not supported"):
        CrossTransformerEncoder(DIM, num_heads=4, num_layers=2, **{flag: True})
