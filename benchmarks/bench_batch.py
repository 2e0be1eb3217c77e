"""`stemsplit batch` versus separate stemsplit runs versus demucs' own multi-file run.

Ten 30 s tracks (by default) with a random-weight htdemucs:

    stemsplit batch DIR                    (model loaded once, decode/encode overlapped,
                                            tracks in parallel sharing the CPU threads)
    stemsplit TRACK   x10                  (one process per file)
    demucs -n htdemucs TRACK1 ... TRACK10  (demucs given all files in one call)

Prints the wall times and the ratios. Targets: batch >= 1.3x faster than the separate runs,
and faster than demucs.

    python benchmarks/bench_batch.py [--files 10] [--seconds 30] [--size full|tiny]
                                     [--serial-too]
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
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stemsplit-batch-") as directory:
        work = Path(directory)
        write_htdemucs(work / "hf", options.size)
        env = offline_env(work / "hf")
        folder = work / "album"
        folder.mkdir()
        tracks = []
        for index in range(options.files):
            track = folder / f"track {index:02d}.flac"
            make_track(track, options.seconds, subtype="PCM_16")
            tracks.append(track)

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


if __name__ == "__main__":
    main()
