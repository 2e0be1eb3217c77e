"""stemsplit.checkpoint: reading published-format checkpoints into plain data, safely."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from stemsplit.families.demucs.checkpoint import (
    BagDescription,
    read_bag_yaml,
    read_checkpoint,
    read_legacy_th,
    read_safetensors_member,
)
from stemsplit.errors import ModelError, UnsafeCheckpointError
from tests.checkpoints import (
    DEMUCS,
    HDEMUCS,
    HTDEMUCS,
    SMALL_KWARGS,
    legacy_th_bytes,
    make_demucs_member,
    write_legacy_th,
    write_safetensors_member,
)

ROOT = Path(__file__).resolve().parent.parent
ALL_CLASSES = [HTDEMUCS, HDEMUCS, DEMUCS]


@pytest.fixture(scope="module", params=ALL_CLASSES, ids=["htdemucs", "hdemucs", "demucs"])
def member(request: pytest.FixtureRequest):
    klass = request.param
    module, sig = make_demucs_member(klass, [], SMALL_KWARGS[klass], seed=3)
    return klass, module, sig


def _expected_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.half() for key, value in module.state_dict().items()}


def _assert_same_state(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == torch.float16, key
        assert torch.equal(got[key], value), key


# --------------------------------------------------------------------------- round trips


def test_safetensors_reads_back_equal(member, tmp_path: Path) -> None:
    klass, module, sig = member
    kwargs = SMALL_KWARGS[klass]
    path = write_safetensors_member(module, klass, [], kwargs, tmp_path / f"{sig}.safetensors")
    package = read_safetensors_member(path)
    assert package.klass == klass
    assert package.args == []
    assert package.kwargs == kwargs
    assert package.source == path
    _assert_same_state(package.state, _expected_state(module))
    assert read_checkpoint(path).klass == klass


def test_safetensors_fraction_and_positional_args(tmp_path: Path) -> None:
    kwargs = dict(SMALL_KWARGS[HTDEMUCS])
    sources = kwargs.pop("sources")
    module, sig = make_demucs_member(HTDEMUCS, [sources], kwargs, seed=1)
    path = write_safetensors_member(module, HTDEMUCS, [sources], kwargs, tmp_path / "m.safetensors")
    package = read_safetensors_member(path)
    assert package.args == [sources]
    assert package.kwargs["segment"] == Fraction(39, 10)
    assert isinstance(package.kwargs["segment"], Fraction)


def test_legacy_th_reads_back_equal(member, tmp_path: Path) -> None:
    klass, module, sig = member
    kwargs = SMALL_KWARGS[klass]
    path = write_legacy_th(tmp_path, sig, klass, [], kwargs, seed=3)
    assert path.name.startswith(sig + "-") and path.suffix == ".th"
    package = read_legacy_th(path)
    assert package.klass == klass
    assert package.args == []
    assert package.kwargs == kwargs
    _assert_same_state(package.state, _expected_state(module))
    assert read_checkpoint(path).klass == klass


def test_legacy_th_with_realistic_training_args(tmp_path: Path) -> None:
    training_args = {"dset": {"name": "musdb", "sources": ["drums"]}, "optim": {"lr": 3e-4},
                     "seed": 42, "weights": [1.0, 1.0], "misc": None, "flags": (True, False)}
    path = write_legacy_th(tmp_path, "abcd1234", HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], seed=0,
                           training_args=training_args, metrics={"best": 9.0})
    assert read_legacy_th(path).kwargs["segment"] == Fraction(39, 10)


def test_th_and_safetensors_agree(tmp_path: Path) -> None:
    module, sig = make_demucs_member(DEMUCS, [], SMALL_KWARGS[DEMUCS], seed=5)
    th = read_legacy_th(write_legacy_th(tmp_path, sig, DEMUCS, [], SMALL_KWARGS[DEMUCS], seed=5))
    st = read_safetensors_member(
        write_safetensors_member(module, DEMUCS, [], SMALL_KWARGS[DEMUCS], tmp_path / "x.safetensors"))
    assert th.kwargs == st.kwargs
    _assert_same_state(th.state, st.state)


def test_demucs_loads_our_th(tmp_path: Path) -> None:
    """The .th we write is what demucs' own loader reads (format check against the oracle)."""
    from demucs.states import load_model

    module, sig = make_demucs_member(HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], seed=2)
    path = write_legacy_th(tmp_path, sig, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], seed=2)
    loaded = load_model(path)
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


# --------------------------------------------------------------------------- malicious pickles


