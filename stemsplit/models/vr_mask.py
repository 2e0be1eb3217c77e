"""UVR's VR mask: the network over windows of the normalised magnitude spectrogram, test-time
augmentation, aggression and post-processing (steps 3 and 4 of ``vr_spectrum``)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .vr_spectrum import Settings

NON_ACCOMPANIMENT = ("Vocals", "Other", "Bass", "Drums", "Guitar", "Piano", "Synthesizer",
                     "Strings", "Woodwinds", "Brass", "Wind Inst")
"""Primary stems (UVR's spelling, case-sensitive) whose aggression is turned to 1 - a."""


def window_grid(frames: int, window: int, offset: int) -> tuple[int, int, int]:
    """(frames of zeros in front, behind, the step between windows)."""
    step = window - 2 * offset
    if step <= 0:
        step = window
    return offset, step - frames % step + offset, step


MaskNetwork = Callable[[torch.Tensor], torch.Tensor]
"""A batch of windows (N, 2, bins + 1, window) -> masks of their middles
(N, 2, bins + 1, window - 2 offset)."""


def _masks(magnitude: np.ndarray, scale: float, front: int, back: int, step: int,
           window: int, network: MaskNetwork, batch_size: int, device: torch.device,
           windows: range | None = None) -> np.ndarray:
    """The masks of the grid's windows (all, or ``windows``: their indices) joined: window
    i keeps padded frames [i step + offset, (i + 1) step + offset)."""
    padded = np.pad(magnitude, ((0, 0), (0, 0), (front, back))) / np.float32(scale)
    padded = padded.astype(np.float32)
    count = (padded.shape[2] - (window - step)) // step
    indices = range(count) if windows is None else range(max(0, windows.start),
                                                         min(count, windows.stop))
    pieces = [np.zeros(magnitude.shape[:2] + (0,), dtype=np.float32)]
    for first in range(indices.start, indices.stop, batch_size):
        batch = np.stack([padded[:, :, i * step : i * step + window]
                          for i in range(first, min(indices.stop, first + batch_size))])
        with torch.inference_mode():
            mask = network(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        pieces.append(np.concatenate(list(mask), axis=2))
    return np.concatenate(pieces, axis=2)


def mask_of(magnitude: np.ndarray, network: MaskNetwork, offset: int, settings: Settings,
            scale: float | None = None, device: torch.device | str = "cpu",
            frames: tuple[int, int] | None = None) -> np.ndarray:
    """The network's mask (2, bins + 1, frames) of ``magnitude`` divided by ``scale`` (the
    track's maximum magnitude; by default this magnitude's own). With ``frames=(lo, hi)``
    (lo on the window grid) only the windows that keep frames in [lo, hi) run: the mask is
    right there, zero elsewhere."""
    device = torch.device(device)
    total = magnitude.shape[2]
    scale = float(magnitude.max()) if scale is None else scale
    front, back, step = window_grid(total, settings.window, offset)
    lo, hi = frames if frames is not None else (0, total)
    if lo % step:
        raise ValueError("a mask's frame range starts off the window grid")
    mask = np.zeros(magnitude.shape, dtype=np.float32)
    wanted = range(lo // step, -(-hi // step))
    part = _masks(magnitude, scale, front, back, step, settings.window, network,
                  settings.batch_size, device, wanted)
    part = part[:, :, : max(0, total - lo)]
    mask[:, :, lo : lo + part.shape[2]] = part
    if settings.tta:
        half = step // 2
        shifted = _masks(magnitude, scale, front + half, back + half, step, settings.window,
                         network, settings.batch_size, device,
                         range(lo // step, -(-(hi + half) // step)))
        # window i of the moved grid keeps frames [i step - half, (i + 1) step - half)
        begin = lo - half
        kept = shifted[:, :, max(0, -begin):]
        begin = max(begin, 0)
        kept = kept[:, :, : max(0, total - begin)]
        second = np.zeros_like(mask)
        second[:, :, begin : begin + kept.shape[2]] = kept
        mask = (mask + second) * 0.5
    if frames is not None:
        mask[:, :, :lo] = 0
        mask[:, :, hi:] = 0
    return mask


def aggression_exponents(settings: Settings, primary_stem: str,
                         correction: Sequence[float] | None) -> tuple[float, float] | None:
    """The per-channel ``a`` of step 4, None for no change."""
    aggression = float(int(settings.aggression) / 100) * 2
    if aggression == 0:
        return None
    if primary_stem in NON_ACCOMPANIMENT:
        aggression = 1 - aggression
    left = right = aggression
    if correction is not None:
        left, right = left + correction[0], right + correction[1]
    return left, right


def apply_aggression(mask: np.ndarray, split_bin: int,
                     exponents: tuple[float, float] | None) -> np.ndarray:
    if exponents is None:
        return mask
    for channel, a in enumerate(exponents):
        mask[channel, :split_bin] = np.power(mask[channel, :split_bin], 1 + a / 3)
        mask[channel, split_bin:] = np.power(mask[channel, split_bin:], 1 + a)
    return mask


def merge_artifacts(mask: np.ndarray, threshold: float, min_range: int = 64,
                    fade: int = 32) -> np.ndarray:
    """UVR's post-processing: over each run of more than ``min_range`` frames where the
    mask is above ``threshold`` in every bin and channel, pull it to 1 (with linear fades
    of ``fade`` frames)."""
    above = np.where(mask.min(axis=(0, 1)) > threshold)[0]
    if above.size == 0:
        return mask  # UVR's code fails here and keeps the mask as it is
    breaks = np.where(np.diff(above) != 1)[0]
    starts = np.insert(above[breaks + 1], 0, above[0])
    ends = np.append(above[breaks], above[-1])
    long_runs = np.where(ends - starts > min_range)[0]
    weight = np.zeros_like(mask)
    previous_end = None
    for start, end in zip(starts[long_runs], ends[long_runs]):
        if previous_end is not None and start - previous_end < fade:
            start = previous_end - fade * 2
        if start != 0:
            weight[:, :, start : start + fade] = np.linspace(0, 1, fade)
        else:
            start -= fade
        if end != mask.shape[2]:
            weight[:, :, end - fade : end] = np.linspace(1, 0, fade)
        else:
            end += fade
        weight[:, :, start + fade : end - fade] = 1
        previous_end = end
    return mask + weight * (1 - mask)


