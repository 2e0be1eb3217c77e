"""The msst family's table of model types (stemsplit/families/msst/types.py).

Each row gives what differs between BS-RoFormer, Mel-Band RoFormer and MDX23C: how the
network is built, the chunk lengths it takes, its audio channels, and how a config's keys
show the type. These tests check that each row gives what the family's per-type branches
gave before the table (restated below as ``old_*``), and that a row added to the table is
all a new type needs.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch

from stemsplit.errors import ModelError, UsageError
from stemsplit.families.base import ChunkingRequest
from stemsplit.families.msst import adapter
from stemsplit.families.msst.adapter import FAMILY, build_network
from stemsplit.families.msst.config import MODEL_TYPES, guess_model_type, read_config
from stemsplit.families.msst.types import ModelType
from stemsplit.engine import SeparationSettings, separate_tensor
from stemsplit.loading import load_model
from stemsplit.registry import load_registry
from tests.msst_models import config_sections, reference_network, write_config

NAMES = ("bs_roformer", "mel_band_roformer", "mdx23c")


# -- the per-type decisions as the family made them before the table ---------------------------
def old_guess(model: dict) -> str | None:
    if "num_subbands" in model or "num_scales" in model:
        return "mdx23c"
    if "num_bands" in model:
        return "mel_band_roformer"
    if "dim" in model and "depth" in model:
        return "bs_roformer"
    return None


def old_channels(config) -> int:
    if config.model_type == "mdx23c":
        return int(config.audio.get("num_channels", 2))
    return 2 if config.model.get("stereo", False) else 1


def old_valid_chunk(config, chunk: int, asked: bool) -> int:
    from stemsplit.models.mdx23c import chunk_size_for

    if config.model_type == "mel_band_roformer":
        hop = int(config.model.get("stft_hop_length", 512))
        valid = chunk - chunk % hop
    elif config.model_type == "mdx23c":
        scale = config.model.get("scale", (2, 2))
        try:
            valid = chunk_size_for(chunk, int(config.audio["hop_length"]),
                                   int(config.model["num_scales"]), int(scale[0]))
        except ValueError as error:
            raise (UsageError if asked else ModelError)(f"chunk of {chunk} samples: {error}") from None
    else:
        valid = chunk
    n_fft = int(config.model.get("stft_n_fft", config.audio.get("n_fft", 2048)))
    if valid <= n_fft // 2:
        raise (UsageError if asked else ModelError)(
            f"a chunk of {chunk} samples is too short for this network (its STFT takes "
            f"more than {n_fft // 2})")
    return valid


def small_config(tmp_path, model_type: str, **changes):
    sections = config_sections(model_type)
    for section, values in changes.items():
        sections[section] = values
    return read_config(write_config(tmp_path / f"{model_type}.yaml", sections)), sections


def outcome(function, *args):
    """What a call gives: its value, or its error's class and message."""
    try:
        return function(*args)
    except (ModelError, UsageError) as error:
        return type(error), str(error)


# -- the table -------------------------------------------------------------------------------------
def test_the_table_lists_the_types_in_the_order_messages_give():
    """The RoFormers and MDX23C first, as before the table grew; every row named as keyed."""
    assert tuple(MODEL_TYPES)[:3] == NAMES
    assert set(MODEL_TYPES) == set(NAMES) | {"scnet", "scnet_masked", "scnet_tran", "htdemucs",
                                              "bandit", "bandit_v2", "apollo"}
    for name, row in MODEL_TYPES.items():
        assert isinstance(row, ModelType) and row.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            row.name = "other"  # type: ignore[misc]
    (option,) = [o for o in FAMILY.options if o.flag == "--model-type"]
    names = list(MODEL_TYPES)
    assert option.help == (f"ZFTurbo-format: {', '.join(names[:-1])} or {names[-1]}, when the "
                           "config does not tell.")


def test_the_family_imports_no_torch():
    code = ("import sys, stemsplit.families.msst, stemsplit.families.msst.config, "
            "stemsplit.families.msst.types, stemsplit.registry; "
            "stemsplit.registry.load_registry(); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model_type", NAMES)
