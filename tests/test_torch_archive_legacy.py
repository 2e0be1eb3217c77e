"""torch's legacy (non-zip) ``torch.save`` format, read by the restricted loader: the same
objects as ``torch.load``, and nothing a malicious pickle asks for is ever called."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from stemsplit.errors import ModelError, UnsafeCheckpointError
from stemsplit.families.torch_archive import (LEGACY_MAGIC, LEGACY_PROTOCOL,
                                              is_legacy_torch_file, load_torch_archive)

SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _state() -> OrderedDict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                              torch.nn.LSTM(4, 2, num_layers=2, bidirectional=True))
    state = net.state_dict()  # an OrderedDict with _metadata
    shared = torch.randn(10, 6)
    state["shared"] = shared
    state["strided_view"] = shared[2:5, 1:4]
    state["transposed"] = shared.t()
    state["half"] = torch.randn(7).half()
    state["bfloat"] = torch.randn(3).bfloat16()
    state["double"] = torch.randn(2, 2, dtype=torch.float64)
    state["int64"] = torch.arange(5)
    state["bool"] = torch.tensor([True, False])
    state["scalar"] = torch.tensor(44100.0)
    state["empty"] = torch.empty(0, 3)
    state["nested"] = {"list": [1, 2.5, "x"], "tuple": (torch.ones(2), None)}
    return state


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.stride() == b.stride() and torch.equal(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def test_legacy_files_read_as_torch_load_reads_them(tmp_path):
    state = _state()
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert is_legacy_torch_file(path)
    ours = load_torch_archive(path)
    reference = torch.load(path, weights_only=True)
    assert _equal(ours, reference) and _equal(ours, state)
    assert isinstance(ours, OrderedDict) and ours._metadata == state._metadata
    # Tensors that shared a storage still do.
    assert ours["strided_view"].untyped_storage().data_ptr() == \
        ours["shared"].untyped_storage().data_ptr()
    zipped = tmp_path / "zip.pth"
    torch.save(state, zipped)
    assert not is_legacy_torch_file(zipped) and _equal(load_torch_archive(zipped), state)


def _legacy_bytes(main: bytes, keys: bytes = pickle.dumps([], protocol=2),
                  magic: bytes = pickle.dumps(LEGACY_MAGIC, protocol=2)) -> bytes:
    return (magic + pickle.dumps(LEGACY_PROTOCOL, protocol=2)
            + pickle.dumps(SYS_INFO, protocol=2) + main + keys)


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["main", "keys", "magic"])
def test_a_malicious_legacy_pickle_is_refused_before_anything_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Boom(marker), protocol=2)
    assert evil.startswith(b"\x80\x02")
    plain = pickle.dumps({"weight": 1}, protocol=2)
    parts = {"main": plain, "keys": pickle.dumps([], protocol=2),
             "magic": pickle.dumps(LEGACY_MAGIC, protocol=2)}
    parts[where] = evil
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_bytes(parts["main"], parts["keys"], parts["magic"]))
    if where == "magic":  # not a torch file at all: nothing is unpickled
        with pytest.raises(ModelError):
            load_torch_archive(path)
    else:
        with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
            load_torch_archive(path)
    assert not marker.exists()


def test_damaged_legacy_files_are_model_errors(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"w": torch.randn(100)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-50])
    with pytest.raises(ModelError, match="truncated"):
        load_torch_archive(cut)
    # An element count that disagrees with the pickle.
    count = (100).to_bytes(8, "little")
    at = data.rindex(count)
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(data[:at] + (99).to_bytes(8, "little") + data[at + 8:])
    with pytest.raises(ModelError, match="elements"):
        load_torch_archive(wrong)
    # A key list that names a storage the pickle does not have.
    keys = tmp_path / "keys.pth"
    keys.write_bytes(_legacy_bytes(pickle.dumps({"w": 1}, protocol=2),
                                   pickle.dumps(["0"], protocol=2)))
    with pytest.raises(ModelError, match="key list"):
        load_torch_archive(keys)
    tar_like = tmp_path / "plain.pth"
    tar_like.write_bytes(b"\x00" * 1024)
    with pytest.raises(ModelError, match="not a torch checkpoint"):
        load_torch_archive(tar_like)
