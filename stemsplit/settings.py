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

TRUE_VALUES = frozenset({"1", "on", "yes", "true"})
FALSE_VALUES = frozenset({"0", "off", "no", "false"})


def _text(variable: str) -> str:
    return os.environ.get(variable, "").strip()


def is_true(variable: str) -> bool:
    """Whether ``variable`` is set to 1/true/yes/on, in any letter case (the rule for every
    on/off variable stemsplit reads, huggingface_hub's ``HF_HUB_OFFLINE`` included)."""
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


def connect_timeout(default: float) -> float:
    """``STEMSPLIT_CONNECT_TIMEOUT``: seconds to open a connection (for a slow link or
    proxy), else ``default``. ValueError (holding the text) when it is set to something
    that is not a positive number."""
    text = _text("STEMSPLIT_CONNECT_TIMEOUT")
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(text) from None
    if not 0 < seconds < float("inf"):
        raise ValueError(text)
    return seconds


def allow_tf32() -> bool:
    """``STEMSPLIT_ALLOW_TF32`` is true: CUDA's fp32 may use TF32 tensor cores (fp32 is
    true fp32 otherwise)."""
    return is_true("STEMSPLIT_ALLOW_TF32")