def test_each_row_builds_the_network_its_config_describes(tmp_path, model_type):
    """The builder gives the oracle's network (same state_dict names and shapes), the
    channels and the chunk rule what the family gave before."""
    config, sections = small_config(tmp_path, model_type)
    assert config.model_type == model_type
    ours = build_network(config)
    assert ours is not None and type(ours).__module__.startswith("stemsplit.models.")
    reference = reference_network(model_type, sections)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert MODEL_TYPES[model_type].channels(config) == old_channels(config) == 2
    for chunk in (1024, 1025, 1500, 2048, 20000, 44100, 44101, 88200, 130560, 130561, 352800):
        for asked in (False, True):
            assert outcome(adapter._valid_chunk, config, chunk, asked) == outcome(
                old_valid_chunk, config, chunk, asked), (chunk, asked)


@pytest.mark.parametrize("model_type,changes,channels", [
    ("bs_roformer", {"stereo": False}, 1),
    ("mel_band_roformer", {"stereo": False, "stft_hop_length": None}, 1),
    ("mdx23c", {"scale": None}, 2),
])
def test_channels_and_chunks_from_defaults(tmp_path, model_type, changes, channels):
    """Without the keys the rules read (a None here drops the key), the defaults apply as
    before: mono RoFormers, the Mel-Band hop of 512, MDX23C's scale (2, 2)."""
    sections = config_sections(model_type)
    for key, value in changes.items():
        if value is None:
            del sections["model"][key]
        else:
            sections["model"][key] = value
    if model_type == "mdx23c":
        del sections["audio"]["num_channels"]
    config = read_config(write_config(tmp_path / "c.yaml", sections))
    assert MODEL_TYPES[model_type].channels(config) == old_channels(config) == channels
    for chunk in (1000, 1537, 2048, 44100, 130561):
        for asked in (False, True):
            assert outcome(adapter._valid_chunk, config, chunk, asked) == outcome(
                old_valid_chunk, config, chunk, asked), (chunk, asked)


def test_chunk_errors_keep_their_words(tmp_path):
    config, _ = small_config(tmp_path, "mdx23c")
    with pytest.raises(UsageError, match=r"^chunk of 1000 samples: MDX23C: a segment of 1000"):
        adapter._valid_chunk(config, 1000, True)
    with pytest.raises(ModelError, match=r"^chunk of 1000 samples: MDX23C"):
        adapter._valid_chunk(config, 1000, False)
    config, _ = small_config(tmp_path, "bs_roformer")
    with pytest.raises(UsageError, match="too short for this network"):
        adapter._valid_chunk(config, 1024, True)


# -- recognising a type ----------------------------------------------------------------------------
@pytest.mark.parametrize("keys,expected", [
    ({"num_subbands", "num_bands", "dim", "depth"}, "mdx23c"),
    ({"num_scales"}, "mdx23c"),
    ({"num_bands", "dim", "depth"}, "mel_band_roformer"),
    ({"num_bands"}, "mel_band_roformer"),
    ({"dim", "depth"}, "bs_roformer"),
    ({"dim"}, None),
    (set(), None),
])
def test_guess_model_type_keeps_its_precedence(keys, expected):
    model = dict.fromkeys(keys, 1)
    assert guess_model_type(model) == old_guess(model) == expected


def test_the_configs_own_model_type_comes_before_the_guess(tmp_path):
    sections = config_sections("mel_band_roformer")
    path = write_config(tmp_path / "c.yaml", sections)
    assert read_config(path).model_type == "mel_band_roformer"
    sections["training"]["model_type"] = "bs_roformer"
    write_config(path, sections)
    assert read_config(path).model_type == "bs_roformer"
    assert read_config(path, "mdx23c").model_type == "mdx23c"


