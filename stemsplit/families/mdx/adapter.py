"""The MDX-Net family: the UVR community's MDX-Net ONNX models.

A model is one ONNX network (run by onnxruntime; ``onnx_runner``) inside our framing
(``stemsplit/models/mdx.py``): it estimates one stem, the other is the mixture minus it.
Its files are GitHub release assets, each checked against UVR's hash of the file after the
download; a renamed known file given with ``--weights`` is recognised by that hash.

Chunking is UVR's: chunks of ``hop * (dim_t - 1)`` samples on the raw (not normalised)
mixture, n_fft/2 zeros in front and enough zeros behind to end one ``gen_size`` past a
multiple of it, a chunk every ``int((1 - overlap) * chunk)`` samples, overlap-added with a
symmetric Hann window of each chunk's real length (equal weights without overlap). A short
last chunk is filled up with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...errors import ModelError, UsageError
from .uvr_files import UVRFileEntries
from ..base import ChunkingRequest, Family, LoadedModel, OptionSpec, typed_parameters

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Network
    from ...specs import ModelFile, ModelSpec

DEFAULT_OVERLAP = 0.25
PARAMETER_KEYS = {"n_fft": int, "dim_f": int, "dim_t": int, "hop": int, "compensate": float,
                  "uvr_hash": str}


@dataclass(frozen=True)
class MDXConfig:
    """UVR's model data for one file: the STFT size, the network's input size (dim_f
    bins, dim_t frames), the hop, the gain on the primary stem, and UVR's hash of the file
    (the MD5 of its last 10,240,000 bytes)."""

    n_fft: int | None = None
    dim_f: int | None = None
    dim_t: int | None = None
    hop: int | None = None
    compensate: float | None = None
    uvr_hash: str | None = None

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in PARAMETER_KEYS if getattr(self, key) is not None}


class MDXFamily(UVRFileEntries, Family):
    name = "mdx"
    display = "MDX-Net"
    vocabulary = (r"\bmdx", r"\bonnx", r"onnxruntime", r"\buvr\b", r"\bn[_-]fft", r"compensate",
                  r"primary[_-]stem", r"denoise")
    weights_help = "an MDX-Net .onnx file"
    options = (
        OptionSpec("--denoise", "denoise", "bool", "MDX-Net: average the network on the mix "
                   "and its negation (UVR's denoise; 2x slower)."),
        OptionSpec("--n-fft", "n_fft", "int", "MDX-Net: FFT size, for an .onnx file "
                   "weights.toml does not know.", metavar="N"),
        OptionSpec("--compensate", "compensate", "float", "MDX-Net: gain applied to the "
                   "network's stem, for an unknown .onnx file.", metavar="GAIN"),
        OptionSpec("--primary-stem", "primary_stem", "str", "MDX-Net: the stem an unknown "
                   ".onnx file estimates (vocals, instrumental, drums, ...).", metavar="STEM"),
    )

    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[MDXConfig, tuple["ModelFile", ...]]:
        values = typed_parameters(name, table, PARAMETER_KEYS, "an MDX-Net", url_files,
                                  ".onnx", lower_strings=True)
        return MDXConfig(**values), url_files

    def sniff(self, path) -> bool:
        return path.is_file() and path.suffix.lower() == ".onnx"

    def load(self, spec, fetched, options, device) -> LoadedModel:
        return _load(fetched.paths[0], spec, options, device)

    def load_local(self, path, spec, options, device, offline=None, known=()) -> LoadedModel:
        return _load(path, spec, options, device, known)

    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from ...engine import Chunking, Network, Window, overlap_stride

        result = []
        for network, weights in zip(model.networks, model.bag_weights):
            data = network.model_data
            if request.segment_seconds is not None:
                raise UsageError(
                    "--segment does not apply to MDX-Net models: the network's input fixes "
                    f"the chunk ({data.chunk} samples, {network.segment:.2f} s)",
                    hint="drop --segment")
            overlap = DEFAULT_OVERLAP if request.overlap is None else request.overlap
            try:
                stride = overlap_stride(overlap, data.chunk)
            except ValueError as error:
                raise UsageError(f"--overlap: {error}") from None
            chunking = Chunking(
                length=data.chunk, stride=stride,
                window=Window("rectangular" if overlap == 0 else "hann"),
                border=data.padding, border_mode="zeros", fill="zeros", normalise=None)
            result.append(Network(forward=network, chunking=chunking,
                                  stem_weights=tuple(float(w) for w in weights)))
        return result


def _load(path, spec: "ModelSpec | None", options: Mapping[str, Any], device,
          known: "Sequence[ModelSpec]" = ()) -> LoadedModel:
    """An MDX-Net ONNX file as a one-network bag (``spec``: its weights.toml entry, if known;
    without one, the file's UVR hash may find it among ``known``)."""
    from .onnx_runner import MDXOptions, build_mdx_network

    mdx_options = MDXOptions(n_fft=options.get("n_fft"), compensate=options.get("compensate"),
                             primary_stem=options.get("primary_stem"),
                             denoise=bool(options.get("denoise")))
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    network, spec = build_mdx_network(path, spec=spec, options=mdx_options, device=device,
                                      known=known)
    model = LoadedModel(
        name=spec.name if spec is not None else path.stem,
        sources=tuple(network.sources), sample_rate=int(network.samplerate),
        audio_channels=network.audio_channels, networks=[network],
        bag_weights=[[1.0] * len(network.sources)], origin=str(path), family=FAMILY,
        spec=spec, runs_outside_torch=True, details=network.model_data,
    )
    return model.to(device)


FAMILY = MDXFamily()
