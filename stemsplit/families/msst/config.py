"""ZFTurbo-style YAML configs (Music-Source-Separation-Training), read as published.

A config has the sections ``audio`` (chunk_size, n_fft, hop_length, dim_f, dim_t,
num_channels, sample_rate, min_mean_abs), ``model`` (the network's constructor keywords),
``training`` (instruments, target_instrument, and much that only training reads),
``inference`` (batch_size, dim_t, num_overlap, chunk_size, normalize) and training-only
ones (augmentations, loss settings, optimizer, ...). Published configs write tuples with
the ``!!python/tuple`` tag: exactly that tag is accepted, by a safe loader; no other Python
tag is. Unknown keys of ``audio`` and ``inference`` are errors naming them (the model's
keys are checked against its network's constructor when it is built); ``training`` and the
other sections are read only for the stems. Which network the config describes is
``training.model_type``, or the one ``--model-type`` names, or else guessed from the model's
keys (``types.guess_model_type``); it must be a row of ``types.MODEL_TYPES``. The type's
row says which section holds the network's keywords (``model``; a ``model`` that is a string
names that section, as ZFTurbo's ``demucs4ht`` configs do), and how the chunk size and
sample rate are found (``timing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...stems import complement_name, stem_name
from .types import MODEL_TYPES, default_timing, guess_model_type

AUDIO_KEYS = frozenset({"chunk_size", "n_fft", "hop_length", "dim_f", "dim_t", "num_channels",
                        "sample_rate", "min_mean_abs"})
INFERENCE_KEYS = frozenset({"batch_size", "dim_t", "num_overlap", "chunk_size", "normalize"})
DEFAULT_NUM_OVERLAP = 2
"""When a config gives no ``inference.num_overlap`` (ZFTurbo would stop; 2 is its most
common value)."""


@dataclass(frozen=True)
class MSSTConfig:
    """What stemsplit needs of a config."""

    path: Path
    model_type: str
    model: dict
    """The network's keywords (the ``model`` section, or the one the row or ``model`` names)."""
    audio: dict
    instruments: tuple[str, ...]
    """``training.instruments`` as the network gives them (our spelling)."""
    target: str | None
    """``training.target_instrument`` (our spelling): the network gives this stem only, the
    other is the mixture minus it."""
    chunk_size: int
    num_overlap: int
    normalize: bool
    sample_rate: int
    training: dict
    """The ``training`` section, as it is."""
    architecture: str | None = None
    """A string ``model`` (``htdemucs``, ``hdemucs``, ``demucs``): which network of the type."""

    @property
    def network_stems(self) -> tuple[str, ...]:
        """The stems the network outputs, in order."""
        return (self.target,) if self.target is not None else self.instruments

    @property
    def stems(self) -> tuple[str, ...]:
        """The model's stems: the network's, and the complement of a target."""
        if self.target is not None:
            if not MODEL_TYPES[self.model_type].complement:
                return (self.target,)
            return (self.target, complement_name(self.target))
        return self.instruments

    @property
    def residual_stem(self) -> str | None:
        """The stem worked out as the mixture minus the network's (None: every stem is the
        network's)."""
        return self.stems[-1] if len(self.stems) > len(self.network_stems) else None


class _ConfigLoader:
    """A yaml SafeLoader that also builds ``!!python/tuple`` (and nothing else Python)."""

    loader: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.loader is None:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            def construct_tuple(loader: Any, node: Any) -> tuple:
                return tuple(loader.construct_sequence(node, deep=True))

            Loader.add_constructor("tag:yaml.org,2002:python/tuple", construct_tuple)
            cls.loader = Loader
        return cls.loader


def _section(document: dict, name: str, path: Path, known: frozenset | None) -> dict:
    section = document.get(name) or {}
    if not isinstance(section, dict):
        raise ModelError(f"{path}: the config's '{name}' is not a mapping")
    if known is not None:
        unknown = sorted(str(key) for key in section if key not in known)
        if unknown:
            raise ModelError(f"{path}: unknown key '{name}.{unknown[0]}' in the config",
                             hint=f"{name} takes {', '.join(sorted(known))}")
    return dict(section)