# -- unknown types -----------------------------------------------------------------------------------
def test_an_unknown_type_names_the_known_ones(tmp_path):
    config, sections = small_config(tmp_path, "bs_roformer")
    with pytest.raises(ModelError, match=r"'scnet_unofficial' is not one stemsplit runs") as error:
        read_config(config.path, "scnet_unofficial")
    assert error.value.hint == f"give --model-type ({', '.join(MODEL_TYPES)})"
    sections["model"] = {"width": 3}
    with pytest.raises(ModelError, match=r"cannot tell which network the config describes$"):
        read_config(write_config(tmp_path / "odd.yaml", sections))

    stray = dataclasses.replace(config, model_type="scnet_unofficial")
    for call in (lambda: build_network(stray), lambda: adapter._valid_chunk(stray, 44100, True)):
        with pytest.raises(ModelError,
                           match="'scnet_unofficial' is not a network stemsplit runs") as error:
            call()
        assert error.value.hint == f"the model types are {', '.join(MODEL_TYPES)}"


@pytest.mark.parametrize("value", ['"scnet_unofficial"', '["bs_roformer"]', "{ a = 1 }", "3"])
def test_the_registry_refuses_an_unknown_type(tmp_path, value):
    path = registry_with(tmp_path, value)
    with pytest.raises(ModelError, match=r"model_type must be one of "
                                         + re.escape(", ".join(MODEL_TYPES)) + ", not "):
        load_registry(path)


def registry_with(tmp_path, model_type: str):
    path = tmp_path / "weights.toml"
    path.write_text(f'''[models.m]
family = "msst"
model_type = {model_type}
stems = ["vocals", "accompaniment"]
sample_rate = 44100
files = [
  {{ name = "m.ckpt", url = "https://example.invalid/m.ckpt" }},
  {{ name = "m.yaml", url = "https://example.invalid/m.yaml" }},
]
''')
    return path


# -- a row is all a new type needs -----------------------------------------------------------------
class Gain(torch.nn.Module):
    """A network that gives each stem as the mixture times a learnt gain."""

    def __init__(self, num_stems: int) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(num_stems))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return mix[:, None] * self.gain[None, :, None, None]


def _build_gain(config) -> Gain:
    unknown = sorted(set(config.model) - {"gain_stems", "gain_channels"})
    if unknown:
        raise ModelError(f"unknown key 'model.{unknown[0]}' for gain")
    return Gain(config.model["gain_stems"])


GAIN = ModelType("gain", build=_build_gain,
                 valid_chunk=lambda config, chunk: chunk - chunk % 1000,
                 channels=lambda config: config.model["gain_channels"],
                 recognises=lambda model: "gain_stems" in model, guess_rank=-1)


def test_a_new_row_is_picked_up_everywhere(tmp_path, monkeypatch):
    """Put a row in the table and nothing else: weights.toml takes its name, a config is
    recognised as it, the network is built, loaded, chunked and run through the engine."""
    monkeypatch.setitem(MODEL_TYPES, "gain", GAIN)

    assert load_registry(registry_with(tmp_path, '"gain"')).get("m").config.model_type == "gain"
    # Its recogniser ranks first: these keys would otherwise say bs_roformer.
    assert guess_model_type({"gain_stems": 1, "dim": 1, "depth": 1}) == "gain"

    sections = config_sections("bs_roformer", chunk_size=44100,
                               model={"gain_stems": 1, "gain_channels": 2})
    folder = tmp_path / "model"
    folder.mkdir()
    config = read_config(write_config(folder / "gain.yaml", sections))
    assert config.model_type == "gain" and isinstance(build_network(config), Gain)
    torch.save({"gain": torch.tensor([0.25])}, folder / "gain.ckpt")

    model = load_model(weights=folder / "gain.ckpt")
    assert model.audio_channels == 2 and model.sources == ("vocals", "accompaniment")
    (network,) = model.engine_networks(ChunkingRequest(segment_seconds=0.5))
    assert network.chunking.length == 22000  # its own chunk rule: whole thousands
    mix = torch.randn(2, 30000, generator=torch.Generator().manual_seed(0))
    stems = separate_tensor(mix, model.engine_networks(ChunkingRequest()), model.sample_rate,
                            SeparationSettings(), block_frames=100_000)
    torch.testing.assert_close(stems[0], 0.25 * mix, atol=1e-6, rtol=0)

    monkeypatch.delitem(MODEL_TYPES, "gain")
    with pytest.raises(ModelError, match="'gain' is not one stemsplit runs"):
        read_config(config.path, "gain")
