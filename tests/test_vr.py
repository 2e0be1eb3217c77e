"""UVR's VR Architecture family: our networks and processing against audio-separator 0.47.1.

Random-weight ``.pth`` files in the published format (tests/vr_models.py) run through the
command line with ``--weights`` and UVR's parameters, and through audio-separator's
``VRSeparator`` (driven directly, its stems taken before its peak normalisation). One
older 7-branch network (the shared-branch trap) and one v5.1 network; a second v5.1 run
covers TTA, post-processing, high-end mirroring, window 320, another aggression and a
32 kHz band config (resampled at the input and at the output).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.oracles import require
from tests.vr_models import (SAMPLE_RATE, oracle_stems, random_state, song_mix,
                             write_aspp_pth, write_cascaded_pth)

TOLERANCE = 1e-4


@pytest.fixture
def run(tmp_path):
    env = {**os.environ, "STEMSPLIT_CACHE": str(tmp_path / "cache")}

    def runner(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=tmp_path,
                              env={**env, **(env_extra or {})}, capture_output=True,
                              timeout=600)
    return runner


def _song(tmp_path: Path, seconds: float = 2.0) -> Path:
    path = tmp_path / "song.wav"
    soundfile.write(path, song_mix(seconds).T, SAMPLE_RATE, subtype="FLOAT")
    return path


def _read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0].T


def _compare(ours: Path, theirs: np.ndarray) -> float:
    """Max |difference| over the oracle's (shorter) length; ours is zeros after it."""
    mine = _read(ours)
    assert mine.shape[1] >= theirs.shape[1]
    assert np.all(mine[:, theirs.shape[1]:] == 0)
    difference = float(np.abs(mine[:, : theirs.shape[1]] - theirs).max())
    print(f"{ours.parent.parent.name}/{ours.name}: max |difference| {difference:.2e}")
    return difference


# -- networks ---------------------------------------------------------------------------
@pytest.mark.parametrize("size, bins", [(31191, 320), (33966, 320), (129605, 512)])
def test_older_networks_match_uvr_modules(size, bins):
    nets = require("audio_separator.separator.uvr_lib_v5.vr_network.nets")
    from stemsplit.models.vr_nets import ASPPCascade

    theirs = nets.determine_model_capacity(bins * 2, size).eval()
    state = random_state(theirs, seed=size)
    theirs.load_state_dict(state)
    ours = ASPPCascade(bins, size).eval()
    ours.load_state_dict(state)
    x = torch.rand(1, 2, bins + 1, 288)
    with torch.no_grad():
        assert torch.equal(theirs.predict_mask(x), ours.predict_mask(x))


def test_seven_branch_trap_runs_the_seventh_branch_twice():
    """UVR shares one module for the 6th and 7th ASPP branches: conv6's stored weights are
    never used."""
    from stemsplit.models.vr_nets import ASPPCascade

    net = ASPPCascade(320, 33966).eval()
    state = random_state(net, seed=1)
    net.load_state_dict(state)
    x = torch.rand(1, 2, 321, 288)
    with torch.no_grad():
        before = net.predict_mask(x)
        for key in [k for k in state if ".aspp.conv6." in k and k.endswith("weight")]:
            state[key] = state[key] * 3
        net.load_state_dict(state)
        assert torch.equal(before, net.predict_mask(x))


def test_v51_network_matches_uvr_module():
    nets_new = require("audio_separator.separator.uvr_lib_v5.vr_network.nets_new")
    from stemsplit.models.vr_cascaded import LSTMCascade

    theirs = nets_new.CascadedNet(672 * 2, 56817, nout=16, nout_lstm=32).eval()
    state = random_state(theirs, seed=3)
    theirs.load_state_dict(state)
    ours = LSTMCascade(672, 16, 32).eval()
    ours.load_state_dict(state)
    x = torch.rand(2, 2, 673, 256)
    with torch.no_grad():
        assert torch.equal(theirs.predict_mask(x), ours.predict_mask(x))


