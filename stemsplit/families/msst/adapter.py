"""The msst family: checkpoints of ZFTurbo's Music-Source-Separation-Training.

BS-RoFormer, Mel-Band RoFormer and MDX23C (TFC-TDF v3) networks, published as a ``.ckpt``
(a torch ``state_dict``, sometimes wrapped under ``state_dict``, ``model``, ``state`` or
``model_state_dict``; read without executing pickled code) with a ZFTurbo-style YAML
config (``config``). The networks are ours (``stemsplit/models/bs_roformer.py``,
``mel_band_roformer.py``, ``mdx23c.py``). What differs between them (how the network is
built from the config, the chunk lengths it takes, its audio channels, how a config shows
its type) is a row of ``types.MODEL_TYPES``; this module looks the config's type up there.

Chunking is ZFTurbo's ``utils.model_utils.demix``, in the mode the type's row names
(``demix.py``): chunks of the config's chunk size every ``chunk // num_overlap`` samples (or
as ``--segment``/``--overlap`` say). With ``training.target_instrument`` the network gives
that stem and, where the type has one, the other is the mixture minus it (worked out from
the raw mixture after the engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...errors import ModelError, UsageError
from ..base import ChunkingRequest, Family, Fetched, LoadedModel, OptionSpec
from .types import MODEL_TYPES, ChunkTooShort, listed, model_type_of

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Network
    from ...specs import ModelFile, ModelSpec
    from .config import MSSTConfig

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt", ".chpt", ".bin", ".th")
"""What a published checkpoint's name ends with (BandIt Plus's is ``.chpt``, Apollo's
``pytorch_model.bin``, DrumSep's a demucs package ``.th``)."""
CONFIG_SUFFIXES = (".yaml", ".yml")
STATE_WRAPPERS = ("state_dict", "model_state_dict", "model", "state")


@dataclass(frozen=True)
class MSSTEntry:
    """An msst model's weights.toml settings: which network its config describes."""

    model_type: str


