"""The msst model types: one row per network a ZFTurbo-style config can describe.

Everything that differs between BS-RoFormer, Mel-Band RoFormer and MDX23C is a field of
that type's ``ModelType`` row in ``MODEL_TYPES``; the config reader (``config.py``) and the
adapter (``adapter.py``) look a type up there and never test its name.

To add a type, write its row and nothing else:

- ``name``: the ``model_type`` ZFTurbo's configs and ``weights.toml`` use (``--model-type``
  takes it too).
- ``build``: ``config -> network`` with random weights. Import the network class inside
  the builder (this module is imported without torch); check the config's ``model`` keys
  against the constructor (and any other section the network reads), raising ModelError
  naming the first unknown key; then ``_construct(cls, kwargs, config)``.
- ``valid_chunk``: ``(config, chunk) -> the longest length <= chunk the network takes``
  (ValueError when none does, the adapter words it as a usage or model error about the
  chunk; ``ChunkTooShort``, from ``require_stft_room``, when the network's STFT needs more).
- ``channels``: ``config -> the number of audio channels the network reads and gives``.
- ``recognises``: ``model section -> True`` when its keys show this type (None: the type
  cannot be told from its keys; it needs ``training.model_type`` or ``--model-type``), with
  ``guess_rank``: the rows are tried lowest rank first, so a type whose keys are a superset
  of another's (a Mel-Band RoFormer has BS-RoFormer's ``dim`` and ``depth``) ranks first.

Optional fields, for types whose configs or demix differ from the RoFormers':

- ``model_section``: the config section holding the network's keywords ("model"; BandIt
  v2's configs call it "kwargs"). A config whose ``model`` is a string (ZFTurbo's
  ``demucs4ht`` configs: ``model: htdemucs``) keeps the keywords in the section it names,
  whatever the row says; ``MSSTConfig.architecture`` is that string.
- ``timing``: ``sections -> (chunk samples, sample rate)`` from the config's sections
  (``audio``, ``training``, ``inference``, ...); the default reads ``inference.chunk_size``
  or ``audio.chunk_size`` and ``audio.sample_rate``. Raise ValueError to say what is missing.
- ``chunking``: ``(config, chunk, step) -> engine.Chunking``: how ZFTurbo's demix cuts and
  joins chunks for this type (``demix.generic_chunking`` by default; ``demix.demucs_chunking``
  for demix's "demucs" mode).
- ``complement``: whether a ``training.target_instrument`` config's other stem (the mixture
  minus the target) is a stem of the model (True; Apollo's ``restored`` has none).
- ``joins_ensembles``: False for a type whose output is not a separation (Apollo's
  restoration), which an ensemble refuses.

The order of ``MODEL_TYPES`` is the order messages and ``--model-type``'s help list them.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...errors import ModelError
from .demix import demucs_chunking

if TYPE_CHECKING:  # pragma: no cover
    from .config import MSSTConfig

MDX23C_MODEL_KEYS = frozenset({"act", "bottleneck_factor", "growth", "norm",
                               "num_blocks_per_scale", "num_channels", "num_scales",
                               "num_subbands", "scale"})


@dataclass(frozen=True)
class ModelType:
    """One network a config can describe: how to build it and what it takes."""

    name: str
    build: Callable[["MSSTConfig"], Any]
    """The network for a config, with random weights (ModelError if the config does not fit)."""
    valid_chunk: Callable[["MSSTConfig", int], int]
    """The longest chunk length at most the given one that the network takes (ValueError if
    none)."""
    channels: Callable[["MSSTConfig"], int]
    """The audio channels the network reads and gives."""
    recognises: Callable[[Mapping[str, Any]], bool] | None
    """Whether a ``model`` section's keys show this type (None: never guessed)."""
    guess_rank: int = 0
    """``guess_model_type`` tries the rows lowest rank first."""
    model_section: str = "model"
    """The config section holding the network's keywords."""
    timing: Callable[[Mapping[str, Mapping[str, Any]]], tuple[int, int]] | None = None
    """``sections -> (chunk samples, sample rate)``; None: ``default_timing``."""
    chunking: Callable[["MSSTConfig", int, int], Any] | None = None
    """``(config, chunk, step) -> engine.Chunking``; None: ``demix.generic_chunking``."""
    complement: bool = True
    """Whether a target's complement (the mixture minus it) is a stem."""
    joins_ensembles: bool = True
    """False: the output is not a separation, and an ensemble refuses the model."""


