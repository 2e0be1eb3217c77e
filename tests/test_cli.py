"""The command line as a user meets it: outputs, stdout/stderr discipline, errors, exits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile


SAMPLE_RATE = 44100


@pytest.fixture
def run(run_cli):
    return run_cli


@pytest.fixture
def hf_home(tiny_hf_home):
    return tiny_hf_home


def write_tone(path: Path, seconds: float = 3.0, rate: int = SAMPLE_RATE,
               channels: int = 2, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)])
    soundfile.write(path, data.T, rate, subtype=subtype)
    return path


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


def test_default_run_writes_four_stems_and_prints_only_paths(run, tmp_path):
    write_tone(tmp_path / "song.wav")
    result = run("song.wav")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.decode().split()
    expected = [f"separated/htdemucs/song/{s}.wav" for s in ("drums", "bass", "other", "vocals")]
    assert printed == expected
    for path in expected:
        info = soundfile.info(tmp_path / path)
        assert info.samplerate == SAMPLE_RATE and info.frames == 3 * SAMPLE_RATE
        assert info.subtype == "PCM_16"
    assert not leftovers(tmp_path / "separated")


def test_two_stems_flac_at_the_input_rate(run, tmp_path):
    write_tone(tmp_path / "a b.wav", seconds=2.0, rate=48000, channels=1)
    result = run("a b.wav", "--stems", "2", "--flac", "-o", "out", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    track = document["tracks"][0]
    assert document["model"] == "htdemucs" and track["status"] == "done"
    assert set(track["outputs"]) == {"vocals", "accompaniment"}
    for path in track["outputs"].values():
        info = soundfile.info(tmp_path / path)
        assert info.format == "FLAC" and info.samplerate == 48000 and info.frames == 96000


def test_accompaniment_is_the_sum_of_the_other_stems(run, tmp_path):
    write_tone(tmp_path / "x.wav", seconds=2.0)
    assert run("x.wav", "--float32", "--clip-mode", "none", "-o", "four").returncode == 0
    result = run("x.wav", "--two-stems", "vocals", "--float32", "--clip-mode", "none",
                 "-o", "two")
    assert result.returncode == 0, result.stderr
    read = lambda p: soundfile.read(tmp_path / p, dtype="float32")[0]  # noqa: E731
    rest = sum(read(f"four/htdemucs/x/{s}.wav") for s in ("drums", "bass", "other"))
    np.testing.assert_allclose(read("two/htdemucs/x/accompaniment.wav"), rest, atol=1e-6)
    np.testing.assert_array_equal(read("two/htdemucs/x/vocals.wav"),
                                  read("four/htdemucs/x/vocals.wav"))


def test_six_stems_and_stem_selection(run, tmp_path):
    write_tone(tmp_path / "s.wav", seconds=1.0)
    result = run("s.wav", "--stems", "6", "--stem", "guitar", "--stem", "piano")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["separated/htdemucs_6s/s/guitar.wav",
                                              "separated/htdemucs_6s/s/piano.wav"]


def test_several_inputs_one_missing_others_still_run(run, tmp_path):
    write_tone(tmp_path / "good.wav", seconds=1.0)
    (tmp_path / "bad.mp3").write_text("this is not audio")
    result = run("missing.wav", "good.wav", "bad.mp3", "-q")
    assert result.returncode == 1
    errors = result.stderr.decode().strip().splitlines()
    assert len(errors) == 2, errors
    assert errors[0].startswith("error: ") and "missing.wav" in errors[0]
    assert errors[1].startswith("error: ") and "bad.mp3" in errors[1]
    assert (tmp_path / "separated/htdemucs/good/vocals.wav").is_file()
    assert not (tmp_path / "separated/htdemucs/bad").exists()
    assert not leftovers(tmp_path / "separated")


def test_existing_outputs_are_skipped_unless_forced(run, tmp_path):
    write_tone(tmp_path / "t.wav", seconds=1.0)
    assert run("t.wav").returncode == 0
    vocals = tmp_path / "separated/htdemucs/t/vocals.wav"
    before = vocals.stat().st_mtime_ns
    again = run("t.wav")
    assert again.returncode == 0 and "skipped" in again.stderr.decode()
    assert vocals.stat().st_mtime_ns == before
    time.sleep(0.01)
    forced = run("t.wav", "--force")
    assert forced.returncode == 0 and vocals.stat().st_mtime_ns != before


def test_finished_inputs_are_skipped_without_loading_torch(tmp_path):
    """Every output there already: answered from the registry's names (an alias's model
    folder, --two-stems, the format), with no model cached, torch not imported."""
    from tests.checkpoints import run_stemsplit_probed

    for name in ("a.wav", "b.flac"):
        write_tone(tmp_path / name, seconds=0.2)
        for stem in ("vocals", "accompaniment"):
            path = tmp_path / "out" / "hdemucs_mmi" / name.split(".")[0] / f"{stem}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"done")
    args = ["a.wav", "b.flac", "-n", "hdemucs", "--two-stems", "vocals", "--flac", "-o", "out"]
    offline = {"HF_HUB_OFFLINE": "1"}
    result, stderr, imported = run_stemsplit_probed(args, cwd=tmp_path, env=offline)
    assert (result.returncode, result.stdout, imported) == (0, "", set()), stderr
    assert stderr.count("skipped") == 2
    result, _, imported = run_stemsplit_probed([*args, "--json"], cwd=tmp_path, env=offline)
    document = json.loads(result.stdout)
    assert document["model"] == "hdemucs_mmi" and not imported
    assert [track["status"] for track in document["tracks"]] == ["skipped", "skipped"]
    assert document["tracks"][1]["outputs"]["accompaniment"] == "out/hdemucs_mmi/b/accompaniment.flac"
    # What only the loaded model can check still gets checked: the model is loaded (and,
    # not cached here, cannot be), exactly as before.
    for loads in ([*args, "--segment", "5"], [*args, "--force"],
                  ["a.wav", "-n", "hdemucs", "--two-stems", "vocals", "--stem", "vocals", "-o", "-"]):
        result, stderr, imported = run_stemsplit_probed(loads, cwd=tmp_path, env=offline)
        assert result.returncode == 1 and "torch" in imported, (loads, stderr)
    import torch
    if not torch.cuda.is_available():
        result, stderr, _ = run_stemsplit_probed([*args, "-d", "cuda"], cwd=tmp_path, env=offline)
        assert result.returncode == 2 and "cuda" in stderr


def test_shifts_are_seeded_and_reproducible(run, tmp_path):
    write_tone(tmp_path / "r.wav", seconds=1.5)
    for folder in ("one", "two"):
        assert run("r.wav", "--shifts", "2", "--seed", "5", "-o", folder).returncode == 0
    one = (tmp_path / "one/htdemucs/r/drums.wav").read_bytes()
    assert one == (tmp_path / "two/htdemucs/r/drums.wav").read_bytes()


@pytest.mark.parametrize("args,message", [
    (["x.wav", "-n", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["x.wav", "--stem", "banjo"], "--stem banjo"),
    (["x.wav", "--two-stems", "banjo"], "stem 'banjo' is not produced"),
    (["x.wav", "--flac", "--mp3"], "exclusive"),
    (["x.wav", "--stems", "5"], "--stems 5"),
])
def test_usage_errors_exit_2_with_one_line(run, tmp_path, args, message):
    write_tone(tmp_path / "x.wav", seconds=0.5)
    result = run(*args)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("error: ") and message in stderr
    assert "Traceback" not in stderr and result.stdout == b""
    assert not (tmp_path / "separated").exists()


def test_weights_unavailable_offline_is_one_clear_line(run, tmp_path, monkeypatch):
    write_tone(tmp_path / "x.wav", seconds=0.5)
    result = run("x.wav", "-n", "htdemucs_ft", "--offline")
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert stderr.splitlines()[0].startswith("error: weights for htdemucs_ft")
    assert "Traceback" not in stderr


def test_unsupported_model_says_so(run, tmp_path):
    write_tone(tmp_path / "x.wav", seconds=0.5)
    registry = tmp_path / "weights.toml"
    registry.write_text('[models.m]\nfamily = "demucs"\nstems = ["drums", "bass", "other", '
                        '"vocals"]\nsample_rate = 44100\nunsupported = "not supported yet (test)"\n')
    result = run("x.wav", "-n", "m", env={"STEMSPLIT_WEIGHTS_TOML": str(registry)})
    assert result.returncode == 1 and "not supported yet (test)" in result.stderr.decode()


def test_models_lists_every_model_and_cache_state(run):
    result = run("models", "--json")
    assert result.returncode == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) >= {"htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx",
                         "mdx_extra", "mdx_q", "mdx_extra_q"}
    assert rows["htdemucs"]["default"] and rows["htdemucs"]["cached"]
    assert not rows["mdx"]["cached"] and rows["hdemucs_mmi"]["aliases"] == ["hdemucs"]
    table = run("models")
    assert table.returncode == 0 and b"htdemucs_6s" in table.stdout


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from stemsplit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    version = subprocess.run([sys.executable, "-m", "stemsplit", "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("stemsplit ")


def test_batch_mirrors_the_tree_and_reports_broken_files(run, tmp_path):
    album = tmp_path / "album"
    (album / "disc 1").mkdir(parents=True)
    (album / ".hidden").mkdir()
    write_tone(album / "one.wav", seconds=0.5)
    write_tone(album / "disc 1" / "one.wav", seconds=0.5)
    write_tone(album / ".hidden" / "skip.wav", seconds=0.5)
    (album / "broken.mp3").write_bytes(b"\x00" * 100)
    result = run("batch", "album", "-o", "out", "-q")
    assert result.returncode == 1
    assert "broken.mp3" in result.stderr.decode()
    assert (tmp_path / "out/htdemucs/one/vocals.wav").is_file()
    assert (tmp_path / "out/htdemucs/disc 1/one/vocals.wav").is_file()
    assert not any("skip" in str(p) for p in (tmp_path / "out").rglob("*"))


def test_python_api_separates_arrays_and_files(hf_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import stemsplit

    model = stemsplit.load_model("htdemucs", device="cpu")
    mix = np.random.default_rng(0).standard_normal((2, 30000)).astype(np.float32) * 0.1
    stems = stemsplit.separate(mix, sample_rate=SAMPLE_RATE, model=model)
    assert set(stems) == {"drums", "bass", "other", "vocals"}
    assert all(s.shape == (2, 30000) and s.dtype == np.float32 for s in stems.values())
    resampled = stemsplit.separate(mix, sample_rate=22050, model=model, two_stems="vocals")
    assert set(resampled) == {"vocals", "accompaniment"}
    assert resampled["vocals"].shape == (2, 30000)
    path = write_tone(tmp_path / "song.wav", seconds=1.0)
    from_file = stemsplit.separate(path, model=model)
    assert from_file["bass"].shape == (2, SAMPLE_RATE)
    written = stemsplit.separate(path, model=model, out_dir=tmp_path / "out", format="flac")
    assert written["vocals"] == tmp_path / "out/htdemucs/song/vocals.flac"
