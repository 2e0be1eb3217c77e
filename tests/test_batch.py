"""`stemsplit batch`: discovery, mirrored outputs, resuming, collisions, JSON Lines."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stemsplit.batch import BatchItem, collect_inputs
from tests.checkpoints import ALBUM_TRACKS, default_sigint, make_album, tone_file

STEMS = ("drums", "bass", "other", "vocals")



tone = tone_file


@pytest.fixture
def album(tmp_path) -> Path:
    return make_album(tmp_path / "album")


def outputs_of(out: Path, relative_track: str) -> list[Path]:
    return [out / "htdemucs" / relative_track / f"{stem}.wav" for stem in STEMS]


GOOD = list(ALBUM_TRACKS)


def test_collect_inputs_walks_skips_hidden_and_non_audio(album):
    items = collect_inputs([str(album)])
    found = {(item.path.relative_to(album).as_posix(), item.relative_dir) for item in items}
    assert found == {("01 intro.wav", ""), ("cd 1/02 song.flac", "cd 1"),
                     ("cd 1/deeper/03 song.wav", "cd 1/deeper"),
                     ("cd 2/02 song.flac", "cd 2"), ("broken.mp3", "")}
    shallow = collect_inputs([str(album)], recursive=False)
    assert {item.path.name for item in shallow} == {"01 intro.wav", "broken.mp3"}


def test_collect_inputs_globs_stdin_and_unknown_extensions(album, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flacs = collect_inputs(["album/**/*.flac"])
    assert sorted(i.path.as_posix() for i in flacs) == ["album/cd 1/02 song.flac",
                                                        "album/cd 2/02 song.flac"]
    assert flacs[0].relative_dir == "album/cd 1"
    import io
    listed = collect_inputs(["-"], stdin=io.StringIO("album/01 intro.wav\n\nalbum/cd 1\n"))
    assert [i.path.name for i in listed] == ["01 intro.wav", "02 song.flac", "03 song.wav"]
    renamed = tmp_path / "odd" / "audio.data"  # audio under an unknown extension
    tone(tmp_path / "odd.wav").rename(renamed.parent.mkdir() or renamed)
    assert collect_inputs([str(renamed.parent)]) == [BatchItem(renamed, "")]


def test_batch_runs_resumes_and_forces(run_cli, album, tmp_path):
    first = run_cli("batch", "album", "-o", "out", "--json")
    assert first.returncode == 1, first.stderr.decode()
    lines = [json.loads(line) for line in first.stdout.decode().splitlines()]
    by_input = {Path(line["input"]).relative_to("album").as_posix(): line for line in lines}
    assert set(by_input) == {"01 intro.wav", "cd 1/02 song.flac", "cd 1/deeper/03 song.wav",
                             "cd 2/02 song.flac", "broken.mp3"}
    assert by_input["broken.mp3"]["status"] == "failed" and by_input["broken.mp3"]["error"]
    for track in GOOD:
        for path in outputs_of(tmp_path / "out", track):
            assert path.is_file()
    done = [line for line in lines if line["status"] == "done"]
    assert len(done) == 4 and all(set(line["outputs"]) == set(STEMS) for line in done)
    for line in done:
        for path in line["outputs"].values():
            assert (tmp_path / path).is_file()
    summary = first.stderr.decode()
    assert "4 done, 0 skipped, 1 failed" in summary and "broken.mp3" in summary
    # Each separated file's line ends with the totals: files done / total, the failures
    # (the broken file is probed first), the throughput.
    totals = re.findall(r"\[(\d)/5 files, 1 failed, ([\d.]+) min of audio, "
                        r"([\d.]+) s of audio/s\]", summary)
    assert [int(done) for done, *_ in totals] == [2, 3, 4, 5], summary
    assert float(totals[-1][1]) == round(4 * 0.5 / 60, 1) and float(totals[-1][2]) > 0

    second = run_cli("batch", "album", "-o", "out", "--json")
    statuses = [json.loads(line)["status"] for line in second.stdout.decode().splitlines()]
    assert sorted(statuses) == ["failed", "skipped", "skipped", "skipped", "skipped"]
    assert "0 done, 4 skipped, 1 failed" in second.stderr.decode()

    mtime = outputs_of(tmp_path / "out", "01 intro")[0].stat().st_mtime_ns
    time.sleep(0.01)
    forced = run_cli("batch", "album", "-o", "out", "--force", "-q")
    assert forced.returncode == 1, forced.stderr.decode()
    assert outputs_of(tmp_path / "out", "01 intro")[0].stat().st_mtime_ns != mtime


def test_fail_fast_stops_at_the_first_failure(run_cli, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a broken.wav").write_bytes(b"RIFF....WAVEjunk")
    tone(tmp_path / "in" / "b good.wav")
    result = run_cli("batch", "in", "-o", "out", "--fail-fast", "-q")
    assert result.returncode == 1
    assert not (tmp_path / "out" / "htdemucs" / "b good").exists()


def test_collisions_are_refused_before_any_work(run_cli, album, tmp_path):
    result = run_cli("batch", "album", "-o", "out", "--filename", "{track}/{stem}.{ext}")
    assert result.returncode == 2
    assert "would both write" in result.stderr.decode() and "02 song" in result.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_interrupted_batch_finishes_the_rest_when_restarted(tiny_hf_home, run_cli, tmp_path):
    for index in range(3):
        tone(tmp_path / "in" / f"track {index}.wav", seconds=10.0 if index == 0 else 40.0)
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"}
    # Two tracks in flight: Ctrl-C must stop the second mid-track and clean up after it.
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "batch", "in", "-o", "out",
                                "--parallel", "2"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               preexec_fn=default_sigint)
    first = outputs_of(tmp_path / "out", "track 0")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not all(p.is_file() for p in first):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert all(p.is_file() for p in first)
    unfinished = [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]
    assert not unfinished
    for folder in (tmp_path / "out" / "htdemucs").iterdir():  # no empty folder left
        assert all(p.is_file() for p in outputs_of(tmp_path / "out", folder.name))

    restarted = run_cli("batch", "in", "-o", "out", "--json")
    assert restarted.returncode == 0, restarted.stderr.decode()
    statuses = {Path(r["input"]).name: r["status"]
                for r in map(json.loads, restarted.stdout.decode().splitlines())}
    assert statuses["track 0.wav"] == "skipped"
    assert all(p.is_file() for i in range(3) for p in outputs_of(tmp_path / "out", f"track {i}"))


# -- several tracks at once ---------------------------------------------------------------
class Recorder:
    """An observer that records the order of events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.threads: set[int] = set()

    def track_started(self, track, duration_seconds):
        self.threads.add(threading.get_ident())
        self.events.append(("started", Path(track).name))

    def track_progress(self, track, done, total):
        self.threads.add(threading.get_ident())

    def track_finished(self, result):
        self.threads.add(threading.get_ident())
        self.events.append((result.status, Path(result.input).name))


