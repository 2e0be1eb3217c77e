"""What the user asked to run, resolved against the registry before anything is loaded.

A model name (or alias), a preset, several names (an ensemble), or a local checkpoint
(``--weights``, with or without a model name) all become one ``Recipe``: its models, their
weights and the ensemble algorithm, and the name its outputs are filed under. A single model
is a recipe of one. ``loading.load`` turns a recipe into the runnable ``Ensemble``; the
command line, the Python API and ``eval`` all go through ``resolve``, so a preset or a list of
names works wherever a model name does.

Everything a user can get wrong here (an unknown name, a preset given with other names, a
weight count that does not match, models of different sample rates) is a one-line error
before any download or torch import: standard library only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from . import settings
from .errors import UsageError
from .registry import Registry, load_registry
from .specs import DEFAULT_ENSEMBLE_ALGORITHM, ENSEMBLE_ALGORITHMS, WEIGHTED_ENSEMBLE_ALGORITHMS

MAX_NAME_LENGTH = 80
"""Longer ensemble names are cut and end in 8 hex digits of the full name's sha1."""

ModelChoice = Union[str, Sequence[str], None]
"""A model name, alias or preset; several names (an ensemble); or None (the default:
``$STEMSPLIT_MODEL``, else weights.toml's default model)."""


@dataclass(frozen=True)
class Recipe:
    """One model or an ensemble, before loading."""

    name: str
    """The output folder name (``{model}``); for a local checkpoint without a model name
    it is the file's, known once loaded (here: "")."""
    models: tuple[str, ...]
    """Registry names, in order (empty for a local checkpoint without a model name)."""
    weights: tuple[float, ...]
    algorithm: str
    preset: str | None = None
    local_weights: Path | None = None
    """``--weights``: the single model's checkpoint, read from this file or folder."""

    def member_sources(self, registry: Registry) -> list[tuple[str, ...]] | None:
        """Each model's stems from the registry, or None when a model names its stems
        only once loaded (a local checkpoint)."""
        if self.local_weights is not None:
            return None
        return [registry.get(model).stems for model in self.models]


def parse_weights(text: str) -> tuple[float, ...]:
    """``--ensemble-weights 2,1,1``: positive finite numbers."""
    try:
        weights = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"--ensemble-weights {text}: not a list of numbers",
                         hint="e.g. --ensemble-weights 2,1,1, one per model") from None
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise UsageError(f"--ensemble-weights {text}: weights must be positive numbers")
    return weights


def _format_weights(weights: Sequence[float]) -> str:
    return "-".join(f"{w:g}" for w in weights)


def ensemble_name(base: str, algorithm: str, weights: Sequence[float],
                  default_algorithm: str = DEFAULT_ENSEMBLE_ALGORITHM,
                  default_weights: Sequence[float] | None = None) -> str:
    """``base`` (the models joined with "+", or the preset's name), then ``.ALGORITHM``
    and ``.wW1-W2...`` where they differ from the defaults, so that two different
    ensembles of the same models never share an output folder; cut to MAX_NAME_LENGTH."""
    name = base
    if algorithm != default_algorithm:
        name += f".{algorithm}"
    if algorithm in WEIGHTED_ENSEMBLE_ALGORITHMS:
        default = tuple(default_weights or (1.0,) * len(weights))
        if _normalised(weights) != _normalised(default):
            name += f".w{_format_weights(weights)}"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name[: MAX_NAME_LENGTH - 9].rstrip("+.-_") + "-" + digest
    return name


