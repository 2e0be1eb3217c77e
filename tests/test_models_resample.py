"""stemsplit.models.resample.resample_frac against julius.resample_frac."""

from __future__ import annotations

import pytest
import torch

from stemsplit.models.resample import resample_frac

julius = pytest.importorskip("julius")


@pytest.mark.parametrize("old_sr,new_sr", [(1, 2), (2, 1), (2, 4), (4, 5), (5, 4), (3, 3)])
@pytest.mark.parametrize("length", [1, 2, 7, 100, 1001, 44100])
def test_matches_julius(old_sr, new_sr, length):
    torch.manual_seed(length)
    x = torch.randn(2, 3, length)
    expected = julius.resample_frac(x, old_sr, new_sr)
    got = resample_frac(x, old_sr, new_sr)
    assert got.shape == expected.shape
    if got.numel():
        assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("full", [False, True])
def test_output_length_options(full):
    x = torch.randn(1001)
    assert torch.allclose(resample_frac(x, 2, 1, full=full),
                          julius.resample_frac(x, 2, 1, full=full), atol=1e-6)
    assert resample_frac(x, 2, 1, output_length=300).shape == (300,)
    with pytest.raises(ValueError):
        resample_frac(x, 2, 1, output_length=502)
    with pytest.raises(ValueError):
        resample_frac(x, 2, 1, output_length=10, full=True)
    with pytest.raises(ValueError):
        resample_frac(x, 2.0, 1)


def test_float64_and_roundtrip():
    t = torch.arange(8000, dtype=torch.float64) / 8000
    x = torch.sin(2 * torch.pi * 200 * t)
    up = resample_frac(x, 1, 2)
    assert up.dtype == torch.float64 and up.shape == (16000,)
    back = resample_frac(up, 2, 1)
    # a low tone survives the round trip away from the edges
    assert (back[200:-200] - x[200:-200]).abs().max().item() < 1e-3
