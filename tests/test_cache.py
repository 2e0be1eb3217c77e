"""stemsplit.cache: model -> verified local files, from caches, the Hub, or legacy URLs.

All network traffic goes to loopback servers the tests start; HF_ENDPOINT points at a closed
loopback port unless a test sets it (see conftest.isolated_caches).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stemsplit.cache.inventory import is_cached
from stemsplit.cache.locations import hf_cache_dir, torch_hub_checkpoints_dir
from stemsplit.families.demucs.checkpoint import read_checkpoint, read_safetensors_member
from stemsplit.families.demucs.files import ResolvedBag, resolve_demucs_model, resolve_weights_path
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
    demucs_spec,
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
    sigs = write_hf_bag(_hf_home(), "htdemucs_ft", spec.config.hf_repo, members,
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
    write_hf_bag(_hf_home(), "htdemucs", spec.config.hf_repo, [(*HT, 0, "955717e8")])
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
    assert "stemsplit models download htdemucs" in message and "unset HF_HUB_OFFLINE" in hint
    assert not is_cached(spec)


def test_offline_flag_hint_names_the_flag() -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(REGISTRY.get("hdemucs_mmi"), offline=True)
    assert "--offline" in str(caught.value) and "--offline" in caught.value.hint


def test_no_network_fails_fast_with_one_line() -> None:
    """Hub endpoint and legacy URLs on closed ports: a clear error in well under the timeouts."""
    spec = demucs_spec(REGISTRY.get("htdemucs"),
                               legacy_url_root=f"http://127.0.0.1:{closed_port()}/demucs/")
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=False)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message
    assert "htdemucs" in message and "connection refused" in message
    assert "stemsplit models download htdemucs" in message


def test_unresolvable_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    spec = demucs_spec(REGISTRY.get("htdemucs"), legacy_url_root="https://no-such-host.invalid/x/")
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
    repo = file_server.root / spec.config.hf_repo
    write_safetensors_member(module, HTDEMUCS, [], SMALL_KWARGS[HTDEMUCS], repo / f"{sig}.safetensors")
    (repo / "htdemucs_ft.yaml").write_text(bag_yaml_text([sig], weights=[[1, 1, 1, 1]]))
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    calls: list[tuple] = []
    bag = resolve_demucs_model(spec, offline=False, progress=lambda *args: calls.append(args))
    assert bag.member_paths[0].name == f"{sig}.safetensors"
    assert hf_repo_dir(_hf_home(), spec.config.hf_repo) in bag.member_paths[0].resolve().parents
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
    spec = demucs_spec(REGISTRY.get("htdemucs"), hf_repo=None,
                               legacy_url_root=f"http://127.0.0.1:{closed_port()}/")
    assert spec.config.legacy_file_for("955717e8") == th_name
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
    spec = demucs_spec(REGISTRY.get("mdx_q"), legacy_url_root=file_server.url,
                       unsupported="not supported yet (test)")
    with pytest.raises(ModelError, match="not supported yet") as caught:
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
    spec = demucs_spec(REGISTRY.get("htdemucs"), name="mybag", bag_file="mybag.yaml",
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
    spec = demucs_spec(REGISTRY.get("htdemucs"), name="mybag", bag_file="mybag.yaml")
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
    write_hf_bag(_hf_home(), "htdemucs_ft", spec.config.hf_repo,
                 [(*HT, 1, "f7e0c4bc"), (*HT, 2, "d12395a8"), (*HT, 3, "92cfc3b6")])
    assert not is_cached(spec)
    write_hf_bag(_hf_home(), "htdemucs_ft", spec.config.hf_repo,
                 [(*HT, 1, "f7e0c4bc"), (*HT, 2, "d12395a8"), (*HT, 3, "92cfc3b6"), (*HT, 4, "04573f0d")])
    assert is_cached(spec)


def test_hf_home_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    assert hf_cache_dir() == tmp_path / "elsewhere" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hf_cache_dir() == tmp_path / "direct"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert torch_hub_checkpoints_dir() == tmp_path / "th" / "hub" / "checkpoints"


# --------------------------------------------------------------------------- integrity, locks, inventory


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from stemsplit.cache import integrity

    calls: list[Path] = []
    original = integrity.digests_of

    def counting(path, git):  # noqa: ANN001, ANN202
        calls.append(Path(path))
        return original(path, git)

    monkeypatch.setattr(integrity, "digests_of", counting)
    return calls


def test_remembered_digest_makes_later_loads_cheap(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download records its full sha256 with size and mtime; a later load trusts the file
    without hashing while those match, and hashes it again once it changed."""
    from stemsplit.cache.integrity import ChecksumStore
    from stemsplit.cache.locations import stemsplit_cache_dir

    th = write_legacy_th(file_server.root, None, *HT, seed=11)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    bag = resolve_demucs_model(spec, offline=False)
    cached = bag.member_paths[0]
    assert bag.downloaded == [cached]
    entry = ChecksumStore().get(cached)
    assert entry["sha256"] == hashlib.sha256(th.read_bytes()).hexdigest()
    assert entry["size"] == cached.stat().st_size and entry["source"] == file_server.url + th.name
    assert (stemsplit_cache_dir() / "checksums.json").is_file()
    hashed = _count_hashing(monkeypatch)
    again = resolve_demucs_model(spec, offline=True)
    assert again.member_paths == [cached] and again.downloaded == [] and hashed == []
    os.utime(cached, ns=(time.time_ns(), time.time_ns() + 10**9))
    resolve_demucs_model(spec, offline=True)
    assert hashed == [cached]


