"""`stemsplit batch --ray`: the same stems as `stemsplit batch`, one record per file, bounded
retries for a worker that dies, nothing half-written, a rerun that redoes nothing.

One head for the module, started with `ray start --head --port=0` and joined by address
(the CLI through --ray HOST:PORT, the Python API in this process); one CLI run starts its own
cluster with --ray local. The tiny random-weight htdemucs of `tiny_hf_home` runs
everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

# Not imported here: Ray reads RAY_AUTH_MODE when it is imported, which `connected` sets.
if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):  # under CI the ray extra is installed: missing is a failure
        raise ImportError("ray is not installed: pip install '.[ray]'")
    pytest.skip("ray is not installed (the ray extra)", allow_module_level=True)

from stemsplit.cluster import driver
from stemsplit.cluster.connection import connected
from stemsplit.cluster.dataset import (ClusterResources, collect_results, paths_dataset,
                                       separate_dataset)
from stemsplit.cluster.records import as_record
from stemsplit.cluster.worker import SeparationWorker, WorkerSpec
from stemsplit.errors import ClusterError
from stemsplit.plan import (BATCH_FILENAME, BatchItem, OutputOptions, TrackResult,
                            collect_inputs, output_folders)
from tests.checkpoints import (ALBUM_TRACKS, closed_port, default_stop_signals, make_album,
                               tone_file)
from tests.ray_workers import CrashingWorker

# Ray Data's own settings warn of their own renames when its context is copied to a worker.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")

ROOT = Path(__file__).resolve().parent.parent
STEMS = ("drums", "bass", "other", "vocals")
HEAD_START_SECONDS = 120


def ray_processes() -> set[int]:
    """The pids of Ray's daemons and workers running now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if re.search(rb"raylet|gcs_server|ray::|default_worker\.py", command):
                found.add(int(entry.name))
    return found


def leftovers(folder: Path) -> list[Path]:
    """Temporary files under ``folder``: owner-tagged names, or .part files."""
    return [path for path in folder.rglob("*")
            if "stemsplit~" in path.name or path.name.endswith(".part")]


def same_stems(first: Path, second: Path, tracks=ALBUM_TRACKS) -> None:
    for track in tracks:
        for stem in STEMS:
            ours, _ = soundfile.read(first / "htdemucs" / track / f"{stem}.wav")
            theirs, _ = soundfile.read(second / "htdemucs" / track / f"{stem}.wav")
            np.testing.assert_allclose(theirs, ours, atol=1e-6)


