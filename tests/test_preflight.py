"""Every mistake before any work: with nothing cached and no network, a typo in a path or
an option is answered before weights are fetched or torch is imported."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit.errors import UsageError
from stemsplit.preflight import check_options, probe_inputs
from stemsplit.plan import BatchItem
from tests.checkpoints import run_stemsplit_probed


@pytest.fixture
def nothing_cached(tmp_path: Path) -> dict:
    """Empty caches, and a proxy that refuses every connection."""
    return {"HF_HOME": str(tmp_path / "hf"), "STEMSPLIT_CACHE": str(tmp_path / "cache"),
            "TORCH_HOME": str(tmp_path / "torch"), "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "",
            "HF_HUB_OFFLINE": "0", "STEMSPLIT_OFFLINE": "0"}


def song(folder: Path, name: str = "song.wav", seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * 44100)) / 44100
    soundfile.write(folder / name, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).T, 44100)
    return folder / name


@pytest.mark.parametrize("args,code,words", [
    (["nosuch.mp3"], 1, "nosuch.mp3: no such file"),
    (["song.wav", "--segment", "-1"], 2, "--segment -1: must be a positive"),
    (["song.wav", "--mp3", "--mp3-bitrate", "1000"], 2, "MP3 takes 8 to 320 kbit/s"),
    (["song.wav", "--overlap", "1.5"], 2, "--overlap 1.5"),
    (["song.wav", "--shifts", "-2"], 2, "--shifts -2"),
    (["song.wav", "--sample-rate", "12"], 2, "--sample-rate 12"),
    (["notes.txt"], 1, "notes.txt"),
])
def test_mistakes_are_answered_before_weights_or_torch(tmp_path, nothing_cached, args, code,
                                                       words):
    song(tmp_path)
    (tmp_path / "notes.txt").write_text("not audio")
    result, stderr, imported = run_stemsplit_probed(args, cwd=tmp_path, env=nothing_cached)
    assert result.returncode == code, stderr
    assert stderr.startswith("error: ") and words in stderr, stderr
    assert "weights" not in stderr and "fetch" not in stderr, stderr
    assert "torch" not in imported
    assert not (tmp_path / "hf").exists() and not (tmp_path / "separated").exists()


def test_a_batch_of_unreadable_files_fails_each_without_the_model(tmp_path, nothing_cached):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF....WAVEjunk")
    (tmp_path / "in" / "b.mp3").write_bytes(b"ID3" + b"\x00" * 100)
    result, stderr, imported = run_stemsplit_probed(["batch", "in", "-o", "out", "--json"],
                                                    cwd=tmp_path, env=nothing_cached)
    assert result.returncode == 1, stderr
    assert "torch" not in imported
    assert "0 done, 0 skipped, 2 failed" in stderr
    assert [line.count('"failed"') for line in result.stdout.splitlines()] == [1, 1]


def test_option_ranges():
    fine = dict(segment_seconds=7.8, overlap=0.25, shifts=1, batch_size=1, mp3=True,
                mp3_bitrate=320, sample_rate=48000, jobs=0)
    check_options(**fine)
    check_options(**{**fine, "overlap": 4})  # four chunks per sample
    for change in ({"segment_seconds": 0}, {"overlap": 1}, {"overlap": 2.5}, {"overlap": -0.1},
                   {"batch_size": 0}, {"jobs": -1}, {"mp3_bitrate": 7},
                   {"sample_rate": 10 ** 6}):
        with pytest.raises(UsageError):
            check_options(**{**fine, **change})
    check_options(**{**fine, "mp3": False, "mp3_bitrate": 1000})  # not used without --mp3


def test_probe_inputs_keeps_what_it_learnt(tmp_path):
    good = song(tmp_path, seconds=0.5)
    results = probe_inputs([BatchItem(good), BatchItem(tmp_path / "missing.wav"),
                            BatchItem(tmp_path), BatchItem(Path("-"))])
    assert results[good].sample_rate == 44100 and abs(results[good].duration_seconds - 0.5) < 0.01
    assert "no such file" in results[tmp_path / "missing.wav"].message
    assert "is a directory" in results[tmp_path].message
    assert Path("-") not in results


def _run_on_a_terminal(args: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """Run stemsplit with stdout and stderr on a pseudo-terminal; (exit code, what it showed)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", *args], cwd=cwd,
                               env={**os.environ, **env, "COLUMNS": "100"},
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return process.wait(timeout=120), shown.decode(errors="replace")


def test_audio_to_a_terminal_is_refused(tmp_path, nothing_cached):
    song(tmp_path)
    code, shown = _run_on_a_terminal(["song.wav", "--stem", "vocals", "-o", "-"], tmp_path,
                                     nothing_cached)
    assert code == 2, shown
    assert "stdout, which is a terminal" in shown and "RIFF" not in shown


def test_a_terminal_sees_what_is_loading_before_torch(run_cli, tiny_hf_home, tmp_path):
    song(tmp_path)
    code, shown = _run_on_a_terminal(["song.wav", "-o", "out"], tmp_path,
                                     {"HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"})
    assert code == 0, shown
    assert shown.lstrip().startswith("loading htdemucs"), shown[:200]
