"""The demucs family: bags of Demucs (v2), HDemucs (v3) and HTDemucs (v4) networks.

A model is a bag: one or more networks (``<sig>.safetensors`` on the Hugging Face hub, or
the original ``<sig>-<sha8>.th`` packages), averaged per stem with the bag's weights. Files
come through ``files``; checkpoints are read by ``checkpoint``; the networks
are ours, in ``stemsplit/models`` (``htdemucs.py``, ``hdemucs.py``, ``demucs.py``). The
diffq-packed members of mdx_q and mdx_extra_q are unpacked by ``diffq``.

Chunking is demucs 4.1.0's ``apply_model`` with ``split=True``: the track normalised by the
mean and unbiased std (+ 1e-8) of its mono mix; segments of the network's (or the bag's)
segment length every ``int((1 - overlap) * segment)`` samples, each padded to the network's
``valid_length`` with real neighbouring audio (zeros past the ends), trimmed back, and
overlap-added with a triangle window. A transformer (HTDemucs) never gets a segment longer
than the one it was trained for; with ``--segment`` it is fed exactly that many samples
and pads them itself.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ...errors import ModelError, UsageError
from ..base import ChunkingRequest, Family, Fetched, LoadedModel, OptionSpec

if TYPE_CHECKING:  # pragma: no cover
    from ...engine import Network
    from ...specs import ModelFile, ModelSpec
    from .diffq import QuantizedState

DEFAULT_OVERLAP = 0.25
TRANSITION_POWER = 1.0

# The class names stored in the published checkpoints -> (our module, our class).
NETWORK_CLASSES: dict[str, tuple[str, str]] = {
    "demucs.htdemucs.HTDemucs": ("htdemucs", "HTDemucs"),
    "demucs.hdemucs.HDemucs": ("hdemucs", "HDemucs"),
    "demucs.demucs.Demucs": ("demucs", "Demucs"),
}

TABLE_KEYS = frozenset({"hf_repo", "bag_file", "members", "bag_weights", "segment_seconds",
                        "legacy_url_root", "legacy_files", "sha256"})


@dataclass(frozen=True)
class DemucsConfig:
    """A demucs model's weights.toml settings.

    ``hf_repo`` holds ``bag_file`` and ``<member>.safetensors``; ``bag_weights`` has one row
    per member (absent: all ones); ``segment_seconds`` overrides the networks' segment;
    ``legacy_url_root`` + ``legacy_files`` are the original ``.th`` packages (the fallback);
    ``sha256`` maps file names to digests a publisher stated."""

    hf_repo: str | None = None
    bag_file: str | None = None
    members: tuple[str, ...] = ()
    bag_weights: tuple[tuple[float, ...], ...] | None = None
    segment_seconds: float | None = None
    legacy_url_root: str | None = None
    legacy_files: tuple[str, ...] = ()
    sha256: tuple[tuple[str, str], ...] = ()

    def legacy_file_for(self, member: str) -> str | None:
        """The legacy file name (``<sig>-<sha8>.th``) of one member, if recorded."""
        for filename in self.legacy_files:
            if filename.split("-", 1)[0] == member:
                return filename
        return None


def _strings(name: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ModelError(f"weights.toml: model '{name}': {key} must be a list of strings")
    return tuple(value)


def _rows(name: str, value: object) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, list) or not all(
            isinstance(row, list) and all(isinstance(v, (int, float)) for v in row) for row in value):
        raise ModelError(f"weights.toml: model '{name}': bag_weights must be rows of numbers")
    return tuple(tuple(float(v) for v in row) for row in value)


class DemucsFamily(Family):
    name = "demucs"
    display = "Demucs"
    vocabulary = (r"safetensors", r"\.th\b", r"bag_file", r"legacy_url", r"legacy_files")
    weights_help = "a demucs .safetensors/.th checkpoint, bag .yaml or bag folder"
    options = (
        OptionSpec("--repo", "repo", "path", "Demucs: a demucs-style local model folder "
                   "(<name>.yaml and the member checkpoints) to load -n from.", "DIR"),
    )

    # -- weights.toml --------------------------------------------------------------------
    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[DemucsConfig, tuple["ModelFile", ...]]:
        from ...specs import ModelFile, parse_digest
        from .files import legacy_name_prefix

        unknown = sorted(set(table) - TABLE_KEYS)
        if unknown:
            raise ModelError(f"weights.toml: model '{name}': unknown key '{unknown[0]}' for a "
                             "demucs model", hint=f"a demucs model has {', '.join(sorted(TABLE_KEYS))}")
        digests = table.get("sha256", {})
        if not isinstance(digests, dict):
            raise ModelError(f"weights.toml: model '{name}': sha256 must be a table")
        sha256 = tuple((str(filename), parse_digest(digest, f"model '{name}' file {filename}"))
                       for filename, digest in digests.items())
        segment = table.get("segment_seconds")
        if segment is not None and (not isinstance(segment, (int, float)) or segment <= 0):
            raise ModelError(f"weights.toml: model '{name}': segment_seconds must be positive")
        config = DemucsConfig(
            hf_repo=table.get("hf_repo"), bag_file=table.get("bag_file"),
            members=_strings(name, "members", table.get("members", [])),
            bag_weights=_rows(name, table["bag_weights"]) if "bag_weights" in table else None,
            segment_seconds=segment, legacy_url_root=table.get("legacy_url_root"),
            legacy_files=_strings(name, "legacy_files", table.get("legacy_files", [])),
            sha256=sha256,
        )
        recorded = dict(sha256)
        files: list[ModelFile] = []
        if config.hf_repo:
            if config.bag_file:
                files.append(ModelFile(config.bag_file, "hf", config.hf_repo,
                                       recorded.get(config.bag_file), required=False))
            for sig in config.members:
                filename = f"{sig}.safetensors"
                files.append(ModelFile(filename, "hf", config.hf_repo, recorded.get(filename),
                                       member=sig))
        for filename in config.legacy_files:
            digest = recorded.get(filename)
            files.append(ModelFile(
                filename, "url", (config.legacy_url_root or "") + filename,
                digest or legacy_name_prefix(filename), member=filename.split("-", 1)[0],
                folder="torch_hub", sha256_from="weights.toml" if digest else "its name",
                kind="legacy"))
        files.extend(url_files)
        return config, tuple(files)

    def sources(self, spec: "ModelSpec") -> list[dict]:
        config: DemucsConfig = spec.config
        result = [source for source in super().sources(spec) if source["kind"] == "huggingface"]
        if config.legacy_url_root and config.legacy_files:
            result.append({"kind": "legacy", "url": config.legacy_url_root,
                           "note": "demucs' original packages"})
        result += [source for source in super().sources(spec)
                   if source["kind"] not in ("huggingface", "legacy")]
        return result

    def details(self, spec: "ModelSpec") -> dict:
        config: DemucsConfig = spec.config
        return {"members": list(config.members),
                "bag_weights": [list(row) for row in config.bag_weights] if config.bag_weights else None,
                "segment_seconds": config.segment_seconds}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        members = spec.config.members
        if not members:
            return []
        return [("bag", f"{len(members)} member{'s' if len(members) > 1 else ''}: "
                        f"{', '.join(members)}")]

    # -- files ---------------------------------------------------------------------------
    def fetch(self, spec, *, offline, progress=None, options=None) -> Fetched:
        from .files import resolve_demucs_model

        repo = (options or {}).get("repo")
        resolved = resolve_demucs_model(spec, offline=offline, progress=progress,
                                        repo_dir=Path(repo) if repo is not None else None)
        return Fetched(paths=list(resolved.member_paths), downloaded=list(resolved.downloaded),
                       origin=resolved.origin, details=resolved)

    def sniff(self, path: Path) -> bool:
        from .checkpoint import CHECKPOINT_SUFFIXES, read_bag_yaml

        if path.is_dir():
            return any(child.suffix in CHECKPOINT_SUFFIXES for child in path.iterdir())
        if path.suffix in CHECKPOINT_SUFFIXES:
            return True
        if path.suffix in (".yaml", ".yml"):
            try:
                read_bag_yaml(path)
            except ModelError:
                return False
            return True
        return False

    # -- loading -------------------------------------------------------------------------
    def load(self, spec, fetched, options, device) -> LoadedModel:
        resolved = fetched.details
        model = assemble_bag(spec.name, resolved.member_paths, resolved.weights,
                             resolved.segment, resolved.origin, spec=spec)
        return model.to(device)

    def load_local(self, path, spec, options, device, offline=None, known=()) -> LoadedModel:
        from .files import resolve_weights_path

        if options.get("repo") is not None:
            raise UsageError("--repo and --weights are exclusive",
                             hint="--weights takes a bag folder too")
        resolved = resolve_weights_path(path)
        label = spec.name if spec is not None else path.stem
        model = assemble_bag(label, resolved.member_paths, resolved.weights, resolved.segment,
                             resolved.origin)
        return model.to(device)

    # -- chunking ------------------------------------------------------------------------
    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        from ...engine import Chunking, Network, Normalisation, Window, overlap_stride

        segment_seconds = request.segment_seconds
        limit = max_segment_seconds(model.networks)
        if segment_seconds is not None and segment_seconds > limit:
            raise UsageError(
                f"--segment {segment_seconds:g} is longer than this model's transformer "
                f"accepts (at most {limit:g} s)"
            )
        overlap = DEFAULT_OVERLAP if request.overlap is None else request.overlap
        result = []
        for network, weights in zip(model.networks, model.bag_weights):
            segment = segment_seconds if segment_seconds is not None else network.segment
            input_length = network.valid_length
            if segment_seconds is not None and _is_transformer(network):
                # demucs feeds a transformer exactly the overridden segment; the network
                # pads it with zeros to its training length.
                fixed = int(segment_seconds * model.sample_rate)
                input_length = lambda length, fixed=fixed: fixed  # noqa: E731
            length = int(model.sample_rate * segment)
            try:
                stride = overlap_stride(overlap, length)
            except ValueError as error:
                raise UsageError(f"--overlap: {error}") from None
            chunking = Chunking(length=length, stride=stride,
                                window=Window("triangle", power=TRANSITION_POWER),
                                input_length=input_length,
                                normalise=Normalisation(unbiased=True, epsilon=1e-8))
            result.append(Network(forward=network, chunking=chunking,
                                  stem_weights=tuple(float(w) for w in weights)))
        return result


def max_segment_seconds(networks: Sequence[Any]) -> float:
    """The longest segment every transformer member accepts (inf without one)."""
    limits = [float(n.segment) for n in networks if _is_transformer(n)]
    return min(limits, default=float("inf"))


def _is_transformer(network: Any) -> bool:
    from ...models.htdemucs import HTDemucs

    return isinstance(network, HTDemucs)


def network_class(klass: str) -> type:
    """Our class for a checkpoint's dotted class name."""
    try:
        module_name, class_name = NETWORK_CLASSES[klass]
    except KeyError:
        known = ", ".join(sorted(NETWORK_CLASSES))
        raise ModelError(f"unsupported network class '{klass}'", hint=f"supported: {known}")
    module = importlib.import_module(f"stemsplit.models.{module_name}")
    return getattr(module, class_name)


