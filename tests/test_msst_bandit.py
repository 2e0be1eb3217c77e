"""BandIt Plus (``bandit``) and BandIt v2 (``bandit_v2``) in the msst family, against
ZFTurbo's inference.

The golden fixtures ``bandit`` and ``bandit_v2`` (tests/zfturbo_golden/bandit.py) hold a small
random-weight network of each in the published layout (a bare state dict: BandIt Plus's
``model_bandit_plus_dnr_sdr_11.47.chpt``; ``model_bandit_v2.ckpt``), its config, an 8 kHz
stereo mixture and the stems ZFTurbo's inference gives for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemsplit.errors import ModelError, UsageError
from stemsplit.families.msst import adapter
from stemsplit.families.msst.adapter import build_network
from stemsplit.families.msst.config import read_config
from stemsplit.families.msst.types import MODEL_TYPES
from stemsplit.loading import load_model
from stemsplit.models.bandsplit_bands import musical_bands
from tests.golden import (
    PUBLISHED,
    assert_matches_golden,
    load_golden,
    one_line_error,
    run_stemsplit,
    separate_with_cli,
)
from tests.msst_models import zfturbo_demix
from tests.parity import assert_close_to_peak, one_thread  # noqa: F401 (autouse fixture)

RATE = 8000
LENGTH = 12400
CHECKPOINTS = {"bandit": "model_bandit_plus_dnr_sdr_11.47.chpt",
               "bandit_v2": "model_bandit_v2.ckpt"}
STEMS = {"bandit": ("speech", "music", "effects"), "bandit_v2": ("speech", "music", "sfx")}

@pytest.fixture(scope="module", params=["bandit", "bandit_v2"])
def golden(request):
    return load_golden(request.param)


@pytest.fixture(scope="module")
def plus():
    return load_golden("bandit")


def written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                  if p.is_file())


def mixture(golden) -> torch.Tensor:
    data, _ = sf.read(golden.mixture_path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy())


# -- the published configs -------------------------------------------------------------------
def test_musical_bands_are_bandits():
    """The "musical" layouts BandIt's own code gives (librosa's MIDI conversions, ZFTurbo's
    ``MusicalBandsplitSpecification``), restated: bin ranges and per-bin weights."""
    published = musical_bands(2048, 44100, 64)
    assert published.bands[:6] == ((0, 3), (1, 3), (1, 3), (1, 3), (1, 3), (1, 3))
    assert published.bands[-3:] == ((737, 917), (823, 1024), (918, 1025))
    assert len(published.bands) == 64 and sum(published.widths) == 2142
    np.testing.assert_allclose(published.weights[0], [1.0, 0.125, 1 / 11], rtol=1e-15)
    np.testing.assert_allclose(published.weights[10], [1 / 11, 1 / 8, 1 / 6],
                               rtol=1e-15)
    assert musical_bands(256, 48000, 8).bands == (
        (0, 3), (1, 5), (2, 9), (4, 16), (8, 31), (17, 60), (34, 119), (69, 129))
    odd = musical_bands(1000, 16000, 30)
    assert len(odd.bands) == 30 and odd.bands[:4] == ((0, 3), (1, 3), (1, 3), (1, 4))
    assert odd.bands[-2:] == ((328, 498), (406, 501))
    for layout in (published, odd):
        coverage = np.zeros(layout.bands[-1][1])
        for (start, end), weights in zip(layout.bands, layout.weights):
            coverage[start:end] += weights
        np.testing.assert_allclose(coverage, 1.0, rtol=1e-12)


def test_the_published_bandit_plus_config():
    """config_dnr_bandit_bsrnn_multi_mus64.yaml: recognised from its keys; DnR's stems; 6 s
    chunks at 44.1 kHz, four per sample. The network: a 2048-bin STFT (hop 512), 64 musical
    bands of 44.1 kHz, 16 GRUs, one mask estimator per stem with its bands' weights."""
    config = read_config(PUBLISHED / "zfturbo_config_dnr_bandit_bsrnn_multi_mus64.yaml")
    assert config.model_type == "bandit"
    assert config.stems == config.network_stems == ("speech", "music", "effects")
    assert (config.chunk_size, config.num_overlap, config.sample_rate) == (264600, 4, 44100)
    assert MODEL_TYPES["bandit"].channels(config) == 2
    network = build_network(config)
    assert (network.stft.n_fft, network.stft.hop_length, network.stft.win_length) == (
        2048, 512, 2048)
    layout = musical_bands(2048, 44100, 64)
    assert network.bsrnn.band_split.layout.bands == layout.bands and len(layout.bands) == 64
    assert len(network.bsrnn.tf_model.seqband) == 16
    assert list(network.bsrnn.mask_estim) == ["speech", "music", "effects"]
    state = network.state_dict()
    assert len(state) == 1794
    assert state["bsrnn.mask_estim.effects.freq_weights/63"].shape == (layout.widths[63],)
    assert state["bsrnn.tf_model.seqband.15.rnn.weight_hh_l0_reverse"].shape == (768, 256)