@pytest.fixture
def tiny_model(tiny_hf_home, monkeypatch):
    """The tiny random-weight htdemucs, loaded in this process."""
    import stemsplit

    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return stemsplit.load_model("htdemucs", device="cpu")


def _jobs(model, paths, out: Path):
    from stemsplit.pipeline import OutputOptions, TrackJob
    options = OutputOptions(out_dir=out, float32=True)
    return [TrackJob(path, model, options=options) for path in paths]


def test_parallel_tracks_overlap_and_give_the_same_stems(tiny_model, tmp_path):
    import torch

    from stemsplit.batch import run_jobs

    model = tiny_model
    paths = [tone(tmp_path / "in" / f"{name}.wav", seconds=seconds)
             for name, seconds in (("a", 9.0), ("b", 6.0), ("c", 3.0))]
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    paths.insert(1, tmp_path / "in" / "broken.wav")
    main_threads = torch.get_num_threads()

    one = run_jobs(_jobs(model, paths, tmp_path / "one"), Recorder(), parallel=1, threads=2)
    recorder = Recorder()
    two = run_jobs(_jobs(model, paths, tmp_path / "two"), recorder, parallel=2, threads=2)

    assert recorder.threads == {threading.get_ident()}  # every observer call on this thread
    assert torch.get_num_threads() == main_threads  # workers set only their own threads
    started = [name for event, name in recorder.events if event == "started"]
    first_end = next(i for i, (event, _) in enumerate(recorder.events) if event == "done")
    assert len([e for e in recorder.events[:first_end] if e[0] == "started"]) >= 2
    assert sorted(started) == ["a.wav", "b.wav", "c.wav"]
    for summary in (one, two):
        assert sorted((r.status, Path(r.input).name) for r in summary.results) == [
            ("done", "a.wav"), ("done", "b.wav"), ("done", "c.wav"), ("failed", "broken.wav")]
    for name in ("a", "b", "c"):
        for stem in STEMS:
            serial, _ = soundfile.read(tmp_path / "one" / "htdemucs" / name / f"{stem}.wav")
            parallel, _ = soundfile.read(tmp_path / "two" / "htdemucs" / name / f"{stem}.wav")
            np.testing.assert_allclose(parallel, serial, atol=1e-6)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_fail_fast_with_parallel_tracks_cancels_the_others(tiny_model, tmp_path):
    from stemsplit.batch import run_jobs

    model = tiny_model
    (tmp_path / "in").mkdir()
    broken = tmp_path / "in" / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    long_one = tone(tmp_path / "in" / "long.wav", seconds=60.0)
    later = tone(tmp_path / "in" / "later.wav", seconds=1.0)
    summary = run_jobs(_jobs(model, [long_one, broken, later], tmp_path / "out"),
                       fail_fast=True, parallel=2, threads=2)
    assert [(r.status, Path(r.input).name) for r in summary.results] == [("failed", "broken.wav")]
    assert not (tmp_path / "out").exists()


