"""From what the user asked for to a runnable model: the one way to get a model.

``resolve`` (torch-free) turns a name, a preset, several names or a ``--weights`` path into a
``Recipe``; ``load`` loads every model of it, each through its family (registry -> the
family fetches its files through the shared cache and builds its networks), and returns the
``Ensemble`` the pipeline runs: one model is an ensemble of one. ``load_model`` loads one
model and returns it as it is (a ``LoadedModel``), for callers that want the networks.

For ``--weights PATH`` the families are asked in turn whether the path is theirs (the named
model's family first, then any that claims the path: see ``family_for_path``). Options
only one family reads (``families.base.OptionSpec``) are refused, here and only here, for a
run whose models none of that family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .cache.http import ProgressCallback
from .cache.locations import OfflinePolicy, expand_path, offline_policy
from .ensemble import Ensemble
from .errors import ModelError, UsageError
from .families import all_families, family_named
from .families.base import Family, LoadedModel
from .precision import FP32, Precision, resolve_precision
from .registry import Registry, load_registry
from .resolve import ModelChoice, Recipe, resolve
from .specs import ModelSpec

__all__ = ["LoadedModel", "Ensemble", "load", "load_model", "family_for_path", "resolve_device",
           "refuse_foreign_options"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) picks cuda, then mps, then cpu; an unavailable device is an error."""
    name = str(device or "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'", hint="use auto, cpu, cuda or mps")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but no CUDA GPU is available")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available")
    return resolved


def family_for_path(path: Path, options: Mapping[str, Any] | None = None,
                    spec: ModelSpec | None = None) -> Family:
    """The family whose files ``path`` (an existing file or folder) holds: the named model's
    (``spec``) if it takes the path, else one that claims it (``Family.claims``: given with
    its options, or its companion file beside it), else the first of the table."""
    families = all_families()
    first = [family_named(spec.family)] if spec is not None else []
    first += [family for family in families if family.claims(path, options or {})]
    for family in [*first, *families]:
        if family.sniff(path):
            return family
    accepted = "; ".join(family.weights_help for family in all_families())
    raise ModelError(f"--weights {path}: not a checkpoint stemsplit can read",
                     hint=f"it takes {accepted}")


def refuse_foreign_options(options: Mapping[str, Any], families: Sequence[Family],
                           label: str) -> None:
    """UsageError for an option of a family none of ``families`` is (the run ``label``'s)."""
    owned = {option.name for family in families for option in family.options}
    for family in all_families():
        for option in family.options:
            if option.name in owned or not option.is_set(options.get(option.name)):
                continue
            if len(families) == 1:
                raise UsageError(f"{option.flag} applies to {family.display} models, not "
                                 f"to {label} ({families[0].display})")
            raise UsageError(f"{option.flag} applies to {family.display} models; the "
                             f"ensemble {label} has none")


def _own_options(options: Mapping[str, Any], family: Family) -> dict[str, Any]:
    own = {option.name for option in family.options}
    return {key: value for key, value in options.items() if key in own}


def _load_local(path_text: str | Path, spec: ModelSpec | None, registry: Registry,
                options: Mapping[str, Any], device: torch.device,
                offline: OfflinePolicy, precision: Precision = FP32) -> LoadedModel:
    path = expand_path(str(path_text))
    if not path.exists():
        raise ModelError(f"--weights {path}: no such file or folder")
    family = family_for_path(path, options, spec)
    if spec is not None and spec.family != family.name:
        raise UsageError(f"--weights {path.name} is a {family.display} checkpoint, but "
                         f"model '{spec.name}' is a {family_named(spec.family).display} model")
    refuse_foreign_options(options, [family], path.name)
    known = [entry for entry in registry.models.values() if entry.family == family.name]
    return _at_precision(family.load_local(path, spec, options, device, offline, known=known),
                         precision)


def _load_named(spec: ModelSpec, options: Mapping[str, Any], device: torch.device,
                offline: OfflinePolicy, progress: ProgressCallback | None,
                precision: Precision = FP32) -> LoadedModel:
    spec.require_supported()
    family = family_named(spec.family)
    fetched = family.fetch(spec, offline=offline, progress=progress,
                           options=_own_options(options, family))
    return _at_precision(family.load(spec, fetched, _own_options(options, family), device),
                         precision)


def _at_precision(model: LoadedModel, precision: Precision) -> LoadedModel:
    model.family.set_precision(model, precision)
    return model


def load_model(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    offline: bool | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    options: Mapping[str, Any] | None = None,
    precision: str | None = "fp32",
) -> LoadedModel:
    """Load one published model by name (default: weights.toml's default) or a local
    checkpoint, and return it as it is, its networks at ``precision`` (``stemsplit.precision``).

    ``weights`` is a local file or folder in any family's format; with a ``name`` too, that
    model's settings apply to it where its family uses them (e.g. for a renamed file).
    Downloads go to the shared caches unless ``offline`` (see ``cache.locations``).
    ``options`` holds the values of the options only one family reads, by name. A preset
    or several names are an ensemble: ``load`` loads those.
    """
    options = dict(options or {})
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    registry = load_registry()
    if weights is not None:
        spec = registry.get(name) if name is not None else None
        return _load_local(weights, spec, registry, options, device, offline_policy(offline),
                           resolved)
    spec = registry.get(name)
    refuse_foreign_options(options, [family_named(spec.family)], spec.name)
    return _load_named(spec, options, device, offline_policy(offline), progress, resolved)


def load(
    model: ModelChoice | Recipe = None,
    *,
    weights: str | Path | None = None,
    ensemble: str | None = None,
    ensemble_weights: Sequence[float] | str | None = None,
    offline: bool | None = None,
    device: torch.device | str | None = "cpu",
    progress: ProgressCallback | None = None,
    options: Mapping[str, Any] | None = None,
    precision: str | None = "fp32",
) -> Ensemble:
    """Load what ``model`` names (a name, a preset, several names, or a ``Recipe``; None:
    the default) or the local checkpoint ``weights``, on ``device`` ("auto" picks one), as
    the ``Ensemble`` the pipeline runs. Each model gets the family options its own family
    reads; an option none of them reads is a UsageError, before anything is fetched.
    ``precision``: what the networks compute in (``stemsplit.precision``), checked against
    the device before anything is fetched."""
    options = dict(options or {})
    registry = load_registry()
    recipe = resolve(model, weights=weights, algorithm=ensemble,
                     ensemble_weights=ensemble_weights, registry=registry)
    device = resolve_device(device)
    resolved = resolve_precision(precision, device)
    policy = offline_policy(offline)
    if recipe.local_weights is not None:
        spec = registry.get(recipe.models[0]) if recipe.models else None
        member = _load_local(recipe.local_weights, spec, registry, options, device, policy,
                             resolved)
        return Ensemble(recipe, [member])
    specs = [registry.get(name) for name in recipe.models]
    families = [family_named(spec.family) for spec in specs]
    refuse_foreign_options(options, families, recipe.name)
    members = [_load_named(spec, options, device, policy, progress, resolved)
               for spec in specs]
    return Ensemble(recipe, members)