def test_the_published_bandit_v2_config():
    """config_dnr_bandit_v2_mus64.yaml: its keywords are the ``kwargs`` section; 8 s chunks
    at 48 kHz; without ``fs`` its bands are computed for 44.1 kHz (BandIt v2's default),
    which gives 48 kHz's bins too: the musical layout depends on ``fs`` only where a bin is
    narrower than MIDI note 0's 8.18 Hz (8 kHz with n_fft 2048 gives other bands)."""
    config = read_config(PUBLISHED / "zfturbo_config_dnr_bandit_v2_mus64.yaml")
    assert config.model_type == "bandit_v2" and MODEL_TYPES["bandit_v2"].model_section == "kwargs"
    assert config.model["stems"] == ["speech", "music", "sfx"]
    assert config.stems == ("speech", "music", "sfx")
    assert (config.chunk_size, config.num_overlap, config.sample_rate) == (384000, 4, 48000)
    network = build_network(config)
    assert network.band_split.layout.bands == musical_bands(2048, 44100, 64).bands
    assert network.band_split.layout.bands == musical_bands(2048, 48000, 64).bands
    assert musical_bands(2048, 8000, 64).bands != musical_bands(2048, 44100, 64).bands
    assert list(network.tf_model.seqband) == [str(i) for i in range(0, 32, 2)]
    state = network.state_dict()
    assert len(state) == 2946
    assert state["mask_estim.sfx.norm_mlp.63.combined.2.0.weight"].shape == (
        4 * network.band_split.layout.widths[63], 512)


def test_the_fixtures_are_bare_state_dicts(golden):
    """The checkpoints are what ``torch.save(network.state_dict())`` writes: no wrapper, no
    prefix, the STFT windows and (BandIt Plus: always; v2: with use_freq_weights) the bands'
    weights in float64, as ZFTurbo's networks hold them."""
    name = golden.folder.name
    assert golden.checkpoint.name == CHECKPOINTS[name]
    assert golden.names == STEMS[name]
    network = build_network(read_config(golden.config))
    saved = torch.load(golden.checkpoint, map_location="cpu", weights_only=True)
    assert set(saved) == set(network.state_dict())
    assert saved["stft.window"].dtype == torch.float32
    layout = (network.bsrnn if name == "bandit" else network).band_split.layout
    assert len(layout.bands) == {"bandit": 3, "bandit_v2": 6}[name]
    weights = [key for key in saved if "freq_weights/" in key]
    assert len(weights) == 3 * len(layout.bands)
    assert all(saved[key].dtype == torch.float64 for key in weights)
    for key in weights:
        band = int(key.rsplit("/", 1)[1])
        np.testing.assert_array_equal(saved[key].numpy(), layout.weights[band])


# -- against ZFTurbo ----------------------------------------------------------------------------
def test_cli_matches_zfturbo(golden, tmp_path):
    name = golden.folder.name
    stems = separate_with_cli(golden, tmp_path)
    assert tuple(stems) == STEMS[name]
    folder = Path(CHECKPOINTS[name]).stem
    assert written(tmp_path) == sorted(f"{folder}/mixture/{stem}.wav" for stem in STEMS[name])
    assert all(stem.shape == (2, LENGTH) for stem in stems.values())
    diffs = assert_matches_golden(golden, stems)
    for stem, diff in zip(golden.names, diffs):
        assert diff <= 1e-5 * np.abs(golden.stem(stem)).max()


def test_overlap_and_segment(golden, tmp_path):
    """--segment 0.3 --overlap 0.5 is ZFTurbo's demix with chunks of 2400 every 1200 samples;
    (BandIt Plus) the config's own chunking given as flags is the golden's."""
    if golden.folder.name == "bandit":
        (tmp_path / "same").mkdir()
        same = separate_with_cli(golden, tmp_path / "same", "--overlap", "4", "--segment", "0.5")
        assert_matches_golden(golden, same)

    (tmp_path / "other").mkdir()
    other = separate_with_cli(golden, tmp_path / "other", "--segment", "0.3", "--overlap", "0.5")
    model = load_model(weights=golden.checkpoint, options={"config": str(golden.config)})
    with torch.inference_mode():
        expected = zfturbo_demix(model.networks[0], mixture(golden), 2400, 2)
    for index, stem in enumerate(golden.names):
        assert_close_to_peak(expected[index], torch.from_numpy(other[stem]), rel=1e-5)
    assert (expected[0] - torch.from_numpy(golden.stem(golden.names[0]))).abs().max() > 1e-4


