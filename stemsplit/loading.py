"""From a model name (or a local checkpoint) to a ``LoadedModel``: a short dispatcher.

registry (what the model is, and its family) -> the family fetches its files through the
shared cache and builds its networks. For ``--weights PATH`` the families are asked in
turn whether the path is theirs. Options only one family reads (``families.base.
OptionSpec``) are refused for a model of another family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .cache.http import ProgressCallback
from .cache.locations import expand_path, offline_policy
from .errors import ModelError, UsageError
from .families import all_families, family_named
from .families.base import Family, LoadedModel
from .registry import load_registry

__all__ = ["LoadedModel", "load_model", "family_for_path"]


def family_for_path(path: Path) -> Family:
    """The family whose files ``path`` (an existing file or folder) holds."""
    for family in all_families():
        if family.sniff(path):
            return family
    accepted = "; ".join(family.weights_help for family in all_families())
    raise ModelError(f"--weights {path}: not a checkpoint stemsplit can read",
                     hint=f"it takes {accepted}")


def load_model(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    offline: bool | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    options: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a published model by name (default: weights.toml's default) or a local checkpoint.

    ``weights`` is a local file or folder in any family's format; with a ``name`` too, that
    model's settings apply to it where its family uses them (e.g. for a renamed file).
    Downloads go to the shared caches unless ``offline`` (see ``cache.locations``).
    ``options`` holds the values of the options only one family reads, by name.
    """
    options = dict(options or {})
    device = torch.device(device)
    registry = load_registry()
    if weights is not None:
        path = expand_path(str(weights))
        if not path.exists():
            raise ModelError(f"--weights {path}: no such file or folder")
        family = family_for_path(path)
        spec = registry.get(name) if name is not None else None
        if spec is not None and spec.family != family.name:
            raise UsageError(f"--weights {path.name} is a {family.display} checkpoint, but "
                             f"model '{spec.name}' is a {family_named(spec.family).display} model")
        family.check_options(options, path.name)
        return family.load_local(path, spec, options, device, offline_policy(offline))
    spec = registry.get(name)
    if spec.unsupported:
        raise ModelError(f"model '{spec.name}': {spec.unsupported}")
    family = family_named(spec.family)
    family.check_options(options, spec.name)
    fetched = family.fetch(spec, offline=offline_policy(offline), progress=progress,
                           options=options)
    return family.load(spec, fetched, options, device)