# -- the whole separation, through the command line --------------------------------------
CLI_CASES = {
    # 33966 KiB (SP, 7 branches: the shared-branch trap), 3band_44100_msb2 (mid/side-b2
    # channels, polyphase and kaiser_fast input resampling), primary stem Vocals (its
    # aggression turned to 1 - a)
    "older": (lambda path: write_aspp_pth(path, 33966, bins=640, seed=5),
              {"vr_model_param": "3band_44100_msb2", "primary_stem": "Vocals"},
              [], ("vocals", "accompaniment")),
    # a v5.1 network (nout 16, nout_lstm 32 from the options), 4band_v3_sn (per-band
    # stereo_n channel conversion), primary stem Instrumental
    "v51": (lambda path: write_cascaded_pth(path, 672, 16, 32, seed=6),
            {"vr_model_param": "4band_v3_sn", "primary_stem": "Instrumental", "nout": 16,
             "nout_lstm": 32},
            ["--nout", "16", "--nout-lstm", "32"], ("accompaniment", "vocals")),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_network_through_the_cli_matches_audio_separator(run, tmp_path, case):
    write, data, extra, (first, second) = CLI_CASES[case]
    song = _song(tmp_path)
    pth = write(tmp_path / f"{case}.pth")
    primary, secondary = oracle_stems(pth, song, data)
    result = run(str(song), "--weights", str(pth), "--vr-params", data["vr_model_param"],
                 "--primary-stem", data["primary_stem"], *extra, "-o", "out", "--float32")
    assert result.returncode == 0, result.stderr.decode()
    out = tmp_path / "out" / case / "song"
    assert _compare(out / f"{first}.wav", primary) < TOLERANCE
    assert _compare(out / f"{second}.wav", secondary) < TOLERANCE


def test_every_option_through_the_cli_matches_audio_separator(run, tmp_path):
    """TTA, post-processing, high-end mirroring, window 320, aggression 10 and batches of
    2 windows, on 2band_32000 (libsamplerate at the input, soxr back to 44.1 kHz)."""
    song = _song(tmp_path, 3.0)
    pth = write_cascaded_pth(tmp_path / "opts.pth", 768, 16, 32, seed=7)
    data = {"vr_model_param": "2band_32000", "primary_stem": "No Echo", "nout": 16,
            "nout_lstm": 32}
    primary, secondary = oracle_stems(pth, song, data, enable_tta=True, window_size=320,
                                      enable_post_process=True, post_process_threshold=0.1,
                                      high_end_process=True, aggression=10)
    result = run(str(song), "--weights", str(pth), "--vr-params", "2band_32000",
                 "--primary-stem", "No Echo", "--nout", "16", "--nout-lstm", "32",
                 "--tta", "--window-size", "320", "--post-process",
                 "--post-process-threshold", "0.1", "--high-end-process",
                 "--aggression", "10", "-o", "out", "--float32")
    assert result.returncode == 0, result.stderr.decode()
    out = tmp_path / "out" / "opts" / "song"
    assert _compare(out / "no_echo.wav", primary) < TOLERANCE
    assert _compare(out / "echo.wav", secondary) < TOLERANCE


# -- files and errors --------------------------------------------------------------------
def test_an_unknown_pth_says_what_to_pass(run, tmp_path):
    song = _song(tmp_path, 0.5)
    pth = write_cascaded_pth(tmp_path / "mine.pth", 672, 16, 32)
    result = run(str(song), "--weights", str(pth), "-o", "out")
    assert result.returncode != 0
    message = result.stderr.decode()
    assert "--vr-params" in message and "--primary-stem" in message and "--nout" in message


def test_weights_tells_vr_from_other_pth_by_its_keys(tmp_path):
    from stemsplit.families import family_named

    vr = family_named("vr")
    ours = write_cascaded_pth(tmp_path / "a.pth", 672, 16, 32)
    other = tmp_path / "b.pth"
    torch.save({"encoder.weight": torch.zeros(3), "stft.window": torch.ones(4)}, other)
    assert vr.sniff(ours) and vr.claims(ours, {})
    assert not vr.sniff(other) and not vr.claims(other, {})


def test_a_missing_resampler_stops_the_load(tmp_path, monkeypatch):
    """4band_v3 names resampy's kaiser_fast: without resampy the load fails in one line
    naming it and the vr extra, before any audio is touched."""
    from stemsplit.errors import UsageError
    from stemsplit.families import family_named

    monkeypatch.setitem(sys.modules, "resampy", None)
    pth = write_cascaded_pth(tmp_path / "p.pth", 672, 16, 32)
    options = {"vr_params": "4band_v3", "primary_stem": "Instrumental", "nout": 16,
               "nout_lstm": 32}
    with pytest.raises(UsageError, match="need the resampy package") as caught:
        family_named("vr").load_local(pth, None, options, torch.device("cpu"))
    assert "stemsplit-cli[vr]" in caught.value.hint


def test_naive_bf16_path_runs(tmp_path):
    from stemsplit.families import family_named
    from stemsplit.precision import Precision

    vr = family_named("vr")
    pth = write_cascaded_pth(tmp_path / "p.pth", 672, 16, 32)
    options = {"vr_params": "4band_v3", "primary_stem": "Instrumental", "nout": 16,
               "nout_lstm": 32}
    model = vr.load_local(pth, None, options, torch.device("cpu"))
    vr.set_precision(model, Precision("bf16"))
    assert model.autocast_dtype == torch.bfloat16
    network = model.engine_networks()[0]
    mix = torch.from_numpy(song_mix(1.0))[None]
    stems = network.forward(mix)
    assert stems.shape == (1, 2, 2, mix.shape[-1]) and stems.dtype == torch.float32
    assert torch.isfinite(stems).all() and stems.abs().max() > 0


def test_named_model_downloads_through_the_registry_and_is_hash_checked(tmp_path):
    """A weights.toml entry (family vr, a URL on a loopback server, its UVR hash) resolves
    through the registry and cache; a renamed copy given with --weights is recognised by
    its UVR hash; a corrupted download is refused."""
    from stemsplit.families.mdx.onnx_runner import uvr_hash
    from tests.checkpoints import FileServer

    root = tmp_path / "served"
    root.mkdir()
    pth = write_cascaded_pth(root / "Tiny-VR.pth", 672, 16, 32, seed=9)
    song = _song(tmp_path, 1.0)
    with FileServer(root) as server:
        registry = tmp_path / "weights.toml"
        registry.write_text(f'''default_model = "tiny_vr"

[models.tiny_vr]
family = "vr"
architecture = "VR Architecture (UVR)"
description = "test"
stems = ["accompaniment", "vocals"]
sample_rate = 44100
files = [{{ url = "{server.url}Tiny-VR.pth" }}]
parameters = {{ uvr_hash = "{uvr_hash(pth)}", vr_params = "4band_v3", primary_stem = "Instrumental", nout = 16, nout_lstm = 32 }}
''')
        env = {**os.environ, "STEMSPLIT_WEIGHTS_TOML": str(registry),
               "STEMSPLIT_CACHE": str(tmp_path / "cache")}

        def run(*args):
            return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=tmp_path,
                                  env=env, capture_output=True, timeout=600)

        first = run(str(song), "-n", "tiny_vr", "-o", "named", "--float32")
        assert first.returncode == 0, first.stderr.decode()
        assert server.count == 1
        renamed = tmp_path / "renamed.pth"
        renamed.write_bytes(pth.read_bytes())
        second = run(str(song), "--weights", str(renamed), "-o", "local", "--float32")
        assert second.returncode == 0, second.stderr.decode()
        assert np.array_equal(_read(tmp_path / "named/tiny_vr/song/vocals.wav"),
                              _read(tmp_path / "local/tiny_vr/song/vocals.wav"))
        server.corrupt = True
        env["STEMSPLIT_CACHE"] = str(tmp_path / "cache2")
        third = run(str(song), "-n", "tiny_vr", "-o", "bad")
        assert third.returncode != 0
        assert "UVR hash" in third.stderr.decode() or "sha256" in third.stderr.decode().lower()


