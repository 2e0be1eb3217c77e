"""stemsplit.cache: model -> verified local files, from caches, the Hub, or legacy URLs.

All network traffic goes to loopback servers the tests start; HF_ENDPOINT points at a closed
loopback port unless a test sets it (see conftest.isolated_caches).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stemsplit.cache import (
    ResolvedBag,
    hf_cache_dir,
    is_cached,
    resolve_demucs_model,
    resolve_weights_path,
    torch_hub_checkpoints_dir,
)
from stemsplit.checkpoint import read_checkpoint, read_safetensors_member
from stemsplit.errors import ChecksumError, ModelError, WeightsUnavailableError
from stemsplit.registry import load_registry
from tests.checkpoints import (
    DEMUCS,
    HDEMUCS,
    HTDEMUCS,
    SMALL_KWARGS,
    bag_yaml_text,
    closed_port,
    hf_repo_dir,
    load_member_module,
    make_demucs_member,
    spec_with_legacy_files,
    write_hf_bag,
    write_legacy_th,
    write_safetensors_member,
)

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = load_registry()
HT = (HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS])


def _hf_home() -> Path:
    return Path(os.environ["HF_HOME"])


def _no_partial_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --------------------------------------------------------------------------- Hugging Face cache


def test_hf_cache_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = REGISTRY.get("htdemucs_ft")
    members = [(*HT, seed) for seed in (1, 2)]
    sigs = write_hf_bag(_hf_home(), "htdemucs_ft", spec.hf_repo, members,
                        weights=[[1, 0, 0, 1], [0, 1, 1, 0]], segment=7.5)
    started = time.monotonic()
    bag = resolve_demucs_model(spec, offline=True)
    assert time.monotonic() - started < 2
    assert [p.name for p in bag.member_paths] == [f"{sig}.safetensors" for sig in sigs]
    assert all(hf_cache_dir() in p.parents for p in bag.member_paths)
    assert bag.weights == [[1, 0, 0, 1], [0, 1, 1, 0]]  # the yaml's, not weights.toml's
    assert bag.segment == 7.5
    assert "Hugging Face cache" in bag.origin
    expected = load_member_module(members[1]).state_dict()
    state = read_safetensors_member(bag.member_paths[1]).state
    assert all(torch.equal(state[k], v.half()) for k, v in expected.items())
    # The same through HF_HUB_OFFLINE=1 instead of the flag.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_demucs_model(spec, offline=False).member_paths == bag.member_paths


def test_hf_cache_is_found_without_network_even_online(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached files are used as they are: the Hub is not asked (the server counts 0)."""
    spec = REGISTRY.get("htdemucs")
    write_hf_bag(_hf_home(), "htdemucs", spec.hf_repo, [(*HT, 0, "955717e8")])
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths[0].name == "955717e8.safetensors"
    assert bag.weights is None and bag.segment is None
    assert file_server.count == 0
    assert is_cached(spec)


