"""The RoFormer / MDX23C family (ZFTurbo's Music-Source-Separation-Training format).

Checkpoints and configs are made here in the published formats with random weights, by the
oracle's classes (audio-separator 0.47.1's copies of ZFTurbo's); stemsplit's stems are
compared with ZFTurbo's demix restated over the whole track (tests/msst_models.py).
Network-level parity lives in test_models_roformer.py and test_models_mdx23c.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import soundfile as sf
import torch

from stemsplit.errors import ModelError, UnsafeCheckpointError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.families.msst.config import read_config
from stemsplit.engine import SeparationSettings, separate_tensor
from stemsplit.loading import load_model
from tests import parity
from tests.msst_models import (config_sections, reference_network, write_checkpoint,
                               write_config, zfturbo_separate)

DATA = Path(__file__).resolve().parent / "data" / "msst"
SAMPLE_RATE = 44100
TOLERANCE = 1e-5


def mixture(seconds: float, seed: int = 0, channels: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frames = int(seconds * SAMPLE_RATE)
    t = torch.arange(frames) / SAMPLE_RATE
    tone = 0.2 * torch.sin(2 * torch.pi * 220 * t)
    noise = 0.1 * torch.randn(channels, frames, generator=generator)
    return (tone + noise + 0.01).float()


def make_model(folder: Path, model_type: str, name: str = "model", seed: int = 0,
               wrap: str | None = None, **config) -> tuple[Path, dict, torch.nn.Module]:
    """A random-weight checkpoint and its config beside it; returns the oracle network."""
    folder.mkdir(parents=True, exist_ok=True)
    sections = config_sections(model_type, **config)
    write_config(folder / f"{name}.yaml", sections)
    network = reference_network(model_type, sections, seed=seed)
    write_checkpoint(folder / f"{name}.ckpt", network, wrap=wrap)
    return folder / f"{name}.ckpt", sections, network


def ours(path: Path, mix: torch.Tensor, request: ChunkingRequest = ChunkingRequest(),
         **options) -> torch.Tensor:
    """Our stems of ``mix`` through the engine, the residual stem added as the pipeline
    adds it."""
    model = load_model(weights=path, options=options)
    stems = separate_tensor(mix, model.engine_networks(request), model.sample_rate,
                            SeparationSettings(), block_frames=100_000)
    if model.residual_stem is not None:
        stems = torch.cat([stems, (mix - stems.sum(0))[None]])
    return stems


# ZFTurbo's stems first, ours second: within TOLERANCE, absolute.
assert_close = partial(parity.assert_close, rel=0.0, atol=TOLERANCE)


# -- configs, as published ---------------------------------------------------------------
PUBLISHED = {
    "uvr_model_bs_roformer_ep_317_sdr_12.9755.yaml": ("bs_roformer", ("vocals", "accompaniment"), 352800, 4),
    "zfturbo_config_vocals_mel_band_roformer_kj.yaml": ("mel_band_roformer", ("vocals", "accompaniment"), 352800, 2),
    "audio_separator_vocals_mel_band_roformer.yaml": ("mel_band_roformer", ("vocals", "accompaniment"), 352800, 1),
    "uvr_model_2_stem_full_band_8k.yaml": ("mdx23c", ("vocals", "accompaniment"), 261120, 8),
    "politrees_config_BandSplit-Roformer_SW_by-jarredou.yaml": (
        "bs_roformer", ("bass", "drums", "other", "vocals", "guitar", "piano"), 588800, 2),
    "bs_roformer_infer_BS-Rofo-SW-Fixed.yaml": (
        "bs_roformer", ("bass", "drums", "other", "vocals", "guitar", "piano"), 588800, 2),
    "politrees_config_melband_roformer_big_beta5e.yaml": ("mel_band_roformer", ("vocals", "accompaniment"), 485100, 2),
    "uvr_config_melbandroformer_inst.yaml": ("mel_band_roformer", ("accompaniment", "vocals"), 485100, 2),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_are_read_as_they_are(name):
    """Real configs (python/tuple tags, CRLF, training-only keys, no audio section, ...)
    are read, and their networks built with every key accepted."""
    from stemsplit.families.msst.adapter import build_network

    model_type, stems, chunk, overlap = PUBLISHED[name]
    config = read_config(DATA / name)
    assert (config.model_type, config.stems, config.chunk_size, config.num_overlap) == (
        model_type, stems, chunk, overlap)
    with torch.device("meta"):  # the full-size network, without allocating its weights
        network = build_network(config)
    assert sum(p.numel() for p in network.parameters()) > 1_000_000


def test_only_the_tuple_tag_is_accepted(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text((DATA / "zfturbo_config_vocals_mel_band_roformer_kj.yaml").read_text()
                    + "\nextra: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ModelError, match="YAML tag"):
        read_config(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("section,key,message", [
    ("audio", "chunksize", "unknown key 'audio.chunksize'"),
    ("inference", "overlap", "unknown key 'inference.overlap'"),
])
def test_unknown_audio_or_inference_keys_are_named(tmp_path, section, key, message):
    sections = config_sections("bs_roformer")
    sections[section][key] = 3
    with pytest.raises(ModelError, match=message):
        read_config(write_config(tmp_path / "c.yaml", sections))


@pytest.mark.parametrize("key,value,message", [
    ("dimm", 3, "unknown key 'model.dimm'"),
    ("use_pope", True, "use_pope"),
    ("num_stems", 2, "model.num_stems is 2"),
])
def test_bad_model_keys_are_one_clear_error(tmp_path, key, value, message):
    path, sections, _ = make_model(tmp_path, "bs_roformer")
    sections["model"][key] = value
    write_config(path.with_suffix(".yaml"), sections)
    with pytest.raises(ModelError, match=message):
        load_model(weights=path)


def test_keys_that_do_nothing_at_inference_are_accepted(tmp_path):
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=3)
    sections["model"].update(use_torch_checkpoint=True, sage_attention=False,
                             mlp_expansion_factor=4, skip_connection=False,
                             linear_transformer_depth=0)
    write_config(path.with_suffix(".yaml"), sections)
    mix = mixture(1.0)
    assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


# -- checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "state"])
def test_checkpoint_wrappings(tmp_path, wrap):
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=4, wrap=wrap)
    mix = mixture(0.5)
    assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


def test_data_parallel_prefix(tmp_path):
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=5)
    torch.save({f"module.{key}": value for key, value in network.state_dict().items()}, path)
    mix = mixture(0.5)
    assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


def test_a_pickle_with_code_is_refused(tmp_path):
    path, _, _ = make_model(tmp_path, "bs_roformer")

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        load_model(weights=path)
    assert not Path("pwned").exists()


def test_checkpoint_and_config_that_do_not_match(tmp_path):
    path, sections, _ = make_model(tmp_path, "bs_roformer")
    sections["model"]["dim"] = 48
    write_config(path.with_suffix(".yaml"), sections)
    with pytest.raises(ModelError, match="does not match its config"):
        load_model(weights=path)


def test_config_is_found_beside_the_checkpoint_or_given(tmp_path):
    path, sections, network = make_model(tmp_path / "a", "bs_roformer", seed=6)
    moved = tmp_path / "b" / "weights.ckpt"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    with pytest.raises(ModelError, match="no config found beside it"):
        load_model(weights=moved)
    mix = mixture(0.4)
    expected = zfturbo_separate(network, mix, sections)
    assert_close(expected, ours(moved, mix, config=path.with_suffix(".yaml")))
    shutil.copy(path.with_suffix(".yaml"), moved.with_name("weights_config.yaml"))
    assert_close(expected, ours(moved, mix))  # audio-separator's naming


def test_family_options_belong_to_their_family(tmp_path):
    path, _, _ = make_model(tmp_path, "bs_roformer")
    with pytest.raises(UsageError, match="--n-fft applies to MDX-Net models"):
        load_model(weights=path, options={"n_fft": 4096})
    with pytest.raises(UsageError, match="--config applies to ZFTurbo-format models"):
        load_model("htdemucs", options={"config": path.with_suffix(".yaml")})
    with pytest.raises(UsageError, match="ZFTurbo-format checkpoint, but model 'htdemucs'"):
        load_model("htdemucs", weights=path)


# -- ZFTurbo's demix, over whole tracks ----------------------------------------------------
@pytest.mark.parametrize("seconds", [0.3, 1.5, 4.0, 4.1, 8.0, 9.0, 20.0])
def test_bs_roformer_matches_zfturbo_demix(tmp_path, seconds):
    """Tracks shorter than half a chunk (zero-padded), shorter than a chunk (reflect-padded),
    at the border threshold (2 x border = 8 s), a chunk long, and many chunks long."""
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=7, num_overlap=2)
    mix = mixture(seconds, seed=1)
    assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


@pytest.mark.parametrize("num_overlap,overlap", [(4, None), (2, 4.0), (3, 0.5)])
def test_overlap_is_the_configs_or_the_users(tmp_path, num_overlap, overlap):
    """Default: the config's num_overlap; --overlap N (a whole number) is a count of chunks
    per sample; a fraction below 1 is the share of a chunk its neighbour covers."""
    path, sections, network = make_model(tmp_path, "mel_band_roformer", seed=8,
                                         chunk_size=88200, num_overlap=num_overlap)
    mix = mixture(5.0, seed=2)
    expected_overlap = {None: num_overlap, 4.0: 4, 0.5: 2}[overlap]
    expected = zfturbo_separate(network, mix, sections, num_overlap=expected_overlap)
    assert_close(expected, ours(path, mix, ChunkingRequest(overlap=overlap)))


def test_segment_sets_the_chunk_size(tmp_path):
    path, sections, network = make_model(tmp_path, "mel_band_roformer", seed=9,
                                         chunk_size=88200)
    mix = mixture(3.0, seed=3)
    expected = zfturbo_separate(network, mix, sections, chunk_size=44100)
    assert_close(expected, ours(path, mix, ChunkingRequest(segment_seconds=1.0)))
    # The Mel-Band RoFormer gives whole hops back: 1.005 s is rounded down to 1 s.
    assert_close(expected, ours(path, mix, ChunkingRequest(segment_seconds=1.005)))


def test_mdx23c_without_a_target_gives_every_instrument(tmp_path):
    path, sections, network = make_model(tmp_path, "mdx23c", seed=10, target=None,
                                         instruments=("Vocals", "Instrumental"),
                                         chunk_size=130560, num_overlap=4)
    model = load_model(weights=path)
    assert model.sources == ("vocals", "accompaniment") and model.residual_stem is None
    for seconds in (1.0, 7.5):
        mix = mixture(seconds, seed=4)
        assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


def test_mdx23c_segment_is_rounded_to_what_the_network_takes(tmp_path):
    path, _, _ = make_model(tmp_path, "mdx23c", seed=11, target=None, chunk_size=130560)
    model = load_model(weights=path)
    (network,) = model.engine_networks(ChunkingRequest(segment_seconds=2.0))
    length = network.chunking.length
    assert length <= 2 * SAMPLE_RATE and length % 512 == 0 and (length // 512 + 1) % 4 == 0


def test_normalize_as_zfturbo(tmp_path):
    """inference.normalize: the network sees (mix - mean) / std (numpy's std), the stems are
    scaled back, and the complement is exactly the mixture minus the target."""
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=12, normalize=True)
    mix = mixture(6.0, seed=5) * 0.3 + 0.05
    got = ours(path, mix)
    assert_close(zfturbo_separate(network, mix, sections), got)
    torch.testing.assert_close(got.sum(0), mix, atol=1e-6, rtol=0)


def test_digital_silence_with_normalize_stays_silent(tmp_path):
    path, _, _ = make_model(tmp_path, "bs_roformer", seed=13, normalize=True)
    stems = ours(path, torch.zeros(2, 20000))
    assert torch.isfinite(stems).all()


def test_mono_network(tmp_path):
    model_section = dict(config_sections("bs_roformer")["model"], stereo=False)
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=14, model=model_section)
    mix = mixture(2.0, channels=1)
    assert load_model(weights=path).audio_channels == 1
    assert_close(zfturbo_separate(network, mix, sections), ours(path, mix))


# -- the command line, end to end ------------------------------------------------------------
def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("seconds", [3.0, 20.0])
def test_cli_whole_track_matches_zfturbo(tmp_path, seconds):
    """``stemsplit FILE --weights X.ckpt --float32 --clip-mode none`` (the YAML beside it):
    both stems against ZFTurbo's demix of the whole track, within 1e-5."""
    path, sections, network = make_model(tmp_path / "model", "bs_roformer", seed=15)
    mix = mixture(seconds, seed=6)
    sf.write(tmp_path / "song.wav", mix.T.numpy(), SAMPLE_RATE, subtype="FLOAT")
    result = run_cli("song.wav", "--weights", str(path), "--float32", "--clip-mode", "none",
                     "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["tracks"][0]["outputs"]
    assert set(outputs) == {"vocals", "accompaniment"}
    expected = zfturbo_separate(network, mix, sections)
    for index, stem in enumerate(("vocals", "accompaniment")):
        data, rate = sf.read(tmp_path / outputs[stem], dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE
        assert_close(expected[index], torch.from_numpy(data.T.copy()))


def test_named_model_downloads_from_a_mirror_when_the_primary_is_gone(tmp_path, file_server):
    path, sections, network = make_model(tmp_path / "model", "bs_roformer", seed=16)
    (file_server.root / "mirror").mkdir(parents=True)
    for source in (path, path.with_suffix(".yaml")):
        shutil.copy(source, file_server.root / "mirror" / source.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    registry = tmp_path / "weights.toml"
    registry.write_text(f'''default_model = "tiny_roformer"
[models.tiny_roformer]
family = "msst"
model_type = "bs_roformer"
architecture = "BS-RoFormer"
description = "a test model"
stems = ["vocals", "accompaniment"]
sample_rate = 44100
files = [
  {{ name = "model.ckpt", url = "{file_server.url}gone/model.ckpt", mirrors = ["{file_server.url}mirror/model.ckpt"], sha256 = "{digest}", size = {path.stat().st_size} }},
  {{ name = "model.yaml", url = "{file_server.url}gone/model.yaml", mirrors = ["{file_server.url}mirror/model.yaml"] }},
]
''')
    env = {"STEMSPLIT_WEIGHTS_TOML": str(registry), "STEMSPLIT_CACHE": str(tmp_path / "cache")}
    listing = run_cli("models", "--json", cwd=tmp_path, env=env)
    assert json.loads(listing.stdout)[0]["family"] == "msst"
    download = run_cli("models", "download", "tiny_roformer", cwd=tmp_path, env=env)
    assert download.returncode == 0, download.stderr
    assert (tmp_path / "cache" / "weights" / "model.ckpt").read_bytes() == path.read_bytes()
    mix = mixture(1.0, seed=7)
    sf.write(tmp_path / "song.wav", mix.T.numpy(), SAMPLE_RATE, subtype="FLOAT")
    result = run_cli("song.wav", "-n", "tiny_roformer", "--offline", "--float32",
                     "--clip-mode", "none", "--stem", "vocals", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    data, _ = sf.read(tmp_path / result.stdout.strip(), dtype="float32", always_2d=True)
    assert_close(zfturbo_separate(network, mix, sections)[0], torch.from_numpy(data.T.copy()))
    info = json.loads(run_cli("models", "info", "tiny_roformer", "--json", cwd=tmp_path,
                              env=env).stdout)
    assert info["model_type"] == "bs_roformer" and info["cached"]
    assert info["files"][0]["mirrors"] == [f"{file_server.url}mirror/model.ckpt"]


def test_registry_lists_the_published_checkpoints():
    from stemsplit.registry import load_registry

    registry = load_registry()
    expected = {"bs_roformer_1297": "bs_roformer", "bs_roformer_1296": "bs_roformer",
                "mel_roformer_1143": "mel_band_roformer", "mel_roformer_kim": "mel_band_roformer",
                "mdx23c_instvoc_hq": "mdx23c"}
    for name, model_type in expected.items():
        spec = registry.get(name)
        assert spec.family == "msst" and spec.config.model_type == model_type
        assert [f.filename.rsplit(".", 1)[1] for f in spec.files] in (["ckpt", "yaml"],
                                                                      ["ckpt", "yml"])
        assert all(f.location.startswith("https://") for f in spec.files)
    assert registry.get("model_bs_roformer_ep_317_sdr_12.9755").name == "bs_roformer_1297"
    assert registry.get("bs_roformer_1297").files[0].sha256 == (
        "5b84f37e8d444c8cb30c79d77f613a41c05868ff9c9ac6c7049c00aefae115aa")


def test_batch_size_does_not_change_the_stems(tmp_path):
    """The first/last-chunk rule is per chunk here, whatever the batch (ZFTurbo's own demix
    applies it per batch: our stems are its stems with inference.batch_size 1)."""
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=17, num_overlap=4)
    mix = mixture(12.0, seed=8)
    model = load_model(weights=path)
    one = separate_tensor(mix, model.engine_networks(), SAMPLE_RATE, SeparationSettings())
    three = separate_tensor(mix, model.engine_networks(), SAMPLE_RATE,
                            SeparationSettings(batch_size=3))
    torch.testing.assert_close(one, three, atol=1e-6, rtol=0)
    assert_close(zfturbo_separate(network, mix, sections), torch.cat([one, (mix - one[0])[None]]))


def test_without_overlap_the_fade_zeros_are_the_references(tmp_path):
    """num_overlap 1: ZFTurbo's fades reach 0 at every chunk edge, and those samples are 0."""
    path, sections, network = make_model(tmp_path, "bs_roformer", seed=18, num_overlap=1,
                                         chunk_size=88200)
    mix = mixture(5.0, seed=9)
    got, expected = ours(path, mix), zfturbo_separate(network, mix, sections)
    assert_close(expected, got)
    assert got[0, :, 88199].abs().max() == 0 and got[0, :, 88200].abs().max() == 0


def test_cli_config_model_type_and_overlap_flags(tmp_path):
    """--config names the YAML kept elsewhere, --model-type the network, --overlap N the
    chunks per sample; --help documents them."""
    path, sections, network = make_model(tmp_path / "model", "mel_band_roformer", seed=19,
                                         chunk_size=88200)
    elsewhere = tmp_path / "configs" / "any name.yaml"
    elsewhere.parent.mkdir()
    path.with_suffix(".yaml").rename(elsewhere)
    mix = mixture(3.0, seed=10)
    sf.write(tmp_path / "song.wav", mix.T.numpy(), SAMPLE_RATE, subtype="FLOAT")
    result = run_cli("song.wav", "--weights", str(path), "--config", str(elsewhere),
                     "--model-type", "mel_band_roformer", "--overlap", "4", "--float32",
                     "--clip-mode", "none", "--stem", "vocals", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data, _ = sf.read(tmp_path / result.stdout.strip(), dtype="float32", always_2d=True)
    expected = zfturbo_separate(network, mix, sections, num_overlap=4)[0]
    assert_close(expected, torch.from_numpy(data.T.copy()))
    missing = run_cli("song.wav", "--weights", str(path), cwd=tmp_path)
    assert missing.returncode == 1 and "no config found beside it" in missing.stderr
    assert "hint: give it with --config" in missing.stderr
    wrong = run_cli("song.wav", "--weights", str(path), "--config", str(elsewhere),
                    "--n-fft", "4096", cwd=tmp_path)
    assert wrong.returncode == 2 and "--n-fft applies to MDX-Net models" in wrong.stderr
    helptext = run_cli("separate", "--help", cwd=tmp_path).stdout
    assert "--config" in helptext and "--model-type" in helptext and "num_overlap" in helptext
