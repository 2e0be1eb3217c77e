"""Spleeter test helpers: the TensorFlow oracle, checkpoints, test signals.

The oracle is Deezer's spleeter 2.4.2 on TensorFlow 2.12.1 in a virtual environment of its
own (TensorFlow 2.12 needs numpy < 2), built by ``tests/spleeter_oracle/setup.sh``, which
also unpacks Deezer's real 2stems checkpoint into it. Its python runs
``tests/spleeter_oracle/run.py`` as a subprocess; everything crosses as .npy files.

* ``oracle_python()`` / ``require_oracle()``: ``$STEMSPLIT_SPLEETER_ORACLE`` or
  ``<repo>/.venv-spleeter-oracle/bin/python``; missing: skipped, or failed under CI.
* ``real_2stems_folder()``: Deezer's 2stems folder inside the oracle venv.
* ``run_oracle(jobs)``: run.py's jobs (see its docstring) in one process.
* ``random_checkpoint_job(...)``: where a seeded random-weight checkpoint of a config lives
  in a cache folder, and the job that makes it if it is not there yet.
* ``test_signal(seconds, seed)``: deterministic stereo 44.1 kHz speech- and music-like audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.oracles import unavailable

ROOT = Path(__file__).resolve().parent.parent
ORACLE_SCRIPT = ROOT / "tests" / "spleeter_oracle" / "run.py"
SETUP_SCRIPT = ROOT / "tests" / "spleeter_oracle" / "setup.sh"
DEFAULT_VENV = ROOT / ".venv-spleeter-oracle"
SAMPLE_RATE = 44100

INSTRUMENTS = {
    "2stems": ("vocals", "accompaniment"),
    "4stems": ("vocals", "drums", "bass", "other"),
    "5stems": ("vocals", "piano", "drums", "bass", "other"),
}
"""spleeter's configs' ``instrument_list`` (spleeter/resources/<name>.json)."""

ACTIVATIONS = {"2stems": ("LeakyReLU", "ReLU"), "4stems": ("ELU", "ELU"), "5stems": ("ELU", "ELU")}
MODEL_TYPES = {"2stems": "unet.unet", "4stems": "unet.unet", "5stems": "unet.softmax_unet"}


def oracle_python() -> Path | None:
    """The oracle venv's python, or None where it is not there."""
    named = os.environ.get("STEMSPLIT_SPLEETER_ORACLE")
    python = Path(named) if named else DEFAULT_VENV / "bin" / "python"
    return python if python.is_file() and os.access(python, os.X_OK) else None


def _venv(python: Path) -> Path:
    return python.parent.parent


def require_oracle() -> Path:
    """The oracle's python; skip the test (fail it under CI) where it is missing."""
    python = oracle_python()
    if python is None or not (real_2stems_folder(python) / "model.index").is_file():
        unavailable("the Spleeter oracle (spleeter 2.4.2 on TensorFlow, with Deezer's 2stems "
                    f"checkpoint) is not set up; run {SETUP_SCRIPT.relative_to(ROOT)} "
                    "(or set STEMSPLIT_SPLEETER_ORACLE to its python)")
    assert python is not None
    return python


def real_2stems_folder(python: Path | None = None) -> Path:
    """Deezer's 2stems checkpoint folder (checkpoint, model.index, model.data-*, .probe)."""
    python = python or oracle_python() or DEFAULT_VENV / "bin" / "python"
    return _venv(python) / "pretrained_models" / "2stems"


def run_oracle(jobs: list[dict], timeout: float = 1200) -> list[dict]:
    """Run run.py's ``jobs`` in one oracle process; their results, in order."""
    python = require_oracle()
    with tempfile.TemporaryDirectory(prefix="spleeter-oracle-") as work:
        request = Path(work) / "request.json"
        request.write_text(json.dumps({"jobs": jobs}))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("PYTHONPATH", None)
        process = subprocess.run([str(python), str(ORACLE_SCRIPT), "batch", str(request)],
                                 capture_output=True, text=True, timeout=timeout, env=env,
                                 cwd=work)
    if process.returncode != 0:
        raise AssertionError(f"the Spleeter oracle failed ({process.returncode}):\n"
                             f"{process.stderr[-4000:]}")
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["results"]


def _oracle_stamp(python: Path) -> str:
    stamp = _venv(python) / ".stemsplit-oracle-ready"
    return stamp.read_text() if stamp.is_file() else "unknown"


