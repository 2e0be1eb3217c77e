"""The model families, and the one table that names them.

A family is one plug-in: an adapter module here (a ``Family`` subclass, see ``base``) and
its network code under ``stemsplit/models``. Everything else reaches a family only through
this table and that interface, so adding a family means adding a line here.

Importing an adapter is cheap (standard library only; torch and the networks are imported
when a model is loaded), because the registry, ``--help`` and shell completion use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .base import Family

FAMILIES: dict[str, str] = {
    "demucs": "stemsplit.families.demucs",
    "mdx": "stemsplit.families.mdx",
    "msst": "stemsplit.families.msst",
    "spleeter": "stemsplit.families.spleeter",
    "umx": "stemsplit.families.umx",
    "vr": "stemsplit.families.vr",
}
"""weights.toml's ``family`` -> the module whose ``FAMILY`` is its adapter. The order is
the order in which a ``--weights`` path is offered to them."""

_loaded: dict[str, "Family"] = {}


def family_named(name: str) -> "Family | None":
    """The adapter of family ``name``, None for a name the table does not hold."""
    if name not in FAMILIES:
        return None
    if name not in _loaded:
        _loaded[name] = importlib.import_module(FAMILIES[name]).FAMILY
    return _loaded[name]


def all_families() -> list["Family"]:
    return [family_named(name) for name in FAMILIES]  # type: ignore[misc]
