"""MDX-Net (UVR ONNX) models: the framing maths, parity with an independent whole-track
reference of UVR's algorithm, the engine's streaming, and how files become models.

The networks are random-weight ONNX files with the published names and shapes
(tests/mdx_models.py); the reference is a numpy transcription of UVR's ``demix`` over the
whole padded track (its own STFT, no streaming), running the same file through onnxruntime.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stemsplit.engine import MixStatistics, SeparationSettings, StreamingSeparator, separate_tensor
from stemsplit.errors import ChecksumError, ModelError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.families.mdx.onnx_runner import stem_names, uvr_hash
from stemsplit.loading import load_model
from stemsplit.models.mdx import MDXParameters
from stemsplit.registry import load_registry
from tests.mdx_models import (
    INST_HQ_4,
    write_registry,
    KIM_VOCAL_2,
    _stft,
    onnx_runner,
    reference_separation,
    write_mdx_onnx,
)

SAMPLE_RATE = 44100
TOLERANCE = 1e-5
SMALL_DIM_T = 16  # chunks of 15360 samples: many chunks per second of audio, fast


def mixture(seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo mix: tones (some above every dim_f), a DC offset, noise; peak below 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 20500 * t)
    right = 0.25 * np.sin(2 * np.pi * 660 * t + 1.0) + 0.05
    noise = 0.05 * rng.standard_normal((2, t.size))
    return (np.stack([left, right]) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mdx-onnx")


def model_file(folder: Path, shape: dict, dim_t: int, seed: int = 0, **kwargs) -> Path:
    kind, batch = kwargs.get("kind", "mask"), kwargs.get("batch", "b")
    path = folder / f"mdx-{shape['n_fft']}-{shape['dim_f']}-{dim_t}-{seed}-{kind}-{batch}.onnx"
    if not path.exists():
        write_mdx_onnx(path, shape["dim_f"], dim_t, seed=seed, **kwargs)
    return path


def load(path: Path, shape: dict, primary: str = "vocals", denoise: bool = False):
    return load_model(weights=path, options=dict(n_fft=shape["n_fft"],
                                                 compensate=shape["compensate"],
                                                 primary_stem=primary, denoise=denoise))


def ours(model, mix: np.ndarray, settings: SeparationSettings = SeparationSettings(),
         block_frames: int = 1 << 18, overlap: float | None = None) -> np.ndarray:
    networks = model.engine_networks(ChunkingRequest(overlap=overlap))
    return separate_tensor(torch.from_numpy(mix), networks, SAMPLE_RATE,
                           settings, block_frames=block_frames).numpy()


# -- parameters and names ---------------------------------------------------------------
def test_parameters_follow_uvr():
    p = MDXParameters(n_fft=7680, dim_f=3072, dim_t=256, compensate=1.009)
    assert (p.trim, p.chunk, p.generated) == (3840, 261120, 261120 - 7680)
    n = 1_000_000
    front, back = p.padding(n)
    assert front == 3840 and back == p.generated + p.trim - n % p.generated
    assert (n + back - p.trim) % p.generated == 0  # UVR pads to whole generated blocks


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_fft=4096, dim_f=3072, dim_t=256), "dim_f"),
    (dict(n_fft=8192, dim_f=2048, dim_t=8), "not longer than n_fft"),
    (dict(n_fft=6144, dim_f=2048, dim_t=256, compensate=0.0), "compensate"),
])
def test_impossible_parameters_fail_clearly(kwargs, message):
    with pytest.raises(ModelError, match=message):
        MDXParameters(**{"compensate": 1.0, **kwargs})


def test_stem_names():
    assert stem_names("Vocals") == ("vocals", "accompaniment")
    assert stem_names("Instrumental") == ("accompaniment", "vocals")
    assert stem_names("accompaniment") == ("accompaniment", "vocals")
    assert stem_names("Drums") == ("drums", "no_drums")
    with pytest.raises(UsageError):
        stem_names("no_vocals")


def test_uvr_hash_is_md5_of_the_last_10240000_bytes(tmp_path):
    small = tmp_path / "small.onnx"
    small.write_bytes(b"abc" * 1000)
    assert uvr_hash(small) == hashlib.md5(small.read_bytes()).hexdigest()
    big = tmp_path / "big.onnx"
    data = np.random.default_rng(0).integers(0, 256, 10_240_000 + 12345, dtype=np.uint8).tobytes()
    big.write_bytes(data)
    assert uvr_hash(big) == hashlib.md5(data[-10_240_000:]).hexdigest()
    assert uvr_hash(big) != hashlib.md5(data).hexdigest()


def test_weights_toml_lists_the_published_models():
    registry = load_registry()
    expected = {
        "inst_hq_3": ("UVR-MDX-NET-Inst_HQ_3.onnx", 6144, 3072, 256, 1.022, "accompaniment"),
        "inst_hq_4": ("UVR-MDX-NET-Inst_HQ_4.onnx", 5120, 2560, 256, 1.019, "accompaniment"),
        "inst_hq_5": ("UVR-MDX-NET-Inst_HQ_5.onnx", 5120, 2560, 256, 1.01, "accompaniment"),
        "inst_main": ("UVR-MDX-NET-Inst_Main.onnx", 5120, 2048, 256, 1.025, "accompaniment"),
        "voc_ft": ("UVR-MDX-NET-Voc_FT.onnx", 7680, 3072, 256, 1.021, "vocals"),
        "kim_vocal_1": ("Kim_Vocal_1.onnx", 7680, 3072, 256, 1.043, "vocals"),
        "kim_vocal_2": ("Kim_Vocal_2.onnx", 7680, 3072, 256, 1.009, "vocals"),
        "kara_2": ("UVR_MDXNET_KARA_2.onnx", 5120, 2048, 256, 1.065, "accompaniment"),
        "mdxnet_9482": ("UVR_MDXNET_9482.onnx", 6144, 2048, 256, 1.035, "vocals"),
        "kuielab_a_vocals": ("kuielab_a_vocals.onnx", 6144, 2048, 512, 1.035, "vocals"),
        "kuielab_a_other": ("kuielab_a_other.onnx", 8192, 2048, 512, 1.035, "other"),
        "kuielab_a_bass": ("kuielab_a_bass.onnx", 16384, 2048, 512, 1.035, "bass"),
        "kuielab_a_drums": ("kuielab_a_drums.onnx", 4096, 2048, 512, 1.035, "drums"),
    }
    hashes = set()
    for name, (filename, n_fft, dim_f, dim_t, compensate, primary) in expected.items():
        spec = registry.get(name)
        assert spec.family == "mdx" and spec.sample_rate == 44100 and len(spec.stems) == 2
        assert spec.stems[0] == primary
        (file,) = spec.files
        assert file.filename == filename and file.location == (
            "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
            + filename)
        params = spec.config.as_dict()
        assert (params["n_fft"], params["dim_f"], params["dim_t"], params["hop"],
                params["compensate"]) == (n_fft, dim_f, dim_t, 1024, compensate)
        MDXParameters(n_fft=n_fft, dim_f=dim_f, dim_t=dim_t, compensate=compensate)
        assert len(params["uvr_hash"]) == 32
        hashes.add(params["uvr_hash"])
    assert len(hashes) == len(expected)
    assert registry.get("Kim_Vocal_2").name == "kim_vocal_2"
    assert registry.get("UVR-MDX-NET-Voc_FT").name == "voc_ft"
    assert registry.get("uvr_mdx_net_inst_hq_3").name == "inst_hq_3"
    assert registry.get("UVR_MDXNET_KARA_2").stems == ("accompaniment", "lead_vocals")


# -- the framing ------------------------------------------------------------------------
def test_spectrum_planes_bins_and_inverse(onnx_dir):
    model = load(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, kind="identity"), KIM_VOCAL_2)
    net = model.networks[0]
    p = net.model_data
    wave = torch.from_numpy(mixture(1.0)[:, : p.chunk])[None]
    spec = net.spectrum(wave)
    assert spec.shape == (1, 4, p.dim_f, p.dim_t)
    for channel in range(2):
        expected = _stft(wave[0, channel].double().numpy(), p.n_fft, p.hop)[: p.dim_f]
        expected[:3] = 0
        scale = np.abs(expected).max()
        np.testing.assert_allclose(spec[0, 2 * channel].numpy(), expected.real, atol=1e-5 * scale)
        np.testing.assert_allclose(spec[0, 2 * channel + 1].numpy(), expected.imag,
                                   atol=1e-5 * scale)
    assert spec[:, :, :3].abs().max() == 0
    # Inverting the spectrum of a band-limited chunk gives it back (away from the edges).
    t = np.arange(p.chunk) / SAMPLE_RATE
    tone = torch.from_numpy(np.stack([np.sin(2 * np.pi * 1000 * t)] * 2).astype(np.float32))
    back = net.waveform(net.spectrum(tone[None]))[0]
    inner = slice(p.trim, p.chunk - p.trim)
    np.testing.assert_allclose(back[:, inner].numpy(), tone[:, inner].numpy(), atol=1e-3)


@pytest.mark.parametrize("shape", [KIM_VOCAL_2, INST_HQ_4], ids=["kim_vocal_2", "inst_hq_4"])
def test_identity_network_gives_the_band_limited_mix_and_the_rest(onnx_dir, shape):
    """primary = the mixture without bins 0-2 and >= dim_f (times compensate); the secondary
    is what the network cannot see (a DC offset, and a 20.5 kHz tone above Kim_Vocal_2's
    17.6 kHz band); the two sum to the mix."""
    path = model_file(onnx_dir, shape, SMALL_DIM_T, kind="identity")
    unit = {**shape, "compensate": 1.0, "dim_t": SMALL_DIM_T}
    model = load(path, unit)
    mix = mixture(1.5)
    primary, secondary = ours(model, mix)
    np.testing.assert_allclose(primary + secondary, mix, atol=1e-6, rtol=0)
    t = np.arange(mix.shape[-1]) / SAMPLE_RATE
    inside = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t + 1.0)])
    top = shape["dim_f"] * SAMPLE_RATE / shape["n_fft"]  # highest frequency the network sees
    high = 0.1 * np.sin(2 * np.pi * 20500 * t) if top < 20000 else np.zeros_like(t)
    outside = np.stack([high, np.full_like(t, 0.05)])
    clean = load(path, unit)
    tonal_primary, tonal_secondary = ours(clean, (inside + outside).astype(np.float32))
    core = slice(4000, -4000)  # the track's own edges are band-limited too
    np.testing.assert_allclose(tonal_primary[:, core], inside[:, core], atol=2e-3)
    np.testing.assert_allclose(tonal_secondary[:, core], outside[:, core], atol=2e-3)
    reference = reference_separation(mix, onnx_runner(path), **unit)
    assert np.abs(primary - reference[0]).max() <= TOLERANCE
    # compensate scales the primary only; the stems still sum to the mixture
    scaled = ours(load(path, shape), mix)
    np.testing.assert_allclose(scaled[0], primary * shape["compensate"], atol=1e-6)
    np.testing.assert_allclose(scaled.sum(0), mix, atol=1e-6)


# -- parity with the whole-track reference ----------------------------------------------
@pytest.mark.parametrize("seconds", [0.2, 0.35, 2.0, 5.3])
@pytest.mark.parametrize("overlap", [0.25, 0.5, 0.0])
def test_matches_whole_track_reference(onnx_dir, seconds, overlap):
    path = model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=1)
    mix = mixture(seconds, seed=1)
    primary, secondary = reference_separation(
        mix, onnx_runner(path), **{**KIM_VOCAL_2, "dim_t": SMALL_DIM_T}, overlap=overlap)
    model = load(path, KIM_VOCAL_2)
    stems = ours(model, mix, block_frames=7000, overlap=overlap)
    assert stems.shape == (2, 2, mix.shape[-1])
    assert np.abs(stems[0] - primary).max() <= TOLERANCE
    assert np.abs(stems[1] - secondary).max() <= TOLERANCE


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("denoise", [False, True])
def test_inst_hq_4_shape_with_batches_and_denoise(onnx_dir, batch_size, denoise):
    path = model_file(onnx_dir, INST_HQ_4, SMALL_DIM_T, seed=2)
    mix = mixture(3.0, seed=2)
    primary, secondary = reference_separation(
        mix, onnx_runner(path), **{**INST_HQ_4, "dim_t": SMALL_DIM_T}, denoise=denoise)
    model = load(path, INST_HQ_4, primary="instrumental", denoise=denoise)
    assert model.sources == ("accompaniment", "vocals")
    stems = ours(model, mix, SeparationSettings(batch_size=batch_size))
    assert np.abs(stems[0] - primary).max() <= TOLERANCE
    assert np.abs(stems[1] - secondary).max() <= TOLERANCE
    if denoise:
        plain = ours(load(path, INST_HQ_4, primary="instrumental"), mix)
        assert np.abs(plain - stems).max() > 1e-4  # denoise did change something


@pytest.mark.parametrize("shape", [KIM_VOCAL_2, INST_HQ_4], ids=["kim_vocal_2", "inst_hq_4"])
def test_real_shapes_match_reference(onnx_dir, shape):
    """dim_t 256: chunks of 261120 samples (5.9 s), as the published models."""
    path = model_file(onnx_dir, shape, shape["dim_t"], seed=3)
    mix = mixture(14.0, seed=3)
    primary, secondary = reference_separation(mix, onnx_runner(path), **shape)
    stems = ours(load(path, shape), mix, SeparationSettings(batch_size=2), block_frames=100_000)
    assert np.abs(stems[0] - primary).max() <= TOLERANCE
    assert np.abs(stems[1] - secondary).max() <= TOLERANCE


def test_fixed_batch_network_runs_chunk_by_chunk(onnx_dir):
    dynamic = model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=4)
    fixed = model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=4, batch=1)
    mix = mixture(1.0)
    one = ours(load(dynamic, KIM_VOCAL_2), mix, SeparationSettings(batch_size=4))
    two = ours(load(fixed, KIM_VOCAL_2), mix, SeparationSettings(batch_size=4))
    assert np.abs(one - two).max() <= 1e-6


def test_streaming_keeps_memory_bounded(onnx_dir):
    model = load(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=5), KIM_VOCAL_2)
    (network,) = model.engine_networks()
    total = 20 * SAMPLE_RATE
    statistics = MixStatistics()
    statistics.update(torch.tensor([[0.0, 0.6]] * 2))
    separator = StreamingSeparator([network], total, 2, 2, SAMPLE_RATE, statistics)
    emitted, largest = 0, 0
    rng = np.random.default_rng(0)
    for begin in range(0, total, 4000):
        count = min(4000, total - begin)
        block = torch.from_numpy(rng.standard_normal((2, count), dtype=np.float32))
        for out in separator.push(block):
            emitted += out.shape[-1]
        largest = max(largest, separator._input.data.shape[-1],
                      max(p.acc.shape[-1] for member in separator._passes for p in member))
    emitted += sum(out.shape[-1] for out in separator.finish())
    assert emitted == total
    assert largest <= 2 * network.segment_length + 4000


def test_mean_and_std_do_not_reach_an_mdx_network(onnx_dir):
    """Normalisation is the network's property: MDX-Net sees the raw mixture."""
    model = load(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=6), KIM_VOCAL_2)
    (network,) = model.engine_networks()
    assert network.chunking.normalise is None and network.chunking.window.kind == "hann"
    mix = torch.from_numpy(mixture(1.0))
    outputs = []
    for scale, shift in ((1.0, 0.0), (7.0, 0.4)):
        statistics = MixStatistics()
        statistics.update(mix * scale + shift)
        separator = StreamingSeparator([network], mix.shape[-1], 2, 2, SAMPLE_RATE, statistics)
        outputs.append(torch.cat(separator.push(mix) + separator.finish(), dim=-1))
    assert torch.equal(outputs[0], outputs[1])