def test_choose_parallel():
    from stemsplit.batch import choose_parallel, track_memory_bytes
    from stemsplit.errors import UsageError

    cpu = dict(device_type="cpu", torch_networks=True)
    assert choose_parallel(0, tracks=10, threads=2, **cpu) == 2
    assert choose_parallel(0, tracks=10, threads=16, **cpu) == 4
    assert choose_parallel(0, tracks=1, threads=16, **cpu) == 1
    assert choose_parallel(0, tracks=10, threads=1, **cpu) == 1
    per_track = track_memory_bytes(343980)  # htdemucs: a 7.8 s segment
    assert 1 << 30 < per_track < 2 << 30
    assert track_memory_bytes(343980, batch_size=2) == 2 * per_track
    memory = dict(per_track_bytes=per_track, **cpu)
    assert choose_parallel(0, tracks=10, threads=16, memory_bytes=per_track // 2,
                           **memory) == 1
    assert choose_parallel(0, tracks=10, threads=16, memory_bytes=2 * per_track + 1,
                           **memory) == 3
    assert choose_parallel(0, tracks=10, threads=16, memory_bytes=None, **memory) == 4
    assert choose_parallel(0, tracks=10, threads=16, device_type="cuda",
                           torch_networks=True) == 1
    assert choose_parallel(0, tracks=10, threads=16, device_type="cpu",
                           torch_networks=False) == 1
    assert choose_parallel(3, tracks=10, threads=1, device_type="cuda",
                           torch_networks=False) == 3
    assert choose_parallel(3, tracks=2, threads=1, **cpu) == 2
    with pytest.raises(UsageError):
        choose_parallel(-1, tracks=2, threads=2, **cpu)