def test_hf_cache_layout_loads_in_demucs(tmp_path: Path) -> None:
    """The oracle check: demucs' own get_hf_model reads the cache we write, offline."""
    members = [(*HT, 4), (HDEMUCS, [], SMALL_KWARGS[HDEMUCS], 5)]
    sigs = write_hf_bag(_hf_home(), "htdemucs_ft", "adefossez/HTDemucs-ft", members,
                        weights=[[1, 1, 0, 0], [0, 0, 1, 1]], segment=6)
    out = tmp_path / "demucs_state.pt"
    code = (
        "import sys, torch\n"
        "from demucs.hf import get_hf_model\n"
        "bag = get_hf_model('htdemucs_ft')\n"
        "torch.save({'states': [m.state_dict() for m in bag.models], 'weights': bag.weights,\n"
        "            'segment': [float(m.segment) for m in bag.models], 'klass': [type(m).__name__ for m in bag.models]}, sys.argv[1])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=120)
    loaded = torch.load(out, weights_only=False)
    assert loaded["klass"] == ["HTDemucs", "HDemucs"]
    assert loaded["weights"] == [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert loaded["segment"] == [3.9, 6.0]  # the bag segment reached HDemucs (HTDemucs keeps a shorter own)
    for member, state in zip(members, loaded["states"]):
        expected = load_member_module(member).state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())
    # ... and our resolver finds the very same files.
    bag = resolve_demucs_model(REGISTRY.get("htdemucs_ft"), offline=True)
    assert [p.name for p in bag.member_paths] == [f"{sig}.safetensors" for sig in sigs]


def test_offline_with_nothing_cached_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = REGISTRY.get("htdemucs")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert time.monotonic() - started < 2
    message, hint = str(caught.value), caught.value.hint
    assert "\n" not in message
    assert "htdemucs" in message
    assert str(hf_cache_dir()) in message and str(torch_hub_checkpoints_dir()) in message
    assert "HF_HUB_OFFLINE" in message
    assert "stemsplit models download htdemucs" in hint and "unset HF_HUB_OFFLINE" in hint
    assert not is_cached(spec)


def test_offline_flag_hint_names_the_flag() -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(REGISTRY.get("hdemucs_mmi"), offline=True)
    assert "--offline" in str(caught.value) and "--offline" in caught.value.hint


def test_no_network_fails_fast_with_one_line() -> None:
    """Hub endpoint and legacy URLs on closed ports: a clear error in well under the timeouts."""
    spec = dataclasses.replace(REGISTRY.get("htdemucs"),
                               legacy_url_root=f"http://127.0.0.1:{closed_port()}/demucs/")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message
    assert "htdemucs" in message and "connection refused" in message
    assert "stemsplit models download htdemucs" in caught.value.hint


def test_unresolvable_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    spec = dataclasses.replace(REGISTRY.get("htdemucs"), legacy_url_root="https://no-such-host.invalid/x/")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- Hugging Face download


def test_hf_download_from_a_hub_endpoint(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback stand-in for the Hub: files land in the real HF cache, then work offline."""
    spec = REGISTRY.get("htdemucs_ft")
    module, sig = make_demucs_member(*HT, 8)
    repo = file_server.root / spec.hf_repo
    write_safetensors_member(module, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], repo / f"{sig}.safetensors")
    (repo / "htdemucs_ft.yaml").write_text(bag_yaml_text([sig], weights=[[1, 1, 1, 1]]))
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    calls: list[tuple] = []
    bag = resolve_demucs_model(spec, offline=False, progress=lambda *args: calls.append(args))
    assert bag.member_paths[0].name == f"{sig}.safetensors"
    assert hf_repo_dir(_hf_home(), spec.hf_repo) in bag.member_paths[0].resolve().parents
    assert bag.weights == [[1, 1, 1, 1]]
    assert "Hugging Face" in bag.origin
    size = (repo / f"{sig}.safetensors").stat().st_size
    assert (f"{sig}.safetensors", size, size) in calls
    requests_online = file_server.count
    assert requests_online >= 2
    # Now cached: offline works, and online asks nothing more.
    assert resolve_demucs_model(spec, offline=True).member_paths == bag.member_paths
    assert resolve_demucs_model(spec, offline=False).member_paths == bag.member_paths
    assert file_server.count == requests_online


def test_hub_without_the_files_falls_back_to_legacy(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    th = write_legacy_th(file_server.root / "legacy", None, *HT, seed=9)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url + "legacy/",
                                  hf_repo="adefossez/HTDemucs")
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))  # the Hub answers 404
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths == [torch_hub_checkpoints_dir() / th.name]


# --------------------------------------------------------------------------- legacy torch hub


def test_legacy_torch_cache_is_used_without_a_request(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    th = write_legacy_th(torch_hub_checkpoints_dir(), None, *HT, seed=1)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs_ft"), [th], url_root=file_server.url,
                                  hf_repo="adefossez/HTDemucs-ft", bag_weights=((1.0, 0.0, 1.0, 0.0),),
                                  segment_seconds=9)
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths == [th]
    assert bag.weights == [[1.0, 0.0, 1.0, 0.0]] and bag.segment == 9.0  # from the spec
    assert "torch hub cache" in bag.origin
    assert file_server.count == 0
    assert is_cached(spec)
    assert resolve_demucs_model(spec, offline=True).member_paths == [th]


def test_legacy_download_verified(file_server) -> None:
    served = [write_legacy_th(file_server.root, None, klass, [], SMALL_KWARGS[klass], seed=2)
              for klass in (DEMUCS, HDEMUCS)]
    spec = spec_with_legacy_files(REGISTRY.get("mdx"), served, url_root=file_server.url,
                                  bag_weights=((1.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 1.0)))
    calls: list[tuple] = []
    bag = resolve_demucs_model(spec, offline=False, progress=lambda *args: calls.append(args))
    assert bag.member_paths == [torch_hub_checkpoints_dir() / p.name for p in served]
    for got, want in zip(bag.member_paths, served):
        assert got.read_bytes() == want.read_bytes()
        assert hashlib.sha256(got.read_bytes()).hexdigest().startswith(got.stem.split("-")[1])
    assert bag.weights == [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]] and bag.segment == 44.0
    assert file_server.count == 2
    for path in served:
        assert (path.name, path.stat().st_size, path.stat().st_size) in calls
    assert sorted(_no_partial_files(torch_hub_checkpoints_dir())) == sorted(p.name for p in served)
    assert read_checkpoint(bag.member_paths[1]).klass == HDEMUCS
    # Cached now: no more requests.
    resolve_demucs_model(spec, offline=False)
    assert file_server.count == 2


def test_corrupted_download_raises_and_keeps_nothing(file_server) -> None:
    th = write_legacy_th(file_server.root, None, *HT, seed=3)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    file_server.corrupt = True
    with pytest.raises(ChecksumError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert "\n" not in str(caught.value)
    assert _no_partial_files(torch_hub_checkpoints_dir()) == []


def test_dropped_connection_keeps_nothing_and_a_retry_works(file_server) -> None:
    th = write_legacy_th(file_server.root, None, *HT, seed=4)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    file_server.drop_halfway = True
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert "connection lost" in str(caught.value)
    assert _no_partial_files(torch_hub_checkpoints_dir()) == []
    file_server.drop_halfway = False
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths[0].read_bytes() == th.read_bytes()


def test_http_error_is_reported(file_server) -> None:
    th = write_legacy_th(file_server.root, None, *HT, seed=4)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    file_server.status = 404
    with pytest.raises(WeightsUnavailableError, match="HTTP 404"):
        resolve_demucs_model(spec, offline=False)


def test_refused_connection_is_quick() -> None:
    th_name = "955717e8-8726e21a.th"
    spec = dataclasses.replace(REGISTRY.get("htdemucs"), hf_repo=None,
                               legacy_url_root=f"http://127.0.0.1:{closed_port()}/")
    assert spec.legacy_file_for("955717e8") == th_name
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert time.monotonic() - started < 3
    assert "connection refused" in str(caught.value)
    assert not torch_hub_checkpoints_dir().exists()  # not even the folder is made


def test_damaged_torch_cache_file_is_replaced(file_server) -> None:
    th = write_legacy_th(file_server.root, None, *HT, seed=6)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    cached = torch_hub_checkpoints_dir() / th.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the file")
    with pytest.raises(WeightsUnavailableError, match="fails its checksum"):
        resolve_demucs_model(spec, offline=True)
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths == [cached] and cached.read_bytes() == th.read_bytes()


def test_unsupported_model_touches_nothing(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    spec = dataclasses.replace(REGISTRY.get("mdx_q"), legacy_url_root=file_server.url)
    with pytest.raises(ModelError, match="diffq") as caught:
        resolve_demucs_model(spec, offline=False)
    assert not isinstance(caught.value, WeightsUnavailableError)
    assert file_server.count == 0


# --------------------------------------------------------------------------- --repo and --weights


@pytest.fixture
def bag_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """A demucs-style local repo: one safetensors member, one sha-named .th member, a bag yaml."""
    folder = tmp_path / "repo"
    module, sig_a = make_demucs_member(*HT, 1)
    write_safetensors_member(module, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], folder / f"{sig_a}.safetensors")
    th = write_legacy_th(folder, None, DEMUCS, [], SMALL_KWARGS[DEMUCS], seed=2)
    sig_b = th.name.split("-")[0]
    (folder / "mybag.yaml").write_text(bag_yaml_text([sig_a, sig_b], weights=[[1, 0, 1, 0], [0, 1, 0, 1]]))
    return folder, [sig_a, sig_b]


def test_repo_dir(bag_folder, file_server) -> None:
    folder, sigs = bag_folder
    spec = dataclasses.replace(REGISTRY.get("htdemucs"), name="mybag", bag_file="mybag.yaml",
                               legacy_url_root=file_server.url)
    bag = resolve_demucs_model(spec, offline=False, repo_dir=folder)
    assert [p.name.split(".")[0].split("-")[0] for p in bag.member_paths] == sigs
    assert bag.weights == [[1, 0, 1, 0], [0, 1, 0, 1]]
    assert file_server.count == 0
    # Without a bag file, the spec's members are looked up in the folder.
    (folder / "mybag.yaml").unlink()
    with pytest.raises(WeightsUnavailableError, match="955717e8"):
        resolve_demucs_model(REGISTRY.get("htdemucs"), offline=False, repo_dir=folder)
    with pytest.raises(ModelError, match="not a folder"):
        resolve_demucs_model(spec, offline=False, repo_dir=folder / "nope")


def test_repo_dir_checks_th_checksums(bag_folder) -> None:
    folder, sigs = bag_folder
    th = next(folder.glob("*.th"))
    th.write_bytes(th.read_bytes() + b"x")
    spec = dataclasses.replace(REGISTRY.get("htdemucs"), name="mybag", bag_file="mybag.yaml")
    with pytest.raises(ChecksumError, match=th.name):
        resolve_demucs_model(spec, offline=True, repo_dir=folder)


def test_weights_path_forms(bag_folder) -> None:
    folder, sigs = bag_folder
    st = folder / f"{sigs[0]}.safetensors"
    th = next(folder.glob("*.th"))
    assert resolve_weights_path(st) == ResolvedBag([st], None, None, str(st))
    assert resolve_weights_path(th).member_paths == [th]
    from_yaml = resolve_weights_path(folder / "mybag.yaml")
    assert from_yaml.member_paths == [st, th] and from_yaml.weights == [[1, 0, 1, 0], [0, 1, 0, 1]]
    assert resolve_weights_path(folder).member_paths == [st, th]
    (folder / "mybag.yaml").unlink()
    assert sorted(resolve_weights_path(folder).member_paths) == sorted([st, th])
    assert resolve_weights_path(folder).weights is None


def test_weights_path_errors(bag_folder, tmp_path: Path) -> None:
    folder, sigs = bag_folder
    with pytest.raises(ModelError, match="no such file"):
        resolve_weights_path(tmp_path / "missing.th")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no .safetensors or .th"):
        resolve_weights_path(tmp_path / "empty")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="expected"):
        resolve_weights_path(tmp_path / "w.onnx")
    shutil.copy(folder / "mybag.yaml", folder / "other.yaml")
    with pytest.raises(ModelError, match="several bag files"):
        resolve_weights_path(folder)
    th = next(folder.glob("*.th"))
    th.write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        resolve_weights_path(th)


def test_is_cached_needs_every_member() -> None:
    spec = REGISTRY.get("htdemucs_ft")
    assert not is_cached(spec)
    write_hf_bag(_hf_home(), "htdemucs_ft", spec.hf_repo,
                 [(*HT, 1, "f7e0c4bc"), (*HT, 2, "d12395a8"), (*HT, 3, "92cfc3b6")])
    assert not is_cached(spec)
    write_hf_bag(_hf_home(), "htdemucs_ft", spec.hf_repo,
                 [(*HT, 1, "f7e0c4bc"), (*HT, 2, "d12395a8"), (*HT, 3, "92cfc3b6"), (*HT, 4, "04573f0d")])
    assert is_cached(spec)


def test_hf_home_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    assert hf_cache_dir() == tmp_path / "elsewhere" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hf_cache_dir() == tmp_path / "direct"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert torch_hub_checkpoints_dir() == tmp_path / "th" / "hub" / "checkpoints"
