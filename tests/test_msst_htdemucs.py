"""The msst type ``htdemucs``: ZFTurbo's demucs4ht configs (``model: htdemucs``, ``hdemucs``
or ``demucs`` naming the network and its section) run as ZFTurbo's demix runs them.

The golden fixtures (tests/zfturbo_golden/htdemucs.py) hold ZFTurbo's own stems: an
HTDemucs ``.ckpt`` (and its stems for ``num_overlap`` 4 too), DrumSep's HDemucs as a demucs
package ``.th``, and a one-stem mono Demucs v2 (demix's bare array).
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml

from stemsplit.engine import SeparationSettings, separate_tensor
from stemsplit.errors import ModelError, UnsafeCheckpointError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.families.msst.adapter import build_network, read_state
from stemsplit.families.msst.config import read_config
from stemsplit.loading import load_model
from tests.golden import (
    assert_matches_golden,
    load_golden,
    run_stemsplit,
    separate_with_cli,
)
from tests.parity import assert_close_to_peak, one_thread  # noqa: F401

MSST_DATA = Path(__file__).resolve().parent / "data" / "msst"


def read_mixture(golden) -> torch.Tensor:
    data, _ = sf.read(golden.mixture_path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy())


def ours(weights: Path, mix: torch.Tensor, request: ChunkingRequest | None = None,
         **options) -> tuple[torch.Tensor, object]:
    """Our stems of ``mix`` through the engine, and the loaded model."""
    model = load_model(weights=weights, options=options)
    networks = model.engine_networks(request or ChunkingRequest())
    stems = separate_tensor(mix, networks, model.sample_rate, SeparationSettings(),
                            block_frames=1 << 14)
    return stems, model


def demucs_mode(network: torch.nn.Module, mix: torch.Tensor, chunk: int,
                step: int) -> torch.Tensor:
    """ZFTurbo's demix in its "demucs" mode, restated: chunks of ``chunk`` every ``step``
    samples from 0 while they start inside the track, each zero-padded to ``chunk`` and fed
    whole, the overlaps averaged."""
    total = mix.shape[-1]
    out = counts = None
    with torch.no_grad():
        for start in range(0, total, step):
            part = mix[:, start:start + chunk]
            used = part.shape[-1]
            stems = network(F.pad(part, (0, chunk - used))[None])[0, ..., :used]
            if out is None:
                out = torch.zeros(stems.shape[:-1] + (total,))
                counts = torch.zeros(total)
            out[..., start:start + used] += stems
            counts[start:start + used] += 1
    return out / counts


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def fixture_document(name: str) -> dict:
    return yaml.safe_load(load_golden(name).config.read_text())


# -- the golden fixtures, through the command line --------------------------------------------
def test_htdemucs_ckpt_matches_zfturbo(tmp_path):
    golden = load_golden("htdemucs")
    stems = separate_with_cli(golden, tmp_path)
    assert sorted(stems) == ["other", "vocals"]
    assert_matches_golden(golden, stems)


def test_overlap_changes_the_grid_as_num_overlap_would(tmp_path):
    """``--overlap 4`` on a ``num_overlap: 2`` config gives ZFTurbo's stems with
    ``num_overlap: 4`` (7 chunks of 1 s every 0.25 s instead of 4 every 0.5 s)."""
    golden = load_golden("htdemucs")
    with np.load(golden.folder / "expected.npz") as data:
        four = data["stems_num_overlap_4"]
    assert np.abs(four - golden.stems).max() > 0.1 * np.abs(golden.stems).max()
    stems = separate_with_cli(golden, tmp_path, "--overlap", "4")
    for name, expected in zip(golden.names, four):
        assert_close_to_peak(torch.from_numpy(expected), torch.from_numpy(stems[name]))


def test_drumsep_package_with_its_config_matches_zfturbo(tmp_path):
    """``--weights model_drumsep.th --config ...``: the demucs package's ``state`` (float16)
    runs through the msst family, not as a demucs model."""
    golden = load_golden("drumsep")
    assert golden.checkpoint.name == "model_drumsep.th"
    stems = separate_with_cli(golden, tmp_path)
    assert sorted(stems) == ["cymbals", "kick", "snare", "toms"]
    assert_matches_golden(golden, stems)


def test_one_instrument_gives_its_stem_alone(tmp_path):
    """One instrument (demix's bare array), mono, ``model: demucs`` (Demucs v2)."""
    golden = load_golden("htdemucs_v2_one_stem")
    stems = separate_with_cli(golden, tmp_path)
    assert list(stems) == ["vocals"] and stems["vocals"].shape[0] == 1
    assert_matches_golden(golden, stems)


# -- which family a .th is ----------------------------------------------------------------------
def test_a_demucs_package_goes_to_msst_with_a_config_beside_it(tmp_path):
    """DrumSep's files as published (``config_drumsep.yaml`` beside ``model_drumsep.th``):
    the msst family, ZFTurbo's stems. Alone, the package is the demucs family's (demucs
    itself runs it), and a demucs bag file beside it is no ZFTurbo config."""
    golden = load_golden("drumsep")
    mix = read_mixture(golden)
    published = tmp_path / "published"
    published.mkdir()
    shutil.copy(golden.checkpoint, published / "model_drumsep.th")
    shutil.copy(golden.config, published / "config_drumsep.yaml")
    stems, model = ours(published / "model_drumsep.th", mix)
    assert model.family.name == "msst" and model.sources == ("kick", "snare", "cymbals", "toms")
    for index, name in enumerate(golden.names):
        assert_close_to_peak(torch.from_numpy(golden.stem(name)), stems[index])

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(golden.checkpoint, alone / "model_drumsep.th")
    model = load_model(weights=alone / "model_drumsep.th")
    assert model.family.name == "demucs"
    assert model.sources == ("kick", "snare", "cymbals", "toms")
    (alone / "drumsep.yaml").write_text("models: ['model_drumsep']\n")
    assert load_model(weights=alone / "model_drumsep.th").family.name == "demucs"


def test_a_package_asking_for_other_code_is_refused(tmp_path):
    golden = load_golden("drumsep")
    state = read_state(golden.checkpoint)
    assert all(value.dtype == torch.float32 for value in state.values())
    path = tmp_path / "model.th"
    torch.save({"klass": collections.Counter, "args": [], "kwargs": {}, "state": state}, path)
    with pytest.raises(UnsafeCheckpointError, match="collections.Counter"):
        read_state(path)


# -- --segment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [0.5, 1.3, 2.0])
def test_segment_sets_the_chunk_fed_whole(seconds):
    """Chunks are fed whole, so any length from one STFT window up runs, shorter or longer
    than the training segment (as ZFTurbo's does with that ``training.segment``); the step
    is the chunk // num_overlap."""
    golden = load_golden("htdemucs")
    mix = read_mixture(golden)
    stems, model = ours(golden.checkpoint, mix, ChunkingRequest(segment_seconds=seconds),
                        config=golden.config)
    chunk = int(seconds * 4000)
    expected = demucs_mode(model.networks[0], mix, chunk, chunk // 2)
    for index in range(len(golden.names)):
        assert_close_to_peak(expected[index], stems[index])


def test_segment_shorter_than_the_stft_is_refused(tmp_path):
    golden = load_golden("htdemucs")
    model = load_model(weights=golden.checkpoint, options={"config": golden.config})
    with pytest.raises(UsageError, match="chunk of 400 samples: the network's STFT takes at "
                                         "least 512 samples"):
        model.engine_networks(ChunkingRequest(segment_seconds=0.1))
    result = run_stemsplit(str(golden.mixture_path), "--weights", str(golden.checkpoint),
                           "--config", str(golden.config), "--segment", "0.1",
                           "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "STFT takes at least 512 samples" in result.stderr
    assert "Traceback" not in result.stderr


def test_use_train_segment_refuses_a_longer_segment(tmp_path):
    """With ``use_train_segment: true`` (not ZFTurbo's default) the network pads its input
    to the training segment, so a longer ``--segment`` is refused; the config's own chunk
    is exactly that segment and runs as before."""
    golden = load_golden("htdemucs")
    document = fixture_document("htdemucs")
    document["htdemucs"]["use_train_segment"] = True
    config = write_yaml(tmp_path / "config.yaml", document)
    mix = read_mixture(golden)
    stems, model = ours(golden.checkpoint, mix, config=config)
    assert_close_to_peak(torch.from_numpy(golden.stem("vocals")), stems[0])
    with pytest.raises(UsageError, match="training segment of 4000 samples"):
        model.engine_networks(ChunkingRequest(segment_seconds=1.5))
    model.engine_networks(ChunkingRequest(segment_seconds=0.5))


def test_learnt_positions_limit_the_segment(tmp_path):
    """``t_emb: scaled``: the transformer's learnt positions bound the waveform branch's
    steps (chunk / 64 here), refused before anything runs."""
    document = fixture_document("htdemucs")
    document["htdemucs"].update(t_emb="scaled", t_max_positions=80)
    config = write_yaml(tmp_path / "model.yaml", document)
    torch.save(build_network(read_config(config)).state_dict(), tmp_path / "model.ckpt")
    model = load_model(weights=tmp_path / "model.ckpt")
    model.engine_networks(ChunkingRequest(segment_seconds=1.28))  # 5120 samples: 80 steps
    with pytest.raises(UsageError, match="learnt 80 positions, and such a chunk needs 82"):
        model.engine_networks(ChunkingRequest(segment_seconds=1.3))


# -- configs ------------------------------------------------------------------------------------
PUBLISHED = {
    "zfturbo_config_vocals_htdemucs.yaml": ("htdemucs", ("vocals", "other"), 2),
    "zfturbo_config_musdb18_htdemucs.yaml": ("htdemucs", ("drums", "bass", "other", "vocals"), 4),
    "zfturbo_config_htdemucs_6stems.yaml": (
        "htdemucs", ("drums", "bass", "other", "vocals", "guitar", "piano"), 4),
    "zfturbo_config_drumsep.yaml": ("hdemucs", ("kick", "snare", "cymbals", "toms"), 4),
    "zfturbo_config_musdb18_demucs3_mmi.yaml": ("hdemucs", ("drums", "bass", "other", "vocals"), 4),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_build_demucs_networks(name):
    """ZFTurbo's configs as published: the type guessed from the section their ``model``
    names (which has MDX23C's ``num_subbands``), chunks of samplerate x segment, and our
    network with demucs 4.1's state names and shapes (ZFTurbo's HTDemucs copy with
    ``num_subbands: 1`` has demucs'), ``dconv_init: 1e-3`` read as OmegaConf reads it."""
    import demucs.hdemucs
    import demucs.htdemucs

    architecture, stems, num_overlap = PUBLISHED[name]
    config = read_config(MSST_DATA / name)
    segment = config.training["segment"]
    assert (config.model_type, config.architecture, config.stems, config.num_overlap) == (
        "htdemucs", architecture, stems, num_overlap)
    assert (config.chunk_size, config.sample_rate) == (44100 * segment, 44100)
    reference_class = {"htdemucs": demucs.htdemucs.HTDemucs,
                       "hdemucs": demucs.hdemucs.HDemucs}[architecture]
    keywords = {key: value for key, value in config.model.items() if key != "num_subbands"}
    keywords["dconv_init"] = float(keywords["dconv_init"])
    with torch.device("meta"):
        network = build_network(config)
        reference = reference_class(sources=list(stems), audio_channels=2, samplerate=44100,
                                    segment=segment, **keywords)
    assert {key: value.shape for key, value in network.state_dict().items()} == {
        key: value.shape for key, value in reference.state_dict().items()}
    assert getattr(network, "use_train_segment", False) is False


def test_model_naming_a_missing_section_is_one_clear_error(tmp_path):
    document = fixture_document("htdemucs")
    document["model"] = "hdemucs"
    with pytest.raises(ModelError, match="the config's model is 'hdemucs', but it has no "
                                         "'hdemucs' section"):
        read_config(write_yaml(tmp_path / "config.yaml", document))


def test_an_unknown_architecture_is_one_clear_error(tmp_path):
    document = fixture_document("htdemucs")
    document["model"] = "mdemucs"
    document["mdemucs"] = document.pop("htdemucs")
    config = read_config(write_yaml(tmp_path / "config.yaml", document))
    assert config.model_type == "htdemucs"
    with pytest.raises(ModelError, match="'model: mdemucs'; an htdemucs config names one of "
                                         "htdemucs, hdemucs, demucs"):
        build_network(config)


@pytest.mark.parametrize("section, key, value, message", [
    ("htdemucs", "num_subbands", 2, "htdemucs.num_subbands: 2 is not supported"),
    ("htdemucs", "t_depth", 3, "unknown key 'htdemucs.t_depth' for HTDemucs"),
    ("htdemucs", "samplerate", 4000, "'htdemucs.samplerate' is set by training.samplerate"),
    ("training", "target_instrument", "vocals", "target_instrument is not supported"),
    ("training", "channels", None, "training.channels must be a positive whole number"),
])
def test_bad_keys_are_one_clear_error(tmp_path, section, key, value, message):
    document = fixture_document("htdemucs")
    document[section][key] = value
    config = read_config(write_yaml(tmp_path / "config.yaml", document))
    with pytest.raises(ModelError, match=message):
        build_network(config)


@pytest.mark.parametrize("segment, message", [
    (0.3333, r"training.segment \* training.samplerate \(0.3333 \* 4000\) is not a whole"),
    (None, "training.segment must be a positive number"),
])
def test_a_segment_of_no_whole_samples_is_refused(tmp_path, segment, message):
    document = fixture_document("htdemucs")
    document["training"]["segment"] = segment
    with pytest.raises(ModelError, match=message):
        read_config(write_yaml(tmp_path / "config.yaml", document))


def test_a_roformer_config_is_no_htdemucs_config(tmp_path):
    document = {"model": {"dim": 8, "depth": 1}, "audio": {"chunk_size": 4096},
                "training": {"instruments": ["vocals"], "samplerate": 4000, "segment": 1}}
    config = read_config(write_yaml(tmp_path / "config.yaml", document), "htdemucs")
    with pytest.raises(ModelError, match="a 'model' section, not a network's name"):
        build_network(config)
