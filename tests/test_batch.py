"""`stemsplit batch`: discovery, mirrored outputs, resuming, collisions, JSON Lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit.batch import BatchItem, collect_inputs

STEMS = ("drums", "bass", "other", "vocals")


def tone(path: Path, seconds: float = 0.5, rate: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2).T, rate)
    return path


@pytest.fixture
def album(tmp_path) -> Path:
    root = tmp_path / "album"
    tone(root / "01 intro.wav")
    tone(root / "cd 1" / "02 song.flac")
    tone(root / "cd 1" / "deeper" / "03 song.wav")
    tone(root / "cd 2" / "02 song.flac")  # same name as in cd 1: mirrored, no collision
    tone(root / ".hidden" / "skip.wav")
    tone(root / ".dotfile.wav")
    (root / "cd 2" / "cover.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    (root / "cd 2" / "notes.txt").write_text("liner notes")
    (root / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 200)
    return root


def outputs_of(out: Path, relative_track: str) -> list[Path]:
    return [out / "htdemucs" / relative_track / f"{stem}.wav" for stem in STEMS]


GOOD = ["01 intro", "cd 1/02 song", "cd 1/deeper/03 song", "cd 2/02 song"]


def test_collect_inputs_walks_skips_hidden_and_non_audio(album):
    items = collect_inputs([str(album)])
    found = {(item.path.relative_to(album).as_posix(), item.relative_dir) for item in items}
    assert found == {("01 intro.wav", ""), ("cd 1/02 song.flac", "cd 1"),
                     ("cd 1/deeper/03 song.wav", "cd 1/deeper"),
                     ("cd 2/02 song.flac", "cd 2"), ("broken.mp3", "")}
    shallow = collect_inputs([str(album)], recursive=False)
    assert {item.path.name for item in shallow} == {"01 intro.wav", "broken.mp3"}


def test_collect_inputs_globs_stdin_and_unknown_extensions(album, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flacs = collect_inputs(["album/**/*.flac"])
    assert sorted(i.path.as_posix() for i in flacs) == ["album/cd 1/02 song.flac",
                                                        "album/cd 2/02 song.flac"]
    assert flacs[0].relative_dir == "album/cd 1"
    import io
    listed = collect_inputs(["-"], stdin=io.StringIO("album/01 intro.wav\n\nalbum/cd 1\n"))
    assert [i.path.name for i in listed] == ["01 intro.wav", "02 song.flac", "03 song.wav"]
    renamed = tmp_path / "odd" / "audio.data"  # audio under an unknown extension
    tone(tmp_path / "odd.wav").rename(renamed.parent.mkdir() or renamed)
    assert collect_inputs([str(renamed.parent)]) == [BatchItem(renamed, "")]


def test_batch_runs_resumes_and_forces(run_cli, album, tmp_path):
    first = run_cli("batch", "album", "-o", "out", "--json")
    assert first.returncode == 1, first.stderr.decode()
    lines = [json.loads(line) for line in first.stdout.decode().splitlines()]
    by_input = {Path(line["input"]).relative_to("album").as_posix(): line for line in lines}
    assert set(by_input) == {"01 intro.wav", "cd 1/02 song.flac", "cd 1/deeper/03 song.wav",
                             "cd 2/02 song.flac", "broken.mp3"}
    assert by_input["broken.mp3"]["status"] == "failed" and by_input["broken.mp3"]["error"]
    for track in GOOD:
        for path in outputs_of(tmp_path / "out", track):
            assert path.is_file()
    done = [line for line in lines if line["status"] == "done"]
    assert len(done) == 4 and all(set(line["outputs"]) == set(STEMS) for line in done)
    for line in done:
        for path in line["outputs"].values():
            assert (tmp_path / path).is_file()
    summary = first.stderr.decode()
    assert "4 done, 0 skipped, 1 failed" in summary and "broken.mp3" in summary

    second = run_cli("batch", "album", "-o", "out", "--json")
    statuses = [json.loads(line)["status"] for line in second.stdout.decode().splitlines()]
    assert sorted(statuses) == ["failed", "skipped", "skipped", "skipped", "skipped"]
    assert "0 done, 4 skipped, 1 failed" in second.stderr.decode()

    mtime = outputs_of(tmp_path / "out", "01 intro")[0].stat().st_mtime_ns
    time.sleep(0.01)
    forced = run_cli("batch", "album", "-o", "out", "--force", "-q")
    assert forced.returncode == 1, forced.stderr.decode()
    assert outputs_of(tmp_path / "out", "01 intro")[0].stat().st_mtime_ns != mtime


def test_fail_fast_stops_at_the_first_failure(run_cli, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a broken.wav").write_bytes(b"RIFF....WAVEjunk")
    tone(tmp_path / "in" / "b good.wav")
    result = run_cli("batch", "in", "-o", "out", "--fail-fast", "-q")
    assert result.returncode == 1
    assert not (tmp_path / "out" / "htdemucs" / "b good").exists()


def test_collisions_are_refused_before_any_work(run_cli, album, tmp_path):
    result = run_cli("batch", "album", "-o", "out", "--filename", "{track}/{stem}.{ext}")
    assert result.returncode == 2
    assert "would both write" in result.stderr.decode() and "02 song" in result.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_interrupted_batch_finishes_the_rest_when_restarted(tiny_hf_home, run_cli, tmp_path):
    for index in range(3):
        tone(tmp_path / "in" / f"track {index}.wav", seconds=20.0)
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "batch", "in", "-o", "out"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first = outputs_of(tmp_path / "out", "track 0")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not all(p.is_file() for p in first):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert all(p.is_file() for p in first)
    unfinished = [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]
    assert not unfinished

    restarted = run_cli("batch", "in", "-o", "out", "--json")
    assert restarted.returncode == 0, restarted.stderr.decode()
    statuses = {Path(r["input"]).name: r["status"]
                for r in map(json.loads, restarted.stdout.decode().splitlines())}
    assert statuses["track 0.wav"] == "skipped"
    assert all(p.is_file() for i in range(3) for p in outputs_of(tmp_path / "out", f"track {i}"))