def default_timing(sections: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
    """``inference.chunk_size`` (else ``audio.chunk_size``) and ``audio.sample_rate`` (else
    the model's ``sample_rate``, else 44100)."""
    audio, inference = sections.get("audio", {}), sections.get("inference", {})
    chunk = inference.get("chunk_size", audio.get("chunk_size"))
    if chunk is None:
        raise ValueError("the config gives no chunk_size (audio or inference)")
    rate = audio.get("sample_rate", sections.get("model", {}).get("sample_rate", 44100))
    return chunk, rate


def label(config: "MSSTConfig") -> str:
    """How messages about a config's network name it."""
    return f"{config.path.name} ({config.model_type})"


def model_type_of(config: "MSSTConfig") -> ModelType:
    """The row of the config's type (ModelError naming the known ones if there is none)."""
    row = MODEL_TYPES.get(config.model_type)
    if row is None:
        raise ModelError(f"{config.path.name}: '{config.model_type}' is not a network "
                         "stemsplit runs", hint=f"the model types are {', '.join(MODEL_TYPES)}")
    return row


def _unknown_key(config: "MSSTConfig", section: str, key: str, network: str) -> ModelError:
    """The error for a key of the network's section that its constructor does not take."""
    return ModelError(f"{label(config)}: unknown key '{section}.{key}' for {network}",
                      hint="stemsplit may not know this variant of the network yet")


def _construct(cls: Any, kwargs: dict, config: "MSSTConfig") -> Any:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        raise ModelError(f"{label(config)}: cannot build the network ({error})") from None


# -- RoFormers (BS-RoFormer, Mel-Band RoFormer) ----------------------------------------------
def _build_roformer(config: "MSSTConfig", cls: Any) -> Any:
    from ...models import roformer

    name = label(config)
    outputs = len(config.network_stems)
    accepted = inspect.signature(cls).parameters
    kwargs = {}
    for key, value in config.model.items():
        if key in roformer.UNSUPPORTED_KEYS:
            if value != roformer.UNSUPPORTED_KEYS[key]:
                raise ModelError(f"{name}: model.{key}: {value!r} is not supported")
        elif key in roformer.INFERENCE_IGNORED_KEYS:
            continue
        elif key not in accepted:
            raise _unknown_key(config, "model", key, config.model_type)
        else:
            kwargs[key] = value
    stems = kwargs.get("num_stems", 1)
    if stems != outputs:
        raise ModelError(f"{name}: model.num_stems is {stems}, but the config's training "
                         f"section names {outputs} output stem(s) ({list(config.network_stems)})")
    return _construct(cls, kwargs, config)


def _build_bs_roformer(config: "MSSTConfig") -> Any:
    from ...models.bs_roformer import BSRoformer

    return _build_roformer(config, BSRoformer)


def _build_mel_band_roformer(config: "MSSTConfig") -> Any:
    from ...models.mel_band_roformer import MelBandRoformer

    return _build_roformer(config, MelBandRoformer)


def _roformer_channels(config: "MSSTConfig") -> int:
    return 2 if config.model.get("stereo", False) else 1


def _any_chunk(config: "MSSTConfig", chunk: int) -> int:
    return chunk


class ChunkTooShort(ValueError):
    """A ``valid_chunk`` refusal worded in full (the adapter does not prefix the chunk)."""


def require_stft_room(valid: int, chunk: int, n_fft: int) -> int:
    """``valid`` if it is longer than half an STFT window (the reflection padding of a centred
    STFT needs that), else ChunkTooShort naming ``chunk`` (what was asked for)."""
    if valid <= n_fft // 2:
        raise ChunkTooShort(f"a chunk of {chunk} samples is too short for this network (its "
                            f"STFT takes more than {n_fft // 2})")
    return valid


def _roformer_chunk(config: "MSSTConfig", chunk: int) -> int:
    """Any length the STFT can pad."""
    return require_stft_room(chunk, chunk, int(config.model.get("stft_n_fft", 2048)))


def _whole_hops(config: "MSSTConfig", chunk: int) -> int:
    """The Mel-Band RoFormer's iSTFT gives whole hops back."""
    hop = int(config.model.get("stft_hop_length", 512))
    return require_stft_room(chunk - chunk % hop, chunk,
                             int(config.model.get("stft_n_fft", 2048)))


# -- MDX23C (TFC-TDF v3) ----------------------------------------------------------------------
def _build_mdx23c(config: "MSSTConfig") -> Any:
    from ...models.mdx23c import MDX23C

    name = label(config)
    model = dict(config.model)
    unknown = sorted(set(model) - MDX23C_MODEL_KEYS)
    if unknown:
        raise ModelError(f"{name}: unknown key 'model.{unknown[0]}' for MDX23C")
    audio = config.audio
    missing = [key for key in ("n_fft", "hop_length", "dim_f") if key not in audio]
    if missing:
        raise ModelError(f"{name}: the config's audio section lacks {', '.join(missing)}")
    kwargs = dict(model, n_fft=audio["n_fft"], hop_length=audio["hop_length"],
                  dim_f=audio["dim_f"], audio_channels=audio.get("num_channels", 2),
                  num_target_instruments=len(config.network_stems))
    kwargs["scale"] = tuple(kwargs.get("scale", (2, 2)))
    return _construct(MDX23C, kwargs, config)


def _mdx23c_chunk(config: "MSSTConfig", chunk: int) -> int:
    """MDX23C's frames must halve cleanly at every scale."""
    from ...models.mdx23c import chunk_size_for

    scale = config.model.get("scale", (2, 2))
    valid = chunk_size_for(chunk, int(config.audio["hop_length"]),
                           int(config.model["num_scales"]), int(scale[0]))
    return require_stft_room(valid, chunk, int(config.audio.get("n_fft", 2048)))


def _audio_channels(config: "MSSTConfig") -> int:
    """The config's ``audio.num_channels`` (2 when absent): MDX23C's input; Apollo and BandIt
    take each channel as a batch item of its own. A mono input is doubled to it, as
    ZFTurbo's inference does."""
    return int(config.audio.get("num_channels", 2))


# -- Apollo (JusperLee's LQ MP3 restoration) --------------------------------------------------
APOLLO_MODEL_KEYS = ("sr", "win", "feature_dim", "layer")


def _build_apollo(config: MSSTConfig) -> Any:
    """Apollo from ``model: {sr, win, feature_dim, layer}``; it gives one stem (ZFTurbo's
    config: ``target_instrument: restored``)."""
    from ...models.apollo import Apollo

    name = label(config)
    unknown = sorted(str(key) for key in set(config.model) - set(APOLLO_MODEL_KEYS))
    if unknown:
        raise ModelError(f"{name}: unknown key 'model.{unknown[0]}' for Apollo",
                         hint=f"Apollo's model section has {', '.join(APOLLO_MODEL_KEYS)}")
    missing = [key for key in APOLLO_MODEL_KEYS if key not in config.model]
    if missing:
        raise ModelError(f"{name}: the config's model section lacks {', '.join(missing)}")
    stems = config.network_stems
    if len(stems) != 1:
        raise ModelError(f"{name}: Apollo gives one stem, but the config's training section "
                         f"names {len(stems)} ({list(stems)})",
                         hint="set training.target_instrument (ZFTurbo's config: restored)")
    return _construct(Apollo, dict(config.model), config)


def _apollo_chunk(config: MSSTConfig, chunk: int) -> int:
    """Any length above half the STFT window (the reflection padding needs it)."""
    from ...models.apollo import window_samples

    half = window_samples(config.model["sr"], config.model["win"]) // 2
    if chunk <= half:
        raise ValueError(f"Apollo's STFT takes more than {half} samples")
    return chunk


# -- SCNet (plain, masked, Tran) ----------------------------------------------------------------
def _build_scnet_type(config: "MSSTConfig", cls: Any) -> Any:
    """SCNet and its variants from their constructor keywords (ZFTurbo passes the model
    section as they are); ``model.sources`` counts the network's outputs."""
    name = label(config)
    accepted = inspect.signature(cls).parameters
    unknown = [str(key) for key in config.model if key not in accepted]
    if unknown:
        raise _unknown_key(config, "model", unknown[0], config.model_type)
    sources = config.model.get("sources", accepted["sources"].default)
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ModelError(f"{name}: model.sources must list the network's stems, not {sources!r}")
    stems = config.network_stems
    if len(sources) != len(stems):
        raise ModelError(f"{name}: model.sources names {len(sources)} stem(s) ({list(sources)}), "
                         f"but the config's training section names {len(stems)} output stem(s) "
                         f"({list(stems)})")
    return _construct(cls, dict(config.model), config)


def _build_scnet(config: "MSSTConfig") -> Any:
    from ...models.scnet import SCNet

    return _build_scnet_type(config, SCNet)


def _build_scnet_masked(config: "MSSTConfig") -> Any:
    from ...models.scnet import MaskedSCNet

    return _build_scnet_type(config, MaskedSCNet)


def _build_scnet_tran(config: "MSSTConfig") -> Any:
    from ...models.scnet_tran import SCNetTran

    return _build_scnet_type(config, SCNetTran)


def _scnet_chunk(config: "MSSTConfig", chunk: int) -> int:
    """Any length whose padded STFT input (an odd multiple of the hop, see
    ``models.scnet.end_padding``) is longer than half the FFT (the reflection padding)."""
    from ...models.scnet import shortest_chunk

    nfft = int(config.model.get("nfft", 4096))
    shortest = shortest_chunk(nfft, int(config.model.get("hop_size", 1024)))
    if chunk < shortest:
        raise ValueError(f"SCNet's STFT (nfft {nfft}) takes at least {shortest} samples")
    return chunk


def _scnet_channels(config: "MSSTConfig") -> int:
    return int(config.model.get("audio_channels", 2))


def _recognises_scnet_tran(model: Mapping[str, Any]) -> bool:
    return "band_SR" in model and any(str(key).startswith("tran_") for key in model)


# -- HTDemucs, HDemucs, Demucs (ZFTurbo's demucs4ht: ``model: htdemucs``) ---------------------
DEMUCS_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "htdemucs": ("htdemucs", "HTDemucs"),
    "hdemucs": ("hdemucs", "HDemucs"),
    "demucs": ("demucs", "Demucs"),
}
"""A config's string ``model`` -> (our module under ``stemsplit/models``, its class): the
networks ZFTurbo's ``models/demucs4ht.get_model`` builds (its own copy of HTDemucs, demucs
4.1's HDemucs and Demucs)."""
DEMUCS_FROM_TRAINING = {"sources": "instruments", "audio_channels": "channels",
                        "samplerate": "samplerate", "segment": "segment"}