def test_shifts_apply_to_mdx_too(onnx_dir):
    """Seeded shifts delay the track on top of UVR's padding; stems still sum to the mix."""
    model = load(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=12), KIM_VOCAL_2)
    mix = mixture(1.2)
    plain = ours(model, mix)
    shifted = ours(model, mix, SeparationSettings(shifts=2, seed=5))
    again = ours(model, mix, SeparationSettings(shifts=2, seed=5))
    assert np.array_equal(shifted, again) and not np.allclose(shifted, plain, atol=1e-5)
    np.testing.assert_allclose(shifted.sum(0), mix, atol=1e-6)


def test_segment_is_refused(onnx_dir):
    model = load(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T), KIM_VOCAL_2)
    with pytest.raises(UsageError, match="--segment"):
        model.engine_networks(4.0)


# -- files, names, parameters -----------------------------------------------------------
def test_unknown_onnx_needs_its_parameters(onnx_dir, tmp_path):
    path = shutil.copy(model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=7), tmp_path / "x.onnx")
    with pytest.raises(UsageError, match="--n-fft, --compensate, --primary-stem"):
        load_model(weights=path)
    with pytest.raises(UsageError, match="--compensate"):
        load_model(weights=path, options=dict(n_fft=7680, primary_stem="vocals"))
    model = load_model(weights=path, options=dict(n_fft=7680, compensate=1.009,
                                                    primary_stem="vocals"))
    assert model.name == "x" and model.sources == ("vocals", "accompaniment")
    assert model.networks[0].model_data == MDXParameters(7680, 3072, SMALL_DIM_T, 1.009)


