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
  (ValueError when none does; the adapter words it as a usage or model error and checks
  the STFT minimum itself).
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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...errors import ModelError

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
            raise ModelError(f"{name}: unknown key 'model.{key}' for {config.model_type}",
                             hint="stemsplit may not know this variant of the network yet")
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


def _whole_hops(config: "MSSTConfig", chunk: int) -> int:
    """The Mel-Band RoFormer's iSTFT gives whole hops back."""
    hop = int(config.model.get("stft_hop_length", 512))
    return chunk - chunk % hop


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
    return chunk_size_for(chunk, int(config.audio["hop_length"]),
                          int(config.model["num_scales"]), int(scale[0]))


def _mdx23c_channels(config: "MSSTConfig") -> int:
    return int(config.audio.get("num_channels", 2))


# -- the table --------------------------------------------------------------------------------
MODEL_TYPES: dict[str, ModelType] = {row.name: row for row in (
    ModelType("bs_roformer", build=_build_bs_roformer, valid_chunk=_any_chunk,
              channels=_roformer_channels,
              recognises=lambda model: "dim" in model and "depth" in model, guess_rank=2),
    ModelType("mel_band_roformer", build=_build_mel_band_roformer, valid_chunk=_whole_hops,
              channels=_roformer_channels,
              recognises=lambda model: "num_bands" in model, guess_rank=1),
    ModelType("mdx23c", build=_build_mdx23c, valid_chunk=_mdx23c_chunk,
              channels=_mdx23c_channels,
              recognises=lambda model: "num_subbands" in model or "num_scales" in model,
              guess_rank=0),
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
