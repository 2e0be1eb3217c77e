"""Every kind of input a user may throw at the CLI, and every way a run can be cut short.

Each failure must be one `error:` line naming the file and the reason, a non-zero exit,
and no output or temporary file left behind; the other inputs of the run still complete.
"""

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

from stemsplit.audio import ffmpeg_path
from tests.checkpoints import default_sigint


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * (110 * (c + 1)) * t) for c in range(channels)]).T


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    *args], check=True)


def lavfi_audio(path: Path, seconds: float, *codec: str, rate: int = 44100,
                layout: str = "stereo") -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate={rate}:duration={seconds}",
           "-af", f"aformat=channel_layouts={layout}", *codec, str(path))
    return path


def leftovers(*folders: Path) -> list[Path]:
    found = []
    for folder in folders:
        if folder.exists():
            found += [p for p in folder.rglob("*")
                      if p.name.startswith(".") or p.suffix in (".part", ".spool", ".f32")
                      or p.name.startswith("stemsplit-")]
    return found


def frames_at_own_rate(path: Path) -> tuple[int, int]:
    """(sample rate, frames) of a file, decoded by ffmpeg at its own rate."""
    from stemsplit.audio import decode, probe

    info = probe(path)
    return info.sample_rate, decode(path, info.sample_rate, 2).shape[1]


GOOD_INPUTS = {
    "mono.wav": lambda p: soundfile.write(p, tone(1.0, 44100, 1), 44100),
    "stereo 16 bit.wav": lambda p: soundfile.write(p, tone(1.0, 44100, 2), 44100),
    "surround 5.1.flac": lambda p: soundfile.write(p, tone(1.0, 48000, 6), 48000),
    "surround 7.1.wav": lambda p: soundfile.write(p, tone(1.0, 48000, 8), 48000),
    "8k.wav": lambda p: soundfile.write(p, tone(1.0, 8000, 2), 8000),
    "192k.wav": lambda p: soundfile.write(p, tone(0.5, 192000, 2), 192000, subtype="PCM_24"),
    "u8.wav": lambda p: soundfile.write(p, tone(1.0, 22050, 2), 22050, subtype="PCM_U8"),
    "int32.wav": lambda p: soundfile.write(p, tone(1.0, 44100, 2), 44100, subtype="PCM_32"),
    "float.wav": lambda p: soundfile.write(p, tone(1.0, 44100, 2), 44100, subtype="FLOAT"),
    "double.wav": lambda p: soundfile.write(p, tone(1.0, 44100, 2), 44100, subtype="DOUBLE"),
    "delay.mp3": lambda p: lavfi_audio(p, 1.0, "-c:a", "libmp3lame", "-b:a", "128k"),
    "aac.m4a": lambda p: lavfi_audio(p, 1.0, "-c:a", "aac", "-b:a", "96k"),
    "opus.ogg": lambda p: lavfi_audio(p, 1.0, "-c:a", "libopus", rate=48000),
    "vorbis.ogg": lambda p: lavfi_audio(p, 1.0, "-c:a", "libvorbis"),
    "video.mp4": lambda p: ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1",
                                  "-f", "lavfi", "-i", "sine=frequency=330:duration=1",
                                  "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(p)),
    "ünïcödé – name.flac": lambda p: soundfile.write(p, tone(0.7, 44100, 2), 44100),
    "-leading-dash.wav": lambda p: soundfile.write(p, tone(0.7, 44100, 2), 44100),
    "few samples.wav": lambda p: soundfile.write(p, tone(5 / 44100, 44100, 2), 44100),
    "short.wav": lambda p: soundfile.write(p, tone(0.05, 44100, 2), 44100),
}


def make_inputs(folder: Path, table: dict) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for name, make in table.items():
        path = folder / name
        make(path)
        paths.append(path)
    return paths


def test_every_kind_of_good_input(run_cli, tmp_path):
    inputs = make_inputs(tmp_path / "in", GOOD_INPUTS)
    result = run_cli("--json", "-o", "out", "--", *[str(p) for p in inputs])
    assert result.returncode == 0, result.stderr.decode()
    tracks = {Path(t["input"]).name: t for t in json.loads(result.stdout)["tracks"]}
    assert set(tracks) == set(GOOD_INPUTS)
    for path in inputs:
        track = tracks[path.name]
        rate, frames = frames_at_own_rate(path)
        assert track["status"] == "done" and track["sample_rate"] == rate
        assert set(track["outputs"]) == {"drums", "bass", "other", "vocals"}
        for output in track["outputs"].values():
            data, written_rate = soundfile.read(tmp_path / output, always_2d=True)
            assert written_rate == rate, path.name
            assert abs(data.shape[0] - frames) <= 1, (path.name, data.shape[0], frames)
            assert data.shape[1] == 2 and np.isfinite(data).all()
    assert not leftovers(tmp_path / "out")


