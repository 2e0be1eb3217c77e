"""Apollo (JusperLee's LQ MP3 restoration) in the msst family, against ZFTurbo's inference.

The golden fixture ``apollo`` (tests/zfturbo_golden/apollo.py) holds a small random-weight
Apollo in the published layout (``pytorch_model.bin``: ``serialize()``'s dict with the
state under ``state_dict`` and torch's version string in ``infos``), its config, a 16 kHz
stereo mixture and the stem ZFTurbo's inference gives for it (``restored``). Apollo is a
restoration, not a separation: one stem, no "mixture minus it".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemsplit.errors import ModelError
from stemsplit.families.msst.adapter import FAMILY, MSSTEntry, build_network
from stemsplit.families.msst.config import read_config
from stemsplit.families.msst.types import MODEL_TYPES
from stemsplit.loading import load_model
from tests.golden import (
    PUBLISHED,
    assert_matches_golden,
    load_golden,
    one_line_error,
    run_stemsplit,
    separate_with_cli,
)
from tests.msst_models import zfturbo_demix
from tests.parity import assert_close_to_peak

RATE = 16000

@pytest.fixture(scope="module")
def golden():
    return load_golden("apollo")


def written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                  if p.is_file())


# -- the type ---------------------------------------------------------------------------------
def test_the_published_config_is_an_apollo_with_one_stem():
    """ZFTurbo's config_apollo.yaml: recognised from its keys, one stem (restored, no
    complement), 3 s chunks at 44.1 kHz, four per sample; the network's STFT is 882 samples
    with a hop of 441, its 442 bins in 80 bands (79 of 5, one of 47)."""
    config = read_config(PUBLISHED / "zfturbo_config_apollo.yaml")
    assert config.model_type == "apollo"
    assert (config.stems, config.network_stems, config.residual_stem) == (
        ("restored",), ("restored",), None)
    assert (config.chunk_size, config.num_overlap, config.sample_rate) == (132300, 4, 44100)
    row = MODEL_TYPES["apollo"]
    assert row.complement is False and row.joins_ensembles is False
    assert FAMILY.joins_ensembles(MSSTEntry("apollo")) is False
    assert row.channels(config) == 2
    with torch.device("meta"):
        network = build_network(config)
    assert (network.n_fft, network.hop) == (882, 441)
    assert network.band_widths == (5,) * 79 + (47,)
    assert len(network.net) == 6
    assert tuple(network.net[0].band_net.cos_freq.shape) == (100, 32)
    assert network.state_dict()["net.5.band_net.sin_freq"].shape == (100, 32)


def test_the_fixture_is_the_published_layout(golden):
    """16 kHz keeps Apollo's structure: a 320-sample window, 161 bins in 79 bands of 2 and
    one of 3; the checkpoint is serialize()'s dict, the rotary tables among its weights."""
    config = read_config(golden.config)
    assert config.model_type == "apollo" and config.sample_rate == RATE
    network = build_network(config)
    assert (network.n_fft, network.hop, network.band_widths) == (320, 160, (2,) * 79 + (3,))
    saved = torch.load(golden.checkpoint, map_location="cpu", weights_only=False)
    assert set(saved) == {"model_name", "state_dict", "model_args", "infos"}
    assert saved["model_name"] == "Apollo"
    # torch.__version__ as serialize() stores it: a pickled torch.torch_version.TorchVersion.
    assert type(saved["infos"]["software_versions"]["torch_version"]).__name__ == "TorchVersion"
    assert set(saved["state_dict"]) == set(network.state_dict())
    assert "net.1.band_net.cos_freq" in saved["state_dict"]


# -- against ZFTurbo ------------------------------------------------------------------------------
def test_cli_matches_zfturbo_and_writes_only_restored(golden, tmp_path):
    stems = separate_with_cli(golden, tmp_path)
    assert list(stems) == ["restored"]
    assert written(tmp_path) == ["pytorch_model/mixture/restored.wav"]
    assert stems["restored"].shape == (2, 24800)
    (diff,) = assert_matches_golden(golden, stems)
    assert diff <= 1e-5 * np.abs(golden.stem("restored")).max()