def _normalised(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(round(w / total, 12) for w in weights)


def resolve_ensemble(names: Sequence[str], registry: Registry, *,
                     algorithm: str | None = None,
                     weights: Sequence[float] | None = None) -> Recipe | None:
    """The ensemble ``-n`` names ask for (several models, or one preset), or None for a
    single model. UsageError for what cannot be combined."""
    presets = [registry.preset(name) for name in names]
    preset = next((p for p in presets if p is not None), None)
    if preset is not None and len(names) > 1:
        raise UsageError(f"preset {preset.name} is an ensemble of its own; give it alone",
                         hint=f"or list its models: -n {' -n '.join(preset.models)}")
    if preset is None and len(names) < 2:
        if algorithm is not None or weights is not None:
            raise UsageError("--ensemble and --ensemble-weights combine several models",
                             hint="repeat -n (-n A -n B), or name a preset "
                             "(`stemsplit models` lists them)")
        return None
    if preset is not None:
        models = preset.models
        default_algorithm = preset.algorithm
        default_weights = preset.weights or (1.0,) * len(models)
        base = preset.name
    else:
        models = tuple(registry.get(name).name for name in names)
        seen = set()
        for model in models:
            if model in seen:
                raise UsageError(f"model {model} is named twice in the ensemble")
            seen.add(model)
        default_algorithm = DEFAULT_ENSEMBLE_ALGORITHM
        default_weights = (1.0,) * len(models)
        base = "+".join(models)
    chosen = algorithm or default_algorithm
    if chosen not in ENSEMBLE_ALGORITHMS:
        raise UsageError(f"unknown ensemble algorithm '{chosen}'",
                         hint=f"choose {', '.join(ENSEMBLE_ALGORITHMS)}")
    if weights is not None:
        if chosen not in WEIGHTED_ENSEMBLE_ALGORITHMS:
            weighted = " and ".join(WEIGHTED_ENSEMBLE_ALGORITHMS)
            raise UsageError(f"--ensemble-weights applies to {weighted}",
                             hint=f"{chosen} picks a value or takes a median; it has no weights")
        if len(weights) != len(models):
            raise UsageError(f"--ensemble-weights: {len(weights)} weights for {len(models)} "
                             "models", hint="give one weight per model, in the order of -n")
        used = tuple(float(w) for w in weights)
    else:
        used = tuple(float(w) for w in default_weights)
    rates = {registry.get(model).sample_rate for model in models}
    if len(rates) > 1:
        listing = ", ".join(f"{m} {registry.get(m).sample_rate} Hz" for m in models)
        raise UsageError(f"the models of an ensemble must run at one sample rate ({listing})")
    for model in models:
        spec = registry.get(model)
        spec.require_supported()
        if not spec.joins_ensembles:
            raise UsageError(f"{spec.name} is not a separation model (its output is not "
                             "stems to combine); it cannot join an ensemble",
                             hint=f"run it on its own: -n {spec.name}")
    name = ensemble_name(base, chosen, used, default_algorithm, default_weights)
    return Recipe(name=name, models=tuple(models), weights=used, algorithm=chosen,
                  preset=preset.name if preset is not None else None)


def resolve(model: "ModelChoice | Recipe" = None, *, weights: str | Path | None = None,
            algorithm: str | None = None, ensemble_weights: Sequence[float] | str | None = None,
            registry: Registry | None = None) -> Recipe:
    """The recipe for ``model`` (see ``ModelChoice``), ``weights`` (a local checkpoint),
    ``algorithm`` (``--ensemble``) and ``ensemble_weights`` (``--ensemble-weights``: numbers,
    or the text "2,1")."""
    if isinstance(model, Recipe):
        return model
    registry = registry or load_registry()
    if isinstance(model, str):
        names = [model]
    elif model is None:
        chosen = settings.model()
        names = [chosen] if chosen else []
    else:
        names = list(model)
        if not all(isinstance(name, str) for name in names):
            raise UsageError("model: a name, a list of names, or None")
    if isinstance(ensemble_weights, str):
        ensemble_weights = parse_weights(ensemble_weights)
    if weights is not None:
        if len(names) > 1 or any(registry.preset(name) for name in names):
            raise UsageError("--weights runs one local checkpoint; it does not join an ensemble")
        if algorithm is not None or ensemble_weights is not None:
            raise UsageError("--ensemble and --ensemble-weights combine several models",
                             hint="--weights runs one local checkpoint")
        spec = registry.get(names[0]) if names else None
        return Recipe(name=spec.name if spec is not None else "",
                      models=(spec.name,) if spec is not None else (), weights=(1.0,),
                      algorithm=DEFAULT_ENSEMBLE_ALGORITHM, local_weights=Path(weights))
    ensemble = resolve_ensemble(names, registry, algorithm=algorithm, weights=ensemble_weights)
    if ensemble is not None:
        return ensemble
    spec = registry.get(names[0] if names else None)
    spec.require_supported()
    return Recipe(name=spec.name, models=(spec.name,), weights=(1.0,),
                  algorithm=DEFAULT_ENSEMBLE_ALGORITHM)


def choose_by_stem_count(names: Sequence[str], stems: int | None, two_stems: str | None,
                         registry: Registry | None = None) -> tuple[list[str], str | None]:
    """``--stems N`` with the names given (maybe none): the names to resolve and the
    ``--two-stems`` to use. ``--stems 2`` is ``--two-stems vocals``; another N picks
    weights.toml's model for N stems when no model is named, and must match the stems of
    the one named (or of the ensemble's models together)."""
    chosen = list(names) or ([settings.model()] if settings.model() else [])
    if stems is None:
        return chosen, two_stems
    registry = registry or load_registry()
    counts = sorted({2, *registry.stems_models})
    if stems not in counts:
        listed = ", ".join(map(str, counts[:-1]))
        raise UsageError(f"--stems {stems}: choose {listed} or {counts[-1]}")
    if stems == 2:
        if two_stems and two_stems != "vocals":
            raise UsageError("--stems 2 means --two-stems vocals; give only one of them")
        return chosen, "vocals"
    if two_stems:
        raise UsageError(f"--stems {stems} and --two-stems contradict each other")
    if not chosen:
        return [registry.stems_models[stems]], None
    members = [member for label in chosen for member in
               (registry.preset(label).models if registry.preset(label) else [label])]
    if len(members) > 1:  # an ensemble gives every stem one of its models gives
        given = list(dict.fromkeys(s for member in members for s in registry.get(member).stems))
        if len(given) != stems:
            raise UsageError(f"the ensemble gives {len(given)} stems ({', '.join(given)}), "
                             f"not {stems}", hint="drop --stems")
        return chosen, None
    spec = registry.get(chosen[0])
    if len(spec.stems) != stems:
        raise UsageError(f"model {spec.name} gives {len(spec.stems)} stems, not {stems}",
                         hint=f"drop --stems, or use --model {registry.stems_models[stems]}")
    return chosen, None