def test_renamed_known_file_is_recognised_by_its_uvr_hash(onnx_dir, tmp_path, monkeypatch):
    source = model_file(onnx_dir, INST_HQ_4, SMALL_DIM_T, seed=8)
    registry = write_registry(tmp_path / "weights.toml", {"inst_hq_4": dict(
        file="UVR-MDX-NET-Inst_HQ_4.onnx", stems=["accompaniment", "vocals"], **{
            **INST_HQ_4, "dim_t": SMALL_DIM_T}, uvr_hash=uvr_hash(source))})
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    renamed = shutil.copy(source, tmp_path / "my model.onnx")
    model = load_model(weights=renamed)
    assert model.name == "inst_hq_4" and model.sources == ("accompaniment", "vocals")
    assert model.networks[0].model_data.n_fft == 5120
    # options still win over weights.toml
    model = load_model(weights=renamed, options=dict(compensate=1.5))
    assert model.networks[0].model_data.compensate == 1.5


@pytest.mark.parametrize("key,recorded", [("dim_f", 2560), ("dim_t", 256)])
def test_shape_mismatch_fails_clearly(onnx_dir, tmp_path, monkeypatch, key, recorded):
    path = model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=9)
    found = {"dim_f": 3072, "dim_t": SMALL_DIM_T}[key]
    entry = {**KIM_VOCAL_2, "dim_t": SMALL_DIM_T, key: recorded}
    registry = write_registry(tmp_path / "weights.toml", {"kim_vocal_2": dict(
        file="Kim_Vocal_2.onnx", stems=["vocals", "accompaniment"], **entry,
        uvr_hash="0" * 32)})
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    with pytest.raises(ModelError, match=f"input has {key} {found}, but weights.toml's "
                                         f"kim_vocal_2 has {key} {recorded}"):
        load_model("kim_vocal_2", weights=path)