class _Payload:
    """Pickles as a call of ``func(*args)``, the classic pickle exploit."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_payloads(marker: Path) -> dict[str, _Payload]:
    import builtins

    return {
        "posix.system": _Payload(os.system, f"touch {marker}"),
        "builtins.eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    }


def _malicious_th(tmp_path: Path, payload: _Payload, where: str) -> Path:
    module, sig = make_demucs_member(HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], seed=0)
    package = {"klass": None, "args": (), "kwargs": dict(SMALL_KWARGS[HTDEMUCS]),
               "state": {k: v.half() for k, v in module.state_dict().items()},
               "training_args": {}, "metrics": {}}
    from demucs.htdemucs import HTDemucs

    package["klass"] = HTDemucs
    if where == "state":
        package["state"]["evil"] = payload
    elif where == "training_args":
        package["training_args"] = {"hook": payload}
    else:
        package["klass"] = payload
    path = tmp_path / f"evil-{where}.th"
    torch.save(package, path)
    return path


@pytest.mark.parametrize("global_name", ["posix.system", "builtins.eval", "subprocess.call", "builtins.exec"])
@pytest.mark.parametrize("where", ["klass", "state", "training_args"])
def test_malicious_th_is_refused_and_nothing_runs(tmp_path: Path, global_name: str, where: str) -> None:
    marker = tmp_path / "pwned"
    path = _malicious_th(tmp_path, _touch_payloads(marker)[global_name], where)
    with pytest.raises(UnsafeCheckpointError) as caught:
        read_legacy_th(path)
    message = str(caught.value)
    assert str(path) in message
    assert global_name in message
    assert "\n" not in message
    assert not marker.exists()


def test_the_malicious_payload_is_live(tmp_path: Path) -> None:
    """Proof that the test pickles above would create the file if executed (demucs' way)."""
    marker = tmp_path / "pwned"
    path = _malicious_th(tmp_path, _touch_payloads(marker)["posix.system"], "training_args")
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def _torch_zip_with_pickle(path: Path, data_pkl: bytes) -> Path:
    """A torch.save-style zip archive holding ``data_pkl`` as its pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def test_calling_a_demucs_class_is_refused(tmp_path: Path) -> None:
    # GLOBAL 'demucs.htdemucs HTDemucs', EMPTY_TUPLE, REDUCE: an attempt to instantiate it.
    data = b"\x80\x02cdemucs.htdemucs\nHTDemucs\n)R."
    path = _torch_zip_with_pickle(tmp_path / "call.th", data)
    with pytest.raises(ModelError) as caught:
        read_legacy_th(path)
    assert str(path) in str(caught.value)


def test_demucs_class_names_are_not_imported(tmp_path: Path) -> None:
    # Built by hand: {'klass': GLOBAL demucs.nonexistent_mod Thing, 'args': [], 'kwargs': {}, 'state': {}}
    data = (b"\x80\x02}(X\x05\x00\x00\x00klasscdemucs.nonexistent_mod\nThing\n"
            b"X\x04\x00\x00\x00args]X\x06\x00\x00\x00kwargs}X\x05\x00\x00\x00state}u.")
    path = _torch_zip_with_pickle(tmp_path / "names.th", data)
    package = read_legacy_th(path)
    assert package.klass == "demucs.nonexistent_mod.Thing"
    assert "demucs.nonexistent_mod" not in sys.modules


def test_plain_pickle_th_is_not_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "plain.th"
    path.write_bytes(pickle.dumps(_touch_payloads(marker)["posix.system"]))
    with pytest.raises(ModelError) as caught:
        read_legacy_th(path)
    assert str(path) in str(caught.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "script.th"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ModelError, match="TorchScript"):
        read_legacy_th(path)


def test_reader_does_not_import_torch_or_demucs_at_module_level() -> None:
    code = ("import sys, stemsplit.families.demucs.checkpoint, stemsplit.families.demucs.files, stemsplit.cache.http, stemsplit.cache.inventory; "
            "assert 'torch' not in sys.modules, 'torch'; assert 'demucs' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- diffq


# (the quantized states themselves: tests/test_diffq.py)


def test_malformed_quantized_th_is_a_model_error(tmp_path: Path) -> None:
    package = {"klass": None, "args": (), "kwargs": {}, "training_args": {},
               "state": {"__quantized": True, "quantized": [torch.zeros(3)], "meta": {}}}
    from demucs.hdemucs import HDemucs

    package["klass"] = HDemucs
    path = tmp_path / "q.th"
    torch.save(package, path)
    with pytest.raises(ModelError, match="corrupt diffq-quantized state: .* has no 'others'"):
        read_legacy_th(path)


def test_a_diffq_global_is_a_name_never_called(tmp_path: Path) -> None:
    """diffq's class references are kept as names (nothing imported); calling one fails."""
    data = b"\x80\x02}(X\x05\x00\x00\x00statecdiffq.base\nQuantized\n)Ru."
    path = _torch_zip_with_pickle(tmp_path / "dq.th", data)
    with pytest.raises(ModelError, match="corrupt checkpoint") as caught:
        read_legacy_th(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)


def test_a_structure_that_is_no_quantized_state_is_a_model_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "q.safetensors"
    save_file({"t0": torch.zeros(2, dtype=torch.half)}, str(path),
              metadata={"klass": HDEMUCS, "args": "[]", "kwargs": "{}", "structure": '{"_tensor": "t0"}'})
    with pytest.raises(ModelError, match="'structure' is not a diffq-quantized state"):
        read_safetensors_member(path)


# --------------------------------------------------------------------------- damaged files


@pytest.fixture
def good_files(tmp_path: Path) -> tuple[Path, Path]:
    module, sig = make_demucs_member(HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], seed=0)
    st = write_safetensors_member(module, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], tmp_path / "g.safetensors")
    th = tmp_path / "g.th"
    th.write_bytes(legacy_th_bytes(module, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS]))
    return st, th


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "flip_header"])
@pytest.mark.parametrize("kind", ["safetensors", "th"])
def test_damaged_files_give_model_error(good_files, damage: str, kind: str) -> None:
    path = good_files[0] if kind == "safetensors" else good_files[1]
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "garbage":
        data = os.urandom(4096)
    else:
        data = bytes([data[0] ^ 0xFF, data[1] ^ 0xFF]) + data[2:]
    path.write_bytes(data)
    with pytest.raises(ModelError) as caught:
        read_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_damaged_storage_record_gives_model_error(good_files, tmp_path: Path) -> None:
    source = zipfile.ZipFile(good_files[1])
    path = tmp_path / "short.th"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if "/data/" in info.filename:
                data = data[: len(data) // 2]
            archive.writestr(info.filename, data)
    with pytest.raises(ModelError, match="short.th"):
        read_legacy_th(path)


def test_big_endian_archive(good_files, tmp_path: Path) -> None:
    """An archive written on a big-endian machine (byteorder record 'big') reads the same."""
    source = zipfile.ZipFile(good_files[1])
    path = tmp_path / "big.th"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:  # every storage here is fp16: swap byte pairs
                data = bytes(b for pair in zip(data[1::2], data[0::2]) for b in pair)
            archive.writestr(info.filename, data)
    _assert_same_state(read_legacy_th(path).state, read_legacy_th(good_files[1]).state)


def test_missing_files(tmp_path: Path) -> None:
    for name in ("nope.th", "nope.safetensors"):
        with pytest.raises(ModelError, match="nope"):
            read_checkpoint(tmp_path / name)
    with pytest.raises(ModelError):
        read_checkpoint(tmp_path / "model.bin")


def test_safetensors_without_demucs_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError, match="klass"):
        read_safetensors_member(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"klass": HTDEMUCS, "args": "[", "kwargs": "{}"})
    with pytest.raises(ModelError, match="args"):
        read_safetensors_member(path)