def test_a_mono_input_is_doubled_as_zfturbo_does(golden, tmp_path):
    """audio.num_channels 2: ZFTurbo's inference doubles a mono track; each channel is
    restored on its own, so both channels are the golden's left channel."""
    left = golden.stem("restored")[0]
    mixture, _ = sf.read(golden.mixture_path, dtype="int16", always_2d=True)
    mono = tmp_path / "mono.wav"
    sf.write(mono, mixture[:, 0], RATE, subtype="PCM_16")
    stems = separate_with_cli(golden, tmp_path, mixture=mono)
    assert list(stems) == ["restored"] and stems["restored"].shape == (2, left.size)
    for channel in stems["restored"]:
        assert_close_to_peak(torch.from_numpy(left), torch.from_numpy(channel), rel=1e-5)


def test_overlap_and_segment(golden, tmp_path):
    """--overlap 4 (and --segment 0.5: 8000 samples) are the config's own settings; --segment
    0.4 --overlap 0.5 is ZFTurbo's demix with chunks of 6400 every 3200 samples."""
    for folder in ("same", "other"):
        (tmp_path / folder).mkdir()
    same = separate_with_cli(golden, tmp_path / "same", "--overlap", "4", "--segment", "0.5")
    assert_matches_golden(golden, same)

    other = separate_with_cli(golden, tmp_path / "other", "--segment", "0.4", "--overlap", "0.5")
    model = load_model(weights=golden.checkpoint, options={"config": str(golden.config)})
    mixture, _ = sf.read(golden.mixture_path, dtype="float32", always_2d=True)
    with torch.inference_mode():
        expected = zfturbo_demix(model.networks[0], torch.from_numpy(mixture.T.copy()), 6400, 2)
    assert_close_to_peak(expected[0], torch.from_numpy(other["restored"]), rel=1e-5)
    assert (expected[0] - torch.from_numpy(golden.stem("restored"))).abs().max() > 1e-4


@pytest.mark.parametrize("flags,words", [
    (("--overlap", "1.5"), "--overlap 1.5: give a fraction from 0 to below 1"),
    (("--segment", "0.005"), "chunk of 80 samples: Apollo's STFT takes more than 160 samples"),
])
def test_invalid_overlap_or_segment_is_refused_in_one_line(golden, tmp_path, flags, words):
    result = run_stemsplit(str(golden.mixture_path), "--weights", str(golden.checkpoint),
                           "--config", str(golden.config), "-o", "out", *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in one_line_error(result)
    assert not (tmp_path / "out").exists() or not written(tmp_path)


# -- bad configs and checkpoints ----------------------------------------------------------------
def fixture_config(tmp_path: Path, golden, old: str, new: str) -> Path:
    text = golden.config.read_text()
    assert old in text
    path = tmp_path / "config.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old,new,words", [
    ("  layer: 2\n", "  layer: 2\n  stride: 160\n", "unknown key 'model.stride' for Apollo"),
    ("  layer: 2\n", "", "the config's model section lacks layer"),
    ("  win: 20\n", "  win: 5\n", "a window of 80 samples (sr 16000 x win 5 ms) is too short"),
    ("  feature_dim: 16\n", "  feature_dim: 24\n", "feature_dim 24: its 8 attention heads"),
    ("  layer: 2\n", "  layer: 0\n", "layer must be a positive whole number, not 0"),
    ("  target_instrument: 'restored'\n", "",
     "Apollo gives one stem, but the config's training section names 2"),
])
def test_bad_configs_are_one_clear_error(tmp_path, golden, old, new, words):
    path = fixture_config(tmp_path, golden, old, new)
    # Without "layer" the keys no longer show an Apollo: the config says it.
    path.write_text(path.read_text().replace("training:\n", "training:\n  model_type: apollo\n"))
    with pytest.raises(ModelError) as error:
        build_network(read_config(path))
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_a_checkpoint_that_does_not_fit_its_config(tmp_path, golden):
    bigger = fixture_config(tmp_path, golden, "  feature_dim: 16\n", "  feature_dim: 32\n")
    with pytest.raises(ModelError, match=r"pytorch_model.bin: the checkpoint does not match "
                                         r"its config \(config.yaml\)"):
        load_model(weights=golden.checkpoint, options={"config": str(bigger)})


