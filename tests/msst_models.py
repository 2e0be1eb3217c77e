"""RoFormer / MDX23C test models in the published formats, and ZFTurbo's demix restated.

- ``write_config``: a ZFTurbo-style YAML config, tuples written as ``!!python/tuple`` as the
  published ones are.
- ``reference_network``: the oracle's class (audio-separator 0.47.1's vendored copies of
  ZFTurbo's) built from a config's sections, with random weights.
- ``write_checkpoint``: ``torch.save`` of a state_dict, plain or wrapped, as published.
- ``zfturbo_demix``: ZFTurbo's ``utils.model_utils.demix`` (generic mode) restated over a
  whole track, one chunk per network call; ``zfturbo_separate`` adds the target's
  complement and ``inference.normalize`` as ZFTurbo's inference does them.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tests.oracles import require
from tests.parity import perturb_norms, seeded_reference, with_stem_axis

BS_ORACLE = "audio_separator.separator.uvr_lib_v5.roformer.bs_roformer"
MEL_ORACLE = "audio_separator.separator.uvr_lib_v5.roformer.mel_band_roformer"
MDX23C_ORACLE = "audio_separator.separator.uvr_lib_v5.tfc_tdf_v3"

VIPERX_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

SMALL_BS = dict(dim=32, depth=1, stereo=True, num_stems=1, time_transformer_depth=1,
                freq_transformer_depth=1, freqs_per_bands=VIPERX_BANDS, dim_head=16, heads=2,
                attn_dropout=0.1, ff_dropout=0.1, flash_attn=True, dim_freqs_in=1025,
                stft_n_fft=2048, stft_hop_length=441, stft_win_length=2048,
                stft_normalized=False, mask_estimator_depth=2, zero_dc=False,
                multi_stft_resolution_loss_weight=1.0,
                multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256),
                multi_stft_hop_size=147, multi_stft_normalized=False)
SMALL_MEL = dict(dim=32, depth=1, stereo=True, num_stems=1, time_transformer_depth=1,
                 freq_transformer_depth=1, num_bands=60, dim_head=16, heads=2,
                 sample_rate=44100, stft_n_fft=2048, stft_hop_length=441,
                 stft_win_length=2048, mask_estimator_depth=2, zero_dc=False,
                 multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256))
SMALL_MDX23C_MODEL = dict(act="gelu", bottleneck_factor=4, growth=8, norm="InstanceNorm",
                          num_blocks_per_scale=1, num_channels=8, num_scales=2, num_subbands=4,
                          scale=[2, 2])
SMALL_MDX23C_AUDIO = dict(chunk_size=130560, dim_f=1024, dim_t=256, hop_length=512,
                          n_fft=2048, num_channels=2, sample_rate=44100, min_mean_abs=0.001)


def _yaml(value, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            lines += _yaml(item, indent + 2)
        elif isinstance(item, (list, tuple)):
            tag = " !!python/tuple" if isinstance(item, tuple) else ""
            lines.append(f"{pad}{key}:{tag}")
            lines += [f"{pad}  - {_scalar(v)}" for v in item]
        else:
            lines.append(f"{pad}{key}: {_scalar(item)}")
    return lines


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_sections(model_type: str, *, instruments=("vocals", "other"), target="vocals",
                    chunk_size: int = 352800, num_overlap: int = 2, normalize=None,
                    model: dict | None = None, audio: dict | None = None) -> dict:
    """The sections of a config, like the published ones (training-only keys included)."""
    if model is None:
        model = {"bs_roformer": SMALL_BS, "mel_band_roformer": SMALL_MEL,
                 "mdx23c": SMALL_MDX23C_MODEL}[model_type]
    if audio is None:
        audio = (dict(SMALL_MDX23C_AUDIO, chunk_size=chunk_size) if model_type == "mdx23c" else
                 dict(chunk_size=chunk_size, dim_f=1024, dim_t=801, hop_length=441, n_fft=2048,
                      num_channels=2, sample_rate=44100, min_mean_abs=0.0))
    inference = dict(batch_size=1, dim_t=801, num_overlap=num_overlap)
    if normalize is not None:
        inference["normalize"] = normalize
    training = dict(batch_size=2, gradient_accumulation_steps=1, grad_clip=0,
                    instruments=list(instruments), lr=1.0e-05, patience=2,
                    target_instrument=target, num_epochs=1000, optimizer="adam",
                    other_fix=True, use_amp=True)
    return {"audio": audio, "model": dict(model), "training": training,
            "inference": inference}


def write_config(path: Path, sections: dict) -> Path:
    path.write_text("\n".join(_yaml(sections)) + "\n", encoding="utf-8")
    return path


def reference_network(model_type: str, sections: dict, seed: int = 0) -> torch.nn.Module:
    """The oracle's network for a config, with random weights (seeded with ``seed``), in
    eval mode. MDX23C's norm parameters are made non-trivial."""
    if model_type == "mdx23c":
        tfc = require(MDX23C_ORACLE)
        training = sections["training"]
        config = SimpleNamespace(
            audio=SimpleNamespace(**sections["audio"]), model=SimpleNamespace(**sections["model"]),
            training=SimpleNamespace(instruments=training["instruments"],
                                     target_instrument=training["target_instrument"]))
        return seeded_reference(partial(tfc.TFC_TDF_net, config, device=torch.device("cpu")),
                                seed=seed, randomize=partial(perturb_norms, running_stats=False))
    module = require(BS_ORACLE if model_type == "bs_roformer" else MEL_ORACLE)
    cls = module.BSRoformer if model_type == "bs_roformer" else module.MelBandRoformer
    return seeded_reference(partial(cls, **sections["model"]), seed=seed)