# --------------------------------------------------------------------------- bag files


def test_bag_yaml_as_published(tmp_path: Path) -> None:
    # The files demucs 4.1.0 ships (demucs/remote/htdemucs_ft.yaml, mdx.yaml), verbatim.
    ft = tmp_path / "htdemucs_ft.yaml"
    ft.write_text("models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\nweights: [\n"
                  "  [1., 0., 0., 0.],\n  [0., 1., 0., 0.],\n  [0., 0., 1., 0.],\n  [0., 0., 0., 1.],\n]")
    bag = read_bag_yaml(ft)
    assert bag == BagDescription(
        members=["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"],
        weights=[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]],
        segment=None,
    )
    mmi = tmp_path / "hdemucs_mmi.yaml"
    mmi.write_text("models: ['75fc33f5']\nsegment: 44\n")
    assert read_bag_yaml(mmi) == BagDescription(members=["75fc33f5"], weights=None, segment=44.0)


@pytest.mark.parametrize("text", [
    "models: [a, b]\nweights: [[1, 0]]\n",  # one row for two models
    "models: [a]\nweights: [[1, x]]\n",
    "segment: 4\n",
    "models: []\n",
    "models: [a]\nsegment: -1\n",
    "models: [a\n",  # not YAML
    "!!python/object/apply:os.system ['true']\n",  # safe_load refuses tags
])
def test_bad_bag_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bag.yaml"
    path.write_text(text)
    with pytest.raises(ModelError, match="bag.yaml"):
        read_bag_yaml(path)


def test_missing_bag_yaml(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        read_bag_yaml(tmp_path / "none.yaml")
