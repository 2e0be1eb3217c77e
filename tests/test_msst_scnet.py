"""SCNet, the masked SCNet and SCNet-Tran in the msst family, against ZFTurbo's inference.

The golden fixtures ``scnet``, ``scnet_masked`` and ``scnet_tran`` (tests/zfturbo_golden/
scnet.py) hold small random-weight networks in the published layout (a plain
``torch.save`` of the state_dict), their configs, an 8 kHz stereo mixture and the stems
ZFTurbo's inference gives for it (``inference.normalize`` included). The full-size
networks of the published configs are checked against the key set and shapes ZFTurbo's
classes have (recorded below), without allocating their weights.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stemsplit.engine import SeparationSettings, separate_tensor
from stemsplit.errors import ModelError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.families.msst.adapter import build_network
from stemsplit.families.msst.config import read_config
from stemsplit.families.msst.types import MODEL_TYPES, guess_model_type
from stemsplit.loading import load_model
from stemsplit.models.scnet import MaskedSCNet, SCNet, end_padding, shortest_chunk
from stemsplit.models.scnet_tran import SCNetTran
from tests.golden import (
    assert_matches_golden,
    load_golden,
    one_line_error,
    run_stemsplit,
    separate_with_cli,
)
from tests.msst_models import zfturbo_separate
from tests.parity import assert_close_to_peak, one_thread  # noqa: F401 (autouse fixture)

TYPES = ("scnet", "scnet_masked", "scnet_tran")
STEMS = {"scnet": ("vocals", "other"), "scnet_masked": ("drums", "bass", "other", "vocals"),
         "scnet_tran": ("vocals", "accompaniment")}
LENGTH = 12000  # 1.5 s at 8 kHz

# ZFTurbo's configs/config_musdb18_scnet.yaml at the fixtures' commit, as published.
PUBLISHED_SCNET = """audio:
  chunk_size: 485100 # 44100 * 11
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000

model:
  sources:
    - drums
    - bass
    - other
    - vocals
  audio_channels: 2
  dims:
    - 4
    - 32
    - 64
    - 128
  nfft: 4096
  hop_size: 1024
  win_size: 4096
  normalized: True
  band_SR:
    - 0.175
    - 0.392
    - 0.433
  band_stride:
    - 1
    - 4
    - 16
  band_kernel:
    - 3
    - 4
    - 16
  conv_depths:
    - 3
    - 2
    - 1
  compress: 4
  conv_kernel: 3
  num_dplayer: 6
  expand: 1

training:
  batch_size: 10
  gradient_accumulation_steps: 1
  grad_clip: 0
  instruments:
    - drums
    - bass
    - other
    - vocals
  lr: 5.0e-04
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: false # it's needed for checking on multisong dataset if other is actually instrumental
  use_amp: true # enable or disable usage of mixed precision (float16) - usually it must be true

augmentations:
  enable: true # enable or disable all augmentations (to fast disable if needed)
  loudness: true # randomly change loudness of each stem on the range (loudness_min; loudness_max)
  loudness_min: 0.5
  loudness_max: 1.5
  mixup: true # mix several stems of same type with some probability (only works for dataset types: 1, 2, 3)
  mixup_probs:
    !!python/tuple # 2 additional stems of the same type (1st with prob 0.2, 2nd with prob 0.02)
    - 0.2
    - 0.02
  mixup_loudness_min: 0.5
  mixup_loudness_max: 1.5

inference:
  batch_size: 8
  dim_t: 256
  num_overlap: 4
  normalize: true