BAD_INPUTS = {
    "empty.wav": (lambda p: p.write_bytes(b""), "empty"),
    "text.mp3": (lambda p: p.write_text("just some words, no audio at all\n" * 20), "text.mp3"),
    "truncated.m4a": (lambda p: (lavfi_audio(p, 1.0, "-c:a", "aac"),
                                 p.write_bytes(p.read_bytes()[:300])), "truncated.m4a"),
    "silent video.mp4": (lambda p: ffmpeg("-f", "lavfi", "-i",
                                          "testsrc=size=64x48:rate=10:duration=1",
                                          "-c:v", "mpeg4", str(p)), "no audio"),
    "a folder": (lambda p: p.mkdir(), "directory"),
}


def test_every_kind_of_bad_input_fails_alone_and_cleanly(run_cli, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (make, _) in BAD_INPUTS.items():
        make(folder / name)
    good = folder / "good.wav"
    soundfile.write(good, tone(0.5, 44100, 2), 44100)
    arguments = [str(folder / name) for name in BAD_INPUTS] + ["nowhere.wav", str(good)]
    (tmp_path / "tmp").mkdir()
    result = run_cli("-q", "-o", "out", *arguments, env={"TMPDIR": str(tmp_path / "tmp")})
    stderr = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1
    errors = [line for line in stderr if line.startswith("error: ")]
    assert len(errors) == len(BAD_INPUTS) + 1, stderr
    for (name, (_, reason)), line in zip(BAD_INPUTS.items(), errors):
        assert name in line and reason in line, line
    assert "nowhere.wav" in errors[-1] and "no such file" in errors[-1]
    assert "Traceback" not in result.stderr.decode()
    assert (tmp_path / "out/htdemucs/good/vocals.wav").is_file()
    assert sorted(p.name for p in (tmp_path / "out/htdemucs").iterdir()) == ["good"]
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")


def test_digital_silence_gives_silent_stems(run_cli, tmp_path):
    soundfile.write(tmp_path / "silence.wav", np.zeros((44100, 2)), 44100, subtype="FLOAT")
    result = run_cli("silence.wav", "--float32")
    assert result.returncode == 0, result.stderr.decode()
    for stem in ("drums", "bass", "other", "vocals"):
        data, _ = soundfile.read(tmp_path / f"separated/htdemucs/silence/{stem}.wav")
        assert np.isfinite(data).all()


def test_nan_and_inf_samples_are_replaced_and_reported(run_cli, tmp_path):
    data = tone(1.0, 44100, 2).astype(np.float32)
    data[100:110] = np.nan
    data[500, 1] = np.inf
    soundfile.write(tmp_path / "nan.wav", data, 44100, subtype="FLOAT")
    result = run_cli("nan.wav")
    assert result.returncode == 0, result.stderr.decode()
    assert "warning: " in result.stderr.decode() and "21 NaN/Inf" in result.stderr.decode()
    for stem in ("drums", "vocals"):
        stem_data, _ = soundfile.read(tmp_path / f"separated/htdemucs/nan/{stem}.wav")
        assert np.isfinite(stem_data).all()


@pytest.mark.parametrize("sent,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_nothing_behind(run_cli, tiny_hf_home, tmp_path, sent, code):
    soundfile.write(tmp_path / "long.wav", tone(120.0, 44100, 2), 44100)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1",
           "TMPDIR": str(tmp_path / "tmp")}
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "long.wav", "-o", "out"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not leftovers(tmp_path / "out"):
        time.sleep(0.05)  # wait until the stem writers hold temporary files
    assert leftovers(tmp_path / "out"), "the run never started writing"
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")
    assert not (tmp_path / "out").exists()  # not even the folders it made


def _limited(limit_bytes: int):
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.parametrize("where", ["spool", "stem"])
def test_full_disk_is_a_clear_error_without_partial_files(run_cli, tmp_path, where):
    frames = 44100
    soundfile.write(tmp_path / "x.wav", tone(1.0, 44100, 2), 44100)
    (tmp_path / "tmp").mkdir()
    spool_bytes = frames * 2 * 4
    # The spool holds float32 stereo; a float32 wav stem is that plus its header.
    limit = 10_000 if where == "spool" else spool_bytes + 20
    result = run_cli("x.wav", "--float32", "--clip-mode", "clamp", "-o", "out",
                     env={"TMPDIR": str(tmp_path / "tmp")}, preexec_fn=_limited(limit))
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.startswith("error: ") and "Traceback" not in stderr
    assert "file size limit" in stderr or "too large" in stderr or "space" in stderr, stderr
    assert not leftovers(tmp_path / "out", tmp_path / "tmp")
    assert not (tmp_path / "out").exists()  # not even the folders it made
