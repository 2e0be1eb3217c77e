"""The golden fixtures made with ZFTurbo's own code (tests/data/zfturbo_golden/, made by
tests/zfturbo_golden/), and running stemsplit's CLI on them.

A fixture that is missing fails its test (never skips): the data is committed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tests.parity import assert_close_to_peak

DATA = Path(__file__).resolve().parent / "data" / "zfturbo_golden"
PUBLISHED = Path(__file__).resolve().parent / "data" / "msst"
"""Published configs, copied as they are (ZFTurbo's as ``zfturbo_<name>.yaml``)."""
CONFIG = "config.yaml"
MIXTURE = "mixture.wav"
EXPECTED = "expected.npz"


@dataclass(frozen=True)
class Golden:
    """One fixture: its files, and ZFTurbo's stems for its mixture."""

    folder: Path
    checkpoint: Path
    names: tuple[str, ...]
    stems: np.ndarray
    """(stems, channels, time) float32, in ``names`` order."""
    meta: dict

    @property
    def config(self) -> Path:
        return self.folder / CONFIG

    @property
    def mixture_path(self) -> Path:
        return self.folder / MIXTURE

    def stem(self, name: str) -> np.ndarray:
        return self.stems[self.names.index(name)]

    def copy_model(self, folder: Path) -> Path:
        """The checkpoint and config copied into ``folder`` (the config named as the
        checkpoint, so ``--weights`` finds it beside it); the checkpoint's new path."""
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = folder / self.checkpoint.name
        shutil.copyfile(self.checkpoint, checkpoint)
        shutil.copyfile(self.config, folder / (self.checkpoint.stem + ".yaml"))
        return checkpoint


def load_golden(name: str) -> Golden:
    folder = DATA / name
    assert (folder / EXPECTED).is_file(), (
        f"golden fixture {name} is missing ({folder}); make it with "
        "python -m tests.zfturbo_golden.make --repo ZFTURBO_CHECKOUT " + name)
    with np.load(folder / EXPECTED) as data:
        names = tuple(str(n) for n in data["names"])
        stems = data["stems"].astype(np.float32)
        meta = json.loads(str(data["meta"]))
    others = [p for p in folder.iterdir() if p.name not in (CONFIG, MIXTURE, EXPECTED)]
    assert len(others) == 1, f"{folder}: expected one checkpoint beside the config, {others}"
    return Golden(folder=folder, checkpoint=others[0], names=names, stems=stems, meta=meta)


def run_stemsplit(*args: str, cwd: Path, timeout: float = 900,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m stemsplit ARGS`` in ``cwd``, offline unless ``env`` says otherwise."""
    return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "STEMSPLIT_OFFLINE": "1", **(env or {})})


def separate_with_cli(golden: Golden, tmp_path: Path, *extra: str,
                      mixture: Path | None = None) -> dict[str, np.ndarray]:
    """``stemsplit MIXTURE --weights CKPT --config config.yaml --float32 --clip-mode none``
    (plus ``extra``) on the fixture; the stems written, (channels, time) float32 by name."""
    out = tmp_path / "out"
    result = run_stemsplit(str(mixture or golden.mixture_path), "--weights",
                           str(golden.checkpoint), "--config", str(golden.config), "--float32",
                           "--clip-mode", "none", "-o", str(out), "--json", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["tracks"][0]["outputs"]
    stems = {}
    for name, path in outputs.items():
        data, _ = sf.read(tmp_path / path if not Path(path).is_absolute() else path,
                          dtype="float32", always_2d=True)
        stems[name] = data.T.copy()
    return stems


def assert_matches_golden(golden: Golden, stems: dict[str, np.ndarray],
                          rel: float = 1e-5) -> list[float]:
    """Every stem of the fixture, within ``rel`` of its peak; the differences, in order."""
    assert set(stems) >= set(golden.names), (sorted(stems), golden.names)
    return [assert_close_to_peak(torch.from_numpy(golden.stem(name)),
                                 torch.from_numpy(stems[name]), rel=rel)
            for name in golden.names]


def one_line_error(result) -> str:
    """The error a refused run printed: exactly one ``error:`` line (and an optional hint)."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
