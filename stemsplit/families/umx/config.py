"""An Open-Unmix model's settings, from weights.toml or from a model folder's JSON files.

weights.toml (``[models.umxhq]`` ...): ``n_fft`` and ``hop`` (the separator's STFT), and
one file per target whose name is openunmix's: ``<target>-<8 hex>.pth``, the hex digits
being the start of the file's sha256 (torch.hub's ``check_hash`` naming), which ``parse``
records as the file's expected digest (a ``sha256`` given in weights.toml must agree), so
every download and first use of a cached copy is verified. umxse's files are named
``<target>_<8 hex>.pth``: torch.hub's naming rule (``-<hex>.``) does not cover them, so
nobody has checked that their digits are a sha256 prefix, and stemsplit could not download
them to check (no access to their host here). Such a name's digits are used only where
weights.toml gives the same ``sha256``; otherwise the file's digest is computed at its first
download and remembered, as for any file without a published digest.
The files are kept where ``torch.hub`` keeps them (``$TORCH_HOME/hub/checkpoints``), so
copies openunmix itself downloaded are found and verified, not fetched again.

A model folder, as ``openunmix.utils.load_separator`` reads one: ``separator.json``
(``sample_rate``, ``nfft``, ``nhop``; ``nb_channels``) and per target ``<target>.json``
beside ``<target>*.pth``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ...errors import ModelError
from ...stems import stem_name

if TYPE_CHECKING:  # pragma: no cover
    from ...specs import ModelFile

FILE_NAME = re.compile(r"(?P<target>[A-Za-z0-9]+)(?P<separator>[-_])(?P<digest>[0-9a-f]{8,64})"
                       r"\.pth")
"""openunmix's published names: ``vocals-b62c91ce.pth``, ``speech_f5e0d9f9.pth``."""
KEYS = {"n_fft": int, "hop": int}
SEPARATOR_JSON = "separator.json"
TARGET_ORDER = ("vocals", "drums", "bass", "other", "speech", "noise")
"""The order a folder's targets are taken in (others follow, sorted)."""


@dataclass(frozen=True)
class UmxConfig:
    """The separator's STFT: ``n_fft`` bins over 2, hop ``hop``."""

    n_fft: int
    hop: int

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.n_fft % 2 or not 0 < self.hop <= self.n_fft:
            raise ModelError(f"an Open-Unmix STFT of n_fft {self.n_fft}, hop {self.hop} is "
                             "not valid")


def parse_entry(name: str, table: Mapping[str, Any],
                url_files: tuple["ModelFile", ...]) -> tuple[UmxConfig, tuple["ModelFile", ...]]:
    """weights.toml's keys of model ``name`` and its files, each named
    ``<target>[-_]<sha256 prefix>.pth`` (one per target; the loader checks them against the
    stems), each recording its prefix and its target (``member``), kept in the torch hub
    cache."""
    where = f"weights.toml: model '{name}'"
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ModelError(f"{where}: unknown key '{unknown[0]}' for an Open-Unmix model",
                         hint=f"it has {', '.join(KEYS)} and files")
    for key, kind in KEYS.items():
        if not isinstance(table.get(key), kind) or isinstance(table.get(key), bool):
            raise ModelError(f"{where}: an Open-Unmix model needs {key} (an integer)")
    config = UmxConfig(table["n_fft"], table["hop"])
    by_target = {}
    for file in url_files:
        match = FILE_NAME.fullmatch(file.filename)
        if file.source != "url" or match is None:
            raise ModelError(f"{where}: {file.filename} is not named as openunmix names its "
                             "files (<target>-<sha256 prefix>.pth)")
        digest = match.group("digest")
        if file.sha256 is not None and not (file.sha256.startswith(digest)
                                            or digest.startswith(file.sha256)):
            raise ModelError(f"{where}: {file.filename}: its sha256 {file.sha256} does not "
                             "start with the prefix in its name")
        target = stem_name(match.group("target"))
        if target in by_target:
            raise ModelError(f"{where}: two files for the target {target}")
        if file.sha256 is None and match.group("separator") == "-":
            file = replace(file, sha256=digest,
                           sha256_from="its file name (torch.hub's <name>-<sha256 prefix>)")
        by_target[target] = replace(file, member=target, folder="torch_hub")
    if not by_target:
        raise ModelError(f"{where}: an Open-Unmix model needs its files, one "
                         "<target>-<sha256 prefix>.pth per target")
    return config, tuple(by_target.values())


# -- a model folder -------------------------------------------------------------------
@dataclass(frozen=True)
class UmxFolder:
    """What a model folder holds: its STFT and sample rate, and each target's weights."""

    config: UmxConfig
    sample_rate: int
    targets: dict[str, Path]
    """stem -> its .pth, in output order."""


def folder_targets(folder: Path) -> dict[str, Path]:
    """Each ``<target>.json`` of ``folder`` with a ``<target>*.pth`` beside it: stem -> the
    .pth (the first in name order, as openunmix's glob would usually give), in
    ``TARGET_ORDER``."""
    found: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return {}
    for path in entries:
        if path.suffix != ".json" or path.name == SEPARATOR_JSON:
            continue
        weights = [p for p in entries if p.suffix == ".pth" and p.name.startswith(path.stem)
                   and _names_target(p.name, path.stem)]
        if weights:
            found[stem_name(path.stem)] = weights[0]
    known = [stem for stem in TARGET_ORDER if stem in found]
    return {stem: found[stem] for stem in known + sorted(set(found) - set(known))}


def _names_target(filename: str, target: str) -> bool:
    """``vocals.pth``, ``vocals-<hex>.pth``, ``vocals_<hex>.pth``: not ``vocals2.pth``."""
    rest = filename[len(target):-len(".pth")]
    return rest == "" or rest[0] in "-_"


def is_model_folder(folder: Path) -> bool:
    """A folder with ``separator.json`` and at least one target's JSON and weights."""
    return (folder / SEPARATOR_JSON).is_file() and bool(folder_targets(folder))


def read_folder(folder: Path) -> UmxFolder:
    """The separator settings and targets of an Open-Unmix model folder (ModelError names
    what is missing or malformed)."""
    path = folder / SEPARATOR_JSON
    if not path.is_file():
        raise ModelError(f"--weights {folder}: no {SEPARATOR_JSON} (openunmix's separator "
                         "settings: sample_rate, nfft, nhop, nb_channels)")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable ({error})") from None
    if not isinstance(settings, dict):
        raise ModelError(f"{path}: not a JSON object")
    values = {}
    for key in ("sample_rate", "nfft", "nhop"):
        value = settings.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelError(f"{path}: {key} must be a positive whole number, not {value!r}")
        values[key] = value
    targets = folder_targets(folder)
    if not targets:
        raise ModelError(f"--weights {folder}: no target (a <target>.json beside a "
                         "<target>*.pth)")
    return UmxFolder(UmxConfig(values["nfft"], values["nhop"]), values["sample_rate"], targets)
