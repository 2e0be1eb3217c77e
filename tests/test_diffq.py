"""diffq-quantized demucs models (mdx_q, mdx_extra_q), unpacked by our own code.

The checkpoints are random-weight members packed by diffq (a test oracle, never a runtime
dependency) through demucs 4.1.0's own quantizer and state code, written as the published
``.th`` packages and as Hub ``.safetensors`` with their ``structure`` metadata. The weights we
unpack must be bit for bit those demucs restores, and the stems those demucs computes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from stemsplit.errors import ModelError
from tests.checkpoints import (
    DEMUCS,
    DIFFQ_PUBLISHED,
    HDEMUCS,
    HTDEMUCS,
    SMALL_DEMUCS_KWARGS,
    SMALL_HDEMUCS_KWARGS,
    SMALL_KWARGS,
    bag_yaml_text,
    legacy_th_bytes,
    make_demucs_member,
    make_diffq_member,
    safetensors_bytes,
    write_hf_bag,
    write_legacy_th,
)
from tests.oracles import require
from tests.test_parity import SAMPLE_RATE, apply_demucs_bag, assert_parity, test_mixture

# Most parameters of the tiny test networks are quantized with this min_size (MB); the
# published 0.2 would leave all but two or three of them unquantized.
SMALL = {"min_size": 1e-4}

MDX_MEMBERS = [  # mdx's members (2 Demucs, 2 HDemucs), tiny; the registry's signatures
    (DEMUCS, [], SMALL_DEMUCS_KWARGS, 40, "6b9c2ca1"),
    (DEMUCS, [], {**SMALL_DEMUCS_KWARGS, "resample": False}, 41, "b72baf4e"),
    (HDEMUCS, [], SMALL_HDEMUCS_KWARGS, 42, "42e558d4"),
    (HDEMUCS, [], {**SMALL_HDEMUCS_KWARGS, "cac": False}, 43, "305bc58f"),
]
MDX_WEIGHTS = [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0],
               [1.0, 0.0, 1.0, 1.0]]
MDX_EXTRA_SIGS = ["83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"]


@pytest.fixture(autouse=True)
def diffq_oracle():
    return require("diffq")


def _read_and_build(path: Path) -> torch.nn.Module:
    from stemsplit.families.demucs.adapter import build_network
    from stemsplit.families.demucs.checkpoint import read_checkpoint

    package = read_checkpoint(path)
    assert package.quantized is not None and package.state == {}
    return build_network(package.klass, package.args, package.kwargs, package.state,
                         package.quantized, package.source)


def _write_both(state: dict, klass: str, kwargs: dict, folder: Path) -> list[Path]:
    th = folder / "member.th"
    th.write_bytes(legacy_th_bytes(state, klass, [], kwargs))
    st = folder / "member.safetensors"
    st.write_bytes(safetensors_bytes(state, klass, [], kwargs))
    return [th, st]


# --------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("nbits", [1, 2, 7, 8, 9, 14, 15])
@pytest.mark.parametrize("length", [1, 2047, 2048, 6001])
def test_unpacking_inverts_diffq_bitpack(nbits: int, length: int) -> None:
    from diffq import bitpack, torch_pack

    from stemsplit.families.demucs.diffq import _unpack

    generator = torch.Generator().manual_seed(nbits * 10000 + length)
    values = torch.randint(0, 2 ** nbits, (length,), generator=generator, dtype=torch.int16)
    packed = bitpack.pack(values, nbits)
    assert torch.equal(_unpack(packed, length, False, "levels", nbits=nbits), values)
    if length < 3000:  # diffq's pure-torch packer is slow
        packed = torch_pack.pack(values, nbits)
        assert torch.equal(_unpack(packed, length, True, "levels", nbits=nbits), values)
    automatic = bitpack.pack(values)  # nbits from the largest value, as for the bits
    assert torch.equal(_unpack(automatic, length, False, "bits"), values)


# --------------------------------------------------------------------------- weights


def test_our_networks_walk_their_parameters_in_demucs_order() -> None:
    """diffq's lists name no parameter: they follow the module walk, which must be demucs'."""
    import inspect

    from stemsplit.families.demucs.adapter import network_class

    def walk(model):
        return [(f"{module_name}.{name}", tuple(param.shape))
                for module_name, module in model.named_modules()
                for name, param in module.named_parameters(recurse=False)]

    for klass in (DEMUCS, HDEMUCS, HTDEMUCS):
        theirs, _ = make_demucs_member(klass, [], SMALL_KWARGS[klass], seed=0)
        cls = network_class(klass)
        known = inspect.signature(cls).parameters
        ours = cls(**{k: v for k, v in SMALL_KWARGS[klass].items() if k in known})
        assert walk(ours) == walk(theirs), klass


@pytest.mark.parametrize("klass,settings", [
    (DEMUCS, SMALL),
    (HDEMUCS, SMALL),
    (HTDEMUCS, SMALL),
    (HDEMUCS, DIFFQ_PUBLISHED),
    (DEMUCS, {**SMALL, "packed": False}),
    (HDEMUCS, {"min_size": 0.05, "torch_pack": True}),
    (DEMUCS, {"min_size": 1e-3, "group_size": 4, "spread_bits": False}),
], ids=["demucs", "hdemucs", "htdemucs", "hdemucs-published", "demucs-unpacked",
        "hdemucs-torch-pack", "demucs-group4-8bits"])
def test_unpacked_weights_are_demucs_restored_weights(klass, settings, tmp_path: Path) -> None:
    state, restored, _ = make_diffq_member(klass, [], SMALL_KWARGS[klass], 7, **settings)
    expected = restored.state_dict()
    assert len(state["quantized"]) > 0
    for path in _write_both(state, klass, SMALL_KWARGS[klass], tmp_path):
        ours = _read_and_build(path).state_dict()
        assert list(ours) == list(expected), path.suffix
        for key, value in expected.items():
            assert ours[key].dtype == torch.float32
            assert torch.equal(ours[key], value), f"{path.suffix}: {key}"


def test_hub_file_is_what_demucs_reads(tmp_path: Path) -> None:
    """The flattened safetensors (structure metadata) round-trips through demucs' own reader."""
    from demucs.hf import load_safetensors_model

    state, restored, _ = make_diffq_member(HDEMUCS, [], SMALL_HDEMUCS_KWARGS, 8, **SMALL)
    _, st = _write_both(state, HDEMUCS, SMALL_HDEMUCS_KWARGS, tmp_path)
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as file:
        metadata = file.metadata()
        dtypes = {file.get_tensor(key).dtype for key in file.keys()}
    assert json.loads(metadata["structure"])["_dict"][0][0] == "quantized"
    assert dtypes == {torch.int64, torch.float32}  # packed levels and bits; 'others' as trained
    theirs = load_safetensors_model(st).state_dict()
    for key, value in restored.state_dict().items():
        assert torch.equal(theirs[key], value), key