@pytest.mark.parametrize("name,flags,words", [
    ("bandit", ("--overlap", "1.5"), "--overlap 1.5: give a fraction from 0 to below 1"),
    ("bandit", ("--segment", "0.0001"),
     "chunk of 0 samples: BandIt Plus takes chunks of at least one sample"),
    ("bandit_v2", ("--segment", "0.015"),
     "a chunk of 120 samples is too short for this network (its STFT takes more than 128)"),
])
def test_invalid_overlap_or_segment_is_refused_in_one_line(tmp_path, name, flags, words):
    golden = load_golden(name)
    result = run_stemsplit(str(golden.mixture_path), "--weights", str(golden.checkpoint),
                           "--config", str(golden.config), "-o", "out", *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in one_line_error(result)
    assert not (tmp_path / "out").exists() or not written(tmp_path)


def test_chunk_lengths(golden):
    """BandIt Plus's STFT pads with zeros: any chunk from one sample (as ZFTurbo runs it);
    BandIt v2's reflects (the config's pad_mode): more than n_fft / 2 = 128 samples."""
    config = read_config(golden.config)
    shortest = {"bandit": 1, "bandit_v2": 129}[golden.folder.name]
    for chunk in (shortest, 800, 4000, 4001):
        assert adapter._valid_chunk(config, chunk, True) == chunk
    with pytest.raises(UsageError, match="chunk of|too short"):
        adapter._valid_chunk(config, shortest - 1, True)


def test_each_channel_is_separated_on_its_own(golden):
    """The channels are batch items: the left outputs do not depend on the right input."""
    model = load_model(weights=golden.checkpoint, options={"config": str(golden.config)})
    mix = mixture(golden)[:, :4000]
    with torch.inference_mode():
        both = model.networks[0](mix[None])
        other = model.networks[0](torch.stack([mix[0], -0.5 * mix[1]])[None])
    assert both.shape == (1, 3, 2, 4000)
    torch.testing.assert_close(both[0, :, 0], other[0, :, 0], rtol=0, atol=1e-6)
    assert (both[0, :, 1] - other[0, :, 1]).abs().max() > 1e-3


# -- what BandIt Plus's config does not say ----------------------------------------------------
def test_bandit_plus_ignores_its_configs_stft_keys(plus, tmp_path):
    """ZFTurbo's wrapper builds its STFT with the defaults whatever the config says
    (n_fft 2048, hop 512, a periodic Hann window, zero padding): the same stems."""
    text = plus.config.read_text()
    for old, new in (("hop_length: 512", "hop_length: 256"), ("win_length: 2048",
                                                               "win_length: 1024"),
                     ('window_fn: "hann_window"', 'window_fn: "hamming_window"'),
                     ('pad_mode: "constant"', 'pad_mode: "reflect"'),
                     ("normalized: true", "normalized: false"), ("power: null", "power: 2")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    ours = load_model(weights=plus.checkpoint, options={"config": str(path)}).networks[0]
    assert (ours.stft.n_fft, ours.stft.hop_length, ours.stft.win_length) == (2048, 512, 2048)
    reference = load_model(weights=plus.checkpoint,
                           options={"config": str(plus.config)}).networks[0]
    mix = mixture(plus)[None, :, :4000]
    with torch.inference_mode():
        torch.testing.assert_close(ours(mix), reference(mix), rtol=0, atol=0)


def test_frequency_weights_follow_each_versions_rule(tmp_path):
    """use_freq_weights false: BandIt Plus keeps the weights in its state dict (unused),
    BandIt v2 has none."""
    for name, section in (("bandit", "model"), ("bandit_v2", "kwargs")):
        golden = load_golden(name)
        text = golden.config.read_text().replace(f"{section}:\n", f"{section}:\n"
                                                 "  use_freq_weights: false\n", 1)
        if name == "bandit_v2":
            text = text.replace("  use_freq_weights: true\n", "")
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        network = build_network(read_config(path))
        weights = [key for key in network.state_dict() if "freq_weights/" in key]
        assert bool(weights) == (name == "bandit"), name


# -- bad configs and checkpoints ----------------------------------------------------------------
def fixture_config(tmp_path: Path, golden, old: str, new: str) -> Path:
    text = golden.config.read_text()
    assert old in text, old
    path = tmp_path / "config.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,words", [
    ("  n_bands: 3\n", "  n_bands: 3\n  n_heads: 4\n", "unknown key 'model.n_heads' for bandit"),
    ("  in_channel: 1\n", "", "the config's model section lacks in_channel"),
    ("  stems: ['speech', 'music', 'effects']", "  stems: ['music', 'speech', 'effects']",
     ("model.stems ['music', 'speech', 'effects'] are not the stems the training section "
     "names (['speech', 'music', 'effects'])")),
    ("  stems: ['speech', 'music', 'effects']", "  stems: ['speech', 'music']",
     "are not the stems the training section names"),
    ('  band_specs: "musical"', '  band_specs: "bark"', ("the 'bark' band layout is not "
     "supported (stemsplit computes 'musical' bands)")),
    ('  band_specs: "musical"', '  band_specs: "octaves"',
     "'octaves' is not a band layout BandIt knows"),
    ("  n_fft: 2048", "  n_fft: 4096", "n_fft must be 2048, not 4096"),
    ("  in_channel: 1", "  in_channel: 2", "in_channel must be 1"),
    ("  n_bands: 3\n", "  n_bands: 3\n  mult_add_mask: true\n", "mult_add_mask"),
    ('  rnn_type: "GRU"', '  rnn_type: "Transformer"', "rnn_type must be one of RNN, GRU, LSTM"),
    ('  hidden_activation: "Tanh"', '  hidden_activation: "os.system"',
     "hidden_activation 'os.system' is not a torch activation"),
    ("  emb_dim: 4", "  emb_dim: 0", "emb_dim must be a whole number >= 1, not 0"),
])
def test_bad_bandit_configs_are_one_clear_error(tmp_path, plus, old, new, words):
    path = fixture_config(tmp_path, plus, old, new)
    with pytest.raises(ModelError) as error:
        build_network(read_config(path))
    assert words in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("old,new,words", [
    ("  n_bands: 6\n", "  n_bands: 6\n  fs_out: 8000\n",
     "unknown key 'kwargs.fs_out' for bandit_v2"),
    ("  stems: ['speech', 'music', 'sfx']", "  stems: ['speech', 'music', 'effects']",
     "kwargs.stems ['speech', 'music', 'effects'] are not the stems the training section"),
    ("  band_type: musical", "  band_type: mel", "band_type must be 'musical', not 'mel'"),
    ("  in_channels: 1", "  in_channels: 2", "in_channels must be 1"),
    ("  power: null", "  power: 2", "power must be null"),
    ('  window_fn: "hann_window"', '  window_fn: "exec"', "window_fn must be one of"),
    ("  normalized: true", "  normalized: sometimes", "normalized must be true, false"),
    ("  treat_channel_as_feature: true", "  treat_channel_as_feature: false",
     "treat_channel_as_feature must be true"),
])
def test_bad_bandit_v2_configs_are_one_clear_error(tmp_path, old, new, words):
    path = fixture_config(tmp_path, load_golden("bandit_v2"), old, new)
    with pytest.raises(ModelError) as error:
        build_network(read_config(path))
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_a_checkpoint_that_does_not_fit_its_config(tmp_path, golden):
    bands = "  n_bands: 3\n" if golden.folder.name == "bandit" else "  n_bands: 6\n"
    other = fixture_config(tmp_path, golden, bands, "  n_bands: 5\n")
    with pytest.raises(ModelError, match=rf"{golden.checkpoint.name}: the checkpoint does not "
                                         r"match its config \(config.yaml\)") as error:
        load_model(weights=golden.checkpoint, options={"config": str(other)})
    assert "\n" not in str(error.value)


def test_the_cli_refuses_a_mismatched_checkpoint_in_one_line(tmp_path, plus):
    other = fixture_config(tmp_path, plus, "  emb_dim: 4\n", "  emb_dim: 8\n")
    result = run_stemsplit(str(plus.mixture_path), "--weights", str(plus.checkpoint),
                           "--config", str(other), "-o", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "the checkpoint does not match its config" in one_line_error(result)


def test_a_wrapped_checkpoint_loads_as_zfturbo_unwraps_it(tmp_path, plus):
    """ZFTurbo's loader also takes the state under ``state_dict``: the same network."""
    saved = torch.load(plus.checkpoint, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.chpt"
    torch.save({"state_dict": saved, "epoch": 3}, wrapped)
    ours = load_model(weights=wrapped, options={"config": str(plus.config)}).networks[0]
    bare = load_model(weights=plus.checkpoint, options={"config": str(plus.config)}).networks[0]
    for (key, a), (_, b) in zip(ours.state_dict().items(), bare.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