def build_network(klass: str, args: list, kwargs: Mapping[str, Any], state: Mapping[str, Any],
                  quantized: "QuantizedState | None" = None, source: Path | None = None):
    """Instantiate our network for ``klass`` and load ``state`` (cast to float32), or the
    weights a diffq-``quantized`` state unpacks to.

    Like demucs, constructor keywords the class does not know are dropped (old checkpoints
    carry a few training-only ones); the state must then match exactly.
    """
    import torch

    cls = network_class(klass)
    parameters = inspect.signature(cls).parameters
    kept = {key: value for key, value in kwargs.items() if key in parameters}
    try:
        network = cls(*args, **kept)
    except (TypeError, ValueError) as error:
        raise ModelError(f"cannot build {klass} from its checkpoint arguments: {error}")
    if quantized is not None:
        from .diffq import CorruptState, restore

        try:
            state = restore(network, quantized)
        except CorruptState as error:
            where = f"{source}: " if source is not None else ""
            raise ModelError(f"{where}diffq-quantized state does not fit {klass}: {error.message}",
                             hint="the file is damaged, or not the checkpoint of this network")
    float_state = {
        key: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
        for key, value in state.items()
    }
    try:
        network.load_state_dict(float_state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelError(f"checkpoint does not match {klass}: {first_line}")
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _read_member(path: Path):
    from .checkpoint import read_legacy_th, read_safetensors_member

    if path.suffix == ".safetensors":
        return read_safetensors_member(path)
    if path.suffix == ".th":
        return read_legacy_th(path)
    raise ModelError(f"{path}: not a checkpoint (expected .safetensors or .th)")


def assemble_bag(
    name: str,
    member_paths: Sequence[Path],
    weights: Sequence[Sequence[float]] | None,
    segment_seconds: float | None,
    origin: str,
    spec: "ModelSpec | None" = None,
) -> LoadedModel:
    """Build every member and apply demucs' bag rules (shared sources, segment override)."""
    networks = []
    for path in member_paths:
        package = _read_member(Path(path))
        networks.append(build_network(package.klass, package.args, package.kwargs,
                                      package.state, package.quantized, package.source))
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
        origin=origin, family=FAMILY, spec=spec,
    )


FAMILY = DemucsFamily()
