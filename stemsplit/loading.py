"""From a model name (or a local checkpoint) to networks ready for the engine.

registry (what the model is) -> cache (verified local files) -> checkpoint (plain data)
-> models (our networks). The result, ``LoadedModel``, hands the engine its ``Network``
list with demucs' bag rules applied.

Families: "demucs" (bags of Demucs/HDemucs/HTDemucs networks; ``.safetensors``/``.th``) and
"mdx" (one MDX-Net ONNX network run by onnxruntime; ``.onnx``, see ``mdx_onnx``). An MDX-Net
model is a bag of one network with two stems (primary, mixture minus primary).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from . import cache, checkpoint
from .engine import Network
from .errors import ModelError, UsageError
from .models import build_network
from .models.mdx import MDXNet
from .registry import ModelSpec, load_registry

if TYPE_CHECKING:  # pragma: no cover
    from .mdx_onnx import MDXOptions


@dataclass
class LoadedModel:
    """A bag of networks with its weights, on one device."""

    name: str
    sources: tuple[str, ...]
    sample_rate: int
    audio_channels: int
    networks: list[torch.nn.Module]
    bag_weights: list[list[float]]
    origin: str
    spec: ModelSpec | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def max_segment_seconds(self) -> float:
        """The longest segment every transformer member accepts (inf without one)."""
        limits = [float(n.segment) for n in self.networks if _is_transformer(n)]
        return min(limits, default=float("inf"))

    @property
    def runs_outside_torch(self) -> bool:
        """Some member's network runs in another runtime (onnxruntime, own thread pool)."""
        return any(isinstance(n, MDXNet) for n in self.networks)

    def to(self, device: torch.device | str) -> "LoadedModel":
        self.device = torch.device(device)
        for network in self.networks:
            network.to(self.device)
        return self

    def engine_networks(self, segment_seconds: float | None = None) -> list[Network]:
        """The engine's view of each member; ``segment_seconds`` overrides the segment."""
        if segment_seconds is not None:
            if segment_seconds <= 0:
                raise UsageError("--segment must be positive")
            if segment_seconds > self.max_segment_seconds:
                raise UsageError(
                    f"--segment {segment_seconds:g} is longer than this model's transformer "
                    f"accepts (at most {self.max_segment_seconds:g} s)"
                )
        result = []
        for network, weights in zip(self.networks, self.bag_weights):
            if isinstance(network, MDXNet):
                result.append(_mdx_engine_network(network, weights, segment_seconds))
                continue
            segment = segment_seconds if segment_seconds is not None else network.segment
            valid_length = network.valid_length
            if segment_seconds is not None and _is_transformer(network):
                # demucs feeds a transformer exactly the overridden segment; the network
                # pads it with zeros to its training length.
                fixed = int(segment_seconds * self.sample_rate)
                valid_length = lambda length, fixed=fixed: fixed  # noqa: E731
            result.append(Network(
                forward=network,
                segment_length=int(self.sample_rate * segment),
                valid_length=valid_length,
                stem_weights=tuple(float(w) for w in weights),
            ))
        return result


def _mdx_engine_network(network: MDXNet, weights: Sequence[float],
                        segment_seconds: float | None) -> Network:
    """UVR's chunking for an MDX-Net network: its fixed chunk, n_fft/2 zeros in front and
    padding behind, Hann-weighted overlap-add, on the raw (not normalised) mixture."""
    parameters = network.parameters
    if segment_seconds is not None:
        raise UsageError(
            "--segment does not apply to MDX-Net models: the network's input fixes the chunk "
            f"({parameters.chunk} samples, {network.segment:.2f} s)", hint="drop --segment")
    return Network(
        forward=network,
        segment_length=parameters.chunk,
        valid_length=lambda length: length,  # the network pads a short last chunk itself
        stem_weights=tuple(float(w) for w in weights),
        window="hann",
        padding=parameters.padding,
        normalise=False,
    )


def _is_transformer(network: torch.nn.Module) -> bool:
    return type(network).__name__ == "HTDemucs"


def _read_member(path: Path) -> checkpoint.CheckpointPackage:
    if path.suffix == ".safetensors":
        return checkpoint.read_safetensors_member(path)
    if path.suffix == ".th":
        return checkpoint.read_legacy_th(path)
    raise ModelError(f"{path}: not a checkpoint (expected .safetensors or .th)")