def test_thread_share_follows_the_tracks_in_flight():
    import torch

    from stemsplit.batch import _ThreadShare

    share = _ThreadShare(4)
    seen = {}

    def worker(name, entered, release):
        share.enter()
        share.apply()
        seen[name + " with two"] = torch.get_num_threads()
        entered.set()
        release.wait()
        share.apply()
        seen[name + " after"] = torch.get_num_threads()
        share.leave()

    events = [threading.Event() for _ in range(4)]
    first = threading.Thread(target=worker, args=("first", events[0], events[1]))
    share.enter()  # the second track, held open until the first is set up
    first.start()
    events[0].wait()
    share.leave()  # the second track ends: the first gets every thread back
    events[1].set()
    first.join()
    assert seen == {"first with two": 2, "first after": 4}


def test_a_closed_stdout_stops_the_batch_quietly(tiny_hf_home, tmp_path):
    """`stemsplit batch DIR | head -1`: exit 141 like a tool killed by SIGPIPE, no error
    line, no temporary file left."""
    for index in range(3):
        tone(tmp_path / "in" / f"track {index}.wav", seconds=10.0 if index == 0 else 40.0)
    env = {**os.environ, "HF_HOME": str(tiny_hf_home), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stemsplit", "batch", "in", "-o", "out"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout.readline().endswith(b".wav\n")
    process.stdout.close()  # the reader goes away
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    assert "error" not in stderr and "Traceback" not in stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]


# -- a rerun with nothing left to do ----------------------------------------------------
def _finished(out: Path, tracks: list[str], names=STEMS, ext: str = "wav",
              model: str = "htdemucs") -> None:
    """Stand-ins for the outputs of finished tracks (the rerun looks at names only)."""
    for track in tracks:
        for name in names:
            path = out / model / track / f"{name}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"done")


def test_a_finished_batch_is_skipped_without_torch_or_the_model(album, tmp_path):
    """Nothing is cached and the network is off: the rerun decides from the registry's
    names alone, imports neither torch nor numpy, and names every file as the real run."""
    from tests.checkpoints import run_stemsplit_probed

    (album / "broken.mp3").unlink()
    offline = {"HF_HUB_OFFLINE": "1"}
    _finished(tmp_path / "out", GOOD)
    result, stderr, imported = run_stemsplit_probed(
        ["batch", "album", "-o", "out", "--json"], cwd=tmp_path, env=offline)
    assert result.returncode == 0, stderr
    assert imported == set(), "a finished rerun imported " + ", ".join(imported)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["skipped"] * 4
    assert {Path(path).as_posix() for line in lines for path in line["outputs"].values()} == {
        path.relative_to(tmp_path).as_posix() for track in GOOD
        for path in outputs_of(tmp_path / "out", track)}
    assert "0 done, 4 skipped, 0 failed" in stderr

    # Output options name the files: --two-stems, --stem, the format, the model's folder.
    _finished(tmp_path / "two", GOOD, names=("vocals", "accompaniment"), ext="flac",
              model="htdemucs_6s")
    result, stderr, imported = run_stemsplit_probed(
        ["batch", "album", "-o", "two", "-n", "htdemucs_6s", "--two-stems", "vocals",
         "--flac", "-q"], cwd=tmp_path, env=offline)
    assert (result.returncode, imported, stderr) == (0, set(), "")
    result, _, imported = run_stemsplit_probed(
        ["batch", "album", "-o", "two", "-n", "htdemucs_6s", "--stem", "guitar", "--flac"],
        cwd=tmp_path, env=offline)
    assert result.returncode == 1 and "torch" in imported  # guitar.flac is not there

    # Something left to do (one stem missing), or --force: the model is needed, as ever.
    (tmp_path / "out" / "htdemucs" / "cd 2" / "02 song" / "bass.wav").unlink()
    for args in (["batch", "album", "-o", "out"], ["batch", "album", "-o", "out", "--force"]):
        result, stderr, imported = run_stemsplit_probed(args, cwd=tmp_path, env=offline)
        assert result.returncode == 1 and "torch" in imported
        assert "htdemucs" in stderr and "download" in stderr  # not cached, offline


