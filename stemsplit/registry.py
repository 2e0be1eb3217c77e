"""The model registry: weights.toml read into frozen ``ModelSpec`` records.

Only the standard library is imported here, so ``--help``, ``stemsplit models`` and
shell completion stay fast (no torch).

``STEMSPLIT_WEIGHTS_TOML=PATH`` replaces the packaged weights.toml (a private mirror, or a
test registry whose URLs point at a loopback server).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, UnknownModelError

_PACKAGE_DIR = Path(__file__).resolve().parent
# Inside a wheel the file ships as stemsplit/weights.toml; in a source checkout it sits
# at the repository root.
_WEIGHTS_TOML_CANDIDATES = (_PACKAGE_DIR / "weights.toml", _PACKAGE_DIR.parent / "weights.toml")
WEIGHTS_TOML_VARIABLE = "STEMSPLIT_WEIGHTS_TOML"

_HEX = re.compile(r"[0-9a-f]{8,64}")


def legacy_name_prefix(filename: str) -> str | None:
    """The sha256 prefix in a demucs ``<sig>-<hex>.th`` name (8+ hex digits), if any."""
    if not filename.endswith(".th"):
        return None
    stem = filename[: -len(".th")]
    if "-" not in stem:
        return None
    prefix = stem.rsplit("-", 1)[1]
    return prefix if _HEX.fullmatch(prefix) else None


@dataclass(frozen=True)
class ModelFile:
    """One published file of a model, and what is known about it before downloading.

    ``source`` is ``"hf"`` (``location`` = the Hugging Face repo id), ``"legacy"`` (a demucs
    ``.th`` package; ``location`` = its URL; cached in the torch hub folder) or ``"url"``
    (``location`` = its URL; cached under STEMSPLIT_CACHE). ``sha256`` is the recorded hex
    digest, or a prefix of it (legacy names carry 8 digits), or None when nothing is recorded.
    """

    filename: str
    source: str
    location: str
    sha256: str | None = None
    size: int | None = None
    member: str | None = None  # the bag member signature; None for a bag file

    @property
    def sha256_is_prefix(self) -> bool:
        return self.sha256 is not None and len(self.sha256) < 64


@dataclass(frozen=True)
class ModelSpec:
    """Everything stemsplit knows about one published model before loading it."""

    name: str
    family: str
    architecture: str
    description: str
    stems: tuple[str, ...]
    sample_rate: int
    sdr: float | None = None
    aliases: tuple[str, ...] = ()
    hf_repo: str | None = None
    bag_file: str | None = None
    members: tuple[str, ...] = ()
    bag_weights: tuple[tuple[float, ...], ...] | None = None
    segment_seconds: float | None = None
    legacy_url_root: str | None = None
    legacy_files: tuple[str, ...] = ()
    unsupported: str | None = None
    sha256: tuple[tuple[str, str], ...] = ()  # (file name, recorded hex digest or prefix)
    extra_files: tuple[ModelFile, ...] = ()  # [[models.X.files]]: plain URL downloads
    parameters: tuple[tuple[str, object], ...] = ()  # family settings (MDX-Net: n_fft, ...)

    def parameter(self, key: str, default: object = None) -> object:
        """A family-specific setting from the model's ``parameters`` table."""
        return dict(self.parameters).get(key, default)

    def recorded_sha256(self, filename: str) -> str | None:
        """weights.toml's digest for ``filename``, else the prefix in a legacy name."""
        for name, digest in self.sha256:
            if name == filename:
                return digest
        return legacy_name_prefix(filename)

    @property
    def files(self) -> tuple[ModelFile, ...]:
        """Every published file: the Hugging Face bag file and members, then the legacy
        ``.th`` packages (the same members, the fallback source), then plain URL files."""
        result: list[ModelFile] = []
        if self.hf_repo:
            if self.bag_file:
                result.append(ModelFile(self.bag_file, "hf", self.hf_repo,
                                        self.recorded_sha256(self.bag_file)))
            for sig in self.members:
                name = f"{sig}.safetensors"
                result.append(ModelFile(name, "hf", self.hf_repo, self.recorded_sha256(name),
                                        member=sig))
        for filename in self.legacy_files:
            url = (self.legacy_url_root or "") + filename
            result.append(ModelFile(filename, "legacy", url, self.recorded_sha256(filename),
                                    member=filename.split("-", 1)[0]))
        result.extend(self.extra_files)
        return tuple(result)

    @property
    def legacy_urls(self) -> tuple[str, ...]:
        """Full URLs of the legacy ``.th`` packages, one per member."""
        if not self.legacy_url_root:
            return ()
        return tuple(self.legacy_url_root + filename for filename in self.legacy_files)

    def legacy_file_for(self, member: str) -> str | None:
        """The legacy file name (``<sig>-<sha8>.th``) of one member, if recorded."""
        for filename in self.legacy_files:
            if filename.split("-", 1)[0] == member:
                return filename
        return None