def test_a_damaged_cached_file_is_deleted_and_said_so(file_server, caplog: pytest.LogCaptureFixture) -> None:
    th = write_legacy_th(file_server.root, None, *HT, seed=12)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    cached = resolve_demucs_model(spec, offline=False).member_paths[0]
    data = bytearray(cached.read_bytes())
    data[-5] ^= 1
    cached.write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_demucs_model(spec, offline=True)
    assert "fails its checksum" in str(caught.value) and "deleted" in str(caught.value)
    assert not cached.exists()
    assert any("fails its checksum" in record.getMessage() and record.levelname == "WARNING"
               for record in caplog.records)


def test_recorded_sha256_overrides_a_matching_blob_name(file_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights.toml's digest is checked too: a file consistent with its blob name but not with
    the published digest is rejected."""
    spec = REGISTRY.get("htdemucs")
    write_hf_bag(_hf_home(), "htdemucs", spec.config.hf_repo, [(*HT, 0, "955717e8")])
    assert resolve_demucs_model(spec, offline=True).member_paths
    wrong = demucs_spec(spec, sha256=(("955717e8.safetensors", "0" * 64),))
    with pytest.raises(WeightsUnavailableError, match="expected 0000000000000000... from weights.toml"):
        resolve_demucs_model(wrong, offline=True)
    assert not is_cached(spec)


def test_git_blob_names_are_checked(tmp_path: Path) -> None:
    """Small files in the HF cache are named by their git blob id, not their sha256."""
    from stemsplit.cache.integrity import check_file

    data = b"models: [955717e8]\n"
    git_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    blob = tmp_path / "models--a--b" / "blobs" / git_id
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    entry = tmp_path / "models--a--b" / "snapshots" / "c0ffee" / "x.yaml"
    entry.parent.mkdir(parents=True)
    entry.symlink_to(os.path.relpath(blob, entry.parent))
    check = check_file(entry)
    assert check.ok and check.detail == "matches its Hugging Face blob name"
    blob.write_bytes(b"models: [955717e9]\n")
    check = check_file(entry)
    assert not check.ok and "git blob id" in check.detail


def test_stdlib_hf_lookup_agrees_with_huggingface_hub() -> None:
    from huggingface_hub import try_to_load_from_cache

    from stemsplit.cache.hub import hf_cached as _hf_cached

    spec = REGISTRY.get("htdemucs_ft")
    write_hf_bag(_hf_home(), "htdemucs_ft", spec.config.hf_repo, [(*HT, 1, "f7e0c4bc")])
    for filename in ("htdemucs_ft.yaml", "f7e0c4bc.safetensors", "d12395a8.safetensors"):
        theirs = try_to_load_from_cache(spec.config.hf_repo, filename, cache_dir=str(hf_cache_dir()))
        ours = _hf_cached(spec.config.hf_repo, filename, hf_cache_dir())
        assert (str(ours) if ours else None) == (theirs if isinstance(theirs, str) else None)
    assert _hf_cached("adefossez/Nothing", "x.yaml", hf_cache_dir()) is None


def test_file_lock_makes_the_second_holder_wait(tmp_path: Path) -> None:
    from tests.checkpoints import hold_lock_in_threads

    order, told = hold_lock_in_threads(tmp_path / "model.th")
    assert told  # the other thread was blocked on our lock
    assert order == ["first", "second"]


def test_unwritable_stemsplit_cache_does_not_stop_a_download(file_server, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "a-file" / "below"))  # cannot be made
    th = write_legacy_th(file_server.root, None, *HT, seed=13)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)
    bag = resolve_demucs_model(spec, offline=False)
    assert bag.member_paths[0].read_bytes() == th.read_bytes()
    assert resolve_demucs_model(spec, offline=True).member_paths == bag.member_paths


def test_offline_reason_names_what_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit.cache.locations import offline_policy

    def offline_reason(offline):  # noqa: ANN001, ANN202
        return offline_policy(offline).reason

    assert offline_reason(False) == "" and offline_reason(None) == ""
    assert offline_reason(True) == "--offline"
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    assert offline_reason(None) == offline_reason(True) == "STEMSPLIT_OFFLINE is set"
    assert offline_reason(False) == ""  # an explicit offline=False wins over the variable
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_reason(False) == "HF_HUB_OFFLINE is set"


def test_remove_model_clears_every_snapshot_and_the_repo_folder() -> None:
    from stemsplit.cache.inventory import local_files, remove_model
    from tests.checkpoints import hf_put_file

    spec = REGISTRY.get("htdemucs")
    hf_put_file(_hf_home(), spec.config.hf_repo, "955717e8.safetensors", b"old")
    repo = hf_repo_dir(_hf_home(), spec.config.hf_repo)
    (repo / "refs" / "main").write_text("f" * 40)  # a newer revision
    hf_put_file(_hf_home(), spec.config.hf_repo, "955717e8.safetensors", b"new")
    hf_put_file(_hf_home(), spec.config.hf_repo, "htdemucs.yaml", b"models: [955717e8]\n")
    assert [local.size for local in local_files(spec)][:2] == [19, 3]
    removed = remove_model(spec, list(REGISTRY.models.values()))
    assert len(removed) == 3 and not repo.exists()
    assert all(local.path is None for local in local_files(spec))


def test_registry_sha256_table_and_url_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit.registry import load_registry as load

    path = tmp_path / "weights.toml"
    path.write_text(
        'default_model = "a"\n[models.a]\nfamily = "demucs"\nstems = ["vocals"]\nsample_rate = 44100\n'
        'hf_repo = "o/r"\nbag_file = "a.yaml"\nmembers = ["abc"]\nlegacy_url_root = "http://h/"\n'
        'legacy_files = ["abc-0123abcd.th"]\n[models.a.sha256]\n"abc.safetensors" = "' + "AB" * 32 + '"\n'
        '[models.b]\nfamily = "mdx"\nstems = ["vocals", "accompaniment"]\nsample_rate = 44100\n'
        'files = [{ url = "http://h/dir/net.onnx?download=1", sha256 = "' + "cd" * 32 + '", size = 10 }]\n')
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(path))
    registry = load()
    a, b = registry.get("a"), registry.get("b")
    assert [(f.filename, f.kind if f.source == "url" else f.source, f.sha256) for f in a.files] == [
        ("a.yaml", "hf", None), ("abc.safetensors", "hf", "ab" * 32),
        ("abc-0123abcd.th", "legacy", "0123abcd")]
    assert a.files[2].sha256_is_prefix and a.files[2].location == "http://h/abc-0123abcd.th"
    (net,) = b.files
    assert (net.filename, net.source, net.sha256, net.size) == ("net.onnx", "url", "cd" * 32, 10)
    assert registry.completions("") == [("a", ""), ("b", "")]
    path.write_text(path.read_text().replace("AB" * 32, "xyz"))
    with pytest.raises(ModelError, match="hex digits"):
        load(path)
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(tmp_path / "missing.toml"))
    with pytest.raises(ModelError, match="no such file"):
        load()


def test_url_files_offline_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit.cache.http import resolve_url_files as resolve
    from stemsplit.cache.locations import url_files_dir
    from stemsplit.specs import ModelFile

    files = [ModelFile("net.onnx", "url", f"http://127.0.0.1:{closed_port()}/net.onnx")]

    def resolve_url_files(spec, offline):  # noqa: ANN001, ANN202
        return resolve("net", files, offline=offline)

    spec = None
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_url_files(spec, offline=True)
    assert "not in the cache: net.onnx" in str(caught.value)
    assert str(url_files_dir()) in str(caught.value)
    assert "--offline was given, so nothing is downloaded" in str(caught.value)
    assert "stemsplit models download net" in str(caught.value)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="connection refused"):
        resolve_url_files(spec, offline=False)
    assert time.monotonic() - started < 3


def test_interrupted_download_leaves_no_file(file_server) -> None:
    """Ctrl-C in the middle of a download: neither the file nor its temporary copy stays."""
    th = write_legacy_th(file_server.root, None, *HT, seed=14)
    spec = spec_with_legacy_files(REGISTRY.get("htdemucs"), [th], url_root=file_server.url)

    def interrupt(filename: str, done: int, total: int | None) -> None:
        if done > 0 or (total or 0) < 2 * 1024 * 1024:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resolve_demucs_model(spec, offline=False, progress=interrupt)
    assert _no_partial_files(torch_hub_checkpoints_dir()) == []
    assert resolve_demucs_model(spec, offline=False).member_paths[0].read_bytes() == th.read_bytes()


def test_a_recorded_sha512_is_checked_on_download(file_server, tmp_path: Path) -> None:
    """weights.toml's ``sha512`` (umxse's): a download that matches is kept; one that does
    not is fetched once more, then refused, nothing kept."""
    from stemsplit.cache.http import fetch_url_file

    payload = os.urandom(50_000)
    (file_server.root / "w.pth").write_bytes(payload)
    good = hashlib.sha512(payload).hexdigest()
    destination = tmp_path / "cache" / "w.pth"
    path, fetched = fetch_url_file(file_server.url + "w.pth", destination, None, sha512=good)
    assert fetched and path.read_bytes() == payload
    path.unlink()
    with pytest.raises(ChecksumError, match="sha512") as caught:
        fetch_url_file(file_server.url + "w.pth", destination, None, sha512="0" * 128)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in destination.parent.iterdir()) == []
    entry = next(f for f in REGISTRY.models["umxse"].files if f.filename.startswith("speech"))
    assert entry.sha512 is not None and len(entry.sha512) == 128
