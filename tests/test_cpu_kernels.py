"""models/cpu_kernels: the oneDNN linear gives F.linear's numbers, and steps aside where it
cannot (other dtypes, autograd, switched off)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from stemsplit.models import cpu_kernels


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", ["2d", "3d", "transposed", "weight-slice"])
def test_linear_equals_f_linear(gelu, bias, layout):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator) * 0.1
    b = torch.randn(96, generator=generator) if bias else None
    x = torch.randn(2, 300, 64, generator=generator)
    if layout == "2d":
        x = x[0]
    elif layout == "transposed":
        x = torch.randn(2, 64, 300, generator=generator).transpose(1, 2)
    elif layout == "weight-slice":  # htdemucs' packed in_proj, sliced
        weight = torch.randn(3 * 96, 64, generator=generator)[96:192]
    expected = F.linear(x, weight, b)
    if gelu:
        expected = F.gelu(expected)
    with torch.inference_mode():
        actual = cpu_kernels.linear(x, weight, b, gelu=gelu)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_onednn_is_used_where_it_exists():
    """On x86 wheels the fast path is there; elsewhere the probe turns it off."""
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        assert cpu_kernels._onednn_linear() is not None


def test_float64_and_autograd_fall_back_to_f_linear():
    weight = torch.randn(8, 16, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)
    assert torch.equal(cpu_kernels.linear(x, weight), F.linear(x, weight))
    trained = torch.randn(8, 16, requires_grad=True)
    out = cpu_kernels.linear(torch.randn(5, 16), trained, gelu=True)
    out.sum().backward()  # the F.linear path, which has a gradient
    assert trained.grad is not None


def test_switched_off_by_the_environment():
    code = ("from stemsplit.models import cpu_kernels as k; "
            "print(k.fast_kernels_enabled(), k._onednn_linear())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "STEMSPLIT_CPU_KERNELS": "0"},
                            check=True)
    assert result.stdout.split() == ["False", "None"]
