"""The built wheel carries weights.toml and the console script; the registry finds it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_weights_toml_and_entry_point(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    if built.returncode != 0 and "hatchling" in built.stderr:
        built = subprocess.run(  # no hatchling installed here: let pip fetch it
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
             str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("stemsplit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "stemsplit/weights.toml" in names
    assert "stemsplit/models/htdemucs.py" in names
    assert not any(name.startswith("tests/") for name in names)
    packaged = zipfile.ZipFile(wheel).read("stemsplit/weights.toml")
    assert packaged == (ROOT / "weights.toml").read_bytes()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "stemsplit = stemsplit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
