"""Shared fixtures. Keep small: helpers live in tests/checkpoints.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One compute thread per process: the suite runs many tiny networks, for which thread
# hand-offs cost more than they gain (and CLI subprocesses inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def tiny_hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding tiny random-weight htdemucs and htdemucs_6s bags under
    their published names, for tests of everything around the networks."""
    from tests.checkpoints import HTDEMUCS, SMALL_HTDEMUCS_KWARGS, SOURCES_6, write_hf_bag

    home = tmp_path_factory.mktemp("hf-tiny")
    tiny = {**SMALL_HTDEMUCS_KWARGS, "t_layers": 1}
    write_hf_bag(home, "htdemucs", "adefossez/HTDemucs", [(HTDEMUCS, [], tiny, 1, "955717e8")])
    write_hf_bag(home, "htdemucs_6s", "adefossez/HTDemucs-6s",
                 [(HTDEMUCS, [], {**tiny, "sources": SOURCES_6}, 2, "5c90dfd2")])
    return home


@pytest.fixture
def run_cli(tiny_hf_home: Path, tmp_path: Path):
    """Run ``python -m stemsplit ARGS`` offline against the tiny cache, in tmp_path."""
    import os
    import subprocess

    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"}

    def runner(*args: str, stdin: bytes | None = None, timeout: float = 300,
               **popen) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=tmp_path,
                              env={**env, **popen.pop("env", {})}, capture_output=True,
                              input=stdin, timeout=timeout, **popen)
    return runner
