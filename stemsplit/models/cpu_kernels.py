"""Faster CPU kernels for the shapes our networks run, with the same results to float rounding.

PyTorch's CPU ``F.linear`` goes through its BLAS (MKL on x86 wheels); on the machines we
measure (AMD Zen 3, 2 threads) that reaches 90-150 GFLOP/s at the transformer shapes of
htdemucs and the RoFormers, while oneDNN's matmul, which PyTorch also ships (it is what
``torch.compile`` uses on CPU), reaches 175-205 GFLOP/s and can apply the GELU that follows
in the same pass. :func:`linear` uses oneDNN where it can and falls back to ``F.linear``
(same maths, other summation order: differences ~1e-7 relative) everywhere else: other
devices and dtypes (float16), autograd, a PyTorch built without oneDNN, or ``STEMSPLIT_CPU_KERNELS=0``
in the environment (which turns every kernel here off, for comparisons).

The oneDNN call is ``torch.ops.mkldnn._linear_pointwise``, an internal operator of
PyTorch; it is probed once on a small input against ``F.linear`` before it is used.
In bfloat16 (``--precision bf16``) the same operator runs oneDNN's bf16 matmul where the CPU
has one (AVX512-BF16, AMX): on an AMD EPYC with AVX512-BF16 (2 threads, quiet machine) the
RoFormer's linears ran at 353 GFLOP/s against 172 in fp32 (benchmarks/profile_roformer's
breakdown, viperx dimensions).
Users: htdemucs' cross-transformer (``models/transformer.py``) and the RoFormers' attention
and feed-forward (``models/roformer.py``). Measured, one full-size htdemucs segment on 2
threads: the linears 1.28 s -> 0.75 s; a viperx-size BS-RoFormer 2 s chunk 17.0 s -> 12.6 s.
"""

from __future__ import annotations

import functools
import typing as tp

import torch
from torch.nn import functional as F

from .. import settings

__all__ = ["fast_kernels_enabled", "linear"]


@functools.lru_cache(maxsize=None)
def fast_kernels_enabled() -> bool:
    """Whether the kernels here may replace PyTorch's defaults (``STEMSPLIT_CPU_KERNELS``)."""
    return settings.cpu_kernels()


_PROBE_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2}


@functools.lru_cache(maxsize=None)
def _onednn_linear(dtype: torch.dtype = torch.float32) -> tp.Optional[tp.Callable]:
    """oneDNN's fused linear if it exists here and agrees with ``F.linear`` in ``dtype``
    (float32, or bfloat16 where oneDNN has a bf16 kernel for this CPU); else None."""
    if not fast_kernels_enabled() or not torch.backends.mkldnn.is_available():
        return None
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None:
        return None
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=generator).to(dtype)
    weight = torch.randn(8, 16, generator=generator).to(dtype)
    bias = torch.randn(8, generator=generator).to(dtype)
    try:
        with torch.no_grad():
            plain = op(x, weight, bias, "none", [], "")
            fused = op(x, weight, bias, "gelu", [], "none")
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    expected = F.linear(x.float(), weight.float(), bias.float())
    tolerance = _PROBE_TOLERANCE[dtype]
    if plain.shape != expected.shape or plain.dtype != dtype or not torch.allclose(
            plain.float(), expected, atol=tolerance, rtol=tolerance):
        return None
    if not torch.allclose(fused.float(), F.gelu(expected), atol=tolerance, rtol=tolerance):
        return None
    return op


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in _PROBE_TOLERANCE and weight.dtype == x.dtype
            and x.dim() >= 2 and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: tp.Optional[torch.Tensor] = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by the exact (erf) GELU if ``gelu``.

    Args:
        x: ``(..., in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.

    Returns:
        ``(..., out_features)``.
    """
    if _use_onednn(x, weight):
        op = _onednn_linear(x.dtype)
        if op is not None:
            return op(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out