"""

# The model sections of config_musdb18_scnet_large.yaml and config_musdb18_scnet_tran.yaml
# where they differ from the above.
LARGE = {"    - 32\n    - 64\n    - 128\n": "    - 64\n    - 128\n    - 256\n",
         "    - 0.175\n    - 0.392\n    - 0.433\n": "    - 0.225\n    - 0.372\n    - 0.403\n"}
TRAN = {"  expand: 1\n": "  expand: 1\n  tran_rotary_embedding_dim: 64\n  tran_depth: 1\n"
                         "  tran_heads: 8\n  tran_dim_head: 64\n  tran_attn_dropout: 0.0\n"
                         "  tran_ff_dropout: 0.0\n  tran_flash_attn: False\n",
        "  num_overlap: 4\n  normalize: true\n": "  num_overlap: 2\n  normalize: false\n"}

# ZFTurbo's networks for those configs (torch 2.9.1, on the meta device): state_dict
# entries, values, and the first 16 hex digits of sha256 over "key(shape)" in key order.
ZFTURBO_STATE = {
    "scnet": (372, 10578768, "de5e6e99d752cfa0"),
    "scnet_large": (372, 42181232, "c13ac5d4c08212b3"),
    "scnet_masked": (377, 10597284, "645f02ca903818e0"),
    "scnet_tran": (397, 10380352, "99ba364164cd3e18"),
}


def edited(text: str, changes: dict[str, str]) -> str:
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def state_signature(network: torch.nn.Module) -> tuple[int, int, str]:
    state = network.state_dict()
    text = "".join(f"{key}{tuple(value.shape)}" for key, value in sorted(state.items()))
    return (len(state), sum(value.numel() for value in state.values()),
            hashlib.sha256(text.encode()).hexdigest()[:16])


def copy_fixture(name: str, folder: Path, config: str | None = None) -> tuple[Path, Path]:
    """The fixture's checkpoint and config (its text replaced by ``config`` if given) in
    ``folder``; their paths."""
    golden = load_golden(name)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / golden.checkpoint.name
    shutil.copyfile(golden.checkpoint, checkpoint)
    path = folder / "config.yaml"
    path.write_text(config if config is not None else golden.config.read_text())
    return checkpoint, path


def read_mixture(golden) -> torch.Tensor:
    data, _ = sf.read(golden.mixture_path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy())


def engine_stems(model, mix: torch.Tensor, request: ChunkingRequest | None = None):
    """Our stems of ``mix`` through the engine, by name (the residual stem as the pipeline
    works it out)."""
    request = request or ChunkingRequest()
    stems = separate_tensor(mix, model.engine_networks(request), model.sample_rate,
                            SeparationSettings(), block_frames=100_000)
    named = dict(zip(model.sources, stems))
    if model.residual_stem is not None:
        named[model.residual_stem] = mix - stems.sum(0)
    return named


@pytest.fixture(scope="module", params=TYPES)
def golden(request):
    return request.param, load_golden(request.param)


# -- against ZFTurbo --------------------------------------------------------------------------
def test_cli_matches_zfturbo(golden, tmp_path):
    """``stemsplit MIX --weights CKPT --config config.yaml --float32 --clip-mode none``: every
    stem within 1e-5 of its peak of ZFTurbo's; a target's complement is the mixture minus it."""
    name, fixture = golden
    stems = separate_with_cli(fixture, tmp_path)
    assert tuple(stems) == STEMS[name]
    assert all(stem.shape == (2, LENGTH) for stem in stems.values())
    differences = assert_matches_golden(fixture, stems)
    assert max(differences) > 0  # the stems were computed, not copied
    if name == "scnet_tran":
        complement = read_mixture(fixture) - torch.from_numpy(fixture.stem("vocals"))
        assert_close_to_peak(complement, torch.from_numpy(stems["accompaniment"]), rel=1e-5)


def test_the_fixtures_are_the_published_layout(golden):
    """The checkpoint is a plain state_dict with exactly our network's keys (the masked
    SCNet's positional embedding and mask network, SCNet-Tran's unused first_conv and its
    rotary tables); the config's type is what ZFTurbo is told."""
    name, fixture = golden
    config = read_config(fixture.config)
    assert config.model_type == name and config.stems == STEMS[name]
    network = build_network(config)
    assert type(network) is {"scnet": SCNet, "scnet_masked": MaskedSCNet,
                             "scnet_tran": SCNetTran}[name]
    saved = torch.load(fixture.checkpoint, map_location="cpu", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in saved.values())
    assert set(saved) == set(network.state_dict())
    extra = {"scnet": set(), "scnet_masked": {"pos_embed_f", "mask_layer.0.weight"},
             "scnet_tran": {"first_conv.weight",
                            "separation_net.dp_modules.1.time_layer.layers.0.0.rotary_embed.freqs"}}
    assert extra[name] <= set(saved)
    assert "window" not in saved and fixture.meta["model_type"] == name