def random_checkpoint_job(cache: Path, config: str, seed: int) -> tuple[Path, dict | None]:
    """The folder of a random-weight checkpoint of spleeter config ``config`` ("4stems")
    made by spleeter's own graph, cached in ``cache`` under a key of run.py's source, the
    config, the seed and the oracle's version; and the run.py job that makes it, or None
    when it is already there. Stale versions of the same config and seed are removed."""
    python = require_oracle()
    key = hashlib.sha256(
        ORACLE_SCRIPT.read_bytes() + f"|{config}|{seed}|{_oracle_stamp(python)}".encode()
    ).hexdigest()[:12]
    stem = f"{config}-seed{seed}-"
    folder = cache / f"{stem}{key}"
    for old in cache.glob(f"{stem}*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    if (folder / "model.index").is_file() and (folder / ".probe").is_file():
        return folder, None
    return folder, {"mode": "make-checkpoint", "config": f"spleeter:{config}",
                    "output": str(folder), "seed": seed}


# -- test signals ------------------------------------------------------------------------


def _formant_voice(time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sung/spoken-like voice: harmonics of a gliding pitch shaped by moving formants,
    in syllables, with noise bursts (consonants)."""
    rate = SAMPLE_RATE
    total = time.size
    syllable = int(0.25 * rate)
    count = -(-total // syllable)
    # Pitch: a slow glide plus vibrato, 110..240 Hz.
    anchors = rng.uniform(110, 240, count + 1)
    f0 = np.interp(time, np.arange(count + 1) * syllable / rate, anchors)
    f0 *= 1 + 0.02 * np.sin(2 * np.pi * 5.5 * time)
    vowels = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                       [530, 1840, 2480], [640, 1190, 2390]], dtype=float)
    chosen = vowels[rng.integers(0, len(vowels), count)]
    formants = np.stack([np.repeat(chosen[:, k], syllable)[:total] for k in range(3)])
    # Syllable envelope: voiced for 80 % of each syllable, smooth edges.
    position = (np.arange(total) % syllable) / syllable
    envelope = np.clip(np.minimum(position / 0.08, (0.8 - position) / 0.08), 0, 1)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = np.zeros(total)
    coarse = 32  # the harmonics' gains change slowly: computed every 32 samples
    f0_coarse, formants_coarse = f0[::coarse], formants[:, ::coarse]
    for harmonic in range(1, 40):
        frequency = harmonic * f0_coarse
        gain = sum(np.exp(-0.5 * ((frequency - formants_coarse[k]) / (80 + 40 * k)) ** 2)
                   / (k + 1) for k in range(3))
        gain = np.repeat(gain * (frequency < 8000), coarse)[:total]
        voice += gain * np.sin(harmonic * phase)
    voice *= envelope / 6
    # Consonants: high-passed noise bursts between the voiced parts.
    burst = (position > 0.82) & (position < 0.95) & (rng.random(count) < 0.6)[
        np.minimum(np.arange(total) // syllable, count - 1)]
    noise = np.diff(rng.standard_normal(total + 1)) * 0.08
    return voice + noise * burst


def _chords(time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stereo chords of harmonic notes, a new chord every 2 s, with plucked envelopes."""
    rate = SAMPLE_RATE
    total = time.size
    out = np.zeros((total, 2))
    span = int(2.0 * rate)
    roots = [110.0, 146.8, 130.8, 164.8, 98.0, 123.5]
    for index, start in enumerate(range(0, total, span)):
        end = min(start + span, total)
        local = time[start:end] - time[start]
        root = roots[index % len(roots)]
        for ratio, pan in ((1.0, 0.3), (1.26, 0.7), (1.5, 0.5), (2.0, 0.2)):
            note = np.zeros(end - start)
            for harmonic in range(1, 9):
                note += np.sin(2 * np.pi * root * ratio * harmonic * local
                               + rng.uniform(0, 2 * np.pi)) / harmonic
            note *= np.exp(-local * 1.2) * 0.08
            out[start:end, 0] += note * (1 - pan)
            out[start:end, 1] += note * pan
    # A kick-like thump every half second.
    beat = int(0.5 * rate)
    local = (np.arange(total) % beat) / rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-local * 30)) * local) * np.exp(-local * 12)
    out += 0.15 * kick[:, None]
    return out


def test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """(samples, 2) float32 at 44.1 kHz: a formant voice (centre), chords (panned), kicks,
    and a little content above 11,025 Hz (two quiet tones and noise); deterministic."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * SAMPLE_RATE))
    time = np.arange(total) / SAMPLE_RATE
    voice = _formant_voice(time, rng)
    mix = _chords(time, rng) + voice[:, None]
    high = 0.01 * np.sin(2 * np.pi * 13000 * time) + 0.006 * np.sin(2 * np.pi * 16500 * time)
    mix += high[:, None] + 0.003 * rng.standard_normal((total, 2))
    peak = np.abs(mix).max()
    return (mix * (0.8 / peak)).astype(np.float32)


test_signal.__test__ = False  # not a pytest test, despite its name


def spleeter_2stems_entry(files: str, description: str = "a test copy") -> str:
    """The ``[models.spleeter_2stems]`` table of a test weights.toml, with ``files`` (the
    TOML list's contents) as its sources."""
    return f'''[models.spleeter_2stems]
family = "spleeter"
architecture = "Spleeter U-Net"
description = "{description}"
stems = ["vocals", "accompaniment"]
sample_rate = 44100
model_dir = "2stems"
files = [{files}]
'''
