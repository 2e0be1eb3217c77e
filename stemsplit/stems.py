"""Stem names: one spelling per stem, whatever the model's training data called it.

Names are lower case with underscores; what models call "instrumental" (or "inst",
"accompaniment") is ``accompaniment``. The complement of a stem (everything but it) is
``accompaniment`` for vocals, ``vocals`` for the accompaniment, and ``no_<stem>`` otherwise.
"""

from __future__ import annotations

ACCOMPANIMENT_NAMES = ("instrumental", "accompaniment", "inst", "instrum", "instruments")


def stem_name(name: str) -> str:
    """Our spelling of a stem called ``name`` by a model or its config."""
    spelled = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    return "accompaniment" if spelled in ACCOMPANIMENT_NAMES else spelled


def complement_name(stem: str) -> str:
    """The name of 'everything but stem'."""
    if stem == "vocals":
        return "accompaniment"
    if stem == "accompaniment":
        return "vocals"
    return f"no_{stem}"