"""The constructor keywords ZFTurbo takes from ``training`` (the network's section may not
repeat them: ZFTurbo would pass them twice)."""
_YAML12_FLOAT = re.compile(r"[-+]?(\d+(_\d+)*\.[\d_]*([eE][-+]?\d+)?|\d+(_\d+)*[eE][-+]?\d+"
                           r"|\.\d+(_\d+)*([eE][-+]\d+)?)")


def _omegaconf_number(value: Any) -> Any:
    """``value`` as OmegaConf reads it (ZFTurbo loads these configs with OmegaConf): its YAML
    also takes ``1e-3`` and ``1.0e3`` for floats, which PyYAML leaves as strings."""
    if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value):
        return float(value.replace("_", ""))
    if isinstance(value, list):
        return [_omegaconf_number(item) for item in value]
    return value


def _demucs_timing(sections: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
    """demix's "demucs" mode: chunks of ``training.samplerate * training.segment`` samples."""
    training = sections.get("training", {})
    rate = _omegaconf_number(training.get("samplerate"))
    segment = _omegaconf_number(training.get("segment"))
    for key, value in (("samplerate", rate), ("segment", segment)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"training.{key} must be a positive number, not {value!r}")
    if not isinstance(rate, int) and not float(rate).is_integer():
        raise ValueError(f"training.samplerate must be a whole number, not {rate!r}")
    chunk = rate * segment
    if not float(chunk).is_integer():
        raise ValueError(f"training.segment * training.samplerate ({segment} * {rate}) is not "
                         "a whole number of samples")
    return int(chunk), int(rate)


def _demucs_class(config: "MSSTConfig") -> Any:
    import importlib

    architecture = config.architecture
    if architecture not in DEMUCS_ARCHITECTURES:
        named = (f"'model: {architecture}'" if architecture is not None
                 else "a 'model' section, not a network's name")
        raise ModelError(f"{label(config)}: the config has {named}; an {config.model_type} "
                         f"config names one of {', '.join(DEMUCS_ARCHITECTURES)}")
    module, name = DEMUCS_ARCHITECTURES[architecture]
    return getattr(importlib.import_module(f"stemsplit.models.{module}"), name)


def _demucs_keywords(config: "MSSTConfig", cls: Any) -> dict:
    """The network's keywords: its section (numbers as OmegaConf reads them) with what
    ZFTurbo adds from ``training``."""
    name, section = label(config), config.architecture
    keywords = {str(key): _omegaconf_number(value) for key, value in config.model.items()}
    subbands = keywords.pop("num_subbands", 1) if section == "htdemucs" else 1
    if subbands != 1:
        raise ModelError(f"{name}: {section}.num_subbands: {subbands!r} is not supported "
                         "(stemsplit runs HTDemucs with 1, as every published config has)")
    accepted = inspect.signature(cls).parameters
    for key in keywords:
        if key in DEMUCS_FROM_TRAINING:
            raise ModelError(f"{name}: '{section}.{key}' is set by "
                             f"training.{DEMUCS_FROM_TRAINING[key]}; remove it")
        if key not in accepted:
            raise _unknown_key(config, section, key, cls.__name__)
    if config.target is not None:
        raise ModelError(f"{name}: training.target_instrument is not supported for "
                         f"{config.model_type} (its demix gives every instrument)",
                         hint="set it to null")
    channels = config.training.get("channels")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ModelError(f"{name}: training.channels must be a positive whole number, not "
                         f"{channels!r}")
    if section == "htdemucs":
        keywords.setdefault("use_train_segment", False)  # ZFTurbo's copy's default
    return dict(keywords, sources=list(config.instruments), audio_channels=channels,
                samplerate=config.sample_rate,
                segment=_omegaconf_number(config.training["segment"]))


def _build_demucs(config: "MSSTConfig") -> Any:
    """HTDemucs, HDemucs or Demucs, as the config's string ``model`` says."""
    cls = _demucs_class(config)
    return _construct(cls, _demucs_keywords(config, cls), config)


def _demucs_chunk(config: "MSSTConfig", chunk: int) -> int:
    """Every chunk is fed whole, and the networks take any length: a chunk is valid from one
    STFT window up (HTDemucs, HDemucs; Demucs v2 has no STFT), shorter or longer than the
    training segment. HTDemucs with ``use_train_segment`` pads a chunk to its training
    segment, so takes none longer; with ``t_emb: scaled`` its transformer has learnt
    positions for at most ``t_max_positions`` steps of the waveform branch."""
    model = {str(key): _omegaconf_number(value) for key, value in config.model.items()}
    if config.architecture in ("htdemucs", "hdemucs"):
        nfft = int(model.get("nfft", 4096))
        if chunk < nfft:
            raise ValueError(f"the network's STFT takes at least {nfft} samples")
    if config.architecture == "htdemucs":
        training_length = config.chunk_size
        if model.get("use_train_segment", False) and chunk > training_length:
            raise ValueError(f"the network pads its input to its training segment of "
                             f"{training_length} samples (use_train_segment) and takes no "
                             "longer one")
        if model.get("t_emb", "sin") == "scaled" and model.get("t_layers", 5):
            steps, nfft = chunk, int(model.get("nfft", 4096))
            freqs, stride = nfft // 2, int(model.get("stride", 4))
            for _ in range(int(model.get("depth", 4))):
                if freqs <= 1:
                    break
                steps = -(-steps // stride)
                freqs = 1 if freqs <= int(model.get("kernel_size", 8)) else freqs // stride
            positions = int(model.get("t_max_positions", 10000))
            if steps > positions:
                raise ValueError(f"the transformer has learnt {positions} positions, and "
                                 f"such a chunk needs {steps}")
    return chunk


def _demucs_channels(config: "MSSTConfig") -> int:
    return int(config.training["channels"])


def _recognises_demucs(model: Mapping[str, Any]) -> bool:
    """The ``dconv_*`` keys (the DConv residual branch) are Demucs' alone."""
    return any(str(key).startswith("dconv_") for key in model)


# -- BandIt Plus (bandit) and BandIt v2 (bandit_v2) -----------------------------------------
BANDIT_REQUIRED = {"bandit": ("in_channel", "stems", "band_specs"),
                   "bandit_v2": ("in_channels", "stems")}
"""The keywords ZFTurbo's BandIt classes have no default for."""


def _build_bandit_type(config: "MSSTConfig", cls: Any) -> Any:
    """BandIt from its keywords as ZFTurbo passes them (``model``, v2: ``kwargs``); the
    stems it names (``stems``, in the order of its outputs) must be the ones the training
    section names, in the same order (ZFTurbo labels the outputs with those)."""
    from ...stems import stem_name

    name = label(config)
    section = model_type_of(config).model_section
    accepted = inspect.signature(cls).parameters
    unknown = [str(key) for key in config.model if key not in accepted]
    if unknown:
        raise _unknown_key(config, section, unknown[0], config.model_type)
    missing = [key for key in BANDIT_REQUIRED[config.model_type] if key not in config.model]
    if missing:
        raise ModelError(f"{name}: the config's {section} section lacks {', '.join(missing)}")
    stems = config.model["stems"]
    if not isinstance(stems, (list, tuple)) or not all(isinstance(s, str) for s in stems):
        raise ModelError(f"{name}: {section}.stems must list the network's stems, not "
                         f"{stems!r}")
    if tuple(stem_name(stem) for stem in stems) != config.network_stems:
        raise ModelError(f"{name}: {section}.stems {list(stems)} are not the stems the "
                         f"training section names ({list(config.network_stems)})",
                         hint=f"the network gives {section}.stems in that order; "
                              "training.instruments must list the same stems in the same "
                              "order")
    return _construct(cls, dict(config.model), config)


def _build_bandit(config: "MSSTConfig") -> Any:
    from ...models.bandit import BandItPlus

    return _build_bandit_type(config, BandItPlus)


def _build_bandit_v2(config: "MSSTConfig") -> Any:
    from ...models.bandit_v2 import BandItV2

    return _build_bandit_type(config, BandItV2)


def _bandit_chunk(config: "MSSTConfig", chunk: int) -> int:
    """Any length from one sample: BandIt Plus's STFT pads with zeros."""
    if chunk < 1:
        raise ValueError("BandIt Plus takes chunks of at least one sample")
    return chunk


def _bandit_v2_chunk(config: "MSSTConfig", chunk: int) -> int:
    """Any length from one sample; above half the FFT unless the STFT pads with zeros
    (the config's ``pad_mode``: the published one reflects)."""
    if chunk < 1:
        raise ValueError("BandIt v2 takes chunks of at least one sample")
    n_fft = config.model.get("n_fft", 2048)
    if config.model.get("pad_mode", "constant") != "constant" and isinstance(n_fft, int):
        return require_stft_room(chunk, chunk, n_fft)
    return chunk


# -- the table --------------------------------------------------------------------------------
MODEL_TYPES: dict[str, ModelType] = {row.name: row for row in (
    ModelType("bs_roformer", build=_build_bs_roformer, valid_chunk=_roformer_chunk,
              channels=_roformer_channels,
              recognises=lambda model: "dim" in model and "depth" in model, guess_rank=2),
    ModelType("mel_band_roformer", build=_build_mel_band_roformer, valid_chunk=_whole_hops,
              channels=_roformer_channels,
              recognises=lambda model: "num_bands" in model, guess_rank=1),
    ModelType("mdx23c", build=_build_mdx23c, valid_chunk=_mdx23c_chunk,
              channels=_audio_channels,
              recognises=lambda model: "num_subbands" in model or "num_scales" in model,
              guess_rank=0),
    ModelType("apollo", build=_build_apollo, valid_chunk=_apollo_chunk,
              channels=_audio_channels,
              recognises=lambda model: "layer" in model and "feature_dim" in model,
              complement=False, joins_ensembles=False),
    # SCNet: band_SR is its own key (scnet_unofficial's configs say bandsplit_ratios); the
    # masked SCNet has exactly SCNet's keys, so it needs training.model_type/--model-type.
    ModelType("scnet", build=_build_scnet, valid_chunk=_scnet_chunk, channels=_scnet_channels,
              recognises=lambda model: "band_SR" in model, guess_rank=4),
    ModelType("scnet_masked", build=_build_scnet_masked, valid_chunk=_scnet_chunk,
              channels=_scnet_channels, recognises=None),
    ModelType("scnet_tran", build=_build_scnet_tran, valid_chunk=_scnet_chunk,
              channels=_scnet_channels, recognises=_recognises_scnet_tran, guess_rank=3),
    # ZFTurbo's demucs4ht: the config's string ``model`` (htdemucs, hdemucs or demucs) names
    # the network and its section; its section has MDX23C's num_subbands, so it ranks first.
    ModelType("htdemucs", build=_build_demucs, valid_chunk=_demucs_chunk,
              channels=_demucs_channels, recognises=_recognises_demucs, guess_rank=-1,
              timing=_demucs_timing, chunking=demucs_chunking),
    # BandIt: ``band_specs``/``band_type`` with ``n_sqm_modules`` are BandIt's alone; v2's
    # keywords are in the ``kwargs`` section.
    ModelType("bandit", build=_build_bandit, valid_chunk=_bandit_chunk,
              channels=_audio_channels,
              recognises=lambda model: "band_specs" in model and "n_sqm_modules" in model),
    ModelType("bandit_v2", build=_build_bandit_v2, valid_chunk=_bandit_v2_chunk,
              channels=_audio_channels, model_section="kwargs",
              recognises=lambda model: "n_sqm_modules" in model and "stems" in model),
)}
"""The model types stemsplit runs, by name."""


def guess_model_type(model: Mapping[str, Any],
                     sections: Mapping[str, Any] | None = None) -> str | None:
    """The network a config describes, from keys only one type has: each row looks at its
    own ``model_section`` of ``sections`` (the config's sections; ``model`` is the network's
    keywords wherever they were found)."""
    for row in sorted(MODEL_TYPES.values(), key=lambda row: row.guess_rank):
        keywords = model
        if sections is not None and row.model_section != "model":
            keywords = sections.get(row.model_section)
        if row.recognises is not None and isinstance(keywords, Mapping) and row.recognises(keywords):
            return row.name
    return None


def listed(conjunction: str = ", ") -> str:
    """The type names in table order, the last joined with ``conjunction`` ("a, b or c")."""
    names = list(MODEL_TYPES)
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + conjunction + names[-1]