def test_segment_and_overlap_given_as_the_config_gives_them_change_nothing(golden):
    """--segment as long as the config's chunk and --overlap its num_overlap: ZFTurbo's
    stems (in process, through the engine)."""
    _, fixture = golden
    config = read_config(fixture.config)
    model = load_model(weights=fixture.checkpoint, options={"config": str(fixture.config)})
    request = ChunkingRequest(segment_seconds=config.chunk_size / config.sample_rate,
                              overlap=config.num_overlap)
    (network,) = model.engine_networks(request)
    assert (network.chunking.length, network.chunking.stride) == (
        config.chunk_size, config.chunk_size // config.num_overlap)
    stems = engine_stems(model, read_mixture(fixture), request)
    assert_matches_golden(fixture, {k: v.numpy() for k, v in stems.items()})


def test_cli_segment_and_overlap(tmp_path):
    """--segment 0.3 --overlap 3 on the SCNet fixture: chunks of 2400 samples every 800,
    as ZFTurbo's demix of our network (checked against ZFTurbo's above) with that chunk
    size and num_overlap 3; normalised as the config says."""
    fixture = load_golden("scnet")
    stems = separate_with_cli(fixture, tmp_path, "--segment", "0.3", "--overlap", "3")
    model = load_model(weights=fixture.checkpoint, options={"config": str(fixture.config)})
    sections = {"inference": {"normalize": True}, "audio": {}, "training": {}}
    expected = zfturbo_separate(model.networks[0], read_mixture(fixture), sections,
                                chunk_size=2400, num_overlap=3)
    for index, name in enumerate(STEMS["scnet"]):
        assert_close_to_peak(expected[index], torch.from_numpy(stems[name]), rel=1e-5)
    # Not ZFTurbo's chunking: different stems.
    assert np.abs(stems["vocals"] - fixture.stem("vocals")).max() > 1e-4


def test_cli_refuses_a_segment_the_network_cannot_take(tmp_path):
    """One error line, exit 2 (the user's flag), nothing written."""
    fixture = load_golden("scnet")
    result = run_stemsplit(str(fixture.mixture_path), "--weights", str(fixture.checkpoint),
                           "--config", str(fixture.config), "-o", "out", "--segment", "0.005",
                           cwd=tmp_path)
    assert result.returncode == 2
    assert one_line_error(result) == ("error: chunk of 40 samples: SCNet's STFT (nfft 256) "
                                      "takes at least 64 samples")
    assert not (tmp_path / "out").exists()


def test_the_shortest_chunk():
    """SCNet pads its input to an odd number of hops (an even number of STFT frames); the
    STFT's reflection needs more than nfft // 2 samples of it."""
    for hop in (64, 100, 1024):
        for length in range(1, 5 * hop):
            padding = end_padding(length, hop)
            assert 1 <= padding <= 2 * hop and (length + padding) % hop == 0
            assert (length + padding) // hop % 2 == 1
    for nfft, hop in ((256, 64), (4096, 1024), (4096, 512), (2048, 1024), (512, 512), (300, 100)):
        shortest = shortest_chunk(nfft, hop)
        assert shortest + end_padding(shortest, hop) > nfft // 2
        assert shortest == 1 or shortest - 1 + end_padding(shortest - 1, hop) <= nfft // 2
    network = SCNet(sources=["a"], dims=[4, 8], nfft=256, hop_size=64, win_size=256,
                    num_dplayer=2).eval()
    assert network(torch.zeros(1, 2, 64)).shape == (1, 1, 2, 64)
    with pytest.raises(RuntimeError):
        network(torch.zeros(1, 2, 63))


# -- which network a config describes -------------------------------------------------------------
@pytest.mark.parametrize("variant,model_type,stems,overlap,normalize", [
    ("scnet", "scnet", ("drums", "bass", "other", "vocals"), 4, True),
    ("scnet_large", "scnet", ("drums", "bass", "other", "vocals"), 4, True),
    ("scnet_tran", "scnet_tran", ("drums", "bass", "other", "vocals"), 2, False),
])
def test_published_configs_build_zfturbos_networks(tmp_path, variant, model_type, stems,
                                                   overlap, normalize):
    """The published configs are read as they are, their type told from their keys, and
    the full-size networks have ZFTurbo's state_dict keys and shapes."""
    text = {"scnet": PUBLISHED_SCNET, "scnet_large": edited(PUBLISHED_SCNET, LARGE),
            "scnet_tran": edited(PUBLISHED_SCNET, TRAN)}[variant]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = read_config(path)
    assert (config.model_type, config.stems, config.chunk_size, config.num_overlap,
            config.normalize, config.sample_rate) == (
        model_type, stems, 485100, overlap, normalize, 44100)
    assert MODEL_TYPES[model_type].channels(config) == 2
    with torch.device("meta"):
        network = build_network(config)
    assert state_signature(network) == ZFTURBO_STATE[variant]
    if variant == "scnet":
        config = read_config(path, "scnet_masked")  # the masked SCNet's keys are SCNet's
        with torch.device("meta"):
            assert state_signature(build_network(config)) == ZFTURBO_STATE["scnet_masked"]


@pytest.mark.parametrize("keys,expected", [
    ({"band_SR", "dims", "nfft"}, "scnet"),
    ({"band_SR", "tran_depth"}, "scnet_tran"),
    ({"band_SR", "tran_heads", "tran_dim_head"}, "scnet_tran"),
    ({"tran_depth"}, None),
    ({"dims", "bandsplit_ratios", "n_fft"}, None),  # ZFTurbo's scnet_unofficial
    ({"nfft", "channels", "depth"}, None),  # an htdemucs section
    ({"num_subbands", "num_bands", "dim", "depth"}, "mdx23c"),
    ({"num_bands", "dim", "depth"}, "mel_band_roformer"),
    ({"dim", "depth"}, "bs_roformer"),
    (set(), None),
])
def test_guessing_tells_scnet_from_the_other_types(keys, expected):
    assert guess_model_type(dict.fromkeys(keys, 1)) == expected


def test_model_type_picks_the_network_where_the_keys_cannot(tmp_path):
    """The masked SCNet has SCNet's keys: without training.model_type its checkpoint does not
    fit the guessed SCNet (one clear error); --model-type or training.model_type picks it and
    gives ZFTurbo's stems."""
    fixture = load_golden("scnet_masked")
    text = edited(fixture.config.read_text(), {"  model_type: scnet_masked\n": ""})
    checkpoint, path = copy_fixture("scnet_masked", tmp_path / "model", text)
    assert read_config(path).model_type == "scnet"
    with pytest.raises(ModelError, match=r"does not match its config \(config.yaml\).*"
                                         r"Unexpected key\(s\) in state_dict: \"pos_embed_f\""):
        load_model(weights=checkpoint, options={"config": str(path)})

    model = load_model(weights=checkpoint, options={"config": str(path),
                                                    "model_type": "scnet_masked"})
    assert model.details.model_type == "scnet_masked"
    stems = engine_stems(model, read_mixture(fixture))
    assert_matches_golden(fixture, {k: v.numpy() for k, v in stems.items()})

    # training.model_type says it too; the flag comes first.
    assert read_config(fixture.config).model_type == "scnet_masked"
    assert read_config(fixture.config, "scnet").model_type == "scnet"


# -- configs and checkpoints that do not fit ----------------------------------------------------------
@pytest.mark.parametrize("name", TYPES)
def test_an_unknown_model_key_is_one_clear_error(tmp_path, name):
    fixture = load_golden(name)
    text = edited(fixture.config.read_text(), {"  nfft: 256\n": "  nfft: 256\n  n_mels: 64\n"})
    checkpoint, path = copy_fixture(name, tmp_path, text)
    with pytest.raises(ModelError, match=rf"^config.yaml \({name}\): unknown key 'model.n_mels' "
                                         rf"for {name}$"):
        load_model(weights=checkpoint, options={"config": str(path)})


def test_a_tran_key_in_a_plain_scnet_config_is_unknown(tmp_path):
    """A config that says it is a plain SCNet and has a transformer key: that key is named."""
    fixture = load_golden("scnet")
    text = edited(fixture.config.read_text(),
                  {"  instruments:": "  model_type: scnet\n  instruments:",
                   "  expand: 1\n": "  expand: 1\n  tran_depth: 1\n"})
    checkpoint, path = copy_fixture("scnet", tmp_path, text)
    with pytest.raises(ModelError, match=r"^config.yaml \(scnet\): unknown key "
                                         r"'model.tran_depth' for scnet$") as error:
        load_model(weights=checkpoint, options={"config": str(path)})
    assert error.value.hint == "stemsplit may not know this variant of the network yet"


@pytest.mark.parametrize("name,changes,words", [
    ("scnet", {"dims: [4, 8, 10, 12]": "dims: [4, 8, 10, 14]"},
     r"size mismatch for encoder\.2\.SDlayer\.convs\.0\.weight"),
    ("scnet", {"num_dplayer: 4": "num_dplayer: 2"},
     r"Unexpected key\(s\) in state_dict: \"separation_net\.dp_modules\.2\."),
    ("scnet_masked", {"  model_type: scnet_masked\n": "  model_type: scnet\n"},
     r"Unexpected key\(s\) in state_dict: \"pos_embed_f\""),
    ("scnet_tran", {"tran_heads: 2": "tran_heads: 4"},
     r"size mismatch for separation_net\.dp_modules\.0\.time_layer\.layers\.0\.0\.to_qkv"),
    ("scnet_tran", {"tran_depth: 1": "tran_depth: 2"},
     r"Missing key\(s\) in state_dict: \"separation_net\.dp_modules\.0\.time_layer\.layers\.1"),
])
def test_a_checkpoint_that_does_not_fit_its_config_is_one_clear_error(tmp_path, name, changes,
                                                                      words):
    fixture = load_golden(name)
    checkpoint, path = copy_fixture(name, tmp_path, edited(fixture.config.read_text(), changes))
    with pytest.raises(ModelError) as error:
        load_model(weights=checkpoint, options={"config": str(path)})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{checkpoint.name}: the checkpoint does not match its config "
                              "(config.yaml): ")
    assert re.search(words, message), message


