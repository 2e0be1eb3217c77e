"""Open-Unmix: openunmix 1.3.0's stems from random-weight models in the published format,
through the command line (a model folder with --weights, and a named model downloaded
through the cache from a loopback server), and through the loader; its options; umxse's
mono network; the exact (whole-track) and chunked (--segment) modes; bf16 through autocast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stemsplit.cache.http import resolve_url_files
from stemsplit.engine import SeparationSettings, separate_tensor
from stemsplit.errors import ChecksumError, ModelError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.loading import load_model
from stemsplit.registry import load_registry
from tests.umx_models import (FOUR, ROOT, TINY, TINY_SE, UMXHQ, oracle_job, read_stems,
                              registry_text, run_oracle, run_oracle_jobs, write_mix,
                              write_model_folder)

TOLERANCE = 1e-4


def _stems_via_loader(folder: Path, audio: Path, options: dict | None = None,
                      segment: float | None = None, precision: str = "fp32") -> np.ndarray:
    import soundfile

    model = load_model(weights=folder, options=options or {}, precision=precision)
    mix, rate = soundfile.read(audio, dtype="float32", always_2d=True)
    assert rate == model.sample_rate
    stems = separate_tensor(torch.from_numpy(mix.T.copy()), model.engine_networks(segment),
                            model.sample_rate, SeparationSettings())
    return stems.numpy()


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def test_full_size_umxhq_folder_through_the_cli_gives_openunmix_stems(tmp_path):
    """umxhq's published shape (4096/1024, hidden 512, 1487 bins read), random weights in
    the legacy format under openunmix's names, ``--weights FOLDER``: openunmix's stems."""
    folder = tmp_path / "umxhq-random"
    write_model_folder(folder, **UMXHQ, seed=1)
    mix = write_mix(tmp_path / "song.wav", 4.0, 44100)
    names, expected = run_oracle(folder, FOUR, mix, tmp_path / "oracle.npy")
    result = _cli(str(mix), "--weights", str(folder), "-o", "out", "--float32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = read_stems(tmp_path / "out" / folder.name / "song", names)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= TOLERANCE, np.abs(ours - expected).max()


def test_named_model_downloads_through_the_cache_and_gives_openunmix_stems(tmp_path,
                                                                           file_server):
    """A weights.toml entry with openunmix's file names, served from loopback: downloaded
    into the torch hub cache, each file checked against the sha256 prefix in its name."""
    folder = tmp_path / "model"
    paths = write_model_folder(folder, **TINY, seed=3)
    for path in paths.values():
        (file_server.root / path.name).write_bytes(path.read_bytes())
    toml = tmp_path / "weights.toml"
    toml.write_text(registry_text("umx_tiny", [file_server.url + p.name for p in paths.values()],
                                  FOUR, n_fft=TINY["n_fft"], hop=TINY["hop"], rate=44100))
    spec = load_registry(toml).models["umx_tiny"]
    assert [f.sha256 for f in spec.files] == [p.stem.split("-")[1] for p in paths.values()]
    mix = write_mix(tmp_path / "song.wav", 2.0, 44100)
    names, expected = run_oracle(folder, FOUR, mix, tmp_path / "oracle.npy")
    env = {"STEMSPLIT_WEIGHTS_TOML": str(toml)}
    result = _cli(str(mix), "-n", "umx_tiny", "-o", "out", "--float32", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    ours = read_stems(tmp_path / "out" / "umx_tiny" / "song", names)
    assert np.abs(ours - expected).max() <= TOLERANCE
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert sorted(p.name for p in hub.glob("*.pth")) == sorted(p.name for p in paths.values())
    # A file whose bytes do not match the prefix in its name is refused, and not kept.
    for path in hub.glob("*.pth"):
        path.unlink()
    file_server.corrupt = True
    with pytest.raises(ChecksumError, match="sha256"):
        resolve_url_files(spec.name, spec.files[:1])
    assert not list(hub.glob("*.pth"))


OPTION_SETS = (
    {"niter": 2, "residual": True, "softmask": True, "wiener_win_len": 40},
    {"niter": 0, "residual": True, "softmask": False, "wiener_win_len": None},
    {"niter": 1, "residual": False, "softmask": False, "wiener_win_len": 7},
)


def test_options_and_the_speech_model_give_openunmix_stems(tmp_path):
    """--niter, --residual, --softmask and --wiener-win-len (0: openunmix's None) on a
    two-target model; and umxse's shape: a one-channel network on the mean of the stereo
    magnitudes, at 16 kHz, with stereo stems. One oracle process for all of them."""
    folder, speech = tmp_path / "model", tmp_path / "se"
    targets = ("vocals", "drums")
    write_model_folder(folder, targets, **TINY, seed=5)
    write_model_folder(speech, ("speech", "noise"), **TINY_SE, seed=7)
    mix = write_mix(tmp_path / "song.wav", 1.5, 44100, seed=2)
    noisy = write_mix(tmp_path / "noisy.wav", 2.0, 16000, seed=3)
    jobs = [oracle_job(folder, targets, mix, tmp_path / f"oracle{n}.npy", **options)
            for n, options in enumerate(OPTION_SETS)]
    jobs.append(oracle_job(speech, ("speech", "noise"), noisy, tmp_path / "se.npy"))
    results = run_oracle_jobs(jobs)
    for options, (names, expected) in zip(OPTION_SETS, results):
        ours = _stems_via_loader(folder, mix, {**options, "wiener_win_len":
                                               options["wiener_win_len"] or 0})
        assert names == list(targets) + (["residual"] if options["residual"] else [])
        assert np.abs(ours - expected).max() <= TOLERANCE, options
    names, expected = results[-1]
    model = load_model(weights=speech)
    assert model.sources == ("speech", "noise") == tuple(names) and model.sample_rate == 16000
    assert model.networks[0].targets[0].channels == 1
    ours = _stems_via_loader(speech, noisy)
    assert ours.shape == expected.shape == (2, 2, 32000)
    assert np.abs(ours - expected).max() <= TOLERANCE


def test_registry_lists_the_published_models_with_their_checked_names():
    registry = load_registry()
    for name, rate in (("umxhq", 44100), ("umxl", 44100), ("umx", 44100), ("umxse", 16000)):
        spec = registry.models[name]
        assert spec.family == "umx" and spec.sample_rate == rate
        assert {file.member for file in spec.files} == set(spec.stems)
        for file in spec.files:
            assert file.location.startswith("https://zenodo.org/records/")
            assert file.folder == "torch_hub"
            if "-" in file.filename:  # torch.hub's <name>-<sha256 prefix>: checked
                assert file.sha256 == file.filename.rsplit("-", 1)[1][:-4]
    # umxse's names use '_', outside torch.hub's rule: not taken as a digest unverified.
    assert all(file.sha256 is None for file in registry.models["umxse"].files)


def test_a_malformed_name_or_disagreeing_digest_is_refused(tmp_path):
    base = registry_text("bad", ["http://127.0.0.1:9/vocals.pth"], ["vocals"], n_fft=512,
                         hop=128, rate=44100)
    toml = tmp_path / "w.toml"
    toml.write_text(base)
    with pytest.raises(ModelError, match="not named as openunmix names"):
        load_registry(toml)
    toml.write_text(base.replace("vocals.pth\"", "vocals-0123abcd.pth\", sha256 = \"ffffffff\""))
    with pytest.raises(ModelError, match="does not start with the prefix"):
        load_registry(toml)


def test_exact_mode_is_one_chunk_and_a_long_segment_matches_it(tmp_path):
    folder = tmp_path / "model"
    write_model_folder(folder, ("vocals", "other"), **TINY, seed=9)
    mix = write_mix(tmp_path / "song.wav", 2.0, 44100, seed=4)
    exact = _stems_via_loader(folder, mix)
    model = load_model(weights=folder)
    (network,) = model.engine_networks()
    assert network.chunking.length >= 1 << 40
    np.testing.assert_array_equal(_stems_via_loader(folder, mix, segment=3.0), exact)
    chunked = _stems_via_loader(folder, mix, segment=0.5)
    assert np.isfinite(chunked).all() and chunked.shape == exact.shape
    assert np.abs(chunked - exact).max() > 1e-4  # the LSTM sees less context
    with pytest.raises(UsageError, match="--overlap"):
        model.engine_networks(ChunkingRequest(overlap=0.5))


def test_one_target_without_residual_needs_niter_zero(tmp_path):
    folder = tmp_path / "model"
    write_model_folder(folder, ("vocals",), **TINY, seed=2)
    with pytest.raises(UsageError, match="EM steps need two") as refused:
        load_model(weights=folder)
    assert "--residual" in refused.value.hint
    assert load_model(weights=folder, options={"niter": 0}).sources == ("vocals",)
    assert load_model(weights=folder, options={"residual": True}).sources == ("vocals", "residual")


def test_bf16_runs_the_networks_under_autocast(tmp_path):
    """--precision bf16 reaches the family through set_precision's autocast; the STFT and
    the Wiener filter stay in float32."""
    folder = tmp_path / "model"
    write_model_folder(folder, ("vocals", "other"), **TINY, seed=11)
    mix = write_mix(tmp_path / "song.wav", 1.0, 44100, seed=5)
    model = load_model(weights=folder, precision="bf16")
    assert model.precision == "bf16" and model.autocast_dtype == torch.bfloat16
    reduced = _stems_via_loader(folder, mix, precision="bf16")
    exact = _stems_via_loader(folder, mix)
    assert reduced.dtype == np.float32 and np.isfinite(reduced).all()
    error = np.abs(reduced - exact).max() / np.abs(exact).max()
    assert 0 < error < 0.2, error


_PEAK = r"""
import json, resource, sys
import torch
sys.path.insert(0, sys.argv[1])
from stemsplit.engine import MixStatistics, StreamingSeparator, SeparationSettings
from stemsplit.loading import load_model
model = load_model(weights=sys.argv[2])
(network,) = model.engine_networks(float(sys.argv[4]))
total = int(float(sys.argv[3]) * model.sample_rate)
statistics = MixStatistics()
statistics.update(torch.zeros(2, 2))
separator = StreamingSeparator([network], total, 2, len(model.sources), model.sample_rate,
                               statistics, SeparationSettings())
generator = torch.Generator().manual_seed(0)
emitted = 0
for begin in range(0, total, 1 << 16):
    block = 0.1 * torch.randn(2, min(1 << 16, total - begin), generator=generator)
    emitted += sum(out.shape[-1] for out in separator.push(block))
emitted += sum(out.shape[-1] for out in separator.finish())
assert emitted == total
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def test_chunked_mode_peak_memory_does_not_grow_with_length(tmp_path):
    """--segment: a 10-minute track peaks within 10% of a 1-minute one (8 kHz, a small
    network, streamed through the engine in separate processes)."""
    folder = tmp_path / "model"
    write_model_folder(folder, ("speech", "noise"), n_fft=512, hop=256, hidden=8,
                       max_bin=257, channels=1, rate=8000, seed=13)
    peaks = {}
    for minutes in (1, 10):
        result = subprocess.run([sys.executable, "-c", _PEAK, str(ROOT), str(folder),
                                 str(60 * minutes), "5"], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        peaks[minutes] = json.loads(result.stdout.strip().splitlines()[-1])
    assert peaks[10] <= 1.10 * peaks[1], peaks


def test_short_tracks_and_chunk_tails(tmp_path):
    """A track shorter than half an FFT (openunmix's STFT refuses it) is zero-padded and
    cut; in chunked mode the last chunk ends at the track's end, at full length."""
    import soundfile

    folder = tmp_path / "model"
    write_model_folder(folder, ("vocals", "other"), **TINY, seed=4)
    model = load_model(weights=folder)
    for frames in (1, 100, 257):
        stems = separate_tensor(0.1 * torch.randn(2, frames), model.engine_networks(),
                                44100, SeparationSettings())
        assert stems.shape == (2, 2, frames) and torch.isfinite(stems).all()
    (network,) = model.engine_networks(0.5)
    assert network.chunking.last_chunk == "align_end"
    mix = write_mix(tmp_path / "song.wav", 1.01, 44100)
    chunked = _stems_via_loader(folder, mix, segment=0.5)
    assert chunked.shape[-1] == soundfile.info(mix).frames and np.isfinite(chunked).all()


def test_weights_takes_the_folder_or_a_target_file_in_it(tmp_path):
    from stemsplit.families.umx.adapter import FAMILY
    from stemsplit.loading import family_for_path

    folder = tmp_path / "mine"
    paths = write_model_folder(folder, ("vocals", "drums"), **TINY, seed=6)
    assert family_for_path(folder) is FAMILY and family_for_path(paths["drums"]) is FAMILY
    assert load_model(weights=paths["drums"]).sources == ("vocals", "drums")
    stray = tmp_path / "other" / paths["vocals"].name
    stray.parent.mkdir()
    stray.write_bytes(paths["vocals"].read_bytes())
    assert not FAMILY.sniff(stray) and not FAMILY.sniff(stray.parent)
    (folder / "separator.json").unlink()
    assert not FAMILY.sniff(folder)