# --------------------------------------------------------------------------- stems


def test_mdx_q_from_the_hub_cache_equals_demucs(monkeypatch, tmp_path: Path) -> None:
    """mdx_q by name, its four members (Demucs and HDemucs) diffq-packed in Hub safetensors."""
    import stemsplit
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model

    from stemsplit.pipeline import separate_array
    from tests.checkpoints import hf_repo_dir

    home = tmp_path / "hf"
    sigs = write_hf_bag(home, "mdx_q", "adefossez/Demucs-mdx_q", MDX_MEMBERS, MDX_WEIGHTS, 44,
                        quantizer=SMALL)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mix = test_mixture(7.0, seed=11)
    model = stemsplit.load_model("mdx_q")
    assert "Hugging Face cache" in model.origin
    stems = separate_array(mix, SAMPLE_RATE, model)
    ours = torch.stack([torch.from_numpy(stems[source]) for source in model.sources])

    snapshot = next((hf_repo_dir(home, "adefossez/Demucs-mdx_q") / "snapshots").iterdir())
    bag = BagOfModels([load_safetensors_model(snapshot / f"{sig}.safetensors") for sig in sigs],
                      MDX_WEIGHTS, 44)
    expected = apply_demucs_bag(bag, mix)
    assert ours.shape == expected.shape == (4, 2, mix.shape[1])
    assert_parity(ours, expected)


