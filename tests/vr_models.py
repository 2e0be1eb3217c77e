"""VR test helpers: random-weight ``.pth`` files in UVR's published format, and the oracle
(audio-separator 0.47.1's ``VRSeparator``) driven directly on them.

A published VR file is a bare state dict saved with ``torch.save``. Its size picks the
network variant, so a random-weight file of the full architecture has the published size:
the old-style 7-branch SP network (33966 KiB) and a v5.1 ``CascadedNet`` whose widths the
model data gives (any size).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 44100


def random_state(module: torch.nn.Module, seed: int) -> dict:
    """``module``'s state with random weights and batch-norm statistics."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not value.dtype.is_floating_point:
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
        else:
            scale = 1.0 / max(1, value[0].numel()) ** 0.5 if value.dim() > 1 else 0.2
            state[key] = torch.randn(value.shape, generator=generator) * scale
    return state


def write_aspp_pth(path: Path, size_kib: int = 33966, bins: int = 672, seed: int = 0) -> Path:
    """An older (v5.0) VR file of UVR's size class ``size_kib``, random weights."""
    from stemsplit.models.vr_nets import ASPPCascade

    torch.save(random_state(ASPPCascade(bins, size_kib), seed), path)
    return path


def write_cascaded_pth(path: Path, bins: int, nout: int, nout_lstm: int, seed: int = 0) -> Path:
    """A v5.1 VR file with widths ``nout``/``nout_lstm``, random weights."""
    from stemsplit.models.vr_cascaded import LSTMCascade

    torch.save(random_state(LSTMCascade(bins, nout, nout_lstm), seed), path)
    return path


def oracle_stems(pth: Path, wav: Path, model_data: dict, **arch) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) as (2, time) float arrays from audio-separator 0.47.1's
    VRSeparator run on ``wav`` with explicit ``model_data``.

    Its peak normalisation happens when it writes a file (``final_process`` ->
    ``write_audio`` -> ``spec_utils.normalize``): ``final_process`` is replaced by one
    that keeps the stem as computed, so nothing is normalised or written."""
    from tests.oracles import require

    vr_module = require("audio_separator.separator.architectures.vr_separator")
    captured: dict[str, np.ndarray] = {}

    class Capturing(vr_module.VRSeparator):
        def final_process(self, stem_path, source, stem_name):
            captured[stem_name] = np.asarray(source).T.copy()
            return {stem_name: source}

    logger = logging.getLogger("vr-oracle")
    logger.setLevel(logging.WARNING)
    common = dict(logger=logger, log_level=logging.WARNING, torch_device=torch.device("cpu"),
                  torch_device_cpu=torch.device("cpu"), torch_device_mps=None,
                  onnx_execution_provider=None, model_name=pth.stem, model_path=str(pth),
                  model_data=model_data, output_dir=str(wav.parent), output_format="wav",
                  output_bitrate=None, normalization_threshold=0.9,
                  amplification_threshold=0.0, enable_denoise=False, output_single_stem=None,
                  invert_using_spec=False, sample_rate=SAMPLE_RATE, use_soundfile=True)
    separator = Capturing(common, {"batch_size": 1, "window_size": 512, "aggression": 5,
                                   "enable_tta": False, "enable_post_process": False,
                                   "post_process_threshold": 0.2, "high_end_process": False,
                                   **arch})
    separator.separate(str(wav))
    return captured[separator.primary_stem_name], captured[separator.secondary_stem_name]


def song_mix(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A stereo mix (2, time) float32: tones, a chirp and noise, peak about 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    left = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3300 * t * (1 + t))
    right = 0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2
    return (np.stack([left, right]) * envelope).astype(np.float32)