class MSSTFamily(Family):
    name = "msst"
    display = "ZFTurbo-format"
    vocabulary = (r"roformer", r"zfturbo", r"\.ckpt", r"model[_-]type", r"tfc[_-]tdf",
                  r"band[_-]split", r"\bmel\b")
    weights_help = ("a ZFTurbo-format checkpoint (.ckpt, .chpt, .bin; a DrumSep .th) with its "
                    "YAML config beside it, or --config")
    options = (
        OptionSpec("--config", "config", "path", "ZFTurbo-format: the checkpoint's "
                   "ZFTurbo-style YAML config (default: the .yaml beside the .ckpt with the "
                   "same name).", "YAML"),
        OptionSpec("--model-type", "model_type", "str", f"ZFTurbo-format: {listed(' or ')}, "
                   "when the config does not tell.", "TYPE"),
    )

    # -- weights.toml --------------------------------------------------------------------
    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[MSSTEntry, tuple["ModelFile", ...]]:
        unknown = sorted(set(table) - {"model_type"})
        if unknown:
            raise ModelError(f"weights.toml: model '{name}': unknown key '{unknown[0]}' for a "
                             "ZFTurbo-format model", hint="it has model_type and files")
        model_type = table.get("model_type")
        if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
            raise ModelError(f"weights.toml: model '{name}': model_type must be one of "
                             f"{', '.join(MODEL_TYPES)}, not {model_type!r}")
        checkpoints = [f for f in url_files if f.filename.endswith(CHECKPOINT_SUFFIXES)]
        configs = [f for f in url_files if f.filename.endswith(CONFIG_SUFFIXES)]
        if len(checkpoints) != 1 or len(configs) != 1 or len(url_files) != 2:
            raise ModelError(f"weights.toml: model '{name}': a ZFTurbo-format model has one "
                             "checkpoint and one .yaml config")
        return MSSTEntry(model_type=model_type), url_files

    def joins_ensembles(self, config: MSSTEntry) -> bool:
        return MODEL_TYPES[config.model_type].joins_ensembles

    def details(self, spec: "ModelSpec") -> dict:
        return {"model_type": spec.config.model_type}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        return [("network", spec.config.model_type)]

    # -- local files ---------------------------------------------------------------------
    def sniff(self, path: Path) -> bool:
        if path.is_dir():
            return len([p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES]) == 1
        return path.suffix in CHECKPOINT_SUFFIXES

    def claims(self, path: Path, options: Mapping[str, Any]) -> bool:
        """A checkpoint file given with ``--config``, or with a ZFTurbo-style config beside
        it, is this family's ahead of the demucs family (whose a demucs package such as
        DrumSep's ``.th`` is otherwise)."""
        if not path.is_file() or path.suffix not in CHECKPOINT_SUFFIXES:
            return False
        if options.get("config") is not None:
            return True
        from .config import is_zfturbo_config

        try:
            return is_zfturbo_config(_config_beside(path))
        except ModelError:
            return False

    # -- loading -------------------------------------------------------------------------
    def load(self, spec, fetched: Fetched, options, device) -> LoadedModel:
        checkpoint, config = _pair(fetched.paths)
        if options.get("config") is not None:
            raise UsageError("--config applies to a checkpoint given with --weights")
        model_type = options.get("model_type") or spec.config.model_type
        return _load(checkpoint, config, model_type, spec, spec.name, fetched.origin, device)

    def load_local(self, path, spec, options, device, offline=None, known=()) -> LoadedModel:
        checkpoint = path
        if path.is_dir():
            checkpoint = next(p for p in sorted(path.iterdir()) if p.suffix in CHECKPOINT_SUFFIXES)
        config = options.get("config")
        if config is not None:
            config = Path(config).expanduser()
            if not config.is_file():
                raise ModelError(f"--config {config}: no such file")
        elif spec is not None:
            # The named model's config (downloaded if need be) applies to this checkpoint.
            from ...cache.http import resolve_url_files

            (found, _), = resolve_url_files(
                spec.name, [f for f in spec.files if f.filename.endswith(CONFIG_SUFFIXES)],
                offline=offline)
            config = found
        else:
            config = _config_beside(checkpoint)
        model_type = options.get("model_type") or (spec.config.model_type if spec else None)
        label = spec.name if spec is not None else checkpoint.stem
        return _load(checkpoint, config, model_type, spec, label, str(checkpoint), device)

    # -- chunking ------------------------------------------------------------------------
    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from ...engine import Network, overlap_stride
        from .demix import generic_chunking

        config: MSSTConfig = model.details
        chunk = config.chunk_size
        if request.segment_seconds is not None:
            chunk = int(request.segment_seconds * model.sample_rate)
        chunk = _valid_chunk(config, chunk, request.segment_seconds is not None)
        if request.overlap is None:
            step = max(1, chunk // config.num_overlap)
        else:
            try:
                step = overlap_stride(request.overlap, chunk)
            except ValueError as error:
                raise UsageError(f"--overlap: {error}") from None
        chunking = (model_type_of(config).chunking or generic_chunking)(config, chunk, step)
        return [Network(forward=network, chunking=chunking,
                        stem_weights=tuple(float(w) for w in weights))
                for network, weights in zip(model.networks, model.bag_weights)]


def _pair(paths: list[Path]) -> tuple[Path, Path]:
    checkpoint = next(p for p in paths if p.suffix in CHECKPOINT_SUFFIXES)
    config = next(p for p in paths if p.suffix in CONFIG_SUFFIXES)
    return checkpoint, config


def _config_beside(checkpoint: Path) -> Path:
    """The config published with ``checkpoint``: the same name as .yaml (or the names
    UVR and audio-separator give: ``<name>_config.yaml``, ``config_<name>.yaml``)."""
    stem = checkpoint.stem
    names = [f"{stem}.yaml", f"{stem}.yml", f"{stem}_config.yaml", f"config_{stem}.yaml"]
    for name in names:
        if (checkpoint.parent / name).is_file():
            return checkpoint.parent / name
    yamls = [p for p in checkpoint.parent.iterdir() if p.suffix in CONFIG_SUFFIXES]
    if len(yamls) == 1 and len([p for p in checkpoint.parent.iterdir()
                                if p.suffix in CHECKPOINT_SUFFIXES]) == 1:
        return yamls[0]
    raise ModelError(f"{checkpoint.name}: no config found beside it (looked for "
                     f"{', '.join(names)})", hint="give it with --config MODEL.yaml")


def _valid_chunk(config: "MSSTConfig", chunk: int, asked: bool) -> int:
    """The chunk length the network takes nearest below ``chunk`` (its type's chunk rule,
    which also checks what the network's STFT needs)."""
    rule = model_type_of(config).valid_chunk
    try:
        return rule(config, chunk)
    except ChunkTooShort as error:
        raise (UsageError if asked else ModelError)(str(error)) from None
    except ValueError as error:
        raise (UsageError if asked else ModelError)(f"chunk of {chunk} samples: {error}") from None


def _demucs_class_name(module: str, name: str) -> str | None:
    """A demucs package's ``klass`` (DrumSep's ``.th``: ``demucs.hdemucs.HDemucs``) as its
    dotted name, nothing imported; ZFTurbo reads only the package's ``state``."""
    dotted = f"{module}.{name}"
    if module.split(".", 1)[0] == "demucs" and all(part.isidentifier()
                                                   for part in dotted.split(".")):
        return dotted
    return None


def read_state(path: Path) -> dict:
    """A checkpoint's state_dict, unwrapped, as float32 tensors (a demucs package's
    ``state`` too: its class reference is read as a name, never imported)."""
    import torch

    from ..torch_archive import load_torch_archive

    state = load_torch_archive(path, _demucs_class_name)
    for _ in range(3):
        if not isinstance(state, dict):
            break
        inner = [key for key in STATE_WRAPPERS if isinstance(state.get(key), dict)]
        if not inner or all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        state = state[inner[0]]
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise ModelError(f"{path}: not a checkpoint of weights (expected a state_dict of tensors)")
    for prefix in ("module.", "model."):
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return {key: value.float() if value.is_floating_point() else value
            for key, value in state.items()}


def build_network(config: "MSSTConfig") -> Any:
    """Our network for a config, with random weights (its type's builder)."""
    return model_type_of(config).build(config)


def _load(checkpoint: Path, config_path: Path, model_type: str | None, spec: "ModelSpec | None",
          label: str, origin: str, device: Any) -> LoadedModel:
    from .config import read_config

    if not checkpoint.is_file():
        raise ModelError(f"{checkpoint}: no such file")
    config = read_config(config_path, model_type)
    if spec is not None and set(spec.stems) != set(config.stems):
        raise ModelError(f"model '{spec.name}': its config's stems {list(config.stems)} differ "
                         f"from weights.toml's {list(spec.stems)}")
    network = build_network(config)
    state = read_state(checkpoint)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:300]
        raise ModelError(f"{checkpoint.name}: the checkpoint does not match its config "
                         f"({config_path.name}): {detail}") from None
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    channels = model_type_of(config).channels(config)
    model = LoadedModel(
        name=label, sources=config.stems, sample_rate=config.sample_rate,
        audio_channels=channels, networks=[network],
        bag_weights=[[1.0] * len(config.network_stems)], origin=origin, family=FAMILY,
        spec=spec, details=config,
        residual_stem=config.residual_stem)
    return model.to(device)


FAMILY = MSSTFamily()