def _window_mask(offset: int):
    """A stand-in network whose mask depends on its whole window (a window cut anywhere
    else than UVR's grid gives another mask)."""
    def network(windows: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(4 * (windows - windows.mean(dim=(2, 3), keepdim=True)))
        return mask[..., offset:-offset]
    return network


@pytest.mark.parametrize("params, seconds, options", [
    ("4band_v3", 20.0, dict(tta=True, high_end=True)),
    ("2band_32000", 50.0, dict(window=320)),
    ("3band_44100_msb2", 12.0, dict(aggression=-20)),
])
def test_chunks_give_the_whole_track_stems(params, seconds, options):
    """vr_stream's chunks (one grid step each, here) against the whole-track computation:
    the same stems (polyphase, resampy, libsamplerate and soxr resamplers; a fractional
    hop at 44.1 kHz; TTA; high-end mirroring; the older nets' mid/side-b2 channels)."""
    from stemsplit.families.vr.network import band_config_of
    from stemsplit.models.vr_mask import aggression_exponents, apply_aggression, mask_of
    from stemsplit.models.vr_spectrum import Settings, prepare
    from stemsplit.models.vr_synthesis import stems_from_mask
    from stemsplit.models.vr_stream import ChunkPlan, separate_chunks

    config = band_config_of(params)
    settings = Settings(**options)
    v51 = params != "3band_44100_msb2"
    offset = 64 if v51 else 128
    network = _window_mask(offset)
    mix = song_mix(seconds)
    prepared = prepare(mix, config, v51, settings.high_end)
    mask = mask_of(np.abs(prepared.spectrogram), network, offset, settings)
    exponents = aggression_exponents(settings, "Vocals", None)
    mask = apply_aggression(mask, config.bands[0].crop[1], exponents)
    whole = stems_from_mask(prepared, mask, config, v51, settings.high_end)

    length = mix.shape[1]

    def read(start, stop):
        piece = np.zeros((2, stop - start), dtype=np.float32)
        low, high = max(start, 0), min(stop, length)
        piece[:, low - start : high - start] = mix[:, low:high]
        return piece

    step = ChunkPlan.of(config, settings, offset).align
    blocks = list(separate_chunks(read, length, config, v51, settings, network, offset,
                                  "Vocals", chunk_frames=step))
    assert len(blocks) >= 3
    for index in range(2):
        chunked = np.concatenate([block[index] for block in blocks], axis=1)
        assert chunked.shape == whole[index].shape
        assert np.abs(chunked - whole[index]).max() < 1e-5
