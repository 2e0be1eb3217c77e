"""The model registry: weights.toml read into frozen ``ModelSpec`` records.

Only the standard library is imported here, so ``--help``, ``stemsplit models`` and
shell completion stay fast (no torch).
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, UnknownModelError

_PACKAGE_DIR = Path(__file__).resolve().parent
# Inside a wheel the file ships as stemsplit/weights.toml; in a source checkout it sits
# at the repository root.
_WEIGHTS_TOML_CANDIDATES = (_PACKAGE_DIR / "weights.toml", _PACKAGE_DIR.parent / "weights.toml")


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
        )
    except KeyError as missing:
        raise ModelError(f"weights.toml: model '{name}' lacks the field {missing}") from None


def weights_toml_path() -> Path:
    for candidate in _WEIGHTS_TOML_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ModelError("weights.toml is missing from the stemsplit installation")


@functools.lru_cache(maxsize=None)
def load_registry(path: Path | None = None) -> Registry:
    """Parse weights.toml (the packaged one unless ``path`` is given)."""
    path = path or weights_toml_path()
    with open(path, "rb") as file:
        document = tomllib.load(file)
    models = {name: _spec_from_table(name, table) for name, table in document["models"].items()}
    default_model = document.get("default_model", next(iter(models)))
    if default_model not in models:
        raise ModelError(f"weights.toml: default model '{default_model}' is not listed")
    return Registry(models=models, default_model=default_model)