def _positive_int(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{path}: {where} must be a positive whole number, not {value!r}")
    return value


def read_document(path: Path) -> Any:
    """A config file's YAML document, read safely (ModelError naming what went wrong)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.load(file, Loader=_ConfigLoader.get())
    except FileNotFoundError:
        raise ModelError(f"{path}: config file not found") from None
    except yaml.constructor.ConstructorError as error:
        tag = getattr(error, "problem", "") or str(error)
        raise ModelError(f"{path}: the config uses a YAML tag stemsplit does not read ({tag})",
                         hint="only !!python/tuple is accepted besides plain YAML") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path}: unreadable config ({first})") from None
    return document


def is_zfturbo_config(path: Path) -> bool:
    """Whether ``path`` reads as a ZFTurbo-style config: a mapping with a ``training`` section
    (a demucs bag file has none)."""
    try:
        document = read_document(path)
    except ModelError:
        return False
    return isinstance(document, dict) and isinstance(document.get("training"), dict)


def read_config(path: Path, model_type: str | None = None) -> MSSTConfig:
    """Read and check one config (``model_type``: the network, if known; else guessed)."""
    document = read_document(path)
    if not isinstance(document, dict):
        raise ModelError(f"{path}: not a model config (it is not a mapping of sections)")
    architecture = document.get("model") if isinstance(document.get("model"), str) else None
    if architecture is not None and not isinstance(document.get(architecture), dict):
        raise ModelError(f"{path}: the config's model is '{architecture}', but it has no "
                         f"'{architecture}' section")
    audio = _section(document, "audio", path, AUDIO_KEYS)
    training = _section(document, "training", path, None)
    inference = _section(document, "inference", path, INFERENCE_KEYS)
    keywords = document.get(architecture) if architecture is not None else document.get("model")

    guessed = str(training.get("model_type") or "") or guess_model_type(
        keywords if isinstance(keywords, dict) else {}, document)
    model_type = model_type or guessed
    if model_type not in MODEL_TYPES:
        if not any(isinstance(document.get(row.model_section), dict)
                   for row in MODEL_TYPES.values()) and architecture is None:
            raise ModelError(f"{path}: not a model config (it has no 'model' section)")
        raise ModelError(
            f"{path}: cannot tell which network the config describes"
            + (f" ('{model_type}' is not one stemsplit runs)" if model_type else ""),
            hint=f"give --model-type ({', '.join(MODEL_TYPES)})")
    row = MODEL_TYPES[model_type]
    section_name = architecture if architecture is not None else row.model_section
    if not isinstance(document.get(section_name), dict):
        raise ModelError(f"{path}: not a {model_type} config (it has no '{section_name}' "
                         "section)")
    model = _section(document, section_name, path, None)

    instruments = training.get("instruments")
    if not isinstance(instruments, (list, tuple)) or not instruments or not all(
            isinstance(name, str) and name for name in instruments):
        raise ModelError(f"{path}: training.instruments must be a list of stem names")
    names = tuple(stem_name(name) for name in instruments)
    if len(set(names)) != len(names):
        raise ModelError(f"{path}: training.instruments names a stem twice ({list(instruments)})")
    target = training.get("target_instrument")
    if target is not None:
        if not isinstance(target, str) or not target:
            raise ModelError(f"{path}: training.target_instrument must be a stem name or null")
        target = stem_name(target)

    sections = {name: value for name, value in document.items() if isinstance(value, dict)}
    sections["model"] = model
    try:
        chunk, sample_rate = (row.timing or default_timing)(sections)
    except ValueError as error:
        raise ModelError(f"{path}: {error}") from None
    chunk = _positive_int(chunk, "chunk_size", path)
    num_overlap = _positive_int(inference.get("num_overlap", DEFAULT_NUM_OVERLAP),
                                "inference.num_overlap", path)
    normalize = inference.get("normalize", False)
    if not isinstance(normalize, bool):
        raise ModelError(f"{path}: inference.normalize must be true or false")
    sample_rate = _positive_int(sample_rate, "the sample rate", path)
    return MSSTConfig(path=path, model_type=model_type, model=model, audio=audio,
                      instruments=names, target=target, chunk_size=chunk,
                      num_overlap=num_overlap, normalize=normalize, sample_rate=sample_rate,
                      training=training, architecture=architecture)
