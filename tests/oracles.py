"""Test oracles (reference implementations installed for the tests only).

``require("demucs.htdemucs")`` imports and returns an oracle module. Where it is missing the
test is skipped on a developer's machine, but fails under CI (``CI`` set to anything but
"", "0" or "false"): a parity test must never pass by not running.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

INSTALL_HINTS = {
    "audio_separator": 'pip install --no-deps "audio-separator==0.47.1" (see README, Install)',
    "diffq": 'pip install "diffq==0.2.4" (an sdist: it builds its Cython extension)',
}


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> None:
    """Skip the test (fail it under CI): its oracle is missing."""
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(module: str) -> ModuleType:
    """The oracle ``module``; skip (fail under CI) when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except Exception as error:  # ImportError, or an oracle whose own imports fail
        top = module.split(".", 1)[0]
        hint = INSTALL_HINTS.get(top, f"pip install the test extra: {top}")
        unavailable(f"test oracle {module} is unavailable ({type(error).__name__}: {error}); {hint}")