@pytest.fixture(scope="module")
def ray_head(tiny_hf_home):
    """A Ray head (`ray start --head --port=0 --block`) with this checkout on its
    PYTHONPATH; its address. Stopped, process group and all, at the end."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must be short
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tiny_hf_home),
           "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--port=0",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block",
         f"--temp-dir={temp}"], env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    address, seen = None, []
    deadline = time.monotonic() + HEAD_START_SECONDS
    while address is None and time.monotonic() < deadline and head.poll() is None:
        line = head.stdout.readline()
        seen.append(line)
        match = re.search(r"ray start --address='([^']+)'", line)
        address = match.group(1) if match else None
    assert address, "".join(seen)
    threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe drained
    yield address
    # SIGKILL: `ray start --block` takes 33 s over a SIGTERM. The idle workers, in a group
    # of their own, end as soon as their raylet is gone.
    started = ray_processes()
    os.killpg(head.pid, signal.SIGKILL)
    head.wait()
    deadline = time.monotonic() + 30
    while ray_processes() & started and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def joined(ray_head, tiny_hf_home):
    """This process joined to the head (through ``connected``, as the CLI joins), its
    workers reading the tiny model cache."""
    saved = {name: os.environ.get(name) for name in ("HF_HOME", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HOME=str(tiny_hf_home), HF_HUB_OFFLINE="1")
    try:
        with connected(ray_head):
            yield ray_head
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- the command line -------------------------------------------------------------------
def test_ray_local_gives_the_same_stems_as_batch_and_a_rerun_redoes_nothing(run_cli, tmp_path):
    make_album(tmp_path / "album")
    plain = run_cli("batch", "album", "-o", "plain", "--json")
    before = ray_processes()
    on_ray = run_cli("batch", "album", "-o", "viaray", "--json", "--ray", "local")
    assert (plain.returncode, on_ray.returncode) == (1, 1), on_ray.stderr.decode()
    records = [json.loads(line) for line in on_ray.stdout.decode().splitlines()]
    expected = [json.loads(line) for line in plain.stdout.decode().splitlines()]
    assert sorted((r["input"], r["status"]) for r in records) == \
        sorted((r["input"], r["status"]) for r in expected)
    for record in records:
        if record["status"] == "done":
            assert all(path.startswith("viaray/htdemucs/") for path in record["outputs"].values())
            assert record["duration_seconds"] == 0.5
        else:
            assert record["input"] == "album/broken.mp3"
            assert record["error"].startswith("album/broken.mp3: ")
    same_stems(tmp_path / "plain", tmp_path / "viaray")
    stderr = on_ray.stderr.decode()
    assert "4 done, 0 skipped, 1 failed" in stderr and "Traceback" not in stderr
    # Progress on the driver: files done / total, the failures, the throughput.
    assert re.search(r"\[5/5 files, 1 failed, 0\.0 min of audio, [\d.]+ s of audio/s\]",
                     stderr), stderr
    assert not re.search(r"\(raylet\)|core_worker|RayDeprecation|INFO", stderr), stderr
    assert leftovers(tmp_path / "viaray") == [] and leftovers(tmp_path / "album") == []
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before  # the local cluster stopped with the run

    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "viaray").rglob("*.wav")}
    started = time.monotonic()
    again = run_cli("batch", "album", "-o", "viaray", "--json", "--ray", "local")
    assert again.returncode == 1
    statuses = sorted(json.loads(line)["status"] for line in again.stdout.decode().splitlines())
    assert statuses == ["failed"] + ["skipped"] * 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert time.monotonic() - started < 20  # answered on the driver: no cluster started


def test_join_a_head_by_address(run_cli, ray_head, tmp_path, monkeypatch):
    # The head runs with token authentication (Ray's default since 2.59): the CLI must
    # send the token `ray start` wrote, without RAY_AUTH_MODE set by the user.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    make_album(tmp_path / "album")
    run = run_cli("batch", "album/cd 1", "-o", "out", "--ray", ray_head, "--workers", "2")
    assert run.returncode == 0, run.stderr.decode()
    printed = run.stdout.decode().splitlines()
    assert len(printed) == 8 and all(Path(tmp_path / line).is_file() for line in printed)
    assert "2 done, 0 skipped, 0 failed" in run.stderr.decode()


def test_cluster_errors_are_one_line_before_any_work(run_cli, tmp_path):
    tone_file(tmp_path / "album" / "a.wav")
    port = closed_port()
    started = time.monotonic()
    refused = run_cli("batch", "album", "--ray", f"127.0.0.1:{port}")
    assert refused.returncode == 1 and time.monotonic() - started < 30
    lines = refused.stderr.decode().strip().splitlines()
    assert lines[0].startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}"), lines
    assert lines[1].startswith("hint:") and len(lines) == 2
    for arguments, message in [
        (["--ray", "nowhere"], "error: --ray nowhere: give local, auto, or the head's HOST:PORT"),
        (["--workers", "2"], "error: --workers applies with --ray only"),
        (["--ray", "local", "-j", "2"], "error: -j/--jobs and -P/--parallel do not apply"),
        (["--ray", "local", "--cpus-per-worker", "0"], "error: --cpus-per-worker 0: must be"),
        (["--ray", "local", "-d", "cuda"], "error: -d cuda on a cluster needs --gpus-per-worker"),
    ]:
        run = run_cli("batch", "album", *arguments)
        assert run.returncode == 2 and run.stderr.decode().startswith(message), run.stderr
    assert not (tmp_path / "separated").exists()
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    missing = run_cli("batch", "album", "--ray", "local",
                      env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"})
    assert missing.returncode == 2
    assert missing.stderr.decode().splitlines()[0].startswith("error: --ray needs Ray Data")
    assert "pip install 'stemsplit[ray]'" in missing.stderr.decode()


def test_a_worker_no_node_can_hold(run_cli, tmp_path):
    assert ClusterResources(cpus_per_worker=2).unschedulable([{"CPU": 2.0}]) is None
    assert ClusterResources(gpus_per_worker=0.5).unschedulable(
        [{"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}]) is None
    assert "the most GPUs on a node: 0" in ClusterResources(gpus_per_worker=1).unschedulable(
        [{"CPU": 8.0}])
    assert ClusterResources().pool_bounds([{"CPU": 2.0}], files=20) == (2, 2)
    assert ClusterResources(workers=8).pool_bounds([{"CPU": 2.0}], files=20) == (2, 8)
    assert ClusterResources(workers=8).pool_bounds([{"CPU": 2.0}], files=1) == (1, 1)
    four_gpus = {"CPU": 32.0, "GPU": 4.0}
    assert ClusterResources(gpus_per_worker=1).pool_bounds([four_gpus] * 2, 100) == (8, 8)
    assert ClusterResources(gpus_per_worker=0.5, cpus_per_worker=8).pool_bounds(
        [four_gpus], 100) == (4, 4)
    tone_file(tmp_path / "album" / "a.wav")
    run = run_cli("batch", "album", "--ray", "local", "--cpus-per-worker", "64")
    assert run.returncode == 1, run.stderr.decode()
    lines = run.stderr.decode().strip().splitlines()
    assert lines[0].startswith("error: no node of the cluster has the 64 CPUs and 0 GPUs"), lines
    assert lines[1].startswith("hint: lower --cpus-per-worker") and len(lines) == 2
    assert not (tmp_path / "separated").exists()


def test_ctrl_c_stops_the_run_and_every_worker(tiny_hf_home, tmp_path):
    for index in range(8):
        tone_file(tmp_path / "album" / f"{index:02d}.wav", seconds=20)
    before = ray_processes()
    run = subprocess.Popen(
        [sys.executable, "-m", "stemsplit", "batch", "album", "-o", "out", "--ray", "local"],
        cwd=tmp_path, env={**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"},
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, preexec_fn=default_stop_signals)
    first = run.stderr.readline()  # the first file finished: workers are busy with others
    assert first.startswith(b"separated "), first
    run.send_signal(signal.SIGINT)
    _, rest = run.communicate(timeout=120)
    assert run.returncode == 130, rest.decode()
    assert b"Traceback" not in rest
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before
    assert leftovers(tmp_path / "out") == []


# -- the Python API, on the head --------------------------------------------------------
def spec_for(out: Path, **options) -> WorkerSpec:
    return WorkerSpec(model="htdemucs",
                      options=OutputOptions(out_dir=out, filename=BATCH_FILENAME, **options))


def test_a_crashing_worker_is_retried_a_bounded_number_of_times(joined, tmp_path, capsys):
    album = make_album(tmp_path / "album")
    tone_file(album / "cd 2" / "crash.wav")
    items = collect_inputs([str(album)])
    spec = spec_for(tmp_path / "out")
    from stemsplit.stem_plan import StemSelection
    folders = output_folders(items, model_name="htdemucs", member_sources=[STEMS],
                             selection=StemSelection(), options=spec.options)
    finished = []
    summary = driver.run(joined, items, spec, ClusterResources(workers=2),
                         on_result=finished.append, track_folders=folders,
                         worker=CrashingWorker)
    by_name = {Path(result.input).name: result for result in summary.results}
    assert [result.input for result in finished] == [result.input for result in summary.results]
    assert len(summary.results) == 6 and summary.count("done") == 4
    crash = by_name["crash.wav"]
    assert crash.status == "failed"
    assert crash.error == f"{album / 'cd 2' / 'crash.wav'}: its worker process died on each " \
                          "of 3 attempts (a crash in native code, or out of memory)"
    pids = (album / "cd 2" / "crash.wav.attempts").read_text().split()
    assert len(pids) == 3 == len(set(pids))
    assert by_name["broken.mp3"].status == "failed"
    assert leftovers(tmp_path / "out") == []  # the crashed attempts' half-written files too
    assert not (tmp_path / "out" / "htdemucs" / "cd 2" / "crash").exists()
    assert capsys.readouterr().out == ""  # Ray's "a worker died" notes stay off stdout


def test_the_dataset_entry_point(joined, tmp_path):
    make_album(tmp_path / "album")
    paths = paths_dataset([str(tmp_path / "album" / "cd 1")])
    assert sorted(row["relative_dir"] for row in paths.take_all()) == ["", "deeper"]
    rows = separate_dataset(paths, spec_for(tmp_path / "out")).take_all()
    assert sorted(row["status"] for row in rows) == ["done", "done"]
    for row in rows:
        outputs = json.loads(row["outputs"])
        assert sorted(outputs) == sorted(STEMS)
        assert all(Path(path).is_absolute() and Path(path).is_file() for path in outputs.values())


# -- what runs twice counts once ---------------------------------------------------------
def test_a_file_recorded_twice_counts_once_and_a_lost_one_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    items = [BatchItem(Path("album/a.wav")), BatchItem(Path("album/b.wav")),
             BatchItem(Path("album/c.wav"))]
    absolute = {item.path.name: os.path.abspath(item.path) for item in items}
    out = tmp_path / "out"
    done = TrackResult(input=absolute["a.wav"], status="done",
                       outputs={"vocals": out / "htdemucs" / "a" / "vocals.wav"},
                       sample_rate=44100, duration_seconds=1.0, seconds_taken=2.0)
    skipped_again = TrackResult(input=absolute["a.wav"], status="skipped",
                                outputs=done.outputs, error="outputs exist")
    failed_b = TrackResult(input=absolute["b.wav"], status="failed", error="boom")
    done_b = TrackResult(input=absolute["b.wav"], status="done", outputs={})
    records = [as_record(r) for r in (done, skipped_again, failed_b, done_b)]
    seen = []
    summary = collect_results(records, items, Path("out"), on_result=seen.append)
    assert [(r.input, r.status) for r in summary.results] == \
        [("album/a.wav", "done"), ("album/b.wav", "done"), ("album/c.wav", "failed")]
    assert [r.input for r in seen] == ["album/a.wav", "album/b.wav", "album/c.wav"]
    assert summary.results[0].outputs == {"vocals": Path("out/htdemucs/a/vocals.wav")}
    assert "died on each of 3 attempts" in summary.results[2].error
    stopped = collect_results(records[2:], items, Path("out"), fail_fast=True)
    assert [(r.input, r.status) for r in stopped.results] == [("album/b.wav", "failed")]
    fatal = as_record(TrackResult(input=absolute["a.wav"], status="failed",
                                  error="htdemucs: weights not cached"), fatal=True)
    with pytest.raises(ClusterError, match="weights not cached"):
        collect_results([fatal], items, Path("out"))


def test_two_attempts_racing_on_one_track_leave_the_same_complete_files(
        tiny_hf_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    track = tone_file(tmp_path / "in" / "song.wav", seconds=3)
    reference = SeparationWorker(spec_for(tmp_path / "reference")).separate(BatchItem(track))
    assert reference["status"] == "done"
    racing = spec_for(tmp_path / "out", force=True)
    workers = [SeparationWorker(racing) for _ in range(2)]
    start = threading.Barrier(2)
    records = [None, None]

    def attempt(index: int) -> None:
        start.wait()
        records[index] = workers[index].separate(BatchItem(track))

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [record["status"] for record in records] == ["done", "done"]
    same_stems(tmp_path / "reference", tmp_path / "out", tracks=["song"])
    assert leftovers(tmp_path / "out") == []
    merged = collect_results(records, [BatchItem(track)], tmp_path / "out")
    assert [result.status for result in merged.results] == ["done"]
