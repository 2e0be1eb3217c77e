"""MDX-Net models through the command line: download from a loopback server, offline reruns,
every stem selection and output format, --denoise, and the errors a user can run into.

A test registry (STEMSPLIT_WEIGHTS_TOML) lists random-weight stand-ins for Kim_Vocal_2 and
UVR-MDX-NET-Inst_HQ_4 (the published n_fft and dim_f, a short dim_t for speed) with their UVR
hashes and URLs on a loopback server; the stemsplit cache is a temporary folder.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit.families.mdx.onnx_runner import uvr_hash
from tests.mdx_models import (INST_HQ_4, KIM_VOCAL_2, onnx_runner, reference_separation,
                               write_mdx_onnx, write_registry)

SAMPLE_RATE = 44100
DIM_T = 32  # chunks of 31744 samples


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server root, registry, {model: local onnx}) shared by the module's tests."""
    from tests.checkpoints import FileServer

    root = tmp_path_factory.mktemp("mdx-served")
    files = {
        "kim_vocal_2": write_mdx_onnx(root / "Kim_Vocal_2.onnx", 3072, DIM_T, seed=21),
        "inst_hq_4": write_mdx_onnx(root / "UVR-MDX-NET-Inst_HQ_4.onnx", 2560, DIM_T, seed=22),
    }
    with FileServer(root) as server:
        entries = {
            "kim_vocal_2": dict(file="Kim_Vocal_2.onnx", stems=["vocals", "accompaniment"],
                                **{**KIM_VOCAL_2, "dim_t": DIM_T},
                                uvr_hash=uvr_hash(files["kim_vocal_2"])),
            "inst_hq_4": dict(file="UVR-MDX-NET-Inst_HQ_4.onnx", aliases=["UVR-MDX-NET-Inst_HQ_4"],
                              stems=["accompaniment", "vocals"], **{**INST_HQ_4, "dim_t": DIM_T},
                              uvr_hash=uvr_hash(files["inst_hq_4"])),
            "wrong_shape": dict(file="Kim_Vocal_2.onnx", stems=["vocals", "accompaniment"],
                                **{**KIM_VOCAL_2, "dim_f": 2048, "dim_t": DIM_T},
                                uvr_hash=uvr_hash(files["kim_vocal_2"])),
        }
        registry = write_registry(root.parent / f"{root.name}-weights.toml", entries, server.url)
        yield server, registry, files


@pytest.fixture
def run(served, tmp_path):
    """``python -m stemsplit ARGS`` in tmp_path with the test registry and a fresh cache."""
    server, registry, _ = served
    env = {**os.environ, "STEMSPLIT_WEIGHTS_TOML": str(registry),
           "STEMSPLIT_CACHE": str(tmp_path / "cache")}
    for variable in ("HF_HUB_OFFLINE", "STEMSPLIT_OFFLINE"):
        env.pop(variable, None)

    def runner(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=tmp_path, env=env,
                              capture_output=True, input=stdin, timeout=300)
    return runner


def write_mix(path: Path, seconds: float = 2.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    mix = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 550 * t)])
    mix = (mix + 0.05 * rng.standard_normal(mix.shape)).astype(np.float32)
    soundfile.write(path, mix.T, SAMPLE_RATE, subtype="FLOAT")
    return mix


def read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0].T


def test_kim_vocal_2_downloads_once_then_runs_offline(run, served, tmp_path):
    server, _, files = served
    mix = write_mix(tmp_path / "x.wav")
    before = server.count
    result = run("x.wav", "--model", "kim_vocal_2", "--float32", "--clip-mode", "none")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["separated/kim_vocal_2/x/vocals.wav",
                                              "separated/kim_vocal_2/x/accompaniment.wav"]
    assert server.count == before + 1
    assert (tmp_path / "cache" / "weights" / "Kim_Vocal_2.onnx").is_file()
    vocals = read(tmp_path / "separated/kim_vocal_2/x/vocals.wav")
    accompaniment = read(tmp_path / "separated/kim_vocal_2/x/accompaniment.wav")
    primary, secondary = reference_separation(mix, onnx_runner(files["kim_vocal_2"]),
                                              **{**KIM_VOCAL_2, "dim_t": DIM_T})
    assert np.abs(vocals - primary).max() <= 1e-5
    assert np.abs(accompaniment - secondary).max() <= 1e-5
    np.testing.assert_allclose(vocals + accompaniment, mix, atol=1e-6)

    again = run("x.wav", "-n", "Kim_Vocal_2", "--offline", "--force", "--float32",
                "--clip-mode", "none", "-o", "again")
    assert again.returncode == 0, again.stderr.decode()
    assert server.count == before + 1  # the cached file, no request
    assert np.array_equal(read(tmp_path / "again/kim_vocal_2/x/vocals.wav"), vocals)


def test_offline_without_the_file_says_where_it_looked(run, served, tmp_path):
    write_mix(tmp_path / "x.wav", seconds=0.5)
    result = run("x.wav", "--model", "kim_vocal_2", "--offline")
    assert result.returncode == 1
    error = result.stderr.decode()
    assert "kim_vocal_2" in error and "Kim_Vocal_2.onnx" in error and "offline" in error
    assert not (tmp_path / "separated").exists()