@pytest.mark.parametrize("name,changes,words", [
    ("scnet", {"sources: ['vocals', 'other']": "sources: ['vocals', 'other', 'drums']"},
     ("model.sources names 3 stem(s) (['vocals', 'other', 'drums']), but the config's "
      "training section names 2 output stem(s) (['vocals', 'other'])")),
    ("scnet", {"sources: ['vocals', 'other']": "sources: vocals"},
     "model.sources must list the network's stems, not 'vocals'"),
    ("scnet", {"dims: [4, 8, 10, 12]": "dims: [2, 8, 10, 12]"},
     "dims[0] must be 2 * audio_channels = 4 (real and imaginary planes per channel), not 2"),
    ("scnet", {"num_dplayer: 4": "num_dplayer: 3"}, "num_dplayer must be even"),
    ("scnet", {"band_SR: [0.175, 0.392, 0.433]": "band_SR: [0.5, 0.5]"},
     "band_SR must list three values (low, mid, high bands), not [0.5, 0.5]"),
    ("scnet", {"conv_kernel: 3": "conv_kernel: 4"}, "conv_kernel must be odd, not 4"),
    ("scnet_masked", {"win_size: 256": "win_size: 200"},
     "the masked SCNet's Hann window is nfft long: win_size (200) must equal nfft (256)"),
    ("scnet_tran", {"tran_rotary_embedding_dim: 8": "tran_rotary_embedding_dim: 16"},
     "tran_rotary_embedding_dim (16) must be between 2 and tran_dim_head (8)"),
])
def test_a_config_the_network_cannot_take_is_one_clear_error(tmp_path, name, changes, words):
    fixture = load_golden(name)
    checkpoint, path = copy_fixture(name, tmp_path, edited(fixture.config.read_text(), changes))
    with pytest.raises(ModelError) as error:
        load_model(weights=checkpoint, options={"config": str(path)})
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"config.yaml ({name}): ")
    assert words in message, message


def test_segment_errors_are_usage_errors_and_config_chunks_model_errors(tmp_path):
    """A --segment too short for the network, or an --overlap that is no overlap, is the
    user's (UsageError); a config whose chunk_size is too short, the model's (ModelError)."""
    fixture = load_golden("scnet")
    model = load_model(weights=fixture.checkpoint, options={"config": str(fixture.config)})
    with pytest.raises(UsageError, match=r"^chunk of 63 samples: SCNet's STFT \(nfft 256\) "
                                         r"takes at least 64 samples$"):
        model.engine_networks(ChunkingRequest(segment_seconds=63 / 8000))
    for overlap in (1.0, 1.5, -0.5):
        with pytest.raises(UsageError, match=r"^--overlap: "):
            model.engine_networks(ChunkingRequest(overlap=overlap))
    text = edited(fixture.config.read_text(), {"chunk_size: 4000": "chunk_size: 50"})
    checkpoint, path = copy_fixture("scnet", tmp_path, text)
    model = load_model(weights=checkpoint, options={"config": str(path)})
    with pytest.raises(ModelError, match=r"^chunk of 50 samples: SCNet's STFT"):
        model.engine_networks(ChunkingRequest())
