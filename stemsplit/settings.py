"""The ``STEMSPLIT_*`` environment variables: every one is read here, and only when asked.

Nothing reads the environment at import time, so a variable set after ``import stemsplit``
(by a test, a notebook, a wrapper script) still counts, and the help text of a command
does not freeze a value. Precedence everywhere: a flag or argument > the variable here >
weights.toml's default.

Standard library only: every layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Every variable stemsplit reads, and what it does (for ``--help`` texts and the README).
VARIABLES: dict[str, str] = {
    "STEMSPLIT_MODEL": "the model (or preset) used when none is named",
    "STEMSPLIT_DEVICE": "the device when --device is not given (auto, cpu, cuda, mps)",
    "STEMSPLIT_OFFLINE": "never use the network (1/true/yes/on)",
    "STEMSPLIT_CACHE": "the cache folder (default $XDG_CACHE_HOME/stemsplit)",
    "STEMSPLIT_WEIGHTS_TOML": "a weights.toml replacing the packaged one",
    "STEMSPLIT_FFMPEG": "the ffmpeg to run: a path, or 'bundled' for imageio-ffmpeg's",
    "STEMSPLIT_DEBUG": "tracebacks on errors (as --debug)",
    "STEMSPLIT_MALLOC_TUNING": "0 leaves glibc's malloc settings alone",
    "STEMSPLIT_CPU_KERNELS": "0 turns off stemsplit's own CPU kernels",
}

TRUE_VALUES = frozenset({"1", "on", "yes", "true"})
FALSE_VALUES = frozenset({"0", "off", "no", "false"})


def _text(variable: str) -> str:
    return os.environ.get(variable, "").strip()


def is_true(variable: str) -> bool:
    """Whether ``variable`` is set to 1/true/yes/on, in any letter case."""
    return _text(variable).lower() in TRUE_VALUES


def model() -> str | None:
    """``STEMSPLIT_MODEL``: a model or preset name (None when unset or empty)."""
    return _text("STEMSPLIT_MODEL") or None


def device(default: str = "auto") -> str:
    """``STEMSPLIT_DEVICE``, else ``default``."""
    return _text("STEMSPLIT_DEVICE") or default


def offline() -> bool:
    """``STEMSPLIT_OFFLINE`` is true."""
    return is_true("STEMSPLIT_OFFLINE")


def cache_dir() -> Path | None:
    """``STEMSPLIT_CACHE`` (user and variables expanded), or None."""
    value = _text("STEMSPLIT_CACHE")
    return Path(os.path.expandvars(os.path.expanduser(value))) if value else None


def weights_toml() -> str | None:
    """``STEMSPLIT_WEIGHTS_TOML`` as given, or None."""
    return _text("STEMSPLIT_WEIGHTS_TOML") or None


def ffmpeg() -> str:
    """``STEMSPLIT_FFMPEG``: a path, ``bundled``, or "" (PATH's ffmpeg, else the bundled one)."""
    return _text("STEMSPLIT_FFMPEG")


def debug() -> bool:
    """``STEMSPLIT_DEBUG`` set to anything but "" or "0"."""
    return _text("STEMSPLIT_DEBUG") not in ("", "0")


def malloc_tuning() -> bool:
    """False when ``STEMSPLIT_MALLOC_TUNING=0``."""
    return _text("STEMSPLIT_MALLOC_TUNING") != "0"


def cpu_kernels() -> bool:
    """False when ``STEMSPLIT_CPU_KERNELS`` is 0/false/no/off."""
    return _text("STEMSPLIT_CPU_KERNELS").lower() not in FALSE_VALUES