def test_stems_2_stem_selection_and_stdout(run, tmp_path):
    write_mix(tmp_path / "x.wav", seconds=1.5)
    result = run("x.wav", "--model", "kim_vocal_2", "--stems", "2", "--flac", "--json")
    assert result.returncode == 0, result.stderr.decode()
    outputs = json.loads(result.stdout)["tracks"][0]["outputs"]
    assert set(outputs) == {"vocals", "accompaniment"}
    assert all(soundfile.info(tmp_path / p).format == "FLAC" for p in outputs.values())

    result = run("x.wav", "--model", "kim_vocal_2", "--offline", "--stem", "accompaniment",
                 "--float32", "--clip-mode", "none", "-o", "one")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["one/kim_vocal_2/x/accompaniment.wav"]
    assert not (tmp_path / "one/kim_vocal_2/x/vocals.wav").exists()

    piped = run("-", "--model", "kim_vocal_2", "--offline", "--stem", "accompaniment",
                "--float32", "--clip-mode", "none", "-o", "-",
                stdin=(tmp_path / "x.wav").read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    streamed = soundfile.read(io.BytesIO(piped.stdout), dtype="float32")[0].T
    np.testing.assert_array_equal(streamed, read(tmp_path / "one/kim_vocal_2/x/accompaniment.wav"))


def test_instrumental_model_names_and_mp3(run, served, tmp_path):
    _, _, files = served
    mix = write_mix(tmp_path / "song.wav", seconds=2.0, seed=1)
    result = run("song.wav", "--model", "UVR-MDX-NET-Inst_HQ_4", "--float32", "--clip-mode",
                 "none")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["separated/inst_hq_4/song/accompaniment.wav",
                                              "separated/inst_hq_4/song/vocals.wav"]
    accompaniment = read(tmp_path / "separated/inst_hq_4/song/accompaniment.wav")
    primary, _ = reference_separation(mix, onnx_runner(files["inst_hq_4"]),
                                      **{**INST_HQ_4, "dim_t": DIM_T})
    assert np.abs(accompaniment - primary).max() <= 1e-5
    result = run("song.wav", "--model", "inst_hq_4", "--mp3", "--offline", "-o", "mp3")
    assert result.returncode == 0, result.stderr.decode()
    assert soundfile.info(tmp_path / "mp3/inst_hq_4/song/vocals.mp3").samplerate == SAMPLE_RATE


def test_denoise_matches_the_reference(run, served, tmp_path):
    _, _, files = served
    mix = write_mix(tmp_path / "x.wav", seconds=1.0, seed=2)
    result = run("x.wav", "--model", "kim_vocal_2", "--denoise", "--float32", "--clip-mode",
                 "none")
    assert result.returncode == 0, result.stderr.decode()
    primary, _ = reference_separation(mix, onnx_runner(files["kim_vocal_2"]),
                                      **{**KIM_VOCAL_2, "dim_t": DIM_T}, denoise=True)
    vocals = read(tmp_path / "separated/kim_vocal_2/x/vocals.wav")
    assert np.abs(vocals - primary).max() <= 1e-5


def test_unknown_onnx_file_needs_its_parameters(run, served, tmp_path):
    _, _, files = served
    write_mix(tmp_path / "x.wav", seconds=0.5)
    unknown = tmp_path / "mystery.onnx"
    write_mdx_onnx(unknown, 3072, DIM_T, seed=99)
    result = run("x.wav", "--weights", "mystery.onnx")
    assert result.returncode == 2
    error = result.stderr.decode()
    assert error.startswith("error: mystery.onnx: an MDX-Net file stemsplit does not know")
    assert "--n-fft, --compensate, --primary-stem" in error and "hint:" in error
    assert not (tmp_path / "separated").exists()

    result = run("x.wav", "--weights", "mystery.onnx", "--n-fft", "7680", "--compensate",
                 "1.0", "--primary-stem", "drums")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["separated/mystery/x/drums.wav",
                                              "separated/mystery/x/no_drums.wav"]

    # a renamed known file is recognised by its UVR hash
    shutil.copy(files["kim_vocal_2"], tmp_path / "renamed.onnx")
    result = run("x.wav", "--weights", "renamed.onnx")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split()[0] == "separated/kim_vocal_2/x/vocals.wav"


def test_usage_and_shape_errors(run, tmp_path):
    write_mix(tmp_path / "x.wav", seconds=0.5)
    result = run("x.wav", "--model", "wrong_shape")
    assert result.returncode == 1
    assert "input has dim_f 3072, but weights.toml's wrong_shape has dim_f 2048" in \
        result.stderr.decode()
    result = run("x.wav", "--model", "kim_vocal_2", "--segment", "3")
    assert result.returncode == 2 and "--segment" in result.stderr.decode()
    result = run("x.wav", "--model", "inst_hq_4", "--two-stems", "drums")
    assert result.returncode == 2 and "drums" in result.stderr.decode()
    assert not (tmp_path / "separated").exists()


def test_batch_with_an_mdx_model(run, tmp_path):
    album = tmp_path / "album"
    (album / "cd2").mkdir(parents=True)
    write_mix(album / "a.wav", seconds=0.7)
    write_mix(album / "cd2" / "b.wav", seconds=0.4, seed=3)
    result = run("batch", "album", "--model", "kim_vocal_2", "--stem", "vocals", "-o", "out")
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "out/kim_vocal_2/a/vocals.wav").is_file()
    assert (tmp_path / "out/kim_vocal_2/cd2/b/vocals.wav").is_file()
    assert not list((tmp_path / "out").rglob("accompaniment.wav"))