def test_the_rotary_tables_are_part_of_the_checkpoint(tmp_path, golden):
    """They are persistent buffers of the published network: a file without them is refused
    (strict loading), and their stored values are the ones used."""
    saved = torch.load(golden.checkpoint, map_location="cpu", weights_only=False)
    state = {k: v for k, v in saved["state_dict"].items() if not k.endswith("_freq")}
    torch.save(dict(saved, state_dict=state), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"does not match its config .*cos_freq"):
        load_model(weights=tmp_path / "pytorch_model.bin", options={"config": str(golden.config)})

    model = load_model(weights=golden.checkpoint, options={"config": str(golden.config)})
    network = model.networks[0]
    torch.testing.assert_close(network.net[1].band_net.cos_freq,
                               saved["state_dict"]["net.1.band_net.cos_freq"], rtol=0, atol=0)


def test_a_lightning_training_checkpoint_is_not_the_published_format(tmp_path, golden):
    """Apollo's training system stores the network under ``audio_model.`` (with its
    discriminator); ZFTurbo's strict load refuses it, and so do we, in one line."""
    saved = torch.load(golden.checkpoint, map_location="cpu", weights_only=False)
    state = {f"audio_model.{k}": v for k, v in saved["state_dict"].items()}
    state["discriminator.conv.weight"] = torch.zeros(1)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    with pytest.raises(ModelError, match="does not match its config") as error:
        load_model(weights=tmp_path / "last.ckpt", options={"config": str(golden.config)})
    assert "\n" not in str(error.value)


def test_the_mixture_is_restored_channel_by_channel(golden):
    """Each channel is its own batch item: the network's left output does not depend on the
    right input."""
    model = load_model(weights=golden.checkpoint, options={"config": str(golden.config)})
    network = model.networks[0]
    mix = torch.from_numpy(sf.read(golden.mixture_path, dtype="float32")[0].T[:, :8000].copy())
    with torch.inference_mode():
        both = network(mix[None])
        swapped = network(torch.stack([mix[0], -mix[0]])[None])
    assert both.shape == (1, 1, 2, 8000)
    torch.testing.assert_close(both[0, 0, 0], swapped[0, 0, 0], rtol=0, atol=1e-6)
    assert dataclasses.is_dataclass(model.details) and model.details.model_type == "apollo"


# -- the named model: restoration stays out of ensembles and combinations ---------------------
@pytest.mark.parametrize("names", [("apollo_lq_mp3", "scnet_small"),
                                   ("bs_roformer_1297", "apollo")])
def test_an_ensemble_refuses_apollo_before_any_work(tmp_path, names):
    """One line naming the model, before the input is read or anything is fetched."""
    (tmp_path / "song.wav").write_bytes(b"")
    args = [arg for name in names for arg in ("-n", name)]
    result = run_stemsplit("song.wav", *args, "-o", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: apollo_lq_mp3 is not a separation model")
    assert "cannot join an ensemble" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_named_model_is_listed_as_restoration():
    from stemsplit.registry import load_registry

    spec = load_registry().get("apollo_lq_mp3")
    assert spec.stems == ("restored",) and not spec.joins_ensembles
    assert spec.family == "msst" and spec.config == MSSTEntry(model_type="apollo")
    assert load_registry().get("scnet_xl_ihf").joins_ensembles
