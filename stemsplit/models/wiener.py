"""Turning estimated magnitudes into complex spectrograms, for ``cac=False`` models.

Hybrid models trained without complex-as-channels predict one magnitude
spectrogram per source.  demucs then either

* multiplies it by the phase of the mixture (``wiener_iters == 0``: the initial
  estimate of the multichannel Wiener filter of Open-Unmix), or
* refines that estimate with ``wiener_iters`` expectation-maximisation steps
  (``wiener_iters > 0``), or
* uses it as a soft mask (``wiener_iters < 0``).

Complex tensors are handled as torch complex dtypes here; demucs keeps
real/imaginary pairs in a trailing axis, which gives the same numbers.
"""

from __future__ import annotations

import torch

__all__ = ["mix_phase", "phase_estimate", "expectation_maximization", "wiener_filter"]


def mix_phase(mix: torch.Tensor) -> torch.Tensor:
    """Unit-modulus phase factor ``exp(i angle(mix))`` of a complex tensor (any shape).

    Bins that are exactly zero get the phase 0 (factor 1), as in demucs.
    """
    real, imag = mix.real, mix.imag
    silent = (real == 0) & (imag == 0)
    angle = torch.atan2(imag, torch.where(silent, torch.ones_like(real), real))
    return torch.polar(torch.ones_like(angle), angle)


def phase_estimate(magnitudes: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Sources with the estimated magnitudes and the phase of the mixture.

    Args:
        magnitudes: real ``(B, S, C, Fr, T)``.
        mix: complex ``(B, C, Fr, T)``.

    Returns:
        complex ``(B, S, C, Fr, T)``.
    """
    return magnitudes * mix_phase(mix)[:, None]


def _covariance_update(sources: torch.Tensor) -> torch.Tensor:
    """Sum over frames of the spatial covariances ``y y^H``.

    Args:
        sources: complex ``(T, Fr, C, S)``.

    Returns:
        complex ``(Fr, C, C, S)``.
    """
    return torch.einsum("tfis,tfjs->fijs", sources, sources.conj())


def _invert(matrix: torch.Tensor) -> torch.Tensor:
    """Invert a batch of 1x1 or 2x2 complex matrices ``(..., C, C)`` with the closed form."""
    channels = matrix.shape[-1]
    if channels == 1:
        return 1 / matrix
    if channels != 2:
        raise ValueError("Wiener filtering supports mono or stereo only")
    a, b = matrix[..., 0, 0], matrix[..., 0, 1]
    c, d = matrix[..., 1, 0], matrix[..., 1, 1]
    inv_det = 1 / (a * d - b * c)
    row0 = torch.stack([d * inv_det, -b * inv_det], dim=-1)
    row1 = torch.stack([-c * inv_det, a * inv_det], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def expectation_maximization(sources: torch.Tensor, mix: torch.Tensor, iterations: int = 2,
                             eps: float = 1e-10, batch_size: int = 200) -> torch.Tensor:
    """Refine source estimates with the multichannel Wiener EM of Open-Unmix.

    Each iteration estimates per-source power spectral densities ``v`` and
    spatial covariance matrices ``R`` from the current estimates, then filters
    the mixture again with ``v R (sum_j v_j R_j + eps I)^-1``.

    Args:
        sources: complex ``(T, Fr, C, S)`` initial estimates.
        mix: complex ``(T, Fr, C)`` mixture STFT.
        iterations: number of EM steps.
        eps: regularisation of the mixture covariance and of the PSD sums.
        batch_size: frames filtered at once (memory bound only).

    Returns:
        complex ``(T, Fr, C, S)`` refined estimates.
    """
    frames, _, channels = mix.shape
    regularization = (eps ** 0.5) * torch.eye(channels, dtype=mix.dtype, device=mix.device)
    for _ in range(iterations):
        power = (sources.real ** 2 + sources.imag ** 2).mean(dim=2)  # (T, Fr, S)
        weight = eps + power.sum(dim=0)  # (Fr, S)
        spatial = _covariance_update(sources) / weight[:, None, None, :]
        refined = torch.empty_like(sources)
        for start in range(0, frames, batch_size):
            span = slice(start, min(frames, start + batch_size))
            v = power[span].to(mix.dtype)  # (t, Fr, S)
            # (t, Fr, C, C): sum_j v_j R_j + reg
            mix_cov = torch.einsum("tfs,fijs->tfij", v, spatial) + regularization
            inv_cov = _invert(mix_cov)
            # gain[t, f, i, k, s] = v_s R_s[i, j] inv[j, k]
            gain = torch.einsum("fijs,tfjk->tfiks", spatial, inv_cov) * v[:, :, None, None, :]
            refined[span] = torch.einsum("tfiks,tfk->tfis", gain, mix[span])
        sources = refined
    return sources


def wiener_filter(magnitudes: torch.Tensor, mix: torch.Tensor, iterations: int,
                  residual: bool = False, scale_factor: float = 10.0,
                  eps: float = 1e-10, softmask: bool = False) -> torch.Tensor:
    """Multichannel Wiener filtering of one excerpt (Open-Unmix ``wiener``).

    Args:
        magnitudes: real ``(T, Fr, C, S)`` estimated source magnitudes (``C`` may be 1 for
            a mono estimate of a multichannel mixture: it applies to every channel).
        mix: complex ``(T, Fr, C)`` mixture STFT.
        iterations: EM iterations (0: magnitudes with the mixture phase).
        residual: add ``mix - sum(sources)`` as an extra source (kept in the output).
        scale_factor: the mixture is scaled so its peak is at most ``scale_factor``
            before the EM, for numerical stability.
        eps: regularisation.
        softmask: the first estimate is the mixture times each source's share of the
            summed magnitudes (``magnitudes / (eps + sum)``), not the magnitudes with the
            mixture's phase.

    Returns:
        complex ``(T, Fr, C, S)`` (``S + 1`` sources with ``residual``).
    """
    if softmask:
        total = magnitudes.sum(dim=-1, keepdim=True)
        sources = mix[..., None] * (magnitudes / (eps + total))
    else:
        # Open-Unmix's (and demucs') atan2 overwrites the real part of exactly-zero mixture
        # bins with 1 (in place, so the residual and the EM see it too).
        silent = (mix.real == 0) & (mix.imag == 0)
        mix = torch.where(silent, torch.ones_like(mix), mix)
        sources = magnitudes * mix_phase(mix)[..., None]
    if residual:
        sources = torch.cat([sources, (mix - sources.sum(dim=-1))[..., None]], dim=-1)
    if iterations == 0:
        return sources
    peak = mix.abs().max() / scale_factor
    scale = torch.clamp(peak, min=1.0).to(mix.real.dtype)
    sources = expectation_maximization(sources / scale, mix / scale, iterations, eps=eps)
    return sources * scale