def write_checkpoint(path: Path, network: torch.nn.Module, wrap: str | None = None) -> Path:
    """``torch.save`` of the network's state_dict (under ``wrap`` if given), as published."""
    state = network.state_dict()
    torch.save({wrap: state, "epoch": 317} if wrap else state, path)
    return path


def run_reference(network: torch.nn.Module, part: torch.Tensor) -> torch.Tensor:
    """(channels, n) -> (stems, channels, n) through an oracle network."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        return with_stem_axis(network(part[None]))[0]  # one stem: the oracles drop that axis


def zfturbo_demix(network: torch.nn.Module, mix: torch.Tensor, chunk_size: int,
                  num_overlap: int) -> torch.Tensor:
    """ZFTurbo's demix, generic mode, batch_size 1: (channels, n) -> (stems, channels, n)."""
    fade_size = chunk_size // 10
    step = chunk_size // num_overlap
    border = chunk_size - step
    length_init = mix.shape[-1]
    fadein, fadeout = torch.linspace(0, 1, fade_size), torch.linspace(1, 0, fade_size)
    windowing_array = torch.ones(chunk_size)
    windowing_array[-fade_size:] = fadeout
    windowing_array[:fade_size] = fadein
    if length_init > 2 * border and border > 0:
        mix = torch.nn.functional.pad(mix, (border, border), mode="reflect")
    result = counter = None
    i = 0
    while i < mix.shape[1]:
        part = mix[:, i:i + chunk_size]
        chunk_len = part.shape[-1]
        pad_mode = "reflect" if chunk_len > chunk_size // 2 else "constant"
        part = torch.nn.functional.pad(part, (0, chunk_size - chunk_len), mode=pad_mode, value=0)
        i += step
        x = run_reference(network, part)
        if result is None:
            result = torch.zeros((x.shape[0],) + mix.shape)
            counter = torch.zeros((x.shape[0],) + mix.shape)
        window = windowing_array.clone()
        if i - step == 0:
            window[:fade_size] = 1
        elif i >= mix.shape[1]:
            window[-fade_size:] = 1
        start = i - step
        result[..., start:start + chunk_len] += x[..., :chunk_len] * window[..., :chunk_len]
        counter[..., start:start + chunk_len] += window[..., :chunk_len]
    estimated = (result / counter).numpy()
    np.nan_to_num(estimated, copy=False, nan=0.0)
    if length_init > 2 * border and border > 0:
        estimated = estimated[..., border:-border]
    return torch.from_numpy(estimated)


def zfturbo_separate(network: torch.nn.Module, mix: torch.Tensor, sections: dict,
                     chunk_size: int | None = None, num_overlap: int | None = None
                     ) -> torch.Tensor:
    """ZFTurbo's inference on a whole track: normalised if the config says so, demixed,
    scaled back; with a target instrument, the mixture minus it as a second stem (what
    stemsplit writes as the complement)."""
    inference = sections["inference"]
    chunk = chunk_size or inference.get("chunk_size", sections["audio"]["chunk_size"])
    overlap = num_overlap or inference["num_overlap"]
    original = mix
    if inference.get("normalize"):
        mono = mix.double().mean(0)
        mean, std = float(mono.mean()), float(mono.std(unbiased=False))
        mix = ((mix.double() - mean) / std).float()
    stems = zfturbo_demix(network, mix, chunk, overlap)
    if inference.get("normalize"):
        stems = (stems.double() * std + mean).float()
    if sections["training"].get("target_instrument"):
        stems = torch.cat([stems, (original - stems[0])[None]])
    return stems