def test_a_partly_finished_batch_reports_the_rest_as_before(run_cli, tmp_path):
    """The model is loaded once something is left: the finished track is still skipped."""
    tone(tmp_path / "in" / "a.wav")
    tone(tmp_path / "in" / "b.wav")
    _finished(tmp_path / "out", ["a"])
    result = run_cli("batch", "in", "-o", "out", "--json")
    assert result.returncode == 0, result.stderr.decode()
    statuses = {Path(line["input"]).name: line["status"]
                for line in map(json.loads, result.stdout.decode().splitlines())}
    assert statuses == {"a.wav": "skipped", "b.wav": "done"}
    assert (tmp_path / "out" / "htdemucs" / "a" / "drums.wav").read_bytes() == b"done"


def test_inputs_outside_the_working_directory_mirror_from_their_common_folder(
        album, tmp_path, monkeypatch):
    """`stemsplit batch '/abs/path/*/x.wav'` used to mirror the absolute path under -o
    (`out/<model>/abs/path/...`)."""
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    matched = collect_inputs([f"{album}/*/02 song.flac"])
    assert sorted(item.relative_dir for item in matched) == ["cd 1", "cd 2"]
    named = collect_inputs([str(album / "cd 1" / "deeper" / "03 song.wav"),
                            str(album / "01 intro.wav")])
    assert [item.relative_dir for item in named] == ["cd 1/deeper", ""]
    assert collect_inputs([str(album / "01 intro.wav")])[0].relative_dir == ""


def test_a_rerun_with_only_a_broken_file_left_loads_no_model(run_cli, album, tmp_path):
    """Every input still to do is probed before torch is imported: when none can be read,
    the run ends there, and the failure summary names each path once."""
    first = run_cli("batch", "album", "-o", "out", "-q")
    assert first.returncode == 1
    probe = ("import sys, runpy; sys.argv = ['stemsplit', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('stemsplit', run_name='__main__')\n"
             "finally:\n    print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")
    (tmp_path / "probe.py").write_text(probe)
    import os
    env = {**os.environ, "HF_HOME": "/nonexistent", "HF_HUB_OFFLINE": "1"}
    rerun = subprocess.run([sys.executable, "probe.py", "batch", "album", "-o", "out"],
                           cwd=tmp_path, env=env, capture_output=True, timeout=120)
    stderr = rerun.stderr.decode()
    assert rerun.returncode == 1, stderr
    assert "TORCH False" in stderr
    assert "0 done, 4 skipped, 1 failed" in stderr
    assert stderr.count("broken.mp3") == 2, stderr  # its error line, and the summary's row


def test_the_overall_bar_counts_seconds_of_audio_with_the_tracks_under_way():
    """With the durations known from the probe, the batch's bar counts seconds of audio
    (so its ETA follows them), including the share of each track being separated."""
    from types import SimpleNamespace

    from stemsplit.cli.reporting import TerminalObserver

    class Bars:
        def __init__(self):
            self.tasks = {}

        def add_task(self, description, total=None):
            self.tasks[len(self.tasks)] = {"total": total, "completed": 0}
            return len(self.tasks) - 1

        def update(self, task, **values):
            self.tasks[task].update(values)

        def remove_task(self, task):
            pass

    observer = TerminalObserver(quiet=True)
    observer.progress = bars = Bars()
    observer.expect_audio({"a.wav": 10.0, "b.wav": 30.0})
    observer.batch_started(2)
    overall = bars.tasks[0]
    assert overall["total"] == 40.0
    observer.track_started("a.wav", 10.0)
    observer.track_started("b.wav", 30.0)
    observer.track_progress("a.wav", 1, 2)
    observer.track_progress("b.wav", 1, 3)
    assert overall["completed"] == 15.0
    observer.track_finished(SimpleNamespace(input="a.wav", status="done", warnings=[],
                                            duration_seconds=10.0, seconds_taken=1.0))
    assert overall["completed"] == 20.0
    assert "1/2 files" in overall["description"]
