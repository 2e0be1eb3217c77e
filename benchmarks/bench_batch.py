"""`stemsplit batch` versus separate stemsplit runs versus demucs' own multi-file run.

Ten 30 s tracks (by default) with a random-weight htdemucs:

    stemsplit batch DIR                    (model loaded once, decode/encode overlapped,
                                            tracks in parallel sharing the CPU threads)
    stemsplit TRACK   x10                  (one process per file)
    demucs -n htdemucs TRACK1 ... TRACK10  (demucs given all files in one call)

Prints the wall times and the ratios. Targets: batch >= 1.3x faster than the separate runs,
and faster than demucs.

With ``--ray local`` it compares instead, alternately, ``--repeats`` times:

    stemsplit batch DIR -P 2                               (the reference: one process)
    stemsplit batch DIR --ray local --workers 2 --cpus-per-worker 1
                                                           (a local Ray cluster, 2 actors)

and prints Ray's overhead (target: at most 15% on 20 files of 30 s, full-size htdemucs),
the per-file costs read from the run's JSON records, and what a 4-GPU node would do with
them (worked out, not measured: no GPU here).

    python benchmarks/bench_batch.py [--files 10] [--seconds 30] [--size full|tiny]
                                     [--serial-too] [--ray local] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import (demucs_command, make_track, measured_run, offline_env,
                     stemsplit_command, write_htdemucs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--serial-too", action="store_true",
                        help="also time the batch with --parallel 1 (one track at a time)")
    parser.add_argument("--ray", choices=["local"],
                        help="compare `batch -P 2` with `batch --ray local`, 2 workers")
    parser.add_argument("--repeats", type=int, default=2)
    options = parser.parse_args()
    if options.ray:
        compare_with_ray(options)
        return

    with tempfile.TemporaryDirectory(prefix="stemsplit-batch-") as directory:
        work = Path(directory)
        env, folder, tracks = prepare_album(work, options)

        def batch(*extra: str) -> tuple[float, float]:
            return measured_run(
                [sys.executable, "-m", "stemsplit", "batch", str(folder), "--shifts", "0",
                 "--force", "-q", *extra, "-o", str(work / "batch")], env)

        batch_wall, batch_rss = batch()
        print(f"stemsplit batch       {batch_wall:8.1f} s  {batch_rss:7.0f} MiB"
              "  (--parallel auto)", flush=True)
        if options.serial_too:
            serial_wall, serial_rss = batch("--parallel", "1")
            print(f"stemsplit batch -P 1  {serial_wall:8.1f} s  {serial_rss:7.0f} MiB"
                  "  (one track at a time)", flush=True)

        started = time.perf_counter()
        for track in tracks:
            measured_run(stemsplit_command(track, work / "single"), env)
        single_wall = time.perf_counter() - started
        print(f"stemsplit x{options.files:<2} runs    {single_wall:8.1f} s", flush=True)

        command = demucs_command(tracks[0], work / "demucs")[:-1] + [str(t) for t in tracks]
        demucs_wall, demucs_rss = measured_run(command, env)
        print(f"demucs, one call      {demucs_wall:8.1f} s  {demucs_rss:7.0f} MiB", flush=True)

        print(f"batch vs separate runs: {single_wall / batch_wall:.2f}x; "
              f"batch vs demucs: {demucs_wall / batch_wall:.2f}x "
              f"({options.files} x {options.seconds:g} s, {options.size} htdemucs)")


def prepare_album(work: Path, options: argparse.Namespace) -> tuple[dict, Path, list[Path]]:
    """The random-weight htdemucs in a cache under ``work``, and ``options.files`` tracks of
    ``options.seconds``: (the environment that uses the cache, the album, its tracks)."""
    write_htdemucs(work / "hf", options.size)
    folder = work / "album"
    folder.mkdir()
    tracks = []
    for index in range(options.files):
        track = folder / f"track {index:02d}.flac"
        make_track(track, options.seconds, subtype="PCM_16")
        tracks.append(track)
    return offline_env(work / "hf"), folder, tracks


def compare_with_ray(options: argparse.Namespace) -> None:
    import json
    import statistics
    import subprocess

    with tempfile.TemporaryDirectory(prefix="stemsplit-batch-ray-") as directory:
        work = Path(directory)
        env, folder, _ = prepare_album(work, options)
        base = [sys.executable, "-m", "stemsplit", "batch", str(folder), "--force", "-q",
                "--json"]
        commands = {
            "batch -P 2": base + ["-P", "2", "-o", str(work / "plain")],
            "batch --ray local": base + ["--ray", "local", "--workers", "2",
                                         "--cpus-per-worker", "1", "-o", str(work / "ray")],
        }
        walls: dict[str, list[float]] = {label: [] for label in commands}
        records: list[dict] = []
        for repeat in range(options.repeats):
            for label, command in commands.items():
                started = time.perf_counter()
                with RssSampler("MapWorker" if "ray" in label else "stemsplit\0batch") as rss:
                    run = subprocess.run(command, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - started
                if run.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{run.stderr}")
                walls[label].append(wall)
                if "ray" in label:
                    records = [json.loads(line) for line in run.stdout.splitlines()]
                print(f"run {repeat + 1}  {label:<20} {wall:7.1f} s  {rss.describe()}",
                      flush=True)
        plain, ray = (statistics.median(walls[label]) for label in commands)
        audio = options.files * options.seconds
        print(f"\nmedian of {options.repeats}: batch -P 2 {plain:.1f} s, --ray local {ray:.1f} s;"
              f" Ray's overhead {100 * (ray / plain - 1):+.1f}%")
        taken = [record["seconds_taken"] for record in records]
        in_workers = sum(taken) / 2
        print(f"per file in a worker (decode, separate, encode): mean {statistics.mean(taken):.1f}"
              f" s for {options.seconds:g} s of audio; the rest of the Ray run (cluster and "
              f"actors starting, model loads, scheduling): {ray - in_workers:.1f} s")
        io_seconds = decode_and_encode_seconds(folder / "track 00.flac", work)
        print(f"decode + encode 4 wav stems of one file, measured alone: {io_seconds:.2f} s")
        print("\na 4-GPU node, one worker per GPU, worked out from these costs (not measured):")
        fixed = ray - in_workers
        for network_speed in (100, 300, 1000):
            per_file = io_seconds + options.seconds / network_speed
            throughput = 4 * options.seconds / per_file
            print(f"  network at {network_speed:>4}x real time: {per_file:.2f} s per file, "
                  f"{throughput:.0f} s of audio/s ({3600 * throughput / 240:.0f} four-minute "
                  f"tracks an hour), plus {fixed:.0f} s to start")
        print(f"({options.files} x {options.seconds:g} s, {options.size} htdemucs; "
              f"{audio:g} s of audio)")


class RssSampler:
    """Peak RSS of the processes whose command line holds ``marker`` (the batch process;
    Ray's actors), sampled from /proc every half second while the block runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.peaks: dict[int, float] = {}

    def __enter__(self) -> "RssSampler":
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import os

        while not self._stop.wait(0.5):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    if self.marker not in Path(f"/proc/{entry}/cmdline").read_bytes():
                        continue
                    for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1]) / 1024
                            self.peaks[int(entry)] = max(self.peaks.get(int(entry), 0), rss)
                except OSError:
                    continue

    def describe(self) -> str:
        """The largest process's peak (a process forking ffmpeg briefly shows a copy of
        itself under its own name, so the processes' sum is not summed here)."""
        biggest = max(self.peaks.values(), default=0.0)
        return f"peak RSS of the largest process {biggest:5.0f} MiB"


def decode_and_encode_seconds(track: Path, work: Path) -> float:
    """One file decoded and its four stems (here: the mix four times) encoded to wav, the
    part of a file's cost a GPU does not take."""
    from stemsplit import audio

    started = time.perf_counter()
    mix = audio.decode(track, 44100, 2)
    for stem in range(4):
        writer = audio.open_stem_writer(work / f"io-{stem}.wav", sample_rate=44100)
        writer.write(mix)
        writer.commit()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