@dataclass(frozen=True)
class Registry:
    """All models from weights.toml, looked up by name or alias."""

    models: dict[str, ModelSpec]
    default_model: str

    def names(self) -> list[str]:
        return list(self.models)

    def completions(self, incomplete: str = "") -> list[tuple[str, str]]:
        """(name, description) for every name and alias starting with ``incomplete``."""
        wanted = incomplete.lower()
        result = []
        for spec in self.models.values():
            for label in (spec.name, *spec.aliases):
                if label.lower().startswith(wanted):
                    about = spec.description if label == spec.name else f"= {spec.name}"
                    result.append((label, about))
        return result

    def get(self, name: str | None) -> ModelSpec:
        """The spec for ``name`` (an alias or any letter case works); ``None`` = default."""
        if name is None:
            name = self.default_model
        wanted = name.strip().lower()
        for spec in self.models.values():
            if wanted == spec.name.lower() or wanted in (a.lower() for a in spec.aliases):
                return spec
        known = sorted(
            list(self.models) + [alias for spec in self.models.values() for alias in spec.aliases]
        )
        close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"unknown model '{name}'",
            hint=f"{hint}`stemsplit models` lists the models; --weights PATH runs a local checkpoint",
        )


def _tuple_of_tuples(rows: list[list[float]] | None) -> tuple[tuple[float, ...], ...] | None:
    if rows is None:
        return None
    return tuple(tuple(float(value) for value in row) for row in rows)


def _digest(value: object, where: str) -> str:
    digest = str(value).strip().lower()
    if not _HEX.fullmatch(digest):
        raise ModelError(f"weights.toml: {where}: sha256 must be 8 to 64 hex digits, not {value!r}")
    return digest


def _extra_files(name: str, entries: list) -> tuple[ModelFile, ...]:
    files = []
    for entry in entries:
        if not isinstance(entry, dict) or "url" not in entry:
            raise ModelError(f"weights.toml: model '{name}': each [[files]] entry needs a url")
        url = str(entry["url"])
        filename = str(entry.get("name") or url.rsplit("/", 1)[-1].split("?", 1)[0])
        if not filename or "/" in filename or filename.startswith("."):
            raise ModelError(f"weights.toml: model '{name}': bad file name {filename!r}")
        digest = entry.get("sha256")
        size = entry.get("size")
        files.append(ModelFile(
            filename, "url", url,
            _digest(digest, f"model '{name}' file {filename}") if digest is not None else None,
            int(size) if size is not None else None,
            member=entry.get("member"),
        ))
    return tuple(files)


def _spec_from_table(name: str, table: dict) -> ModelSpec:
    try:
        return ModelSpec(
            name=name,
            family=table["family"],
            architecture=table.get("architecture", table["family"]),
            description=table.get("description", ""),
            stems=tuple(table["stems"]),
            sample_rate=int(table["sample_rate"]),
            sdr=table.get("sdr"),
            aliases=tuple(table.get("aliases", ())),
            hf_repo=table.get("hf_repo"),
            bag_file=table.get("bag_file"),
            members=tuple(table.get("members", ())),
            bag_weights=_tuple_of_tuples(table.get("bag_weights")),
            segment_seconds=table.get("segment_seconds"),
            legacy_url_root=table.get("legacy_url_root"),
            legacy_files=tuple(table.get("legacy_files", ())),
            unsupported=table.get("unsupported"),
            sha256=tuple(
                (str(filename), _digest(digest, f"model '{name}' file {filename}"))
                for filename, digest in table.get("sha256", {}).items()
            ),
            extra_files=_extra_files(name, table.get("files", [])),
            parameters=tuple(sorted(dict(table.get("parameters", {})).items())),
        )
    except KeyError as missing:
        raise ModelError(f"weights.toml: model '{name}' lacks the field {missing}") from None


def weights_toml_path() -> Path:
    """``$STEMSPLIT_WEIGHTS_TOML`` if set, else the packaged weights.toml."""
    override = os.environ.get(WEIGHTS_TOML_VARIABLE)
    if override:
        path = Path(os.path.expanduser(override))
        if not path.is_file():
            raise ModelError(f"{WEIGHTS_TOML_VARIABLE}={override}: no such file")
        return path
    for candidate in _WEIGHTS_TOML_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ModelError("weights.toml is missing from the stemsplit installation")


def load_registry(path: Path | None = None) -> Registry:
    """Parse weights.toml (``path``, else ``$STEMSPLIT_WEIGHTS_TOML``, else the packaged one)."""
    path = Path(path) if path is not None else weights_toml_path()
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None
    return _load_registry(path, version)


@functools.lru_cache(maxsize=None)
def _load_registry(path: Path, version: tuple[int, int] | None = None) -> Registry:
    """The parsed registry; ``version`` (mtime, size) keys the cache, so an edited file is
    read again."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelError(f"{path}: unreadable model registry ({error})") from None
    models = {name: _spec_from_table(name, table) for name, table in document["models"].items()}
    default_model = document.get("default_model", next(iter(models)))
    if default_model not in models:
        raise ModelError(f"weights.toml: default model '{default_model}' is not listed")
    return Registry(models=models, default_model=default_model)
