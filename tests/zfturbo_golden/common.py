"""What every golden fixture's script shares: the upstream commit, the input, ZFTurbo's
inference around its demix, and the files written.

A fixture is a folder ``tests/data/zfturbo_golden/<name>/`` holding:

- the config (``config.yaml``) and a random-weight checkpoint, both in the published format
  (the checkpoint under the file name its type is published with);
- ``mixture.wav``: the input, 16-bit PCM (so ffmpeg's decoding gives exactly the floats the
  oracle saw: ``int16 / 32768``);
- ``expected.npz``: ``stems`` (stems, channels, time) float32 as ZFTurbo's inference gives
  them (``inference.normalize`` included), ``names`` (the stem names in that order) and
  ``meta`` (a JSON string: upstream commit, torch version, model type, what was run).

This module imports ZFTurbo's code only inside ``zfturbo_inference``; ``sys.path`` gets the
checkout's root first, as ZFTurbo's own scripts expect.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

UPSTREAM = "https://github.com/ZFTurbo/Music-Source-Separation-Training"
UPSTREAM_COMMIT = "ccc011abf7f89dd7922bb2888d48493b575c0289"
DATA = Path(__file__).resolve().parent.parent / "data" / "zfturbo_golden"


def use_checkout(repo: Path) -> None:
    """Put ZFTurbo's checkout first on sys.path (its modules import ``models.*``/``utils.*``)."""
    repo = Path(repo).resolve()
    if not (repo / "utils" / "model_utils.py").is_file():
        raise SystemExit(f"{repo}: not a checkout of {UPSTREAM}")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if commit and commit != UPSTREAM_COMMIT:
        raise SystemExit(f"{repo} is at {commit}, the fixtures are made at {UPSTREAM_COMMIT}")
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))


def mixture(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A test input (channels, time), float32 values that are exact 16-bit PCM samples: a few
    sines with a slow tremolo, clicks and noise, different in each channel, peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    out = np.zeros((channels, n))
    for channel in range(channels):
        for _ in range(4):
            freq = rng.uniform(60.0, min(4000.0, rate / 4))
            out[channel] += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * freq * t
                                                           + rng.uniform(0, 2 * np.pi))
        out[channel] *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
        out[channel] += 0.05 * rng.standard_normal(n)
        clicks = rng.integers(0, n, size=max(1, int(seconds * 4)))
        out[channel, clicks] += rng.uniform(-0.3, 0.3, size=clicks.size)
    out *= 0.5 / max(np.abs(out).max(), 1e-9)
    pcm = np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)
    return (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """``audio`` (channels, time), exact 16-bit values, as a 16-bit PCM WAV."""
    pcm = np.round(audio.T * 32768.0).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(audio.shape[0])
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm.tobytes())


def zfturbo_inference(model_type: str, config_path: Path, checkpoint: Path,
                      mix: np.ndarray) -> dict[str, np.ndarray]:
    """ZFTurbo's inference.py for one track, on the CPU, in float32: its model and config
    (``utils.settings.get_model_from_config``), its checkpoint loading
    (``utils.model_utils.load_start_checkpoint``), ``inference.normalize`` around its
    ``demix`` as ``inference.run_folder`` does; no TTA, no bigshifts (their defaults)."""
    import argparse

    import torch
    from utils.audio_utils import denormalize_audio, normalize_audio
    from utils.model_utils import demix, load_start_checkpoint
    from utils.settings import get_model_from_config

    torch.manual_seed(0)
    model, config = get_model_from_config(model_type, str(config_path))
    if "model_type" in config.training:
        model_type = config.training.model_type
    args = argparse.Namespace(start_check_point=str(checkpoint), model_type=model_type,
                              lora_checkpoint_loralib=None)
    old = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    load_start_checkpoint(args, model, old, type_="inference")
    model.eval()
    config.training.use_amp = False  # CUDA autocast only; on the CPU demix runs float32
    normalized = "normalize" in config.inference and config.inference["normalize"] is True
    norm_params = None
    if normalized:
        mix, norm_params = normalize_audio(mix)
    stems = demix(config, model, mix, "cpu", model_type=model_type, pbar=False)
    if not isinstance(stems, dict):  # demucs mode, one instrument: a bare (1, C, T) array
        stems = {config.training.instruments[0]: np.asarray(stems).reshape(
            np.asarray(stems).shape[-2:])}
    if normalized:
        stems = {name: denormalize_audio(value, norm_params) for name, value in stems.items()}
    return {name: np.asarray(value, dtype=np.float32) for name, value in stems.items()}


def save_expected(folder: Path, stems: dict[str, np.ndarray], **meta) -> None:
    """``expected.npz`` in ``folder``: the stems in ZFTurbo's order, their names, and meta."""
    import torch

    names = list(stems)
    meta = dict(meta, upstream=UPSTREAM, upstream_commit=UPSTREAM_COMMIT,
                torch=torch.__version__, made_by=f"tests/zfturbo_golden ({Path(sys.argv[0]).name})")
    np.savez_compressed(folder / "expected.npz", stems=np.stack([stems[n] for n in names]),
                        names=np.array(names), meta=np.array(json.dumps(meta, sort_keys=True)))