def assemble_bag(
    name: str,
    member_paths: Sequence[Path],
    weights: Sequence[Sequence[float]] | None,
    segment_seconds: float | None,
    origin: str,
    spec: ModelSpec | None = None,
) -> LoadedModel:
    """Build every member and apply demucs' bag rules (shared sources, segment override)."""
    networks = []
    for path in member_paths:
        package = _read_member(Path(path))
        networks.append(build_network(package.klass, package.args, package.kwargs,
                                      package.state))
    if not networks:
        raise ModelError(f"model '{name}' has no networks")
    first = networks[0]
    for path, other in zip(member_paths, networks):
        if (list(other.sources) != list(first.sources)
                or other.samplerate != first.samplerate
                or other.audio_channels != first.audio_channels):
            raise ModelError(f"{path}: its sources or sample rate differ from the bag's first")
        if segment_seconds is not None:
            # A bag's segment applies to every member, except that a transformer never
            # gets a segment longer than the one it was trained for.
            # The value is kept as given (int, float or Fraction), as demucs does, so
            # that int(segment * sample_rate) rounds the same way.
            if not _is_transformer(other) or segment_seconds <= other.segment:
                other.segment = segment_seconds
    sources = tuple(first.sources)
    if weights is None:
        weights = [[1.0] * len(sources) for _ in networks]
    weights = [list(map(float, row)) for row in weights]
    if len(weights) != len(networks) or any(len(row) != len(sources) for row in weights):
        raise ModelError(f"model '{name}': bag weights do not match its members and sources")
    if spec is not None and tuple(spec.stems) != sources:
        raise ModelError(
            f"model '{name}': the checkpoint's sources {list(sources)} differ from "
            f"weights.toml's {list(spec.stems)}"
        )
    return LoadedModel(
        name=name, sources=sources, sample_rate=int(first.samplerate),
        audio_channels=int(first.audio_channels), networks=networks, bag_weights=weights,
        origin=origin, spec=spec,
    )


def offline_requested(offline: bool | None = None) -> bool:
    """``--offline``, else STEMSPLIT_OFFLINE, else HF_HUB_OFFLINE."""
    if offline is not None:
        return offline
    for variable in ("STEMSPLIT_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def load_mdx_model(
    path: Path,
    spec: ModelSpec | None,
    options: "MDXOptions | None",
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """An MDX-Net ONNX file as a one-network bag (``spec``: its weights.toml entry, if known;
    without one, the file's UVR hash may find it)."""
    from .mdx_onnx import MDXOptions, build_mdx_network

    device = torch.device(device)
    network, spec = build_mdx_network(Path(path), spec=spec, options=options or MDXOptions(),
                                      device=device)
    model = LoadedModel(
        name=spec.name if spec is not None else Path(path).stem,
        sources=tuple(network.sources), sample_rate=int(network.samplerate),
        audio_channels=network.audio_channels, networks=[network],
        bag_weights=[[1.0] * len(network.sources)], origin=str(path), spec=spec,
    )
    return model.to(device)


def load_model(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    repo: str | Path | None = None,
    offline: bool | None = None,
    device: torch.device | str = "cpu",
    progress: cache.DownloadProgress | None = None,
    mdx: "MDXOptions | None" = None,
) -> LoadedModel:
    """Load a published model by name (default: weights.toml's default) or a local checkpoint.

    ``weights`` is a ``.safetensors``/``.th`` file, a bag folder or an MDX-Net ``.onnx`` file
    (run with ``name``'s parameters when a name is given, else recognised by its UVR hash,
    else with ``mdx``'s); ``repo`` a demucs-style local repo folder. Downloads go to the
    Hugging Face cache (or, for plain URL files, the stemsplit cache) unless ``offline``.
    ``mdx`` holds the MDX-Net options (``--n-fft``, ``--compensate``, ``--primary-stem``,
    ``--denoise``); they are an error with any other family.
    """
    mdx_given = mdx is not None and (mdx.given or mdx.denoise)
    if weights is not None and Path(weights).suffix.lower() == ".onnx":
        if repo is not None:
            raise UsageError("--repo applies to demucs models, not to an .onnx file")
        path = Path(os.path.expandvars(os.path.expanduser(str(weights))))
        if not path.is_file():
            raise ModelError(f"--weights {path}: no such file")
        spec = None
        if name is not None:
            spec = load_registry().get(name)
            if spec.family != "mdx":
                raise UsageError(f"--weights {path.name} is an MDX-Net network, but model "
                                 f"'{spec.name}' is a {spec.family} model")
        return load_mdx_model(path, spec, mdx, device)
    if weights is not None:
        if mdx_given:
            raise UsageError("--n-fft, --compensate, --primary-stem and --denoise apply to "
                             "MDX-Net (.onnx) models only")
        resolved = cache.resolve_weights_path(Path(weights))
        label = name or Path(weights).stem
        model = assemble_bag(label, resolved.member_paths, resolved.weights, resolved.segment,
                             resolved.origin)
        return model.to(device)
    spec = load_registry().get(name)
    if spec.unsupported:
        raise ModelError(f"model '{spec.name}': {spec.unsupported}")
    if spec.family == "mdx":
        if repo is not None:
            raise UsageError("--repo applies to demucs models", hint="use --weights FILE.onnx")
        from .mdx_onnx import check_uvr_hash

        paths = cache.resolve_url_files(spec, offline=offline_requested(offline),
                                        progress=progress)
        check_uvr_hash(paths[0], spec)
        return load_mdx_model(paths[0], spec, mdx, device)
    if mdx_given:
        raise UsageError(f"--n-fft, --compensate, --primary-stem and --denoise apply to "
                         f"MDX-Net models, not to {spec.name}")
    if spec.family != "demucs":
        raise ModelError(f"model '{spec.name}': family '{spec.family}' is not supported yet")
    resolved = cache.resolve_demucs_model(
        spec, offline=offline_requested(offline),
        repo_dir=Path(repo) if repo is not None else None, progress=progress,
    )
    model = assemble_bag(spec.name, resolved.member_paths, resolved.weights, resolved.segment,
                         resolved.origin, spec=spec)
    return model.to(device)
