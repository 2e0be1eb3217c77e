"""Shared helpers of the network parity tests (ours against a reference implementation).

- ``build_pair``: the reference network seeded and given random weights
  (``seeded_reference``), and ours with its state dict (``load_ours``, ``strict=True``),
  both in eval mode. Each test file passes its own constructors and perturbation.
- ``perturb`` and ``perturb_norms``: the perturbations the tests share, so that branches
  whose initialisation is (nearly) constant (LayerScale, norm affines, batch-norm running
  statistics) make a difference a bug could not hide under.
- ``load_half_state``: the reference's state rounded to fp16 (as checkpoints store it),
  loaded into both networks.
- ``run_pair``: both networks on copies of the same inputs, without autograd.
- ``state_shapes``: a network's state dict as {key: shape}, in order.
- ``assert_close`` / ``assert_close_to_peak``: the outputs agree in shape (and dtype, if
  asked) and within a tolerance; the message gives the max abs difference and where it is.
- ``with_stem_axis``: audio-separator's networks drop the stem axis for one stem; put it back.
- ``one_thread``: an autouse fixture for files of small networks (import it into the file).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch

Factory = Callable[[], torch.nn.Module]


def seeded_reference(
    make: Factory, *, seed: int = 0, randomize: Callable[[torch.nn.Module], None] | None = None
) -> torch.nn.Module:
    """``make()`` right after ``torch.manual_seed(seed)``, then ``randomize(model)`` (without
    autograd), in eval mode. Both draw from the global generator, in that order (what a
    test draws next depends on it)."""
    torch.manual_seed(seed)
    model = make()
    if randomize is not None:
        with torch.no_grad():
            randomize(model)
    return model.eval()


def load_ours(make: Factory, reference: torch.nn.Module) -> torch.nn.Module:
    """``make()`` in eval mode, with the reference's state dict (``strict=True``)."""
    ours = make().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours


def build_pair(
    make_reference: Factory,
    make_ours: Factory,
    *,
    seed: int = 0,
    randomize: Callable[[torch.nn.Module], None] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, ours) on the same random weights: see ``seeded_reference`` and
    ``load_ours``. Ours is built after the reference is randomized."""
    reference = seeded_reference(make_reference, seed=seed, randomize=randomize)
    return reference, load_ours(make_ours, reference)


def perturb(
    model: torch.nn.Module, *, scales: tuple[float, float] | None = None, noise: float = 0.0
) -> None:
    """Parameters named ``*.scale`` (LayerScale, 1e-4 or so at init) drawn from
    U(``scales``), so that the residual branches matter; with ``noise``, every other
    parameter (all of them when ``scales`` is None) gets ``noise`` x N(0, 1) added.
    Call without autograd (``build_pair`` does)."""
    for name, parameter in model.named_parameters():
        if scales is not None and name.endswith(".scale"):
            parameter.uniform_(*scales)
        elif noise:
            parameter.add_(noise * torch.randn_like(parameter))


def perturb_norms(model: torch.nn.Module, *, running_stats: bool = True) -> None:
    """Norm affines (1-d ``*weight`` from U(0.5, 1.5), 1-d ``*bias`` from U(-0.3, 0.3)) and,
    with ``running_stats``, batch-norm ``running_var`` / ``running_mean`` likewise, in the
    order of named_parameters then named_buffers. Call without autograd."""
    tensors = list(model.named_parameters())
    if running_stats:
        tensors += list(model.named_buffers())
    for name, tensor in tensors:
        if name.endswith("running_mean") or (tensor.dim() == 1 and name.endswith("bias")):
            tensor.uniform_(-0.3, 0.3)
        elif name.endswith("running_var") or (tensor.dim() == 1 and name.endswith("weight")):
            tensor.uniform_(0.5, 1.5)


def load_half_state(reference: torch.nn.Module, ours: torch.nn.Module) -> None:
    """The reference's state rounded to fp16, as published checkpoints store it, loaded
    into both (``strict=True``)."""
    half = {key: value.half() for key, value in reference.state_dict().items()}
    reference.load_state_dict(half, strict=True)
    ours.load_state_dict(half, strict=True)


def run_pair(reference: torch.nn.Module, ours: torch.nn.Module, *inputs: torch.Tensor):
    """(reference's output, ours) without autograd, each network on its own copy of
    ``inputs`` (one that wrote to its input could not change what the other sees)."""
    with torch.no_grad():
        expected = reference(*(x.clone() for x in inputs))
        got = ours(*(x.clone() for x in inputs))
    return expected, got


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the state dict, in its order."""
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _where(error: torch.Tensor) -> tuple[int, ...]:
    """The index of the largest entry of ``error`` (a NaN counts as the largest)."""
    flat = int(error.reshape(-1).argmax())
    index = []
    for size in reversed(error.shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def _mismatch(expected, got, error, diff: float, bound: float, scale: str) -> str:
    where = _where(error)
    return (f"max |got - expected| {diff:.4g} > {bound:.4g} ({scale}) at index {where}: "
            f"got {got[where].item():.6g}, expected {expected[where].item():.6g}")


def assert_close(
    expected: torch.Tensor,
    got: torch.Tensor,
    *,
    rel: float = 1e-5,
    floor: float = 1.0,
    atol: float = 0.0,
    dtype: torch.dtype | None = None,
) -> float:
    """Assert ``got`` has ``expected``'s shape (and ``dtype``, when given) and
    max |got - expected| <= ``atol + rel * max(floor, peak)``, peak = max |expected|.
    The default: 1e-5 of the peak, or 1e-5 absolute below a peak of 1. With ``floor`` and
    ``atol`` 0 the bound is a share of the peak alone, which must then be above 0.
    Returns the max abs difference."""
    assert got.shape == expected.shape, (f"shape {tuple(got.shape)}, "
                                         f"expected {tuple(expected.shape)}")
    if dtype is not None:
        assert got.dtype == dtype, f"dtype {got.dtype}, expected {dtype}"
    bound, scale = atol, f"{atol:g} absolute"
    if rel:
        peak = expected.abs().max().item()
        if not floor and not atol:
            assert peak > 0, f"the expected peak is {peak}: nothing to be relative to"
        bound = atol + rel * max(floor, peak)
        scale = (f"{rel:g} x max({floor:g}, peak {peak:.3g})" if floor else
                 f"{rel:g} x peak {peak:.3g}") + (f" + {atol:g}" if atol else "")
    error = (got - expected).abs()
    diff = error.max().item()
    assert diff <= bound, _mismatch(expected, got, error, diff, bound, scale)
    return diff


# A share of the peak alone (no floor): for outputs far below 1, where 1e-5 absolute would
# let anything through.
assert_close_to_peak = partial(assert_close, floor=0.0)


def with_stem_axis(output: torch.Tensor) -> torch.Tensor:
    """(batch, stems, channels, time): audio-separator's networks return (batch, channels,
    time) when there is one stem."""
    return output[:, None] if output.ndim == 3 else output


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest on one thread, and a shared 2-core machine makes
    multi-threaded runs of tiny ops very slow (threads waiting on each other)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