def test_not_an_onnx_network(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a loadable ONNX network"):
        load_model(weights=path, options=dict(n_fft=7680, compensate=1.0,
                                                primary_stem="vocals"))


def test_mdx_options_are_refused_for_demucs_models():
    with pytest.raises(UsageError, match="MDX-Net"):
        load_model("htdemucs", options=dict(denoise=True))


def test_download_is_checked_against_the_uvr_hash(onnx_dir, tmp_path, monkeypatch, file_server):
    source = model_file(onnx_dir, KIM_VOCAL_2, SMALL_DIM_T, seed=10)
    shutil.copy(source, file_server.root / "Kim_Vocal_2.onnx")
    entry = dict(file="Kim_Vocal_2.onnx", stems=["vocals", "accompaniment"],
                 **{**KIM_VOCAL_2, "dim_t": SMALL_DIM_T}, uvr_hash=uvr_hash(source))
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(write_registry(
        tmp_path / "weights.toml", {"kim_vocal_2": entry}, file_server.url)))
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "cache"))
    file_server.corrupt = True
    with pytest.raises(ChecksumError, match="UVR hash"):
        load_model("kim_vocal_2")
    assert not list((tmp_path / "cache").rglob("Kim_Vocal_2.onnx"))  # the bad copy is gone
    file_server.corrupt = False
    model = load_model("kim_vocal_2")
    assert model.name == "kim_vocal_2" and model.spec.name == "kim_vocal_2"
    requests = file_server.count
    load_model("kim_vocal_2", offline=True)  # from the cache, no request
    assert file_server.count == requests


