"""The VR family: UVR's VR Architecture models (``.pth`` state dicts, 2020-2023).

A file holds only the network's weights. What to run it with comes from UVR's model data,
found by the file's UVR hash (``params``): the band config, the primary stem and, for v5.1
networks, their widths. A file UVR does not know needs ``--vr-params NAME|FILE.json`` and
``--primary-stem`` (and ``--nout``/``--nout-lstm`` for a v5.1 network). The network's
variant follows from the file's size, as in UVR (``network.build_network``).

Processing (``stemsplit/models/vr_spectrum.py``) needs the whole track's spectrogram maximum:
the engine's pre-pass takes it, then runs the track chunk by chunk with UVR's whole-track
stems (``streaming``); ``--batch-size`` is UVR's windows per network call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...errors import ModelError, UsageError
from ..mdx.uvr_files import UVRFileEntries
from ..base import ChunkingRequest, Family, LoadedModel, OptionSpec, typed_parameters

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Network
    from ...specs import ModelFile, ModelSpec

def hash_list(value: Any) -> tuple[str, ...]:
    """A list of UVR hashes (32 hex digits each), lower-cased."""
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError("a list of UVR hashes")
    hashes = tuple(str(item).lower() for item in value)
    if not all(len(item) == 32 and all(c in "0123456789abcdef" for c in item) for item in hashes):
        raise ValueError("UVR hashes are 32 hex digits")
    return hashes


PARAMETER_KEYS = {"uvr_hash": str, "uvr_hash_candidates": hash_list, "vr_params": str,
                  "primary_stem": str, "nout": int, "nout_lstm": int}
WINDOW_SIZES = (320, 512, 1024)
STATE_KEY_MARKERS = (b"stg1_low_band_net.", b"stg1_high_band_net.")
"""Bytes every VR state dict's key names contain (both generations)."""


@dataclass(frozen=True)
class VRConfig:
    """weights.toml's parameters of a VR model: its UVR hash (which finds UVR's model
    data), and anything that overrides that data."""

    uvr_hash: str | None = None
    uvr_hash_candidates: tuple[str, ...] | None = None
    """Where the file's own UVR hash is not known: the hashes of UVR's model-data rows with
    this model's parameters (the download must have one of them)."""
    vr_params: str | None = None
    primary_stem: str | None = None
    nout: int | None = None
    nout_lstm: int | None = None

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in PARAMETER_KEYS if getattr(self, key) is not None}


class VRFamily(UVRFileEntries, Family):
    name = "vr"
    display = "VR Architecture"
    vocabulary = (r"\bvr[_-]", r"\bvr\b", r"aggression", r"high[_-]end",
                  r"post[_-]process", r"window[_-]size", r"nout")
    weights_help = "a UVR VR Architecture .pth file"
    options = (
        OptionSpec("--vr-params", "vr_params", "str", "VR: UVR's band config of an unknown "
                   ".pth (a name such as 4band_v3, or a modelparams .json file).",
                   metavar="NAME|FILE"),
        OptionSpec("--nout", "nout", "int", "VR: width of an unknown v5.1 network (UVR's "
                   "nout).", metavar="N"),
        OptionSpec("--nout-lstm", "nout_lstm", "int", "VR: LSTM width of an unknown v5.1 "
                   "network (UVR's nout_lstm).", metavar="N"),
        OptionSpec("--window-size", "window_size", "int", "VR: frames per network call: "
                   "320, 512 (default) or 1024; smaller is slower and may be better.",
                   metavar="N"),
        OptionSpec("--aggression", "aggression", "int", "VR: strength of the primary stem's "
                   "extraction, -100..100 (default 5).", metavar="N"),
        OptionSpec("--tta", "tta", "bool", "VR: average a second pass on a grid moved by "
                   "half a window (2x slower)."),
        OptionSpec("--post-process", "post_process", "bool", "VR: UVR's post-processing "
                   "(pulls long runs of a confident mask to 1)."),
        OptionSpec("--post-process-threshold", "post_process_threshold", "float",
                   "VR: threshold of --post-process (default 0.2).", metavar="X"),
        OptionSpec("--high-end-process", "high_end_process", "bool", "VR: fill the bins "
                   "above the model's range from the mixture (UVR's mirroring)."),
        OptionSpec("--primary-stem", "primary_stem", "str", "VR: the stem an unknown .pth "
                   "file's mask keeps (Vocals, Instrumental, No Echo, ...).",
                   metavar="STEM"),
    )

    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[VRConfig, tuple["ModelFile", ...]]:
        values = typed_parameters(name, table, PARAMETER_KEYS, "a VR", url_files, ".pth")
        return VRConfig(**values), url_files

    # -- local files ---------------------------------------------------------------------
    def sniff(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".pth" and _has_vr_keys(path)

    def claims(self, path: Path, options: Mapping[str, Any]) -> bool:
        """A ``.pth`` whose state dict has VR's key names is this family's, ahead of the
        families that read other ``.pth`` files."""
        return self.sniff(path)

    def load(self, spec, fetched, options, device) -> LoadedModel:
        return _load(fetched.paths[0], spec, options, device)

    def load_local(self, path, spec, options, device, offline=None, known=()) -> LoadedModel:
        return _load(path, spec, options, device, known)

    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from .streaming import engine_network

        if request.segment_seconds is not None or request.overlap is not None:
            raise UsageError("--segment and --overlap do not apply to VR models: their chunks "
                             "are set by the spectrogram's frame grid (--window-size frames "
                             "per network call)", hint="drop them")
        if request.shifts:
            raise UsageError("--shifts does not apply to VR models: their chunks sit on the "
                             "spectrogram's frame grid",
                             hint="--tta averages a second pass on a grid moved by half a "
                                  "window")
        return [engine_network(separator, request.batch_size) for separator in model.networks]


def _has_vr_keys(path: Path) -> bool:
    """Whether the file's pickled key names are VR's: read from a zip archive's
    ``data.pkl`` or the head of a legacy file, as bytes (nothing is unpickled)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if len(names) != 1:
                    return False
                head = archive.read(names[0])
        else:
            with open(path, "rb") as file:
                head = file.read(1 << 20)
    except (OSError, zipfile.BadZipFile):
        return False
    return all(marker in head for marker in STATE_KEY_MARKERS)


def _load(path: Path, spec: "ModelSpec | None", options: Mapping[str, Any], device,
          known: "Sequence[ModelSpec]" = ()) -> LoadedModel:
    from .network import VRSeparator, resolve_facts, settings_from

    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    facts, spec = resolve_facts(path, spec, options, known)
    separator = VRSeparator.from_file(path, facts, settings_from(options), device)
    model = LoadedModel(
        name=spec.name if spec is not None else path.stem,
        sources=separator.sources, sample_rate=44100, audio_channels=2,
        networks=[separator], bag_weights=[[1.0, 1.0]], origin=str(path), family=FAMILY,
        spec=spec, details=facts)
    return model.to(device)


FAMILY = VRFamily()
