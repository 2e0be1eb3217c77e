"""A VR file as a separator: its facts (UVR's model data or the user's options), the network
its size and facts call for, and the engine's forward (mixture in, two stems out)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ...errors import ModelError, UsageError
from ...models.vr_mask import aggression_exponents, apply_aggression, mask_of, merge_artifacts
from ...models.vr_spectrum import Band, BandConfig, Settings, prepare
from ...models.vr_resample import require as require_resamplers
from ...models.vr_spectrum import MIX_RATE
from ...models.vr_synthesis import FINAL_RESAMPLER, OUTPUT_RESAMPLER, stems_from_mask
from ...specs import ModelSpec
from ...stems import stem_name
from ..torch_archive import load_torch_archive
from ..mdx.onnx_runner import uvr_hash
from .params import LSTM_SIZES_KIB, ModelFacts, band_config, facts_for_hash, size_class

WINDOW_SIZES = (320, 512, 1024)


def settings_from(options: Mapping[str, Any]) -> Settings:
    """The user's processing options over audio-separator's defaults."""
    window = options.get("window_size") or 512
    if window not in WINDOW_SIZES:
        raise UsageError(f"--window-size {window}: choose 320, 512 or 1024")
    aggression = options.get("aggression")
    aggression = 5 if aggression is None else int(aggression)
    if not -100 <= aggression <= 100:
        raise UsageError(f"--aggression {aggression}: choose a value in -100..100")
    threshold = options.get("post_process_threshold")
    return Settings(window=int(window), aggression=aggression, tta=bool(options.get("tta")),
                    post_process=bool(options.get("post_process")),
                    post_process_threshold=0.2 if threshold is None else float(threshold),
                    high_end=bool(options.get("high_end_process")))


def resolve_facts(path: Path, spec: ModelSpec | None, options: Mapping[str, Any],
                  known: Sequence[ModelSpec] = ()) -> tuple[ModelFacts, ModelSpec | None]:
    """What to run ``path`` with: options over weights.toml's entry over UVR's model data
    (found by the file's UVR hash; for ``--weights`` the hash may also find a named model
    among ``known``)."""
    config = spec.config.as_dict() if spec is not None else {}
    digest = config.get("uvr_hash")
    if digest is None:
        digest = uvr_hash(path)
        if spec is None:
            spec = next((s for s in known if (s.config.uvr_hash or "") == digest), None)
            if spec is not None:
                config = spec.config.as_dict()
    found = facts_for_hash(digest)
    values = {"params": None, "primary_stem": None, "nout": None, "nout_lstm": None}
    if found is not None:
        values.update({k: getattr(found, k) for k in values})
    for key, option in (("params", "vr_params"), ("primary_stem", "primary_stem"),
                        ("nout", "nout"), ("nout_lstm", "nout_lstm")):
        if config.get(option) is not None:
            values[key] = config[option]
        if options.get(option) is not None:
            values[key] = options[option]
    missing = [flag for flag, key in (("--vr-params", "params"),
                                      ("--primary-stem", "primary_stem")) if values[key] is None]
    if missing:
        raise UsageError(
            f"{path.name}: a VR file stemsplit does not know (UVR hash {digest}); give "
            f"{' and '.join(missing)}",
            hint="e.g. --vr-params 4band_v3 --primary-stem Instrumental, plus --nout 48 "
                 "--nout-lstm 128 for a v5.1 network (UVR's model data for the file: "
                 "vr_model_param, primary_stem, nout, nout_lstm)")
    if (values["nout"] is None) != (values["nout_lstm"] is None):
        raise UsageError("--nout and --nout-lstm go together (a v5.1 network's widths)")
    primary = _uvr_spelling(str(values["primary_stem"]))
    return ModelFacts(params=str(values["params"]), primary_stem=primary,
                      nout=values["nout"], nout_lstm=values["nout_lstm"]), spec


def _uvr_spelling(name: str) -> str:
    """A primary stem as UVR spells it (its aggression rule is case-sensitive): ours
    (vocals, no_echo, accompaniment) turned to Title Case words."""
    if name.lower() in ("accompaniment", "instrumental"):
        return "Instrumental"
    if name != name.lower():
        return name
    words = name.replace("_", " ").split()
    return " ".join(word.capitalize() for word in words)


def band_config_of(name: str) -> BandConfig:
    raw = band_config(name)
    try:
        bands = tuple(Band(sample_rate=int(b["sample_rate"]), hop=int(b["hop"]),
                           n_fft=int(b["n_fft"]), crop=tuple(b["crop"]),
                           resampler=str(b["resampler"]),
                           lowpass=tuple(b["lowpass"]) if "lowpass" in b else None,
                           highpass=tuple(b["highpass"]) if "highpass" in b else None,
                           convert_channels=b.get("convert_channels"))
                      for b in raw["bands"])
        correction = raw.get("aggression_correction")
        return BandConfig(name=Path(name).stem, bins=int(raw["bins"]),
                          sample_rate=int(raw["sample_rate"]),
                          pre_filter=tuple(raw["pre_filter"]), channels=str(raw["channels"]),
                          bands=bands,
                          aggression_correction=(correction["left"], correction["right"])
                          if correction else None)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"band config {name}: malformed ({type(error).__name__}: {error})") from None


def build_network(path: Path, facts: ModelFacts, bins: int) -> tuple[torch.nn.Module, bool]:
    """The network for ``path`` with its weights, and whether it is a v5.1 one: v5.1 when
    the facts give ``nout`` or the file has a v5.1 size, else the older cascade sized by
    the file (UVR's rule)."""
    from ...models.vr_cascaded import LSTMCascade
    from ...models.vr_nets import ASPPCascade

    size = size_class(path)
    v51 = facts.nout is not None or size in LSTM_SIZES_KIB
    if v51:
        network = LSTMCascade(bins, facts.nout or 32, facts.nout_lstm or 128, size_kib=size)
    else:
        network = ASPPCascade(bins, size)
    state = load_torch_archive(path, hint="a VR .pth holds a bare state dict")
    if not isinstance(state, dict):
        raise ModelError(f"{path.name}: not a state dict (a {type(state).__name__})")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise ModelError(
            f"{path.name}: its weights do not fit the VR network its size ({size} KiB class) "
            f"and parameters call for ({first[0] if first else error})",
            hint="check --vr-params, --nout and --nout-lstm") from None
    return network.eval(), v51


class VRSeparator:
    """Mixture (1, 2, time) at 44.1 kHz -> (1, 2 stems, 2, time): primary and secondary,
    UVR's whole-track computation (``separate``); the engine runs it chunk by chunk
    (``streaming``). UVR's stems end a few hundred samples before the input (whole hops of
    the top band): the rest is filled with zeros to the input's length."""

    def __init__(self, network: torch.nn.Module, v51: bool, config: BandConfig,
                 facts: ModelFacts, settings: Settings) -> None:
        self.network = network
        self.v51 = v51
        self.config = config
        self.facts = facts
        self.settings = settings
        self.device = torch.device("cpu")
        primary = stem_name(facts.primary_stem)
        secondary = stem_name(facts.secondary_stem)
        if primary == secondary:
            raise ModelError(f"VR: primary stem {facts.primary_stem!r} and its complement "
                             "have one name")
        self.sources = (primary, secondary)

    @classmethod
    def from_file(cls, path: Path, facts: ModelFacts, settings: Settings,
                  device: torch.device) -> "VRSeparator":
        config = band_config_of(facts.params)
        require_resamplers([band.resampler for band in config.bands]
                           + [OUTPUT_RESAMPLER] * (len(config.bands) > 1)
                           + [FINAL_RESAMPLER] * (config.sample_rate != MIX_RATE))
        network, v51 = build_network(path, facts, config.bins)
        return cls(network, v51, config, facts, settings).to(device)

    def to(self, device: torch.device | str) -> "VRSeparator":
        self.device = torch.device(device)
        self.network.to(self.device)
        return self

    def mask_network(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.predict_mask(windows)

    def separate(self, mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(2, time) float32 -> (primary, secondary) as (2, time') float64."""
        settings, config = self.settings, self.config
        prepared = prepare(mix, config, self.v51, settings.high_end)
        magnitude = np.abs(prepared.spectrogram)
        mask = mask_of(magnitude, self.mask_network, self.network.offset, settings,
                       device=self.device)
        exponents = aggression_exponents(settings, self.facts.primary_stem,
                                         config.aggression_correction)
        mask = apply_aggression(mask, config.bands[0].crop[1], exponents)
        if settings.post_process:
            mask = merge_artifacts(mask, settings.post_process_threshold)
        return stems_from_mask(prepared, mask, config, self.v51, settings.high_end)

    def with_settings(self, settings: Settings) -> "VRSeparator":
        """This separator (its network shared) with other processing settings."""
        other = copy.copy(self)
        other.settings = settings
        return other

    def __call__(self, mixture: torch.Tensor) -> torch.Tensor:
        length = mixture.shape[-1]
        stems = torch.zeros(mixture.shape[0], 2, 2, length)
        for item, out in zip(mixture, stems.numpy()):
            wave = item.detach().float().cpu().numpy()
            if wave.shape[0] == 1:
                wave = np.concatenate([wave, wave])
            primary, secondary = self.separate(np.ascontiguousarray(wave))
            usable = min(length, primary.shape[-1])
            out[0, :, :usable] = primary[:, :usable]
            out[1, :, :usable] = secondary[:, :usable]
        return stems.to(mixture.device)