# -- the peer: audio-separator 0.47.1, when an installation is named --------------------
# Its MDX-Net code needs onnx2torch, which needs torchvision, which cannot be installed beside
# this project's CPU torch: the comparison runs where a full audio-separator is named. The
# parity tests above compare with a whole-track restatement of UVR's algorithm instead.
AUDIO_SEPARATOR = os.environ.get("STEMSPLIT_AUDIO_SEPARATOR")


@pytest.mark.skipif(not AUDIO_SEPARATOR, reason="set STEMSPLIT_AUDIO_SEPARATOR to an "
                    "audio-separator 0.47.1 executable to compare with it")
def test_matches_audio_separator(onnx_dir, tmp_path):
    """audio-separator run offline on the same file (model folder seeded with its catalogue
    and hash table): its secondary equals ours, its primary times compensate equals ours,
    for a float wav peaking at exactly 1.0 and --normalization 1.0."""
    import soundfile

    from tests.mdx_models import run_audio_separator

    path = model_file(onnx_dir, KIM_VOCAL_2, 32, seed=11)
    mix = mixture(4.0, seed=11)
    mix /= np.abs(mix).max()
    wav = tmp_path / "mix.wav"
    soundfile.write(wav, mix.T, SAMPLE_RATE, subtype="FLOAT")
    theirs = run_audio_separator(AUDIO_SEPARATOR, path, wav, tmp_path / "as",
                                 **{**KIM_VOCAL_2, "dim_t": 32}, primary="Vocals")
    stems = ours(load(path, KIM_VOCAL_2), soundfile.read(wav, dtype="float32")[0].T.copy())
    assert np.abs(stems[0] - theirs["Vocals"] * KIM_VOCAL_2["compensate"]).max() <= TOLERANCE
    assert np.abs(stems[1] - theirs["Instrumental"]).max() <= TOLERANCE
