"""Shared fixtures. Keep small: helpers live in tests/checkpoints.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.checkpoints import FileServer, closed_port  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches the user's caches or the real Hub: fresh HF_HOME and TORCH_HOME, and
    HF_ENDPOINT on a closed loopback port. Returns the folder holding both caches."""
    base = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    return base


@pytest.fixture
def file_server(tmp_path: Path):
    """A loopback HTTP server for ``tmp_path/served`` (see tests.checkpoints.FileServer)."""
    with FileServer(tmp_path / "served") as server:
        yield server
