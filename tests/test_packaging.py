"""The built wheel carries weights.toml and the console script; the registry finds it; the
metadata says what is true (its name, the Python it runs on, what it needs)."""

from __future__ import annotations

import ast
import re
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
    wheel = next(tmp_path.glob("stemsplit_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "stemsplit/weights.toml" in names
    assert "stemsplit/models/htdemucs.py" in names
    assert not any(name.startswith("tests/") for name in names)
    packaged = zipfile.ZipFile(wheel).read("stemsplit/weights.toml")
    assert packaged == (ROOT / "weights.toml").read_bytes()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert ("stemsplit = stemsplit.__main__:main"
            in zipfile.ZipFile(wheel).read(entry_points).decode())
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    # PyPI's "stemsplit" is another project: the distribution is stemsplit-cli, the command
    # and the import stay stemsplit.
    assert "Name: stemsplit-cli" in headers and "Requires-Python: >=3.10" in headers
    requires = [line.split(":", 1)[1].strip() for line in headers
                if line.startswith("Requires-Dist:")]
    assert not any(r.startswith("ffmpeg-python") for r in requires)  # argv lists, in stemsplit/audio/
    assert any(re.fullmatch(r"tomli>=[\d.]+; python_version < ['\"]3\.11['\"]", r)
               for r in requires), requires


def test_the_sources_run_on_the_oldest_python_declared():
    """requires-python >=3.10: no syntax and no standard-library name from 3.11 on (tomllib
    only behind a version check, with tomli below it)."""
    newer = re.compile(r"\btyping\.Self\b|from typing import[^\n]*\bSelf\b|\bStrEnum\b|"
                       r"datetime\.UTC\b|\bExceptionGroup\b|\bTaskGroup\b|\.add_note\(|"
                       r"\bfile_digest\(|\bitertools\.batched\b|\bcontextlib\.chdir\b")
    offenders = []
    for path in sorted((ROOT / "stemsplit").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, feature_version=(3, 10))  # a SyntaxError for newer syntax
        offenders += [f"{path.name}: {m.group()}" for m in newer.finditer(text)]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                if "tomllib" in names and "sys.version_info >= (3, 11)" not in text:
                    offenders.append(f"{path.name}: tomllib without a fallback")
    assert not offenders, offenders