def test_mdx_extra_q_legacy_files_cli_equals_demucs_cli(tmp_path: Path) -> None:
    """`stemsplit -n mdx_extra_q --repo DIR` against `demucs -n mdx_extra_q --repo DIR`, both
    on the same diffq-packed <sig>-<sha8>.th packages (HDemucs x4)."""
    repo = tmp_path / "repo"
    for index, sig in enumerate(MDX_EXTRA_SIGS):
        kwargs = {**SMALL_HDEMUCS_KWARGS, "cac": index % 2 == 0}
        write_legacy_th(repo, sig, HDEMUCS, [], kwargs, seed=50 + index, quantizer=SMALL,
                        training_args={"quant": {"diffq": 1e-4, **SMALL, "group_size": 8}})
    (repo / "mdx_extra_q.yaml").write_text(bag_yaml_text(MDX_EXTRA_SIGS, segment=44))
    mix = test_mixture(6.5, seed=12)
    source = tmp_path / "x.wav"
    soundfile.write(source, mix.T, SAMPLE_RATE, subtype="FLOAT")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(*command: str) -> None:
        result = subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr

    run("demucs", "-n", "mdx_extra_q", "--repo", str(repo), "--shifts", "0", "--float32",
        "-o", str(tmp_path / "demucs"), str(source))
    run("stemsplit", str(source), "-n", "mdx_extra_q", "--repo", str(repo), "--shifts", "0",
        "--float32", "-o", str(tmp_path / "ours"), "-q")
    for stem in ("drums", "bass", "other", "vocals"):
        a, rate_a = soundfile.read(tmp_path / "ours" / "mdx_extra_q" / "x" / f"{stem}.wav",
                                   dtype="float32")
        b, rate_b = soundfile.read(tmp_path / "demucs" / "mdx_extra_q" / "x" / f"{stem}.wav",
                                   dtype="float32")
        assert rate_a == rate_b == SAMPLE_RATE and a.shape == b.shape == (mix.shape[1], 2)
        assert float(np.abs(a - b).max()) <= 1e-5, stem


# --------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def packed_member() -> tuple[dict, str, dict]:
    require("diffq")
    state, _, _ = make_diffq_member(DEMUCS, [], SMALL_DEMUCS_KWARGS, 9, **SMALL)
    return state, DEMUCS, SMALL_DEMUCS_KWARGS


def _first_levels(entry: tuple) -> int:
    return next(index for index, levels in enumerate(entry[0]) if levels is not None)


def _damage(state: dict, how: str) -> dict:
    state = {**state, "quantized": list(state["quantized"]), "meta": dict(state["meta"])}
    entry = list(state["quantized"][0])
    if how == "levels-truncated":
        index = _first_levels(entry)
        entry[0] = list(entry[0])
        entry[0][index] = entry[0][index][:, :-1]
    elif how == "levels-missing":
        entry[0] = list(entry[0])
        entry[0][_first_levels(entry)] = None
    elif how == "bits-out-of-range":
        entry[2] = torch.full_like(entry[2], -1)  # every bit set: 2 + 2**n - 1 bits
    elif how == "scales":
        entry[1] = (float("nan"), 1.0)
    elif how == "entry-dropped":
        del state["quantized"][0]
        return state
    elif how == "other-reshaped":
        state["others"] = [state["others"][0].reshape(-1)[:-1]] + list(state["others"][1:])
        return state
    elif how == "quantizer":
        from diffq import LSQ

        state["meta"]["klass"] = LSQ  # a diffq quantizer that demucs never used
        return state
    elif how == "group-size":
        state["meta"]["init_kwargs"] = {**state["meta"]["init_kwargs"], "group_size": "8"}
        return state
    state["quantized"][0] = tuple(entry)
    return state


@pytest.mark.parametrize("how", ["levels-truncated", "levels-missing", "bits-out-of-range",
                                 "scales", "entry-dropped", "other-reshaped", "quantizer",
                                 "group-size"])
def test_a_corrupt_packed_state_is_one_clear_model_error(packed_member, how: str,
                                                         tmp_path: Path) -> None:
    import stemsplit

    state, klass, kwargs = packed_member
    for path in _write_both(_damage(state, how), klass, kwargs, tmp_path):
        with pytest.raises(ModelError) as caught:
            stemsplit.load_model(weights=path)
        message = caught.value.message
        assert str(path) in message and "diffq" in message, message
        assert "\n" not in message and len(message) < 400, message


def test_a_structure_naming_a_missing_tensor_is_a_model_error(packed_member,
                                                              tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state, klass, kwargs = packed_member
    _, st = _write_both(state, klass, kwargs, tmp_path)
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(str(st))
    del tensors[sorted(tensors)[0]]
    save_file(tensors, str(st), metadata=metadata)
    with pytest.raises(ModelError, match="corrupt diffq-quantized state: its structure names"):
        _read_and_build(st)
    metadata["structure"] = metadata["structure"][:-5]
    save_file(load_file(str(st)), str(st), metadata=metadata)
    with pytest.raises(ModelError, match="unreadable 'structure'"):
        _read_and_build(st)
